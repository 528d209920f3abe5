"""The paper's backbones as bench models: MCUNet ``mcunet-in3`` and ProxylessNAS ``proxyless-w0.3`` at
their native 176x176, exported int8 through the project's own route (torch -> ONNX -> onnx2tf ->
TFLite full-integer) as one graph (stem, every block, pooled features), so `bench --backbones` measures
the compiler on the networks MicroT deploys, beside the peak SRAM the other engines publish for them.

The weights are seeded random (BatchNorm statistics from a few seeded batches): instructions, arena
and flash depend on shapes and sparsity, not on training, and bit-exactness is checked against
TFLite's reference kernels on the same file. Files are cached in the machine's state folder
(``$MICROT_STATE_DIR``, else ``~/.cache/microt-deploy``) under ``backbones/``, by name, resolution and
seed; nothing is downloaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..errors import MicrotError

SEED = 0
CALIBRATION_IMAGES = 16

# Peak SRAM (KB) the engines publish for the network at 176x176 (MCUNet, NeurIPS 2020, and the figures
# the issue carries); None: not published for that network.
PUBLISHED_PEAK_KB: dict[str, dict[str, float | None]] = {
    "mcunet-in3": {"TinyEngine": 260, "X-CUBE-AI": 243, "TFLM": 493},
    "proxyless-w0.3": {"TinyEngine": None, "X-CUBE-AI": None, "TFLM": None},
}
BACKBONES = tuple(PUBLISHED_PEAK_KB)


def generated_dir() -> Path:
    from ..targets.flashed import state_dir

    return state_dir() / "backbones"


def backbone_path(name: str, size: int = 176, seed: int = SEED) -> Path:
    return generated_dir() / f"{name}_{size}_seed{seed}.tflite"


def generate(name: str, size: int = 176, seed: int = SEED, out: Path | None = None) -> Path:
    """Export the backbone ``name`` at ``size`` (if not cached) and return its .tflite path."""
    import torch

    from ..export.convert import check_onnx, check_saved_model, onnx_to_saved_model, quantize_saved_model, to_onnx
    from ..model.backbone import PRESETS, Backbone

    if name not in PRESETS:
        raise MicrotError(f"unknown backbone {name!r}", f"use one of {', '.join(sorted(PRESETS))}")
    path = out or backbone_path(name, size, seed)
    if path.is_file():
        return path
    torch.manual_seed(seed)
    model = Backbone({"backbone": name, "input_size": size})
    model.train()  # BatchNorm running statistics of seeded batches: realistic activation ranges
    with torch.no_grad():
        for _ in range(3):
            model.full(torch.rand(8, 3, size, size) * 2 - 1)
    model.eval()
    full = _full_module(model).eval()
    rng = np.random.default_rng(seed)
    calib = rng.uniform(-1, 1, size=(CALIBRATION_IMAGES, size, size, 3)).astype(np.float32)
    x = torch.from_numpy(calib).permute(0, 3, 1, 2).contiguous()
    with tempfile.TemporaryDirectory(prefix="microt-backbone-") as tmp:
        onnx_path = Path(tmp) / f"{name}.onnx"
        to_onnx(full, x[:1], onnx_path)
        check_onnx(name, onnx_path, full, x[:4])
        saved = onnx_to_saved_model(name, onnx_path, Path(tmp) / "saved_model", calib)
        with torch.no_grad():
            want = full(x[:4]).numpy()
        check_saved_model(name, saved, [1, size, size, 3], calib[:4], want)
        data = quantize_saved_model(saved, calib)
    atomic.write_bytes(path, data)
    return path


def _full_module(backbone: Any) -> Any:
    """Backbone.full as an exportable module (pooled features, shape (N, C))."""
    import torch

    class Full(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone.full(x)

    return Full()


def backbone_of(model_file: str) -> str | None:
    """The backbone a generated bench file holds (by its name), or None."""
    return next((n for n in BACKBONES if Path(model_file).name.startswith(f"{n}_")), None)


def published_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per benched backbone: our peak SRAM and the engines' published ones."""
    return [published_row(name, r["peak_sram_bytes"]) for r in results
            if (name := backbone_of(r["model"])) and r.get("peak_sram_bytes")]


def published_row(name: str, peak_sram_bytes: int) -> dict[str, Any]:
    """Our measured peak beside each engine's published one (ratio: ours / theirs)."""
    row: dict[str, Any] = {"backbone": name, "peak_sram_kb": round(peak_sram_bytes / 1024, 1)}
    for engine, kb in PUBLISHED_PEAK_KB.get(name, {}).items():
        row[engine] = kb
        row[f"x {engine}"] = None if not kb else round(peak_sram_bytes / 1024 / kb, 3)
    return row
