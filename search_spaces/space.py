"""Search spaces around a seed spec: MnasNet's factorized hierarchical space.

The seed's blocks are grouped into stages (a new stage starts at a stride-2 block or a change
of output width). Per stage the space chooses a depth (the seed's depth plus a delta) and an
output width (a multiple of the seed's); per block it chooses kernel, expansion (a multiple of
the seed block's expansion channels), SE on/off and activation. Stem and last stage are the
seed's.

Only this module touches Optuna trials. Parameter names are stable and plain::

    s2.depth  s2.width  s2.b0.kernel  s2.b0.exp  s2.b0.se  s2.b0.act

Choosing depth delta 0, width 1.0 and expansion 1.0 everywhere (with the seed's kernels, SE
and activations) gives back the seed exactly, so a search can start from it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from search_spaces.errors import SpecError
from search_spaces.spec import (
    ACTIVATIONS,
    KERNELS,
    ArchSpec,
    BlockSpec,
    Layer,
    conv_output_size,
    make_divisible,
)


@dataclass(frozen=True)
class Stage:
    """A run of seed blocks sharing an output width; only the first may downsample."""

    index: int
    seed_blocks: tuple[BlockSpec, ...]
    depths: tuple[int, ...]

    @property
    def stride(self) -> int:
        return self.seed_blocks[0].stride

    @property
    def seed_out(self) -> int:
        return self.seed_blocks[0].out

    def template(self, j: int) -> BlockSpec:
        """The seed block that block ``j`` of this stage varies; blocks past the seed's depth
        repeat the stage's last block (at stride 1)."""
        if j < len(self.seed_blocks):
            return self.seed_blocks[j]
        return self.seed_blocks[-1].replace(stride=1)


def split_stages(blocks: Sequence[BlockSpec]) -> list[tuple[BlockSpec, ...]]:
    """Group blocks into stages: a new stage at each stride-2 block or change of width."""
    stages: list[list[BlockSpec]] = []
    for block in blocks:
        if not stages or block.stride == 2 or block.out != stages[-1][-1].out:
            stages.append([block])
        else:
            stages[-1].append(block)
    return [tuple(stage) for stage in stages]


def _choices(name: str, values: Sequence[Any], allowed: Sequence[Any] | None = None,
             must_contain: Any = None) -> tuple[Any, ...]:
    values = tuple(values)
    if not values:
        raise SpecError(f"space.{name}: needs at least one choice")
    if len(set(values)) != len(values):
        raise SpecError(f"space.{name}: choices must be distinct, got {list(values)}")
    if allowed is not None:
        bad = [v for v in values if isinstance(v, bool) != isinstance(allowed[0], bool) or v not in allowed]
        if bad:
            raise SpecError(
                f"space.{name}: {bad} not allowed; choose from {list(allowed)}"
            )
    if must_contain is not None and must_contain not in values:
        raise SpecError(
            f"space.{name}: must contain {must_contain!r} so that the seed is in the space, "
            f"got {list(values)}"
        )
    return values


