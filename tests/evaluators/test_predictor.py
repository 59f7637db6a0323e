"""The accuracy predictor: encoding of specs, fit, held-out agreement."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators.accuracy.predictor import AccuracyPredictor, PredictorSettings
from search_spaces.encoding import SpecEncoding
from search_spaces.errors import SpecError
from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace, sample_specs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_space() -> SearchSpace:
    return SearchSpace(reference_spec("mobilenet_v3_small", num_classes=10, resolution=32))


def test_encoding_is_one_hot_per_choice_and_zero_for_absent_blocks(small_space):
    encoding = SpecEncoding(small_space)
    seed = small_space.seed
    vector = encoding.encode(seed)
    assert vector.shape == (encoding.size,)
    present = sum(2 + 4 * len(stage.seed_blocks) for stage in small_space.stages)
    assert vector.sum() == present  # one 1 per choice made; the absent (deeper) slots stay zero
    block = seed.blocks[0]
    other = seed.with_blocks([block.replace(kernel=7 if block.kernel != 7 else 5), *seed.blocks[1:]])
    assert np.abs(encoding.encode(other) - vector).sum() == 2  # one kernel bit off, another on


def test_encoding_refuses_a_spec_outside_the_space(small_space):
    outside = small_space.seed.replace(num_classes=11)
    with pytest.raises(SpecError, match="num_classes"):
        SpecEncoding(small_space).encode(outside)


def _additive_score(encoding: SpecEncoding, specs) -> np.ndarray:
    weights = np.random.default_rng(3).normal(size=encoding.size)
    return encoding.encode_many(specs) @ weights


def test_predictor_ranks_held_out_specs_of_a_learnable_score(small_space):
    encoding = SpecEncoding(small_space)
    specs = sample_specs(small_space, 160, seed=1)
    scores = _additive_score(encoding, specs)
    settings = PredictorSettings(hidden=64, layers=2, epochs=300, lr=3e-3)
    predictor = AccuracyPredictor(small_space, settings).fit(specs[:120], scores[:120])
    report = predictor.report(specs[120:], scores[120:])
    assert report.count == 40
    assert report.spearman > 0.9 and report.kendall > 0.7
    assert report.rmse < 0.5 * scores[120:].std()
    again = AccuracyPredictor(small_space, settings).fit(specs[:120], scores[:120])
    np.testing.assert_array_equal(again.predict(specs[120:]), predictor.predict(specs[120:]))


def test_predictor_needs_fitting_and_finite_scores(small_space):
    specs = sample_specs(small_space, 3, seed=0)
    with pytest.raises(RuntimeError, match="fit"):
        AccuracyPredictor(small_space).predict(specs)
    with pytest.raises(ValueError, match="finite"):
        AccuracyPredictor(small_space).fit(specs, [0.1, float("nan"), 0.3])
