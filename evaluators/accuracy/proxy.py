"""Proxy training: a short fixed budget on a data subset, reporting to a pruner as it goes."""

from __future__ import annotations

import math
import time

from torch import nn

from evaluators.accuracy.base import AccuracyResult, Report, SpecEvaluator
from evaluators.data import DatasetSplits
from evaluators.training import TrainConfig, budget_steps, fit


class ProxyTrainEvaluator(SpecEvaluator):
    """Train each candidate from the same seed for ``trainer.steps`` (or epochs) and return its
    validation top-1 (fraction in [0, 1]; 0.0 with status ``diverged`` when the loss became
    NaN/inf). ``report(step, val_top1, last)`` is called at (at most) ``reports`` evenly spaced
    validations, ``last`` at the end of the budget; anything it raises (``optuna.TrialPruned``)
    propagates."""

    name = "proxy_train"
    unit = "top-1"

    def __init__(self, data: DatasetSplits, trainer: TrainConfig, *, reports: int = 4, seed: int = 0) -> None:
        super().__init__(num_classes=data.num_classes, in_channels=data.in_channels, seed=seed)
        steps_per_epoch = len(data.loader("train", trainer.batch_size, train=True))
        self.total_steps = budget_steps(trainer, steps_per_epoch)
        self.data = data
        self.trainer = trainer.replace(seed=seed, eval_every=max(1, math.ceil(self.total_steps / reports)),
                                       progress=False)

    def evaluate_model(self, model: nn.Module, report: Report | None = None) -> AccuracyResult:
        """Fine-tune an existing module (e.g. with inherited weights) with the proxy budget."""
        started = time.perf_counter()
        on_eval = ((lambda step, result: report(step, result.top1, step >= self.total_steps))
                   if report is not None else None)
        result = fit(model, self.data, self.trainer, eval_split="val", on_eval=on_eval)
        details = {"top5": result.top5, "loss": result.loss, "steps": result.steps, "message": result.message,
                   "history": result.history}
        return AccuracyResult(result.top1 if result.ok else 0.0, time.perf_counter() - started, result.status,
                              details)
