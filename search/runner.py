"""Run a search: open (or resume) the study, enqueue the seed, let 1..N workers pull trials
from the shared storage, then write the results."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from evaluators.data import DatasetSplits
from evaluators.protocols import AccuracyEvaluator, LatencyEvaluator
from search.candidate import CandidateObjective
from search.objectives import Objective
from search.results import (
    Candidate,
    candidates_of,
    pareto_front,
    plot_accuracy_latency,
    ranking_table,
    state_counts,
    winner,
)
from search.run_record import RunRecord, data_facts, latency_protocol, write_run_record
from search.study import (
    WORKER_ATTR,
    StopWhenDone,
    StudyConfig,
    count_states,
    created_here,
    fail_stale_trials,
    in_flight,
    mask_secrets,
    open_study,
    sampler_seed,
    worker_attrs,
)
from search_spaces.errors import MobilenasError, RunFailure, TrainingDiverged, outcome
from search_spaces.limits import SpecLimits, active_limits, set_limits
from search_spaces.serialize import atomic_write_text, save_spec
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What a worker needs to score candidates; built once per process."""

    space: SearchSpace
    objective: Objective
    accuracy: AccuracyEvaluator
    latency: LatencyEvaluator
    references: dict[str, ArchSpec] = field(default_factory=dict)  # name -> spec, for the plot
    data: DatasetSplits | None = None  # the proxy's splits (loaded once; NetAdapt fine-tunes on them)


# A picklable factory (module-level function + settings) so spawned workers can rebuild it.
ComponentsFactory = Callable[[], Components]


class ProgressBar:
    """Optuna callback: a tqdm bar over finished trials (all workers), with the best reward."""

    def __init__(self, study: optuna.Study, total: int) -> None:
        counts = count_states(study)
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        self.bar = tqdm(total=total, initial=min(total, done), desc="search", unit="trial",
                        dynamic_ncols=True)
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


class RecordWorker:
    """Wraps the objective: records who runs each trial (host, PID, sampler seed) before anything
    else, so that a dead worker's trial can be told from a live one and a run reproduced."""

    def __init__(self, objective: Callable[[optuna.Trial], Any], seed: int) -> None:
        self.objective = objective
        self.attrs = worker_attrs(seed)

    def __call__(self, trial: optuna.Trial) -> Any:
        trial.set_user_attr(WORKER_ATTR, self.attrs)
        return self.objective(trial)


def optimize(study: optuna.Study, components: Components, cfg: StudyConfig, *, progress: bool) -> None:
    """Pull trials until the study holds ``cfg.n_trials`` finished ones (or too many failed),
    checking before each trial starts (so a worker never starts one the study no longer needs)."""
    stop = StopWhenDone(cfg.n_trials, cfg.max_failures or cfg.n_trials)
    if stop.done(study):
        return
    objective = RecordWorker(CandidateObjective(components.space, components.objective, components.accuracy,
                                                components.latency), sampler_seed(cfg, study))
    bar = ProgressBar(study, cfg.n_trials) if progress else None
    deadline = None if cfg.timeout_s is None else time.monotonic() + cfg.timeout_s
    try:
        while not stop.done(study) and (deadline is None or time.monotonic() < deadline):
            study.optimize(objective, n_trials=1, callbacks=[bar] if bar else None, catch=(TrainingDiverged,),
                           gc_after_trial=True)
    finally:
        if bar:
            bar.close()


def report_stale_trials(study: optuna.Study) -> None:
    """Fail the trials dead workers left RUNNING, saying so in one line."""
    failed = fail_stale_trials(study)
    if failed:
        print(f"study {study.study_name}: marked {len(failed)} trial(s) of dead workers as failed "
              f"(left running: {', '.join(map(str, failed))})")


def wait_for_trials_in_flight(study: optuna.Study, *, poll_s: float = 0.5, settle_s: float = 0.2) -> None:
    """Once the study is done no worker starts a trial, so waiting for those still running (in
    other processes or machines) gives every process the same, final study to report. Trials of
    dead workers are failed meanwhile (PID on this host, heartbeat on RDB storages)."""
    announced = quiet = False
    while True:
        fail_stale_trials(study)
        running = in_flight(study)
        if not running:
            if quiet:  # empty twice in a row: no worker was between its last check and its trial
                return
            quiet = True
            time.sleep(settle_s)
            continue
        if not announced:
            print(f"waiting for {len(running)} trial(s) still running in other workers")
            announced = True
        quiet = False
        time.sleep(poll_s)


