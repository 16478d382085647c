"""`driver-pipeline import FORMAT SOURCE` on files laid out as each public data set ships them.

DMD's annotations are not in its public repository (they come with the data, under its own
licence), so the DMD files here are written to the documented OpenLABEL schema with the action
names of DMD's own annotation config (Vicomtech/DMD-Driver-Monitoring-Dataset,
annotation-tool/config_distraction.json). UTA-RLDD and YawDD carry their labels in folder and
file names; those trees are rebuilt with their real naming."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import importers
from pipeline.core.config import load_params
from pipeline.core.errors import LabelsError
from tests.conftest import ROOT, dvc_env


def params_file(tmp_path):
    """The project's real params.yaml (comments and all), to be edited by the importer."""
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text())
    return p


def dmd_session(root, group, subject, session, actions, fps=30, frames=90, video=True):
    from pipeline.vision.video import write_mp4

    stem = f"{group}_{subject}_{session}_2019-03-08T09;31;15+01;00_rgb"
    folder = root / group / str(subject) / session
    folder.mkdir(parents=True, exist_ok=True)
    if video:
        write_mp4([np.zeros((48, 64, 3), np.uint8)] * frames, folder / f"{stem}_face.mp4", fps)
    doc = {
        "openlabel": {
            "metadata": {
                "schema_version": "1.0.0",
                "streams": {
                    "face_camera": {
                        "uri": f"{group}/{subject}/{session}/{stem}_face.mp4",
                        "stream_properties": {"total_frames": frames, "sync": {"frame_shift": 0}},
                    },
                    "body_camera": {"uri": f"{stem}_body.mp4", "stream_properties": {"sync": {"frame_shift": 12}}},
                },
            },
            "actions": {
                str(i): {
                    "name": kind.split("/")[1],
                    "type": kind,
                    "frame_intervals": [{"frame_start": a, "frame_end": b}],
                }
                for i, (kind, a, b) in enumerate(actions)
            },
        }
    }
    (folder / f"{stem}_ann_distraction.json").write_text(json.dumps(doc))
    return folder


def test_dmd_actions_become_segments_in_seconds_and_params_map_them(tmp_path):
    src = tmp_path / "dmd"
    dmd_session(
        src,
        "gA",
        1,
        "s1",
        [
            ("driver_actions/safe_drive", 0, 29),
            ("driver_actions/texting_right", 30, 59),
            ("gaze_on_road/looking_road", 0, 89),  # another annotation level: not a driver action
            ("driver_actions/unclassified", 60, 74),
            ("driver_actions/phonecall_left", 75, 89),
        ],
    )
    dmd_session(src, "gB", 7, "s2", [("driver_actions/safe_drive", 0, 44), ("driver_actions/texting_left", 45, 89)])
    params = params_file(tmp_path)
    res = importers.run("dmd", src, params)
    assert res["videos"] == 2 and res["subjects"] == 2 and res["classes"] == ["normal", "phonecall", "text"]
    df = pd.read_csv(src / "labels.csv", keep_default_na=False)
    first = df[df["subject"] == "gA_1"]
    assert first["label"].tolist() == ["safe_drive", "texting_right", "unclassified", "phonecall_left"]
    assert first["start_s"].tolist() == [0, 1, 2, 2.5] and first["end_s"].tolist() == [1, 2, 2.5, 3]  # frames/30
    assert first["video"].iloc[0].startswith("gA/1/s1/gA_1_s1_") and first["video"].iloc[0].endswith("_rgb_face.mp4")
    p = load_params(params)
    assert p.data.raw_dir == src.as_posix() and p.data.classes == ("normal", "phonecall", "text")
    assert p.data.label_map == {
        "phonecall_left": "phonecall",
        "safe_drive": "normal",
        "texting_left": "text",
        "texting_right": "text",
        "unclassified": "",
    }
    text = params.read_text()
    assert "written by `driver-pipeline import dmd`" in text
    assert "# Folder holding the videos" not in text  # the old data section is replaced ...
    assert "hparams:" in text and "# constructor keyword arguments per model" in text  # ... the rest kept as it was
    assert yaml.safe_load(text)["train"] == yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    with pytest.raises(LabelsError, match=r"labels.csv exists; move it away or pass --force"):
        importers.run("dmd", src, params)


