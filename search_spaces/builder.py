"""The only place where a spec becomes modules."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.blocks import ConvBnAct, EfficientHead, InvertedResidual
from search_spaces.spec import ArchSpec, BlockSpec, HeadSpec, Layer, StemSpec


def build_layer(layer: Layer) -> nn.Module:
    """One layer of a spec (stem, bneck or head) with its input width; used by latency tables."""
    op = layer.op
    if isinstance(op, StemSpec):
        return ConvBnAct(layer.in_channels, op.channels, kernel=op.kernel, stride=op.stride, act=op.act)
    if isinstance(op, BlockSpec):
        return InvertedResidual(
            layer.in_channels, op.exp, op.out, kernel=op.kernel, stride=op.stride, se=op.se, act=op.act
        )
    if isinstance(op, HeadSpec):
        return EfficientHead(
            layer.in_channels, op.channels, op.hidden, layer.num_classes, act=op.act, dropout=op.dropout
        )
    raise TypeError(f"unknown layer op {type(op).__name__}")


class MobileNetV3Like(nn.Module):
    """A MobileNetV3-like network built from a spec: ``stem``, ``blocks``, ``head``."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        layers = list(spec.layers())
        self.stem = build_layer(layers[0])
        self.blocks = nn.Sequential(*(build_layer(layer) for layer in layers[1:-1]))
        self.head = build_layer(layers[-1])
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def init_weights(module: nn.Module) -> None:
    """Initialization of the reference implementations: Kaiming (fan-out) for convs, unit
    batch norm, N(0, 0.01) for linear layers, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(spec: ArchSpec) -> MobileNetV3Like:
    """Materialize ``spec`` as a trainable network."""
    return MobileNetV3Like(spec)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
