"""The neural models' side of :class:`~pipeline.modeling.base.Classifier`: training loop,
inference, attention weights and Integrated Gradients, around any module of the zoo.

Training: AdamW, a cosine learning-rate schedule with warm-up, label smoothing,
inverse-frequency class weights, gradient clipping, early stopping on validation macro-F1
(the mean over ``train.smooth_epochs`` epochs; ties: lower validation loss) with patience,
never before ``train.min_epochs``. The logged train macro-F1 is that of the
epoch's own batch predictions (no extra pass). Seeded init and batch order: the same data
and params give the same bytes (on any CPU once pipeline.modeling.numerics.pin ran).
"""

from __future__ import annotations

import inspect
import io
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pipeline.modeling.base import (
    SCORE_BATCH,
    Classifier,
    Split,
    class_weights,
    first_selectable,
    macro_f1,
    selection_key,
)
from pipeline.modeling.zoo import n_parameters

if TYPE_CHECKING:
    from pipeline.core.config import TrainParams

IG_CHUNK = 16  # windows per Integrated-Gradients call

log = logging.getLogger(__name__)


def lr_at(epoch: int, cfg: TrainParams) -> float:
    """Linear warm-up then cosine decay to 5 % of the peak (per epoch)."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    span = max(1, cfg.epochs - cfg.warmup_epochs)
    progress = (epoch - cfg.warmup_epochs) / span
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def epoch_order(y: np.ndarray, n_classes: int, sampling: str, gen: torch.Generator) -> torch.Tensor:
    """The training windows of one epoch, in batch order: a permutation of them (``shuffle``), or
    ``balanced``: as many draws with replacement, each window weighted by one over its class's count,
    so every class present fills about the same share of every batch (a rare class is seen often,
    a common one not every epoch)."""
    if sampling == "shuffle":
        return torch.randperm(len(y), generator=gen)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weight = torch.tensor(1.0 / counts[y])
    return torch.multinomial(weight, len(y), replacement=True, generator=gen)


def augment(x: torch.Tensor, cfg: TrainParams, gen: torch.Generator) -> torch.Tensor:
    """Training-batch augmentation (seeded): Gaussian jitter and per-window feature scaling."""
    if cfg.scaling > 0:  # drawn on the CPU (the seeded generator), whatever the device
        x = x * (1 + cfg.scaling * torch.randn((x.shape[0], 1, x.shape[2]), generator=gen)).to(x.device)
    if cfg.jitter > 0:
        x = x + cfg.jitter * torch.randn(x.shape, generator=gen).to(x.device)
    return x


class NeuralClassifier(Classifier):
    weights_file = "model.pt"

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module.eval()

    # --- training -------------------------------------------------------------------------
    def fit(
        self, train: Split, val: Split, n_classes: int, cfg: TrainParams, stop_after: int | None = None
    ) -> list[dict[str, Any]]:
        """Train with early stopping on ``val``; with an empty ``val``, train exactly ``stop_after``
        epochs of the same schedule and keep the last weights (the final model on all subjects)."""
        from tqdm import tqdm

        from pipeline.modeling.numerics import resolve_device

        model, device = self.module, torch.device(resolve_device(cfg.device))
        model.to(device)
        (xtr, ytr), (xva, yva) = train, val
        has_val = len(yva) > 0
        if not has_val and not stop_after:
            raise ValueError("fit without validation windows needs stop_after (the number of epochs)")
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        balanced = cfg.sampling == "balanced"  # the batches are balanced already: no class weights on top
        weight = torch.tensor(class_weights(ytr, n_classes)) if cfg.class_weights and not balanced else None
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing).to(device)
        yt, yv = torch.tensor(ytr, device=device), torch.tensor(yva, device=device)

        def rows(x: Any, key: Any) -> torch.Tensor:  # windows are read batch by batch, never copied whole
            return torch.from_numpy(np.ascontiguousarray(x[key])).to(device)

        gen = torch.Generator().manual_seed(cfg.seed)
        best: tuple = ((-1.0, -np.inf), None, -1)  # (selection key, state, epoch)
        history = []
        epochs = min(cfg.epochs, stop_after) if stop_after else cfg.epochs
        first = first_selectable(epochs, cfg.min_epochs)
        bar = tqdm(range(epochs), desc="epochs", unit="epoch", disable=None, leave=False)
        for epoch in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch, cfg)
            model.train()
            order = epoch_order(ytr, n_classes, cfg.sampling, gen)
            total = 0.0
            seen = torch.full((len(ytr),), -1, dtype=torch.long)  # predictions made while training (no extra pass)
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                logits = model(augment(rows(xtr, idx.numpy()), cfg, gen))
                loss = loss_fn(logits, yt[idx])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                total += loss.item() * len(idx)
                seen[idx] = logits.detach().argmax(1).cpu()
            drawn = seen.numpy() >= 0  # every window (shuffle), the ones drawn this epoch (balanced)
            row = {
                "epoch": epoch + 1,
                "train_loss": total / len(ytr),
                "train_f1": macro_f1(ytr[drawn], seen.numpy()[drawn], n_classes),
                "val_loss": float("nan"),
                "val_f1": float("nan"),
                "lr": opt.param_groups[0]["lr"],
            }
            if has_val:
                model.eval()
                with torch.no_grad():  # in batches, as :meth:`logits` scores (bounded memory)
                    parts = [model(rows(xva, slice(i, i + SCORE_BATCH))) for i in range(0, len(yva), SCORE_BATCH)]
                    va_logits = torch.cat(parts)
                row["val_loss"] = float(loss_fn(va_logits, yv))
                row["val_f1"] = macro_f1(yva, va_logits.argmax(1).cpu().numpy(), n_classes)
                bar.set_postfix(val_f1=f"{row['val_f1']:.3f}")
            history.append(row)
            if not has_val:
                continue
            if epoch < first:  # too early to keep, too early to stop
                continue
            score = selection_key(history, epoch, cfg.smooth_epochs)
            if score > best[0]:
                best = (score, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch)
            elif epoch - best[2] >= cfg.patience:
                log.debug(
                    "early stop at epoch %d (best val macro-F1 %.3f at epoch %d)", epoch + 1, best[0][0], best[2] + 1
                )
                break
        bar.close()
        if has_val:
            model.load_state_dict(best[1])
        model.cpu().eval()
        return history

    # --- inference ----------------------------------------------------------------------------
    def _logits(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.tensor(x)).numpy()

    def attention(self, x: np.ndarray) -> np.ndarray:
        from pipeline.modeling.zoo import ExtraChannels

        body = self.module.body if isinstance(self.module, ExtraChannels) else self.module
        if "return_attention" not in inspect.signature(body.forward).parameters:
            return super().attention(x)
        with torch.no_grad():
            _, w = self.module(torch.tensor(x), return_attention=True)
        return w.numpy()

    def attributions(self, x: np.ndarray, target: np.ndarray, steps: int = 32) -> np.ndarray:
        """|Integrated Gradients| (N, T, F) against an all-zero baseline (= the training mean)."""
        from captum.attr import IntegratedGradients

        ig = IntegratedGradients(self.module)
        out = []
        for i in range(0, len(x), IG_CHUNK):  # IG_CHUNK windows x steps per forward: bounded memory
            xt = torch.tensor(x[i : i + IG_CHUNK], requires_grad=True)
            attr = ig.attribute(
                xt,
                baselines=torch.zeros_like(xt),
                target=torch.tensor(target[i : i + IG_CHUNK]),
                n_steps=steps,
                internal_batch_size=len(xt) * steps,
            )
            out.append(attr.detach().abs().numpy())
        return np.concatenate(out) if out else np.zeros_like(x)

    # --- persistence ---------------------------------------------------------------------------
    def state_bytes(self) -> bytes:
        buf = io.BytesIO()  # torch.save names the zip's root after the file: a buffer keeps the bytes stable
        torch.save(self.module.state_dict(), buf)
        return buf.getvalue()

    def load_state(self, data: bytes) -> None:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        self.module.load_state_dict(state)
        self.module.eval()

    def n_parameters(self) -> int:
        return n_parameters(self.module)
