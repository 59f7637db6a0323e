"""The weight-sharing supernet of a :class:`~search_spaces.space.SearchSpace` (Once-for-All / BigNAS).

Per stage it holds the deepest choice of blocks; block ``j`` of a stage holds the largest expansion
of its template, the widest stage output, depthwise weights of the space's largest kernel and an SE
module. Any spec of the space runs as a sub-network: depth by the first blocks of each stage, width
and expansion by leading channels, smaller kernels through learned transformations of the kernel's
centre, SE on or off, ReLU or hard-swish on the same weights. Stem and head are the seed's (the
head's input conv reads the leading channels of the last stage).

Initialisation is the builder's, but for BigNAS's zero-initialised residual branches: the last batch
norm of every block after a stage's first (a residual block in every sub-network) starts with zero
scale, so each such block starts as the identity and every sub-network as its shallowest form. Without
it the largest sub-network of V3-Small's space (16 blocks, residual sums growing block after block),
trained alone as a plain network on the embedded synthetic set, stayed at chance (9.0% after 150
steps, 12.2% after 400) where the seed reached 31.4%; with it, 31.2% after 150 steps.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from evaluators.supernet.elastic import ElasticBlock, ElasticHead
from search_spaces.blocks import EfficientHead, InvertedResidual
from search_spaces.builder import MobileNetV3Like, build_layer, build_model, init_weights
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec, BlockSpec, se_channels

_PLAN_CACHE = 4096  # sub-network plans kept per supernet
ALL_DIMS = frozenset({"depth", "width", "kernel", "exp", "se", "act"})


def draw_spec(space: SearchSpace, rng: random.Random, elastic: frozenset[str],
              largest: dict[str, Any]) -> ArchSpec:
    """A uniformly drawn spec whose ``elastic`` dimensions vary; the others are ``largest``'s params."""
    params = dict(largest)
    for stage in space.stages:
        prefix = f"s{stage.index}"
        if "depth" in elastic:
            params[f"{prefix}.depth"] = rng.choice(stage.depths)
        if "width" in elastic:
            params[f"{prefix}.width"] = rng.choice(space.widths)
        for j in range(max(stage.depths)):
            for key, choices in (("kernel", space.kernels), ("exp", space.expansions), ("se", space.se),
                                 ("act", space.acts)):
                if key in elastic:
                    params[f"{prefix}.b{j}.{key}"] = rng.choice(choices)
    return space.spec_from_params(params)



@dataclass(frozen=True)
class BlockSlot:
    """Where a block of a spec runs in the supernet: stage, position in the stage, the block."""

    stage: int
    index: int
    block: BlockSpec


