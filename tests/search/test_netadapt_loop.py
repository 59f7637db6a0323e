"""The NetAdapt loop: stops at the target, picks by its metric, resumes after an interruption."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from search.netadapt import IterationRecord, NetAdaptConfig, netadapt
from search_spaces.builder import build_model
from search_spaces.errors import ConfigError, DataError, RunFailure
from search_spaces.reference import reference_spec
from search_spaces.spec import ArchSpec

SEED = reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32)
INPUT = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")


def channel_latency(spec: ArchSpec) -> float:
    """A fake latency in ms: grows with every width."""
    return (spec.stem.channels + sum(b.exp * 2 + b.out for b in spec.blocks)) / 100


def noisy_fine_tune(model, steps):
    """Deterministic given the torch RNG (the loop seeds it): adds small noise to the weights."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3 * steps)
    return model


def fake_accuracy(model) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(INPUT).softmax(dim=1)[:, 0].mean())


def seed_model():
    torch.manual_seed(0)
    return build_model(SEED)


def refine(run_dir=None, fine_tune=noisy_fine_tune, latency_ms=channel_latency, evaluate=fake_accuracy,
           **overrides):
    config = NetAdaptConfig(**{**dict(target_ratio=0.85, delta_ratio=0.03, short_steps=2, final_steps=5),
                               **overrides})
    return netadapt(SEED, seed_model(), config, latency_ms=latency_ms, fine_tune=fine_tune,
                    evaluate=evaluate, run_dir=run_dir, progress=False)


def test_loop_stops_at_the_target_and_picks_the_best_score(tmp_path):
    result = refine(tmp_path)
    assert result.target_ms == pytest.approx(0.85 * channel_latency(SEED))
    assert result.delta_ms == pytest.approx(0.03 * channel_latency(SEED))
    assert result.status == "target_met" and result.latency_ms <= result.target_ms
    assert result.latency_ms == channel_latency(result.spec)
    assert result.iterations == len(result.history) - 1 >= 2
    assert result.model.spec == result.spec
    for before, record in zip(result.history, result.history[1:]):
        assert before.latency_ms - record.latency_ms >= result.delta_ms
        scores = [c.score for c in record.candidates]
        best = record.candidates[scores.index(max(scores))]
        assert record.chosen == best.label and record.accuracy == best.accuracy
        assert record.spec == best.proposal.spec and record.latency_ms == best.proposal.latency_after_ms
        for c in record.candidates:
            cut = c.proposal.latency_before_ms - c.proposal.latency_after_ms
            assert c.score == pytest.approx((c.accuracy - before.accuracy) / cut)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert tuple(IterationRecord.from_json(r) for r in saved) == result.history
    assert saved[1]["candidates"][0]["label"] == result.history[1].candidates[0].label  # the file's keys
    # the history keeps the seed first and every later spec is the chosen candidate's
    assert result.history[0].spec == SEED and result.history[-1].spec == result.spec == result.model.spec


def test_accuracy_metric_picks_the_most_accurate_candidate():
    result = refine(metric="accuracy", max_iterations=1)
    (record,) = result.history[1:]
    accuracies = [c.accuracy for c in record.candidates]
    assert record.accuracy == max(accuracies) and record.candidates[0].score == accuracies[0]


def test_loop_stops_without_proposals_or_after_max_iterations():
    stuck = refine(latency_ms=lambda spec: 1.0, target_ratio=None, target_ms=0.5, delta_ratio=0.01)
    assert stuck.status == "no_proposal" and stuck.iterations == 0 and stuck.latency_ms == 1.0
    capped = refine(max_iterations=1, target_ratio=0.01)
    assert capped.status == "max_iterations" and capped.iterations == 1


