"""The architecture spec: the one immutable, validated value that flows between stages.

A spec stores the choices that define a MobileNetV3-like network (stem, bneck blocks, the
efficient last stage, classes, input resolution). It imports no torch; only
:mod:`search_spaces.builder` turns it into modules.

Three lossless serial forms exist: a plain dict (for JSON and YAML, see
:mod:`search_spaces.serialize`) and a one-line string with one token per layer, written by
``str(spec)`` and parsed by :mod:`search_spaces.blockstring`::

    in_r224_c3 stem_k3_c16_s2_hs ir_k3_e16_c16_s1_re ir_k5_e72_c40_s2_se_re ... head_c960_h1280_hs_d0.2_n1000

Tokens: ``in`` (resolution ``r``, input channels ``c``), ``stem`` (kernel ``k``, channels
``c``, stride ``s``, activation), ``ir`` for each bneck (kernel ``k``, expansion channels
``e``, output channels ``c``, stride ``s``, optional ``se``, activation), ``head`` (1x1 conv
channels ``c``, hidden width ``h``, activation, dropout ``d``, classes ``n``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from search_spaces.errors import SpecError
from search_spaces.limits import active_limits, check_max

KERNELS = (3, 5, 7)
STRIDES = (1, 2)
ACTIVATIONS = ("RE", "HS")
MIN_RESOLUTION = 32


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never going below 90% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv (padding kernel // 2)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def se_channels(channels: int) -> int:
    """The SE squeeze width for ``channels`` input channels: a quarter, rounded to 8."""
    return make_divisible(channels / 4, 8)


def _check_int(where: str, name: str, value: Any, minimum: int = 1, limit: str | None = None) -> None:
    """``value`` is an integer >= ``minimum`` and, with ``limit``, <= that field of the active limits."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise SpecError(f"{where}: {name} must be an integer >= {minimum}, got {value}")
    if limit is not None:
        check_max(where, name, value, limit)


