"""Accuracy from a supernet: sub-network scores (proxy=supernet) and a predictor of them (proxy=predictor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluators.accuracy.predictor import PredictorSettings
from evaluators.accuracy.weight_sharing import PredictorEvaluator, SupernetEvaluator, check_same_space
from evaluators.supernet import SuperNet, score_subnet
from search_spaces.errors import ConfigError, SpecError
from search_spaces.space import SearchSpace, sample_specs

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def net(tiny_space) -> SuperNet:
    torch.manual_seed(0)
    return SuperNet(tiny_space)


def test_supernet_evaluator_gives_the_sub_networks_score_and_refuses_other_specs(net, tiny_data, tiny_space):
    evaluator = SupernetEvaluator(net, tiny_data, calib_batches=2, batch_size=32)
    spec = sample_specs(tiny_space, 1, seed=5)[0]
    reported = []
    result = evaluator.evaluate(spec, report=lambda step, value, last: reported.append((value, last)))
    expected = score_subnet(net, spec, tiny_data, calib_batches=2, batch_size=32)
    assert result.ok and result.accuracy == expected.top1
    assert reported == [(expected.top1, True)]  # the one value is final: never pruned
    with pytest.raises(SpecError, match="not an architecture of the supernet's space"):
        evaluator.evaluate(tiny_space.seed.replace(num_classes=5))
    with pytest.raises(ConfigError, match="proxy=train"):
        evaluator.evaluate_model(torch.nn.Linear(2, 2))


def test_predictor_evaluator_reports_held_out_agreement_and_predicts_without_scoring(
        net, tiny_data, tiny_space):
    settings = PredictorSettings(hidden=32, layers=2, epochs=50)
    evaluator = PredictorEvaluator(net, tiny_data, samples=10, calib_batches=1, batch_size=48,
                                   settings=settings)
    assert evaluator.held_out.count == 2  # 20% of the samples, not used to fit
    spec = sample_specs(tiny_space, 1, seed=99)[0]
    result = evaluator.evaluate(spec)
    assert result.accuracy == pytest.approx(float(evaluator.predictor.predict([spec])[0]))
    assert result.details["held_out_rmse"] == evaluator.held_out.rmse
    with pytest.raises(ConfigError, match="predictor_samples"):
        PredictorEvaluator(net, tiny_data, samples=3)


def test_the_predictors_top_candidates_are_confirmed_on_the_supernet(net, tiny_data, tiny_space):
    settings = PredictorSettings(hidden=32, layers=2, epochs=50)
    evaluator = PredictorEvaluator(net, tiny_data, samples=10, calib_batches=1, batch_size=48, confirm=0.5,
                                   settings=settings)
    specs = sample_specs(tiny_space, 8, seed=7)
    results = [evaluator.evaluate(spec) for spec in specs]
    predicted = [r.details["predicted"] for r in results]
    assert predicted == pytest.approx(list(evaluator.predictor.predict(specs)))
    for i, (spec, result) in enumerate(zip(specs, results, strict=True)):
        top_half = predicted[i] >= np.quantile(predicted[: i + 1], 0.5)  # in the top half so far
        assert result.details["confirmed"] == top_half
        expected = score_subnet(net, spec, tiny_data, calib_batches=1, batch_size=48).top1 if top_half \
            else predicted[i]
        assert result.accuracy == pytest.approx(expected)
    assert 0 < sum(r.details["confirmed"] for r in results) < len(results)
    with pytest.raises(ConfigError, match="predictor_confirm"):
        PredictorEvaluator(net, tiny_data, samples=10, confirm=1.5)


def test_a_search_space_other_than_the_supernets_is_named(tiny_space):
    other = SearchSpace(tiny_space.seed, widths=(1.0,), expansions=(0.5, 1.0))
    with pytest.raises(ConfigError, match=r"widths \[1.0\] vs \[0.75, 1.0\]"):
        check_same_space(tiny_space, other, "proxy.supernet")
    check_same_space(tiny_space, SearchSpace(tiny_space.seed, widths=(0.75, 1.0), expansions=(0.5, 1.0)), "x")
