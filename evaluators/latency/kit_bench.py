"""bench.py of a mobilenas device kit: time every ONNX model of the kit in onnxruntime and write
the CSV that ``mobilenas lut action=import`` takes.

Needs only Python >= 3.8, numpy and onnxruntime (no torch, no mobilenas): copy the kit folder
to the device (a phone under Termux, a Raspberry Pi, a board) and run there::

    python bench.py --device pixel7-ort            # writes latency-pixel7-ort.csv in the kit

The kit's ONNX files hold the graphs; their float weights are left out to keep the kit small (a
model's latency does not depend on the values) and written next to a model, as seeded random
numbers, just before it is timed, then deleted.

Protocol (from manifest.json; --threads, --warmup and --runs override it and are written to the
CSV): every model runs in its own ``onnxruntime.InferenceSession`` with ``threads`` intra-op
threads, 1 inter-op thread, sequential execution, the manifest's graph optimization level and
execution provider, and denormals as zero, on a fixed float32 input of the model's shape.
``warmup`` untimed calls come first, then ``runs`` calls of ``session.run``, each timed alone with
the wall clock (``time.perf_counter_ns``); the figure is their median (the manifest's
``statistic``) in milliseconds. The whole-network models give the fit of
``network = scale x sum of its layers + overhead``, written as the ``scale`` and ``overhead``
rows of the CSV.

This file is also the mobilenas module ``evaluators.latency.kit_bench``: the onnxruntime backend
of mobilenas times with the same session settings. Bad input ends with one ``error:`` line and
exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "mobilenas.device_kit"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
MAX_MODEL_BYTES = 256 << 20
MAX_INPUT_ELEMENTS = 1 << 26
STATISTICS = ("median", "min", "mean")
OPTIMIZATIONS = ("disable", "basic", "extended", "all")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
KEY = re.compile(r"^(stem|block|head):r\d+:c\d+:\S+$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SCALE_RANGE = (0.5, 3.0)  # as mobilenas fits it: other slopes are noise, the overhead alone is fitted
# the protocol columns of the CSV (mobilenas evaluators/latency/csv_format.py), fixed for the kit
FIXED_COLUMNS = {"memory_format": "contiguous", "timer": "wall", "drift_correction": "none",
                 "runtime": "onnxruntime"}
PROTOCOL_KEYS = {"threads": int, "batch_size": int, "input_resolution": int, "warmup": int, "runs": int,
                 "statistic": str, "ort_optimization": str, "ort_provider": str}
COLUMNS = ("key", "input_shape", "latency_ms", "device", "threads", "batch_size", "input_resolution",
           "memory_format", "warmup", "runs", "statistic", "timer", "drift_correction", "runtime",
           "ort_optimization", "ort_provider")


class KitError(Exception):
    """Bad input: a bad kit folder, manifest, model file or flag (one line)."""


# --- the session and the timing loop (shared with mobilenas' onnxruntime backend) -----------
def make_session(path: str | os.PathLike[str], *, threads: int, optimization: str = "all",
                 provider: str = "CPUExecutionProvider") -> Any:
    """An ``InferenceSession`` for ``path`` under the kit's protocol (see the module docstring)."""
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise KitError(f"ort_provider: {provider} is not available in this onnxruntime "
                       f"(available: {', '.join(ort.get_available_providers())})")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(path), sess_options=options, providers=[provider])


def fixed_input(shape: Sequence[int]) -> np.ndarray:
    """The float32 input every model is timed on (seeded: the same on every device)."""
    return np.random.default_rng(0).standard_normal(tuple(shape), dtype=np.float32)


def session_runner(session: Any, x: np.ndarray) -> Callable[[], Any]:
    """One call of the timed work: ``session.run`` on ``x``."""
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


def timed_runs(run: Callable[[], Any], warmup: int, runs: int) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``run``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def summarize(times: Sequence[float], statistic: str) -> float:
    return float(getattr(np, statistic)(np.asarray(times)))  # statistic: one of STATISTICS


