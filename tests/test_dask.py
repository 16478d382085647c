"""frames, landmarks and the training matrix on a real dask.distributed LocalCluster give byte-identical
outputs; workers that would compute other bytes are refused."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core.parallel import ENV_ADDRESS
from pipeline.stages import frames, landmarks
from tests.conftest import ROOT, tiny_params, write_clip


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


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_the_training_matrix_on_dask_gives_the_bytes_of_a_local_run(cluster, tmp_path):
    """The real train stage: its folds and final fit on the LocalCluster (the environment variable, as
    a flow or a user sets it) give the model, out-of-fold predictions and training log of a local run."""
    from tests.test_train import make_set

    wdir = make_set(tmp_path / "w", per_subject=10)
    params = tmp_path / "params.yaml"
    train = {"models": ["stats_lr", "gru"], "epochs": 3, "patience": 3, "workers": 2}
    params.write_text(yaml.safe_dump({"train": train, "hparams": {"gru": {"hidden": 8}}}))
    for model in train["models"]:
        runs = {}
        for where, extra in (("local", {}), ("dask", {ENV_ADDRESS: cluster.scheduler_address})):
            env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
            out = tmp_path / where
            args = ["--model", model, "--params", str(params), "--windows", str(wdir)]
            cmd = [sys.executable, "-m", "pipeline.stages", "train", *args]
            res = subprocess.run(
                [*cmd, "--models", str(out / "models"), "--reports", str(out / "reports")],
                env=env if extra else {k: v for k, v in env.items() if k != ENV_ADDRESS},
                capture_output=True,
                text=True,
            )
            assert res.returncode == 0, res.stderr[-3000:]
            assert ("on the Dask cluster" in res.stderr) == bool(extra), res.stderr[-2000:]
            runs[where] = {**tree_bytes(out / "models" / model), **tree_bytes(out / "reports" / model)}
        assert runs["local"].keys() == runs["dask"].keys() and {"oof.parquet", "folds.json"} <= runs["local"].keys()
        for name, data in runs["local"].items():
            assert data == runs["dask"][name], f"{model}: {name} differs on Dask"


@pytest.mark.slow
def test_a_plain_dask_worker_is_refused_and_driver_pipeline_dask_worker_is_pinned():
    """`dask worker` loads numpy (with this CPU's kernels) before anything of ours: jobs refuse to run
    there with what to do. `driver-pipeline dask-worker` starts the same worker pinned."""
    if "avx512f" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("needs an AVX-512 CPU: on AVX2-only CPUs numpy's own kernels are the pinned ones")
    import functools

    from distributed import Client, LocalCluster

    from pipeline.core.errors import ConfigError
    from pipeline.core.parallel import _run_pinned
    from pipeline.modeling.numerics import PINNED_ENV

    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV} | {"PYTHONPATH": str(ROOT)}
    job = functools.partial(_run_pinned, abs)
    with (
        LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster.scheduler_address) as client,
    ):
        worker = ["--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"]
        for cmd, pinned in (
            ([sys.executable, "-m", "distributed.cli.dask_worker"], False),
            ([sys.executable, "-m", "pipeline.cli", "dask-worker"], True),
        ):
            proc = subprocess.Popen([*cmd, cluster.scheduler_address, *worker], env=env, stderr=subprocess.DEVNULL)
            try:
                client.wait_for_workers(1, timeout=120)
                fut = client.submit(job, -3, pure=False)
                if pinned:
                    assert fut.result(timeout=60) == 3
                else:
                    with pytest.raises(ConfigError, match="start Dask workers with `driver-pipeline dask-worker"):
                        fut.result(timeout=60)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            deadline = time.monotonic() + 60
            while client.scheduler_info()["workers"] and time.monotonic() < deadline:
                time.sleep(0.2)
