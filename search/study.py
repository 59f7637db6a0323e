"""The Optuna study behind a search: storage (resumable), sampler, pruner, stopping rule."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from search.objectives import Objective
from search.results import state_counts
from search_spaces.errors import ConfigError

SAMPLERS = ("tpe", "random", "nsga2", "auto")
PRUNERS = ("median", "hyperband", "none")


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


# ``scheme://user:password@``: the userinfo part of a URL as SQLAlchemy's URL grammar reads it
# (the password runs to the last ``@`` of the authority, so ``/`` or ``,`` in it are masked too)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):(?P<password>[^@\s'\"]*)@")
_NONCE = uuid.uuid4().hex[:12]  # with the host and PID: this process, even after a PID is reused


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (for logs, errors, saved configs)."""
    return _USERINFO.sub(lambda m: f"{m['head']}:***@", text)


def process_token() -> str:
    """Who this process is: host, PID and a random nonce (a forked child gets its own PID)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_NONCE}"


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
                return _without_fsync(RDBStorage(url, heartbeat_interval=10, grace_period=30))
        except (ImportError, ModuleNotFoundError) as err:
            raise ConfigError(mask_secrets(
                f"study.storage: a driver for {url.split(':', 1)[0]!r} is missing ({err})")) from None
        except Exception as err:  # sqlalchemy's errors: bad URL, unreachable server, schema race
            if _schema_race(err):
                time.sleep(0.5 * (attempt + 1))  # another worker is creating the tables right now
                continue
            raise ConfigError(mask_secrets(
                f"study.storage: cannot open {url!r}: {str(err).splitlines()[0]}")) from None
    raise ConfigError(mask_secrets(f"study.storage: {url!r}: the tables could not be created"))


def _without_fsync(storage: RDBStorage) -> RDBStorage:
    """SQLite without an fsync per commit (``PRAGMA synchronous=OFF``): Optuna commits once per
    suggested parameter, ~20 ms each on a busy disk (about a second per trial of a V3 space). A
    killed process still loses nothing committed; only an OS crash or power cut can, as with the
    journal file storage."""
    if storage.engine.dialect.name == "sqlite":
        event.listen(storage.engine, "connect",
                     lambda connection, _: connection.execute("PRAGMA synchronous=OFF"))
        storage.engine.dispose()  # pooled connections opened before the listener
    return storage


def _schema_race(err: Exception) -> bool:
    """Whether ``err`` says another process created the same tables or schema version first
    (SQLite: "already exists" / "UNIQUE constraint failed"; PostgreSQL: "duplicate key")."""
    text = str(err)
    return any(sign in text for sign in ("already exists", "duplicate key", "UNIQUE constraint failed"))


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


def open_study(cfg: StudyConfig, objective: Objective, url: str) -> optuna.Study:
    """Create the study, or load it when it exists (a rerun continues it), with this process's
    sampler (:func:`sampler_seed`)."""
    validate(cfg)
    storage = open_storage(url)
    pruner = make_pruner(cfg, objective)
    try:
        study = optuna.create_study(study_name=cfg.name, storage=storage, pruner=pruner,
                                    directions=objective.directions)
        study.set_user_attr(CREATOR_ATTR, process_token())
    except DuplicatedStudyError:  # an earlier run, or another worker, created it
        study = optuna.load_study(study_name=cfg.name, storage=storage, pruner=pruner)
    if [d for d in study.directions] != objective.directions:
        raise ConfigError(mask_secrets(
            f"study {cfg.name!r} in {url} was created for another objective mode; use a new study.name"))
    study.sampler = make_sampler(cfg, objective, seed=sampler_seed(cfg, study))
    return study


CREATOR_ATTR = "created_by"  # study user attr: the process token of the process that created it


def created_here(study: optuna.Study) -> bool:
    """Whether this process created ``study`` (exactly one process can: the storage refuses a second)."""
    return study.user_attrs.get(CREATOR_ATTR) == process_token()


def sampler_seed(cfg: StudyConfig, study: optuna.Study) -> int:
    """``study.seed`` for the process that created the study, so that one worker alone on a fresh
    study reproduces a seeded run exactly; for every other process (spawned workers, a second
    command on the same storage, a resume) a seed drawn from ``study.seed`` and the process token,
    different in every process. Recorded on each trial (``worker.sampler_seed``)."""
    if created_here(study):
        return cfg.seed
    digest = hashlib.sha256(f"{cfg.seed}:{process_token()}".encode()).hexdigest()
    return int(digest[:8], 16)


def validate(cfg: StudyConfig) -> None:
    """Raise :class:`ConfigError` naming the first bad field of ``cfg``."""
    if cfg.sampler not in SAMPLERS:
        raise ConfigError(f"study.sampler: {cfg.sampler!r} is not one of {', '.join(SAMPLERS)}")
    if cfg.pruner not in PRUNERS:
        raise ConfigError(f"study.pruner: {cfg.pruner!r} is not one of {', '.join(PRUNERS)}")
    if cfg.n_trials < 1:
        raise ConfigError(f"study.n_trials must be >= 1, got {cfg.n_trials}")
    if cfg.workers < 1:
        raise ConfigError(f"study.workers must be >= 1, got {cfg.workers}")
    if not cfg.name or any(c in cfg.name for c in "/\\ "):
        raise ConfigError(f"study.name must be a non-empty word without slashes or spaces, got {cfg.name!r}")


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    return state_counts(study.get_trials(deepcopy=False))


class StopWhenDone:
    """Whether the study holds ``n_trials`` finished (complete or pruned) trials, counting every
    worker's and earlier runs' trials, or ``max_failures`` failed ones. Checked before each trial
    starts, so the study ends with at most ``n_trials`` + the trials then in flight."""

    def __init__(self, n_trials: int, max_failures: int) -> None:
        self.n_trials = n_trials
        self.max_failures = max_failures

    def done(self, study: optuna.Study) -> bool:
        counts = count_states(study)
        finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        return finished >= self.n_trials or counts[TrialState.FAIL] >= self.max_failures


WORKER_ATTR = "worker"  # trial user attr: {"host", "pid", "sampler_seed"} of the process running it


def worker_attrs(seed: int) -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "sampler_seed": seed}


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is alive (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def dead_worker(trial: FrozenTrial) -> bool:
    """A RUNNING trial whose worker ran on this host and is gone."""
    worker = trial.user_attrs.get(WORKER_ATTR)
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False
    return not pid_alive(int(worker["pid"]))


def heartbeat_enabled(study: optuna.Study) -> bool:
    """Whether the study's storage records heartbeats (our RDB storages do; journal files cannot)."""
    interval = getattr(study._storage, "get_heartbeat_interval", None)  # RDB, also behind Optuna's cache
    return interval is not None and interval() is not None


def in_flight(study: optuna.Study) -> list[FrozenTrial]:
    """RUNNING trials that will end: their worker is alive on this host, or runs elsewhere on a
    storage whose heartbeats fail it once it dies. Trials without a recorded worker are left out."""
    heartbeat = heartbeat_enabled(study)
    here = socket.gethostname()
    alive = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if isinstance(worker, dict) and (pid_alive(int(worker["pid"])) if worker.get("host") == here
                                         else heartbeat):
            alive.append(trial)
    return alive


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of dead workers: on this host by their recorded PID (any storage;
    journal files have no heartbeat), elsewhere by Optuna's heartbeat (RDB storages). Returns
    the numbers of the trials failed."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    failed = []
    for trial in running:
        if dead_worker(trial):
            try:
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
                failed.append(trial.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another process failed (or finished) it first
    if heartbeat_enabled(study) and len(failed) < len(running):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        left = {t.number for t in running} - set(failed)
        failed += [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                   if t.number in left]
    return sorted(failed)
