import pytest

from pipeline.core.config import ConfigError, load_params, parse_params
from tests.conftest import ROOT


def test_project_params_load():
    p = load_params(ROOT / "params.yaml")
    assert p.windows.size >= 2
    assert set(p.data.classes) == {"normal", "phonecall", "text", "yawn"}
    assert p.demo.subjects >= 8


def test_unknown_key_named():
    with pytest.raises(ConfigError, match=r"'frames\.fpss'"):
        parse_params({"frames": {"fpss": 10}})


def test_unknown_section_named():
    with pytest.raises(ConfigError, match=r"'framez'"):
        parse_params({"framez": {}})


def test_wrong_type_named():
    with pytest.raises(ConfigError, match=r"'landmarks\.hands' must be a bool"):
        parse_params({"landmarks": {"hands": "yes"}})
    with pytest.raises(ConfigError, match=r"'windows\.size' must be a int"):
        parse_params({"windows": {"size": 2.5}})
    with pytest.raises(ConfigError, match=r"'demo\.subjects'.*boolean"):
        parse_params({"demo": {"subjects": True}})


def test_range_checked():
    with pytest.raises(ConfigError, match=r"'windows\.stride' must be >= 1"):
        parse_params({"windows": {"stride": 0}})


def test_int_accepted_for_float_and_list_to_tuple():
    p = parse_params({"frames": {"fps": 10}, "data": {"classes": ["a", "b"]}})
    assert p.frames.fps == 10.0 and isinstance(p.frames.fps, float)
    assert p.data.classes == ("a", "b")


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("frames: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(f)
