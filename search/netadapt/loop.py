"""The NetAdapt loop (MobileNetV3 paper, section 4.2), checkpointed after every iteration.

Each iteration takes every :func:`~search.netadapt.proposals.propose` candidate (each cuts
latency by at least ``delta_ms``), gives it the current weights
(:func:`~search.netadapt.inherit.inherit_weights`), fine-tunes it for ``short_steps`` and
evaluates it; the candidate with the best score is kept. The score is V3's
``dAcc / |dLatency|`` (``acc_per_latency``) or NetAdapt's original plain accuracy
(``accuracy``). The loop stops when the latency target is met, when no candidate can cut
``delta_ms``, or after ``max_iterations``; then the network is fine-tuned for ``final_steps``.
The options are a :class:`~search.netadapt.config.NetAdaptConfig` (checked when it was built).

With a :class:`~search.netadapt.supernet.SupernetScorer` the proposals are sub-networks of the
supernet's space (:func:`~search.netadapt.subnets.propose_subnets`), each scored on the supernet
instead of inherited and fine-tuned; no weights exist until the end, when the refined network's
are extracted from the supernet (batch norm re-estimated) for the final fine-tune.

With a ``run_dir``, every finished iteration is written atomically (``netadapt_state.pt``:
spec, weights, history; ``history.json``), so a rerun with the same arguments resumes from the
last finished iteration and reaches the same result. The torch RNG is seeded per fine-tune
from ``seed``, the iteration and the candidate, so resumed runs draw the same numbers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from search.netadapt.checkpoint import load_netadapt_state, save_netadapt_state
from search.netadapt.config import METRICS, NetAdaptConfig
from search.netadapt.history import (
    CandidateRecord,
    History,
    IterationRecord,
    history_from_json,
    history_to_json,
)
from search.netadapt.inherit import inherit_weights
from search.netadapt.proposals import Proposal, propose
from search.netadapt.subnets import propose_subnets
from search.netadapt.supernet import SupernetScorer
from search_spaces.builder import MobileNetV3Like, build_model
from search_spaces.errors import DataError, TrainingDiverged
from search_spaces.serialize import atomic_write_text, from_dict, to_dict
from search_spaces.spec import ArchSpec

logger = logging.getLogger(__name__)

STATE_FILE = "netadapt_state.pt"
FINAL_FILE = "netadapt_final.pt"
HISTORY_FILE = "history.json"

TARGET_MET, NO_PROPOSAL, MAX_ITERATIONS = "target_met", "no_proposal", "max_iterations"
__all__ = ["METRICS", "NetAdaptResult", "netadapt"]

FineTune = Callable[[MobileNetV3Like, int], MobileNetV3Like]
Evaluate = Callable[[nn.Module], float]


@dataclass
class NetAdaptResult:
    """The refined network and how it was reached.

    ``status``: ``target_met``, ``no_proposal`` (no candidate cuts ``delta_ms`` any more) or
    ``max_iterations``. ``history[0]`` is the seed; each later record is one iteration with its
    chosen proposal and every candidate tried. ``accuracy`` is after the final fine-tune.
    """

    spec: ArchSpec
    model: MobileNetV3Like
    status: str
    accuracy: float
    target_ms: float
    delta_ms: float
    history: History

    @property
    def iterations(self) -> int:
        return len(self.history) - 1

    @property
    def latency_ms(self) -> float:
        return self.history[-1].latency_ms

    @property
    def seed_spec(self) -> ArchSpec:
        return self.history[0].spec

    @property
    def seed_latency_ms(self) -> float:
        return self.history[0].latency_ms

    @property
    def seed_accuracy(self) -> float:
        return self.history[0].accuracy

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (no weights)."""
        return {
            "status": self.status,
            "iterations": self.iterations,
            "spec": str(self.spec),
            "latency_ms": self.latency_ms,
            "accuracy": self.accuracy,
            "seed_latency_ms": self.seed_latency_ms,
            "seed_accuracy": self.seed_accuracy,
            "target_ms": self.target_ms,
            "delta_ms": self.delta_ms,
        }


