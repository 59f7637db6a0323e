"""Elastic layers of the supernet: each holds the largest choice and runs a smaller one on the
leading channels of its weights (and, for depthwise kernels, on the transformed centre).

The modules keep their weights in ordinary ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear``
modules (so the project's initialisation, optimizer groups and batch-norm tools see them) and
call the functional ops on slices. ``copy_into`` writes a sub-network's weights into the
matching module of :func:`search_spaces.builder.build_model`, so the extracted network computes
exactly what the supernet computes for that sub-network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.blocks import BN_EPS, BN_MOMENTUM, EfficientHead, InvertedResidual, SqueezeExcite
from search_spaces.spec import BlockSpec, HeadSpec, se_channels

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"RE": F.relu, "HS": F.hardswish}


class ElasticBatchNorm(nn.BatchNorm2d):
    """Batch norm over the leading channels of its input: one set of statistics and affine weights
    sized for the widest use, sliced for narrower ones (running statistics are updated in place)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        mean, var, tracked = statistics(self)
        factor = 0.0
        if self.training:
            tracked.add_(1)
            factor = 1.0 / float(tracked) if self.momentum is None else self.momentum
        return F.batch_norm(x, mean[:c], var[:c], self.weight[:c], self.bias[:c], self.training, factor,
                            self.eps)

    @torch.no_grad()
    def copy_into(self, target: nn.BatchNorm2d) -> None:
        """Write the leading ``target.num_features`` channels into ``target``."""
        c = target.num_features
        target.weight.copy_(self.weight[:c])
        target.bias.copy_(self.bias[:c])
        for mine, theirs in zip(statistics(self), statistics(target), strict=True):
            theirs.copy_(mine[:c] if mine.dim() else mine)


