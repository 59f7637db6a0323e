from __future__ import annotations

import math

import optuna
import pytest
import torch

from evaluators.accuracy import (
    AccuracyEvaluator,
    NaswotEvaluator,
    ProxyConfig,
    ProxyTrainEvaluator,
    SynflowEvaluator,
    accuracy_evaluator,
    factory,
)
from evaluators.data import DataConfig
from evaluators.training import TrainConfig
from search_spaces.blockstring import from_string
from search_spaces.errors import ConfigError, MobilenasError

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"
WIDER = "in_r32_c3 stem_k3_c16_s2_hs ir_k5_e48_c24_s2_se_hs ir_k3_e64_c24_s1_hs head_c64_h96_hs_d0.2_n4"
DATA = DataConfig(num_classes=4, train_size=96, test_size=16, val_size=32)
TRAINER = TrainConfig(batch_size=16, optimizer="sgd", lr=0.05, progress=False)


@pytest.fixture(scope="module")
def proxy() -> ProxyTrainEvaluator:
    evaluator = accuracy_evaluator(ProxyConfig(steps=8, reports=4, train_subset=None, val_subset=24), DATA,
                                   TRAINER, seed=1)
    assert isinstance(evaluator, ProxyTrainEvaluator)
    return evaluator


def test_proxy_training_reports_intermediate_values_and_is_deterministic(proxy):
    assert isinstance(proxy, AccuracyEvaluator) and (proxy.name, proxy.unit) == ("proxy_train", "top-1")
    reports: list[tuple[int, float, bool]] = []
    result = proxy.evaluate(from_string(TINY), lambda step, value, last: reports.append((step, value, last)))
    assert result.status == "completed" and 0 <= result.accuracy <= 1 and result.seconds > 0
    assert [(s, last) for s, _, last in reports] == [(2, False), (4, False), (6, False), (8, True)]
    assert reports[-1][1] == result.accuracy
    assert len(proxy.data.val) == 24  # the proxy's subset
    assert proxy.evaluate(from_string(TINY)).accuracy == result.accuracy


def test_pruning_propagates_through_an_optuna_trial(proxy):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    calls: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        def report(step: int, value: float, last: bool) -> None:
            calls.append(step)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return proxy.evaluate(from_string(TINY), report).accuracy

    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED and calls == [2]
    assert study.trials[0].intermediate_values.keys() == {2}


def test_diverged_proxy_run_scores_zero(proxy):
    class NaNModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 4)

        def forward(self, x):
            return self.linear(x.mean(dim=(2, 3))) * math.nan

    result = proxy.evaluate_model(NaNModel())
    assert result.status == "diverged" and result.accuracy == 0.0 and not result.ok
    assert "loss is nan" in result.details["message"]


@pytest.mark.parametrize("kind, cls", [("naswot", NaswotEvaluator), ("synflow", SynflowEvaluator)])
def test_training_free_scores_rank_networks(kind, cls):
    evaluator = accuracy_evaluator(ProxyConfig(kind=kind, batch_size=16), DATA, TRAINER, seed=0)
    assert isinstance(evaluator, cls) and evaluator.unit == "score" and evaluator.name == kind
    small, wide = (evaluator.evaluate(from_string(s)) for s in (TINY, WIDER))
    assert small.ok and wide.ok and math.isfinite(small.accuracy)
    assert evaluator.evaluate(from_string(TINY)).accuracy == small.accuracy  # same seed, same score
    assert wide.accuracy > small.accuracy  # more units / parameters score higher on both


def test_evaluator_loads_data_once_and_checks_the_spec(monkeypatch):
    loads = []
    real = factory.load_dataset
    monkeypatch.setattr(factory, "load_dataset", lambda cfg: loads.append(cfg) or real(cfg))
    evaluator = accuracy_evaluator(ProxyConfig(kind="naswot", batch_size=8, resolution=40), DATA, TRAINER)
    evaluator.evaluate(from_string(TINY))
    evaluator.evaluate(from_string(WIDER))
    assert len(loads) == 1 and loads[0].resolution == 40 and loads[0].train_subset == 2000
    with pytest.raises(MobilenasError, match=r"spec has 10 classes .* the data 4 .* num_classes=4"):
        evaluator.evaluate(from_string(TINY.replace("_n4", "_n10")))


def test_bad_proxy_options_name_the_field():
    with pytest.raises(ConfigError, match=r"proxy.kind: 'zen' is unknown; allowed: train, naswot, synflow"):
        accuracy_evaluator(ProxyConfig(kind="zen"), DATA, TRAINER)
    with pytest.raises(ConfigError, match=r"proxy.steps / proxy.epochs: the train proxy needs a budget"):
        accuracy_evaluator(ProxyConfig(steps=None, epochs=None), DATA, TRAINER)


@pytest.mark.parametrize("kind", ["train", "naswot", "synflow"])
def test_proxy_presets_are_valid(kind):
    from search.schema import preset

    cfg = preset("proxy", kind, ProxyConfig, "proxy")  # only ProxyConfig's keys, of its types
    cfg.validate()
    assert cfg.kind == kind
