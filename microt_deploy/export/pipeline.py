"""The export stage: a trained extractor -> three int8 TFLite graphs + export.json with a parity report.

Owns ``export_project(project, progress=None)``. Graphs: ``trunk`` (input -> split activation),
``part_head`` (split -> part features) and ``rest`` (split -> full features). The trunk is calibrated
on the train + calib images; part_head and rest on the trunk's float outputs for those same images,
so that all three agree on the split tensor's quantisation (checked; a mismatch is an error).
Everything is built in a temporary folder and replaces ``export/`` only when all checks pass.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from microt_deploy import atomic
from microt_deploy.errors import MicrotError
from microt_deploy.export.convert import (
    check_onnx,
    check_saved_model,
    onnx_to_saved_model,
    quantize_saved_model,
    to_onnx,
)
from microt_deploy.export.quantize import check_split_params, dequantize, quantize_input
from microt_deploy.export.reference import GRAPHS, reference_outputs
from microt_deploy.export.tflite_info import check_ops, io_info
from microt_deploy.model.backbone import Backbone, SplitView, resolve_model_config
from microt_deploy.model.data import NORM_MEAN, NORM_STD, load_splits
from microt_deploy.model.probe import linear_probe_accuracy
from microt_deploy.model.train import extract_features, load_extractor, set_threads, to_nchw
from microt_deploy.project import Project

ProgressFn = Callable[[str, int, int, dict[str, float]], None]
# Samples per graph for the onnxruntime and SavedModel float checks (each is a full forward pass).
FLOAT_CHECK_SAMPLES = 8


class ExportView(torch.nn.Module):
    """One split view as it is exported: NCHW input (torch's layout; onnx2tf turns every 4D graph
    input into NHWC by rule, without guessing), and the trunk's split activation permuted to NHWC
    explicitly, the layout TFLite and the firmware keep it in.

    Measured with onnx2tf 1.29.24 on an 8x8x8 split (C == H == W): NHWC graph inputs (with or
    without keep_nwc / keep_shape_absolutely) came out with a TRANSPOSE and wrong values, and a
    ReduceMean right after the input reduced the wrong axes; this arrangement and GlobalAveragePool
    are exact. ``check_saved_model`` verifies it on real samples for every export.
    """

    def __init__(self, backbone: Backbone, which: str) -> None:
        super().__init__()
        self.view = SplitView(backbone, which)
        self.which = which

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.view(x)
        return out.permute(0, 2, 3, 1) if self.which == "trunk" else out


def onnx_layouts(which: str) -> dict[str, str]:
    return {"input": "NCHW", "output": "NHWC" if which == "trunk" else "NC"}


def _to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def export_graphs(
    model: Backbone, calib_images: np.ndarray, out_dir: Path, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Convert the three views of ``model`` into ``out_dir`` (*.onnx, *.tflite); returns per-graph info."""
    model.eval()
    x = to_nchw(calib_images)
    with torch.no_grad():
        # part_head and rest are calibrated on the trunk's float outputs for the same images.
        split = torch.cat([model.trunk(x[i : i + 256]) for i in range(0, len(x), 256)])
    inputs = {"trunk": x, "part_head": split, "rest": split}
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="microt-export-") as tmp:
        for step, name in enumerate(GRAPHS):
            view = ExportView(model, name).eval()
            sample = inputs[name]
            sample_nhwc = _to_nhwc(sample)
            onnx_path = out_dir / f"{name}.onnx"
            to_onnx(view, sample[:1], onnx_path)
            onnx_diff = check_onnx(name, onnx_path, view, sample[:FLOAT_CHECK_SAMPLES])
            saved = onnx_to_saved_model(name, onnx_path, Path(tmp) / name / "saved_model", calib_images)
            few = sample[:FLOAT_CHECK_SAMPLES]
            with torch.no_grad():
                want = view(few).numpy()
            expected = [1, *sample_nhwc.shape[1:]]
            tf_diff = check_saved_model(name, saved, expected, sample_nhwc[:FLOAT_CHECK_SAMPLES], want)
            data = quantize_saved_model(saved, sample_nhwc)
            ops = check_ops(name, data)
            atomic.write_bytes(out_dir / f"{name}.tflite", data)
            ins, outs = io_info(data)
            info[name] = {
                "onnx": f"{name}.onnx",
                "tflite": f"{name}.tflite",
                "tflite_bytes": len(data),
                "ops": ops,
                "input": ins[0],
                "output": outs[0],
                "onnx_layout": onnx_layouts(name),
                "onnx_max_abs_diff": onnx_diff,
                "saved_model_max_abs_diff": tf_diff,
            }
            if progress:
                progress("export", step + 1, len(GRAPHS), {"ops": float(len(ops))})
    return info


