"""The device kit: what a phone or board needs to measure a latency table in onnxruntime.

A kit folder holds one ONNX model per distinct layer of a space (``layers/``), the whole
networks the table's ``scale`` and ``overhead`` are fitted on (``networks/``), ``manifest.json``
(each model's file, sha256, layer key or the layer keys of a network, input shape, the size of
its float weights, and the protocol to time them with) and ``bench.py`` (a copy of
:mod:`evaluators.latency.kit_bench`: Python, numpy and onnxruntime only), which writes the CSV
that ``mobilenas lut action=import`` reads.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx.external_data_helper import set_external_data
from tqdm import tqdm

from evaluators.latency import kit_bench
from evaluators.latency.onnxruntime_backend import export_layer, export_network
from evaluators.latency.protocol import LatencyProtocol
from search_spaces.errors import ConfigError
from search_spaces.serialize import atomic_write, atomic_write_text
from search_spaces.spec import ArchSpec, Layer


@dataclass(frozen=True)
class KitSummary:
    """A written kit: its folder, model counts and total size in bytes."""

    out: Path
    layers: int
    networks: int
    bytes: int


def kit_protocol(protocol: LatencyProtocol) -> dict[str, Any]:
    """The manifest's protocol: what ``bench.py`` needs of an onnxruntime ``protocol``."""
    if protocol.runtime != "onnxruntime":
        raise ConfigError(f"latency.runtime: a device kit is timed in onnxruntime, got {protocol.runtime}")
    return {
        "threads": protocol.threads, "batch_size": protocol.batch_size,
        "input_resolution": protocol.resolution, "warmup": protocol.warmup, "runs": protocol.runs,
        "statistic": protocol.statistic,
        "ort_optimization": protocol.ort_optimization, "ort_provider": protocol.ort_provider,
    }


def file_name(key: str) -> str:
    """A layer key as a file name: ``block:r56:c24:ir_k3_e72_c24_s1_re`` -> ``block_r56_c24_ir_k3_...``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".onnx"


def _empty_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"lut.out: {out} exists and is not an empty folder; give a new folder for the kit")
    (out / "layers").mkdir(parents=True, exist_ok=True)
    (out / "networks").mkdir(exist_ok=True)


def export_kit(
    layers: Sequence[Layer], networks: Sequence[ArchSpec], protocol: LatencyProtocol, out: Path, *,
    progress: bool = False,
) -> KitSummary:
    """Write a kit for ``layers`` and the fit ``networks`` (whose layers are added to ``layers``)
    to the new or empty folder ``out``, timed on the device under ``protocol`` (onnxruntime)."""
    manifest_protocol = kit_protocol(protocol)
    networks = list(dict.fromkeys(networks))
    layers = list(dict.fromkeys([*layers, *(layer for spec in networks for layer in spec.layers())]))
    _empty_out(out)
    models: list[dict[str, Any]] = []
    for layer in tqdm(layers, desc="exporting layers", disable=not progress, leave=False):
        name = f"layers/{file_name(layer.key)}"
        export_layer(layer, out / name, protocol.batch_size)
        shape = [protocol.batch_size, layer.in_channels, layer.resolution, layer.resolution]
        models.append(_entry(out, name, shape, key=layer.key))
    for i, spec in enumerate(tqdm(networks, desc="exporting networks", disable=not progress, leave=False)):
        name = f"networks/net-{i:03d}.onnx"
        export_network(spec, out / name, protocol.batch_size)
        shape = [protocol.batch_size, spec.in_channels, spec.resolution, spec.resolution]
        models.append(_entry(out, name, shape, layers=[layer.key for layer in spec.layers()], spec=str(spec)))
    manifest = {"format": kit_bench.FORMAT, "version": kit_bench.VERSION, "protocol": manifest_protocol,
                "models": models}
    atomic_write_text(out / kit_bench.MANIFEST, json.dumps(manifest, indent=1) + "\n")
    shutil.copyfile(Path(kit_bench.__file__), out / "bench.py")
    size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    return KitSummary(out=out, layers=len(layers), networks=len(networks), bytes=size)


def _entry(out: Path, name: str, shape: list[int], **fields: Any) -> dict[str, Any]:
    """The manifest entry of the model at ``out/name``, its float weights moved out first."""
    weights = name.removesuffix(".onnx") + ".weights"
    size = strip_weights(out / name, Path(weights).name)
    entry = {"file": name, "sha256": kit_bench.sha256_of(out / name), "input_shape": shape, **fields}
    if size:
        entry["weights"] = {"file": weights, "bytes": size}
    return entry


def strip_weights(path: Path, location: str, min_bytes: int = 4096) -> int:
    """Mark the float32 initializers of the ONNX file ``path`` of at least ``min_bytes`` as
    external data in ``location`` (next to it; not written: ``bench.py`` writes seeded values
    there before timing) and rewrite the file; returns the bytes left out."""
    model = onnx.load(str(path))
    offset = 0
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT and len(tensor.raw_data) >= min_bytes:
            size = len(tensor.raw_data)
            set_external_data(tensor, location=location, offset=offset, length=size)
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            offset += size
    atomic_write(path, lambda tmp: onnx.save(model, tmp))
    return offset
