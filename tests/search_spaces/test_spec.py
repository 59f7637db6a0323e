from __future__ import annotations

import dataclasses

import pytest

from search_spaces.errors import SpecError
from search_spaces.reference import reference_spec
from search_spaces.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec, make_divisible

GOOD = dict(kernel=3, exp=64, out=24, se=False, act="RE", stride=2)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("kernel", 4, r"kernel must be one of \{3, 5, 7\}, got 4"),
        ("kernel", 9, r"kernel must be one of \{3, 5, 7\}, got 9"),
        ("stride", 3, r"stride must be one of \{1, 2\}, got 3"),
        ("exp", 0, r"exp must be an integer >= 1, got 0"),
        ("out", -8, r"out must be an integer >= 1, got -8"),
        ("out", 24.5, r"out must be an integer >= 1, got 24.5"),
        ("exp", True, r"exp must be an integer >= 1, got True"),
        ("act", "relu", r"act must be one of \{RE, HS\}, got 'relu'"),
        ("se", "yes", r"se must be true or false, got 'yes'"),
    ],
)
def test_block_validation_names_field_and_allowed_values(field, value, message):
    with pytest.raises(SpecError, match=message):
        BlockSpec(**{**GOOD, field: value})


def test_stem_head_and_spec_validation():
    with pytest.raises(SpecError, match=r"stem: kernel must be one of"):
        StemSpec(kernel=2)
    with pytest.raises(SpecError, match=r"head: dropout must be in \[0, 1\)"):
        HeadSpec(dropout=1.5)
    with pytest.raises(SpecError, match=r"head: hidden must be an integer >= 1"):
        HeadSpec(hidden=0)
    with pytest.raises(SpecError, match=r"resolution must be an integer >= 32, got 16"):
        ArchSpec(blocks=(BlockSpec(**GOOD),), resolution=16)
    with pytest.raises(SpecError, match=r"at least one bneck block"):
        ArchSpec(blocks=())


def test_spec_is_frozen_and_hashable():
    spec = reference_spec("mobilenet_v3_small")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_classes = 10  # type: ignore[misc]
    assert hash(spec) == hash(reference_spec("mobilenet_v3_small"))
    assert len({spec, reference_spec("mobilenet_v3_small"), reference_spec("mobilenet_v3_large")}) == 2


@pytest.mark.parametrize("value", [8, 12, 16, 20, 36, 72.5, 184 * 0.75, 1000])
def test_make_divisible_is_multiple_of_8_and_within_10_percent(value):
    rounded = make_divisible(value)
    assert rounded % 8 == 0
    assert rounded >= 0.9 * value
    assert abs(rounded - value) <= 8


def test_layers_track_resolution_and_channels():
    spec = reference_spec("mobilenet_v3_large")
    layers = list(spec.layers())
    assert [layer.kind for layer in layers] == ["stem"] + ["block"] * 15 + ["head"]
    assert (layers[0].resolution, layers[0].in_channels) == (224, 3)
    assert (layers[1].resolution, layers[1].in_channels) == (112, 16)
    assert (layers[-1].resolution, layers[-1].in_channels) == (7, 160)
    assert len({layer.key for layer in layers}) == len(set(layers))  # keys identify layers


def test_layer_tokens_are_the_tokens_of_the_spec_string_and_key_its_last_field():
    spec = reference_spec("mobilenet_v3_small", width_mult=0.75).replace(num_classes=10)
    layers = list(spec.layers())
    assert str(spec).split()[1:] == [layer.token for layer in layers]  # after the 'in_...' token
    assert layers[-1].token.endswith("_d0.2_n10") and layers[2].token == "ir_k3_e56_c24_s2_re"
    assert layers[2].key == f"block:r{layers[2].resolution}:c{layers[2].in_channels}:{layers[2].token}"
