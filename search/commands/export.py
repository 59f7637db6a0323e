"""``mobilenas export``: an architecture, or a finished train/search/refine run, as a deployable
directory (spec files, safetensors weights, TorchScript, ONNX, model card)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from search.arch import resolve_arch
from search.export import ExportOptions, ExportResult, check_name, export_dir, export_model, safe_name
from search.export_formats import check_onnx_options, check_tolerances
from search.export_sources import ExportSource, arch_name, read_run
from search_spaces.errors import ConfigError
from search_spaces.limits import SpecLimits
from search_spaces.reference import REFERENCES

EXPORT_ROOT = Path("runs") / "export"  # where exports go without out=


@dataclass
class ExportConfig(ExportOptions):
    arch: str | None = None
    run: str | None = None
    out: str | None = None
    name: str | None = None
    width_mult: float = 1.0
    num_classes: int | None = None
    resolution: int | None = None
    overwrite: bool = False
    seed: int = 0
    verify: bool = True  # run= an earlier export: its files must match its export.json
    limits: SpecLimits = field(default_factory=SpecLimits)
    # pretrained (issue 15): with arch=, a torchvision / timm / mobilenas state_dict file to export
    weights: str | None = None

    def validate(self) -> None:
        """The cheap checks, before the run is read."""
        check_onnx_options(self.opset, self.onnx_exporter, prefix="export.")
        check_tolerances(self.atol, self.rtol, prefix="export.")
        if self.name is not None:
            check_name(self.name, field="export.name")


CONFIG = ExportConfig


def _source(options: ExportConfig) -> ExportSource:
    if (options.arch is None) == (options.run is None):
        raise ConfigError("export: give exactly one of arch=<reference|spec file|spec string> "
                          "or run=<run dir>")
    if options.run is not None:
        if options.width_mult != 1.0 or options.num_classes or options.resolution or options.weights:
            raise ConfigError("export: width_mult, num_classes, resolution and weights apply to arch=, "
                              "not to run= (a run's weights fix its architecture)")
        return read_run(options.run, verify=options.verify, skip="pass verify=false to read it unchecked")
    arch = options.arch
    assert arch is not None  # exactly one of arch and run, checked above
    spec = resolve_arch(arch, width_mult=options.width_mult, num_classes=options.num_classes,
                        resolution=options.resolution)
    if arch in REFERENCES:
        provenance = f"reference architecture {arch} (MobileNetV3 paper), width {options.width_mult:g}"
    else:
        provenance = f"given as arch={arch}"
    weights = None
    if options.weights:
        from search.weights import read_weights

        loaded = read_weights(options.weights, spec, reference=arch, width_mult=options.width_mult)
        print(loaded.summary())
        spec, weights = loaded.spec, loaded.build().state_dict()
        provenance += f"; {loaded.source} weights from {loaded.path}"
        provenance += f" ({loaded.note})" if loaded.note else ""
    return ExportSource(spec=spec, weights=weights, name=arch_name(arch, spec, options.width_mult),
                        metadata={"provenance": provenance,
                                  "source": {"arch": arch, "weights": options.weights}})


def summary(result: ExportResult) -> str:
    """A few lines on what was written and how the checks went."""
    checks = result.checks
    lines = [f"exported {result.metadata.get('name')} -> {result.out_dir}",
             f"  {'trained' if result.metadata.get('trained') else 'untrained (initialization)'}; "
             f"params {result.cost.params:,}; MAdds {result.cost.madds_m:.2f} M; "
             f"{result.spec.resolution}x{result.spec.resolution}, {result.spec.num_classes} classes"]
    if checks.torchscript is not None:
        lines.append(f"  TorchScript ({checks.torchscript.mode}): max abs diff "
                     f"{checks.torchscript.max_abs_diff:.3g}")
    if checks.onnx is not None:
        lines.append(f"  ONNX opset {checks.onnx.opset} ({checks.onnx.exporter} exporter), "
                     f"onnxruntime: max abs diff {checks.onnx.max_abs_diff:.3g} "
                     f"(tolerance {checks.tolerance:.3g}, max |logit| {checks.max_abs_logit:.3g})")
    lines.append("  files: " + ", ".join([*result.files, "MODEL_CARD.md", "export.json"]))
    return "\n".join(lines)


def destination(options: ExportConfig, name: str) -> Path:
    """``out`` as given, or ``runs/export/<name>``: ``name`` is a name, never a path, and the
    directory stays inside that root (symbolic links resolved)."""
    return Path(options.out) if options.out else export_dir(EXPORT_ROOT, name, field="export.name")


def run(options: ExportConfig) -> None:
    source = _source(options)
    name = options.name or safe_name(source.name)
    out = destination(options, name)
    result = export_model(source.spec, source.weights, out, metadata={**source.metadata, "name": name},
                          onnx=options.onnx, torchscript=options.torchscript, opset=options.opset,
                          onnx_exporter=options.onnx_exporter, rtol=options.rtol, atol=options.atol,
                          overwrite=options.overwrite, seed=options.seed)
    print(summary(result))
