"""The NetAdapt loop (MobileNetV3 paper, section 4.2), checkpointed after every iteration.

Each iteration takes every :func:`~search.netadapt.proposals.propose` candidate (each cuts
latency by at least ``delta_ms``), gives it the current weights
(:func:`~search.netadapt.inherit.inherit_weights`), fine-tunes it for ``short_steps`` and
evaluates it; the candidate with the best score is kept. The score is V3's
``dAcc / |dLatency|`` (``acc_per_latency``) or NetAdapt's original plain accuracy
(``accuracy``). The loop stops when the latency target is met, when no candidate can cut
``delta_ms``, or after ``max_iterations``; then the network is fine-tuned for ``final_steps``.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from search.netadapt.checkpoint import load_netadapt_state, save_netadapt_state
from search.netadapt.inherit import inherit_weights
from search.netadapt.proposals import KINDS, propose
from search_spaces.blockstring import from_string
from search_spaces.builder import MobileNetV3Like, build_model
from search_spaces.errors import ConfigError, DataError, TrainingDiverged
from search_spaces.serialize import atomic_write_text, from_dict, to_dict
from search_spaces.spec import ArchSpec

logger = logging.getLogger(__name__)

METRICS = ("acc_per_latency", "accuracy")
STATE_FILE = "netadapt_state.pt"
FINAL_FILE = "netadapt_final.pt"
HISTORY_FILE = "history.json"

TARGET_MET, NO_PROPOSAL, MAX_ITERATIONS = "target_met", "no_proposal", "max_iterations"

FineTune = Callable[[MobileNetV3Like, int], nn.Module]
Evaluate = Callable[[nn.Module], float]


@dataclass
class NetAdaptResult:
    """The refined network and how it was reached.

    ``status``: ``target_met``, ``no_proposal`` (no candidate cuts ``delta_ms`` any more) or
    ``max_iterations``. ``history[0]`` is the seed; each later record is one iteration with its
    chosen proposal and every candidate tried. ``accuracy`` is after the final fine-tune.
    """

    spec: ArchSpec
    model: nn.Module
    status: str
    latency_ms: float
    accuracy: float
    seed_latency_ms: float
    seed_accuracy: float
    target_ms: float
    delta_ms: float
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return len(self.history) - 1

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

    def prime(self, history: list[dict[str, Any]]) -> None:
        for record in history:
            self.cache[from_string(record["spec"])] = record["latency_ms"]
            for candidate in record["candidates"]:
                self.cache.setdefault(from_string(candidate["spec"]), candidate["latency_after_ms"])


def _rng_seed(seed: int, iteration: int, candidate: int) -> int:
    return ((seed * 1_000_003 + iteration) * 10_007 + candidate + 1) % (2**63)


def _score(metric: str, accuracy: float, current_accuracy: float, cut_ms: float) -> float:
    score = accuracy if metric == "accuracy" else (accuracy - current_accuracy) / abs(cut_ms)
    return -math.inf if math.isnan(score) else score


def _check(target_ms: float | None, target_ratio: float | None, delta_ms: float | None,
           delta_ratio: float, short_steps: int, final_steps: int, metric: str, max_iterations: int,
           kinds: Sequence[str]) -> None:
    if (target_ms is None) == (target_ratio is None):
        raise ConfigError(f"give exactly one of target_ms and target_ratio, got target_ms={target_ms}, "
                          f"target_ratio={target_ratio}")
    if target_ms is not None and not target_ms > 0:
        raise ConfigError(f"target_ms must be > 0, got {target_ms}")
    if target_ratio is not None and not 0 < target_ratio <= 1:
        raise ConfigError(f"target_ratio must be in (0, 1], got {target_ratio}")
    if delta_ms is not None and not delta_ms > 0:
        raise ConfigError(f"delta_ms must be > 0 (or None for delta_ratio x the seed's latency), "
                          f"got {delta_ms}")
    if not 0 < delta_ratio < 1:
        raise ConfigError(f"delta_ratio must be in (0, 1), got {delta_ratio}")
    for name, value in (("short_steps", short_steps), ("final_steps", final_steps),
                        ("max_iterations", max_iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not kinds or any(k not in KINDS for k in kinds):
        raise ConfigError(f"kinds must be a non-empty subset of {', '.join(KINDS)}, got {list(kinds)}")


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _restore(payload: dict[str, Any]) -> tuple[ArchSpec, MobileNetV3Like]:
    spec = from_dict(payload["spec"])
    model = build_model(spec)
    model.load_state_dict(payload["state_dict"])
    return spec, model


class _Run:
    """Where a run's files live; writes nothing without a run dir."""

    def __init__(self, run_dir: str | Path | None, settings: dict[str, Any]) -> None:
        self.dir = Path(run_dir) if run_dir is not None else None
        self.settings = settings

    def load(self, name: str) -> dict[str, Any] | None:
        if self.dir is None:
            return None
        payload = load_netadapt_state(self.dir / name)
        if payload is not None and payload.get("settings") != self.settings:
            raise DataError(
                f"{self.dir / name}: holds a refinement with other settings ({payload.get('settings')}); "
                f"now {self.settings}. Use a new run dir, or the same settings to resume"
            )
        return payload

    def save(self, name: str, spec: ArchSpec, model: nn.Module, history: list[dict[str, Any]],
             **extra: Any) -> None:
        if self.dir is None:
            return
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_netadapt_state({"settings": self.settings, "spec": to_dict(spec), "state_dict": state,
                             "history": history, **extra}, self.dir / name)
        atomic_write_text(self.dir / HISTORY_FILE, json.dumps(history, indent=2) + "\n")


