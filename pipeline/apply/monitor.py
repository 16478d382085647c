"""``monitor``: a trained model on a live stream (camera, RTSP/HTTP, or a video file played at
its own pace), alerts as JSON lines.

Per frame, the training path: frames are taken at the model's rate (the source frame nearest each
tick; ticks with no frame near them are stale, by the frames stage's rule), upright,
letterboxed, through the same :class:`~pipeline.vision.landmarker.Landmarker`; the last frames'
landmarks live in a bounded ring buffer. Every ``stride`` frames the buffer becomes features
(:func:`~pipeline.vision.framefeatures.video_features`, the same function as training), the
newest window goes through the model, and :class:`~pipeline.apply.events.AlertTracker` decides.
A new driver is calibrated first (pipeline/apply/calibration.py): no decision and no alert
until ``calibration_s`` seconds with a face were seen, and the output says so.

Output: one JSON object per line: ``calibrating`` / ``calibrated``, ``alert`` (class, time,
probability, threshold, mode) and ``clear`` (when the behaviour ended), ``unfamiliar`` (the stream
turned unlike the model's training video, pipeline/modeling/familiarity.py: no class and no alert
while it stays so), and with ``--decisions`` every window's probabilities. Memory is bounded by
the ring buffer, whatever the stream's length.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.apply.calibration import median_baseline
from pipeline.apply.events import AlertTracker
from pipeline.apply.model import AppliedModel
from pipeline.contracts.features import DROWSINESS
from pipeline.contracts.landmarks import Row, rows_to_batch
from pipeline.contracts.windows import pool_steps
from pipeline.core.errors import DataError
from pipeline.vision.framefeatures import video_features
from pipeline.vision.geometry import Letterbox, letterbox_image

log = logging.getLogger(__name__)

CONTEXT_S = 3.0  # features context before the newest window (gap filling, head-pose filter settling)


@dataclass(frozen=True)
class MonitorOptions:
    mode: str = "alert"
    calibration_s: float = 20.0
    clear_s: float = 2.0
    quiet_class: str = ""
    thresholds: dict[str, float] | None = None
    realtime: bool = True  # a file is played at its own pace (False: as fast as it can be processed)
    show: bool = False  # an on-screen window with the mesh, class and probabilities
    decisions: bool = False  # emit every window's probabilities too
    max_seconds: float | None = None  # stop after this much stream time
    unfamiliar: bool = True  # windows unlike the training windows: "unfamiliar", no alert


def latest_only(
    frames: Iterator[tuple[float, np.ndarray]], stats: dict[str, int]
) -> Iterator[tuple[float, np.ndarray]]:
    """Read ``frames`` in a background thread and hand over only the newest one: a consumer slower
    than the source skips frames (counted in ``stats["dropped"]``) instead of falling ever further
    behind, as a live monitor must. The skipped time shows up as stale ticks downstream."""
    import threading

    cond = threading.Condition()
    box: dict[str, Any] = {"item": None, "seq": 0, "done": False, "error": None}
    stop = threading.Event()

    def read() -> None:
        try:
            for item in frames:
                with cond:
                    box["item"], box["seq"] = item, box["seq"] + 1
                    cond.notify()
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            box["error"] = exc
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # releases the capture / file in this thread
            with cond:
                box["done"] = True
                cond.notify()

    thread = threading.Thread(target=read, name="frame-reader", daemon=True)
    thread.start()
    seen = 0
    try:
        while True:
            with cond:
                cond.wait_for(lambda s=seen: box["seq"] > s or box["done"])
                if box["seq"] == seen:  # done, nothing new
                    if box["error"] is not None:
                        raise box["error"]
                    return
                stats["dropped"] = stats.get("dropped", 0) + box["seq"] - seen - 1
                seen, item = box["seq"], box["item"]
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def open_source(
    source: str, realtime: bool = True, stats: dict[str, int] | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds since the start, upright BGR frame) from a camera index, a stream URL or a file.

    Files use their presentation times and rotation tag (pipeline/vision/video.py); cameras and
    streams are timed by the clock. Live sources and files played at their own pace
    (``realtime``) are read in the background and only the newest frame is processed
    (:func:`latest_only`); ``realtime=False`` processes every frame of a file."""
    stats = {} if stats is None else stats
    if source.isdigit() or "://" in source:
        yield from latest_only(_capture(source), stats)
        return
    path = Path(source)
    if not path.is_file():
        raise DataError(f"'{source}' is neither a camera index, a stream URL nor a video file")
    yield from (latest_only(_file(path, True), stats) if realtime else _file(path, False))


