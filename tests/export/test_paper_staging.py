"""A paper backbone split as MicroT stages it: mcunet-in3 (at 48x48 instead of its native 176, to stay
fast) cut after block 9 like the paper, exported by the export stage as trunk / part head / rest,
compiled on one arena as `microt-deploy compile` does (part head and rest read the trunk's split
tensor in place), built into the host firmware and run over its pty: every device tensor (split,
part features, full features) equals TFLite's reference kernels byte for byte. `make bench-paper`
(evaluate/paper_bench.py) runs both backbones at 176 on the emulated board."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microt_deploy.boards import load_board
from microt_deploy.compiler import GraphSpec, compile_program
from microt_deploy.export.pipeline import export_graphs
from microt_deploy.export.quantize import check_split_params
from microt_deploy.link.device import Device
from microt_deploy.model.backbone import Backbone, split_shape
from microt_deploy.pipeline import GRAPHS, PREFIX
from microt_deploy.targets import build, launch, render_firmware
from tests.targets.split_model import reference_chain

pytestmark = pytest.mark.slow

SIZE = 48


def test_paper_backbone_stages_are_bit_exact_on_the_device_runtime(tmp_path):
    cfg = {"backbone": "mcunet-in3", "input_size": SIZE, "split_block": 9}
    torch.manual_seed(0)
    model = Backbone(cfg)
    model.train()  # BatchNorm statistics of a few seeded batches: realistic activation ranges
    with torch.no_grad():
        for _ in range(3):
            model.full(torch.rand(8, 3, SIZE, SIZE) * 2 - 1)
    model.eval()
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, size=(16, SIZE, SIZE, 3)).astype(np.float32)
    out = tmp_path / "export"
    out.mkdir()
    info = export_graphs(model, calib, out)
    assert info["trunk"]["output"]["shape"] == [1, *split_shape(cfg)] == [1, 3, 3, 40]
    check_split_params(info["trunk"]["output"], {g: info[g]["input"] for g in ("part_head", "rest")})
    paths = {g: out / f"{g}.tflite" for g in GRAPHS}

    specs = [  # as pipeline.compile
        GraphSpec(paths["trunk"], prefix=PREFIX["trunk"]),
        GraphSpec(paths["part_head"], prefix=PREFIX["part_head"], input_bindings={0: (PREFIX["trunk"], 0)}),
        GraphSpec(paths["rest"], prefix=PREFIX["rest"], input_bindings={0: (PREFIX["trunk"], 0)}),
    ]
    plan = compile_program(specs, tmp_path / "compiled")
    assert [g["prefix"] for g in plan["graphs"]] == list(GRAPHS)
    assert plan["macs"] == sum(g["macs"] for g in plan["graphs"]) and plan["graphs"][1]["macs"] == 0

    board = load_board("host")
    config = render_firmware(tmp_path / "compiled", board, tmp_path / "fw", {"max_tasks": 1, "max_classes": 10})
    assert config.input_size == SIZE * SIZE * 3 and config.split_size == 3 * 3 * 40
    result = build(board, tmp_path / "fw")

    scale, zp = info["trunk"]["input"]["scale"], info["trunk"]["input"]["zero_point"]
    images = np.clip(np.round(calib[:2] / scale) + zp, -128, 127).astype(np.int8).reshape(2, -1)
    samples = np.concatenate([images, rng.integers(-128, 128, (1, SIZE * SIZE * 3), dtype=np.int8)])
    with launch(board, result.image, limit_s=120) as port:
        device = Device(port)
        hello = device.hello()
        assert (hello.part_dim, hello.full_dim) == (40, 160)
        for sample in samples:
            device.load_input(sample)
            device.run_graphs()
            for tid, want in enumerate(reference_chain(paths, sample)):
                got = np.frombuffer(device.read_tensor(tid), np.int8)
                np.testing.assert_array_equal(got, want, err_msg=f"{GRAPHS[tid]} output differs")
        device.exit(0)
