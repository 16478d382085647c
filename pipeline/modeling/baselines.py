"""Baselines every model is compared with; stored as JSON, never pickled."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.errors import ModelError
from pipeline.modeling.base import Classifier, Split, macro_f1, window_stats

if TYPE_CHECKING:
    from pipeline.core.config import TrainParams


def _json(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _scores(model: Classifier, train: Split, val: Split, n_classes: int) -> list[dict[str, Any]]:
    """A one-row training log, like the neural models' per-epoch rows."""
    row: dict[str, Any] = {"epoch": 1}
    for name, (x, y) in (("train", train), ("val", val)):
        row[f"{name}_f1"] = macro_f1(y, model.logits(x).argmax(1), n_classes) if len(y) else float("nan")
    return [row]


class Majority(Classifier):
    """Always the most frequent training class: the floor every model must clear."""

    weights_file = "baseline.json"

    def __init__(self, n_features: int, n_classes: int, window: int) -> None:
        self.n_classes = n_classes
        self.cls = 0

    def fit(
        self, train: Split, val: Split, n_classes: int, cfg: TrainParams, stop_after: int | None = None
    ) -> list[dict[str, Any]]:
        self.cls = int(np.bincount(train[1], minlength=n_classes).argmax())
        return _scores(self, train, val, n_classes)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), self.n_classes))
        out[:, self.cls] = 1.0
        return out

    def state_bytes(self) -> bytes:
        return _json({"kind": "majority", "class": self.cls})

    def load_state(self, data: bytes) -> None:
        self.cls = int(json.loads(data)["class"])


class StatsLogReg(Classifier):
    """Logistic regression (scikit-learn) on per-window statistics of every feature."""

    weights_file = "baseline.json"

    def __init__(self, n_features: int, n_classes: int, window: int, C: float = 1.0, max_iter: int = 3000) -> None:
        self.n_classes, self.C, self.max_iter = n_classes, C, max_iter
        self.state: dict[str, Any] = {}

    def fit(
        self, train: Split, val: Split, n_classes: int, cfg: TrainParams, stop_after: int | None = None
    ) -> list[dict[str, Any]]:
        from sklearn.linear_model import LogisticRegression

        x, y = train
        s = window_stats(x)
        mean, std = s.mean(0), s.std(0) + 1e-6
        weight = "balanced" if cfg.class_weights else None
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=weight, random_state=cfg.seed)
        clf.fit((s - mean) / std, y)
        coef = np.zeros((n_classes, s.shape[1]))
        intercept = np.full(n_classes, -1e9)  # a class never seen in training is never predicted
        binary = len(clf.classes_) == 2
        coef[clf.classes_] = np.vstack([-clf.coef_, clf.coef_]) if binary else clf.coef_
        intercept[clf.classes_] = np.r_[-clf.intercept_, clf.intercept_] if binary else clf.intercept_
        self.state = {
            "kind": "stats_lr",
            "mean": mean.tolist(),
            "std": std.tolist(),
            "coef": coef.tolist(),
            "intercept": intercept.tolist(),
        }
        return _scores(self, train, val, n_classes)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        st = self.state
        s = (window_stats(x) - np.asarray(st["mean"])) / np.asarray(st["std"])
        return s @ np.asarray(st["coef"]).T + np.asarray(st["intercept"])

    def state_bytes(self) -> bytes:
        return _json(self.state)

    def load_state(self, data: bytes) -> None:
        self.state = json.loads(data)

    def n_parameters(self) -> int:
        return int(np.size(self.state.get("coef", [])) + np.size(self.state.get("intercept", [])))


TREE_FIELDS = ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf", "value")


