"""Accuracy from a trained supernet: each spec scored as a sub-network (``proxy=supernet``), or
predicted by an MLP fitted on supernet scores of sampled sub-networks (``proxy=predictor``).

Both are labelled for what they are: a supernet score is the sub-network's validation top-1 with
shared weights after batch-norm re-estimation, not the accuracy of the network trained alone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from torch import nn

from evaluators.accuracy.base import AccuracyResult, Report
from evaluators.accuracy.predictor import AccuracyPredictor, PredictorReport, PredictorSettings
from evaluators.data import DatasetSplits
from evaluators.supernet import SuperNet, score_subnet
from evaluators.supernet.rundir import CHOICES
from evaluators.supernet.scoring import CALIB_BATCH_SIZE, CALIB_BATCHES
from evaluators.training import COMPLETED
from search_spaces.errors import ConfigError, SpecError
from search_spaces.space import SearchSpace, sample_specs
from search_spaces.spec import ArchSpec

log = logging.getLogger(__name__)


def check_same_space(supernet: SearchSpace, searched: SearchSpace, where: str) -> None:
    """:class:`ConfigError` naming what differs when a search's space is not the supernet's."""
    differs = [f"{name} {list(getattr(searched, name))} vs {list(getattr(supernet, name))}"
               for name in CHOICES if getattr(searched, name) != getattr(supernet, name)]
    if searched.seed != supernet.seed:
        differs.insert(0, f"seed {searched.seed} vs {supernet.seed}")
    if differs:
        raise ConfigError(f"{where}: the search's space is not the supernet's ({'; '.join(differs)}); "
                          "search the space, data resolution and classes the supernet was trained with")


def outside_the_space(spec: ArchSpec, err: SpecError) -> SpecError:
    return SpecError(f"{spec} is not an architecture of the supernet's space ({err})")


class SupernetEvaluator:
    """Scores a spec as a sub-network of ``net``: batch-norm statistics re-estimated on
    ``calib_batches`` seeded training batches, then top-1 on the validation split (cached)."""

    name = "supernet"
    unit = "top-1 (supernet)"

    def __init__(self, net: SuperNet, data: DatasetSplits, *, calib_batches: int = CALIB_BATCHES,
                 batch_size: int = CALIB_BATCH_SIZE, seed: int = 0) -> None:
        self.net, self.data = net.eval(), data
        self.calib_batches, self.batch_size, self.seed = calib_batches, batch_size, seed

    def evaluate(self, spec: ArchSpec, report: Report | None = None) -> AccuracyResult:
        try:
            score = score_subnet(self.net, spec, self.data, calib_batches=self.calib_batches, seed=self.seed,
                                 batch_size=self.batch_size)
        except SpecError as err:  # from matching the spec to the supernet's blocks
            raise outside_the_space(spec, err) from None
        details = {"top5": score.top5, "loss": score.loss, "cached": score.cached}
        if report is not None:
            report(0, score.top1, True)
        return AccuracyResult(score.top1, score.seconds, COMPLETED, details)

    def evaluate_model(self, model: nn.Module, report: Report | None = None) -> AccuracyResult:
        raise ConfigError("proxy=supernet scores specs of the supernet's space, not networks with other "
                          "weights; use proxy=train to fine-tune a network")

    def __call__(self, spec: ArchSpec) -> float:
        return self.evaluate(spec).accuracy


class PredictorEvaluator(SupernetEvaluator):
    """Predicts a spec's supernet score with an MLP fitted at start-up on ``samples`` sub-networks
    (80% to fit, 20% held out for :attr:`held_out`); a spec costs microseconds, not a scoring.

    ``confirm``: a spec whose prediction is in the top ``confirm`` fraction of this process's
    predictions so far is also scored on the supernet, and that score is its accuracy (the
    prediction stays in the details): the candidates that can win are measured, not predicted."""

    name = "predictor"
    unit = "top-1 (predicted supernet score)"

    def __init__(self, net: SuperNet, data: DatasetSplits, *, samples: int = 200, confirm: float = 0.0,
                 calib_batches: int = CALIB_BATCHES, batch_size: int = CALIB_BATCH_SIZE, seed: int = 0,
                 settings: PredictorSettings | None = None) -> None:
        super().__init__(net, data, calib_batches=calib_batches, batch_size=batch_size, seed=seed)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 10:
            raise ConfigError(f"proxy.predictor_samples: must be an integer >= 10, got {samples!r}")
        if not 0.0 <= confirm <= 1.0:
            raise ConfigError(f"proxy.predictor_confirm: must be a fraction in [0, 1], got {confirm!r}")
        self.confirm = confirm
        self.predictions: list[float] = []
        started = time.perf_counter()
        specs = sample_specs(net.space, samples, seed=seed)
        scores = [super(PredictorEvaluator, self).evaluate(spec).accuracy for spec in specs]
        cut = int(0.8 * samples)
        self.predictor = AccuracyPredictor(net.space, settings or PredictorSettings(seed=seed))
        self.predictor.fit(specs[:cut], scores[:cut])
        self.held_out: PredictorReport = self.predictor.report(specs[cut:], scores[cut:])
        log.info("accuracy predictor fitted on %d supernet scores in %.1f s; %s", cut,
                 time.perf_counter() - started, self.held_out)

    def evaluate(self, spec: ArchSpec, report: Report | None = None) -> AccuracyResult:
        started = time.perf_counter()
        try:
            predicted = float(self.predictor.predict([spec])[0])
        except SpecError as err:  # from encoding the spec's choices
            raise outside_the_space(spec, err) from None
        self.predictions.append(predicted)
        details: dict[str, Any] = {"predicted": predicted, "held_out_rmse": self.held_out.rmse,
                                   "held_out_spearman": self.held_out.spearman, "confirmed": False}
        value = predicted
        if self.confirm > 0 and predicted >= float(np.quantile(self.predictions, 1.0 - self.confirm)):
            value = super().evaluate(spec).accuracy
            details["confirmed"] = True
        if report is not None:
            report(0, value, True)
        return AccuracyResult(value, time.perf_counter() - started, COMPLETED, details)
