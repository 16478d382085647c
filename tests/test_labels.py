import math

import pytest

from pipeline.contracts.labels import LabelsError, load_labels, video_id_for

CLASSES = ("normal", "phonecall", "text", "yawn")


@pytest.fixture
def raw(tmp_path):
    d = tmp_path / "raw"
    (d / "videos").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4", "long.mp4"):
        (d / "videos" / name).write_bytes(b"x")
    return d


def load(raw, text):
    (raw / "labels.csv").write_text(text)
    return load_labels(raw, "labels.csv", CLASSES)


def test_clip_labels(raw):
    es = load(raw, "video,subject,label\nvideos/a.mp4,s1,yawn\nvideos/b.mp4,s2,normal\n")
    assert [e.video_id for e in es] == ["videos__a", "videos__b"]
    assert es[0].label_at(3.0) == "yawn" and es[0].subject == "s1"


def test_segments(raw):
    es = load(
        raw,
        "video,subject,label,start_s,end_s\n"
        "videos/long.mp4,s1,normal,0,10\nvideos/long.mp4,s1,yawn,10,14.5\nvideos/a.mp4,s2,text,,\n",
    )
    long, a = es
    assert long.label_at(9.99) == "normal" and long.label_at(10) == "yawn" and long.label_at(15) is None
    assert a.segments[0].end_s == math.inf


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("video,label\nvideos/a.mp4,yawn\n", r"missing column\(s\) \['subject'\]"),
        ("video,subject,label\nvideos/a.mp4,s1,sleeping\n", r"row 2: unknown label 'sleeping'"),
        (
            "video,subject,label\nvideos/a.mp4,s1,yawn\nvideos/zz.mp4,s1,yawn\n",
            r"row 3: video file 'videos/zz.mp4' not found",
        ),
        ("video,subject,label\nvideos/a.mp4,s1,yawn\nvideos/a.mp4,s1,yawn\n", r"row 3: duplicate of row 2"),
        (
            "video,subject,label\nvideos/a.mp4,s1,yawn\nvideos/a.mp4,s1,text\n",
            r"row 3: a second label .* overlapping row 2",
        ),
        (
            "video,subject,label,start_s,end_s\nvideos/long.mp4,s1,normal,0,10\nvideos/long.mp4,s1,yawn,9,12\n",
            r"row 3: a segment overlapping row 2",
        ),
        ("video,subject,label,start_s,end_s\nvideos/long.mp4,s1,normal,5,2\n", r"row 2: segment must satisfy"),
        ("video,subject,label\n../outside.mp4,s1,yawn\n", r"row 2: video path '../outside.mp4' leaves the raw folder"),
        ("video,subject,label\n/etc/passwd,s1,yawn\n", r"row 2: video path '/etc/passwd' leaves the raw folder"),
        ("video,subject,label\nvideos/a.mp4,s1,yawn\nvideos/a.mp4,s2,text\n", r"row 3: .*subject 's2' here but 's1'"),
        ("video,subject,label\nvideos/a.mp4,,yawn\n", r"row 2: empty subject"),
        ("video,subject,label,extra\nvideos/a.mp4,s1,yawn,1\n", r"unknown column\(s\) \['extra'\]"),
        (
            "video,subject,label\nvideos/a.mp4,s1,yawn,\nvideos/b.mp4,s2,text,\n",
            r"row 2: 4 fields but the header has 3 \(video,subject,label\) \(a trailing comma\?\)",
        ),
        ("video,subject,label\nvideos/a.mp4,s1\n", r"row 2: 2 fields but the header has 3"),
    ],
)
def test_errors_name_the_row(raw, text, pattern):
    with pytest.raises(LabelsError, match=pattern):
        load(raw, text)


def test_symlink_leaving_raw_folder(raw, tmp_path):
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"x")
    (raw / "videos" / "link.mp4").symlink_to(outside)
    with pytest.raises(LabelsError, match=r"row 2: .*resolves outside the raw folder"):
        load(raw, "video,subject,label\nvideos/link.mp4,s1,yawn\n")


def test_missing_labels_file_says_what_to_do(tmp_path):
    with pytest.raises(LabelsError, match="run the `demo` stage"):
        load_labels(tmp_path, "labels.csv", CLASSES)


def test_video_ids_are_safe_and_distinct():
    assert video_id_for("cars/a b.mp4") == "cars__a_b"
    assert video_id_for("x.mp4") != video_id_for("d/x.mp4")


def test_a_label_map_turns_a_data_sets_labels_into_classes_and_drops_what_maps_to_nothing(raw, caplog):
    (raw / "labels.csv").write_text(
        "video,subject,label,start_s,end_s\n"
        "videos/long.mp4,s1,texting_right,0,10\nvideos/long.mp4,s1,unclassified,10,12\n"
        "videos/long.mp4,s1,safe_drive,12,20\nvideos/a.mp4,s2,unclassified,,\nvideos/b.mp4,s2,yawn,,\n"
    )
    label_map = {"texting_right": "text", "safe_drive": "normal", "unclassified": ""}
    with caplog.at_level("INFO"):
        es = load_labels(raw, "labels.csv", CLASSES, label_map=label_map)
    assert [e.rel for e in es] == ["videos/long.mp4", "videos/b.mp4"]  # a.mp4 had only a dropped label
    assert [(s.label, s.start_s, s.end_s) for s in es[0].segments] == [("text", 0, 10), ("normal", 12, 20)]
    assert "2 row(s) skipped, their labels mapped to '' by params data.label_map: unclassified (2)" in caplog.text
    with pytest.raises(LabelsError, match=r"maps 'safe_drive' to 'driving', which is not one of data.classes"):
        load_labels(raw, "labels.csv", CLASSES, label_map={**label_map, "safe_drive": "driving"})
    with pytest.raises(LabelsError, match=r"row 3: unknown label 'unclassified'.* or a label of params data.label_map"):
        load_labels(raw, "labels.csv", CLASSES, label_map={"texting_right": "text", "safe_drive": "normal"})
