"""Memory that does not grow with the data: windows written and read in row groups and batches,
with the bytes of the in-memory path (issue "Scale"; the sizes are measured by bench/bench_scale.py)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import pipeline.contracts.windows as WC
from pipeline.core.config import parse_params
from tests.test_train import make_set


def params(**train):
    return parse_params({"train": {"models": ["gru"], "epochs": 4, "patience": 4, "min_epochs": 1, **train}})


def old_normaliser(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The z-score fit as it was, on the whole array in memory (numpy's nanmean / nanstd)."""
    import warnings

    flat = x.reshape(-1, x.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(flat, axis=0, dtype=np.float64)
        std = np.nanstd(flat, axis=0, dtype=np.float64)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def rewrite(src, dst, group_windows: int, monkeypatch):
    """The windows of ``src`` written again to ``dst`` in row groups of ``group_windows`` windows,
    handed to the writer in chunks of another size."""
    x, _, index, meta = WC.read_windows(src)
    monkeypatch.setattr(WC, "ROW_GROUP_BYTES", group_windows * 4 * x.shape[1] * x.shape[2])
    with WC.WindowsWriter(dst, meta) as out:
        for i in range(0, len(x), 13):
            out.write(x[i : i + 13], index.iloc[i : i + 13])
    monkeypatch.undo()
    return dst


def test_the_z_score_fitted_batch_by_batch_equals_numpys_to_the_byte(monkeypatch):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(503, 17, 6)) * [1, 10, 0.01, 1e3, 1, 1] + [0, 5, -2, 1e4, 0, 0]).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, :, 4] = np.nan  # a feature never observed
    x[:, :, 5] = 2.0  # a constant one
    expected = old_normaliser(x)
    for batch in (1, 7, 64, 10_000):
        monkeypatch.setattr(WC, "READ_BATCH", batch)
        n = WC.Normaliser.fit(x)
        assert (n.mean, n.std) == expected, batch
    assert n.mean[4] == 0.0 and n.std[4] == 1.0 and n.std[5] == 1.0


