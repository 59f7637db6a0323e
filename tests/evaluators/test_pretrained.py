"""Published MobileNetV3 state_dicts (torchvision, timm) mapped onto our networks.

The source key names and shapes are generated here from the published model definitions'
structure (torchvision/models/mobilenetv3.py; timm/models/mobilenetv3.py with
_efficientnet_blocks.py and _efficientnet_builder.py), never from our model; the reference forward
passes run torch.nn.functional over the source state_dicts as the source modules would.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from evaluators.pretrained import convert, load_into, read_state_dict, source_spec, timm_spec
from search_spaces.builder import build_model
from search_spaces.errors import DataError
from search_spaces.reference import reference_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def divisible(v: float, divisor: int = 8) -> int:
    """The sources' _make_divisible / make_divisible (round_limit 0.9)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


# ---- torchvision: features.N (Conv2dNormActivation = [conv, bn, act]; InvertedResidual.block), classifier
# (input, kernel, expanded, out, use_se, activation, stride) as in _mobilenet_v3_conf
TV_LARGE = [(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
            (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
            (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1),
            (80, 3, 184, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
            (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
            (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1),
            (160, 5, 960, 160, True, "HS", 1)]
TV_SMALL = [(16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
            (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
            (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
            (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1)]
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, chs: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{n}": (() if n == "num_batches_tracked" else (chs,)) for n in BN}


def tv_width(setting, width_mult: float):
    """torchvision's InvertedResidualConfig.adjust_channels on every width of ``setting``."""
    return [(divisible(i * width_mult), k, divisible(e * width_mult), divisible(o * width_mult), se, act, s)
            for i, k, e, o, se, act, s in setting]


def torchvision_layout(setting, last_channel: int, classes: int = 1000):
    """(keys -> shapes, forward plan) of torchvision's MobileNetV3."""
    stem = setting[0][0]
    shapes = {"features.0.0.weight": (stem, 3, 3, 3), **_bn("features.0.1", stem)}
    plan = [("conv", "features.0.0", "features.0.1", 2, 1, "HS")]
    for n, (cin, k, exp, out, se, act, stride) in enumerate(setting, start=1):
        ops, j = [], 0
        if exp != cin:
            p = f"features.{n}.block.{j}"
            shapes |= {f"{p}.0.weight": (exp, cin, 1, 1), **_bn(f"{p}.1", exp)}
            ops.append(("conv", f"{p}.0", f"{p}.1", 1, 1, act))
            j += 1
        p = f"features.{n}.block.{j}"
        shapes |= {f"{p}.0.weight": (exp, 1, k, k), **_bn(f"{p}.1", exp)}
        ops.append(("conv", f"{p}.0", f"{p}.1", stride, exp, act))
        j += 1
        if se:
            sq = divisible(exp // 4)
            p = f"features.{n}.block.{j}"
            shapes |= {f"{p}.fc1.weight": (sq, exp, 1, 1), f"{p}.fc1.bias": (sq,),
                       f"{p}.fc2.weight": (exp, sq, 1, 1), f"{p}.fc2.bias": (exp,)}
            ops.append(("se", f"{p}.fc1", f"{p}.fc2"))
            j += 1
        p = f"features.{n}.block.{j}"
        shapes |= {f"{p}.0.weight": (out, exp, 1, 1), **_bn(f"{p}.1", out)}
        ops.append(("conv", f"{p}.0", f"{p}.1", 1, 1, None))
        plan.append(("block", ops, stride == 1 and cin == out))
    last_in, n = setting[-1][3], len(setting) + 1
    shapes |= {f"features.{n}.0.weight": (6 * last_in, last_in, 1, 1), **_bn(f"features.{n}.1", 6 * last_in)}
    plan.append(("conv", f"features.{n}.0", f"features.{n}.1", 1, 1, "HS"))
    shapes |= {"classifier.0.weight": (last_channel, 6 * last_in), "classifier.0.bias": (last_channel,),
               "classifier.3.weight": (classes, last_channel), "classifier.3.bias": (classes,)}
    plan.append(("head", "classifier.0", "classifier.3"))
    return shapes, plan


# ---- timm: conv_stem/bn1, blocks.S.I (ds: DepthwiseSeparableConv, ir: InvertedResidual, cn: ConvBnAct),
# conv_head (bias), classifier; SE rd = round_channels(mid * 0.25); BatchNorm eps 1e-5.
TIMM_LARGE = [["ds_r1_k3_s1_e1_c16_nre"], ["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
              ["ir_r3_k5_s2_e3_c40_se0.25_nre"],
              ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],
              ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"], ["cn_r1_k1_s1_c960"]]
TIMM_SMALL = [["ds_r1_k3_s2_e1_c16_se0.25_nre"], ["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
              ["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"], ["ir_r2_k5_s1_e3_c48_se0.25"],
              ["ir_r3_k5_s2_e6_c96_se0.25"], ["cn_r1_k1_s1_c576"]]


def _decode(token: str) -> dict:
    kind, *opts = token.split("_")
    out = {"kind": kind, "act": "RE" if "nre" in opts else "HS", "se": any(o.startswith("se") for o in opts)}
    for o in opts:
        if m := re.fullmatch(r"([rksec])([\d.]+)", o):
            out[m[1]] = float(m[2]) if m[1] == "e" else int(m[2])
    return out


def timm_layout(arch_def, multiplier: float, num_features: int, classes: int = 1000):
    """(keys -> shapes, forward plan) of timm's MobileNetV3 for ``arch_def`` at ``multiplier``."""
    stem = divisible(16 * multiplier)  # fix_stem is False for multipliers >= 0.75
    shapes = {"conv_stem.weight": (stem, 3, 3, 3), **_bn("bn1", stem)}
    plan = [("conv", "conv_stem", "bn1", 2, 1, "HS")]
    cin = stem
    for s, stage in enumerate(arch_def):
        index = 0
        for token in stage:
            b = _decode(token)
            for r in range(b["r"]):
                p, stride = f"blocks.{s}.{index}", b["s"] if r == 0 else 1
                out = divisible(b["c"] * multiplier)
                index += 1
                if b["kind"] == "cn":
                    shapes |= {f"{p}.conv.weight": (out, cin, 1, 1), **_bn(f"{p}.bn1", out)}
                    plan.append(("conv", f"{p}.conv", f"{p}.bn1", 1, 1, b["act"]))
                    cin = out
                    continue
                mid, ops = (cin if b["kind"] == "ds" else divisible(cin * b["e"])), []
                if b["kind"] == "ir":
                    shapes |= {f"{p}.conv_pw.weight": (mid, cin, 1, 1), **_bn(f"{p}.bn1", mid)}
                    ops.append(("conv", f"{p}.conv_pw", f"{p}.bn1", 1, 1, b["act"]))
                dw_bn, pw, pw_bn = (f"{p}.bn2", "conv_pwl", f"{p}.bn3") if b["kind"] == "ir" else \
                    (f"{p}.bn1", "conv_pw", f"{p}.bn2")
                shapes |= {f"{p}.conv_dw.weight": (mid, 1, b["k"], b["k"]), **_bn(dw_bn, mid)}
                ops.append(("conv", f"{p}.conv_dw", dw_bn, stride, mid, b["act"]))
                if b["se"]:
                    rd = divisible(mid * 0.25)
                    shapes |= {f"{p}.se.conv_reduce.weight": (rd, mid, 1, 1),
                               f"{p}.se.conv_reduce.bias": (rd,),
                               f"{p}.se.conv_expand.weight": (mid, rd, 1, 1),
                               f"{p}.se.conv_expand.bias": (mid,)}
                    ops.append(("se", f"{p}.se.conv_reduce", f"{p}.se.conv_expand"))
                shapes |= {f"{p}.{pw}.weight": (out, mid, 1, 1), **_bn(pw_bn, out)}
                ops.append(("conv", f"{p}.{pw}", pw_bn, 1, 1, None))
                plan.append(("block", ops, stride == 1 and cin == out))
                cin = out
    shapes |= {"conv_head.weight": (num_features, cin, 1, 1), "conv_head.bias": (num_features,),
               "classifier.weight": (classes, num_features), "classifier.bias": (classes,)}
    plan.append(("head", "conv_head", "classifier"))
    return shapes, plan


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values: fan-in scaled weights, BN statistics with some tiny variances (eps matters there)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            var = torch.rand(shape, generator=gen) + 0.5
            var[::3] = 1e-4
            state[key] = var
        elif key.endswith("weight") and len(shape) > 1:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            state[key] = torch.randn(shape, generator=gen) / fan_in**0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.1 + (1.0 if key.endswith("weight") else 0.0)
    for key in [k for k in state if k.endswith("running_var")]:  # BN output scale about 1 (no blow-up)
        bn = key[: -len("running_var")]
        state[bn + "weight"] = state[bn + "weight"] * state[key].sqrt()
    return state


ACT = {"RE": F.relu, "HS": F.hardswish, None: lambda x: x}


def source_forward(state: dict[str, torch.Tensor], plan, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The source network's eval forward with torch.nn.functional over its own state_dict."""
    def conv_bn(x, conv, bn, stride, groups, act):
        w = state[f"{conv}.weight"]
        x = F.conv2d(x, w, None, stride, w.shape[-1] // 2, 1, groups)
        x = F.batch_norm(x, state[f"{bn}.running_mean"], state[f"{bn}.running_var"], state[f"{bn}.weight"],
                         state[f"{bn}.bias"], False, 0.0, eps)
        return ACT[act](x)

    for step in plan:
        if step[0] == "conv":
            x = conv_bn(x, *step[1:])
        elif step[0] == "block":
            y = x
            for op in step[1]:
                if op[0] == "se":
                    pooled = y.mean((2, 3), keepdim=True)
                    s = F.relu(F.conv2d(pooled, state[f"{op[1]}.weight"], state[f"{op[1]}.bias"]))
                    y = y * F.hardsigmoid(F.conv2d(s, state[f"{op[2]}.weight"], state[f"{op[2]}.bias"]))
                else:
                    y = conv_bn(y, *op[1:])
            x = x + y if step[2] else y
        else:
            hidden, classifier = state[f"{step[1]}.weight"], state[f"{step[1]}.bias"]
            x = x.mean((2, 3))
            x = F.hardswish(F.linear(x, hidden.reshape(hidden.shape[0], -1), classifier))
            x = F.linear(x, state[f"{step[2]}.weight"], state[f"{step[2]}.bias"])
    return x


CASES = {  # name -> (layout, our spec, BatchNorm eps of the source)
    "torchvision mobilenet_v3_small": (lambda: torchvision_layout(TV_SMALL, 1024),
                                       lambda: reference_spec("mobilenet_v3_small"), 1e-3),
    "torchvision mobilenet_v3_large": (lambda: torchvision_layout(TV_LARGE, 1280),
                                       lambda: reference_spec("mobilenet_v3_large"), 1e-3),
    "torchvision mobilenet_v3_small width 0.75": (
        lambda: torchvision_layout(tv_width(TV_SMALL, 0.75), divisible(1024 * 0.75)),
        lambda: source_spec("torchvision", reference_spec("mobilenet_v3_small", width_mult=0.75),
                            "mobilenet_v3_small", 0.75), 1e-3),
    "timm mobilenetv3_small_100": (lambda: timm_layout(TIMM_SMALL, 1.0, 1024),
                                   lambda: reference_spec("mobilenet_v3_small"), 1e-5),
    "timm mobilenetv3_large_100": (lambda: timm_layout(TIMM_LARGE, 1.0, 1280),
                                   lambda: reference_spec("mobilenet_v3_large"), 1e-5),
    "timm mobilenetv3_small_075": (lambda: timm_layout(TIMM_SMALL, 0.75, 1024),
                                   lambda: timm_spec("mobilenet_v3_small", 0.75), 1e-5),
    "timm mobilenetv3_large_075": (lambda: timm_layout(TIMM_LARGE, 0.75, 1280),
                                   lambda: timm_spec("mobilenet_v3_large", 0.75), 1e-5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_source_state_dict_gives_the_source_networks_outputs(case):
    layout, make_spec, eps = CASES[case]
    shapes, plan = layout()
    state = random_state(shapes)
    spec = make_spec()
    converted = convert(state, spec)
    assert converted.source == case.split()[0]
    assert converted.mapped == len(shapes)  # every source tensor placed, each exactly once
    model = build_model(spec)
    assert load_into(model, converted) == []
    ours = model.state_dict()
    assert set(converted.state) == set(ours)
    assert sum(t.numel() for t in converted.state.values()) == sum(t.numel() for t in state.values())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model.eval()(x)
        want = source_forward(state, plan, x, eps)
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_timm_075_widths_are_not_the_papers_multiplier_and_the_paper_spec_is_refused():
    shapes, _ = timm_layout(TIMM_SMALL, 0.75, 1024)
    with pytest.raises(DataError) as err:
        convert(random_state(shapes), reference_spec("mobilenet_v3_small", width_mult=0.75))
    message = str(err.value)
    assert "\n" not in message
    assert ("timm tensor blocks.1.0.conv_pw.weight is 72x16x1x1, "
            "the spec's blocks.1.expand.0.weight is 56x16x1x1") in message


def test_a_wrong_shape_names_the_first_tensor_that_differs():
    shapes, _ = torchvision_layout(TV_SMALL, 1024)
    state = random_state(shapes)
    state["features.4.block.1.0.weight"] = torch.zeros(96, 1, 3, 3)  # a 3x3 where V3-Small has a 5x5
    with pytest.raises(DataError, match=r"torchvision tensor features\.4\.block\.1\.0\.weight is 96x1x3x3, "
                                        r"the spec's blocks\.3\.dw\.0\.weight is 96x1x5x5"):
        convert(state, reference_spec("mobilenet_v3_small"))
    del state["features.4.block.1.0.weight"]
    with pytest.raises(DataError, match=r"features\.4\.block\.1\.0\.weight .* is missing from the file"):
        convert(state, reference_spec("mobilenet_v3_small"))


def test_a_large_file_does_not_load_as_small():
    shapes, _ = torchvision_layout(TV_LARGE, 1280)
    with pytest.raises(DataError, match="has no place in the spec's network"):
        convert(random_state(shapes), reference_spec("mobilenet_v3_small"))


def test_new_classes_keep_a_fresh_classifier_only_when_asked():
    shapes, _ = torchvision_layout(TV_SMALL, 1024)
    spec = reference_spec("mobilenet_v3_small", num_classes=10)
    with pytest.raises(DataError, match=r"classifier\.3\.weight is 1000x1024"):
        convert(random_state(shapes), spec)
    converted = convert(random_state(shapes), spec, skip_classifier=True)
    assert "head.classifier.weight" not in converted.state and "head.hidden.weight" in converted.state


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_files_are_read_safely(tmp_path):
    shapes, _ = torchvision_layout(TV_SMALL, 1024)
    state = random_state(shapes)
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": state, "epoch": 3}, nested)
    assert read_state_dict(nested).keys() == state.keys()
    hostile = tmp_path / "hostile.pth"
    torch.save({"features.0.0.weight": _Payload()}, hostile)  # a pickle that would call print()
    with pytest.raises(DataError, match=r"refused global builtins\.print|refused global print") as err:
        read_state_dict(hostile)
    assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)
    with pytest.raises(DataError, match="holds no state_dict"):
        torch.save({"a": 1}, tmp_path / "plain.pt")
        read_state_dict(tmp_path / "plain.pt")