def _finish(payload: dict[str, Any], model: nn.Module | None = None) -> NetAdaptResult:
    spec = from_dict(payload["spec"])
    if model is None:
        _, model = _restore(payload)
    history = payload["history"]
    return NetAdaptResult(
        spec=spec, model=model, status=payload["status"], latency_ms=history[-1]["latency_ms"],
        accuracy=payload["accuracy"], seed_latency_ms=history[0]["latency_ms"],
        seed_accuracy=history[0]["accuracy"], target_ms=payload["target_ms"],
        delta_ms=payload["delta_ms"], history=history,
    )


def netadapt(
    seed_spec: ArchSpec,
    seed_model: MobileNetV3Like,
    *,
    target_ms: float | None = None,
    target_ratio: float | None = None,
    latency_ms: Callable[[ArchSpec], float],
    fine_tune: FineTune,
    evaluate: Evaluate,
    delta_ms: float | None = None,
    delta_ratio: float = 0.01,
    short_steps: int,
    final_steps: int,
    metric: str = "acc_per_latency",
    run_dir: str | Path | None = None,
    max_iterations: int = 100,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    progress: bool = True,
) -> NetAdaptResult:
    """Refine ``seed_model`` (built from ``seed_spec``) until its latency is at most ``target_ms``.

    Args:
        seed_spec: the seed architecture; ``seed_model`` its (trained) network.
        target_ms: the latency to reach, in the unit of ``latency_ms``; or ``target_ratio``:
            the target as a fraction of the seed's latency (give exactly one).
        latency_ms: spec -> latency (measured or predicted); memoized per spec here.
        fine_tune: ``(model, steps) -> model`` trains a network for ``steps`` steps (in place or not).
        evaluate: ``model -> accuracy`` on held-out data (higher is better).
        delta_ms: least latency cut per iteration; ``None``: ``delta_ratio`` x the seed's
            latency (paper: 0.01). Ratios are resolved once, with the seed's latency, and stored,
            so a resumed run does not measure the seed again.
        short_steps: fine-tuning steps of each candidate; ``final_steps``: of the final network.
        metric: ``acc_per_latency`` (V3: dAcc / |dLatency|) or ``accuracy`` (NetAdapt).
        run_dir: where checkpoints and ``history.json`` go; an existing run there is resumed
            (a finished one is returned as is). ``None``: nothing is written.
        max_iterations: stop after this many iterations even above the target.
        kinds: proposal kinds, a subset of ``("exp", "bottleneck")``.
        seed: seeds the torch RNG before each fine-tune (per iteration and candidate).
        progress: show a tqdm bar over each iteration's candidates.

    Raises:
        ConfigError: bad arguments. DataError: ``run_dir`` holds another refinement.
    """
    _check(target_ms, target_ratio, delta_ms, delta_ratio, short_steps, final_steps, metric,
           max_iterations, kinds)
    latency = _Latency(latency_ms)
    settings = {"seed_spec": str(seed_spec), "target_ms": _float(target_ms),
                "target_ratio": _float(target_ratio), "delta_ms": _float(delta_ms),
                "delta_ratio": float(delta_ratio), "short_steps": short_steps, "final_steps": final_steps,
                "metric": metric, "kinds": list(kinds), "seed": seed}
    run = _Run(run_dir, settings)
    finished = run.load(FINAL_FILE)
    if finished is not None:
        logger.info("netadapt: %s already holds a finished refinement; returning it", run.dir)
        return _finish(finished)
    state = run.load(STATE_FILE)
    if state is not None:
        spec, model = _restore(state)
        model.to(next(seed_model.parameters()).device)
        history, target, delta = state["history"], state["target_ms"], state["delta_ms"]
        latency.prime(history)
        logger.info("netadapt: resuming %s after iteration %d", run.dir, len(history) - 1)
    else:
        spec, model = seed_spec, seed_model
        seed_latency = latency(seed_spec)
        target = float(target_ms) if target_ms is not None else target_ratio * seed_latency
        delta = float(delta_ms) if delta_ms is not None else delta_ratio * seed_latency
        history = [{"iteration": 0, "chosen": None, "latency_ms": seed_latency,
                    "accuracy": float(evaluate(seed_model)), "spec": str(seed_spec), "candidates": []}]
        run.save(STATE_FILE, spec, model, history, target_ms=target, delta_ms=delta)
        logger.info("netadapt: seed latency %.3f ms, accuracy %.4f, target %.3f ms, delta %.4f ms",
                    seed_latency, history[0]["accuracy"], target, delta)

    while True:
        current = history[-1]
        iteration = len(history)
        if current["latency_ms"] <= target:
            status = TARGET_MET
            break
        if iteration > max_iterations:
            status = MAX_ITERATIONS
            break
        proposals = propose(spec, latency, delta, kinds=kinds)
        if not proposals:
            status = NO_PROPOSAL
            logger.warning("netadapt: no proposal cuts %.4f ms from %.3f ms; stopping above the target",
                           delta, current["latency_ms"])
            break
        started = time.perf_counter()
        candidates: list[dict[str, Any]] = []
        best: tuple[float, int, nn.Module] | None = None
        bar = tqdm(proposals, desc=f"netadapt iteration {iteration}", leave=False, disable=not progress)
        for j, proposal in enumerate(bar):
            child: nn.Module = inherit_weights(model, proposal.spec)
            if short_steps:
                torch.manual_seed(_rng_seed(seed, iteration, j))
                child = fine_tune(child.train(), short_steps)
            accuracy = float(evaluate(child))
            score = _score(metric, accuracy, current["accuracy"], proposal.latency_cut_ms)
            candidates.append({**proposal.to_dict(), "accuracy": accuracy, "score": score})
            if best is None or score > best[0]:
                best = (score, j, child)
        assert best is not None
        _, j, model = best
        chosen = candidates[j]
        if math.isnan(chosen["accuracy"]):
            raise TrainingDiverged(f"netadapt iteration {iteration}: the fine-tuning of every proposal "
                                   "diverged; lower trainer.lr or netadapt.finetune_lr_scale")
        spec = proposals[j].spec
        history.append({"iteration": iteration, "chosen": chosen["label"],
                        "latency_ms": chosen["latency_after_ms"], "accuracy": chosen["accuracy"],
                        "spec": str(spec), "candidates": candidates})
        run.save(STATE_FILE, spec, model, history, target_ms=target, delta_ms=delta)
        logger.info("netadapt iteration %d: %s  latency %.3f -> %.3f ms (target %.3f)  accuracy %.4f  "
                    "[%d candidates, %.1f s]", iteration, chosen["label"], current["latency_ms"],
                    chosen["latency_after_ms"], target, chosen["accuracy"], len(candidates),
                    time.perf_counter() - started)

    if final_steps:
        torch.manual_seed(_rng_seed(seed, len(history), -1))
        model = fine_tune(model.train(), final_steps)
    accuracy = float(evaluate(model))
    if math.isnan(accuracy):
        raise TrainingDiverged("netadapt: the final fine-tuning diverged, nothing saved as the result; "
                               "lower trainer.lr or netadapt.finetune_lr_scale")
    logger.info("netadapt: %s after %d iterations: latency %.3f ms, accuracy %.4f after %d final steps",
                status, len(history) - 1, history[-1]["latency_ms"], accuracy, final_steps)
    payload = {"settings": settings, "spec": to_dict(spec), "history": history, "status": status,
               "accuracy": accuracy, "target_ms": target, "delta_ms": delta}
    run.save(FINAL_FILE, spec, model, history, status=status, accuracy=accuracy, target_ms=target,
             delta_ms=delta)
    return _finish(payload, model)