def statistics(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Running mean, running variance and batch count of a batch norm that tracks them."""
    mean, var, tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
    assert mean is not None and var is not None and tracked is not None, "batch norm without statistics"
    return mean, var, tracked


def conv_bn(layer: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The conv and batch norm of a builder's ``ConvBnAct``."""
    conv, bn = layer[0], layer[1]  # type: ignore[index]
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    return conv, bn


def transform_name(size: int) -> str:
    """The key of the matrix that turns a ``size`` kernel into a ``size - 2`` one."""
    return f"{size}to{size - 2}"


class ElasticDepthwise(nn.Module):
    """A depthwise conv with ``max_kernel`` weights; a smaller kernel is the centre of the next larger
    one passed through a learned (k*k x k*k) matrix shared by all channels, initialised to identity
    (Once-for-All's kernel transformation)."""

    def __init__(self, channels: int, max_kernel: int, stride: int) -> None:
        super().__init__()
        self.max_kernel, self.stride = max_kernel, stride
        self.conv = nn.Conv2d(channels, channels, max_kernel, stride, max_kernel // 2, groups=channels,
                              bias=False)
        self.transforms = nn.ParameterDict({
            transform_name(size): nn.Parameter(torch.eye((size - 2) ** 2))
            for size in range(max_kernel, 3, -2)
        })

    def kernel_weight(self, kernel: int, channels: int) -> torch.Tensor:
        """The (channels, 1, kernel, kernel) weights of the leading ``channels`` at ``kernel``."""
        weight = self.conv.weight[:channels]
        size = self.max_kernel
        while size > kernel:
            inner = size - 2
            centre = weight[:, :, 1:-1, 1:-1].reshape(channels, inner * inner)
            weight = F.linear(centre, self.transforms[transform_name(size)]).view(channels, 1, inner, inner)
            size = inner
        return weight

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        c = x.shape[1]
        weight = _dense_like(x, self.kernel_weight(kernel, c))
        return F.conv2d(x, weight, None, self.stride, kernel // 2, 1, c)


def _dense_like(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` dense in ``x``'s memory format, strides of size-1 dimensions included: the CPU
    convolutions choose their (3-4x slower) generic path for sliced or oddly strided weights."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last)  # 1x1 maps: both formats
    layout = torch.channels_last if channels_last else torch.contiguous_format
    dense = torch.empty_like(weight, memory_format=layout)
    return weight if dense.stride() == weight.stride() else dense.copy_(weight)


def _conv1x1(x: torch.Tensor, conv: nn.Conv2d, out_channels: int) -> torch.Tensor:
    bias = conv.bias[:out_channels] if conv.bias is not None else None
    return F.conv2d(x, _dense_like(x, conv.weight[:out_channels, :x.shape[1]]), bias)


@torch.no_grad()
def _copy_conv(source: nn.Conv2d, target: nn.Conv2d) -> None:
    out, inp = target.weight.shape[:2]
    target.weight.copy_(source.weight[:out, :inp])
    if target.bias is not None:
        assert source.bias is not None
        target.bias.copy_(source.bias[:out])


class ElasticSE(nn.Module):
    """Squeeze-and-excitation sized for ``channels``; ``c`` channels use the leading ``se_channels(c)``
    squeeze channels."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        scale = F.relu(_conv1x1(F.adaptive_avg_pool2d(x, 1), self.reduce, se_channels(c)))
        return x * F.hardsigmoid(_conv1x1(scale, self.expand, c))


class ElasticBlock(nn.Module):
    """A bneck holding the widest input, expansion and output of one block position of the space.

    A sub-network's block follows the builder's rules exactly: no expansion conv when its expansion
    equals its input width, a residual when stride 1 and input width equals output width."""

    def __init__(self, in_channels: int, exp: int, out: int, *, max_kernel: int, stride: int,
                 squeeze: int) -> None:
        super().__init__()
        self.stride = stride
        self.expand = nn.Conv2d(in_channels, exp, 1, bias=False)
        self.expand_bn = ElasticBatchNorm(exp)
        self.dw = ElasticDepthwise(exp, max_kernel, stride)
        self.dw_bn = ElasticBatchNorm(exp)
        self.se = ElasticSE(exp, squeeze)
        self.project = nn.Conv2d(exp, out, 1, bias=False)
        self.project_bn = ElasticBatchNorm(out)

    def forward(self, x: torch.Tensor, block: BlockSpec) -> torch.Tensor:
        in_channels = x.shape[1]
        act = ACTIVATIONS[block.act]
        h = x
        if block.has_expansion(in_channels):
            h = act(self.expand_bn(_conv1x1(x, self.expand, block.exp)))
        h = act(self.dw_bn(self.dw(h, block.kernel)))
        if block.se:
            h = self.se(h)
        out = self.project_bn(_conv1x1(h, self.project, block.out))
        return out + x if block.has_residual(in_channels) else out

    @torch.no_grad()
    def copy_into(self, target: InvertedResidual, block: BlockSpec) -> None:
        """Write this block's weights for ``block`` into ``target`` (built for the same block)."""
        if isinstance(target.expand, nn.Sequential):
            conv, bn = conv_bn(target.expand)
            _copy_conv(self.expand, conv)
            self.expand_bn.copy_into(bn)
        conv, bn = conv_bn(target.dw)
        conv.weight.copy_(self.dw.kernel_weight(block.kernel, block.exp))
        self.dw_bn.copy_into(bn)
        if isinstance(target.se, SqueezeExcite):
            _copy_conv(self.se.reduce, target.se.reduce)
            _copy_conv(self.se.expand, target.se.expand)
        conv, bn = conv_bn(target.project)
        _copy_conv(self.project, conv)
        self.project_bn.copy_into(bn)

    @torch.no_grad()
    def sort_expansion(self) -> None:
        """Re-order the expansion channels (and the SE squeeze channels) by importance, the L1 norm
        of the weights that read them; the largest sub-network computes the same function after."""
        order = self.project.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        _permute(self.expand.weight, order, 0)
        _permute_bn(self.expand_bn, order)
        _permute(self.dw.conv.weight, order, 0)
        _permute_bn(self.dw_bn, order)
        _permute(self.se.reduce.weight, order, 1)
        _permute(self.se.expand.weight, order, 0)
        _permute(_bias(self.se.expand), order, 0)
        _permute(self.project.weight, order, 1)
        squeeze = self.se.expand.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        _permute(self.se.reduce.weight, squeeze, 0)
        _permute(_bias(self.se.reduce), squeeze, 0)
        _permute(self.se.expand.weight, squeeze, 1)


def _permute(tensor: torch.Tensor, order: torch.Tensor, dim: int) -> None:
    tensor.copy_(tensor.index_select(dim, order))


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    assert conv.bias is not None
    return conv.bias


def _permute_bn(bn: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for tensor in (bn.weight, bn.bias, *statistics(bn)[:2]):
        _permute(tensor, order, 0)


class ElasticHead(nn.Module):
    """V3's efficient last stage whose 1x1 input conv reads the leading channels of its input."""

    def __init__(self, in_channels: int, head: HeadSpec, num_classes: int) -> None:
        super().__init__()
        self.act = ACTIVATIONS[head.act]
        self.conv = nn.Conv2d(in_channels, head.channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(head.channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.hidden = nn.Conv2d(head.channels, head.hidden, 1, bias=True)
        self.dropout = nn.Dropout(p=head.dropout)
        self.classifier = nn.Linear(head.hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(_conv1x1(x, self.conv, self.conv.out_channels)))
        x = self.act(self.hidden(F.adaptive_avg_pool2d(x, 1)))
        return self.classifier(self.dropout(torch.flatten(x, 1)))

    @torch.no_grad()
    def copy_into(self, target: EfficientHead) -> None:
        conv, bn = conv_bn(target.conv)
        _copy_conv(self.conv, conv)
        bn.load_state_dict(self.bn.state_dict())
        target.hidden.load_state_dict(self.hidden.state_dict())
        target.classifier.load_state_dict(self.classifier.state_dict())
