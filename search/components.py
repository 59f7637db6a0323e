"""From typed settings to the pieces a search worker needs (space, objective, evaluators).

``SearchSettings`` is plain and picklable, so worker processes rebuild the same components."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from evaluators.accuracy import ProxyConfig, accuracy_evaluator, proxy_data_config
from evaluators.accuracy.weight_sharing import SupernetEvaluator, check_same_space
from evaluators.data import DataConfig, load_dataset
from evaluators.latency import LatencyConfig, MeasuredLatency, latency_evaluator
from evaluators.training import TrainConfig
from search.objectives import Objective, ObjectiveConfig
from search.runner import Components
from search.study import StudyConfig, open_study
from search_spaces.config import SpaceConfig, build_space
from search_spaces.errors import MobilenasError
from search_spaces.reference import REFERENCES, reference_spec
from search_spaces.space import SearchSpace
from search_spaces.spec import ACTIVATIONS, ArchSpec

log = logging.getLogger("mobilenas.search")


@dataclass
class SearchSettings:
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainConfig = field(default_factory=TrainConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    seed: int = 0
    reference_points: bool = True


def build_components(settings: SearchSettings) -> Components:
    """Load the data once, open the latency evaluator, resolve the latency target."""
    settings.proxy.validate()
    data = load_dataset(proxy_data_config(settings.proxy, settings.data))
    accuracy = accuracy_evaluator(settings.proxy, settings.data, settings.trainer, seed=settings.seed,
                                  splits=data)
    num_classes, in_channels = data.num_classes, data.in_channels
    resolution = settings.proxy.resolution or settings.data.resolution
    space = build_space(settings.space, num_classes=num_classes, resolution=resolution,
                        in_channels=in_channels)
    if isinstance(accuracy, SupernetEvaluator):
        check_same_space(accuracy.net.space, space, "proxy.supernet")
    latency = latency_evaluator(settings.latency, resolution)
    seed_latency = latency(space.seed) if settings.objective.target_ms is None else 0.0
    objective = Objective.from_config(settings.objective, seed_latency_ms=seed_latency)
    references = {}
    if settings.reference_points:
        references = {name: reference_spec(name, num_classes=num_classes, resolution=resolution)
                      .replace(in_channels=in_channels) for name in REFERENCES}
    if isinstance(accuracy, SupernetEvaluator):  # a supernet scores the architectures of its space only
        outside = sorted(name for name, spec in references.items() if not space.contains(spec))
        if outside:
            log.info("reference points not in the supernet's space, left out of the plot: %s",
                     ", ".join(outside))
        references = {name: spec for name, spec in references.items() if name not in outside}
    return Components(space=space, objective=objective, accuracy=accuracy, latency=latency,
                      references=references, data=data)


def extreme_spec(space: SearchSpace, *, smallest: bool) -> ArchSpec:
    """The space's smallest architecture, or its largest: in every dimension the choice that costs
    least (most): depth, width, expansion, kernel, SE off (on), ReLU (hard-swish)."""
    pick = min if smallest else max
    params: dict[str, Any] = {}
    for stage in space.stages:
        prefix, depth = f"s{stage.index}", pick(stage.depths)
        params.update({f"{prefix}.depth": depth, f"{prefix}.width": pick(space.widths)})
        for j in range(depth):
            block = f"{prefix}.b{j}"
            params.update({f"{block}.exp": pick(space.expansions), f"{block}.kernel": pick(space.kernels),
                           f"{block}.se": pick(space.se),
                           f"{block}.act": pick(space.acts, key=ACTIVATIONS.index)})
    return space.spec_from_params(params)


def latency_range(components: Components) -> tuple[float, float] | None:
    """Latency of the space's smallest and largest architectures (:func:`extreme_spec`) with the
    search's own latency evaluator (LUT rows the search measures anyway): about the fastest and
    slowest reachable. None when one cannot be costed (e.g. the largest is over ``limits``)."""
    try:
        fast, slow = (extreme_spec(components.space, smallest=smallest) for smallest in (True, False))
        return float(components.latency(fast)), float(components.latency(slow))
    except MobilenasError as err:
        log.info("latency range of the space not estimated: %s", err)
        return None


def with_fixed_target(settings: SearchSettings, target_ms: float) -> SearchSettings:
    """The same settings with the latency target pinned in ms (workers and resumes share it)."""
    return replace(settings, objective=replace(settings.objective, target_ms=target_ms))


def pin_target(components: Components, settings: SearchSettings, study_cfg: StudyConfig,
               url: str) -> SearchSettings:
    """Resolve the latency target once and keep it in the study, so that workers and reruns of
    the same study search against the same number; ``components`` gets the pinned objective.
    With ``latency.mode=measure`` the drift-correction unit is kept the same way."""
    study = open_study(study_cfg, components.objective, url)
    target = study.user_attrs.get("target_ms")
    asked = {"target_ms": settings.objective.target_ms, "target_ratio": settings.objective.target_ratio}
    if target is None:
        target = components.objective.target_ms
        study.set_user_attr("target_ms", target)
        study.set_user_attr("target_config", asked)
        study.set_user_attr("seed_spec", str(components.space.seed))
    elif study.user_attrs.get("target_config", asked) != asked:
        log.warning("study %s keeps its target %.4f ms (set with %s; this run asks %s); use a new "
                    "study.name to change it", study_cfg.name, target, study.user_attrs["target_config"],
                    asked)
    components.objective = replace(components.objective, target_ms=target)
    settings = with_fixed_target(settings, target)
    if isinstance(components.latency, MeasuredLatency):  # one drift-correction unit for all trials
        unit = study.user_attrs.get("latency_reference_ms")
        if unit is None:
            components.latency(components.space.seed)  # calibrates the unit (cached when measured)
            unit = components.latency.reference_ms
            study.set_user_attr("latency_reference_ms", unit)
        if components.latency.reference_ms != unit:  # figures cached so far are in another unit
            components.latency = MeasuredLatency(components.latency.protocol, reference_ms=unit)
        settings = replace(settings, latency=replace(settings.latency, reference_ms=unit))
    return settings