def _capture(source: str) -> Iterator[tuple[float, np.ndarray]]:
    import cv2

    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise DataError(f"cannot open camera/stream '{source}': check the index or URL and that it is reachable")
    t0 = time.monotonic()
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                log.warning("stream '%s' ended or stopped delivering frames", source)
                return
            yield time.monotonic() - t0, frame
    finally:
        cap.release()


def _file(path: Path, paced: bool) -> Iterator[tuple[float, np.ndarray]]:
    from pipeline.vision.video import open_video

    with open_video(path) as (_, frames):
        t0 = time.monotonic()
        for t, frame in frames:
            if paced:
                wait = t - (time.monotonic() - t0)
                if wait > 0:
                    time.sleep(wait)
            yield t, frame


def ticks(frames: Iterator[tuple[float, np.ndarray]], fps: float) -> Iterator[tuple[int, np.ndarray | None]]:
    """(output frame k, frame or None when stale) at ``fps``, as the frames stage plans a file
    (pipeline/vision/frameplan.py): tick k/fps shows the source frame nearest in time (the earlier
    one on a tie) and is stale when that frame is farther than one output period, or than half the
    source's typical spacing when that is longer (a slow source: a 5-fps camera is not stale two
    ticks in three). A tick is decided when the first frame after it arrives, at most one source
    interval late; the typical spacing is the median of the last 30 intervals."""
    k = 0
    first: float | None = None
    prev: tuple[float, np.ndarray] | None = None
    spacing: collections.deque[float] = collections.deque(maxlen=30)
    for t, frame in frames:
        if first is None:
            first = t
        t -= first
        if prev is not None:
            spacing.append(t - prev[0])
        tol = max(1.0 / fps, float(np.median(spacing)) / 2 if spacing else 0.0) * (1 + 1e-6)
        while k / fps <= t + 1e-9:
            tk = k / fps
            src_t, shown = prev if prev is not None and tk - prev[0] <= t - tk + 1e-9 else (t, frame)
            yield k, (None if abs(tk - src_t) > tol else shown)
            k += 1
        prev = (t, frame)