class StatsGBM(Classifier):
    """Gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier) on per-window statistics.

    A strong, cheap reference on real data: on a real three-class drowsiness set it matched the best
    recurrent model. The fitted trees are stored as JSON (split feature, threshold, children, leaf
    values) and evaluated here, so a stored model never goes through pickle.
    """

    weights_file = "baseline.json"

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        window: int,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 20,
        l2_regularization: float = 1.0,
    ) -> None:
        self.n_classes = n_classes
        self.settings = {
            "max_iter": max_iter,
            "learning_rate": learning_rate,
            "max_leaf_nodes": max_leaf_nodes,
            "min_samples_leaf": min_samples_leaf,
            "l2_regularization": l2_regularization,
        }
        self.state: dict[str, Any] = {}
        self._forest: _Forest | None = None

    def fit(
        self, train: Split, val: Split, n_classes: int, cfg: TrainParams, stop_after: int | None = None
    ) -> list[dict[str, Any]]:
        from sklearn.ensemble import HistGradientBoostingClassifier

        x, y = train
        weight = "balanced" if cfg.class_weights else None
        clf = HistGradientBoostingClassifier(
            **self.settings, early_stopping=False, class_weight=weight, random_state=cfg.seed
        )
        clf.fit(window_stats(x), y)
        trees = [  # per boosting iteration, one tree per output (1 output when two classes were seen)
            [{f: p.nodes[f].tolist() for f in TREE_FIELDS} for p in per_iter] for per_iter in clf._predictors
        ]
        self.state = {
            "kind": "stats_gbm",
            "classes": clf.classes_.tolist(),
            "baseline": np.asarray(clf._baseline_prediction).reshape(-1).tolist(),
            "trees": trees,
        }
        self._forest = None
        return _scores(self, train, val, n_classes)

    def raw(self, s: np.ndarray) -> np.ndarray:
        """The boosted sum per output (as scikit-learn's ``_raw_predict``) for statistics ``s``."""
        st = self.state
        if self._forest is None:
            self._forest = _Forest.pack(st["trees"])
        values = self._forest.leaf_values(s)  # (rows, iterations x outputs), iteration-major
        n_out = len(st["trees"][0]) if st["trees"] else len(st["baseline"])
        per_iter = values.reshape(len(s), -1, n_out)
        out = np.tile(np.asarray(st["baseline"], dtype=np.float64), (len(s), 1))
        for i in range(per_iter.shape[1]):  # summed in boosting order, as scikit-learn does
            out += per_iter[:, i]
        return out

    def _logits(self, x: np.ndarray) -> np.ndarray:
        st = self.state
        raw = self.raw(window_stats(x).astype(np.float64))
        if raw.shape[1] == 1:  # binary: the raw score is the log-odds of the second class
            raw = np.hstack([np.zeros_like(raw), raw])
        out = np.full((len(x), self.n_classes), -1e9)  # a class never seen in training is never predicted
        out[:, st["classes"]] = raw
        return out

    def state_bytes(self) -> bytes:
        return _json(self.state)

    def load_state(self, data: bytes) -> None:
        self.state = json.loads(data)
        self._forest = None

    def n_parameters(self) -> int:
        return int(sum(len(t["value"]) for per_iter in self.state.get("trees", []) for t in per_iter))


@dataclass(frozen=True)
class _Forest:
    """Every tree's nodes in flat arrays (children as global node numbers): all rows walk all trees
    together, one level per step, so one window costs a few dozen array operations, not one per tree."""

    feat: np.ndarray
    thr: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray
    nan_left: np.ndarray
    value: np.ndarray
    roots: np.ndarray

    @classmethod
    def pack(cls, trees: list[list[dict[str, list]]]) -> _Forest:
        flat = [t for per_iter in trees for t in per_iter]  # iteration-major, outputs within
        sizes = np.array([len(t["value"]) for t in flat], dtype=np.int64)
        roots = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)

        def cat(field: str, dtype: type, offset: bool = False) -> np.ndarray:
            parts = [np.asarray(t[field], dtype=dtype) for t in flat]
            if offset:
                parts = [p + r for p, r in zip(parts, roots, strict=True)]
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        return cls(
            cat("feature_idx", np.int64),
            cat("num_threshold", np.float64),
            cat("left", np.int64, offset=True),
            cat("right", np.int64, offset=True),
            cat("is_leaf", bool),
            cat("missing_go_to_left", bool),
            cat("value", np.float64),
            roots,
        )

    def leaf_values(self, s: np.ndarray) -> np.ndarray:
        """(rows, trees): the leaf value each row of ``s`` reaches in each tree."""
        node = np.broadcast_to(self.roots, (len(s), len(self.roots))).copy()
        rows = np.arange(len(s))[:, None]
        while True:
            inner = ~self.leaf[node]
            if not inner.any():
                return self.value[node]
            v = s[rows, self.feat[node]]
            go_left = np.where(np.isnan(v), self.nan_left[node], v <= self.thr[node])
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)