@dataclass(frozen=True)
class SearchSpace:
    """A factorized space around ``seed``; see the module docstring."""

    seed: ArchSpec
    depth_deltas: tuple[int, ...] = (-1, 0, 1)
    widths: tuple[float, ...] = (0.75, 1.0, 1.25)
    kernels: tuple[int, ...] = KERNELS
    expansions: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5)
    se: tuple[bool, ...] = (False, True)
    acts: tuple[str, ...] = ACTIVATIONS
    stages: tuple[Stage, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, ArchSpec):
            raise SpecError(f"space.seed: expected an ArchSpec, got {type(self.seed).__name__}")
        for name, value in (("depth_deltas", self.depth_deltas), ("widths", self.widths),
                            ("expansions", self.expansions)):
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
                raise SpecError(f"space.{name}: choices must be numbers, got {list(value)}")
        if any(v <= 0 for v in (*self.widths, *self.expansions)):
            raise SpecError("space.widths and space.expansions must be positive multipliers")
        object.__setattr__(self, "depth_deltas", _choices("depth_deltas", self.depth_deltas, must_contain=0))
        object.__setattr__(self, "widths", _choices("widths", self.widths, must_contain=1.0))
        object.__setattr__(self, "expansions", _choices("expansions", self.expansions, must_contain=1.0))
        object.__setattr__(self, "kernels", _choices("kernels", self.kernels, KERNELS))
        object.__setattr__(self, "se", _choices("se", self.se, (False, True)))
        object.__setattr__(self, "acts", _choices("acts", self.acts, ACTIVATIONS))
        seed_block_values: dict[str, set[Any]] = {
            "kernels": {b.kernel for b in self.seed.blocks},
            "se": {b.se for b in self.seed.blocks},
            "acts": {b.act for b in self.seed.blocks},
        }
        for name, used in seed_block_values.items():
            missing = used - set(getattr(self, name))
            if missing:
                raise SpecError(
                    f"space.{name}: must contain the seed's {sorted(missing)} so that the seed "
                    f"is in the space, got {list(getattr(self, name))}"
                )
        stages = []
        for i, blocks in enumerate(split_stages(self.seed.blocks)):
            depths = tuple(sorted({max(1, len(blocks) + d) for d in self.depth_deltas}))
            stages.append(Stage(i, blocks, depths))
        object.__setattr__(self, "stages", tuple(stages))

    # --- size -------------------------------------------------------------------------
    @property
    def block_choices(self) -> int:
        return len(self.kernels) * len(self.expansions) * len(self.se) * len(self.acts)

    def size(self) -> int:
        """Number of distinct parameter assignments."""
        total = 1
        for stage in self.stages:
            total *= len(self.widths) * sum(self.block_choices**d for d in stage.depths)
        return total

    def log10_size(self) -> float:
        return math.log10(self.size())

    # --- parameters <-> spec -----------------------------------------------------------
    def stage_width(self, stage: Stage, width: float) -> int:
        return make_divisible(stage.seed_out * width)

    def block_exp(self, template: BlockSpec, expansion: float) -> int:
        return make_divisible(template.exp * expansion)

    def sample(self, trial: optuna.trial.BaseTrial) -> ArchSpec:
        """Draw a spec from ``trial`` (any Optuna trial, ``FixedTrial`` included)."""
        blocks: list[BlockSpec] = []
        for stage in self.stages:
            prefix = f"s{stage.index}"
            depth = trial.suggest_categorical(f"{prefix}.depth", list(stage.depths))
            width = trial.suggest_categorical(f"{prefix}.width", list(self.widths))
            out = self.stage_width(stage, width)
            for j in range(depth):
                template = stage.template(j)
                name = f"{prefix}.b{j}"
                expansion = trial.suggest_categorical(f"{name}.exp", list(self.expansions))
                blocks.append(
                    BlockSpec(
                        kernel=trial.suggest_categorical(f"{name}.kernel", list(self.kernels)),
                        exp=self.block_exp(template, expansion),
                        out=out,
                        se=trial.suggest_categorical(f"{name}.se", list(self.se)),
                        act=trial.suggest_categorical(f"{name}.act", list(self.acts)),
                        stride=stage.stride if j == 0 else 1,
                    )
                )
        return self.seed.with_blocks(blocks)

    def spec_from_params(self, params: dict[str, Any]) -> ArchSpec:
        """The spec that ``params`` (as stored on an Optuna trial) stand for."""
        try:
            return self.sample(optuna.trial.FixedTrial(params))
        except ValueError as err:
            raise SpecError(f"parameters do not fit this space: {err}") from None

    def params_of(self, spec: ArchSpec) -> dict[str, Any]:
        """Parameters that give back ``spec``; :class:`SpecError` says why if none do."""
        for field_name in ("stem", "head", "num_classes", "resolution", "in_channels"):
            if getattr(spec, field_name) != getattr(self.seed, field_name):
                raise SpecError(
                    f"{field_name} differs from the space's seed: {getattr(spec, field_name)} "
                    f"vs {getattr(self.seed, field_name)} (the space varies blocks only)"
                )
        errors: list[tuple[int, str]] = []
        params = self._match_stages(spec.blocks, 0, 0, errors)
        if params is None:
            # Report the failure that got furthest into the spec: the likeliest culprit.
            position, message = max(errors, key=lambda e: e[0]) if errors else (0, "no blocks")
            raise SpecError(message)
        return params

    def _match_stages(
        self, blocks: Sequence[BlockSpec], stage_index: int, position: int,
        errors: list[tuple[int, str]],
    ) -> dict[str, Any] | None:
        """Assign ``blocks[position:]`` to stages ``stage_index..``; None when impossible.

        Stage boundaries are not always visible in a spec (two neighbouring stages may end
        up with one width), so every allowed depth is tried."""
        if stage_index == len(self.stages):
            if position == len(blocks):
                return {}
            errors.append((position, f"spec has {len(blocks) - position} block(s) more than "
                                     "the space's deepest stages allow"))
            return None
        stage = self.stages[stage_index]
        for depth in stage.depths:
            try:
                params = self._stage_params(stage, blocks[position:position + depth])
            except SpecError as err:
                errors.append((position, str(err)))
                continue
            rest = self._match_stages(blocks, stage_index + 1, position + depth, errors)
            if rest is not None:
                return {**params, **rest}
        return None

    def _stage_params(self, stage: Stage, blocks: Sequence[BlockSpec]) -> dict[str, Any]:
        prefix = f"s{stage.index}"
        if len(blocks) not in stage.depths:
            raise SpecError(f"{prefix}.depth: {len(blocks)} blocks, allowed {list(stage.depths)}")
        params: dict[str, Any] = {f"{prefix}.depth": len(blocks)}
        params[f"{prefix}.width"] = _invert(
            f"{prefix}.width", blocks[0].out, self.widths, lambda w: self.stage_width(stage, w)
        )
        for j, block in enumerate(blocks):
            name = f"{prefix}.b{j}"
            stride = stage.stride if j == 0 else 1
            if block.stride != stride:
                raise SpecError(f"{name}.stride: {block.stride}, the space fixes {stride}")
            if block.out != blocks[0].out:
                raise SpecError(
                    f"{name}.out: {block.out}, but blocks of a stage share one width ({blocks[0].out})"
                )
            for key, choices in (("kernel", self.kernels), ("se", self.se), ("act", self.acts)):
                value = getattr(block, key)
                if value not in choices:
                    raise SpecError(f"{name}.{key}: {value!r}, allowed {list(choices)}")
                params[f"{name}.{key}"] = value
            template = stage.template(j)
            params[f"{name}.exp"] = _invert(
                f"{name}.exp", block.exp, self.expansions, lambda e: self.block_exp(template, e)
            )
        return params

    def contains(self, spec: ArchSpec) -> bool:
        try:
            self.params_of(spec)
        except SpecError:
            return False
        return True

    # --- layers a search can meet (what a latency table must cover) -------------------
    def layers(self) -> Iterator[Layer]:
        """Every distinct layer (with its input shape) that some spec of the space contains."""
        seen: set[Layer] = set()
        size = conv_output_size(self.seed.resolution, self.seed.stem.kernel, self.seed.stem.stride)
        stem = next(self.seed.layers())
        seen.add(stem)
        yield stem
        in_widths = {self.seed.stem.channels}
        for stage in self.stages:
            out_widths = {self.stage_width(stage, w) for w in self.widths}
            for j in range(max(stage.depths)):
                template = stage.template(j)
                stride = stage.stride if j == 0 else 1
                block_size = size if j == 0 else conv_output_size(size, 3, stage.stride)
                for out in sorted(out_widths):
                    for in_chs in sorted(in_widths) if j == 0 else (out,):
                        for k, e, se, act in itertools.product(
                            self.kernels, self.expansions, self.se, self.acts
                        ):
                            block = BlockSpec(k, self.block_exp(template, e), out, se, act, stride)
                            layer = Layer("block", block_size, in_chs, block)
                            if layer not in seen:
                                seen.add(layer)
                                yield layer
            size = conv_output_size(size, 3, stage.stride)
            in_widths = out_widths
        for in_chs in sorted(in_widths):
            layer = Layer("head", size, in_chs, self.seed.head, self.seed.num_classes)
            if layer not in seen:
                seen.add(layer)
                yield layer