def test_interrupted_refinement_resumes_to_the_same_result(tmp_path):
    reference = refine(tmp_path / "whole")
    assert reference.iterations >= 3
    calls = {"n": 0}
    crash_at = len(reference.history[1].candidates) + 2

    def crashing_fine_tune(model, steps):
        calls["n"] += 1
        if calls["n"] == crash_at:  # dies inside iteration 2
            raise RuntimeError("killed")
        return noisy_fine_tune(model, steps)

    with pytest.raises(RuntimeError, match="killed"):
        refine(tmp_path / "cut", fine_tune=crashing_fine_tune)
    saved = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert len(saved) == 2  # the seed and iteration 1 survived

    counted = {"n": 0}

    def counting_fine_tune(model, steps):
        counted["n"] += 1
        return noisy_fine_tune(model, steps)

    measured = []

    def recording_latency(spec):
        measured.append(str(spec))
        return channel_latency(spec)

    resumed = refine(tmp_path / "cut", fine_tune=counting_fine_tune, latency_ms=recording_latency)
    # recorded latencies are reused, not measured again (measurements may be noisy)
    assert not {r["spec"] for r in saved} & set(measured)
    assert resumed.spec == reference.spec and resumed.status == reference.status
    assert resumed.history == reference.history and resumed.accuracy == reference.accuracy
    for (k, a), (_, b) in zip(reference.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    # iteration 1 is not redone: only later candidates and the final network are fine-tuned
    assert counted["n"] == sum(len(r.candidates) for r in reference.history[2:]) + 1

    again = refine(tmp_path / "cut", fine_tune=counting_fine_tune)  # finished: returned as is
    assert again.spec == reference.spec
    assert counted["n"] == sum(len(r.candidates) for r in reference.history[2:]) + 1


def test_resume_refuses_other_settings_and_bad_arguments(tmp_path):
    refine(tmp_path, max_iterations=1)
    with pytest.raises(DataError, match="holds a refinement with other settings"):
        refine(tmp_path, metric="accuracy")
    with pytest.raises(ConfigError, match="netadapt.metric: 'top5' is not one of acc_per_latency, accuracy"):
        refine(metric="top5")
    with pytest.raises(ConfigError, match="netadapt.target_ms: must be > 0"):
        refine(target_ms=0, target_ratio=None)
    with pytest.raises(ConfigError, match="netadapt: set target_ms"):
        refine(target_ratio=None)
    with pytest.raises(ConfigError, match="netadapt.short_steps: must be an integer >= 0, got 1.5"):
        replace(NetAdaptConfig(), short_steps=1.5)  # a copy is checked too


def test_absolute_target_wins_over_the_ratio():
    result = refine(target_ms=0.9 * channel_latency(SEED), target_ratio=0.2, max_iterations=1)
    assert result.target_ms == pytest.approx(0.9 * channel_latency(SEED))


def test_a_checkpoint_with_a_malformed_history_is_one_data_error(tmp_path):
    refine(tmp_path, max_iterations=1)
    state = torch.load(tmp_path / "netadapt_final.pt", weights_only=True)
    state["history"][1]["candidates"][0].pop("spec")
    torch.save(state, tmp_path / "netadapt_final.pt")
    with pytest.raises(DataError, match="netadapt_final.pt: not a NetAdapt history"):
        refine(tmp_path, max_iterations=1)


def test_diverged_fine_tuning_fails_the_run_and_saves_no_result(tmp_path):
    """Every proposal diverging (scored NaN) or a diverged final fine-tune is a failed run."""
    with pytest.raises(RunFailure, match=r"iteration 1: the fine-tuning of every proposal diverged"):
        refine(tmp_path / "all", evaluate=lambda model: math.nan)
    final = [False]

    def fine_tune(model, steps):
        final[0] = steps == 5  # final_steps
        return noisy_fine_tune(model, steps)

    with pytest.raises(RunFailure, match=r"final fine-tuning diverged"):
        refine(tmp_path / "final", fine_tune=fine_tune, evaluate=lambda model: math.nan if final[0] else 0.5)
    assert not (tmp_path / "final" / "netadapt_final.pt").exists()
