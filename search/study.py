"""The Optuna study behind a search: storage (resumable), sampler, pruner, stopping rule."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from search.objectives import Objective
from search_spaces.errors import MobilenasError

SAMPLERS = ("tpe", "random", "nsga2", "auto")
PRUNERS = ("median", "hyperband", "none")


class StudyConfigError(MobilenasError, ValueError):
    """A study setting (storage, sampler, pruner, counts) is invalid."""


@dataclass
class StudyConfig:
    name: str = "main"
    storage: str | None = None  # None: SQLite file in the run directory; or any Optuna storage URL
    n_trials: int = 20  # finished (complete or pruned) trials to reach, resumes included
    max_failures: int | None = None  # stop after this many failed trials (default: n_trials)
    sampler: str = "auto"  # auto: TPE, or NSGA-II for the Pareto mode
    seed: int = 0
    pruner: str = "median"
    n_startup_trials: int = 5  # random trials before TPE / the pruner kicks in
    workers: int = 1  # processes on this machine pulling trials from the same storage
    enqueue_seed: bool = True
    timeout_s: float | None = None


def storage_url(cfg: StudyConfig, run_dir: Path) -> str:
    """The storage URL: the configured one, or a SQLite file (one worker) or journal file
    (several workers on one machine) in the run directory."""
    if cfg.storage:
        return cfg.storage
    if cfg.workers > 1:
        return f"journal:///{(run_dir / 'study.journal').resolve()}"
    return f"sqlite:///{(run_dir / 'study.db').resolve()}"


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for ``url``: ``journal:///path`` for a journal file, else an RDB URL
    (sqlite, postgresql, mysql) with heartbeats so a killed worker's trial is failed later."""
    if url.startswith("journal:///"):
        path = Path(url[len("journal://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=10, grace_period=30)
        except (ImportError, ModuleNotFoundError) as err:
            raise StudyConfigError(
                f"study.storage: a driver for {url.split(':', 1)[0]!r} is missing ({err})") from None
        except Exception as err:  # sqlalchemy's errors: bad URL, unreachable server, schema race
            if "already exists" in str(err) or "duplicate key" in str(err):
                time.sleep(0.5 * (attempt + 1))  # another worker is creating the tables right now
                continue
            raise StudyConfigError(f"study.storage: cannot open {url!r}: {str(err).splitlines()[0]}") from None
    raise StudyConfigError(f"study.storage: {url!r}: the tables could not be created")


def make_sampler(cfg: StudyConfig, objective: Objective, *, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (single objective) or NSGA-II (Pareto) by default; both read the latency constraint
    that hard-budget trials set with ``Trial.set_constraint``."""
    kind = cfg.sampler
    if kind == "auto":
        kind = "nsga2" if objective.multi_objective else "tpe"
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed,
                                             population_size=max(4, min(50, cfg.n_trials // 4)))
    with warnings.catch_warnings():  # multivariate/group TPE is "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials,
                                          multivariate=True, group=True)


def make_pruner(cfg: StudyConfig, objective: Objective) -> optuna.pruners.BasePruner:
    if cfg.pruner == "none" or objective.multi_objective:  # Optuna prunes single-objective only
        return optuna.pruners.NopPruner()
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=1)


def open_study(cfg: StudyConfig, objective: Objective, url: str, *, worker: int = 0) -> optuna.Study:
    """Create the study, or load it when it exists (a rerun continues it).

    Worker ``k`` seeds its sampler with ``seed + k`` so parallel workers do not propose the
    same points; worker 0 alone reproduces a single-worker run."""
    validate(cfg)
    storage = open_storage(url)
    study = optuna.create_study(
        study_name=cfg.name,
        storage=storage,
        sampler=make_sampler(cfg, objective, seed=cfg.seed + worker),
        pruner=make_pruner(cfg, objective),
        directions=objective.directions,
        load_if_exists=True,
    )
    if [d for d in study.directions] != objective.directions:
        raise StudyConfigError(
            f"study {cfg.name!r} in {url} was created for another objective mode; "
            "use a new study.name"
        )
    return study


def validate(cfg: StudyConfig) -> None:
    """Raise :class:`StudyConfigError` naming the first bad field of ``cfg``."""
    if cfg.sampler not in SAMPLERS:
        raise StudyConfigError(f"study.sampler: {cfg.sampler!r} is not one of {', '.join(SAMPLERS)}")
    if cfg.pruner not in PRUNERS:
        raise StudyConfigError(f"study.pruner: {cfg.pruner!r} is not one of {', '.join(PRUNERS)}")
    if cfg.n_trials < 1:
        raise StudyConfigError(f"study.n_trials must be >= 1, got {cfg.n_trials}")
    if cfg.workers < 1:
        raise StudyConfigError(f"study.workers must be >= 1, got {cfg.workers}")
    if not cfg.name or any(c in cfg.name for c in "/\\ "):
        raise StudyConfigError(f"study.name must be a non-empty word without slashes or spaces, got {cfg.name!r}")


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


class StopWhenDone:
    """Optuna callback: stop once ``n_trials`` finished (complete or pruned) trials exist in the
    storage, counting every worker's and earlier runs' trials, or after ``max_failures``."""

    def __init__(self, n_trials: int, max_failures: int) -> None:
        self.n_trials = n_trials
        self.max_failures = max_failures

    def done(self, study: optuna.Study) -> bool:
        counts = count_states(study)
        finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        return finished >= self.n_trials or counts[TrialState.FAIL] >= self.max_failures

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.done(study):
            study.stop()
