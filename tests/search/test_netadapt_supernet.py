"""NetAdapt from supernet weights: proposals are sub-networks of the space, scored on the supernet
(no fine-tuning), the final network's weights extracted from it; resume and ``mobilenas refine``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import pytest
import torch
from safetensors.torch import load_file

from evaluators.accuracy.weight_sharing import SupernetEvaluator
from evaluators.data.arrays import head
from evaluators.supernet import SuperNet, save_supernet, score_subnet
from search.cli import main
from search.components import extreme_spec
from search.netadapt import NetAdaptConfig, netadapt
from search.netadapt.history import history_from_json, history_to_json
from search.netadapt.refine import top1
from search.netadapt.subnets import SUBNET_KINDS, propose_subnets
from search.netadapt.supernet import SupernetScorer
from search_spaces.builder import build_model
from search_spaces.errors import ConfigError, DataError, SpecError
from search_spaces.reference import reference_spec
from search_spaces.serialize import load_spec_file
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def fake_latency(spec: ArchSpec) -> float:
    """A fast stand-in for latency (ms) that every smaller choice lowers: depth, width, expansion,
    kernel, SE."""
    return sum(b.exp * (b.kernel**2 + b.out + (8 if b.se else 0)) + b.out for b in spec.blocks) / 1e4


@pytest.fixture(scope="module")
def supernet(tiny_space) -> SuperNet:
    torch.manual_seed(0)
    return SuperNet(tiny_space).eval()


def scorer_of(net: SuperNet, data, calib_batches: int = 1) -> SupernetScorer:
    return SupernetScorer(SupernetEvaluator(net, data, calib_batches=calib_batches), "tiny-supernet")


def config(**overrides) -> NetAdaptConfig:
    values = {"target_ratio": 0.5, "delta_ratio": 0.1, "short_steps": 7, "final_steps": 0,
              "pretrain_steps": 9, "supernet": "tiny-supernet", **overrides}
    return NetAdaptConfig(**values)


def test_proposals_are_architectures_of_the_space_and_each_cuts_delta():
    space = SearchSpace(reference_spec("mobilenet_v3_small", num_classes=10, resolution=32))
    spec = extreme_spec(space, smallest=False)
    before = fake_latency(spec)
    delta = 0.002 * before
    proposals = propose_subnets(space, spec, fake_latency, delta)
    assert {p.kind for p in proposals} == set(SUBNET_KINDS)
    for p in proposals:
        assert space.contains(p.spec) and p.spec != spec, p.label
        assert p.latency_before_ms == before and p.latency_after_ms == fake_latency(p.spec)
        assert p.latency_cut_ms >= delta, p.label
        assert p.new_channels < p.old_channels, p.label
    # the biggest smaller choice that cuts delta: expansion 1.5 -> 1.0 of the last block, kernel 7 -> 5
    last, stage = len(spec.blocks) - 1, space.stages[-1]
    exp = next(p for p in proposals if p.kind == "exp" and p.blocks == (last,))
    assert exp.new_channels == space.block_exp(stage.template(max(stage.depths) - 1), 1.0)
    assert {(p.old_channels, p.new_channels) for p in proposals if p.kind == "kernel"} == {(7, 5)}
    for p in (p for p in proposals if p.kind == "depth"):  # the stage's last blocks dropped
        assert len(p.blocks) == p.old_channels - p.new_channels and len(p.spec.blocks) == len(spec.blocks) - 1
    # a bigger cut per iteration: some options need two steps down (kernel 7 -> 3), some cannot make it
    big = 0.02 * before
    bigger = propose_subnets(space, spec, fake_latency, big)
    assert 0 < len(bigger) < len(proposals)
    assert all(space.contains(p.spec) and p.latency_cut_ms >= big for p in bigger)
    assert propose_subnets(space, extreme_spec(space, smallest=True), fake_latency, delta) == []
    with pytest.raises(SpecError):
        propose_subnets(space, reference_spec("mobilenet_v3_large", num_classes=10, resolution=32),
                        fake_latency, delta)


def test_proposals_are_scored_on_the_supernet_and_only_the_final_network_is_fine_tuned(supernet, tiny_data):
    calls: list[int] = []

    def fine_tune(model, steps):
        calls.append(steps)
        return model

    scorer = scorer_of(supernet, tiny_data)
    seed = supernet.largest()
    result = netadapt(seed, None, config(), latency_ms=fake_latency, fine_tune=fine_tune,
                      evaluate=lambda model: top1(model, tiny_data), scorer=scorer, progress=False)
    assert calls == [] and result.iterations >= 2 and result.status == "target_met"
    for record in result.history:
        assert supernet.space.contains(record.spec)
        assert record.accuracy == score_subnet(supernet, record.spec, tiny_data, calib_batches=1).top1
        for candidate in record.candidates:
            figure = score_subnet(supernet, candidate.proposal.spec, tiny_data, calib_batches=1).top1
            assert candidate.accuracy == figure
    # no final fine-tune: the network holds the supernet's weights and re-estimated statistics
    assert result.accuracy == pytest.approx(result.history[-1].accuracy)
    assert result.model.spec == result.spec

    tuned = netadapt(seed, None, config(final_steps=3), latency_ms=fake_latency, fine_tune=fine_tune,
                     evaluate=lambda model: top1(model, tiny_data), scorer=scorer, progress=False)
    assert calls == [3] and tuned.spec == result.spec  # the final fine-tune only

    with pytest.raises(ConfigError, match="netadapt.supernet: the seed .* is not an architecture"):
        netadapt(reference_spec("mobilenet_v3_small", num_classes=4, resolution=32), None, config(),
                 latency_ms=fake_latency, fine_tune=fine_tune, evaluate=top1, scorer=scorer)


@dataclass(frozen=True)
class Interrupted(SupernetScorer):
    """Stops the run (as a kill would) at the ``kill_at``-th score."""

    kill_at: int = 0
    calls: list[ArchSpec] = field(default_factory=list)

    def score(self, spec):
        self.calls.append(spec)
        if len(self.calls) == self.kill_at:
            raise KeyboardInterrupt
        return super().score(spec)


def test_an_interrupted_refinement_resumes_to_the_uninterrupted_result(supernet, tiny_data, tmp_path):
    seed = supernet.largest()
    common = {"latency_ms": fake_latency, "fine_tune": lambda model, steps: model,
              "evaluate": lambda model: top1(model, tiny_data), "progress": False}
    whole = netadapt(seed, None, config(), run_dir=tmp_path / "whole", scorer=scorer_of(supernet, tiny_data),
                     **common)
    first = len(whole.history[1].candidates)
    # the seed, iteration 1, then killed inside iteration 2
    killed = Interrupted(SupernetEvaluator(supernet, tiny_data, calib_batches=1), "tiny-supernet",
                         kill_at=1 + first + 2)
    with pytest.raises(KeyboardInterrupt):
        netadapt(seed, None, config(), run_dir=tmp_path / "run", scorer=killed, **common)
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(saved) == 2
    resumed = netadapt(seed, None, config(), run_dir=tmp_path / "run", scorer=scorer_of(supernet, tiny_data),
                       **common)
    assert [r.to_json() for r in resumed.history] == [r.to_json() for r in whole.history]
    assert resumed.spec == whole.spec and resumed.accuracy == whole.accuracy
    with pytest.raises(DataError, match="holds a refinement with other settings"):
        netadapt(seed, None, config(), run_dir=tmp_path / "run", scorer=scorer_of(supernet, tiny_data, 2),
                 **common)
    fewer = replace(tiny_data, val=head(tiny_data.val, 32))  # scores on other validation images
    with pytest.raises(DataError, match="holds a refinement with other settings"):
        netadapt(seed, None, config(), run_dir=tmp_path / "run", scorer=scorer_of(supernet, fewer), **common)


def test_refine_command_from_a_tiny_supernet_meets_its_target(tiny_space, tiny_data_config, tmp_path, capsys):
    torch.manual_seed(0)
    supernet_dir = tmp_path / "supernet"
    save_supernet(supernet_dir, SuperNet(tiny_space), record={"data": asdict(tiny_data_config)})
    run_dir = tmp_path / "run"
    data = [f"data.{key}={value}" for key, value in asdict(tiny_data_config).items()
            if key in ("num_classes", "train_size", "test_size", "val_size")]
    args = ["refine", f"arch={tiny_space.seed}", f"netadapt.supernet={supernet_dir}",
            "netadapt.target_ratio=0.8",
            "netadapt.delta_ratio=0.05", "netadapt.final_steps=2", "trainer.batch_size=16", "progress=false",
            "trainer.progress=false", *data, "latency.warmup=1", "latency.runs=3", "latency.auto_fit=false",
            f"latency.tables_dir={tmp_path / 'tables'}", f"hydra.run.dir={run_dir}"]
    main(args)
    assert "NetAdapt target_met" in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["latency_ms"] <= summary["target_ms"] <= 0.8 * summary["seed_latency_ms"] + 1e-9
    assert summary["provenance"]["scorer"] == f"supernet:{supernet_dir}"
    assert summary["budget"]["final_steps"] == 2
    history = json.loads((run_dir / "history.json").read_text())
    # how the accuracies were measured is a fact of the run: in the record's provenance only
    assert len(history) >= 2 and not any("scorer" in record for record in history)
    with_scorer = [{**record, "scorer": "supernet"} for record in history]  # as the first version wrote
    assert history_to_json(history_from_json(with_scorer, "old")) == history
    winner = load_spec_file(run_dir / "winner.json")
    assert tiny_space.contains(winner) and winner != tiny_space.seed
    build_model(winner).load_state_dict(load_file(str(run_dir / "weights.safetensors")), strict=True)

    bad = [a for a in args if not a.startswith(("netadapt.supernet=", "hydra.run.dir="))]
    with pytest.raises(SystemExit) as exit_info:
        main([*bad, f"netadapt.supernet={tmp_path / 'missing'}", f"hydra.run.dir={tmp_path / 'bad'}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"error: netadapt.supernet: {tmp_path / 'missing'}: supernet run dir not found" in error

    # refine's data must be the supernet's (conf/refine.yaml's default is data=synthetic): refused before
    # anything is scored, naming what differs
    other = [a for a in args if a != "hydra.run.dir=" + str(run_dir)]
    with pytest.raises(SystemExit) as exit_info:
        main([*other, "data.seed=3", "data.augment=false", f"hydra.run.dir={tmp_path / 'other'}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"error: netadapt.supernet: {supernet_dir} was trained on other data (data.seed=3 "
                     "(supernet: 0)); refine on the data the supernet was trained on")
    assert not (tmp_path / "other" / "history.json").exists()