class Monitor:
    """The per-frame state of one stream: landmarks, ring buffer, calibration, alerts."""

    def __init__(self, model: AppliedModel, o: MonitorOptions, emit: Callable[[dict[str, Any]], None]) -> None:
        self.model, self.o, self.emit = model, o, emit
        p = model.params
        self.fps = p.frames.fps
        self.size, self.stride = model.window, p.windows.stride
        drowsy = any(f in DROWSINESS for f in model.card.features)  # trailing-window features need their history
        context = max(CONTEXT_S, p.features.drowsy_window_s if drowsy else 0.0)
        self.buffer: collections.deque[Row] = collections.deque(maxlen=self.size + round(context * self.fps))
        self.thresholds = o.thresholds or model.thresholds[o.mode]
        self.tracker = AlertTracker(self.thresholds, o.quiet_class or model.classes[0], o.clear_s, o.mode)
        self.need = max(1, round(o.calibration_s * self.fps)) if model.subject_baseline else 0
        self.calib: list[np.ndarray] = []
        self.calib_seen = -1  # last frame whose features were collected for calibration
        self.base: np.ndarray | None = None if self.need else np.zeros(len(model.card.features), np.float32)
        self.box: Letterbox | None = None
        self.landmarker = None
        self.frames = 0
        self.windows = 0
        self.unfamiliar_windows = 0
        self.last: dict[str, Any] = {}

    def start(self, width: int, height: int) -> None:
        from pipeline.vision import mediapipe as mpa
        from pipeline.vision.landmarker import Landmarker

        self.box = Letterbox.fit(width, height, self.model.params.frames.canvas)
        self.canvas = np.zeros((self.box.canvas_h, self.box.canvas_w, 3), np.uint8)
        with mpa.quiet_native_stderr():  # MediaPipe's start-up chatter (the first frame prints some too)
            self.landmarker = Landmarker(self.model.params.landmarks, self.box)
        if self.need:
            self.emit({"event": "calibrating", "t": 0.0, "seconds": self.o.calibration_s})

    def close(self) -> None:
        if self.landmarker is not None:
            self.landmarker.close()

    def step(self, k: int, frame: np.ndarray | None) -> np.ndarray | None:
        """One output frame (None: stale). Returns the driver's face (source pixels) or None."""
        import cv2

        if self.landmarker is None:
            if frame is None:
                return None
            self.start(frame.shape[1], frame.shape[0])
        assert self.landmarker is not None and self.box is not None
        t = k / self.fps
        face = None
        if frame is None or frame.shape[:2] != (self.box.src_h, self.box.src_w):
            if frame is not None:
                log.warning("frame size changed mid-stream; frame %d skipped", k)
            self.landmarker.skip()
            self.buffer.append((k, t, None, [], 0, True))
        else:
            letterbox_image(frame, self.box, out=self.canvas)
            rgb = cv2.cvtColor(self.canvas, cv2.COLOR_BGR2RGB)
            if self.frames == 0:
                from pipeline.vision import mediapipe as mpa

                with mpa.quiet_native_stderr():
                    face, hands, faces = self.landmarker.process(rgb)
            else:
                face, hands, faces = self.landmarker.process(rgb)
            self.buffer.append((k, t, face, hands, faces, False))
        self.frames += 1
        if (k + 1) % self.stride == 0 and len(self.buffer) >= min(self.size, self.buffer.maxlen or 0):
            self.decide(k)
        return face

    def decide(self, k: int) -> None:
        """Features of the buffer; calibration, or the newest window through the model and the tracker."""
        m = self.model
        feats = video_features([rows_to_batch(list(self.buffer))], m.params.features, self.fps)
        x = np.array(feats[list(m.card.features)].to_numpy(np.float32), order="C")
        face = feats["face_present"].to_numpy()
        t_end = (k + 1) / self.fps
        if self.base is None:
            frames = feats["frame"].to_numpy()
            new = (frames > self.calib_seen) & (face > 0)
            self.calib_seen = int(frames[-1])
            self.calib.append(x[new])
            have = sum(len(c) for c in self.calib)
            if have >= self.need:
                self.base = median_baseline(np.concatenate(self.calib)[: self.need], m.card.features)
                self.calib = []
                self.emit({"event": "calibrated", "t": round(t_end, 3), "seconds": self.o.calibration_s})
            return
        if len(x) < self.size:
            return
        window = pool_steps((x[-self.size :] - self.base)[None], m.pool)
        face_frac = float(face[-self.size :].mean())
        probs = dict(zip(m.classes, m.proba(window)[0].tolist(), strict=True))
        rel, far = m.unfamiliar(window)
        face_ok = face_frac >= m.params.windows.min_face_fraction
        unfamiliar = bool(face_ok and far[0] and self.o.unfamiliar)
        live = face_ok and not unfamiliar
        self.windows += 1
        if unfamiliar:
            self.unfamiliar_windows += 1
            if not self.last.get("unfamiliar"):  # once per stretch, not per window
                self.emit({"event": "unfamiliar", "t": round(t_end, 3), "score": round(float(rel[0]), 3)})
        self.last = {
            "t": round(t_end, 3),
            "probs": probs,
            "face_fraction": round(face_frac, 3),
            "decided": live,
            "unfamiliar": unfamiliar,
            "unfamiliar_score": round(float(rel[0]), 4),
        }
        if self.o.decisions:
            self.emit({"event": "decision", **self.last, "probs": {c: round(v, 5) for c, v in probs.items()}})
        for ev in self.tracker.update(t_end, probs, live=live):
            self.emit(ev)

    def label(self) -> str:
        if self.base is None:
            return "calibrating"
        if not self.last:
            return "(first window not complete)"
        if self.last.get("unfamiliar"):
            return "unfamiliar"
        if not self.last["decided"]:
            return "(too little face)"
        return max(self.last["probs"], key=self.last["probs"].get)