def _worker(factory: ComponentsFactory, cfg: StudyConfig, url: str, limits: SpecLimits) -> None:
    import os

    import torch

    set_limits(limits)  # a spawned process starts with the default limits
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.workers))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        components = factory()
        study = open_study(cfg, components.objective, url)
        optimize(study, components, cfg, progress=False)
    except (MobilenasError, RunFailure) as err:  # one line, as the CLI reports it, not a traceback
        prefix, status = outcome(err)
        print(f"{prefix}: {mask_secrets(str(err))}", file=sys.stderr)
        sys.exit(status)


def enqueue_seed(study: optuna.Study, space: SearchSpace) -> bool:
    """Enqueue the seed architecture as the first trial of a new study (not on resume), once:
    only the process that created the study does."""
    if not created_here(study) or study.get_trials(deepcopy=False):
        return False
    study.enqueue_trial(space.params_of(space.seed), user_attrs={"seed_architecture": True})
    return True


def run_search(factory: ComponentsFactory, cfg: StudyConfig, url: str, *,
               components: Components | None = None, progress: bool = True) -> optuna.Study:
    """Run (or resume) the study at ``url`` with ``cfg.workers`` processes; returns the study.

    ``factory`` builds each worker's components; this process uses ``components`` if given."""
    components = components or factory()
    study = open_study(cfg, components.objective, url)
    report_stale_trials(study)
    if cfg.enqueue_seed and enqueue_seed(study, components.space):
        log.info("enqueued the seed architecture as trial 0")
    processes = []
    if cfg.workers > 1:
        context = multiprocessing.get_context("spawn")
        for _ in range(1, cfg.workers):
            process = context.Process(target=_worker, args=(factory, cfg, url, active_limits()), daemon=False)
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
    if StopWhenDone(cfg.n_trials, cfg.max_failures or cfg.n_trials).done(study):
        wait_for_trials_in_flight(study)
    return study


def reference_points(study: optuna.Study, components: Components,
                     found: list[Candidate]) -> dict[str, tuple[float, float]]:
    """(latency, accuracy) of each reference architecture, evaluated once and kept in the study."""
    points: dict[str, tuple[float, float]] = {}
    done = {c.spec: c for c in found}
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


def search_record(best: Candidate, components: Components, study: optuna.Study, run_dir: Path) -> RunRecord:
    """The run record of a search: its winner (untrained), the latency the search gave it, and where
    it was found."""
    objective = components.objective
    data = components.data.summary() if components.data is not None else {}
    provenance = {"method": "Optuna search (MnasNet-style factorized space)", "study": str(run_dir),
                  "study_name": study.study_name, "trial": best.number, "objective": objective.mode,
                  "target_ms": objective.target_ms, "search_accuracy": best.accuracy,
                  "accuracy_evaluator": components.accuracy.name}
    return RunRecord(kind="search", spec=best.arch, latency_ms=best.latency_ms,
                     protocol=latency_protocol(components.latency),
                     data=data_facts(data),
                     provenance=provenance)


@dataclass
class SearchReport:
    winner: Candidate | None
    front: list[Candidate]
    found: list[Candidate]
    files: dict[str, Path]


def write_results(study: optuna.Study, components: Components, run_dir: Path, *, top_k: int = 10,
                  with_references: bool = True) -> SearchReport:
    """Table, winner spec files, summary JSON and the accuracy-latency plot in ``run_dir``, all
    from one snapshot of the study's trials (the report returned is that snapshot too)."""
    objective = components.objective
    trials = study.get_trials(deepcopy=False)
    found = candidates_of(trials, objective)
    best = winner(found)
    front = pareto_front(found)
    files: dict[str, Path] = {}
    ranking = ranking_table(found, top_k=len(found))
    files["table"] = atomic_write_text(run_dir / "candidates.txt", ranking + "\n")
    references = reference_points(study, components, found) if with_references else {}
    if found:
        files["plot"] = plot_accuracy_latency(found, objective, run_dir / "accuracy_vs_latency.png",
                                              references=references, title=f"study {study.study_name}")
    if best is not None:
        files["winner"] = save_spec(best.arch, run_dir / "winner.json")
        save_spec(best.arch, run_dir / "winner.yaml")
        save_spec(best.arch, run_dir / "winner.txt")
        files["record"] = write_run_record(run_dir, search_record(best, components, study, run_dir))
    counts = state_counts(trials)
    protocol = latency_protocol(components.latency)  # as the run record states it
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
