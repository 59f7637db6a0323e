"""Run a search: open (or resume) the study, enqueue the seed, let 1..N workers pull trials
from the shared storage, then write the results."""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from search.candidate import CandidateFailed, CandidateObjective, protocol_dict
from search.objectives import Objective
from search.results import Candidate, candidates, pareto_front, plot_accuracy_latency, ranking_table, winner
from search.study import StopWhenDone, StudyConfig, count_states, open_study
from search_spaces.serialize import atomic_write_text, save_spec
from search_spaces.space import SearchSpace

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What a worker needs to score candidates; built once per process."""

    space: SearchSpace
    objective: Objective
    accuracy: Any
    latency: Any
    references: dict[str, Any] = field(default_factory=dict)  # name -> ArchSpec for the plot
    data: Any = None  # the proxy's DatasetSplits (loaded once; NetAdapt fine-tunes on them)


# A picklable factory (module-level function + settings) so spawned workers can rebuild it.
ComponentsFactory = Callable[[], Components]


class ProgressBar:
    """Optuna callback: a tqdm bar over finished trials (all workers), with the best reward."""

    def __init__(self, study: optuna.Study, total: int) -> None:
        counts = count_states(study)
        self.bar = tqdm(total=total, initial=min(total, counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]),
                        desc="search", unit="trial", dynamic_ncols=True)
        self.best = -float("inf")

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        counts = count_states(study)
        finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        reward = trial.user_attrs.get("reward")
        if trial.state == TrialState.COMPLETE and reward is not None:
            self.best = max(self.best, reward)
        self.bar.n = min(self.bar.total, finished)
        self.bar.set_postfix(best_reward=f"{self.best:.4f}", failed=counts[TrialState.FAIL], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def optimize(study: optuna.Study, components: Components, cfg: StudyConfig, *, progress: bool) -> None:
    """Pull trials until the study holds ``cfg.n_trials`` finished ones (or too many failed)."""
    stop = StopWhenDone(cfg.n_trials, cfg.max_failures or cfg.n_trials)
    if stop.done(study):
        return
    objective = CandidateObjective(components.space, components.objective, components.accuracy,
                                   components.latency)
    callbacks: list[Any] = [stop]
    bar = ProgressBar(study, cfg.n_trials) if progress else None
    if bar:
        callbacks.append(bar)
    try:
        study.optimize(objective, callbacks=callbacks, catch=(CandidateFailed,), timeout=cfg.timeout_s,
                       gc_after_trial=True)
    finally:
        if bar:
            bar.close()


def _worker(factory: ComponentsFactory, cfg: StudyConfig, url: str, index: int) -> None:
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.workers))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    components = factory()
    study = open_study(cfg, components.objective, url, worker=index)
    optimize(study, components, cfg, progress=False)


def enqueue_seed(study: optuna.Study, space: SearchSpace) -> bool:
    """Enqueue the seed architecture as the first trial of a new study (not on resume)."""
    if study.get_trials(deepcopy=False):
        return False
    study.enqueue_trial(space.params_of(space.seed), user_attrs={"seed_architecture": True})
    return True


def run_search(factory: ComponentsFactory, cfg: StudyConfig, url: str, *, components: Components | None = None,
               progress: bool = True) -> optuna.Study:
    """Run (or resume) the study at ``url`` with ``cfg.workers`` processes; returns the study.

    ``factory`` builds each worker's components; this process uses ``components`` if given."""
    components = components or factory()
    study = open_study(cfg, components.objective, url, worker=0)
    if cfg.enqueue_seed and enqueue_seed(study, components.space):
        log.info("enqueued the seed architecture as trial 0")
    processes = []
    if cfg.workers > 1:
        context = multiprocessing.get_context("spawn")
        for index in range(1, cfg.workers):
            process = context.Process(target=_worker, args=(factory, cfg, url, index), daemon=False)
            process.start()
            processes.append(process)
    try:
        optimize(study, components, cfg, progress=progress)
    finally:
        for process in processes:
            process.join()
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed:
        log.warning("%d worker(s) exited with errors: %s", len(failed), failed)
    return study


def reference_points(study: optuna.Study, components: Components) -> dict[str, tuple[float, float]]:
    """(latency, accuracy) of each reference architecture, evaluated once and kept in the study."""
    points: dict[str, tuple[float, float]] = {}
    done = {c.spec: c for c in candidates(study, components.objective)}
    for name, spec in components.references.items():
        key = f"reference:{name}"
        stored = study.user_attrs.get(key)
        if stored is None:
            if str(spec) in done:
                c = done[str(spec)]
                stored = {"latency_ms": c.latency_ms, "accuracy": c.accuracy}
            else:
                result = components.accuracy.evaluate(spec)
                stored = {"latency_ms": float(components.latency(spec)), "accuracy": float(result.accuracy)}
            study.set_user_attr(key, stored)
        points[name] = (stored["latency_ms"], stored["accuracy"])
    return points


@dataclass
class SearchReport:
    winner: Candidate | None
    front: list[Candidate]
    found: list[Candidate]
    files: dict[str, Path]


def write_results(study: optuna.Study, components: Components, run_dir: Path, *, top_k: int = 10,
                  with_references: bool = True) -> SearchReport:
    """Table, winner spec files, summary JSON and the accuracy-latency plot in ``run_dir``."""
    objective = components.objective
    found = candidates(study, objective)
    best = winner(found)
    front = pareto_front(found)
    files: dict[str, Path] = {}
    files["table"] = atomic_write_text(run_dir / "candidates.txt", ranking_table(found, top_k=len(found)) + "\n")
    references = reference_points(study, components) if with_references else {}
    if found:
        files["plot"] = plot_accuracy_latency(found, objective, run_dir / "accuracy_vs_latency.png",
                                              references=references, title=f"study {study.study_name}")
    if best is not None:
        files["winner"] = save_spec(best.arch, run_dir / "winner.json")
        save_spec(best.arch, run_dir / "winner.yaml")
        save_spec(best.arch, run_dir / "winner.txt")
    counts = count_states(study)
    protocol = protocol_dict(components.latency.protocol)
    summary = {
        "study": study.study_name,
        "objective": {"mode": objective.mode, "target_ms": objective.target_ms, "w": objective.w},
        "trials": {state.name.lower(): n for state, n in counts.items() if n},
        "latency_protocol": protocol,
        "winner": None if best is None else {**best.__dict__, "meets_target": best.feasible},
        "pareto_front": [c.__dict__ for c in front],
        "references": {k: {"latency_ms": v[0], "accuracy": v[1]} for k, v in references.items()},
        "top": [c.__dict__ for c in sorted(found, key=lambda c: c.reward, reverse=True)[:top_k]],
    }
    files["summary"] = atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return SearchReport(winner=best, front=front, found=found, files=files)