def _params(tensor: dict[str, Any]) -> dict[str, Any]:
    return {k: tensor[k] for k in ("shape", "scale", "zero_point", "dtype")}


def parity_report(model: Backbone, export_dir: Path, meta: dict[str, Any], splits: dict[str, Any]) -> dict[str, Any]:
    """Float (torch) vs int8 (reference kernels, chained at the split) features on calib and test."""
    feats: dict[str, dict[str, np.ndarray]] = {}
    for split_name in ("calib", "test"):
        images = splits[split_name].images
        ref = reference_outputs(export_dir, quantize_input(images, meta))
        part, full = extract_features(model, images)
        feats[split_name] = {
            "part_float": part,
            "full_float": full,
            "part_int8": dequantize(ref["part_features"], **_qp(meta["part_features"])),
            "full_int8": dequantize(ref["full_features"], **_qp(meta["full_features"])),
        }
    report: dict[str, Any] = {"scored_on": "test", "probe_fit": "calib", "samples": len(splits["test"])}
    test = feats["test"]
    for kind in ("part", "full"):
        f, q = test[f"{kind}_float"], test[f"{kind}_int8"]
        cos = _cosine(f, q)
        report[f"{kind}_features"] = {
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
            "max_abs_error": float(np.abs(f - q).max()),
            "mean_abs_error": float(np.abs(f - q).mean()),
            "float_range": float(np.abs(f).max()),
        }
    probes: dict[str, Any] = {}
    for task, y_test in splits["test"].labels.items():
        y_calib = splits["calib"].labels[task]
        probes[task] = {
            f"{kind}_{prec}": linear_probe_accuracy(
                feats["calib"][f"{kind}_{prec}"], y_calib, test[f"{kind}_{prec}"], y_test
            )
            for kind in ("part", "full")
            for prec in ("float", "int8")
        }
    report["linear_probe"] = probes
    return report


def _qp(tensor: dict[str, Any]) -> dict[str, Any]:
    return {"scale": tensor["scale"], "zero_point": tensor["zero_point"]}


ARCHITECTURE_KEYS = ("input_size", "stem_channels", "blocks", "split_block", "feature_channels")


def _check_config_matches(model: Backbone, model_cfg: dict[str, Any]) -> None:
    """The checkpoint must be the model the config describes (the part head is trained at its split)."""
    wanted = resolve_model_config(model_cfg)
    for key in ARCHITECTURE_KEYS:
        if wanted.get(key) != model.config.get(key):
            raise MicrotError(
                f"checkpoints/extractor.pt was trained with model.{key} = {model.config.get(key)} but "
                f"microt.toml now says {wanted.get(key)}",
                "run `microt-deploy train` again (or restore the old value)",
            )


def export_project(project: Project, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Export ``checkpoints/extractor.pt`` to ``export/`` and return the export.json content."""
    set_threads(project.config.get("train", {}))
    started = time.perf_counter()
    model = load_extractor(project.checkpoints / "extractor.pt")
    _check_config_matches(model, project.config["model"])
    splits = load_splits(project.config)
    calib_images = np.concatenate([splits["train"].images, splits["calib"].images])
    with atomic.staged_dir(project.export_dir) as out:
        graphs = export_graphs(model, calib_images, out, progress)
        trunk_out = graphs["trunk"]["output"]
        consumers = {g: graphs[g]["input"] for g in ("part_head", "rest")}
        rel = check_split_params(trunk_out, consumers)
        meta: dict[str, Any] = {
            "input": {
                **_params(graphs["trunk"]["input"]),
                "layout": "NHWC",
                "normalisation": {"mean": NORM_MEAN, "std": NORM_STD, "float_range": [-1.0, 1.0]},
            },
            "split": {
                **_params(trunk_out),
                "block": model.split_block,
                "consumers": {g: _qp(c) for g, c in consumers.items()},
                "max_rel_scale_diff": rel,
            },
            "part_features": _params(graphs["part_head"]["output"]),
            "full_features": _params(graphs["rest"]["output"]),
            "graphs": graphs,
            "calibration": {"source": "train+calib", "samples": len(calib_images)},
        }
        meta["parity"] = parity_report(model, out, meta, splits)
        meta["seconds"] = time.perf_counter() - started
        atomic.write_text(out / "export.json", json.dumps(meta, indent=2))
    return meta
