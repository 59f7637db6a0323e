from __future__ import annotations

import math

import optuna
import pytest

from search_spaces.config import SpaceConfig, build_space
from search_spaces.errors import SpecError
from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace, sample_specs, split_stages


def test_seed_is_a_member_of_its_space(space):
    params = space.params_of(space.seed)
    assert space.spec_from_params(params) == space.seed
    # the seed's own choices: delta 0, width 1.0, expansion 1.0
    assert all(v == 1.0 for k, v in params.items() if k.endswith((".width", ".exp")))
    assert [params[f"s{s.index}.depth"] for s in space.stages] == [len(s.seed_blocks) for s in space.stages]


def test_seed_can_be_enqueued_as_first_trial(space):
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial(space.params_of(space.seed))
    trial = study.ask()
    assert space.sample(trial) == space.seed


def test_sampled_specs_map_back_to_their_parameters(space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    for _ in range(40):
        trial = study.ask()
        spec = space.sample(trial)
        params = space.params_of(spec)
        assert space.spec_from_params(params) == spec
        study.tell(trial, 0.0)


def test_same_seed_same_specs(space):
    assert sample_specs(space, 10, seed=7) == sample_specs(space, 10, seed=7)
    assert sample_specs(space, 10, seed=7) != sample_specs(space, 10, seed=8)


def test_sampled_specs_are_distinct_and_avoid_the_excluded(space):
    excluded = sample_specs(space, 5, seed=1)
    specs = sample_specs(space, 20, seed=1, exclude=excluded)
    assert len(set(specs)) == 20
    assert not set(specs) & set(excluded)


def test_sampling_more_specs_than_the_space_holds_is_refused(space):
    class OneSpec:  # a space holding only its seed
        def sample(self, trial):
            return space.seed

    assert sample_specs(OneSpec(), 1) == [space.seed]
    with pytest.raises(SpecError, match="fewer than 2 distinct specs"):
        sample_specs(OneSpec(), 2)


def test_v3_stages():
    large = SearchSpace(reference_spec("mobilenet_v3_large"))
    assert [len(s.seed_blocks) for s in large.stages] == [1, 2, 3, 4, 2, 3]
    assert [s.depths for s in large.stages][:2] == [(1, 2), (1, 2, 3)]
    small = SearchSpace(reference_spec("mobilenet_v3_small"))
    assert [len(s.seed_blocks) for s in small.stages] == [1, 2, 3, 2, 3]


def test_size_counts_parameter_assignments():
    space = SearchSpace(reference_spec("mobilenet_v3_small"), depth_deltas=(0,), widths=(1.0,),
                        kernels=(3, 5), expansions=(1.0,), se=(False, True), acts=("RE", "HS"))
    # one depth per stage, 8 choices per block, 11 blocks
    assert space.size() == 8**11
    assert space.log10_size() == pytest.approx(11 * math.log10(8))


def test_spec_outside_space_is_reported_clearly():
    space = SearchSpace(reference_spec("mobilenet_v3_small", num_classes=10, resolution=32))
    blocks = list(space.seed.blocks)
    blocks[3] = blocks[3].replace(exp=100)
    with pytest.raises(SpecError, match=r"s2.b0.exp: 100 channels, reachable \[48, 72, 96, 144\]"):
        space.params_of(space.seed.with_blocks(blocks))
    with pytest.raises(SpecError, match=r"num_classes differs from the space's seed"):
        space.params_of(space.seed.replace(num_classes=3))
    with pytest.raises(SpecError):
        space.params_of(space.seed.with_blocks(space.seed.blocks[:2]))
    assert not space.contains(space.seed.with_blocks(blocks))


def test_layers_cover_every_sampled_spec(space):
    layers = set(space.layers())
    for spec in sample_specs(space, 15, seed=11):
        assert set(spec.layers()) <= layers


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(kernels=(3, 4)), r"space.kernels: \[4\] not allowed; choose from \[3, 5, 7\]"),
        (dict(widths=(0.5, 0.75)), r"space.widths: must contain 1.0 so that the seed is in the space"),
        (dict(depth_deltas=(1,)), r"space.depth_deltas: must contain 0"),
        (dict(acts=("RE",)), r"space.acts: must contain the seed's \['HS'\]"),
        (dict(expansions=()), r"space.expansions: needs at least one choice"),
        (dict(se=(True, True)), r"space.se: choices must be distinct"),
    ],
)
def test_bad_space_configs_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        SearchSpace(reference_spec("mobilenet_v3_large"), **changes)


def test_build_space_from_config():
    space = build_space(SpaceConfig(seed="mobilenet_v3_small", width_mult=0.75), num_classes=10,
                        resolution=32)
    assert space.seed == reference_spec("mobilenet_v3_small", width_mult=0.75, num_classes=10, resolution=32)
    with pytest.raises(SpecError, match=r"width_mult applies to reference seeds"):
        build_space(SpaceConfig(seed="ir_k3_e16_c16_s2_re", width_mult=0.5), num_classes=10, resolution=32)


def test_split_stages_starts_a_stage_at_stride_or_width_change():
    spec = reference_spec("mobilenet_v3_small")
    assert [len(s) for s in split_stages(spec.blocks)] == [1, 2, 3, 2, 3]
