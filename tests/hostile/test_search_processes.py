"""Search across processes and careless command lines: every process seeds its sampler
differently, ``n_trials`` is exceeded by at most the trials in flight, dead workers' trials are
failed on resume, the files agree with what is reported, passwords in storage URLs never show,
unbalanced brackets are named."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from search import study as study_module
from search.cli import main
from search.dry_run import dry_components
from search.results import candidates, winner
from search.runner import SearchReport, run_search, write_results
from search.study import StudyConfig, fail_stale_trials, in_flight, open_storage, open_study
from search_spaces.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning"),  # ask/tell on SQLite
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
SECRET = "s3cr/et,pw"  # a "/" and a "," in it: the mask must not stop early
PG_URL = f"postgresql+psycopg2://nas:{SECRET}@127.0.0.1:1/nas"

WORKER = """
import sys
from functools import partial
import optuna
from search.dry_run import dry_components
from search.runner import run_search
from search.study import StudyConfig
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
run_search(partial(dry_components, sleep_s=0.03), StudyConfig(name=name, n_trials=n, pruner="none"), url,
           progress=False)
"""


def storages(tmp_path: Path) -> dict[str, str]:
    return {"journal": f"journal:///{tmp_path}/study.journal", "sqlite": f"sqlite:///{tmp_path}/study.db"}


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def running_trial(url: str, name: str, pid: int) -> int:
    """A trial left RUNNING by the worker ``pid`` on this host, as the runner records it."""
    study = open_study(StudyConfig(name=name), dry_components().objective, url)
    trial = study.ask()
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": pid, "sampler_seed": 0})
    return trial.number


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_processes_on_one_study_seed_differently_and_stop_at_n_trials(tmp_path, kind):
    url, n = storages(tmp_path)[kind], 8
    command = [sys.executable, "-c", WORKER, url, "two", str(n)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    processes = [subprocess.Popen(command, cwd=ROOT, text=True, **pipes) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()[-2000:]
    study = optuna.load_study(study_name="two", storage=open_storage(url))
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert n <= len(finished) <= n + 1  # at most the other process's trial in flight
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    seeds = {t.user_attrs["worker"]["pid"]: t.user_attrs["worker"]["sampler_seed"] for t in study.trials}
    assert len(seeds) == 2 and len(set(seeds.values())) == 2  # both worked, with their own seeds
    assert 0 in seeds.values()  # the process that created the study used study.seed
    specs = [t.user_attrs["spec"] for t in study.trials]
    assert len(set(specs)) == len(specs)  # no process proposed what the other one did
    assert sum(bool(t.user_attrs.get("seed_architecture")) for t in study.trials) == 1


def test_one_worker_on_a_fresh_study_reproduces_a_seeded_run(tmp_path):
    def run(name: str) -> list[optuna.trial.FrozenTrial]:
        cfg = StudyConfig(name=name, n_trials=5, seed=3, pruner="none")
        url = f"sqlite:///{tmp_path}/{name}.db"
        return run_search(partial(dry_components), cfg, url, progress=False).trials

    first, second = run("a"), run("b")
    assert [t.user_attrs["spec"] for t in first] == [t.user_attrs["spec"] for t in second]
    assert {t.user_attrs["worker"]["sampler_seed"] for t in first} == {3}
    assert {t.user_attrs["worker"]["pid"] for t in first} == {os.getpid()}


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_trial_of_a_dead_worker_is_failed_on_resume(tmp_path, capsys, kind):
    url = storages(tmp_path)[kind]
    stale = running_trial(url, "stale", dead_pid())
    alive = running_trial(url, "stale", os.getpid())
    study = optuna.load_study(study_name="stale", storage=open_storage(url))
    assert fail_stale_trials(study) == [stale]  # a live worker's trial is left alone
    assert study.trials[alive].state == TrialState.RUNNING
    study.tell(alive, state=TrialState.FAIL)  # (it would be waited for)

    stale = running_trial(url, "stale", dead_pid())
    study = run_search(partial(dry_components), StudyConfig(name="stale", n_trials=3), url, progress=False)
    assert study.trials[stale].state == TrialState.FAIL
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert f"marked 1 trial(s) of dead workers as failed (left running: {stale})" in capsys.readouterr().out


def test_rdb_heartbeats_fail_the_trial_of_a_dead_worker_on_another_host(tmp_path):
    storage = RDBStorage(f"sqlite:///{tmp_path}/hb.db", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask()
    trial.set_user_attr("worker", {"host": "elsewhere", "pid": 1, "sampler_seed": 0})
    storage.record_heartbeat(trial._trial_id)
    assert [t.number for t in in_flight(study)] == [0] and fail_stale_trials(study) == []  # waited for
    time.sleep(2.2)  # no heartbeat for longer than the grace period
    assert fail_stale_trials(study) == [0] and study.trials[0].state == TrialState.FAIL


def test_files_and_report_come_from_the_final_study(tmp_path):
    """Another worker's trial, still running when this process has done its share, is waited
    for: the winner reported, written and refined is the study's final winner."""
    url, n = f"sqlite:///{tmp_path}/study.db", 4
    components = dry_components()
    other = open_study(StudyConfig(name="race"), components.objective, f"sqlite:///{tmp_path}/study.db")
    trial = other.ask()
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "sampler_seed": 1})
    spec = components.space.seed
    accuracy, latency = 0.99, 1e-3  # better than anything the surrogate gives
    attrs = {"spec": str(spec), "accuracy": accuracy, "latency_ms": latency, "madds": 1, "params": 1}

    def finish_late() -> None:
        while len(other.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < n:
            time.sleep(0.05)
        time.sleep(0.6)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        other.tell(trial, components.objective.values(accuracy, latency))

    late = threading.Thread(target=finish_late)
    late.start()
    study = run_search(partial(dry_components), StudyConfig(name="race", n_trials=n, pruner="none"), url,
                       components=components, progress=False)
    report: SearchReport = write_results(study, components, tmp_path, with_references=False)
    late.join()
    final = winner(candidates(optuna.load_study(study_name="race", storage=url), components.objective))
    assert report.winner == final and final.number == trial.number
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["winner"]["number"] == trial.number
    assert (tmp_path / "winner.txt").read_text().strip() == str(spec)


def test_storage_password_never_shows_in_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        open_storage(PG_URL)
    assert SECRET not in str(err.value) and "nas:***@127.0.0.1:1/nas" in str(err.value)
    for bad in (f"study.storage={PG_URL}?options=[x", f"study.storage={PG_URL}"):  # brackets; "," unquoted
        result = subprocess.run([sys.executable, "-m", "search", "search", bad], capture_output=True,
                                text=True, timeout=120, cwd=ROOT)
        assert result.returncode == 2 and "nas:***@127.0.0.1:1/nas" in result.stderr
        assert SECRET not in result.stdout + result.stderr


def test_storage_password_is_masked_in_hydra_saved_configs(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "search", "search", f"study.storage='{PG_URL}'",
                             "study.sampler=cma", f"hydra.run.dir={run}"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "study.sampler: 'cma' is not one of" in result.stderr
    saved = {path.name: path.read_text() for path in (run / ".hydra").glob("*.yaml")}
    assert set(saved) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    for name, text in saved.items():
        assert SECRET not in text, name
        assert "nas:***@127.0.0.1:1/nas" in text, name
    assert SECRET not in result.stdout + result.stderr
    assert not [path for path in run.rglob("*") if path.is_file() and SECRET in path.read_text()]


@pytest.mark.parametrize("override, expected", [
    ("space.widths=[0.5,0.75",
     "space.widths=[0.5,0.75: unbalanced brackets ('[' opened, no ']'); e.g. space.widths=[0.5,0.75]"),
    ("space.widths=0.5,0.75]",
     "space.widths=0.5,0.75]: unbalanced brackets (']' without '['); e.g. space.widths=[0.5,0.75]"),
    ("arch='mobilenet_v3_small", "arch='mobilenet_v3_small: unbalanced quotes (' opened, not closed); "
                                 "e.g. arch='mobilenet_v3_small'"),
])
def test_unbalanced_brackets_are_named(override, expected, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["search", override])
    assert caught.value.code == 2 and capsys.readouterr().err.strip() == f"error: {expected}"


def test_a_schema_race_with_another_process_is_retried(tmp_path, monkeypatch):
    """Two processes creating one SQLite study: the loser sees SQLite's "UNIQUE constraint failed"
    on Alembic's version row, and must retry rather than give up."""
    real, calls = study_module.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                               "alembic_version.version_num")
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "RDBStorage", racing)
    monkeypatch.setattr(study_module.time, "sleep", lambda seconds: None)
    assert isinstance(study_module.open_storage(f"sqlite:///{tmp_path}/s.db"), real)
    assert len(calls) == 2
