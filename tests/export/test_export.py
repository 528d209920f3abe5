"""Export of a tiny trained model end to end: files, ops, layouts, split params, parity, the oracle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from microt_deploy.errors import MicrotError
from microt_deploy.export import export_project, quantize_input, reference_outputs
from microt_deploy.export.convert import onnx_to_saved_model, quantize_saved_model, to_onnx
from microt_deploy.export.pipeline import ExportView
from microt_deploy.export.quantize import check_split_params, dequantize
from microt_deploy.export.tflite_info import SUPPORTED_OPS, io_info, op_names
from microt_deploy.model.backbone import split_shape
from microt_deploy.model.data import load_splits
from microt_deploy.model.train import load_extractor, train_project
from microt_deploy.project import init_project

from ..model.tiny import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    # Cut after the first block: the split activation is 8x8x8, C == H == W, the case where a
    # converter that guesses NCHW vs NHWC goes silently wrong.
    cfg = tiny_config(joint_epochs=6)
    cfg["model"]["split_block"] = 1
    project = init_project(tmp_path_factory.mktemp("export") / "p", cfg)
    train_project(project)
    meta = export_project(project)
    return project, meta


def test_files_and_metadata(exported):
    project, meta = exported
    names = sorted(p.name for p in project.export_dir.iterdir())
    assert names == sorted(
        ["export.json"] + [f"{g}.{ext}" for g in ("trunk", "part_head", "rest") for ext in ("onnx", "tflite")]
    )
    assert json.loads((project.export_dir / "export.json").read_text()) == json.loads(json.dumps(meta))
    # nothing half-written or temporary left next to the export folder
    assert sorted(p.name for p in project.root.iterdir()) == ["checkpoints", "export", "microt.toml"]
    assert meta["input"]["shape"] == [1, 16, 16, 3] and meta["input"]["dtype"] == "int8"
    h, w, c = split_shape(project.config["model"])
    assert meta["split"]["shape"] == [1, h, w, c] and h == w == c == 8
    assert meta["part_features"]["shape"] == [1, 8] and meta["full_features"]["shape"] == [1, 16]
    assert meta["seconds"] < 90


def test_ops_are_supported_and_layout_is_nhwc(exported):
    project, meta = exported
    for name in ("trunk", "part_head", "rest"):
        data = (project.export_dir / f"{name}.tflite").read_bytes()
        ops = op_names(data)
        assert ops == meta["graphs"][name]["ops"]
        assert set(ops) <= SUPPORTED_OPS, ops
        ins, outs = io_info(data)
        assert ins[0]["dtype"] == outs[0]["dtype"] == "int8"
    assert meta["graphs"]["trunk"]["ops"][:2] == ["PAD", "CONV_2D"]
    assert "MEAN" in meta["graphs"]["part_head"]["ops"]
    assert meta["graphs"]["rest"]["ops"][-2:] == ["MEAN", "RESHAPE"]


def test_split_params_agree(exported):
    _, meta = exported
    split = meta["split"]
    for consumer in split["consumers"].values():
        assert consumer["zero_point"] == split["zero_point"]
        assert abs(consumer["scale"] - split["scale"]) <= 1e-5 * split["scale"]
    assert split["max_rel_scale_diff"] <= 1e-5


def test_onnx_graphs_match_torch(exported):
    import onnxruntime as ort

    project, meta = exported
    model = load_extractor(project.checkpoints / "extractor.pt")
    images = load_splits(project.config)["test"].images[:4]
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        split = model.trunk(x)
    for name, inp in (("trunk", x), ("part_head", split), ("rest", split)):
        assert meta["graphs"][name]["onnx_max_abs_diff"] < 1e-3
        assert meta["graphs"][name]["onnx_layout"]["input"] == "NCHW"
        session = ort.InferenceSession(str(project.export_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            want = ExportView(model, name)(inp).numpy()
        got = np.concatenate([session.run(None, {"input": s[None].numpy()})[0] for s in inp])
        assert np.abs(got - want).max() < 1e-4
    assert got.shape == (4, 16)
    trunk_out = ort.InferenceSession(str(project.export_dir / "trunk.onnx"), providers=["CPUExecutionProvider"])
    assert trunk_out.run(None, {"input": x[:1].numpy()})[0].shape == (1, 8, 8, 8)  # NHWC split


def test_reference_chain_tracks_float_model(exported):
    project, meta = exported
    model = load_extractor(project.checkpoints / "extractor.pt")
    images = load_splits(project.config)["test"].images[:6]
    q = quantize_input(images, project.export_dir)
    ref = reference_outputs(project.export_dir, q)
    assert ref["split"].shape == (6, *meta["split"]["shape"][1:]) and ref["split"].dtype == np.int8
    assert ref["part_features"].shape == (6, 8) and ref["full_features"].shape == (6, 16)
    with torch.no_grad():
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        split_f = model.trunk(x).permute(0, 2, 3, 1).numpy()
        part_f, full_f = (t.numpy() for t in model(x))
    sp = meta["split"]
    split_q = dequantize(ref["split"], sp["scale"], sp["zero_point"])
    # int8 noise accumulates through the trunk's layers: a few steps on average, never a layout swap
    assert np.abs(split_q - split_f).mean() < 2 * sp["scale"]
    for key, got, want in (
        ("split", split_q.reshape(6, -1), split_f.reshape(6, -1)),
        ("part_features", dequantize(ref["part_features"], **_qp(meta["part_features"])), part_f),
        ("full_features", dequantize(ref["full_features"], **_qp(meta["full_features"])), full_f),
    ):
        cos = np.sum(got * want, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        assert cos.min() > 0.95, key
    parity = meta["parity"]
    assert parity["part_features"]["cosine_mean"] > 0.97 and parity["full_features"]["cosine_mean"] > 0.97
    for task in ("digits", "loops"):
        probe = parity["linear_probe"][task]
        assert abs(probe["full_float"] - probe["full_int8"]) <= 0.2
    with pytest.raises(MicrotError, match="int8 of shape"):
        reference_outputs(project.export_dir, images)


def _qp(tensor: dict) -> dict:
    return {"scale": tensor["scale"], "zero_point": tensor["zero_point"]}


def test_mismatched_split_calibration_is_refused(exported, tmp_path):
    """Calibrate part_head on the wrong range (3x the trunk's outputs): the check must refuse it."""
    project, meta = exported
    model = load_extractor(project.checkpoints / "extractor.pt")
    view = ExportView(model, "part_head").eval()
    images = load_splits(project.config)["train"].images
    with torch.no_grad():
        split = model.trunk(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    to_onnx(view, split[:1], tmp_path / "part_head.onnx")
    saved = onnx_to_saved_model("part_head", tmp_path / "part_head.onnx", tmp_path / "sm" / "saved_model", images)
    wrong = quantize_saved_model(saved, split.permute(0, 2, 3, 1).numpy() * 3.0)
    trunk_out = io_info((project.export_dir / "trunk.tflite").read_bytes())[1][0]
    with pytest.raises(MicrotError, match="split tensor quantisation differs"):
        check_split_params(trunk_out, {"part_head": io_info(wrong)[0][0]})


def test_failed_export_leaves_previous_export_intact(exported, tmp_path):
    project, _ = exported
    copy = init_project(tmp_path / "c", project.config)
    shutil.copytree(project.export_dir, copy.export_dir)
    before = {p.name: p.read_bytes() for p in copy.export_dir.iterdir()}
    with pytest.raises(MicrotError, match="microt-deploy train"):
        export_project(copy)  # no checkpoint in the copy
    assert {p.name: p.read_bytes() for p in copy.export_dir.iterdir()} == before
    (copy.checkpoints).mkdir()
    Path(copy.checkpoints / "extractor.pt").write_bytes(b"garbage")
    with pytest.raises(MicrotError):
        export_project(copy)
    assert {p.name: p.read_bytes() for p in copy.export_dir.iterdir()} == before


def test_config_changed_since_training_is_refused(exported, tmp_path):
    project, _ = exported
    cfg = json.loads(json.dumps(project.config))
    cfg["model"]["split_block"] = 2
    moved = init_project(tmp_path / "m", cfg)
    shutil.copytree(project.checkpoints, moved.checkpoints)
    with pytest.raises(MicrotError, match="split_block = 1 but microt.toml now says 2"):
        export_project(moved)
    assert not moved.export_dir.exists()