def _check_choice(where: str, name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if isinstance(value, bool) or value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise SpecError(f"{where}: {name} must be one of {{{shown}}}, got {value!r}")


def _check_kernel(where: str, kernel: Any) -> None:
    _check_choice(where, "kernel", kernel, KERNELS)


@dataclass(frozen=True)
class StemSpec:
    """The first full convolution: conv kxk, batch norm, activation."""

    channels: int = 16
    kernel: int = 3
    stride: int = 2
    act: str = "HS"

    def __post_init__(self) -> None:
        _check_int("stem", "channels", self.channels, limit="max_channels")
        _check_kernel("stem", self.kernel)
        _check_choice("stem", "stride", self.stride, STRIDES)
        _check_choice("stem", "act", self.act, ACTIVATIONS)


@dataclass(frozen=True)
class BlockSpec:
    """One bneck (inverted residual with linear bottleneck).

    ``exp`` is the expansion width in channels, as in the paper's tables; when it equals the
    block's input channels there is no expansion conv.
    """

    kernel: int
    exp: int
    out: int
    se: bool
    act: str
    stride: int

    def __post_init__(self) -> None:
        self.validate("block")

    def validate(self, where: str) -> None:
        _check_kernel(where, self.kernel)
        _check_int(where, "exp", self.exp, limit="max_channels")
        _check_int(where, "out", self.out, limit="max_channels")
        if not isinstance(self.se, bool):
            raise SpecError(f"{where}: se must be true or false, got {self.se!r}")
        _check_choice(where, "act", self.act, ACTIVATIONS)
        _check_choice(where, "stride", self.stride, STRIDES)

    def has_residual(self, in_channels: int) -> bool:
        """Residual connection only when stride 1 and input width equals output width."""
        return self.stride == 1 and in_channels == self.out

    def has_expansion(self, in_channels: int) -> bool:
        """No expansion conv when the expansion width equals the input width."""
        return self.exp != in_channels

    def replace(self, **changes: Any) -> BlockSpec:
        return BlockSpec(**{**self.__dict__, **changes})


@dataclass(frozen=True)
class HeadSpec:
    """V3's efficient last stage: 1x1 conv (BN, act), global pool, 1x1 conv without BN
    (act), dropout, classifier."""

    channels: int = 960
    hidden: int = 1280
    act: str = "HS"
    dropout: float = 0.2

    def __post_init__(self) -> None:
        _check_int("head", "channels", self.channels, limit="max_channels")
        _check_int("head", "hidden", self.hidden, limit="max_channels")
        _check_choice("head", "act", self.act, ACTIVATIONS)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise SpecError(f"head: dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0 or math.isnan(self.dropout):
            raise SpecError(f"head: dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "dropout", float(self.dropout))


def stem_token(stem: StemSpec) -> str:
    return f"stem_k{stem.kernel}_c{stem.channels}_s{stem.stride}_{stem.act.lower()}"


def block_token(block: BlockSpec) -> str:
    se = "_se" if block.se else ""
    return f"ir_k{block.kernel}_e{block.exp}_c{block.out}_s{block.stride}{se}_{block.act.lower()}"


def head_token(head: HeadSpec, num_classes: int) -> str:
    return f"head_c{head.channels}_h{head.hidden}_{head.act.lower()}_d{head.dropout:g}_n{num_classes}"


@dataclass(frozen=True)
class Layer:
    """One layer with the shape it sees: the unit of latency lookup tables and layer printouts.

    ``kind`` is ``stem``, ``block`` or ``head``; ``op`` is the layer's own spec. Hashable, so
    it keys lookup tables; ``key`` is its stable text form (the spec token plus its input).
    """

    kind: str
    resolution: int
    in_channels: int
    op: StemSpec | BlockSpec | HeadSpec
    num_classes: int = 0

    @property
    def token(self) -> str:
        """The layer's token of the spec string (a head's carries the number of classes)."""
        if isinstance(self.op, StemSpec):
            return stem_token(self.op)
        if isinstance(self.op, BlockSpec):
            return block_token(self.op)
        return head_token(self.op, self.num_classes)

    @property
    def key(self) -> str:
        return f"{self.kind}:r{self.resolution}:c{self.in_channels}:{self.token}"

    @property
    def out_resolution(self) -> int:
        if isinstance(self.op, HeadSpec):
            return 1
        return conv_output_size(self.resolution, self.op.kernel, self.op.stride)


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: what the builder materializes and every evaluator scores."""

    blocks: tuple[BlockSpec, ...]
    stem: StemSpec = field(default_factory=StemSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    num_classes: int = 1000
    resolution: int = 224
    in_channels: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.blocks, list):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        if not isinstance(self.blocks, tuple) or not self.blocks:
            raise SpecError("blocks: a spec needs at least one bneck block")
        check_max("spec", "the number of blocks", len(self.blocks), "max_blocks")
        for i, block in enumerate(self.blocks):
            if not isinstance(block, BlockSpec):
                raise SpecError(f"blocks[{i}]: expected a BlockSpec, got {type(block).__name__}")
        if not isinstance(self.stem, StemSpec):
            raise SpecError(f"stem: expected a StemSpec, got {type(self.stem).__name__}")
        if not isinstance(self.head, HeadSpec):
            raise SpecError(f"head: expected a HeadSpec, got {type(self.head).__name__}")
        _check_int("spec", "num_classes", self.num_classes, limit="max_classes")
        _check_int("spec", "in_channels", self.in_channels, limit="max_in_channels")
        _check_int("spec", "resolution", self.resolution, minimum=MIN_RESOLUTION, limit="max_resolution")
        self._check_size()

    def _check_size(self) -> None:
        """Refuse a spec whose weights or largest feature map would be huge, before any build."""
        limits = active_limits()
        params, activation = self.param_count(), self.peak_activation()
        if params > limits.max_params:
            raise SpecError(f"spec: {params:,} parameters ({4 * params / 2**30:.1f} GiB of float32) is "
                            f"over limits.max_params = {limits.max_params:,}; use fewer or narrower blocks")
        if activation > limits.max_activation:
            raise SpecError(f"spec: its largest feature map holds {activation:,} values per image "
                            f"({4 * activation / 2**30:.1f} GiB of float32), over limits.max_activation = "
                            f"{limits.max_activation:,}; use a lower resolution or narrower early layers")

    def param_count(self) -> int:
        """The number of trainable parameters of the built network, by arithmetic (no torch)."""
        stem = self.stem
        total = stem.kernel**2 * self.in_channels * stem.channels + 2 * stem.channels
        for block, chs in zip(self.blocks, self.block_inputs()):
            if block.has_expansion(chs):
                total += chs * block.exp + 2 * block.exp
            total += block.kernel**2 * block.exp + 2 * block.exp
            if block.se:
                squeeze = se_channels(block.exp)
                total += 2 * block.exp * squeeze + squeeze + block.exp
            total += block.exp * block.out + 2 * block.out
        head, last = self.head, self.blocks[-1].out
        total += last * head.channels + 2 * head.channels
        total += head.channels * head.hidden + head.hidden
        return total + head.hidden * self.num_classes + self.num_classes

    def peak_activation(self) -> int:
        """Elements of the largest feature map one image produces (input included)."""
        largest = self.in_channels * self.resolution**2
        for layer in self.layers():
            op, size, out_size = layer.op, layer.resolution, layer.out_resolution
            if isinstance(op, BlockSpec):
                largest = max(largest, op.exp * size**2, op.out * out_size**2)
            elif isinstance(op, HeadSpec):
                largest = max(largest, op.channels * size**2)
            else:
                largest = max(largest, op.channels * out_size**2)
        return largest

    def __str__(self) -> str:
        """The canonical one-line form (parsed back by :func:`search_spaces.blockstring.from_string`)."""
        tokens = [f"in_r{self.resolution}_c{self.in_channels}", stem_token(self.stem)]
        tokens += [block_token(b) for b in self.blocks]
        tokens.append(head_token(self.head, self.num_classes))
        return " ".join(tokens)

    def replace(self, **changes: Any) -> ArchSpec:
        return ArchSpec(**{**self.__dict__, **changes})

    def with_blocks(self, blocks: tuple[BlockSpec, ...] | list[BlockSpec]) -> ArchSpec:
        return self.replace(blocks=tuple(blocks))

    def block_inputs(self) -> tuple[int, ...]:
        """Input channels of each block."""
        widths = [self.stem.channels] + [b.out for b in self.blocks[:-1]]
        return tuple(widths)

    def layers(self) -> Iterator[Layer]:
        """Each layer with the resolution and channels it sees, stem to head."""
        size, channels = self.resolution, self.in_channels
        stem = Layer("stem", size, channels, self.stem)
        yield stem
        size, channels = stem.out_resolution, self.stem.channels
        for block in self.blocks:
            layer = Layer("block", size, channels, block)
            yield layer
            size, channels = layer.out_resolution, block.out
        yield Layer("head", size, channels, self.head, self.num_classes)
