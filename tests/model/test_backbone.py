"""Backbone: the split is exact, the views have the advertised shapes, the MAC counter is right."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from microt_deploy.errors import MicrotError
from microt_deploy.model.backbone import (
    PRESETS,
    Backbone,
    SplitView,
    count_macs,
    macs_per_stage,
    part_mac_share,
    split_shape,
)
from microt_deploy.project import DEFAULT_CONFIG


def _randomise_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _sequential_full(model: Backbone, x: torch.Tensor) -> torch.Tensor:
    """The full model written out independently of trunk / rest."""
    x = model.stem(x)
    for block in model.blocks:
        x = block(x)
    return model.mix(x).mean(dim=(2, 3))


@pytest.mark.parametrize("split_block", [1, 3, 6])
def test_full_equals_rest_of_trunk_exactly(split_block):
    torch.manual_seed(0)
    cfg = {**DEFAULT_CONFIG["model"], "split_block": split_block}
    model = Backbone(cfg)
    _randomise_bn(model)
    model.eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        split = model.trunk(x)
        resumed = model.rest(split)
        assert torch.equal(resumed, model.full(x))
        assert torch.allclose(resumed, _sequential_full(model, x), atol=1e-6)
        part, full = model(x)
        assert torch.equal(full, resumed)
        assert torch.equal(part, model.part_head(split))
        assert torch.allclose(part, split.mean(dim=(2, 3)), atol=1e-6)
        assert torch.equal(SplitView(model, "rest")(SplitView(model, "trunk")(x)), resumed)
    h, w, c = split_shape(cfg)
    assert tuple(split.shape) == (5, c, h, w)
    assert part.shape == (5, model.part_dim) and full.shape == (5, model.full_dim)


def test_residual_only_where_shapes_match():
    model = Backbone(DEFAULT_CONFIG["model"])
    flags = [b.residual for b in model.blocks]
    # [1,8,1] after an 8-channel stem, then only stride-1 blocks that keep channels
    assert flags == [True, False, True, False, True, False, True]


def _hooked_macs(model: Backbone, size: int) -> int:
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += out.numel() * k * mod.in_channels // mod.groups

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def test_mac_counter_matches_the_real_modules():
    for cfg in (DEFAULT_CONFIG["model"], {"backbone": "proxyless-w0.3", "input_size": 64}):
        model = Backbone(cfg)
        size = model.config["input_size"]
        assert count_macs(cfg) == _hooked_macs(model, size)


def test_mcunet_in3_published_macs():
    macs = count_macs({"backbone": "mcunet-in3"}, input_size=176, num_classes=1000)
    assert abs(macs - 81.8e6) / 81.8e6 < 0.01
    # the anchor's cumulative MAC share after block 9 (MicroT's cut) is about 62 %
    assert abs(part_mac_share({"backbone": "mcunet-in3"}) - 0.62) < 0.01
    assert len(PRESETS["mcunet-in3"]["blocks"]) == 18


def test_proxyless_w03_published_macs():
    cfg = {"backbone": "proxyless-w0.3"}
    macs = count_macs(cfg, input_size=176, num_classes=1000)
    assert abs(macs - 38.3e6) / 38.3e6 < 0.05
    assert Backbone(cfg).full_dim == 384
    assert len(macs_per_stage(cfg)) == len(PRESETS["proxyless-w0.3"]["blocks"]) + 2


def test_bad_split_and_block_configs_raise():
    with pytest.raises(MicrotError, match="split_block"):
        Backbone({**DEFAULT_CONFIG["model"], "split_block": 7})
    with pytest.raises(MicrotError, match="block"):
        Backbone({**DEFAULT_CONFIG["model"], "blocks": [[1, 8, 1, 3], [4, 16, 3, 4]], "split_block": 1})
    with pytest.raises(MicrotError, match="unknown backbone"):
        Backbone({"backbone": "resnet-50"})


def test_preset_fixes_architecture_but_not_resolution_or_cut():
    merged = {**DEFAULT_CONFIG["model"], "backbone": "mcunet-in3", "input_size": 64, "split_block": 5}
    model = Backbone(merged)
    assert model.config["blocks"] == PRESETS["mcunet-in3"]["blocks"]
    assert model.config["stem_channels"] == 16 and model.full_dim == 160
    assert (model.config["input_size"], model.split_block) == (64, 5)
    assert split_shape(merged) == (16, 16, 16)
    bare = Backbone({"backbone": "mcunet-in3"})
    assert (bare.config["input_size"], bare.split_block) == (176, 9)
    assert split_shape({"backbone": "mcunet-in3"}) == (11, 11, 40)
