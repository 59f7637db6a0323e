"""The Optuna objective of a search: one trial = one candidate spec, sampled, costed, timed and
scored, with everything recorded on the trial so results never need the evaluators again."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict

import optuna
from optuna.trial import TrialState

from evaluators.accuracy.base import Report
from evaluators.cost import count_cost
from evaluators.protocols import AccuracyEvaluator, LatencyEvaluator
from evaluators.training import COMPLETED
from search.objectives import CONSTRAINT_ATTR, Objective
from search_spaces.errors import TrainingDiverged
from search_spaces.space import SearchSpace

log = logging.getLogger(__name__)


class CandidateObjective:
    """Callable for ``study.optimize``: sample, cost, latency, (deduplicated) accuracy."""

    def __init__(
        self,
        space: SearchSpace,
        objective: Objective,
        accuracy: AccuracyEvaluator,
        latency: LatencyEvaluator,
    ) -> None:
        self.space = space
        self.objective = objective
        self.accuracy = accuracy
        self.latency = latency
        self.protocol = asdict(latency.protocol)
        self._known: dict[str, tuple[int, TrialState, float | None]] = {}
        self._scanned: set[int] = set()

    def _previous(self, study: optuna.Study, spec_string: str) -> tuple[int, TrialState, float | None] | None:
        """An earlier finished trial of this spec, in any worker or earlier run."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if trial.number in self._scanned:
                continue
            self._scanned.add(trial.number)
            known = trial.user_attrs.get("spec")
            if known and "duplicate_of" not in trial.user_attrs:
                self._known.setdefault(known, (trial.number, trial.state, trial.user_attrs.get("accuracy")))
        return self._known.get(spec_string)

    def _reporter(self, trial: optuna.Trial) -> Report | None:
        if self.objective.multi_objective:
            return None  # Optuna cannot prune multi-objective studies

        def report(step: int, value: float, last: bool) -> None:
            trial.report(value, step)
            if not last and trial.should_prune():  # a fully evaluated candidate stays in the ranking
                raise optuna.TrialPruned(f"pruned at step {step} with accuracy {value:.4f}")

        return report

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        spec = self.space.sample(trial)
        spec_string = str(spec)
        cost = count_cost(spec)
        latency_ms = float(self.latency(spec))
        for key, value in (("spec", spec_string), ("params", cost.params), ("madds", cost.madds),
                           ("latency_ms", latency_ms), ("latency_protocol", self.protocol),
                           (CONSTRAINT_ATTR, self.objective.constraint(latency_ms)),
                           ("feasible", self.objective.feasible(latency_ms)),
                           ("worker_pid", os.getpid())):
            trial.set_user_attr(key, value)

        if self.objective.mode == "hard":
            trial.set_constraint(CONSTRAINT_ATTR, self.objective.constraint(latency_ms))
        previous = self._previous(trial.study, spec_string)
        if previous is not None:
            number, state, accuracy = previous
            trial.set_user_attr("duplicate_of", number)
            if state == TrialState.PRUNED or accuracy is None:
                raise optuna.TrialPruned(f"same spec as trial {number}, which was pruned")
            log.info("trial %d: same spec as trial %d, reusing its accuracy", trial.number, number)
        else:
            started = time.perf_counter()
            result = self.accuracy.evaluate(spec, report=self._reporter(trial))
            trial.set_user_attr("eval_seconds", round(time.perf_counter() - started, 3))
            status = result.status
            trial.set_user_attr("status", status)
            for key, value in result.details.items():  # what the proxy says beside its figure, e.g. top5
                if isinstance(value, bool | int | float | str) and key != "message":
                    trial.set_user_attr(f"proxy_{key}", value)
            accuracy = float(result.accuracy)
            if status != COMPLETED or not math.isfinite(accuracy):
                raise TrainingDiverged(f"trial {trial.number}: evaluation ended with status {status!r}")
        trial.set_user_attr("accuracy", accuracy)
        trial.set_user_attr("reward", self.objective.reward(accuracy, latency_ms))
        return self.objective.values(accuracy, latency_ms)