class _Latency:
    """``latency_ms`` memoized per spec; a resumed run is primed with the recorded figures, so
    measured (noisy) latencies are not drawn again."""

    def __init__(self, latency_ms: Callable[[ArchSpec], float]) -> None:
        self.latency_ms = latency_ms
        self.cache: dict[ArchSpec, float] = {}

    def __call__(self, spec: ArchSpec) -> float:
        if spec not in self.cache:
            self.cache[spec] = float(self.latency_ms(spec))
        return self.cache[spec]

    def prime(self, history: History) -> None:
        for record in history:
            self.cache[record.spec] = record.latency_ms
            for candidate in record.candidates:
                self.cache.setdefault(candidate.proposal.spec, candidate.proposal.latency_after_ms)


def _rng_seed(seed: int, iteration: int, candidate: int) -> int:
    return ((seed * 1_000_003 + iteration) * 10_007 + candidate + 1) % (2**63)


def _score(metric: str, accuracy: float, current_accuracy: float, cut_ms: float) -> float:
    score = accuracy if metric == "accuracy" else (accuracy - current_accuracy) / abs(cut_ms)
    return -math.inf if math.isnan(score) else score


def _settings(seed_spec: ArchSpec, config: NetAdaptConfig, scorer: SupernetScorer | None) -> dict[str, Any]:
    """What a checkpoint must have been written with to be resumed (the keys of earlier versions; the
    scorer's only when proposals are scored on a supernet)."""
    settings = {"seed_spec": str(seed_spec), "target_ms": config.target_ms, "target_ratio": config.ratio,
                "delta_ms": None, "delta_ratio": float(config.delta_ratio), "short_steps": config.short_steps,
                "final_steps": config.final_steps, "metric": config.metric,
                "kinds": list(config.proposal_kinds), "seed": config.seed}
    return settings if scorer is None else {**settings, "scorer": scorer.describe()}


@dataclass(frozen=True)
class _State:
    """A checkpoint read back: the current network (no weights while a supernet scores the
    proposals), the history so far, the resolved target and cut, and (for a finished run) its status
    and final accuracy."""

    spec: ArchSpec
    model: MobileNetV3Like | None
    history: History
    target_ms: float
    delta_ms: float
    status: str | None = None
    accuracy: float | None = None


class _Run:
    """Where a run's files live; writes nothing without a run dir. Plain data (what
    ``weights_only`` loading accepts) only here, at the file boundary."""

    def __init__(self, run_dir: str | Path | None, settings: dict[str, Any]) -> None:
        self.dir = Path(run_dir) if run_dir is not None else None
        self.settings = settings

    def load(self, name: str) -> _State | None:
        if self.dir is None:
            return None
        path = self.dir / name
        payload = load_netadapt_state(path)
        if payload is None:
            return None
        if payload.get("settings") != self.settings:
            raise DataError(
                f"{path}: holds a refinement with other settings ({payload.get('settings')}); "
                f"now {self.settings}. Use a new run dir, or the same settings to resume"
            )
        history = history_from_json(payload.get("history"), str(path))
        try:
            spec = from_dict(payload["spec"])
            model = None
            if payload["state_dict"] or "scorer" not in self.settings:
                model = build_model(spec)
                model.load_state_dict(payload["state_dict"])
            return _State(spec, model, history, float(payload["target_ms"]), float(payload["delta_ms"]),
                          payload.get("status"), payload.get("accuracy"))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise DataError(f"{path}: not a readable NetAdapt checkpoint ({type(err).__name__}); delete it "
                            "to start the refinement over") from None

    def save(self, name: str, state: _State) -> None:
        if self.dir is None:
            return
        history = history_to_json(state.history)
        weights = state.model.state_dict() if state.model is not None else {}
        tensors = {k: v.detach().cpu() for k, v in weights.items()}
        extra = {} if state.status is None else {"status": state.status, "accuracy": state.accuracy}
        save_netadapt_state({"settings": self.settings, "spec": to_dict(state.spec), "state_dict": tensors,
                             "history": history, "target_ms": state.target_ms, "delta_ms": state.delta_ms,
                             **extra}, self.dir / name)
        atomic_write_text(self.dir / HISTORY_FILE, json.dumps(history, indent=2) + "\n")


def _result(state: _State) -> NetAdaptResult:
    assert state.status is not None and state.accuracy is not None and state.model is not None
    return NetAdaptResult(spec=state.spec, model=state.model, status=state.status, accuracy=state.accuracy,
                          target_ms=state.target_ms, delta_ms=state.delta_ms, history=state.history)


