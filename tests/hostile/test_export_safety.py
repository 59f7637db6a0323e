"""Hostile and careless exports: names that are paths, overwrites of folders that are not exports,
symbolic links, exports with a missing or edited manifest, and output checks that must be able to fail."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from search import export_formats
from search.cli import main
from search.export import check_name, export_model, load_exported
from search_spaces import reference_spec
from search_spaces.errors import ExportError, MobilenasError, RunFailure

NO_FORMATS = {"onnx": False, "torchscript": False}


@pytest.fixture(scope="module")
def spec():
    return reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32)


@pytest.fixture
def victim(tmp_path):
    """A folder that is not an export, with a file in it."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


def intact(folder) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["thesis.tex"] and \
        (folder / "thesis.tex").read_text() == "years of work"


def export_cli(*overrides: str) -> None:
    main(["export", "arch=mobilenet_v3_small", "width_mult=0.5", "num_classes=10", "resolution=32",
          "onnx=false", "torchscript=false", *overrides])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


# --- paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "/tmp/x", "x y", "", "a\\b", "x" * 256])
def test_a_name_is_not_a_path(name):
    with pytest.raises(ExportError, match=r"export.name: .* is not a name; use 1-255 letters, digits"):
        check_name(name, field="export.name")


@pytest.mark.parametrize("overwrite, target", [("true", "victim"), ("false", "fresh")])
def test_traversal_name_is_refused_and_nothing_is_created_or_removed(tmp_path, victim, capsys, monkeypatch,
                                                                     overwrite, target):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)  # runs/export/../../../../<target> is tmp_path/<target>
    with pytest.raises(SystemExit) as exit_info:
        export_cli(f"name=../../../../{target}", f"overwrite={overwrite}")
    assert exit_info.value.code == 2
    assert one_line_error(capsys).startswith(f"error: export.name: '../../../../{target}' is not a name")
    assert intact(victim)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "victim"]
    assert list(cwd.iterdir()) == []  # not even runs/export


def test_overwrite_refuses_a_folder_that_is_not_an_export(spec, tmp_path, victim, capsys):
    with pytest.raises(ExportError, match=r"victim: overwrite=true replaces only an earlier export, and this "
                                          r"is not one \(.*export.json: missing"):
        export_model(spec, None, victim, overwrite=True, **NO_FORMATS)
    with pytest.raises(SystemExit) as exit_info:
        export_cli(f"out={victim}", "overwrite=true")
    assert exit_info.value.code == 2
    assert "overwrite=true replaces only an earlier export" in one_line_error(capsys)
    (victim / "export.json").write_text("{not json")  # a manifest must be valid, not merely present
    with pytest.raises(ExportError, match="corrupt export manifest"):
        export_model(spec, None, victim, overwrite=True, **NO_FORMATS)
    (victim / "export.json").unlink()
    assert intact(victim)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]  # no temporary folders left


