"""Building blocks of MobileNetV3-like networks. Blocks take flat keyword arguments and know
nothing about specs; :mod:`search_spaces.builder` wires specs to them."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.spec import se_channels

# Batch norm settings of the reference implementations.
BN_EPS = 0.001
BN_MOMENTUM = 0.01


def activation(name: str) -> nn.Module:
    """``RE`` -> ReLU, ``HS`` -> hard-swish."""
    if name == "RE":
        return nn.ReLU(inplace=True)
    if name == "HS":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"activation must be RE or HS, got {name!r}")


class ConvBnAct(nn.Sequential):
    """Conv (no bias), batch norm, optional activation."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_chs, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: pool, 1x1 reduce, ReLU, 1x1 expand, hard-sigmoid, rescale."""

    def __init__(self, chs: int, *, squeeze_chs: int | None = None) -> None:
        super().__init__()
        squeeze_chs = squeeze_chs or se_channels(chs)
        self.reduce = nn.Conv2d(chs, squeeze_chs, 1)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze_chs, chs, 1)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.adaptive_avg_pool2d(x, 1)
        scale = self.gate(self.expand(self.relu(self.reduce(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    """The bneck: 1x1 expansion (unless exp == in), depthwise kxk, SE, linear 1x1 projection,
    residual when stride 1 and in == out."""

    def __init__(
        self,
        in_chs: int,
        exp_chs: int,
        out_chs: int,
        *,
        kernel: int,
        stride: int,
        se: bool,
        act: str,
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_chs == out_chs
        self.expand = (
            ConvBnAct(in_chs, exp_chs, act=act) if exp_chs != in_chs else nn.Identity()
        )
        self.dw = ConvBnAct(exp_chs, exp_chs, kernel=kernel, stride=stride, groups=exp_chs, act=act)
        self.se = SqueezeExcite(exp_chs) if se else nn.Identity()
        self.project = ConvBnAct(exp_chs, out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        return out + x if self.use_residual else out


class EfficientHead(nn.Module):
    """V3's last stage: 1x1 conv-BN-act, global pool, 1x1 conv without BN, act, dropout,
    classifier."""

    def __init__(
        self,
        in_chs: int,
        chs: int,
        hidden_chs: int,
        num_classes: int,
        *,
        act: str = "HS",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.conv = ConvBnAct(in_chs, chs, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Conv2d(chs, hidden_chs, 1, bias=True)
        self.act = activation(act)
        self.dropout = nn.Dropout(p=dropout)
        self.classifier = nn.Linear(hidden_chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.hidden(self.pool(self.conv(x))))
        return self.classifier(self.dropout(torch.flatten(x, 1)))
