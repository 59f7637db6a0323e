"""``MODEL_CARD.md`` of an exported network: what it is, what it costs, how good and how it was found.

Metadata is a plain dict; the card reads these keys when present (all optional):

- ``name``: the model's name; ``trained``: false for weights straight from initialization;
- ``latency_ms`` and ``protocol`` (device, threads, batch, resolution, warm-up, repeats, statistic);
- ``accuracy`` (a number, or a dict such as ``{"top1": 0.71, "top5": 0.9, "split": "test"}``),
  or ``top1`` / ``top5`` / ``val_top1`` / ``test_top1`` ... directly; fractions in [0, 1] are shown
  as percent, larger values are taken to be percent already; ``data`` and ``budget`` (what it was
  trained/evaluated on, for how long);
- ``provenance``: how it was found (text or a dict: study, trial, NetAdapt iterations, ...).

Any other key is listed under "Other metadata".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from evaluators.cost import Cost
from search.export_formats import ExportChecks
from search_spaces.printout import format_columns, format_layers
from search_spaces.spec import ArchSpec

CARD_KEYS = ("name", "trained", "latency_ms", "protocol", "accuracy", "data", "budget", "provenance")
NOT_MEASURED = "not measured"


def format_value(value: Any) -> str:
    """A metadata value as one line of text (dicts as ``key: value; ...``)."""
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {format_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def percent(value: Any) -> str:
    """An accuracy as percent: fractions in [0, 1] are scaled, larger numbers are taken as percent."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return format_value(value)
    return f"{value * 100 if 0 <= value <= 1 else value:.2f}%"


def is_accuracy_key(key: str) -> bool:
    """``accuracy``, ``top1``, ``top5`` and their variants (``val_top1``, ``test_top1``, ``top1_ema``)."""
    return key == "accuracy" or "top1" in key or "top5" in key


def _accuracy_lines(metadata: Mapping[str, Any]) -> list[str]:
    accuracy = metadata.get("accuracy")
    figures: dict[str, Any] = dict(accuracy) if isinstance(accuracy, Mapping) else {}
    if accuracy is not None and not isinstance(accuracy, Mapping):
        figures["accuracy"] = accuracy
    for key, value in metadata.items():
        if is_accuracy_key(key) and key != "accuracy":
            figures.setdefault(key, value)
    figures = {k: v for k, v in figures.items() if v is not None}  # NaN is written as null
    if metadata.get("trained") is False and not figures:
        return ["- untrained: weights come from initialization (no accuracy)."]
    lines = []
    shown = {k: v for k, v in figures.items() if is_accuracy_key(k)}
    if shown:
        labels = {k: k.replace("top1", "top-1").replace("top5", "top-5").replace("_", " ") for k in shown}
        lines.append("; ".join(f"{labels[k]} {percent(v)}" for k, v in shown.items()))
    rest = {k: v for k, v in figures.items() if k not in shown}
    if rest:
        lines.append(format_value(rest))
    if not lines:
        lines.append(NOT_MEASURED)
    for key, label in (("data", "data"), ("budget", "budget")):
        if key in metadata:
            lines.append(f"{label}: {format_value(metadata[key])}")
    return [f"- {line}" for line in lines]


def _latency_lines(metadata: Mapping[str, Any]) -> list[str]:
    latency = metadata.get("latency_ms")
    if latency is None:
        return [f"- {NOT_MEASURED}"]
    lines = [f"- {latency:.3f} ms" if isinstance(latency, (int, float)) else f"- {format_value(latency)}"]
    protocol = metadata.get("protocol")
    lines.append(f"- protocol: {format_value(protocol)}" if protocol else
                 "- protocol: not recorded (compare with other figures only with care)")
    return lines


def render_model_card(spec: ArchSpec, metadata: Mapping[str, Any], *, cost: Cost,
                      files: Mapping[str, str], checks: ExportChecks) -> str:
    """The Markdown model card. ``files`` maps file name to SHA-256, ``checks`` holds the
    export checks (TorchScript and ONNX differences from PyTorch, the tolerance)."""
    name = metadata.get("name", "mobilenas model")
    trained = metadata.get("trained", True)
    state = "trained weights" if trained else "untrained (weights from initialization)"
    lines = [
        f"# {name}",
        "",
        f"A MobileNetV3-like network exported by mobilenas: {state}. Input: float32 NCHW "
        f"{spec.in_channels}x{spec.resolution}x{spec.resolution} (batch axis free), preprocessed as "
        f"during training; output: {spec.num_classes} class logits.",
        "",
        "Spec string (paste into `mobilenas show arch='...'`):",
        "",
        "```",
        str(spec),
        "```",
        "",
        "## Architecture",
        "",
        format_layers(spec, markdown=True),
        "",
        "## Cost",
        "",
        f"- params: {cost.params:,} ({cost.params_m:.3f} M)",
        f"- MAdds: {cost.madds_m:.2f} M (fvcore, batch 1, {spec.resolution}x{spec.resolution}; "
        f"conv+linear {cost.conv_linear_madds / 1e6:.2f} M)",
        "",
        "## Latency",
        "",
        *_latency_lines(metadata),
        "",
        "## Accuracy",
        "",
        *_accuracy_lines(metadata),
        "",
        "## How it was found",
        "",
        f"- {format_value(metadata['provenance'])}" if metadata.get("provenance") else "- not recorded",
    ]
    other = {k: v for k, v in metadata.items() if k not in CARD_KEYS and not is_accuracy_key(k)}
    if other:
        lines += ["", "## Other metadata", "", "```json", json.dumps(other, indent=2, default=str), "```"]
    lines += ["", "## Export checks", ""]
    if checks.torchscript is not None:
        lines.append(f"- TorchScript (`{checks.torchscript.mode}`) reloaded with torch.jit.load: max abs "
                     f"diff {checks.torchscript.max_abs_diff:.3g} vs PyTorch")
    if checks.onnx is not None:
        lines.append(f"- ONNX opset {checks.onnx.opset} ({checks.onnx.exporter} exporter), run by "
                     f"onnxruntime CPUExecutionProvider: max abs diff {checks.onnx.max_abs_diff:.3g} "
                     f"vs PyTorch (tolerance {checks.tolerance:.3g}, largest logit "
                     f"{checks.max_abs_logit:.3g}); input `input`, output `logits`")
    if len(lines) and lines[-1] == "":
        lines.append("- weights only (no TorchScript/ONNX requested)")
    lines += ["", "## Files", "", format_columns(("file", "sha256"), sorted(files.items()), markdown=True),
              "", "## Use", "", "```python",
              "from search.export import load_exported",
              "spec, model = load_exported('<this directory>')  # eval mode, weights loaded strictly",
              "```", ""]
    return "\n".join(lines)
