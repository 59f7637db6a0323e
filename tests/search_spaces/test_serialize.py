from __future__ import annotations

import json
import os
import stat

import pytest

from search_spaces import serialize
from search_spaces.blockstring import from_string, to_string
from search_spaces.errors import SpecError
from search_spaces.reference import REFERENCES, reference_spec
from search_spaces.space import sample_specs


def roundtrips(spec, tmp_path):
    assert serialize.from_dict(json.loads(serialize.to_json(spec))) == spec
    assert serialize.from_dict(__import__("yaml").safe_load(serialize.to_yaml(spec))) == spec
    assert from_string(to_string(spec)) == spec
    for suffix in (".json", ".yaml", ".txt"):
        path = serialize.save_spec(spec, tmp_path / f"spec{suffix}")
        assert serialize.load_spec_file(path) == spec
        assert serialize.load_spec(str(path)) == spec


@pytest.mark.parametrize("name", REFERENCES)
@pytest.mark.parametrize("width", [0.75, 1.0, 1.25])
def test_reference_specs_roundtrip(name, width, tmp_path):
    roundtrips(reference_spec(name, width_mult=width), tmp_path)


def test_sampled_specs_roundtrip(space, tmp_path):
    for spec in sample_specs(space, 25, seed=1):
        roundtrips(spec, tmp_path)


def test_string_form_is_one_token_per_layer():
    spec = reference_spec("mobilenet_v3_small")
    tokens = str(spec).split()
    assert len(tokens) == 2 + len(spec.blocks) + 1
    assert tokens[2] == "ir_k3_e16_c16_s2_se_re"
    assert tokens[-1] == "head_c576_h1024_hs_d0.2_n1000"


def test_string_defaults_for_in_stem_and_head():
    spec = from_string("ir_k3_e16_c16_s2_se_re ir_k5_e72_c24_s2_hs")
    assert spec.resolution == 224 and spec.num_classes == 1000
    assert spec.stem.channels == 16 and spec.head.channels == 960


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"spec string is empty"),
        ("ir_k3_e16_c16_s2_re conv_k3", r"token 2 'conv_k3': unknown kind 'conv'"),
        ("ir_k3_e16_c16_re", r"token 1 'ir_k3_e16_c16_re': missing field\(s\) s"),
        ("ir_k3_e16_c16_s2", r"missing activation; end the token with _re or _hs"),
        ("ir_k4_e16_c16_s2_re", r"token 1 'ir_k4_e16_c16_s2_re': .*kernel must be one of \{3, 5, 7\}, got 4"),
        ("ir_k3_e16_c16_s3_re", r"stride must be one of \{1, 2\}, got 3"),
        ("ir_k3_e16.5_c16_s2_re", r"field 'e' must be an integer, got 16.5"),
        ("ir_k3_ex16_c16_s2_re", r"cannot read field 'ex16'"),
        ("ir_k3_k5_e16_c16_s2_re", r"field 'k' given twice"),
        ("ir_k3_e16_c16_s2_re_hs", r"activation given twice"),
        ("in_r16 ir_k3_e16_c16_s2_re", r"resolution must be an integer >= 32, got 16"),
        ("stem_c16 stem_c16 ir_k3_e16_c16_s2_re", r"only one 'stem' token"),
        ("in_r224 stem_c16", r"no 'ir_...' block tokens"),
    ],
)
def test_malformed_strings_are_refused_with_a_clear_message(text, message):
    with pytest.raises(SpecError, match=message):
        from_string(text)


def test_malformed_files_are_refused_naming_file_and_field(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(SpecError, match=r"bad.json: not valid JSON"):
        serialize.load_spec_file(bad_json)

    data = serialize.to_dict(reference_spec("mobilenet_v3_small"))
    data["blocks"][3]["kernel"] = 4
    wrong_kernel = tmp_path / "kernel.yaml"
    wrong_kernel.write_text(__import__("yaml").safe_dump(data))
    with pytest.raises(SpecError,
                       match=r"kernel.yaml: blocks\[3\]: kernel must be one of \{3, 5, 7\}, got 4"):
        serialize.load_spec_file(wrong_kernel)

    data = serialize.to_dict(reference_spec("mobilenet_v3_small"))
    data["blocks"][0]["expansion"] = 2
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(data))
    with pytest.raises(SpecError, match=r"blocks\[0\]: unknown field\(s\) expansion; allowed: "):
        serialize.load_spec_file(unknown)

    with pytest.raises(SpecError, match=r"missing.json: spec file not found"):
        serialize.load_spec_file(tmp_path / "missing.json")
    with pytest.raises(SpecError, match=r"unknown spec file type '.toml'"):
        serialize.save_spec(reference_spec("mobilenet_v3_small"), tmp_path / "spec.toml")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    serialize.save_spec(reference_spec("mobilenet_v3_large"), tmp_path / "a.json")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_load_spec_refuses_unknown_source():
    with pytest.raises(SpecError, match=r"arch 'mobilenet_v9' is not a reference"):
        serialize.load_spec("mobilenet_v9")


def test_atomic_write_leaves_files_readable_even_when_the_writer_recreates_them(tmp_path):
    def recreate_private(tmp: str) -> None:  # as safetensors does
        os.unlink(tmp)
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, b"weights")
        os.close(fd)

    umask = os.umask(0o022)
    try:
        path = serialize.atomic_write(tmp_path / "weights.bin", recreate_private)
    finally:
        os.umask(umask)
    assert path.read_bytes() == b"weights"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
