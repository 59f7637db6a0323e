from __future__ import annotations

import pytest
from optuna.study import StudyDirection

from search.objectives import Objective, ObjectiveConfig
from search_spaces.errors import ConfigError


def test_soft_reward_is_mnasnet_formula():
    objective = Objective(mode="soft", target_ms=10.0, w=-0.07)
    assert objective.values(0.75, 10.0) == pytest.approx(0.75)
    assert objective.values(0.75, 20.0) == pytest.approx(0.75 * 2**-0.07)
    assert objective.values(0.75, 5.0) == pytest.approx(0.75 * 0.5**-0.07)
    # w = -0.15 (Small) punishes latency more than -0.07 (Large)
    assert Objective("soft", 10.0, -0.15).values(0.7, 20.0) < Objective("soft", 10.0, -0.07).values(0.7, 20.0)
    assert objective.directions == [StudyDirection.MAXIMIZE]


def test_hard_budget_returns_accuracy_and_a_constraint():
    objective = Objective(mode="hard", target_ms=10.0)
    assert objective.values(0.8, 12.0) == 0.8  # no silent penalty in the value ...
    assert objective.constraint(12.0) == pytest.approx(2.0)  # ... infeasible through the constraint
    assert objective.constraint(9.0) == pytest.approx(-1.0)
    assert objective.feasible(10.0) and not objective.feasible(10.01)
    assert objective.reward(0.8, 9.0) == 0.8
    assert objective.reward(0.8, 20.0) == pytest.approx(0.4)  # MnasNet's hard reward, w = -1


def test_pareto_has_two_directions():
    objective = Objective(mode="pareto", target_ms=10.0)
    assert objective.values(0.8, 12.0) == (0.8, 12.0)
    assert objective.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert objective.multi_objective


def test_target_from_ratio_or_absolute():
    assert Objective.from_config(ObjectiveConfig(target_ratio=0.5), seed_latency_ms=8.0).target_ms == 4.0
    absolute = ObjectiveConfig(target_ms=3.0, target_ratio=0.5)
    assert Objective.from_config(absolute, seed_latency_ms=8.0).target_ms == 3.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="fast", target_ms=1.0), r"objective.mode: 'fast' is not one of soft, hard, pareto"),
        (dict(mode="soft", target_ms=0.0), r"objective.target_ms must be a positive number, got 0.0"),
        (dict(mode="soft", target_ms=1.0, w=0.2), r"objective.w must be <= 0"),
    ],
)
def test_bad_objectives_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Objective(**kwargs)