# --- the manifest ----------------------------------------------------------------------------
def load_manifest(kit: Path) -> dict[str, Any]:
    """The kit's manifest, every field checked and every model file verified (inside the kit,
    size, sha256); :class:`KitError` names the first problem."""
    if not kit.is_dir():
        raise KitError(f"{kit}: not a folder; give the kit folder written by mobilenas lut action=export-kit")
    path = kit / MANIFEST
    if not path.is_file():
        raise KitError(f"{path}: no manifest; this is not a device kit (mobilenas lut action=export-kit)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise KitError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a kit manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise KitError(f"{path}: not valid JSON ({err}); export the kit again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise KitError(f"{path}: not a version {VERSION} {FORMAT} manifest; export the kit again with "
                       "this mobilenas")
    data["protocol"] = _check_protocol(path, data.get("protocol"))
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise KitError(f"{path}: 'models' must be a non-empty list")
    keys = set()
    for i, model in enumerate(models):
        _check_model(kit, f"{path}: models[{i}]", model)
        if "key" in model:
            keys.add(model["key"])
    for i, model in enumerate(models):
        if "layers" in model and not set(model["layers"]) <= keys:
            raise KitError(f"{path}: models[{i}]: lists layers that are not models of the kit")
    return data


def _check_protocol(path: Path, protocol: Any) -> dict[str, Any]:
    if not isinstance(protocol, dict) or set(protocol) != set(PROTOCOL_KEYS):
        raise KitError(f"{path}: 'protocol' must have the fields {', '.join(PROTOCOL_KEYS)}")
    for name, kind in PROTOCOL_KEYS.items():
        value = protocol[name]
        if isinstance(value, bool) or not isinstance(value, kind) or (isinstance(value, int) and value < 0):
            wanted = "an integer >= 0" if kind is int else "a string"
            raise KitError(f"{path}: protocol.{name} must be {wanted}, got {value!r}")
    if protocol["statistic"] not in STATISTICS or protocol["ort_optimization"] not in OPTIMIZATIONS:
        raise KitError(f"{path}: protocol.statistic must be one of {', '.join(STATISTICS)} and "
                       f"protocol.ort_optimization one of {', '.join(OPTIMIZATIONS)}")
    return protocol


def _check_model(kit: Path, where: str, model: Any) -> None:
    if not isinstance(model, dict) or not {"file", "sha256", "input_shape"} <= set(model) or \
            ("key" in model) == ("layers" in model):
        raise KitError(f"{where}: needs file, sha256, input_shape and either key (a layer) or "
                       "layers (a network)")
    name, digest, shape = model["file"], model["sha256"], model["input_shape"]
    if not isinstance(name, str) or not name.endswith(".onnx") or Path(name).is_absolute() \
            or ".." in Path(name).parts:
        raise KitError(f"{where}: file {name!r} must be a relative path to an .onnx file inside the kit")
    file = (kit / name).resolve()
    if kit.resolve() not in file.parents:
        raise KitError(f"{where}: file {name!r} points outside the kit")
    if "key" in model and (not isinstance(model["key"], str) or not KEY.match(model["key"])):
        raise KitError(f"{where}: key {model['key']!r} is not a mobilenas layer key")
    if "layers" in model and (not isinstance(model["layers"], list)
                              or not all(isinstance(k, str) for k in model["layers"])):
        raise KitError(f"{where}: layers must be a list of layer keys")
    if not isinstance(shape, list) or len(shape) != 4 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape) \
            or math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise KitError(f"{where}: input_shape must be 4 positive integers (batch, channels, height, width) "
                       f"of at most {MAX_INPUT_ELEMENTS} elements, got {shape!r}")
    if not isinstance(digest, str) or not SHA256.match(digest):
        raise KitError(f"{where}: sha256 must be 64 lowercase hex digits")
    if "weights" in model:
        _check_weights(kit, where, model["weights"])
    if not file.is_file():
        raise KitError(f"{where}: {name} is missing from the kit; copy the whole kit folder")
    if file.stat().st_size > MAX_MODEL_BYTES:
        raise KitError(f"{where}: {name} is larger than {MAX_MODEL_BYTES >> 20} MiB")
    if sha256_of(file) != digest:
        raise KitError(f"{where}: {name} does not match its sha256 in the manifest (damaged or changed); "
                       "copy the kit again")


def _check_weights(kit: Path, where: str, weights: Any) -> None:
    if not isinstance(weights, dict) or set(weights) != {"file", "bytes"}:
        raise KitError(f"{where}: weights must have the fields file and bytes")
    name, size = weights["file"], weights["bytes"]
    if not isinstance(name, str) or not name.endswith(".weights") or Path(name).is_absolute() \
            or ".." in Path(name).parts or kit.resolve() not in (kit / name).resolve().parents:
        raise KitError(f"{where}: weights file {name!r} must be a relative .weights path inside the kit")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_MODEL_BYTES or size % 4:
        raise KitError(f"{where}: weights bytes must be a multiple of 4 in 1..{MAX_MODEL_BYTES}, "
                       f"got {size!r}")


