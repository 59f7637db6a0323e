"""The search machinery on analytic evaluators (search.dry_run): storage, resume after SIGKILL,
parallel workers, failures, determinism."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial

import optuna
import pytest
from optuna.trial import TrialState

from search.dry_run import dry_components
from search.runner import run_search, write_results
from search.study import StudyConfig, open_storage
from search_spaces.errors import ConfigError

WORKER_SCRIPT = """
import sys
from functools import partial
import optuna
from search.dry_run import dry_components
from search.runner import run_search
from search.study import StudyConfig
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name = sys.argv[1], sys.argv[2]
n, workers, sleep = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
run_search(partial(dry_components, sleep_s=sleep),
           StudyConfig(name=name, n_trials=n, workers=workers, pruner="none"), url, progress=False)
"""


def launch(url: str, name: str, n: int, workers: int = 1, sleep: float = 0.0) -> subprocess.Popen:
    args = [url, name, str(n), str(workers), str(sleep)]
    return subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def assert_no_loss_no_duplicates(study: optuna.Study, n_trials: int, workers: int) -> None:
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # nothing lost, nothing numbered twice
    done = finished(study)
    assert n_trials <= len(done) <= n_trials + workers - 1
    for trial in done:
        assert trial.user_attrs["spec"] and "latency_ms" in trial.user_attrs  # every result recorded
    assert len({t._trial_id for t in trials}) == len(trials)


def test_results_are_recorded_on_trials_and_seed_comes_first(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    study = run_search(partial(dry_components), StudyConfig(name="rec", n_trials=6), url, progress=False)
    first = study.trials[0]
    components = dry_components()
    assert first.user_attrs["spec"] == str(components.space.seed)
    assert first.user_attrs["seed_architecture"] is True
    for trial in finished(study):
        attrs = trial.user_attrs
        expected = {"spec", "params", "madds", "latency_ms", "latency_protocol", "accuracy", "reward"}
        assert expected <= set(attrs)
        assert attrs["latency_protocol"]["device"] == "analytic"
    report = write_results(study, components, tmp_path, with_references=False)
    assert (tmp_path / "winner.json").exists() and (tmp_path / "accuracy_vs_latency.png").exists()
    assert report.winner is not None and report.winner.reward == max(c.reward for c in report.found)


def test_rerun_continues_to_the_requested_number_of_trials(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    run_search(partial(dry_components), StudyConfig(name="resume", n_trials=4), url, progress=False)
    study = run_search(partial(dry_components), StudyConfig(name="resume", n_trials=7), url, progress=False)
    assert len(finished(study)) == 7
    assert sum(bool(t.user_attrs.get("seed_architecture")) for t in study.trials) == 1  # not enqueued twice


def test_resume_after_sigkill_loses_no_completed_trial(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    process = launch(url, "killed", n=12, sleep=0.15)
    deadline = time.time() + 60
    before: list[tuple[int, tuple]] = []
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            done = finished(load(url, "killed"))
        except KeyError:  # study not created yet
            continue
        if len(done) >= 3:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = [(t.number, t.values, t.params) for t in finished(load(url, "killed"))]
    assert 3 <= len(before) < 12

    rerun = launch(url, "killed", n=12)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read()
    study = load(url, "killed")
    after = {t.number: (t.number, t.values, t.params) for t in finished(study)}
    assert all(after[record[0]] == record for record in before)
    assert len(after) == 12
    # the trial in flight at the kill is the only one not finished
    assert len(study.trials) - len(after) <= 1


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    study = run_search(partial(dry_components, fail_every=3),
                       StudyConfig(name="fails", n_trials=10, pruner="none"), url, progress=False)
    states = [t.state for t in study.trials]
    assert TrialState.FAIL in states
    assert len(finished(study)) == 10
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs["status"] == "diverged" for t in failed)


def test_same_seed_gives_the_same_sequence_of_specs(tmp_path):
    def specs(run: str, seed: int) -> list[str]:
        study = run_search(partial(dry_components),
                           StudyConfig(name=run, n_trials=8, seed=seed, pruner="none"),
                           f"sqlite:///{tmp_path}/{run}.db", progress=False)
        return [t.user_attrs["spec"] for t in study.trials]

    assert specs("a", 3) == specs("b", 3)
    assert specs("a2", 3)[1:] != specs("c", 4)[1:]


def test_hard_mode_uses_constraints_and_picks_a_feasible_winner(tmp_path):
    factory = partial(dry_components, mode="hard", target_ratio=0.9)
    study = run_search(factory, StudyConfig(name="hard", n_trials=12), f"sqlite:///{tmp_path}/s.db",
                       progress=False)
    for trial in finished(study):
        if trial.state == TrialState.COMPLETE:
            margin = trial.user_attrs["latency_ms"] - factory().objective.target_ms
            assert trial.user_attrs["constraint"] == pytest.approx(margin)
            # recorded with Trial.set_constraint, where Optuna's samplers read it
            assert trial.system_attrs["constraints:constraint"] == pytest.approx(margin)
    report = write_results(study, factory(), tmp_path, with_references=False)
    if any(c.feasible for c in report.found):
        assert report.winner.feasible


def test_pareto_mode_returns_a_front(tmp_path):
    factory = partial(dry_components, mode="pareto")
    study = run_search(factory, StudyConfig(name="mo", n_trials=8), f"sqlite:///{tmp_path}/s.db",
                       progress=False)
    report = write_results(study, factory(), tmp_path, with_references=False)
    front = report.front
    assert front
    assert all(a.latency_ms <= b.latency_ms and a.accuracy < b.accuracy for a, b in zip(front, front[1:]))
    for c in report.found:  # nothing off the front dominates a front member
        assert not any(c.accuracy > f.accuracy and c.latency_ms < f.latency_ms for f in front)


def test_two_workers_on_journal_storage(tmp_path):
    url = f"journal:///{tmp_path}/study.journal"
    process = launch(url, "journal", n=10, workers=2, sleep=0.05)
    assert process.wait(timeout=180) == 0, process.stderr.read()
    study = load(url, "journal")
    assert_no_loss_no_duplicates(study, 10, workers=2)
    assert len({t.user_attrs["worker_pid"] for t in finished(study)}) == 2


@pytest.mark.postgres
def test_two_workers_on_postgresql():
    base = os.environ.get("MOBILENAS_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("MOBILENAS_TEST_POSTGRES_URL is not set (.ci/run starts a server)")
    name = f"pg-{os.getpid()}-{int(time.time())}"
    # two independent worker commands, as on two machines, against one server
    processes = [launch(base, name, n=10, workers=1, sleep=0.05) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=180) == 0, process.stderr.read()
    study = load(base, name)
    assert_no_loss_no_duplicates(study, 10, workers=2)
    assert len({t.user_attrs["worker_pid"] for t in finished(study)}) == 2
    assert sum(bool(t.user_attrs.get("seed_architecture")) for t in study.trials) == 1


def test_bad_storage_and_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"study.storage: cannot open 'nosuchdb://x'"):
        open_storage("nosuchdb://x")
    with pytest.raises(ConfigError, match=r"study.n_trials must be >= 1, got 0"):
        run_search(partial(dry_components), StudyConfig(n_trials=0), f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(ConfigError,
                       match=r"study.sampler: 'cma' is not one of tpe, random, nsga2, auto"):
        run_search(partial(dry_components), StudyConfig(sampler="cma"), f"sqlite:///{tmp_path}/s.db")


def test_sqlite_storage_commits_without_an_fsync_each(tmp_path):
    # Optuna commits once per suggested parameter; an fsync each costs ~1 s per trial of a V3 space
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 0  # OFF