@pytest.mark.parametrize(
    ("actions", "video", "pattern"),
    [
        (
            [("driver_actions/safe_drive", 0, 40), ("driver_actions/drinking", 30, 60)],
            True,
            r"overlapping intervals: gA/1/s1/.*action 0 \(driver_actions/safe_drive\) frames 0-40 and .*action 1 "
            r"\(driver_actions/drinking\) frames 30-60",
        ),
        ([("driver_actions/safe_drive", 0, 40)], False, r"its face-camera video is missing: looked for \['gA/1/s1/"),
        (
            [("driver_actions/safe_drive", 0, 40), ("driver_actions/eating", 41, 60)],
            True,
            r"labels.csv, row 3: unknown label 'eating'; allowed: \['normal', 'text'\]"
            r".* or a label of params data.label_map",
        ),
        ([("driver_actions/safe_drive", 40, 10)], True, r"action 0 \(driver_actions/safe_drive\) has frames 40..10"),
    ],
)
def test_dmd_problems_are_clear_errors_and_nothing_is_written(tmp_path, actions, video, pattern):
    src = tmp_path / "dmd"
    dmd_session(src, "gA", 1, "s1", actions, video=video)
    dmd_session(src, "gB", 2, "s1", [("driver_actions/texting_left", 0, 80)])
    params = params_file(tmp_path)
    before = params.read_text()
    with pytest.raises(LabelsError, match=pattern):
        importers.run("dmd", src, params)
    assert not (src / "labels.csv").exists() and params.read_text() == before


def test_uta_rldd_levels_from_file_names_and_what_is_not_imported_is_listed(tmp_path):
    src = tmp_path / "UTA-RLDD"
    for fold, person, names in (
        ("Fold1_part1", "01", ["0.mov", "5.MOV", "10.mov"]),
        ("Fold1_part2", "02", ["0.mp4", "10.m4v", "5 (2).mov"]),
    ):
        (src / fold / person).mkdir(parents=True)
        for n in names:
            (src / fold / person / n).write_bytes(b"video bytes")
    (src / "README.txt").write_text("not a video")
    params = params_file(tmp_path)
    res = importers.run("uta-rldd", src, params)
    assert res["classes"] == ["alert", "low_vigilant", "drowsy"] and res["subjects"] == 2 and res["videos"] == 5
    assert res["not_imported"] == ["Fold1_part2/02/5 (2).mov: file name is not a level 0, 5 or 10"]
    assert "long windows" in res["notes"][0] and res["task"] == "drowsiness"
    assert load_params(params).data.task == "drowsiness"  # the task of README "Tasks", in params
    df = pd.read_csv(src / "labels.csv", keep_default_na=False)
    assert dict(zip(df["video"], df["label"], strict=True)) == {
        "Fold1_part1/01/0.mov": "alert",
        "Fold1_part1/01/10.mov": "drowsy",
        "Fold1_part1/01/5.MOV": "low_vigilant",
        "Fold1_part2/02/0.mp4": "alert",
        "Fold1_part2/02/10.m4v": "drowsy",
    }
    assert (df["start_s"] == "").all() and (df["end_s"] == "").all()  # whole videos


def test_yawdd_labels_from_mirror_names_and_the_cli_says_what_it_did(tmp_path):
    src = tmp_path / "YawDD"
    mirror = src / "YawDD dataset" / "Mirror"
    for folder, names in (
        (
            "Female_mirror",
            ["1-FemaleNoGlasses-Normal.avi", "1-FemaleNoGlasses-Talking.avi", "1-FemaleNoGlasses-Yawning.avi"],
        ),
        ("Male_mirror Avi Videos", ["1-MaleGlasses-Normal.avi", "1-MaleGlasses-Yawning.avi"]),
    ):
        (mirror / folder).mkdir(parents=True)
        for n in names:
            (mirror / folder / n).write_bytes(b"video bytes")
    (src / "YawDD dataset" / "Dash" / "Female").mkdir(parents=True)
    (src / "YawDD dataset" / "Dash" / "Female" / "1.avi").write_bytes(b"video bytes")
    params = params_file(tmp_path)
    cmd = [sys.executable, "-m", "pipeline.cli", "import", "yawdd", str(src), "--params", str(params)]
    res = subprocess.run(cmd, cwd=tmp_path, env=dvc_env(), capture_output=True, text=True)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "not imported: YawDD dataset/Dash/Female/1.avi: a dash-camera video" in res.stderr
    assert "yawdd: 5 labelled row(s), 5 video(s) of 2 subject(s)" in res.stderr
    df = pd.read_csv(src / "labels.csv")
    assert sorted(set(df["subject"])) == ["Female1", "Male1"]
    p = load_params(params)
    assert p.data.classes == ("normal", "talking", "yawn") and p.data.label_map["yawning"] == "yawn"
    assert p.data.task == "distraction"
    res = subprocess.run(cmd, cwd=tmp_path, env=dvc_env(), capture_output=True, text=True)
    assert res.returncode != 0 and "labels.csv exists" in res.stderr and "Traceback" not in res.stderr


def test_an_inline_data_section_is_replaced_not_shadowed():
    text = "data: {raw_dir: old, classes: [a, b]}\ntrain:\n  epochs: 3\n"
    block = importers.data_block("new", "labels.csv", ("x", "y"), {"p": "x", "q": "y"}, "yawdd")
    out = yaml.safe_load(importers.replace_data_section(text, block))
    assert out["data"]["raw_dir"] == "new" and out["train"] == {"epochs": 3}
    assert importers.replace_data_section(text, block).count("data:") == 1
