"""``mobilenas lut``: build, validate, import, export or inspect a latency lookup table."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from evaluators.latency import (
    LatencyConfig,
    LatencyProtocol,
    LatencyTable,
    ValidationReport,
    export_layers_csv,
    import_csv,
    plot_validation,
    space_fit_specs,
    validate_table,
)
from evaluators.latency.drift import unit_key
from evaluators.latency.kit import export_kit
from evaluators.latency.speed_unit import FASTER, read_unit
from search_spaces.config import SpaceConfig, build_space
from search_spaces.errors import ConfigError
from search_spaces.limits import SpecLimits
from search_spaces.serialize import atomic_write_text
from search_spaces.space import SearchSpace, sample_specs
from search_spaces.spec import ArchSpec

ACTIONS = ("build", "validate", "import", "export-layers", "export-kit", "info")


@dataclass
class LutConfig:
    """``mobilenas lut``'s config (conf/lut.yaml); ``mobilenas lut --help`` explains the actions."""

    limits: SpecLimits = field(default_factory=SpecLimits)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    action: str = "build"  # build | validate | import | export-layers | export-kit | info
    resolution: int = 224  # network input resolution of the table
    num_classes: int = 1000  # classes of the space's head
    csv: str | None = None  # import: CSV to read; export-layers: CSV to write (null: <run dir>/layers.csv)
    out: str | None = None  # export-kit: the new folder of the device kit (null: <run dir>/kit)
    # import into a table holding rows measured on this machine, although the CSV lacks protocol columns or
    # states another protocol: the rows keep the CSV's protocol and a fit of replaced rows is dropped;
    # false: such a CSV is refused (give it the protocol columns, see export-layers)
    replace_measured: bool = False
    # fit the overhead on the seed + fit_specs-1 samples of the space (+ the V3 references at 4 widths),
    # timed end to end; 0: no fit
    fit_specs: int = 8
    specs: int = 30  # validate: specs sampled from the space (none of the fit specs)
    rounds: int = 10  # validate: interleaved measuring rounds (spreads each network over the run)
    # validate: time the fit networks alongside and fit scale+overhead on them, so the figures test the
    # rows, not the machine's drift since the table's fit; false: the stored fit only
    session_fit: bool = True
    seed: int = 0  # sampling seed (validation: seed; fit: seed + 1)
    progress: bool = True  # progress bars

    def validate(self) -> None:
        self.latency.validate()
        if self.action not in ACTIONS:
            raise ConfigError(f"lut.action: {self.action!r} is not one of {', '.join(ACTIONS)}")
        if self.fit_specs < 0:
            raise ConfigError(f"lut.fit_specs: must be >= 0 (0: no fit), got {self.fit_specs}")
        for name in ("specs", "rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"lut.{name}: must be >= 1, got {getattr(self, name)}")


CONFIG = LutConfig


@dataclass
class _Job:
    """Everything an action needs, resolved from the config."""

    options: LutConfig
    latency: LatencyConfig
    space: SearchSpace
    protocol: LatencyProtocol
    path: Path  # the table file
    run_dir: Path


def run(options: LutConfig) -> None:
    latency = options.latency
    job = _Job(
        options=options,
        latency=latency,
        space=build_space(options.space, num_classes=options.num_classes, resolution=options.resolution),
        protocol=latency.protocol(options.resolution),
        path=latency.table_path(options.resolution),
        run_dir=Path(HydraConfig.get().runtime.output_dir),
    )
    {"build": _build, "validate": _validate, "import": _import, "export-layers": _export,
     "export-kit": _export_kit, "info": _info}[options.action](job)


def _build(job: _Job) -> None:
    table = LatencyTable.open(job.path, job.protocol, create=True)
    start = time.perf_counter()
    measured = table.build(job.space.layers(), progress=job.options.progress)
    print(
        f"measured {measured} layers in {time.perf_counter() - start:.1f} s; {len(table)} rows in {job.path}"
    )
    _fit(job, table, _fit_specs(job))
    _print_table(table, job.space)


def _validate(job: _Job) -> None:
    table = LatencyTable.open(job.path, job.protocol, create=True)
    fitting = _fit_specs(job)
    if not table.fit.fitted:
        _fit(job, table, fitting)
    specs = sample_specs(job.space, job.options.specs, seed=job.options.seed, exclude=fitting)
    report = validate_table(
        table, specs, fit_specs=fitting if job.options.session_fit else (), rounds=job.options.rounds,
        progress=job.options.progress,
    )
    report_path = atomic_write_text(
        job.run_dir / "report.json", json.dumps(report.to_dict(), indent=1) + "\n"
    )
    plot = plot_validation(report, job.run_dir / "validation.png")
    print(f"validation of {job.path}: {report.summary()}\nprotocol: {job.protocol.describe()}")
    print(_fit_line(report))
    stored = report.table_fit_report()
    if stored is not None:
        print(f"with the table's stored fit instead: {stored.summary()}\n{_fit_line(stored)}")
    print(f"report: {report_path}\nplot: {plot}")


def _fit_line(report: ValidationReport) -> str:
    source = {"table": "the table's stored fit", "session": "fitted on other networks timed alongside"}
    fit = report.fit
    return f"fit: scale {fit.scale:.3f}, overhead {fit.overhead_ms:.3f} ms ({source[report.fit_source]})"


def _import(job: _Job) -> None:
    if not job.options.csv:
        raise ConfigError("lut.csv: action=import needs csv=<file> (the measured layers)")
    summary = import_csv(
        job.options.csv, job.path, job.protocol, replace_measured=job.options.replace_measured
    )
    overhead = "none" if summary.overhead_ms is None else f"{summary.overhead_ms} ms"
    print(
        f"imported {summary.rows} rows into {summary.table} ({summary.replaced} replaced other figures; "
        f"{summary.skipped} rows without latency skipped; overhead {overhead})"
    )
    _print_table(LatencyTable.read(job.path), job.space)


def _export(job: _Job) -> None:
    out = Path(job.options.csv) if job.options.csv else job.run_dir / "layers.csv"
    layers = list(job.space.layers())
    export_layers_csv(layers, out, job.protocol)
    print(
        f"wrote {len(layers)} layer configurations of the space to {out}\n"
        f"protocol: {job.protocol.describe()}\nmeasure each on the device, fill in latency_ms, then: "
        f"mobilenas lut action=import csv={out} latency.device={job.protocol.device}"
    )


def _export_kit(job: _Job) -> None:
    protocol = job.protocol  # the kit is timed in onnxruntime whatever latency.runtime says
    if protocol.runtime != "onnxruntime":
        protocol = protocol.replace(runtime="onnxruntime")
    out = Path(job.options.out) if job.options.out else job.run_dir / "kit"
    kit = export_kit(list(job.space.layers()), _fit_specs(job), protocol, out, progress=job.options.progress)
    print(
        f"wrote a device kit for {kit.layers} layers and {kit.networks} fit networks to {out} "
        f"({kit.layers + kit.networks} ONNX models, {kit.bytes / 2**20:.1f} MiB)\n"
        f"protocol: {protocol.describe()}\n"
        f"on the device (Python, numpy, onnxruntime): python bench.py --device <name>; it prints the import "
        f"command (mobilenas lut action=import csv=... latency=onnxruntime latency.device=<name> ...)"
    )


def _info(job: _Job) -> None:
    if not job.path.exists():
        raise ConfigError(f"latency.table: no table at {job.path}; build or import one")
    table = LatencyTable.read(job.path)
    _print_table(table, job.space)
    if table.protocol != job.protocol:
        print(
            f"note: the configured protocol differs ({'; '.join(table.protocol.differences(job.protocol))}; "
            "table vs configured): opening the table for it is refused"
        )


def _fit_specs(job: _Job) -> list[ArchSpec]:
    return space_fit_specs(job.space, job.options.fit_specs, seed=job.options.seed)


def _fit(job: _Job, table: LatencyTable, specs: list[ArchSpec]) -> None:
    if not specs:
        return
    start = time.perf_counter()
    fit = table.fit_overhead(specs, rounds=job.latency.fit_rounds, progress=job.options.progress)
    print(
        f"fitted on {fit.n_specs} networks in {time.perf_counter() - start:.1f} s: predicted = "
        f"{fit.scale:.3f} x sum of layers + {fit.overhead_ms:.3f} ms (rmse {fit.rmse_ms or 0:.3f} ms)"
    )


def _unit_line(table: LatencyTable) -> str:
    """The table's drift unit, and a warning when this machine's stored unit differs (a table
    started from a calibration taken in a slow spell reads that much above a quiet stopwatch)."""
    if not table.reference_ms:
        return ""
    protocol = table.protocol
    machine = read_unit(unit_key(str(protocol.fingerprint), protocol.threads, protocol.timer))
    line = f"drift unit: reference workload {table.reference_ms:.4f} ms"
    if machine and abs(table.reference_ms / machine - 1) > 1 - FASTER:
        line += (f"; this machine's stored unit is {machine:.4f} ms, so the table's figures read "
                 f"{table.reference_ms / machine:.2f}x a quiet stopwatch: rebuild it to fix that")
    return line + "\n"


def _print_table(table: LatencyTable, space: SearchSpace) -> None:
    layers = list(space.layers())
    covered = sum(layer in table for layer in layers)
    fit = table.fit
    rmse = f", rmse {fit.rmse_ms:.3f} ms" if fit.rmse_ms is not None else ""
    print(
        f"table {table.path}: {len(table)} rows; covers {covered} of the space's {len(layers)} layers\n"
        f"protocol: {table.protocol.describe()}\n"
        + _unit_line(table)
        + f"fit: scale {fit.scale:.3f}, overhead {fit.overhead_ms:.3f} ms, {fit.n_specs} networks{rmse}"
    )
    for record in table.imports:
        print(f"imported: {len(record.keys)} rows from {record.csv}, "
              f"measured as {record.protocol.describe()}")