def test_overwrite_replaces_an_earlier_export(spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    export_cli("name=net", "seed=1")
    out = tmp_path / "runs" / "export" / "net"
    first = json.loads((out / "export.json").read_text())["files"]["weights.safetensors"]
    export_cli("name=net", "seed=2", "overwrite=true")
    second = json.loads((out / "export.json").read_text())["files"]["weights.safetensors"]
    assert first != second
    assert load_exported(out)[0] == spec
    assert sorted(p.name for p in out.parent.iterdir()) == ["net"]  # the old one is gone, no temp dirs


def test_symlinks_do_not_lead_outside_the_export_root(spec, tmp_path, victim, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    export_model(spec, None, elsewhere, **NO_FORMATS)  # a real export, so only the link is in the way
    before = sorted(p.name for p in elsewhere.iterdir())
    root = tmp_path / "runs" / "export"
    root.mkdir(parents=True)
    (root / "net").symlink_to(elsewhere, target_is_directory=True)
    (root / "lnk").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(SystemExit) as exit_info:  # the target directory is a link to elsewhere
        export_cli("name=net", "overwrite=true")
    assert exit_info.value.code == 2
    assert "resolves to" in one_line_error(capsys)
    with pytest.raises(ExportError, match="net: is a symbolic link; an export directory is written or"):
        export_model(spec, None, root / "net", overwrite=True, **NO_FORMATS)
    with pytest.raises(SystemExit):  # a path through a link inside the root
        export_cli("name=lnk/victim", "overwrite=true")
    assert "is not a name" in one_line_error(capsys)
    assert sorted(p.name for p in elsewhere.iterdir()) == before and intact(victim)
    assert (root / "net").is_symlink() and sorted(p.name for p in root.iterdir()) == ["lnk", "net"]


# --- integrity on load ---------------------------------------------------------------------------------


@pytest.fixture
def export(spec, tmp_path):
    return export_model(spec, None, tmp_path / "e", **NO_FORMATS).out_dir


def edit_manifest(out, edit) -> None:
    manifest = json.loads((out / "export.json").read_text())
    edit(manifest["files"])
    (out / "export.json").write_text(json.dumps(manifest))


def test_missing_manifest_is_an_error_unless_verify_is_off(export, monkeypatch):
    (export / "export.json").unlink()
    with pytest.raises(ExportError, match=r"e/export.json: missing; .*; pass verify=False to load it"):
        load_exported(export)

    def no_pickle(*args, **kwargs):
        raise AssertionError("an export must never be unpickled")

    monkeypatch.setattr(torch, "load", no_pickle)
    spec, model = load_exported(export, verify=False)  # safetensors, never torch.load
    assert torch.equal(model.state_dict()["head.classifier.weight"],
                       load_file(export / "weights.safetensors")["head.classifier.weight"])


@pytest.mark.parametrize("edit", [lambda files: files.pop("weights.safetensors"),
                                  lambda files: files.update({"weights.safetensors": None}),
                                  lambda files: files.update({"spec.json": ""})],
                         ids=["entry-missing", "hash-null", "hash-empty"])
def test_a_required_file_without_a_hash_is_an_error(export, edit):
    edit_manifest(export, edit)
    with pytest.raises(ExportError, match=r"e/export.json: (weights.safetensors|spec.json) is not listed "
                                          r"with a SHA-256, .* pass verify=False"):
        load_exported(export)
    load_exported(export, verify=False)


def test_changed_weights_are_an_error(export):
    weights = load_file(export / "weights.safetensors")
    weights["head.classifier.bias"] += 1.0  # a valid file, other numbers
    save_file(weights, str(export / "weights.safetensors"))
    with pytest.raises(ExportError, match=r"weights.safetensors: SHA-256 differs from export.json; .*verify"):
        load_exported(export)
    assert float(load_exported(export, verify=False)[1].state_dict()["head.classifier.bias"][0]) == 1.0


def test_exporting_an_edited_export_again_is_refused_unless_verify_is_off(export, tmp_path, capsys):
    weights = load_file(export / "weights.safetensors")
    weights["head.classifier.bias"] += 1.0
    save_file(weights, str(export / "weights.safetensors"))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", f"run={export}", f"out={tmp_path / 'again'}", "onnx=false", "torchscript=false"])
    assert exit_info.value.code == 2
    assert one_line_error(capsys).endswith(
        "SHA-256 differs from export.json; the file is corrupt or was changed after export; "
        "pass verify=false to read it unchecked")
    assert not (tmp_path / "again").exists()
    main(["export", f"run={export}", f"out={tmp_path / 'again'}", "onnx=false", "torchscript=false",
          "verify=false"])
    assert float(load_exported(tmp_path / "again")[1].state_dict()["head.classifier.bias"][0]) == 1.0


# --- the output check ----------------------------------------------------------------------------------


def test_faithful_untrained_export_passes_a_relative_check(spec, tmp_path):
    checks = export_model(spec, None, tmp_path / "ok").checks
    assert checks.max_abs_logit < 1e-4  # untrained: an absolute 1e-4 tolerance would accept anything
    assert checks.tolerance == pytest.approx(1e-4 * checks.max_abs_logit)
    assert checks.onnx is not None and checks.onnx.max_abs_diff <= checks.tolerance
    assert checks.torchscript is not None and checks.torchscript.max_abs_diff <= checks.tolerance


def test_perturbed_onnx_output_fails_the_check_and_leaves_nothing(spec, tmp_path, monkeypatch, capsys):
    real = export_formats._run_onnx
    monkeypatch.setattr(export_formats, "_run_onnx", lambda path, x: real(path, x) * 1.01)
    with pytest.raises(RunFailure, match=r"model.onnx \(onnxruntime\): outputs differ from PyTorch by "
                                         r".*more than the tolerance") as info:
        export_model(spec, None, tmp_path / "bad", torchscript=False)
    assert isinstance(info.value, RunFailure) and not isinstance(info.value, MobilenasError)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:  # on the command line: a failed run, exit 1
        export_cli("onnx=true")
    assert exit_info.value.code == 1 and one_line_error(capsys).startswith("failed: model.onnx (onnxruntime)")
    assert list((tmp_path / "runs" / "export").iterdir()) == []


@pytest.mark.usefixtures("perturbed_torchscript")
def test_perturbed_torchscript_output_fails_the_check(spec, tmp_path):
    with pytest.raises(RunFailure, match=r"model.torchscript.pt: outputs differ from PyTorch"):
        export_model(spec, None, tmp_path / "bad", onnx=False)
    assert list(tmp_path.iterdir()) == []


def test_all_zero_logits_cannot_be_checked(spec, tmp_path):
    from search.export import materialize

    state = materialize(spec, None).state_dict()
    state["head.classifier.weight"].zero_()
    with pytest.raises(ExportError, match=r"logits are all ~0 .* export it with onnx=false torchscript="):
        export_model(spec, state, tmp_path / "z", onnx=False)
    export_model(spec, state, tmp_path / "z", **NO_FORMATS)  # nothing to check: allowed