class MiniRocket(Classifier):
    """MiniRocket (Dempster, Schmidt & Webb 2021; sktime's multivariate implementation): thousands of
    fixed random dilated convolutions summarised as proportions of positive values, then a ridge
    classifier with cross-validated regularisation, or on more than ``RIDGE_CV_MAX`` training windows
    logistic regression (the paper's choice for large sets; the ridge's solve grows with the cube of
    the windows). A state-of-the-art reference for small multivariate sequence sets.

    Stored as JSON: the transform's fitted parameters (dilations, channel choices, biases), the
    feature scaling and the ridge weights. The transform is sktime's numba code, compiled again
    without ``fastmath`` (:func:`_strict_kernels`): with it, LLVM may sum in an order that follows
    the vector width numba compiles for (AVX2 or AVX-512, pipeline/core/cpu.py).
    """

    weights_file = "baseline.json"

    def __init__(self, n_features: int, n_classes: int, window: int, num_kernels: int = 10_000) -> None:
        self.n_classes, self.num_kernels = n_classes, num_kernels
        self.state: dict[str, Any] = {}

    @staticmethod
    def _panel(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32)  # (N, T, F) -> (N, F, T)

    def _features(self, x: np.ndarray) -> np.ndarray:
        params = tuple(np.asarray(p, dtype=dt) for p, dt in zip(self.state["transform"], _PARAM_DTYPES, strict=True))
        return np.asarray(_strict_kernels()[1](self._panel(x), params), dtype=np.float64)

    def fit(
        self, train: Split, val: Split, n_classes: int, cfg: TrainParams, stop_after: int | None = None
    ) -> list[dict[str, Any]]:
        from sklearn.linear_model import RidgeClassifierCV

        need = len(train[1]) * self.num_kernels * MINIROCKET_BYTES_PER_FEATURE
        if need > MINIROCKET_MEMORY:
            fits = int(MINIROCKET_MEMORY / (len(train[1]) * MINIROCKET_BYTES_PER_FEATURE))
            raise ModelError(
                f"minirocket holds its ~{self.num_kernels:,} features of every training window in memory: "
                f"{len(train[1]):,} training windows need about {need / 2**30:.1f} GB, over its limit of "
                f"{MINIROCKET_MEMORY / 2**30:.0f} GB; set hparams.minirocket.num_kernels to at most {fits:,} (84 "
                "or more), or leave minirocket out of train.models for a set this large"
            )
        x, y = np.asarray(train[0][:]), train[1]  # in memory: the transform and its features need them whole
        if x.shape[1] < 9:
            raise ModelError(f"minirocket needs windows of at least 9 time steps; these have {x.shape[1]}")
        # sktime's MiniRocketMultivariate.fit(x) with random_state=seed, n_jobs=1, on the strict kernels
        params = _strict_kernels()[0](self._panel(x), self.num_kernels, 32, np.int32(cfg.seed))
        self.state = {"kind": "minirocket", "transform": [np.asarray(p).tolist() for p in params]}
        f = self._features(x)
        mean, scale = f.mean(0), f.std(0) + 1e-8
        z = (f - mean) / scale
        del f
        weight = "balanced" if cfg.class_weights else None
        if len(y) <= RIDGE_CV_MAX:
            clf = RidgeClassifierCV(alphas=np.logspace(-3, 3, 10), class_weight=weight).fit(z, y)
            chosen = {"alpha": clf.alpha_}
        else:  # float32: half the memory and time of the products; the weights are stored as float64
            clf, chosen = _large_set_classifier(z.astype(np.float32), y, weight, cfg.seed)
        coef = np.zeros((n_classes, z.shape[1]))
        intercept = np.full(n_classes, -1e9)  # a class never seen in training is never predicted
        binary = len(clf.classes_) == 2
        coef[clf.classes_] = np.vstack([-clf.coef_, clf.coef_]) if binary else clf.coef_
        intercept[clf.classes_] = np.r_[-clf.intercept_, clf.intercept_] if binary else clf.intercept_
        self.state.update(mean=mean.tolist(), scale=scale.tolist(), coef=coef.tolist(), intercept=intercept.tolist())
        self.state.update(chosen)
        return _scores(self, train, val, n_classes)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        st = self.state
        f = (self._features(x) - np.asarray(st["mean"])) / np.asarray(st["scale"])
        return f @ np.asarray(st["coef"]).T + np.asarray(st["intercept"])

    def state_bytes(self) -> bytes:
        return _json(self.state)

    def load_state(self, data: bytes) -> None:
        self.state = json.loads(data)

    def n_parameters(self) -> int:
        return int(np.size(self.state.get("coef", [])) + np.size(self.state.get("intercept", [])))


