"""Export round trips (PyTorch, TorchScript, ONNX), model card, checks and clear errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnxruntime
import pytest
import torch

from evaluators.cost import count_cost
from search import export_formats
from search.export import ExportOptions, export_model, export_run, load_exported, materialize
from search_spaces.blockstring import from_string
from search_spaces.builder import build_model
from search_spaces.errors import ExportError, RunFailure
from search_spaces.printout import format_layers
from search_spaces.serialize import load_spec_file

# Stem, a block without expansion conv (exp == in) with SE and residual, a stride-2 block, an SE block.
TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e8_c8_s1_se_re ir_k5_e32_c16_s2_hs ir_k3_e48_c16_s1_se_hs " \
       "head_c32_h64_hs_d0.2_n10"
METADATA = {
    "latency_ms": 1.25,
    "protocol": {"device": "test-cpu", "threads": 1, "batch": 1, "statistic": "median"},
    "top1": 0.715,
    "data": {"name": "synthetic", "resolution": 32},
    "budget": {"epochs": 3},
    "provenance": {"study": "unit-test", "trial": 7, "netadapt_iterations": 2},
}


def trained_like(spec, seed: int = 1) -> torch.nn.Module:
    """A network whose weights and BN statistics are far from initialization."""
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.train()
    for _ in range(3):  # move running stats and num_batches_tracked
        model(torch.randn(4, 3, spec.resolution, spec.resolution))
    return model.eval()


@pytest.fixture(scope="module")
def spec():
    return from_string(TINY)


@pytest.fixture(scope="module")
def exported(spec, tmp_path_factory):
    model = trained_like(spec)
    result = export_model(spec, model, tmp_path_factory.mktemp("exp") / "tiny", metadata=METADATA)
    return model, result


def inputs(spec, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution,
                       generator=torch.Generator().manual_seed(5))


def test_load_exported_is_exact_including_buffers(spec, exported):
    model, result = exported
    loaded_spec, loaded = load_exported(result.out_dir)
    assert loaded_spec == spec
    assert not loaded.training
    for key, value in model.state_dict().items():  # BN running stats and num_batches_tracked too
        assert torch.equal(loaded.state_dict()[key], value), key
    assert int(loaded.state_dict()["stem.1.num_batches_tracked"]) == 3
    x = inputs(spec)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_reloads_with_identical_outputs(spec, exported):
    model, result = exported
    scripted = torch.jit.load(str(result.path("model.torchscript.pt")))
    x = inputs(spec)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))


def test_onnx_runs_in_onnxruntime_with_any_batch(spec, exported):
    model, result = exported
    session = onnxruntime.InferenceSession(str(result.path("model.onnx")), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = inputs(spec, batch)
        (logits,) = session.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4, rtol=0)
    assert result.checks.onnx is not None and result.checks.onnx.opset >= 17
    assert result.checks.onnx.max_abs_diff <= 1e-4


@pytest.mark.parametrize("name", ["spec.json", "spec.yaml", "spec.txt"])
def test_spec_files_round_trip(spec, exported, name):
    assert load_spec_file(exported[1].path(name)) == spec


def test_model_card_has_table_costs_latency_accuracy_provenance(spec, exported):
    card = exported[1].path("MODEL_CARD.md").read_text()
    for row in format_layers(spec, markdown=True).splitlines():
        assert row in card
    assert f"params: {count_cost(spec).params:,}" in card
    assert "1.250 ms" in card and "device: test-cpu; threads: 1" in card
    assert "top-1 71.50%" in card and "data: name: synthetic" in card and "budget: epochs: 3" in card
    assert "trial: 7" in card and str(spec) in card
    assert "trained weights" in card and "untrained" not in card


def test_export_json_is_machine_readable(spec, exported):
    _, result = exported
    manifest = json.loads(result.path("export.json").read_text())
    assert manifest["spec"] == str(spec)
    assert manifest["metadata"]["provenance"]["trial"] == 7
    assert manifest["cost"]["params"] == count_cost(spec).params
    checks = manifest["checks"]
    assert checks["torchscript_max_abs_diff"] == 0.0
    assert checks["tolerance"] == pytest.approx(1e-4 * checks["max_abs_logit"])  # rtol 1e-4, atol 0
    assert checks == result.checks.to_json() and checks["onnx_opset"] == result.checks.onnx.opset
    assert set(manifest["files"]) == {"spec.json", "spec.yaml", "spec.txt", "weights.safetensors",
                                      "model.torchscript.pt", "model.onnx"}


def test_exported_files_are_readable_like_any_other_file(exported):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    out = exported[1].out_dir
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert "weights.safetensors" in modes and set(modes.values()) == {0o666 & ~umask}


def test_untrained_export_is_seeded_and_says_so(spec, tmp_path):
    a = export_model(spec, None, tmp_path / "a", onnx=False, torchscript=False)
    b = export_model(spec, None, tmp_path / "b", onnx=False, torchscript=False)
    assert a.files["weights.safetensors"] == b.files["weights.safetensors"]
    card = a.path("MODEL_CARD.md").read_text()
    assert "untrained (weights from initialization)" in card
    assert "## Latency\n\n- not measured" in card
    assert json.loads(a.path("export.json").read_text())["trained"] is False
    assert not a.path("model.onnx").exists()


def test_metadata_objects_become_plain_json(spec, tmp_path):
    @dataclasses.dataclass
    class Protocol:
        device: str = "cpu"
        threads: int = 1

    meta = {"latency_ms": np.float32(2.5), "protocol": Protocol(), "where": tmp_path}
    result = export_model(spec, None, tmp_path / "j", metadata=meta, onnx=False, torchscript=False)
    saved = json.loads(result.path("export.json").read_text())["metadata"]
    assert saved["latency_ms"] == 2.5 and saved["protocol"] == {"device": "cpu", "threads": 1}
    assert saved["where"] == str(tmp_path)
    assert "- 2.500 ms\n- protocol: device: cpu; threads: 1" in result.path("MODEL_CARD.md").read_text()


def test_existing_directory_needs_overwrite(spec, tmp_path):
    export_model(spec, None, tmp_path / "x", onnx=False, torchscript=False)
    with pytest.raises(ExportError, match="already exists; choose another out= or pass overwrite=true"):
        export_model(spec, None, tmp_path / "x", onnx=False, torchscript=False)
    result = export_run(spec, trained_like(spec), tmp_path / "x", {"provenance": "refine"},
                        ExportOptions(onnx=False, torchscript=False))  # runs replace their earlier export
    assert json.loads(result.path("export.json").read_text())["trained"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no temp dirs left


def test_failed_check_raises_and_leaves_nothing(spec, tmp_path, monkeypatch):
    real = export_formats._run_onnx
    monkeypatch.setattr(export_formats, "_run_onnx", lambda path, x: real(path, x) + 1e-2)
    with pytest.raises(RunFailure, match=r"model.onnx \(onnxruntime\): outputs differ from PyTorch by "
                                         r"0.01, more than the tolerance .* \(= atol 0 \+ rtol 0.0001"):
        export_model(spec, None, tmp_path / "bad", torchscript=False)
    assert list(tmp_path.iterdir()) == []


def test_weights_that_do_not_match_the_spec_are_refused(spec, tmp_path):
    other = from_string(TINY.replace("head_c32", "head_c40"))
    with pytest.raises(ExportError, match=r"do not match the spec .* \(size mismatch for head.hidden.weight"):
        export_model(spec, build_model(other).state_dict(), tmp_path / "m")
    partial = {k: v for k, v in trained_like(spec).state_dict().items() if k != "head.classifier.bias"}
    with pytest.raises(ExportError, match=r"weights: .*\(missing head.classifier.bias; unexpected -\)"):
        export_model(spec, partial, tmp_path / "m")
    strided = from_string(TINY.replace("ir_k3_e48_c16_s1", "ir_k3_e48_c16_s2"))  # same shapes, other net
    with pytest.raises(ExportError, match="weights: the model was built from .*ir_k3_e48_c16_s2"):
        export_model(spec, build_model(strided), tmp_path / "m")
    state = {f"module.{k}": v for k, v in trained_like(spec).state_dict().items()}  # DataParallel keys
    assert torch.equal(materialize(spec, state).stem[0].weight, state["module.stem.0.weight"])


def test_bad_options_are_clear(spec, tmp_path):
    with pytest.raises(ExportError, match="opset: the dynamo exporter writes opset >= 18, got 17"):
        export_model(spec, None, tmp_path / "d", onnx_exporter="dynamo", opset=17, torchscript=False)
    with pytest.raises(ExportError, match="onnx_exporter: 'tf' is not one of auto, legacy, dynamo"):
        export_model(spec, None, tmp_path / "d", onnx_exporter="tf", torchscript=False)
    with pytest.raises(ExportError, match="atol: must be a finite number >= 0, got -1"):
        export_model(spec, None, tmp_path / "d", atol=-1)
    with pytest.raises(ExportError, match="rtol: must be a finite number > 0, got 0"):
        export_model(spec, None, tmp_path / "d", rtol=0)
    nan = {k: v.float().fill_(float("nan")) if k == "head.classifier.bias" else v
           for k, v in build_model(spec).state_dict().items()}
    with pytest.raises(ExportError, match=r"non-finite outputs \(NaN/inf\) .* diverged"):
        export_model(spec, nan, tmp_path / "d")
    assert list(tmp_path.iterdir()) == []


def test_missing_or_corrupt_export_directories(spec, tmp_path):
    with pytest.raises(ExportError, match="nowhere: export directory not found"):
        load_exported(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match=r"empty/spec.json: missing; an export directory holds"):
        load_exported(tmp_path / "empty")
    result = export_model(spec, None, tmp_path / "e", onnx=False, torchscript=False)
    weights = result.path("weights.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ExportError, match="weights.safetensors: SHA-256 differs from export.json"):
        load_exported(result.out_dir)
    with pytest.raises(ExportError, match="weights.safetensors: not a readable safetensors file"):
        load_exported(result.out_dir, verify=False)  # unchecked, safetensors itself refuses the file
    weights.unlink()
    with pytest.raises(ExportError, match="e/weights.safetensors: missing"):
        load_exported(result.out_dir)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # from torch.export internals
def test_auto_falls_back_to_the_dynamo_exporter(spec, tmp_path, monkeypatch):
    def gone(*args, **kwargs):
        raise RuntimeError("legacy exporter removed")

    monkeypatch.setattr(export_formats, "_export_legacy", gone)  # as in a torch without it
    model = trained_like(spec)
    result = export_model(spec, model, tmp_path / "dyn", onnx_exporter="auto", opset=17, torchscript=False)
    assert result.checks.onnx is not None
    assert result.checks.onnx.exporter == "dynamo" and result.checks.onnx.opset >= 18
    session = onnxruntime.InferenceSession(str(result.path("model.onnx")), providers=["CPUExecutionProvider"])
    x = inputs(spec, 2)
    (logits,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4, rtol=0)


def test_export_does_not_touch_the_callers_model(spec, tmp_path):
    model = trained_like(spec).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(spec, model, tmp_path / "t", onnx=False)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

