"""The student feature extractor: a MobileNetV2-style backbone that can be cut after any block.

Owns the network definition (stem, inverted-residual blocks, feature mix, global average pool),
its split views (``trunk`` -> split activation, ``part_head`` and ``rest`` from the split
activation), the named presets of the paper's backbones and an analytic MAC counter.

The model config is the ``model`` section: ``input_size``, ``stem_channels``, ``blocks`` (each
``[expand, out_channels, stride, kernel]``), ``split_block`` (k: the trunk is stem + blocks[0:k]),
``feature_channels`` (0: no feature mix conv, the features are the last block's pooled output).
``backbone = "<preset>"`` fills stem / blocks / feature_channels from a preset.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from microt_deploy.errors import MicrotError

# Paper backbones (see ../shared/anchors/backbones.md). Resolution 176 is their native size.
PRESETS: dict[str, dict[str, Any]] = {
    "mcunet-in3": {
        "input_size": 176,
        "stem_channels": 16,
        "blocks": [
            [1, 8, 1, 3],
            [3, 16, 2, 7],
            [5, 16, 1, 3],
            [5, 16, 1, 7],
            [4, 16, 1, 5],
            [5, 24, 2, 5],
            [5, 24, 1, 5],
            [5, 24, 1, 5],
            [5, 40, 2, 3],
            [6, 40, 1, 7],
            [4, 40, 1, 5],
            [5, 48, 1, 5],
            [5, 48, 1, 7],
            [5, 48, 1, 3],
            [6, 96, 2, 3],
            [5, 96, 1, 7],
            [4, 96, 1, 3],
            [5, 160, 1, 7],
        ],
        "split_block": 9,
        "feature_channels": 0,
    },
    # ProxylessNAS "mobile" at width 0.3: channels x 0.3 through make_divisible(8) (which bumps 9.6
    # to 16); the blocks the search replaced by "zero" layers are absent; a final 1x1 feature mix to
    # 1280 x 0.3 = 384.
    "proxyless-w0.3": {
        "input_size": 176,
        "stem_channels": 16,
        "blocks": [
            [1, 8, 1, 3],
            [3, 16, 2, 5],
            [3, 16, 1, 3],
            [3, 16, 2, 7],
            [3, 16, 1, 3],
            [3, 16, 1, 5],
            [3, 16, 1, 5],
            [6, 24, 2, 7],
            [3, 24, 1, 5],
            [3, 24, 1, 5],
            [3, 24, 1, 5],
            [6, 32, 1, 5],
            [3, 32, 1, 5],
            [3, 32, 1, 5],
            [3, 32, 1, 5],
            [6, 56, 2, 7],
            [6, 56, 1, 7],
            [3, 56, 1, 7],
            [3, 56, 1, 7],
            [6, 96, 1, 7],
        ],
        "split_block": 11,
        "feature_channels": 384,
    },
}


ARCHITECTURE_KEYS = ("stem_channels", "blocks", "feature_channels")


def resolve_model_config(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill a ``backbone = "<preset>"`` config from the preset and validate it.

    A preset fixes the architecture (``stem_channels``, ``blocks``, ``feature_channels``: the
    defaults' explicit values are replaced); ``input_size`` and ``split_block`` stay the config's
    choice when given (the resolution follows the data, the cut is searched) and otherwise take
    the preset's native 176 and the paper's cut.
    """
    cfg = copy.deepcopy(model_cfg)
    name = cfg.get("backbone")
    if name:
        if name not in PRESETS:
            raise MicrotError(f"unknown backbone {name!r}", f"use one of {sorted(PRESETS)} or give blocks")
        preset = copy.deepcopy(PRESETS[name])
        for key in ARCHITECTURE_KEYS:
            cfg[key] = preset[key]
        for key in ("input_size", "split_block"):
            cfg.setdefault(key, preset[key])
    blocks = cfg.get("blocks") or []
    k = int(cfg.get("split_block", 0))
    if not 1 <= k < len(blocks):
        raise MicrotError(
            f"model.split_block = {k} is outside 1..{len(blocks) - 1} for a {len(blocks)}-block backbone",
            "cut after at least one block and before the last one",
        )
    for block in blocks:
        if len(block) != 4 or block[3] % 2 == 0 or block[2] not in (1, 2) or min(block) < 1:
            raise MicrotError(
                f"model block {block} is not [expand>=1, out_channels, stride 1|2, odd kernel]",
                "fix model.blocks",
            )
    return cfg


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, relu6: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu6:
        layers.append(nn.ReLU6(inplace=False))
    return nn.Sequential(*layers)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool to (N, C).

    Written as adaptive pooling so that ONNX gets GlobalAveragePool, whose axes are fixed by
    definition: a ReduceMean over explicit axes is what onnx2tf re-maps wrongly when C == H == W.
    """
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class InvertedResidual(nn.Module):
    """Optional 1x1 expand, depthwise kxk, linear 1x1 project; residual add when shapes match."""

    def __init__(self, cin: int, expand: int, cout: int, stride: int, kernel: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, mid, 1, 1))
        layers.append(_conv_bn(mid, mid, kernel, stride, groups=mid))
        layers.append(_conv_bn(mid, cout, 1, 1, relu6=False))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class Backbone(nn.Module):
    """The student: ``full(x) == rest(trunk(x))`` by construction (the full model resumes at the split)."""

    def __init__(self, model_cfg: dict[str, Any]) -> None:
        super().__init__()
        cfg = resolve_model_config(model_cfg)
        self.config = cfg
        self.split_block = int(cfg["split_block"])
        stem = int(cfg["stem_channels"])
        self.stem = _conv_bn(3, stem, 3, 2)
        blocks = []
        cin = stem
        for expand, cout, stride, kernel in cfg["blocks"]:
            blocks.append(InvertedResidual(cin, int(expand), int(cout), int(stride), int(kernel)))
            cin = int(cout)
        self.blocks = nn.ModuleList(blocks)
        self.split_channels = int(cfg["blocks"][self.split_block - 1][1])
        fc = int(cfg.get("feature_channels", 0))
        self.mix = _conv_bn(cin, fc, 1, 1) if fc > 0 else nn.Identity()
        self.part_dim = self.split_channels
        self.full_dim = fc if fc > 0 else cin

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW input -> split activation (stem + blocks[0:k])."""
        x = self.stem(x)
        for block in self.blocks[: self.split_block]:
            x = block(x)
        return x

    def part_head(self, split: torch.Tensor) -> torch.Tensor:
        """Split activation -> part features (global average pool), shape (N, part_dim)."""
        return global_pool(split)

    def rest(self, split: torch.Tensor) -> torch.Tensor:
        """Split activation -> full features (blocks[k:], feature mix, pool), shape (N, full_dim)."""
        x = split
        for block in self.blocks[self.split_block :]:
            x = block(x)
        return global_pool(self.mix(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(part features, full features) of an NCHW batch."""
        split = self.trunk(x)
        return self.part_head(split), self.rest(split)

    def full(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.trunk(x))


class SplitView(nn.Module):
    """One exportable piece of a Backbone: ``which`` in {"trunk", "part_head", "rest"}."""

    def __init__(self, backbone: Backbone, which: str) -> None:
        super().__init__()
        if which not in ("trunk", "part_head", "rest"):
            raise ValueError(which)
        self.backbone = backbone
        self.which = which

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.backbone, self.which)(x)


def split_shape(model_cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(H, W, C) of the split activation at the configured input size."""
    cfg = resolve_model_config(model_cfg)
    size = _out(int(cfg["input_size"]), 2)
    for _, _, stride, _ in cfg["blocks"][: int(cfg["split_block"])]:
        size = _out(size, int(stride))
    return size, size, int(cfg["blocks"][int(cfg["split_block"]) - 1][1])


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # padding k//2 with an odd kernel


def macs_per_stage(model_cfg: dict[str, Any], input_size: int | None = None) -> list[int]:
    """Multiply-accumulates of the stem, each block and the feature mix (in that order)."""
    cfg = resolve_model_config(model_cfg)
    size = _out(int(input_size or cfg["input_size"]), 2)
    cin = int(cfg["stem_channels"])
    stages = [size * size * 9 * 3 * cin]
    for expand, cout, stride, kernel in cfg["blocks"]:
        mid = cin * int(expand)
        macs = size * size * cin * mid if expand != 1 else 0
        size = _out(size, int(stride))
        macs += size * size * kernel * kernel * mid + size * size * mid * int(cout)
        stages.append(macs)
        cin = int(cout)
    fc = int(cfg.get("feature_channels", 0))
    stages.append(size * size * cin * fc)
    return stages


def count_macs(model_cfg: dict[str, Any], input_size: int | None = None, num_classes: int = 0) -> int:
    """Total conv MACs of the full model, plus a ``num_classes``-way linear classifier when > 0."""
    cfg = resolve_model_config(model_cfg)
    feat = int(cfg.get("feature_channels", 0)) or int(cfg["blocks"][-1][1])
    return sum(macs_per_stage(cfg, input_size)) + feat * num_classes


def part_mac_share(model_cfg: dict[str, Any]) -> float:
    """Fraction of the full model's MACs spent in the trunk (what an early exit still pays)."""
    cfg = resolve_model_config(model_cfg)
    stages = macs_per_stage(cfg)
    return sum(stages[: 1 + int(cfg["split_block"])]) / sum(stages)
