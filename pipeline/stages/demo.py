"""`demo` stage: a small, deterministic synthetic driver-video set from real face photos.

Each synthetic subject is one real face (skimage's astronaut, matplotlib's Grace Hopper,
and LFW crops shipped with scikit-image) composited onto a drawn car interior with its
own appearance. FaceMesh is run once on that still; the face is then animated by
moving its own mesh (eyelids, jaw, 3D head rotation) and warping the image along a
Delaunay triangulation, with painted cues (mouth interior, closed lids, a phone).
Behaviour scripts per class drive the animation. See ../shared/DEMO_DATA.md.

The output is exactly the raw-data contract a user supplies: ``videos/*.mp4`` and
``labels.csv`` (video,subject,label). The same params give the same bytes.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline.core.config import DemoParams, Params, load_params, resolve_workers
from pipeline.core.errors import ConfigError
from pipeline.core.files import atomic_path
from pipeline.core.parallel import map_jobs
from pipeline.core.runtime import ParamsOpt, run_stage
from pipeline.vision import geometry as g
from pipeline.vision import mediapipe as mpa
from pipeline.vision.video import write_mp4

log = logging.getLogger(__name__)

CLASSES = ("normal", "phonecall", "text", "yawn")
# the classes the demo synthesises for each task (params data.task; README "Tasks")
TASK_CLASSES = {"distraction": CLASSES, "drowsiness": ("alert", "drowsy")}


# --- faces ------------------------------------------------------------------------------
def face_sources() -> list[tuple[str, np.ndarray]]:
    """Real face photos available offline, as (name, RGB uint8) in a fixed order."""
    import cv2
    import matplotlib.cbook as cbook
    import skimage.data as sd

    out: list[tuple[str, np.ndarray]] = [("astronaut", sd.astronaut())]
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        buf = np.frombuffer(fh.read(), np.uint8)
    out.append(("grace_hopper", cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)))
    lfw = sd.lfw_subset()[:100]  # the first 100 are faces, the rest are non-faces
    for i, crop in enumerate(lfw):
        grey = (crop * 255).astype(np.uint8)
        big = cv2.resize(grey, (200, 200), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((320, 320), int(np.median(grey)), np.uint8)
        canvas[60:260, 60:260] = big
        out.append((f"lfw{i:03d}", cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)))
    return out


def _facemesh_static():
    return mpa.face_mesh(static=True)


def _detect(fm, img: np.ndarray) -> np.ndarray | None:
    """FaceMesh on an RGB image -> (478, 3) landmarks in pixels (z scaled like x)."""
    res = fm.process(img)
    if not res.multi_face_landmarks:
        return None
    h, w = img.shape[:2]
    pts = np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark])
    return pts * [w, h, w]


def _mar(face: np.ndarray) -> float:
    v = np.mean([np.linalg.norm(face[a, :2] - face[b, :2]) for a, b in g.MOUTH_PAIRS])
    return float(v / np.linalg.norm(face[g.MOUTH_CORNERS[0], :2] - face[g.MOUTH_CORNERS[1], :2]))


# --- one subject ------------------------------------------------------------------------
@dataclass
class Subject:
    name: str
    still: np.ndarray  # (H, W, 3) RGB
    ctrl: np.ndarray  # (N, 3) control points at rest (478 landmarks, inner ring, outer ring, border)
    n_inner: int
    tris: np.ndarray  # (T, 3) triangle vertex indices
    skin: tuple[int, int, int]
    noise: float
    habits: Habits | None = None


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A drawn car interior: roof lining, side window, B-pillar, headrest, seat belt."""
    import cv2

    base = rng.uniform(35, 70)
    yy = np.linspace(0, 1, h)[:, None, None]
    img = np.broadcast_to(base + 25 * (1 - yy), (h, w, 3)).astype(np.float32).copy()
    side = rng.integers(2)
    x0 = int(w * (0.62 if side else 0.0))
    win = np.array(
        [
            [x0, int(h * 0.08)],
            [x0 + int(w * 0.38), int(h * 0.05)],
            [x0 + int(w * 0.38), int(h * 0.55)],
            [x0 + int(w * 0.05), int(h * 0.6)],
        ],
        np.int32,
    )
    cv2.fillConvexPoly(img, win, tuple(float(v) for v in rng.uniform(110, 190, 3)))
    px = int(w * (0.6 if side else 0.38))
    cv2.rectangle(img, (px, 0), (px + int(w * 0.05), h), (base * 0.7,) * 3, -1)
    cv2.ellipse(
        img,
        (w // 2 + int(rng.integers(-20, 20)), int(h * 0.45)),
        (int(w * 0.2), int(h * 0.32)),
        0,
        0,
        360,
        (base * 0.6, base * 0.55, base * 0.5),
        -1,
    )
    cv2.line(img, (int(w * 0.75), h), (int(w * 0.2), int(h * 0.55)), (25, 25, 28), int(w * 0.04))
    return np.clip(img, 0, 255).astype(np.uint8)


def _compose(src: np.ndarray, src_face: np.ndarray, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Place the photo's face on a car-interior background with a soft elliptical mask."""
    import cv2

    lo, hi = src_face[:, :2].min(0), src_face[:, :2].max(0)
    fh_src = hi[1] - lo[1]
    target = rng.uniform(0.38, 0.52) * h
    s = target / fh_src
    cx = w / 2 + rng.uniform(-0.08, 0.08) * w
    cy = h * 0.48 + rng.uniform(-0.05, 0.05) * h
    fc = (lo + hi) / 2
    m = np.array([[s, 0, cx - s * fc[0]], [0, s, cy - s * fc[1]]])
    placed = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = np.zeros((h, w), np.float32)
    fw = (hi[0] - lo[0]) * s
    cv2.ellipse(
        mask, (round(cx), round(cy - 0.03 * target)), (round(fw * 0.6), round(target * 0.66)), 0, 0, 360, 1.0, -1
    )
    mask = cv2.GaussianBlur(mask, (0, 0), max(2.0, target * 0.06))[..., None]
    bg = _background(rng, w, h).astype(np.float32)
    return (placed * mask + bg * (1 - mask)).astype(np.uint8)


def _appearance(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-subject look: flip, IR-like greyscale, gamma, gain and tint."""
    import cv2

    if rng.random() < 0.5:
        img = img[:, ::-1].copy()
    if rng.random() < 0.35:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    f = img.astype(np.float32) / 255.0
    f = f ** rng.uniform(0.8, 1.25) * rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, 3)
    return np.clip(f * 255, 0, 255).astype(np.uint8)


def _ring(face: np.ndarray, factor: float) -> np.ndarray:
    oval = face[list(g.FACE_OVAL)]
    c = oval[:, :2].mean(0)
    ring = oval.copy()
    ring[:, :2] = c + (oval[:, :2] - c) * factor
    return ring


def make_subject(name: str, photo: np.ndarray, rng: np.random.Generator, w: int, h: int, fm) -> Subject | None:
    """Build one subject, or None when FaceMesh misses the face or the mouth is open at rest."""
    from scipy.spatial import Delaunay

    src_face = _detect(fm, photo)
    if src_face is None:
        return None
    still = _appearance(_compose(photo, src_face, rng, w, h), rng)
    face = _detect(fm, still)
    if face is None or _mar(face) > 0.12:
        return None
    inner = _ring(face, 1.22)
    outer = _ring(face, 1.9)
    outer[:, 0] = outer[:, 0].clip(1, w - 2)
    outer[:, 1] = outer[:, 1].clip(1, h - 2)
    bx = np.linspace(0, w - 1, 9)
    by = np.linspace(0, h - 1, 7)
    border = np.array(
        [(x, 0) for x in bx] + [(x, h - 1) for x in bx] + [(0, y) for y in by[1:-1]] + [(w - 1, y) for y in by[1:-1]],
        float,
    )
    border = np.c_[border, np.full(len(border), face[:, 2].mean())]
    ctrl = np.vstack([face, inner, outer, border])
    tris = Delaunay(ctrl[:, :2]).simplices.astype(np.int32)
    cheek = face[[50, 280], :2].mean(0).round().astype(int)
    y0, x0 = np.clip(cheek[::-1], 2, [h - 3, w - 3])
    skin = tuple(int(v) for v in np.median(still[y0 - 2 : y0 + 3, x0 - 2 : x0 + 3].reshape(-1, 3), 0))
    return Subject(name, still, ctrl, len(inner), tris, skin, float(rng.uniform(2.0, 6.0)))


# --- behaviour scripts --------------------------------------------------------------------
def _drift(rng: np.random.Generator, t: np.ndarray, sd: float) -> np.ndarray:
    """Smooth random drift with standard deviation about ``sd``."""
    out = np.zeros_like(t)
    for _ in range(3):
        out += np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t + rng.uniform(0, 2 * np.pi))
    return out * sd / np.sqrt(1.5)


def _bump(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 -> 1 -> 0 envelope with cosine ramps."""
    up = np.clip((t - start) / rise, 0, 1)
    down = np.clip((t - start - rise - hold) / fall, 0, 1)
    return 0.5 - 0.5 * np.cos(np.pi * up) - (0.5 - 0.5 * np.cos(np.pi * down))


@dataclass(frozen=True)
class Habits:
    """How one synthetic driver behaves: real drivers differ in posture, timing and style, and a
    model must generalise across them (the cross-validation scores unseen drivers)."""

    posture: tuple[float, float, float] = (0.0, 0.0, 0.0)  # resting yaw, pitch, roll (degrees)
    talkative: float = 0.4  # share of clips with talking or singing
    glances: float = 1.0  # mirror / shoulder checks per 10 s
    glances_down: float = 0.5  # glances at the dashboard per 10 s
    phone_side: float = 1.0  # the ear a phone usually goes to (-1 / +1)
    phone_roll: float = 10.0  # how far the head tilts towards the phone
    text_pitch: float = 20.0  # how far down the driver looks at a phone in the lap
    yawn_pitch: float = 1.0  # +1: head back when yawning, -1: head drops forward
    covers_yawn: float = 0.3  # share of yawns behind a hand
    blink_every: float = 3.5  # seconds between blinks (mean)


def habits(seed: int, subject: int) -> Habits:
    """The habits of demo subject ``subject`` (deterministic for the seed)."""
    rng = np.random.default_rng([seed, subject, 101])
    return Habits(
        posture=(float(rng.normal(0, 5)), float(rng.normal(0, 5)), float(rng.normal(0, 3))),
        talkative=float(rng.uniform(0.2, 0.8)),
        glances=float(rng.uniform(0.5, 2.0)),
        glances_down=float(rng.uniform(0.2, 1.5)),
        phone_side=float(rng.choice([-1.0, 1.0])),
        phone_roll=float(rng.uniform(3, 14)),
        text_pitch=float(rng.uniform(9, 26)),
        yawn_pitch=float(rng.choice([-1.0, 1.0], p=[0.4, 0.6])),
        covers_yawn=float(rng.uniform(0.0, 0.7)),
        blink_every=float(rng.uniform(2.0, 5.0)),
    )


def _events(rng: np.random.Generator, t: np.ndarray, per_10s: float, make) -> np.ndarray:
    """Sum of ``make(start)`` envelopes at Poisson times, ``per_10s`` on average."""
    out = np.zeros_like(t)
    dur = t[-1] if len(t) else 0.0
    ts = rng.exponential(10.0 / max(per_10s, 1e-6))
    while ts < dur:
        out += make(ts)
        ts += 1.0 + rng.exponential(10.0 / max(per_10s, 1e-6))
    return out


def _talk(rng: np.random.Generator, t: np.ndarray, singing: bool = False) -> np.ndarray:
    syll = np.abs(np.sin(2 * np.pi * rng.uniform(2.5, 4.0) * t + rng.uniform(0, 6)))
    env = (np.sin(2 * np.pi * rng.uniform(0.15, 0.3) * t + rng.uniform(0, 6)) > -0.3).astype(float)
    return (0.08 + 0.4 * syll * env) if singing else (0.05 + 0.2 * syll * env)


def script(label: str, rng: np.random.Generator, n: int, fps: float, h: Habits | None = None) -> dict[str, np.ndarray]:
    """Per-frame animation parameters for one clip of class ``label`` by a driver with habits ``h``.

    What real drivers do is in every class, so no single feature gives the class away: talking
    and singing, mirror and shoulder checks and glances at the dashboard while driving; calls on
    either ear with more or less head tilt; phones held lower or higher; yawns of different
    length and depth, some behind a hand, some with the head dropping forward (like looking at
    a phone); plus lighting changes (bridges, tunnels) and a shaking camera (``gain``, ``dx``, ``dy``).
    """
    h = h or Habits()
    t = np.arange(n) / fps
    dur = n / fps
    yaw = _drift(rng, t, 4) + h.posture[0]
    pitch = _drift(rng, t, 3) + h.posture[1]
    roll = _drift(rng, t, 2) + h.posture[2]
    # drowsy: how sleepy this clip's driver is (0 = alert); slower, longer, more frequent blinks
    sleepy = rng.uniform(0.4, 1.0) if label == "drowsy" else 0.0
    blink = np.zeros(n)
    tb = rng.uniform(0.3, 2.5)
    while tb < dur:
        d = rng.uniform(0.15, 0.35)
        hold = 0.0
        if sleepy:  # (no extra draws otherwise: the distraction demo keeps its bytes)
            d, hold = d + sleepy * rng.uniform(0.0, 0.35), sleepy * rng.uniform(0, 0.15)
        blink = np.maximum(blink, _bump(t, tb, d / 2, hold, d / 2))
        tb += rng.uniform(0.5, 1.5) * h.blink_every * (1 - 0.35 * sleepy)
    eyes = np.zeros(n)
    mouth = np.zeros(n)
    cover = np.zeros(n)  # a hand over the mouth (0..1)
    phone = 0.0  # -1 left ear, +1 right ear (image side), 2 = held low for texting

    def mirror(ts: float) -> np.ndarray:  # mirror check, now and then a shoulder check
        amp = rng.uniform(35, 45) if rng.random() < 0.2 else rng.uniform(15, 32)
        return rng.choice([-1, 1]) * amp * _bump(t, ts, 0.3, rng.uniform(0.3, 1.0), 0.3)

    def down(ts: float) -> np.ndarray:  # a glance at the speedometer or the radio
        return _bump(t, ts, 0.25, rng.uniform(0.3, 1.2), 0.3) * rng.uniform(8, 20)

    def yawn(ts: float) -> float:  # adds one yawn starting at ts; returns its length
        nonlocal mouth, pitch, eyes, cover
        rise, hold, fall = rng.uniform(0.6, 1.5), rng.uniform(0.4, 2.5), rng.uniform(0.6, 1.3)
        b = _bump(t, ts, rise, hold, fall)
        mouth = np.maximum(mouth, rng.uniform(0.45, 1.0) * b)
        pitch += h.yawn_pitch * rng.uniform(3, 12) * b
        eyes = np.maximum(eyes, rng.uniform(0.3, 0.6) * b)
        if rng.random() < h.covers_yawn:
            cover = np.maximum(cover, _bump(t, ts + 0.3 * rise, 0.3, rise + hold, 0.4))
        return rise + hold + fall

    if label in ("normal", "alert"):
        yaw += _events(rng, t, h.glances, mirror)
        dn = np.minimum(_events(rng, t, h.glances_down, down), 25)
        pitch -= dn
        eyes = np.maximum(eyes, 0.015 * dn)
        if rng.random() < h.talkative:
            mouth = _talk(rng, t, singing=rng.random() < 0.3)
        if label == "alert" and rng.random() < 0.3:  # alert drivers yawn too, now and then
            yawn(rng.uniform(0, max(dur - 5, 0.1)))
    elif label == "yawn":
        ts = rng.uniform(0.0, 1.5)
        while ts < dur:
            ts += yawn(ts) + rng.uniform(0.8, 3.0)
        yaw += _events(rng, t, 0.5 * h.glances, mirror)
    elif label == "drowsy":
        # heavy lids, eyes closing for a second or two (a microsleep) with the head sagging forward and
        # snapping back, yawns; fewer mirror checks
        eyes = np.maximum(eyes, sleepy * rng.uniform(0.1, 0.3) * (1 + _drift(rng, t, 0.5)).clip(0, 2))

        def microsleep(ts: float) -> np.ndarray:
            return _bump(t, ts, rng.uniform(0.2, 0.5), rng.uniform(0.6, 2.0), rng.uniform(0.1, 0.3))

        def nod(ts: float) -> np.ndarray:  # the head sags forward slowly and snaps back
            return _bump(t, ts, rng.uniform(1.5, 3.5), rng.uniform(0.3, 1.2), rng.uniform(0.15, 0.4))

        closures = np.minimum(_events(rng, t, 0.8 * sleepy, microsleep), 1)
        eyes = np.maximum(eyes, closures)
        pitch -= closures * rng.uniform(6, 18) + np.minimum(_events(rng, t, 0.6 * sleepy, nod), 1) * rng.uniform(10, 25)
        ts = rng.exponential(10 / (0.5 * sleepy))
        while ts < dur:
            ts += yawn(ts) + rng.exponential(10 / (0.5 * sleepy))
        yaw += _events(rng, t, 0.4 * h.glances, mirror)
        if rng.random() < 0.5 * h.talkative:
            mouth = np.maximum(mouth, _talk(rng, t))
    elif label == "phonecall":
        phone = h.phone_side if rng.random() < 0.75 else -h.phone_side
        roll += phone * (h.phone_roll + rng.uniform(-3, 3))
        yaw += phone * rng.uniform(0, 8) + _events(rng, t, 0.5 * h.glances, mirror)
        if rng.random() < 0.8:
            mouth = _talk(rng, t)
    elif label == "text":
        phone = 2.0
        low = max(6.0, h.text_pitch + rng.uniform(-4, 4))
        up = np.zeros(n)
        ts = rng.uniform(0.5, 2.0)
        while ts < dur:
            up = np.maximum(up, _bump(t, ts, 0.2, rng.uniform(0.2, 0.8), 0.25))
            ts += rng.uniform(1.0, 3.0)
        pitch += -low * (1 - up)
        eyes = np.maximum(eyes, rng.uniform(0.25, 0.45) * (1 - up))
        if rng.random() < 0.3:  # a voice message, reading aloud
            mouth = _talk(rng, t)
    else:
        raise ValueError(f"unknown demo class {label!r}")
    close = np.clip(np.maximum(eyes, blink), 0, 1)
    # the cabin: slow light changes, now and then a bridge or tunnel; a camera on a shaking mount
    gain = 1.0 + 0.12 * _drift(rng, t, 1.0)
    if rng.random() < 0.35:
        gain *= 1 - rng.uniform(0.25, 0.4) * _bump(t, rng.uniform(0, dur), 0.3, rng.uniform(0.3, 2.0), 0.5)
    shake = rng.uniform(0.2, 1.0)
    dx = _drift(rng, t, 1.5 * shake) + rng.normal(0, 0.5 * shake, n)
    dy = _drift(rng, t, 1.5 * shake) + rng.normal(0, 0.5 * shake, n)
    return {
        "yaw": yaw,
        "pitch": pitch,
        "roll": roll,
        "eyes": close,
        "mouth": mouth,
        "cover": cover,
        "phone": np.full(n, phone),
        "gain": gain,
        "dx": dx,
        "dy": dy,
    }


# --- one frame ------------------------------------------------------------------------------
def deform(sub: Subject, yaw: float, pitch: float, roll: float, eyes: float, mouth: float) -> np.ndarray:
    """Control points of one frame (N, 3): eyelids, jaw, then 3D head rotation."""
    p = sub.ctrl.copy()
    face = p[: g.N_FACE]
    if eyes > 0:
        for up, lo in ((g.EYE_RIGHT_UPPER, g.EYE_RIGHT_LOWER), (g.EYE_LEFT_UPPER, g.EYE_LEFT_LOWER)):
            d = face[list(lo), :2] - face[list(up), :2]
            face[list(up), :2] += 0.85 * eyes * d
            face[list(lo), :2] -= 0.1 * eyes * d
    if mouth > 0:
        c0, c1 = sub.ctrl[g.MOUTH_CORNERS[0], :2], sub.ctrl[g.MOUTH_CORNERS[1], :2]
        width = np.linalg.norm(c1 - c0)
        centre = (c0 + c1) / 2
        drop = mouth * width * 0.9
        n_ring = g.N_FACE + 2 * sub.n_inner  # landmarks + inner ring move; outer ring, border fixed
        dx = p[:n_ring, 0] - centre[0]
        below = p[:n_ring, 1] > centre[1] + 0.02 * width
        below[list(g.LOWER_LIP)] = True
        below[list(g.UPPER_LIP_INNER)] = False
        fall = np.exp(-0.5 * (dx / (1.1 * width)) ** 2)
        p[:n_ring, 1] += below * drop * fall
        p[list(g.UPPER_LIP_INNER), 1] -= 0.08 * drop
        for k, sgn in ((g.MOUTH_CORNERS[0], 1), (g.MOUTH_CORNERS[1], -1), (61, 1), (291, -1)):
            p[k, 0] += sgn * 0.08 * mouth * width
    lo, hi = sub.ctrl[: g.N_FACE, :2].min(0), sub.ctrl[: g.N_FACE, :2].max(0)
    fw = hi[0] - lo[0]
    pivot = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2 + 0.1 * fw, sub.ctrl[: g.N_FACE, 2].mean() + 0.75 * fw])
    r = g.rotation_matrix(yaw, pitch, roll)
    p[: g.N_FACE] = (p[: g.N_FACE] - pivot) @ r.T + pivot
    inner = slice(g.N_FACE, g.N_FACE + sub.n_inner)
    r_half = g.rotation_matrix(0.6 * yaw, 0.6 * pitch, 0.6 * roll)
    p[inner] = (p[inner] - pivot) @ r_half.T + pivot
    return p


def warp(sub: Subject, dst: np.ndarray) -> np.ndarray:
    """Backward-warp the still so control points at rest land on ``dst`` (piecewise affine)."""
    import cv2

    h, w = sub.still.shape[:2]
    tris = sub.tris
    d = dst[tris, :2]  # (T, 3, 2) destination triangles
    s = sub.ctrl[tris, :2]  # (T, 3, 2) source triangles
    # Closed-form affine dst -> src per triangle: solve [x y 1] A = src for 3 vertices.
    x0, y0 = d[:, 0, 0], d[:, 0, 1]
    ex1, ey1 = d[:, 1, 0] - x0, d[:, 1, 1] - y0
    ex2, ey2 = d[:, 2, 0] - x0, d[:, 2, 1] - y0
    det = ex1 * ey2 - ex2 * ey1
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)
    s0 = s[:, 0]
    u1, u2 = s[:, 1] - s0, s[:, 2] - s0
    # src = s0 + a*u1 + b*u2, with (a, b) the barycentrics of (x - x0, y - y0)
    ax, ay = ey2 / det, -ex2 / det  # a = ax*(x-x0) + ay*(y-y0)
    bx, by = -ey1 / det, ex1 / det
    m = np.empty((len(tris), 2, 3))
    m[:, :, 0] = u1 * ax[:, None] + u2 * bx[:, None]
    m[:, :, 1] = u1 * ay[:, None] + u2 * by[:, None]
    m[:, :, 2] = s0 - m[:, :, 0] * x0[:, None] - m[:, :, 1] * y0[:, None]
    # Triangle-index map, far to near so the nearer surface wins at large yaw.
    order = np.argsort(-dst[tris, 2].mean(1), kind="stable")
    idx = np.zeros((h, w), np.uint16)
    pts = np.round(d * 16).astype(np.int32)
    for k in order:
        cv2.fillConvexPoly(idx, pts[k], int(k) + 1, lineType=cv2.LINE_8, shift=4)
    mm = np.concatenate([np.array([[[1.0, 0, 0], [0, 1.0, 0]]]), m])[idx]  # (h, w, 2, 3)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    map_x = (mm[..., 0, 0] * xs + mm[..., 0, 1] * ys + mm[..., 0, 2]).astype(np.float32)
    map_y = (mm[..., 1, 0] * xs + mm[..., 1, 1] * ys + mm[..., 1, 2]).astype(np.float32)
    return cv2.remap(sub.still, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def paint(
    img: np.ndarray, sub: Subject, dst: np.ndarray, eyes: float, mouth: float, phone: float, cover: float = 0.0
) -> None:
    """Cues the warp alone cannot give: mouth interior, closed lids, a phone and hand, a hand over the mouth."""
    import cv2

    face = dst[: g.N_FACE, :2]
    fw = np.ptp(face[:, 0])
    fh = np.ptp(face[:, 1])
    if mouth > 0.04:
        poly = np.round(face[list(g.MOUTH_INNER)] * 4).astype(np.int32)
        layer = img.copy()
        cv2.fillPoly(layer, [poly], (40, 18, 22), lineType=cv2.LINE_AA, shift=2)
        if mouth > 0.25:
            up = face[list(g.UPPER_LIP_INNER)]
            band = np.vstack([up, (up + [0, 0.12 * mouth * fw])[::-1]])
            mask = np.zeros(img.shape[:2], np.uint8)
            cv2.fillPoly(mask, [poly], 1, shift=2)
            teeth = np.zeros_like(mask)
            cv2.fillPoly(teeth, [np.round(band * 4).astype(np.int32)], 1, shift=2)
            layer[(mask & teeth).astype(bool)] = (215, 210, 195)
        a = min(1.0, mouth * 6)
        cv2.addWeighted(layer, a, img, 1 - a, 0, dst=img)
    if eyes > 0.3:
        layer = img.copy()
        for contour, lower in ((g.EYE_RIGHT_CONTOUR, g.EYE_RIGHT_LOWER), (g.EYE_LEFT_CONTOUR, g.EYE_LEFT_LOWER)):
            cv2.fillPoly(
                layer, [np.round(face[list(contour)] * 4).astype(np.int32)], sub.skin, lineType=cv2.LINE_AA, shift=2
            )
            cv2.polylines(
                layer,
                [np.round(face[list(lower)] * 4).astype(np.int32)],
                False,
                (30, 25, 25),
                1,
                lineType=cv2.LINE_AA,
                shift=2,
            )
        a = float(np.clip((eyes - 0.3) / 0.5, 0, 1))
        cv2.addWeighted(layer, a, img, 1 - a, 0, dst=img)
    if cover > 0.05:  # a hand over a yawn: the back of a hand, fingers towards one cheek
        c = face[list(g.MOUTH_INNER)].mean(0) + [0.0, 0.06 * fh]
        layer = img.copy()
        cv2.ellipse(
            layer,
            (round(c[0]), round(c[1])),
            (round(0.3 * fw), round(0.17 * fh)),
            -10,
            0,
            360,
            tuple(int(v * 0.92) for v in sub.skin),
            -1,
            lineType=cv2.LINE_AA,
        )
        a = float(np.clip(cover, 0, 1))
        cv2.addWeighted(layer, a, img, 1 - a, 0, dst=img)
    if phone in (-1.0, 1.0):
        ear = face[g.EAR_RIGHT if phone < 0 else g.EAR_LEFT]
        c = ear + [phone * 0.06 * fw, 0.05 * fh]
        box = cv2.boxPoints(((float(c[0]), float(c[1])), (0.2 * fw, 0.55 * fh), float(phone * 12)))
        cv2.fillConvexPoly(img, np.round(box).astype(np.int32), (22, 22, 26), lineType=cv2.LINE_AA)
        hand = (round(c[0] + phone * 0.05 * fw), round(c[1] + 0.28 * fh))
        cv2.ellipse(
            img, hand, (round(0.17 * fw), round(0.2 * fh)), phone * 20, 0, 360, sub.skin, -1, lineType=cv2.LINE_AA
        )
    elif phone == 2.0:
        h = img.shape[0]
        cx, cy = float(face[:, 0].mean()), min(h - 0.1 * fh, face[:, 1].max() + 0.55 * fh)
        box = cv2.boxPoints(((cx, cy), (0.45 * fw, 0.28 * fh), 0.0))
        cv2.fillConvexPoly(img, np.round(box).astype(np.int32), (20, 20, 24), lineType=cv2.LINE_AA)
        screen = cv2.boxPoints(((cx, cy), (0.38 * fw, 0.2 * fh), 0.0))
        cv2.fillConvexPoly(img, np.round(screen).astype(np.int32), (200, 225, 245), lineType=cv2.LINE_AA)
        for sgn in (-1, 1):
            cv2.ellipse(
                img,
                (round(cx + sgn * 0.26 * fw), round(cy + 0.08 * fh)),
                (round(0.12 * fw), round(0.16 * fh)),
                0,
                0,
                360,
                sub.skin,
                -1,
                lineType=cv2.LINE_AA,
            )


def render_clip(sub: Subject, label: str, seed: int, n: int, fps: float) -> list[np.ndarray]:
    """All RGB frames of one clip (deterministic for ``seed``)."""
    import cv2

    rng = np.random.default_rng(seed)
    sc = script(label, rng, n, fps, sub.habits)
    cv2.setRNGSeed(seed)
    noise = np.empty(sub.still.shape, np.float32)
    h, w = sub.still.shape[:2]
    frames = []
    for i in range(n):
        dst = deform(sub, sc["yaw"][i], sc["pitch"][i], sc["roll"][i], sc["eyes"][i], sc["mouth"][i])
        img = warp(sub, dst)
        paint(img, sub, dst, sc["eyes"][i], sc["mouth"][i], sc["phone"][i], sc["cover"][i])
        shift = np.array([[1.0, 0.0, sc["dx"][i]], [0.0, 1.0, sc["dy"][i]]])
        img = cv2.warpAffine(img, shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        cv2.randn(noise, 0.0, sub.noise)
        out = cv2.add(img.astype(np.float32) * np.float32(sc["gain"][i]), noise)
        frames.append(out.clip(0, 255).astype(np.uint8))
    return frames


# --- the stage ------------------------------------------------------------------------------
def build_subjects(p: DemoParams) -> list[Subject]:
    """The first ``p.subjects`` usable faces, each with its own seeded appearance."""
    subjects: list[Subject] = []
    rejected = []
    with mpa.quiet_native_stderr():
        fm = _facemesh_static()
        try:
            for k, (name, photo) in enumerate(face_sources()):
                sub = make_subject(name, photo, np.random.default_rng([p.seed, k]), p.width, p.height, fm)
                if sub is None:
                    rejected.append(name)
                    continue
                subjects.append(sub)
                if len(subjects) == p.subjects:
                    break
        finally:
            fm.close()
    if rejected:
        log.info("demo: %d face photos rejected (no face found, or mouth open at rest)", len(rejected))
    if len(subjects) < p.subjects:
        raise ConfigError(f"params key 'demo.subjects' is {p.subjects}, but only {len(subjects)} usable faces exist")
    return subjects


def _clip_job(args: tuple) -> tuple[str, bytes]:
    sub, label, seed, n, fps, rel = args
    frames = render_clip(sub, label, seed, n, fps)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "clip.mp4"
        write_mp4(frames, path, fps)
        return rel, path.read_bytes()


def clip_seed(seed: int, subject: int, label: int, clip: int) -> int:
    """The seed of one clip: independent of worker scheduling, fits OpenCV's C int."""
    return int(np.random.SeedSequence([seed, subject, label, clip]).generate_state(1)[0] % 2**31)


def generate(p: DemoParams, out_dir: Path, workers: int = 1, task: str = "distraction") -> list[dict[str, str]]:
    """Write ``out_dir/videos/*.mp4`` and ``out_dir/labels.csv`` for ``task``; returns the label rows."""
    classes = TASK_CLASSES[task]
    subjects = build_subjects(p)
    n = round(p.seconds * p.fps)
    jobs, rows = [], []
    for si, sub in enumerate(subjects):
        sub.habits = habits(p.seed, si)
        sid = f"s{si + 1:02d}"
        for ci, label in enumerate(classes):
            for k in range(p.clips_per_class):
                rel = f"videos/{sid}_{label}_{k + 1}.mp4"
                jobs.append((sub, label, clip_seed(p.seed, si, ci, k), n, p.fps, rel))
                rows.append({"video": rel, "subject": sid, "label": label})
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    log.info(
        "demo (%s): %d subjects x %d classes %s x %d clips of %g s",
        task,
        len(subjects),
        len(classes),
        "/".join(classes),
        p.clips_per_class,
        p.seconds,
    )
    for rel, data in map_jobs(_clip_job, jobs, workers, "demo clips"):
        _write_bytes(out_dir / rel, data)
    buf = io.StringIO()
    wr = csv.DictWriter(buf, ["video", "subject", "label"], lineterminator="\n")
    wr.writeheader()
    wr.writerows(rows)
    with atomic_path(out_dir / "labels.csv") as tmp:
        tmp.write_text(buf.getvalue())
    return rows


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def run(params: Params, out_dir: Path) -> dict:
    """Regenerate the demo raw folder from scratch."""
    task, want = params.data.task, TASK_CLASSES[params.data.task]
    if Path(params.data.raw_dir).resolve() == out_dir.resolve() and set(params.data.classes) != set(want):
        raise ConfigError(
            f"params key 'data.classes' is {list(params.data.classes)}, but the {task} demo makes the classes "
            f'{list(want)}: set data.classes to {list(want)} (README "Tasks")'
        )
    if (out_dir / "videos").exists():
        shutil.rmtree(out_dir / "videos")
    rows = generate(params.demo, out_dir, resolve_workers(params.frames.workers), task)
    return {"clips": len(rows), "subjects": len({r["subject"] for r in rows})}


def main(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="folder to write: videos/ + labels.csv")] = Path("data/demo"),
) -> None:
    """Generate the synthetic demo videos and labels.csv."""
    run_stage(lambda: run(load_params(params), out))