def test_windows_in_many_row_groups_read_back_as_written_by_every_reader(tmp_path, monkeypatch):
    src = make_set(tmp_path / "one")
    x, y, index, _ = WC.read_windows(src)
    assert pq.ParquetFile(src / WC.FILE).num_row_groups == 1
    many = rewrite(src, tmp_path / "many", 37, monkeypatch)
    assert pq.ParquetFile(many / WC.FILE).num_row_groups == -(-len(x) // 37)
    x2, y2, index2, _ = WC.read_windows(many)
    assert np.array_equal(x2, x, equal_nan=True) and (y2 == y).all() and index2.equals(index)
    rows = np.random.default_rng(0).integers(0, len(x), 200)  # any order, repeats
    values, y3, _, _ = WC.open_windows(many)
    sample, _, _, _ = WC.sample_windows(many)
    for v in (values, sample):
        assert np.array_equal(v[rows], x[rows], equal_nan=True)
        assert np.array_equal(v[5:300], x[5:300], equal_nan=True) and np.array_equal(v[-1], x[-1], equal_nan=True)
    assert values.path.stat().st_size == x.nbytes and (y3 == y).all()
    assert (WC.count_inf(many) == 0).all() and len(WC.count_inf(many)) == len(x)
    norm = WC.Normaliser.fit(x[:100])
    view = WC.Rows(values, rows, norm)
    assert np.array_equal(view[10:50], norm.apply(x[rows][10:50])) and np.array_equal(
        view[[3, 1]], norm.apply(x[rows[[3, 1]]])
    )


def test_the_windows_stage_writes_the_same_set_in_batches_and_row_groups(tmp_path, monkeypatch):
    """Cut and written batch by batch: the bytes of the in-memory writer when one row group holds
    the set (the demo), the same windows and meta.json when it takes many."""
    from pipeline.stages import windows as W
    from tests.test_windows import CLASSES, fake_features
    from tests.test_windows import params as wparams

    df, p = fake_features(), wparams()
    w, meta = W.build(df, p, CLASSES)
    WC.write_windows(w, meta, tmp_path / "memory")
    plan, meta2 = W.plan_folds(df, p, CLASSES)
    W.write(plan, meta2, tmp_path / "stream")
    assert (tmp_path / "memory" / WC.FILE).read_bytes() == (tmp_path / "stream" / WC.FILE).read_bytes()
    assert (tmp_path / "memory" / "meta.json").read_bytes() == (tmp_path / "stream" / "meta.json").read_bytes()
    monkeypatch.setattr(W, "CUT_BATCH", 9)
    monkeypatch.setattr(WC, "ROW_GROUP_BYTES", 25 * 4 * w.x.shape[1] * w.x.shape[2])
    plan, meta3 = W.plan_folds(df, p, CLASSES)
    W.write(plan, meta3, tmp_path / "groups")
    assert pq.ParquetFile(tmp_path / "groups" / WC.FILE).num_row_groups == -(-len(w.x) // 25)
    a, b = WC.read_windows(tmp_path / "memory"), WC.read_windows(tmp_path / "groups")
    assert np.array_equal(a[0], b[0], equal_nan=True) and a[2].equals(b[2])
    assert json.loads((tmp_path / "groups" / "meta.json").read_text()) == json.loads(
        (tmp_path / "memory" / "meta.json").read_text()
    )


@pytest.mark.parametrize(
    ("model", "hparams"),
    [("stats_lr", {}), ("stats_gbm", {"max_iter": 20}), ("gru", {"hidden": 8}), ("fcn", {"channels": 8})],
)
def test_a_fold_trained_from_disk_in_batches_has_the_bytes_of_the_in_memory_fit(tmp_path, monkeypatch, model, hparams):
    """The old path: every window of the fold z-scored in memory and handed to the model whole. The new
    one: the values in a raw file, read and z-scored batch by batch (tiny batches, many row groups)."""
    from pipeline.modeling import numerics, registry
    from pipeline.modeling.base import softmax
    from pipeline.modeling.crossval import FitJob, fit

    src = make_set(tmp_path / "one", per_subject=12)
    x, y, index, _ = WC.read_windows(src)
    r = WC.fold_rows(index["fold"].to_numpy(), 5)[1]
    cfg = params(jitter=0.05, scaling=0.05).train
    numerics.ensure_pinned(cfg.threads, torch=registry.get(model).neural)
    mean, std = old_normaliser(x[r.train])
    norm = WC.Normaliser(mean, std)
    m = registry.create(model, x.shape[2], 3, x.shape[1], hparams, seed=cfg.seed)
    history = m.fit((norm.apply(x[r.train]), y[r.train]), (norm.apply(x[r.val]), y[r.val]), 3, cfg)
    many = rewrite(src, tmp_path / "many", 11, monkeypatch)
    monkeypatch.setattr(WC, "READ_BATCH", 5)
    res = fit(FitJob(model, hparams, many, cfg, r))
    assert res.normaliser == norm
    assert res.history == history  # every epoch's losses and scores
    assert res.proba.tobytes() == softmax(m.logits(norm.apply(x[r.test]))).tobytes()


def test_the_features_table_is_read_in_batches_of_the_asked_size_whatever_its_row_groups(tmp_path):
    """One row group per recording (as bench/bench_scale.py and many writers cut it) must not make the
    validation batches that small: each batch costs the suite's fixed overhead."""
    import pandas as pd
    import pyarrow as pa

    from pipeline.contracts.features import iter_features
    from tests.test_windows import fake_features

    df = fake_features()
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pq.ParquetWriter(tmp_path / "f.parquet", table.schema) as out:
        for i in range(0, len(table), 50):
            out.write_table(table.slice(i, 50))
    for rows in (7, 120, 10**6):
        parts = list(iter_features(tmp_path / "f.parquet", rows))
        assert [len(p) for p in parts[:-1]] == [rows] * (len(parts) - 1) and 0 < len(parts[-1]) <= rows
        assert pd.concat(parts, ignore_index=True).equals(df)


def test_minirocket_on_a_set_too_large_for_its_in_memory_features_stops_with_what_to_do(monkeypatch):
    """MiniRocket is the one model holding its training set (10,000 features per window) in memory;
    past its limit it says so and what to change, before it runs out of memory."""
    from pipeline.core.config import TrainParams
    from pipeline.core.errors import ModelError
    from pipeline.modeling import baselines, registry

    monkeypatch.setattr(baselines, "MINIROCKET_MEMORY", 1 << 20)  # 1 MB instead of 4 GB: the same rule, small
    x = np.random.default_rng(0).normal(size=(100, 20, 3)).astype(np.float32)
    y = np.arange(100) % 2
    model = registry.create("minirocket", 3, 2, 20, {"num_kernels": 840})
    with pytest.raises(ModelError, match=r"100 training windows need about .* set hparams\.minirocket\.num_kernels"):
        model.fit((x, y), (x[:0], y[:0]), 2, TrainParams())
    registry.create("minirocket", 3, 2, 20, {"num_kernels": 252}).fit((x, y), (x[:0], y[:0]), 2, TrainParams())