def _start(seed_spec: ArchSpec, seed_model: MobileNetV3Like | None, config: NetAdaptConfig, latency: _Latency,
           evaluate: Evaluate, scorer: SupernetScorer | None) -> _State:
    """The seed as iteration 0, with the target and the cut resolved from its latency."""
    seed_latency = latency(seed_spec)
    if config.target_ms is not None:  # an absolute target wins over the ratio
        target = float(config.target_ms)
    else:
        assert config.target_ratio is not None  # NetAdaptConfig holds one of them
        target = config.target_ratio * seed_latency
    delta = config.delta_ratio * seed_latency
    if scorer is not None:
        seed = IterationRecord(0, None, seed_latency, scorer.score(seed_spec), seed_spec)
    else:
        assert seed_model is not None
        seed = IterationRecord(0, None, seed_latency, float(evaluate(seed_model)), seed_spec)
    logger.info("netadapt: seed latency %.3f ms, accuracy %.4f, target %.3f ms, delta %.4f ms",
                seed_latency, seed.accuracy, target, delta)
    return _State(seed_spec, seed_model, (seed,), target, delta)


def _fine_tuned(state: _State, proposal: Proposal, config: NetAdaptConfig, rng_seed: int, fine_tune: FineTune,
                evaluate: Evaluate) -> tuple[float, MobileNetV3Like]:
    """``proposal``'s accuracy after inheriting ``state``'s weights and the short fine-tune; its network."""
    assert state.model is not None
    child = inherit_weights(state.model, proposal.spec)
    if config.short_steps:
        torch.manual_seed(rng_seed)
        child = fine_tune(child.train(), config.short_steps)
    return float(evaluate(child)), child


def _iteration(state: _State, config: NetAdaptConfig, latency: _Latency, fine_tune: FineTune,
               evaluate: Evaluate, progress: bool, scorer: SupernetScorer | None) -> _State | None:
    """One iteration from ``state``: every proposal tried, the best kept; None without a proposal."""
    current, iteration = state.history[-1], len(state.history)
    kinds = config.proposal_kinds
    if scorer is not None:
        proposals = propose_subnets(scorer.space, state.spec, latency, state.delta_ms, kinds=kinds)
    else:
        proposals = propose(state.spec, latency, state.delta_ms, kinds=kinds)
    if not proposals:
        return None
    candidates: list[CandidateRecord] = []
    best: tuple[float, int, MobileNetV3Like | None] | None = None
    bar = tqdm(proposals, desc=f"netadapt iteration {iteration}", leave=False, disable=not progress)
    for j, proposal in enumerate(bar):
        child: MobileNetV3Like | None = None
        if scorer is not None:
            accuracy = scorer.score(proposal.spec)
        else:
            accuracy, child = _fine_tuned(state, proposal, config, _rng_seed(config.seed, iteration, j),
                                          fine_tune, evaluate)
        score = _score(config.metric, accuracy, current.accuracy, proposal.latency_cut_ms)
        candidates.append(CandidateRecord(proposal, accuracy, score))
        if best is None or score > best[0]:
            best = (score, j, child)
    assert best is not None
    _, j, model = best
    chosen = candidates[j]
    if math.isnan(chosen.accuracy):
        raise TrainingDiverged(f"netadapt iteration {iteration}: the fine-tuning of every proposal "
                               "diverged; lower trainer.lr or netadapt.finetune_lr_scale")
    record = IterationRecord(iteration, chosen.label, chosen.proposal.latency_after_ms, chosen.accuracy,
                             chosen.proposal.spec, tuple(candidates))
    return _State(record.spec, model, (*state.history, record), state.target_ms, state.delta_ms)


