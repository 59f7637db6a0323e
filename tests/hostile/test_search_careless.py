"""Careless search settings and results: an impossible target is warned before the search,
``data.train_subset`` caps what the search trains on, fully trained candidates are never pruned."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

from evaluators.accuracy import ProxyConfig, ProxyTrainEvaluator, accuracy_evaluator
from evaluators.data import DataConfig
from evaluators.latency import LatencyConfig
from evaluators.training import TrainConfig
from search.candidate import CandidateObjective
from search.components import SearchSettings, build_components, extreme_spec, latency_range
from search.dry_run import MaddsLatency, SurrogateResult, dry_components
from search.objectives import Objective, ObjectiveConfig
from search.pipeline import warn_unreachable_target
from search_spaces.blockstring import from_string
from search_spaces.space import sample_specs

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"
DATA = DataConfig(num_classes=4, train_size=96, test_size=16, val_size=32)


# --- 1. an impossible target is warned up front ------------------------------------------------
def test_smallest_and_largest_specs_bound_the_latency_of_the_space(space):
    latency = MaddsLatency()
    smallest, largest = extreme_spec(space, smallest=True), extreme_spec(space, smallest=False)
    assert space.contains(smallest) and space.contains(largest)
    sampled = [latency(spec) for spec in sample_specs(space, 6, seed=3)]
    assert latency(smallest) < min(sampled) and max(sampled) < latency(largest)
    assert latency(smallest) < latency(space.seed) < latency(largest)


@pytest.mark.parametrize("mode, outcome", [("hard", "every trial will be infeasible"),
                                           ("soft", "every candidate will miss it"),
                                           ("pareto", "no front member will meet it")])
def test_target_below_the_smallest_architecture_is_one_warning_line(capsys, mode, outcome):
    components = dry_components(mode=mode)
    components.objective = replace(components.objective, target_ms=1e-9)
    fastest, _ = latency_range(components)
    seed_ms = components.latency(components.space.seed)
    warn_unreachable_target(components, seed_ms)
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("warning: objective target 1e-09 ms is out of reach")
    assert f"smallest architecture takes {fastest:.3f} ms" in err and f"the seed {seed_ms:.3f} ms" in err
    assert outcome in err and "objective.target_ms" in err


def test_target_above_the_largest_architecture_gets_a_note_and_a_reachable_one_nothing(capsys):
    components = dry_components(mode="hard")
    fastest, slowest = latency_range(components)
    seed_ms = components.latency(components.space.seed)
    warn_unreachable_target(components, seed_ms)  # 0.8 x the seed: reachable, not trivial
    assert capsys.readouterr() == ("", "")
    components.objective = replace(components.objective, target_ms=2 * slowest)
    warn_unreachable_target(components, seed_ms)
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("note: objective target") and "does not constrain" in out
    assert Objective(mode="soft", target_ms=fastest).reach_note(fastest_ms=fastest, slowest_ms=slowest,
                                                                seed_ms=seed_ms) is None


@pytest.mark.slow
def test_search_command_warns_of_an_impossible_target_before_it_starts(tmp_path):
    args = [sys.executable, "-m", "search", "search", "objective.target_ms=1e-9", "data.train_size=200",
            "data.test_size=50", "proxy.steps=2", "proxy.reports=1", "proxy.train_subset=64",
            "proxy.val_subset=32",
            "trainer.batch_size=32", "space.depth_deltas=[0]", "space.widths=[1.0]", "space.expansions=[1.0]",
            "space.se=[false,true]", "space.acts=[RE,HS]", "latency.runs=3", "latency.warmup=1",
            "latency.auto_fit=false", "study.n_trials=2", "study.workers=1", "results.reference_points=false",
            "refine=false", "export=false", f"latency.tables_dir={tmp_path / 'tables'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(args, check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: objective target")]
    assert len(warnings) == 1 and "1e-09 ms is out of reach" in warnings[0]
    assert "search:" not in result.stderr.split(warnings[0])[0]  # before the search's progress bar


# --- 2. data.train_subset is honoured by the search --------------------------------------------
@pytest.mark.parametrize("data_subset, proxy_subset, expected", [(40, 2000, 40), (50, 20, 20), (None, 30, 30),
                                                                 (24, None, 24)])
def test_search_trains_on_at_most_data_train_subset_images(tmp_path, data_subset, proxy_subset, expected):
    settings = SearchSettings(
        data=replace(DATA, train_subset=data_subset, val_subset=10),
        proxy=ProxyConfig(kind="train", steps=2, reports=1, train_subset=proxy_subset, val_subset=500),
        trainer=TrainConfig(batch_size=8, progress=False),
        latency=LatencyConfig(warmup=1, runs=3, tables_dir=str(tmp_path), auto_fit=False),
        objective=ObjectiveConfig(mode="hard", target_ms=1.0), reference_points=False,
    )
    components = build_components(settings)
    assert len(components.data.train) == expected and len(components.data.val) == 10
    assert components.accuracy.data is components.data  # the proxies train on the same splits as NetAdapt


# --- 3. a trial that spent its whole proxy budget is never pruned -------------------------------
class ScriptedAccuracy:
    """Reports a fixed curve per call: the second candidate leads until its last step."""

    name, unit = "scripted", "top-1"
    curves = ([0.5, 0.6, 0.9], [0.7, 0.8, 0.1])

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, spec, report=None) -> SurrogateResult:
        curve = self.curves[self.calls]
        self.calls += 1
        for step, value in enumerate(curve, start=1):
            if report is not None:
                report(step, value, step == len(curve))
        return SurrogateResult(curve[-1], 0.0)


def test_fully_trained_candidate_below_the_median_completes():
    components = dry_components()
    objective = CandidateObjective(components.space, components.objective, ScriptedAccuracy(),
                                   components.latency)
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    for smallest in (False, True):  # two distinct specs
        study.enqueue_trial(components.space.params_of(extreme_spec(components.space, smallest=smallest)))
    study.optimize(objective, n_trials=2)
    first, second = study.trials
    assert first.state == TrialState.COMPLETE
    assert second.state == TrialState.COMPLETE and second.user_attrs["accuracy"] == pytest.approx(0.1)
    assert second.intermediate_values == {1: 0.7, 2: 0.8, 3: 0.1}  # the final value is still reported


def test_proxy_marks_only_its_final_report_as_last_and_reports_at_most_reports_times():
    proxy = accuracy_evaluator(ProxyConfig(steps=10, reports=4, train_subset=None, val_subset=16), DATA,
                               TrainConfig(batch_size=16, optimizer="sgd", lr=0.05, progress=False), seed=1)
    assert isinstance(proxy, ProxyTrainEvaluator)
    reports: list[tuple[int, bool]] = []
    result = proxy.evaluate(from_string(TINY), lambda step, value, last: reports.append((step, last)))
    assert result.status == "completed"
    assert reports == [(3, False), (6, False), (9, False), (10, True)]