class SuperNet(nn.Module):
    """One network holding every sub-network of ``space``; runs the active one (default: the largest).

    ``set_active(spec)`` chooses the sub-network, ``forward_spec(x, spec)`` runs one, ``extract(spec)``
    returns it as an ordinary :class:`~search_spaces.builder.MobileNetV3Like` with these weights."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        largest = self._corner(max)  # checks the spec limits before any weights are allocated
        seed = space.seed
        self.stem = build_layer(next(seed.layers()))
        max_kernel = max(space.kernels)
        in_widths = {seed.stem.channels}
        self.stages = nn.ModuleList()
        self.sortable: list[list[bool]] = []
        for stage in space.stages:
            widths = {space.stage_width(stage, w) for w in space.widths}
            blocks, sortable = nn.ModuleList(), []
            for j in range(max(stage.depths)):
                exps = {space.block_exp(stage.template(j), e) for e in space.expansions}
                block_in = in_widths if j == 0 else widths
                blocks.append(ElasticBlock(max(block_in), max(exps), max(widths), max_kernel=max_kernel,
                                           stride=stage.stride if j == 0 else 1,
                                           squeeze=max(se_channels(e) for e in exps)))
                # a block that may skip its expansion conv feeds its input straight to the depthwise
                # conv, whose channels must then stay in the input's order
                sortable.append(not exps & block_in)
            self.stages.append(blocks)
            self.sortable.append(sortable)
            in_widths = widths
        self.head = ElasticHead(max(in_widths), seed.head, seed.num_classes)
        init_weights(self)
        self.zero_residual_branches()
        # channels-last weights and inputs: on the CPU 4.4x faster for V3-Small's largest sub-network
        # at 32x32 (wide 7x7 depthwise convs); the format survives .to(device) and deep copies
        self.memory_format = torch.channels_last
        self.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # (missing from the stubs)
        self._plans: OrderedDict[ArchSpec, tuple[BlockSlot, ...]] = OrderedDict()
        self._active = largest
        self._slots = self.plan(largest)

    @torch.no_grad()
    def zero_residual_branches(self) -> None:
        """Zero the last batch-norm scale of each block that is residual in every sub-network (all but
        a stage's first: stride 1, stage width in and out), making it the identity (BigNAS's init)."""
        for stage in range(len(self.stages)):
            for index in range(1, len(self.stages[stage])):  # type: ignore[arg-type]
                nn.init.zeros_(self.block_at(stage, index).project_bn.weight)

    # --- the space's corners and random members ---------------------------------------
    def largest(self) -> ArchSpec:
        """Deepest, widest, largest expansion and kernel, SE everywhere it is allowed, seed activations."""
        return self._corner(max)

    def smallest(self) -> ArchSpec:
        """Shallowest, narrowest, smallest expansion and kernel, no SE unless the space forces it,
        seed activations."""
        return self._corner(min)

    def _corner(self, pick: Callable[[Sequence[Any]], Any]) -> ArchSpec:
        space: SearchSpace = self.space
        params: dict[str, Any] = {}
        for stage in space.stages:
            prefix = f"s{stage.index}"
            params[f"{prefix}.depth"] = pick(stage.depths)
            params[f"{prefix}.width"] = pick(space.widths)
            for j in range(max(stage.depths)):
                name = f"{prefix}.b{j}"
                params[f"{name}.kernel"] = pick(space.kernels)
                params[f"{name}.exp"] = pick(space.expansions)
                params[f"{name}.se"] = pick(space.se)
                params[f"{name}.act"] = stage.template(j).act
        return space.spec_from_params(params)

    def sample(self, rng: random.Random) -> ArchSpec:
        """A spec drawn uniformly over each choice of the space (depth, width, and per block kernel,
        expansion, SE and activation) with ``rng``."""
        return draw_spec(self.space, rng, ALL_DIMS, {})

    # --- the active sub-network -------------------------------------------------------
    def plan(self, spec: ArchSpec) -> tuple[BlockSlot, ...]:
        """Where each block of ``spec`` runs; :class:`SpecError` when ``spec`` is not in the space."""
        slots = self._plans.get(spec)
        if slots is not None:
            self._plans.move_to_end(spec)
            return slots
        params = self.space.params_of(spec)
        found: list[BlockSlot] = []
        blocks = iter(spec.blocks)
        for stage in self.space.stages:
            found += [BlockSlot(stage.index, j, next(blocks)) for j in range(params[f"s{stage.index}.depth"])]
        slots = tuple(found)
        self._plans[spec] = slots
        if len(self._plans) > _PLAN_CACHE:
            self._plans.popitem(last=False)
        return slots

    @property
    def active(self) -> ArchSpec:
        return self._active

    def set_active(self, spec: ArchSpec) -> None:
        """Make ``spec`` the sub-network that :meth:`forward` runs."""
        self._slots = self.plan(spec)
        self._active = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x.contiguous(memory_format=self.memory_format))
        for slot in self._slots:
            x = self.block_at(slot.stage, slot.index)(x, slot.block)
        return self.head(x)

    def block_at(self, stage: int, index: int) -> ElasticBlock:
        """The supernet's block ``index`` of stage ``stage``."""
        return cast(ElasticBlock, self.stages[stage][index])  # type: ignore[index]

    def forward_spec(self, x: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
        """Run ``spec`` on ``x`` (it stays the active sub-network)."""
        self.set_active(spec)
        return self(x)

    # --- sub-networks as ordinary networks --------------------------------------------
    @torch.no_grad()
    def extract(self, spec: ArchSpec) -> MobileNetV3Like:
        """``build_model(spec)`` holding this supernet's weights and batch-norm statistics for ``spec``
        (same device, train/eval mode and memory format: in the supernet's channels-last format it
        runs the same convolution kernels, so computes the same numbers)."""
        slots = self.plan(spec)
        model = build_model(spec)
        model.stem.load_state_dict(self.stem.state_dict())
        for slot, target in zip(slots, model.blocks, strict=True):
            self.block_at(slot.stage, slot.index).copy_into(cast(InvertedResidual, target), slot.block)
        self.head.copy_into(cast(EfficientHead, model.head))
        device = next(self.parameters()).device
        moved = model.to(device, memory_format=self.memory_format)  # type: ignore[call-overload]
        return cast(MobileNetV3Like, moved.train(self.training))

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Re-order each block's expansion channels by importance (progressive shrinking), so smaller
        expansions keep the channels that matter most; the largest sub-network's function is
        unchanged. Blocks where some sub-network skips the expansion conv keep their order."""
        for stage, sortable in enumerate(self.sortable):
            for index, ok in enumerate(sortable):
                if ok:
                    self.block_at(stage, index).sort_expansion()

    def weights_version(self) -> tuple[int, ...]:
        """Changes whenever a parameter is modified in place (optimizer steps, ``load_state_dict``,
        :meth:`sort_channels`): what score caches key on."""
        return tuple(p._version for p in self.parameters())