def netadapt(
    seed_spec: ArchSpec,
    seed_model: MobileNetV3Like | None,
    config: NetAdaptConfig,
    *,
    latency_ms: Callable[[ArchSpec], float],
    fine_tune: FineTune,
    evaluate: Evaluate,
    run_dir: str | Path | None = None,
    progress: bool = True,
    scorer: SupernetScorer | None = None,
) -> NetAdaptResult:
    """Refine ``seed_model`` (built from ``seed_spec``) until its latency meets ``config``'s target.

    Args:
        seed_spec: the seed architecture; ``seed_model`` its (trained) network (None with ``scorer``).
        config: target (``target_ms`` in the unit of ``latency_ms``, else ``target_ratio`` x the
            seed's latency), cut per iteration (``delta_ratio`` x the seed's latency), fine-tuning
            steps, metric, proposal kinds, iteration cap and seed. Ratios are resolved once, with
            the seed's latency, and stored, so a resumed run does not measure the seed again.
        latency_ms: spec -> latency (measured or predicted); memoized per spec here.
        fine_tune: ``(model, steps) -> model`` trains a network for ``steps`` steps (in place or not).
        evaluate: ``model -> accuracy`` on held-out data (higher is better).
        run_dir: where checkpoints and ``history.json`` go; an existing run there is resumed
            (a finished one is returned as is). ``None``: nothing is written.
        progress: show a tqdm bar over each iteration's candidates.
        scorer: score proposals (sub-networks of its space) on its supernet, no fine-tuning; the
            final network's weights are extracted from it. ``seed_spec`` must be in its space.

    Raises:
        DataError: ``run_dir`` holds another refinement. TrainingDiverged: every proposal's or the
        final fine-tuning diverged. ConfigError: ``seed_spec`` is not in ``scorer``'s space.
    """
    if (scorer is None) == bool(config.supernet):
        raise ValueError("netadapt: pass a supernet scorer exactly when config.supernet is set")
    if scorer is not None:
        scorer.check(seed_spec)
    elif seed_model is None:
        raise ValueError("netadapt: a seed model is needed unless a supernet scores the proposals")
    latency = _Latency(latency_ms)
    run = _Run(run_dir, _settings(seed_spec, config, scorer))
    finished = run.load(FINAL_FILE)
    if finished is not None:
        logger.info("netadapt: %s already holds a finished refinement; returning it", run.dir)
        return _result(finished)
    state = run.load(STATE_FILE)
    if state is not None:
        if state.model is not None and seed_model is not None:
            state.model.to(next(seed_model.parameters()).device)
        latency.prime(state.history)
        logger.info("netadapt: resuming %s after iteration %d", run.dir, len(state.history) - 1)
    else:
        state = _start(seed_spec, seed_model, config, latency, evaluate, scorer)
        run.save(STATE_FILE, state)

    while True:
        current = state.history[-1]
        if current.latency_ms <= state.target_ms:
            status = TARGET_MET
            break
        if len(state.history) > config.max_iterations:
            status = MAX_ITERATIONS
            break
        started = time.perf_counter()
        following = _iteration(state, config, latency, fine_tune, evaluate, progress, scorer)
        if following is None:
            status = NO_PROPOSAL
            logger.warning("netadapt: no proposal cuts %.4f ms from %.3f ms; stopping above the target",
                           state.delta_ms, current.latency_ms)
            break
        state = following
        run.save(STATE_FILE, state)
        record = state.history[-1]
        logger.info("netadapt iteration %d: %s  latency %.3f -> %.3f ms (target %.3f)  accuracy %.4f  "
                    "[%d candidates, %.1f s]", record.iteration, record.chosen, current.latency_ms,
                    record.latency_ms, state.target_ms, record.accuracy, len(record.candidates),
                    time.perf_counter() - started)

    model = state.model
    if model is None:  # proposals were scored on the supernet: the refined network's weights come from it
        assert scorer is not None
        model = scorer.extract(state.spec)
    if config.final_steps:
        torch.manual_seed(_rng_seed(config.seed, len(state.history), -1))
        model = fine_tune(model.train(), config.final_steps)
    accuracy = float(evaluate(model))
    if math.isnan(accuracy):
        raise TrainingDiverged("netadapt: the final fine-tuning diverged, nothing saved as the result; "
                               "lower trainer.lr or netadapt.finetune_lr_scale")
    logger.info("netadapt: %s after %d iterations: latency %.3f ms, accuracy %.4f after %d final steps",
                status, len(state.history) - 1, state.history[-1].latency_ms, accuracy, config.final_steps)
    final = _State(state.spec, model, state.history, state.target_ms, state.delta_ms, status, accuracy)
    run.save(FINAL_FILE, final)
    return _result(final)