def write_weights(path: Path, size: int) -> None:
    """``size`` bytes of seeded float32 values (normal, sd 0.05) at ``path``: a model's weights."""
    values = np.random.default_rng(size).standard_normal(size // 4, dtype=np.float32) * np.float32(0.05)
    path.write_bytes(values.tobytes())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- timing the kit and writing the CSV ----------------------------------------------------
def fit(sums: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """``(scale, overhead_ms)``: least squares ``measured = scale x sum + overhead`` as mobilenas
    fits it (overhead alone with < 3 networks, sums spread < 20% or a slope outside 0.5-3)."""
    s, m = np.asarray(sums, dtype=float), np.asarray(measured, dtype=float)
    scale, overhead = 1.0, float(np.mean(m - s))
    if len(s) >= 3 and np.ptp(s) > 0.2 * np.mean(s):
        slope, intercept = np.polyfit(s, m, 1)
        if SCALE_RANGE[0] <= slope <= SCALE_RANGE[1]:
            scale, overhead = float(slope), float(intercept)
    return scale, overhead


def bench(kit: Path, manifest: dict[str, Any], protocol: dict[str, Any], *,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every model of the kit (its checked ``manifest``): ``{"layers": {key: ms}, "networks":
    [(sum, ms)], ...}``."""
    layers: dict[str, float] = {}
    networks = []
    models = manifest["models"]
    start = time.monotonic()
    for i, model in enumerate(sorted(models, key=lambda m: "layers" in m)):  # layers first
        ms = time_model(kit, model, protocol)
        if "key" in model:
            layers[model["key"]] = ms
        else:
            networks.append((sum(layers[key] for key in model["layers"]), ms))
        if (i + 1) % 100 == 0:
            log(f"{i + 1}/{len(models)} models timed ({time.monotonic() - start:.0f} s)")
    return {"layers": layers, "networks": networks, "protocol": protocol}


def time_model(kit: Path, model: dict[str, Any], protocol: dict[str, Any]) -> float:
    """The figure of one model of the kit (its weights written for the session, then removed)."""
    weights = kit / model["weights"]["file"] if "weights" in model else None
    try:
        if weights is not None:
            write_weights(weights, model["weights"]["bytes"])
        session = make_session(kit / model["file"], threads=protocol["threads"],
                               optimization=protocol["ort_optimization"], provider=protocol["ort_provider"])
    finally:
        if weights is not None and weights.exists():
            weights.unlink()  # the session holds its own copy
    shape = [protocol["batch_size"], *model["input_shape"][1:]]
    times = timed_runs(session_runner(session, fixed_input(shape)), protocol["warmup"], protocol["runs"])
    return summarize(times, protocol["statistic"])


def csv_text(result: dict[str, Any], device: str) -> str:
    """The CSV ``mobilenas lut action=import`` reads: a row per layer with the protocol columns,
    then the fit's ``scale`` and ``overhead`` rows (when the kit has networks)."""
    protocol = result["protocol"]
    cells = {**{k: protocol[k] for k in PROTOCOL_KEYS}, **FIXED_COLUMNS, "device": device}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for key, ms in result["layers"].items():
        channels, resolution = re.match(r"^\w+:r(\d+):c(\d+):", key).group(2, 1)  # type: ignore[union-attr]
        shape = f"{protocol['batch_size']}x{channels}x{resolution}x{resolution}"
        writer.writerow({**cells, "key": key, "input_shape": shape, "latency_ms": f"{ms:.5f}"})
    if result["networks"]:
        sums, _ = zip(*result["networks"])
        scale, overhead = fit(*zip(*result["networks"]))
        if scale * min(sums) + overhead > 0:
            writer.writerow({"key": "scale", "latency_ms": f"{scale:.5f}"})
            writer.writerow({"key": "overhead", "latency_ms": f"{overhead:.5f}"})
        else:  # a fit that predicts <= 0 ms for a network it was fitted on comes from noisy timings
            print(f"warning: the networks' fit (scale {scale:.3f}, overhead {overhead:.3f} ms) predicts "
                  "<= 0 ms for a small network: the timings were too noisy; the CSV has no scale/overhead "
                  "rows (rerun with more --runs on an idle device)", file=sys.stderr)
    return buffer.getvalue()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def import_command(out: Path, device: str, protocol: dict[str, Any]) -> str:
    settings = " ".join(f"latency.{name}={protocol[name]}" for name in
                        ("threads", "batch_size", "warmup", "runs", "statistic", "ort_optimization",
                         "ort_provider"))
    return (f"mobilenas lut action=import csv={out.name} latency=onnxruntime latency.device={device} "
            f"{settings} resolution={protocol['input_resolution']}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time the ONNX models of a mobilenas device kit in "
                                     "onnxruntime; write the CSV for 'mobilenas lut action=import'.")
    parser.add_argument("--device", required=True, help="the device's name, e.g. pixel7-ort (the table's "
                        "latency.device)")
    parser.add_argument("--kit", type=Path, default=Path(__file__).resolve().parent,
                        help="the kit folder (default: the folder of this file)")
    parser.add_argument("--out", type=Path, help="the CSV to write (default: <kit>/latency-<device>.csv)")
    for name in ("threads", "warmup", "runs"):
        parser.add_argument(f"--{name}", type=int, help=f"override the manifest's {name}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not DEVICE_NAME.match(args.device):
            raise KitError(f"--device: {args.device!r} is not a device name (letters, digits, '.', '_', '+', "
                           "'-'), e.g. pixel7-ort")
        manifest = load_manifest(args.kit)  # checks every model's sha256
        protocol = dict(manifest["protocol"])
        for name, low in (("threads", 1), ("warmup", 0), ("runs", 1)):
            value = getattr(args, name)
            if value is not None and value < low:
                raise KitError(f"--{name}: must be >= {low}, got {value}")
            protocol[name] = protocol[name] if value is None else value
        out = args.out or args.kit / f"latency-{args.device}.csv"
        result = bench(args.kit, manifest, protocol, log=lambda line: print(line, file=sys.stderr))
        write_atomic(out, csv_text(result, args.device))
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"timed {len(result['layers'])} layers and {len(result['networks'])} networks; wrote {out}\n"
          f"import it with: {import_command(out, args.device, protocol)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
