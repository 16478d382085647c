"""frames and landmarks on a real dask.distributed LocalCluster give byte-identical outputs."""

import pytest

from pipeline.stages import frames, landmarks
from tests.conftest import tiny_params, write_clip


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as c:
        yield c


def test_dask_run_is_byte_identical_to_the_local_pool(cluster, clip_frames, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    rows = []
    for i, (label, fr) in enumerate(sorted(clip_frames.items())):
        write_clip(raw / "videos" / f"c{i}.mp4", fr)
        rows.append(f"videos/c{i}.mp4,s{i},{label}\n")
    (raw / "labels.csv").write_text("video,subject,label\n" + "".join(rows))
    local = tiny_params(raw, frames__workers=2, landmarks__workers=2)
    on_dask = tiny_params(raw, parallel__dask_address=cluster.scheduler_address)
    for p, out in ((local, tmp_path / "local"), (on_dask, tmp_path / "dask")):
        frames.run(p, out / "frames")
        s = landmarks.run(p, out / "frames", out / "landmarks")
        assert s["ok"] == 4
    for sub in ("frames", "landmarks"):
        a = sorted((tmp_path / "local" / sub).iterdir())
        b = sorted((tmp_path / "dask" / sub).iterdir())
        assert [x.name for x in a] == [x.name for x in b] and len(a) == 5
        for x, y in zip(a, b, strict=True):
            assert x.read_bytes() == y.read_bytes(), x.name
    # the environment variable wins over params
    monkeypatch.setenv("DRIVER_PIPELINE_DASK_ADDRESS", cluster.scheduler_address)
    frames.run(local, tmp_path / "env" / "frames")
    assert (tmp_path / "env" / "frames" / "manifest.json").read_bytes() == (
        tmp_path / "local" / "frames" / "manifest.json"
    ).read_bytes()
