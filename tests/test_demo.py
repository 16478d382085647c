"""The demo generator: raw-data contract, determinism, and faces MediaPipe can find."""

import pandas as pd

from pipeline.contracts.labels import load_labels
from pipeline.stages import demo


def test_same_seed_same_bytes_and_valid_contract(demo_params, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    p = demo_params.__class__(**{**demo_params.__dict__, "seconds": 1.0})
    rows = demo.generate(p, a, workers=1)
    demo.generate(p, b, workers=2)
    assert len(rows) == 2 * 4 * 1
    for f in sorted(a.rglob("*")):
        if f.is_file():
            assert f.read_bytes() == (b / f.relative_to(a)).read_bytes(), f
    entries = load_labels(a, "labels.csv", demo.CLASSES)
    assert {e.subject for e in entries} == {"s01", "s02"}
    assert {e.segments[0].label for e in entries} == set(demo.CLASSES)
    other = demo.generate(p.__class__(**{**p.__dict__, "seed": p.seed + 1}), tmp_path / "c", workers=1)
    assert (tmp_path / "c" / other[0]["video"]).read_bytes() != (a / rows[0]["video"]).read_bytes()


def test_face_found_in_nearly_every_frame_of_every_class(demo_params, tmp_path):
    from pipeline.stages import frames, landmarks
    from tests.conftest import tiny_params

    raw = tmp_path / "raw"
    demo.generate(demo_params, raw, workers=2)
    p = tiny_params(raw)
    frames.run(p, tmp_path / "fr")
    landmarks.run(p, tmp_path / "fr", tmp_path / "lm")
    man = pd.DataFrame(pd.read_json(tmp_path / "lm" / "manifest.json")["videos"].tolist())
    man["label"] = man["video"].str.extract(r"_(normal|phonecall|text|yawn)_")[0]
    rate = man.groupby("label")["face_frames"].sum() / man.groupby("label")["frames"].sum()
    assert set(rate.index) == set(demo.CLASSES)
    assert (rate >= 0.98).all(), rate.to_dict()


def test_scripts_follow_their_class():
    import numpy as np

    def sc(label, seed):
        return demo.script(label, np.random.default_rng(seed), 120, 15)

    assert np.mean([sc("yawn", s)["mouth"].max() for s in range(5)]) > 0.6
    assert np.mean([sc("text", s)["pitch"].mean() for s in range(5)]) < -8
    assert np.mean([abs(sc("phonecall", s)["roll"].mean()) for s in range(5)]) > 5
    assert all((sc("phonecall", s)["phone"] != 0).all() for s in range(3))
    assert all((sc("normal", s)["phone"] == 0).all() for s in range(3))


def test_every_class_holds_what_real_drivers_do():
    """No single feature gives a class away: talking, glances down and mirror checks while driving,
    calls on either ear, covered and head-down yawns, lighting changes and camera shake."""
    import numpy as np

    drivers = [demo.habits(7, s) for s in range(10)]

    def clips(label):
        return [demo.script(label, np.random.default_rng(100 * s + k), 180, 15, h) for s, h in enumerate(drivers)
                for k in range(3)]  # fmt: skip

    normal, call, text, yawn = (clips(c) for c in demo.CLASSES)
    assert np.mean([(c["mouth"] > 0.1).any() for c in normal]) > 0.3  # talking or singing
    assert np.mean([(c["pitch"] - np.median(c["pitch"]) < -8).any() for c in normal]) > 0.3  # glances down
    assert np.mean([(np.abs(c["yaw"] - np.median(c["yaw"])) > 15).any() for c in normal]) > 0.5  # mirror checks
    assert {float(c["phone"][0]) for c in call} == {-1.0, 1.0}  # either ear
    assert np.mean([(c["cover"] > 0.5).any() for c in yawn]) > 0.2  # yawns behind a hand
    heads_down = [c for c in yawn if np.min(c["pitch"] - np.median(c["pitch"])) < -3]
    assert heads_down  # some drivers' heads drop forward when they yawn, as when looking at a phone
    assert np.mean([(c["mouth"] > 0.1).any() for c in text]) > 0.1  # voice messages while texting
    assert all(c["gain"].min() < 0.95 or c["gain"].max() > 1.05 for c in normal[:10])  # light changes
    assert all(np.ptp(c["dx"]) > 0.5 for c in normal[:10])  # camera shake
    texting_pitch = sorted(h.text_pitch for h in drivers)
    assert texting_pitch[-1] - texting_pitch[0] > 8  # drivers hold their phones differently
