"""Weight inheritance: a narrower child network starts from its parent's weights.

Every tensor dimension of a MobileNetV3-like network runs over one *channel space*: the width
shared by a bottleneck group (its producers' outputs, its residual partners' inputs), a block's
expansion width (the input width itself when the block has no expansion conv), a block's SE
squeeze width, the head's 1x1 conv and hidden widths. When the child's space is narrower, the
child keeps the parent's channels of highest importance -- the L1 norm of the filters that
produce them, summed over every producer of the space (for a group: the stem or leading
block's projection and all its residual partners' projections) -- in their original order,
and every tensor indexed by that space is truncated to the same channels. Everything else is
copied exactly; with an unchanged spec the child equals the parent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from search.netadapt.proposals import bottleneck_groups, structure
from search_spaces.builder import MobileNetV3Like, build_model
from search_spaces.errors import SpecError
from search_spaces.spec import ArchSpec, se_channels


@dataclass(frozen=True)
class _Axes:
    """Channel spaces of a module's output (dim 0) and input (dim 1); ``None``: not truncated.
    ``produces``: its filters define the importance of the output space."""

    out: str | None
    inp: str | None
    produces: bool


def _plan(spec: ArchSpec) -> tuple[dict[str, _Axes], dict[str, int]]:
    """Module path -> its channel spaces, and the width of every space, for ``spec``."""
    groups = bottleneck_groups(spec)
    out_group: dict[int, str] = {}
    widths: dict[str, int] = {}
    for g, group in enumerate(groups):
        widths[f"g{g}"] = group.width
        out_group.update({i: f"g{g}" for i in group.blocks})
    axes: dict[str, _Axes] = {"stem.0": _Axes("g0", None, True), "stem.1": _Axes("g0", None, False)}
    shape = structure(spec)
    for i, block in enumerate(spec.blocks):
        p = f"blocks.{i}"
        inp = out_group[i - 1] if i > 0 else "g0"
        exp = inp
        if shape[i][0]:
            exp = f"e{i}"
            widths[exp] = block.exp
            axes[f"{p}.expand.0"] = _Axes(exp, inp, True)
            axes[f"{p}.expand.1"] = _Axes(exp, None, False)
        axes[f"{p}.dw.0"] = _Axes(exp, None, False)
        axes[f"{p}.dw.1"] = _Axes(exp, None, False)
        if block.se:
            widths[f"q{i}"] = se_channels(block.exp)
            axes[f"{p}.se.reduce"] = _Axes(f"q{i}", exp, True)
            axes[f"{p}.se.expand"] = _Axes(exp, f"q{i}", False)
        axes[f"{p}.project.0"] = _Axes(out_group[i], exp, True)
        axes[f"{p}.project.1"] = _Axes(out_group[i], None, False)
    last = out_group[len(spec.blocks) - 1]
    widths["hc"], widths["hh"] = spec.head.channels, spec.head.hidden
    axes["head.conv.0"] = _Axes("hc", last, True)
    axes["head.conv.1"] = _Axes("hc", None, False)
    axes["head.hidden"] = _Axes("hh", "hc", True)
    axes["head.classifier"] = _Axes(None, "hh", False)
    return axes, widths


def _skeleton(spec: ArchSpec) -> tuple[object, ...]:
    """Everything but channel widths: what must match between parent and child."""
    blocks = tuple((b.kernel, b.se, b.act, b.stride) for b in spec.blocks)
    stem = (spec.stem.kernel, spec.stem.stride, spec.stem.act)
    return blocks, stem, spec.head.act, spec.num_classes, spec.in_channels, structure(spec)


def kept_channels(parent: MobileNetV3Like, child_spec: ArchSpec) -> dict[str, torch.Tensor]:
    """For each channel space, the parent's channel indices the child keeps (ascending)."""
    parent_spec = parent.spec
    if _skeleton(parent_spec) != _skeleton(child_spec):
        raise SpecError(
            "child spec must differ from the parent's in channel widths only (same blocks, kernels, "
            f"strides, SE, activations, classes, expansion convs and residuals):\n  parent {parent_spec}"
            f"\n  child  {child_spec}"
        )
    axes, widths = _plan(parent_spec)
    child_axes, child_widths = _plan(child_spec)
    if axes != child_axes:
        raise SpecError("child spec groups its residual blocks differently from the parent's")
    modules = dict(parent.named_modules())
    keep: dict[str, torch.Tensor] = {}
    for space, width in widths.items():
        new = child_widths[space]
        if new > width:
            raise SpecError(f"channel space {space}: child width {new} exceeds the parent's {width}")
        if new == width:
            keep[space] = torch.arange(width)
            continue
        importance = torch.zeros(width, dtype=torch.float64)
        for path, ax in axes.items():
            if ax.produces and ax.out == space:
                weight = modules[path].weight.detach()
                importance += weight.abs().flatten(1).sum(dim=1).double().cpu()
        keep[space] = torch.topk(importance, new, sorted=False).indices.sort().values
    return keep


def _truncate(tensor: torch.Tensor, axes: _Axes, keep: dict[str, torch.Tensor]) -> torch.Tensor:
    out = tensor
    for dim, space in enumerate((axes.out, axes.inp)):
        if space is not None and dim < out.dim() and keep[space].numel() != out.shape[dim]:
            out = out.index_select(dim, keep[space].to(out.device))
    return out.clone()


def inherit_weights(parent_model: MobileNetV3Like, child_spec: ArchSpec) -> MobileNetV3Like:
    """``child_spec`` built with :func:`~search_spaces.builder.build_model`, with the parent's
    weights truncated to its widths (channels kept by L1 importance). Same device, dtype and
    train/eval mode as the parent.

    Raises:
        SpecError: ``child_spec`` is not a channel-truncation of ``parent_model.spec``.
    """
    keep = kept_channels(parent_model, child_spec)
    axes, _ = _plan(parent_model.spec)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in parent_model.state_dict().items():
        path, _, leaf = name.rpartition(".")
        ax = axes.get(path)
        if ax is None or leaf == "num_batches_tracked":
            state[name] = tensor.clone()
        else:  # weights run over (out, in); biases and batch-norm tensors over out only
            state[name] = _truncate(tensor, ax if leaf == "weight" else _Axes(ax.out, None, False), keep)
    child = build_model(child_spec)
    reference = next(parent_model.parameters())
    child.to(device=reference.device, dtype=reference.dtype)
    child.load_state_dict(state, strict=True)
    child.train(parent_model.training)
    return child
