"""Huge specs are refused at validation, with one line naming the limit, before any allocation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from search_spaces import from_string, load_spec_file, reference_spec
from search_spaces.builder import build_model, count_params
from search_spaces.errors import SpecError
from search_spaces.limits import SpecLimits, active_limits, spec_limits
from search_spaces.space import sample_specs

BLOCK = "ir_k3_e16_c16_s1_re"


@pytest.mark.parametrize(
    "text, message",
    [
        ("ir_k3_e16_c1000000000_s1_re", r"out must be <= 8,192 \(limits.max_channels\), got 1,000,000,000"),
        ("ir_k3_e16_c" + "9" * 400 + "_s1_re", r"field 'c' must be an integer, got inf"),
        (" ".join([BLOCK] * 65), r"number of blocks must be <= 64 \(limits.max_blocks\), got 65"),
        (f"in_r100000 {BLOCK}", r"resolution must be <= 1,024 \(limits.max_resolution\)"),
        (f"in_c100 {BLOCK}", r"in_channels must be <= 64 \(limits.max_in_channels\)"),
        (f"{BLOCK} head_n1000000", r"num_classes must be <= 100,000 \(limits.max_classes\)"),
        ("ir_k3_e8000_c8000_s1_re " * 5, r"over limits.max_params"),
        (f"in_r1024 stem_k3_c4096_s1_hs {BLOCK}", r"largest feature map .* over limits.max_activation"),
        ("x" * 200_000, r"200,000 characters; at most 100,000"),
    ],
)
def test_huge_spec_strings_are_refused_with_the_limit_named(text, message):
    with pytest.raises(SpecError, match=message):
        from_string(text)


def test_long_tokens_are_shortened_in_messages():
    with pytest.raises(SpecError) as caught:
        from_string("ir_k3_e16_c" + "9" * 400 + "_s1_re")
    assert len(str(caught.value)) < 200


def test_size_estimate_is_the_built_networks_parameter_count(space):
    specs = [space.seed, *sample_specs(space, 12, seed=3)]
    specs.append(reference_spec("mobilenet_v3_large", width_mult=1.25, num_classes=7, resolution=64))
    for spec in specs:
        assert spec.param_count() == count_params(build_model(spec))


def test_limits_are_configurable_and_restored():
    big = f"in_r1600 {BLOCK}"
    with spec_limits(SpecLimits(max_resolution=2048, max_activation=2**30)):
        assert from_string(big).resolution == 1600
    assert active_limits() == SpecLimits()
    with pytest.raises(SpecError, match="max_resolution"):
        from_string(big)
    with spec_limits(SpecLimits(max_channels=512)):
        with pytest.raises(SpecError, match=r"must be <= 512 \(limits.max_channels\), got 576"):
            reference_spec("mobilenet_v3_small")
    with pytest.raises(SpecError, match=r"limits.max_blocks must be an integer >= 1, got 0"):
        SpecLimits(max_blocks=0)


def test_oversized_spec_files_are_refused_unread(tmp_path):
    path = tmp_path / "spec.txt"
    with path.open("wb") as handle:
        handle.truncate(2 << 20)  # sparse: 2 MiB of zeros
    with pytest.raises(SpecError, match=r"too large for a spec file"):
        load_spec_file(path)


def test_the_command_line_refuses_a_huge_spec_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "search", "show", "arch=ir_k3_e16_c1000000000_s1_re"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: token 1 'ir_k3_e16_c1000000000_s1_re': block: out must be <= 8,192 "
        "(limits.max_channels), got 1,000,000,000"
    ]


def test_the_command_line_sets_the_limits_from_its_config(tmp_path):
    arch = "arch=in_r1600 ir_k3_e16_c16_s2_re head_c16"
    refused = subprocess.run([sys.executable, "-m", "search", "show", arch, "format=string"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert refused.returncode == 2 and "(limits.max_resolution)" in refused.stderr
    allowed = subprocess.run([sys.executable, "-m", "search", "show", arch, "format=string",
                              "limits.max_resolution=2048"], capture_output=True, text=True, cwd=tmp_path,
                             timeout=120)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("in_r1600_c3 ")
