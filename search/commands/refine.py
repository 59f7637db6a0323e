"""``mobilenas refine``: NetAdapt refinement of a seed architecture to a latency target."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig

from evaluators.data import DataConfig
from evaluators.latency import LatencyConfig
from evaluators.training import TrainConfig
from search.arch import resolve_arch
from search.netadapt import NetAdaptConfig, NetAdaptResult
from search_spaces.errors import ConfigError
from search_spaces.limits import SpecLimits
from search_spaces.spec import ArchSpec

log = logging.getLogger("mobilenas.refine")


@dataclass
class RefineConfig:
    """``mobilenas refine``'s config (conf/refine.yaml)."""

    limits: SpecLimits = field(default_factory=SpecLimits)
    netadapt: NetAdaptConfig = field(default_factory=NetAdaptConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainConfig = field(default_factory=TrainConfig)
    # seed: reference name, spec file (.json/.yaml/.txt), spec string, or a train/search/refine run dir
    # (winner.json or spec.json, weights.safetensors)
    arch: str = "mobilenet_v3_small"
    width_mult: float = 1.0  # width multiplier, for reference names only
    # seed weights: a .safetensors file or a run dir; null: the arch run dir's weights if any, else the
    # seed is trained netadapt.pretrain_steps steps
    weights: str | None = None
    progress: bool = True  # progress bar over each iteration's proposals

    def validate(self) -> None:  # netadapt checks itself when built (NetAdaptConfig.__post_init__)
        self.data.validate()
        self.trainer.validate()
        self.latency.validate()


CONFIG = RefineConfig


def resolve_seed(arch: str, *, width_mult: float = 1.0,
                 weights: str | None = None) -> tuple[ArchSpec, dict[str, torch.Tensor] | None, str]:
    """The seed spec, its weights (None: untrained) and a line on where they came from.

    ``arch``: a reference name, spec file or spec string, or a train/search/refine run dir;
    ``weights``: a ``.safetensors`` file or a run dir holding one (default: the arch run dir's)."""
    from search.export import read_weights
    from search.export_sources import read_run

    state: dict[str, torch.Tensor] | None = None
    if Path(arch).is_dir():
        if width_mult != 1.0:
            raise ConfigError("refine.width_mult applies to reference names, not to a run dir")
        source = read_run(arch)
        spec, state = source.spec, source.weights
        where = f"run dir {arch}"
    else:
        spec = resolve_arch(arch, width_mult=width_mult)
        where = f"{arch} (width {width_mult:g})" if width_mult != 1.0 else arch
    if weights is not None:
        path = Path(weights)
        if path.is_dir():
            state = read_run(path).weights
            if state is None:
                raise ConfigError(f"refine.weights: {path} holds no weights.safetensors")
        else:
            state = read_weights(path)
        where += f", weights {weights}"
    return spec, state, where


def report(result: NetAdaptResult, files: dict[str, Path], run_dir: Path) -> str:
    """A few lines: seed -> refined latency and accuracy, status, files."""
    lines = [
        f"NetAdapt {result.status} after {result.iterations} iterations",
        f"  latency  {result.seed_latency_ms:.3f} -> {result.latency_ms:.3f} ms "
        f"(target {result.target_ms:.3f}, delta {result.delta_ms:.4f})",
        f"  val top-1 {result.seed_accuracy:.4f} (seed) -> {result.accuracy:.4f} (after final fine-tune)",
        f"  refined: {result.spec}",
        f"results in {run_dir}: " + ", ".join(p.name for p in files.values()),
        f"export it: mobilenas export run={run_dir}",
    ]
    return "\n".join(lines)


def run(options: RefineConfig) -> None:
    from evaluators.data import load_dataset
    from evaluators.latency import latency_evaluator
    from search.netadapt.refine import refine, write_outputs
    from search.run_record import latency_protocol

    netadapt_cfg, data_cfg, trainer_cfg, latency_cfg = (options.netadapt, options.data, options.trainer,
                                                        options.latency)
    run_dir = Path(HydraConfig.get().runtime.output_dir)

    spec, weights, where = resolve_seed(options.arch, width_mult=options.width_mult, weights=options.weights)
    data = load_dataset(data_cfg)
    spec = spec.replace(num_classes=data.num_classes, resolution=data.resolution,
                        in_channels=data.in_channels)
    latency = latency_evaluator(latency_cfg, data.resolution)
    log.info("seed %s: %s", where, spec)
    log.info("latency: %s", latency.describe())
    result = refine(spec, config=netadapt_cfg, latency_ms=latency, data=data, trainer=trainer_cfg,
                    run_dir=run_dir, weights=weights, progress=options.progress, data_config=data_cfg)
    files = write_outputs(run_dir, result, data=data, trainer=trainer_cfg, config=netadapt_cfg,
                          protocol=latency_protocol(latency), seed_source=where)
    print(report(result, files, run_dir))