# MiniRocket is the one model that holds its training set in memory: its features (float64), their
# standardised copy and, for large sets, a float32 one: about 20 bytes per feature and window. Above
# this it stops with a clear message instead of running out of memory (README "Scale").
MINIROCKET_MEMORY = 4 << 30
MINIROCKET_BYTES_PER_FEATURE = 20

# MiniRocket's classifier. Up to this many training windows: the ridge with efficient leave-one-out
# regularisation (its eigendecomposition of the windows' Gram matrix grows with the cube of the
# windows: 13 s at 3,000 on one core here, minutes at 8,000). Beyond: logistic regression (L-BFGS, a
# few products per iteration, linear in the windows), as the MiniRocket paper does for large sets,
# with C chosen on a held-out tail of the training windows.
RIDGE_CV_MAX = 3000
LARGE_SET_C = (1e-3, 1e-2, 1e-1)
LARGE_SET_HOLDOUT = 0.2


def _large_set_classifier(z: np.ndarray, y: np.ndarray, weight: str | None, seed: int) -> tuple[Any, dict[str, Any]]:
    """Logistic regression on the standardised MiniRocket features, C chosen by macro-F1 on the last
    ``LARGE_SET_HOLDOUT`` of the training windows (they come ordered by video, so the tail holds whole
    recordings, mostly of other drivers than the head), then refitted on all of them."""
    from sklearn.linear_model import LogisticRegression

    cut = int(len(y) * (1 - LARGE_SET_HOLDOUT))
    n_classes = int(y.max()) + 1

    def model(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=100, class_weight=weight, random_state=seed)

    import warnings

    from sklearn.exceptions import ConvergenceWarning

    scores = []
    with warnings.catch_warnings():  # 100 L-BFGS steps are a budget, not a failure: the hold-out judges the fit
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in LARGE_SET_C:
            m = model(c).fit(z[:cut], y[:cut])
            scores.append(macro_f1(y[cut:], m.predict(z[cut:]), n_classes))
        best = LARGE_SET_C[int(np.argmax(scores))]
        final = model(best).fit(z, y)
    return final, {"classifier": "logistic", "C": best, "holdout_f1": [round(float(v), 4) for v in scores]}


# dtypes of sktime's MiniRocketMultivariate.parameters, in order: channels per combination,
# channel indices, dilations, features per dilation, biases
_PARAM_DTYPES = (np.int32, np.int32, np.int32, np.int32, np.float32)
_STRICT: list = []


def _strict_kernels() -> tuple:
    """MiniRocket's (fit, transform) from sktime (sktime/transformations/rocket/_minirocket_multi_numba.py)
    with its numba kernels compiled again without ``fastmath``: the same code, every sum in the
    order written, so the same bytes on AVX2 and AVX-512 targets (tests/test_numerics.py). Costs
    ~1.4x sktime's transform time (0.18 s vs 0.13 s for 480 windows of 90 x 12, 10,000 features);
    compiled once per machine into numba's cache, under names of their own (sktime's fastmath
    entries stay sktime's)."""
    if not _STRICT:
        import types

        import numba
        from sktime.transformations.rocket import _minirocket_multi_numba as mr

        def strict(kernel, name: str):
            py = kernel.py_func
            fn = types.FunctionType(py.__code__, py.__globals__, name, py.__defaults__, py.__closure__)
            fn.__qualname__ = name  # numba's cache is keyed by it
            opts = {k: v for k, v in kernel.targetoptions.items() if k in ("parallel", "boundscheck")}
            return numba.njit(kernel.nopython_signatures[0], fastmath=False, cache=True, **opts)(fn)

        biases = strict(mr._fit_biases_multi, "_fit_biases_multi_strict")
        fit = mr._fit_multi  # plain Python; its globals given the strict biases kernel
        fit = types.FunctionType(fit.__code__, {**mr.__dict__, "_fit_biases_multi": biases}, "_fit_multi")
        _STRICT.extend([fit, strict(mr._transform_multi, "_transform_multi_strict")])
    return tuple(_STRICT)
