"""Training-free estimators: ranking scores computed at initialization, in about a second.

- NASWOT (Mellor et al., 2021): log |det K| where K[i, j] counts the ReLU/hard-swish units on
  which images i and j have the same on/off pattern; networks that separate inputs score higher.
- SynFlow (Tanaka et al., 2020): log of sum |theta * dR/dtheta| with R the summed output of the
  network with absolute weights on an all-ones input (data-free).

Both are scores for ranking candidates, not accuracies; higher is better.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from evaluators.accuracy.base import AccuracyResult, Report, SpecEvaluator
from evaluators.data import DatasetSplits
from evaluators.training import COMPLETED, DIVERGED


@torch.no_grad()
def naswot_score(model: nn.Module, images: torch.Tensor) -> float:
    """log |det K| over the activation patterns of ``images`` (-inf when K is singular)."""
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(_: nn.Module, __: object, output: torch.Tensor) -> None:
        codes = (output.detach().flatten(1) > 0).double().cpu()
        kernel.add_(codes @ codes.T).add_((1 - codes) @ (1 - codes).T)

    units = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.Hardswish))]
    handles = [m.register_forward_hook(hook) for m in units]
    try:
        model.train()  # batch statistics, as in the original method
        model(images)
    finally:
        for handle in handles:
            handle.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else -math.inf


def synflow_score(model: nn.Module, shape: tuple[int, ...]) -> float:
    """log of the SynFlow saliency summed over all parameters, in float64."""
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    model(torch.ones(1, *shape[1:], dtype=torch.float64)).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    return math.log(total) if total > 0 and math.isfinite(total) else -math.inf


class _ZeroCost(SpecEvaluator):
    unit = "score"

    def __init__(self, data: DatasetSplits, *, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__(num_classes=data.num_classes, in_channels=data.in_channels, seed=seed)
        self.images = next(iter(data.loader("train", batch_size)))[0]

    def score(self, model: nn.Module) -> float:
        raise NotImplementedError

    def evaluate_model(self, model: nn.Module, report: Report | None = None) -> AccuracyResult:
        """Score ``model`` (left unchanged); ``report`` is not called: there are no steps."""
        started = time.perf_counter()
        score = self.score(model)
        status = COMPLETED if math.isfinite(score) else DIVERGED
        return AccuracyResult(score if math.isfinite(score) else 0.0, time.perf_counter() - started, status,
                              {"score": score, "images": int(self.images.shape[0])})


class NaswotEvaluator(_ZeroCost):
    """NASWOT activation-pattern score (ranking score, typically a few hundred; 0.0 with
    status ``diverged`` when the kernel is singular)."""

    name = "naswot"

    def score(self, model: nn.Module) -> float:
        return naswot_score(copy.deepcopy(model), self.images)


class SynflowEvaluator(_ZeroCost):
    """SynFlow score (ranking score: log of the summed saliency; data-free)."""

    name = "synflow"

    def score(self, model: nn.Module) -> float:
        return synflow_score(model, tuple(self.images.shape))
