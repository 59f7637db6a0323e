"""Top-1 / top-5 evaluation of a module on a loader."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class EvalResult:
    """Accuracies as fractions in [0, 1]; ``loss`` is the mean cross-entropy (no smoothing)."""

    top1: float
    top5: float
    loss: float
    count: int


def autocast_context(device: torch.device,
                     dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    """``torch.autocast`` on CUDA when a reduced precision is chosen; nothing otherwise."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             amp_dtype: torch.dtype | None = None) -> EvalResult:
    """Top-1, top-5 (top-k with k = min(5, classes)) and loss of ``model`` in eval mode.

    The model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    loss_sum, count = 0.0, 0
    device = next(model.parameters()).device
    try:
        for images, labels in batches:
            with autocast_context(device, amp_dtype):
                logits = model(images)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels[:, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
            count += len(labels)
    finally:
        model.train(was_training)
    if count == 0:
        return EvalResult(math.nan, math.nan, math.nan, 0)
    return EvalResult(correct1 / count, correct5 / count, loss_sum / count, count)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                          amp_dtype: torch.dtype | None = None) -> None:
    """Re-estimate batch-norm running statistics as plain averages over ``batches``.

    With the slow running-average momentum of the V3 recipe (0.01), statistics lag far behind
    the weights after a few hundred steps; proxies recalibrate before evaluating."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        model.train()
        for images, _ in batches:
            with autocast_context(device, amp_dtype):
                model(images)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