@contextlib.contextmanager
def live_filtered_stderr() -> Iterator[None]:
    """For a long-running stream: fd 2 (native and Python writes alike) goes through a pipe, and a
    thread passes every line on at once except MediaPipe's native chatter
    (:data:`pipeline.vision.mediapipe.CHATTER`). The stages capture and filter per video instead;
    a live monitor cannot hold its warnings back until the stream ends."""
    import threading

    from pipeline.vision.mediapipe import CHATTER

    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as r:
            for raw in r:
                if not CHATTER.search(raw.decode(errors="replace")):
                    os.write(saved, raw)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the pump reads to the end and stops
        thread.join(timeout=5)
        os.close(saved)


def json_lines(out=None) -> Callable[[dict[str, Any]], None]:
    """An emitter writing one JSON object per line to ``out`` (stdout), flushed at once."""
    stream = out or sys.stdout

    def emit(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event, sort_keys=True) + "\n")
        stream.flush()

    return emit


def run(source: str, model: AppliedModel, o: MonitorOptions, emit: Callable[[dict[str, Any]], None]) -> dict:
    """Monitor ``source`` until it ends (or ``max_seconds`` of stream time, or Ctrl-C)."""
    if (
        o.show
        and sys.platform.startswith("linux")
        and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    ):
        # OpenCV's Qt window aborts the whole process without a display: refuse before anything starts
        raise DataError("--show needs a display (DISPLAY is not set here); run without --show (headless)")
    mon = Monitor(model, o, emit)
    log.info(
        "monitor: %s with model '%s' (%s), %s mode, window %.1f s decided every %.2f s%s",
        source,
        model.name,
        model.source,
        o.mode,
        model.window / mon.fps,
        mon.stride / mon.fps,
        f", calibration {o.calibration_s:g} s" if mon.need else "",
    )
    t0 = time.perf_counter()
    n = 0  # output frames processed
    stats: dict[str, int] = {}
    with live_filtered_stderr():  # MediaPipe's native log lines, whenever they come, are dropped
        try:
            for k, frame in ticks(open_source(source, o.realtime, stats), mon.fps):
                if o.max_seconds is not None and k / mon.fps >= o.max_seconds:
                    break
                face = mon.step(k, frame)
                n = k + 1
                if o.show and frame is not None:
                    show(frame, face, mon)
        finally:
            mon.close()
            if o.show:
                import cv2

                cv2.destroyAllWindows()
    for ev in mon.tracker.finish(n / mon.fps):
        emit(ev)
    wall = time.perf_counter() - t0
    return {
        "frames": n,
        "stream_s": round(n / mon.fps, 2),
        "wall_s": round(wall, 2),
        "windows": mon.windows,
        "unfamiliar_windows": mon.unfamiliar_windows,
        "unfamiliar_share": round(mon.unfamiliar_windows / mon.windows, 4) if mon.windows else 0.0,
        "unfamiliar_checked": bool(o.unfamiliar and model.knows_familiarity),
        "calibrated": mon.base is not None,
        "dropped_source_frames": stats.get("dropped", 0),  # the monitor was behind the source
    }


def show(frame: np.ndarray, face: np.ndarray | None, mon: Monitor) -> None:
    import cv2

    from pipeline.apply.draw import overlay

    scale = min(1.0, 640 / frame.shape[1])
    small = cv2.resize(frame, None, fx=scale, fy=scale) if scale < 1 else frame.copy()
    overlay(small, face, mon.last.get("probs") if mon.base is not None else None, mon.label(), scale)
    try:
        cv2.imshow("driver monitor (q quits)", small)
    except cv2.error as exc:
        raise DataError(f"--show needs a display this OpenCV build can open ({exc.err}); run without --show") from None
    if cv2.waitKey(1) & 0xFF == ord("q"):
        raise KeyboardInterrupt("q pressed")