def _invert(name: str, value: int, choices: Sequence[float], forward: Any) -> float:
    ordered = sorted(choices, key=lambda c: (c != 1.0, c))  # prefer the seed's choice
    for choice in ordered:
        if forward(choice) == value:
            return choice
    reachable = sorted({forward(c) for c in choices})
    raise SpecError(f"{name}: {value} channels, reachable {reachable}")


def sample_specs(
    space: SearchSpace, n: int, *, seed: int = 0, exclude: Iterable[ArchSpec] = ()
) -> list[ArchSpec]:
    """``n`` distinct specs drawn from ``space`` by Optuna's seeded ``RandomSampler``, none of
    them in ``exclude`` (for validation, benchmarks and tests); the same seed gives the same
    specs."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"number of specs must be an integer >= 0, got {n!r}")
    excluded = set(exclude)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        found: dict[ArchSpec, None] = {}
        for _ in range(50 * n + 50):
            if len(found) == n:
                break
            trial = study.ask()
            spec = space.sample(trial)
            study.tell(trial, 0.0)
            if spec not in excluded:
                found[spec] = None
    finally:
        optuna.logging.set_verbosity(verbosity)
    if len(found) < n:
        raise SpecError(f"the space holds fewer than {n} distinct specs outside the excluded ones")
    return list(found)
