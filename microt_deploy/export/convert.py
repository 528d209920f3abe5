"""The conversion chain for one graph: torch -> ONNX (checked by onnxruntime) -> float SavedModel
(onnx2tf, checked for NHWC layout and against torch) -> int8 TFLite (TFLiteConverter, calibrated).

Each step raises MicrotError when its check fails, naming the graph and the measured difference.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from microt_deploy.errors import MicrotError
from microt_deploy.export.quiet import import_tensorflow, quiet

# Float parity tolerance between torch, onnxruntime and the SavedModel, relative to the output range.
FLOAT_RTOL = 1e-4


def _tolerance(reference: np.ndarray) -> float:
    return FLOAT_RTOL * max(float(np.abs(reference).max()), 1.0)


def to_onnx(module: torch.nn.Module, example_nchw: torch.Tensor, path: Path) -> None:
    """Export with the TorchScript-based exporter at opset 17 (BatchNorm folds into the convs)."""
    module.eval()
    # The legacy exporter is chosen on purpose (REFERENCE: the dynamo path needs opset 18 and
    # external data); its deprecation warning is not news to the user.
    with quiet(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        try:
            torch.onnx.export(
                module,
                (example_nchw,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["input"],
                output_names=["output"],
                do_constant_folding=True,
            )
        except Exception as err:  # the exporter raises many types; the user needs one line
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise MicrotError(f"torch.onnx.export failed for {path.stem} ({first})", "check the model") from None


def check_onnx(name: str, path: Path, module: torch.nn.Module, samples_nchw: torch.Tensor) -> float:
    """Max abs difference between onnxruntime and torch on ``samples`` (one at a time); raises if large."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for sample in samples_nchw:
            want = module(sample[None]).numpy()
            got = session.run(None, {"input": sample[None].numpy()})[0]
            diff = float(np.abs(got - want).max())
            if diff > _tolerance(want):
                raise MicrotError(
                    f"ONNX {name} differs from torch by {diff:.3g} (tolerance {_tolerance(want):.3g})",
                    "the model uses an op the ONNX exporter translates wrongly; simplify that layer",
                )
            worst = max(worst, diff)
    return worst


# onnx2tf validates 3-channel image models on this sample file, downloading it from GitHub when it
# is not in the working folder; we put our own images there under that name instead.
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _write_onnx2tf_samples(folder: Path, images_nhwc: np.ndarray) -> None:
    unit = np.clip(images_nhwc[:20] * 0.5 + 0.5, 0.0, 1.0)
    if unit.shape[-1] != 3:
        unit = np.zeros((20, 128, 128, 3), dtype=np.float32)
    idx = np.resize(np.arange(len(unit)), 20)
    rows = np.linspace(0, unit.shape[1] - 1, 128).round().astype(int)
    cols = np.linspace(0, unit.shape[2] - 1, 128).round().astype(int)
    np.save(folder / ONNX2TF_SAMPLE_FILE, unit[idx][:, rows][:, :, cols].astype(np.float32))


@contextlib.contextmanager
def _no_network() -> Iterator[None]:
    """Make any HTTP request from inside the block fail at once instead of reaching the internet."""
    import requests

    def refuse(*args: object, **kwargs: object) -> None:
        raise MicrotError("onnx2tf tried to download a file", "report this; conversion must run offline")

    original = requests.sessions.Session.request
    requests.sessions.Session.request = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        requests.sessions.Session.request = original  # type: ignore[method-assign]


def onnx_to_saved_model(name: str, onnx_path: Path, out_dir: Path, sample_nhwc: np.ndarray) -> Path:
    """onnx2tf -> float SavedModel in ``out_dir`` (no quantisation, no downloads).

    ``sample_nhwc``: a few normalised input images, written where onnx2tf looks for its sample data.
    """
    import_tensorflow()
    with quiet():
        import onnx2tf

    cwd = os.getcwd()
    # absolute paths: the conversion runs with the temp folder as the working folder
    onnx_path, out_dir = Path(onnx_path).resolve(), Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _write_onnx2tf_samples(out_dir.parent, sample_nhwc)
    failure = ""
    with quiet() as log, _no_network():
        try:
            # onnx2tf reads and writes side files in the working folder: keep them in our temp folder.
            os.chdir(out_dir.parent)
            # Default layout handling: 4D NCHW graph inputs become NHWC (see ExportView for why).
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(out_dir),
                non_verbose=True,
            )
        except MicrotError:
            raise
        except (Exception, SystemExit) as err:  # onnx2tf calls sys.exit on some failures
            failure = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        finally:
            os.chdir(cwd)
    if failure:  # after the quiet block, whose captured text is only complete once it has closed
        raise MicrotError(f"onnx2tf could not convert {name} ({failure})", f"see: {log.tail()}")
    if not (out_dir / "saved_model.pb").is_file():
        raise MicrotError(f"onnx2tf wrote no SavedModel for {name}", f"see: {log.tail()}")
    return out_dir


def check_saved_model(
    name: str, saved_dir: Path, expected_nhwc: list[int], samples_nhwc: np.ndarray, want: np.ndarray
) -> float:
    """The SavedModel must take NHWC input of ``expected_nhwc`` and match torch (``want``, NHWC).

    Running real samples through it catches a layout swap that shapes alone would not (C == H == W).
    """
    tf = import_tensorflow()
    with quiet():
        loaded = tf.saved_model.load(str(saved_dir))
    fn = loaded.signatures["serving_default"]
    specs = list(fn.structured_input_signature[1].values())
    if len(specs) != 1 or [int(d) if d is not None else -1 for d in specs[0].shape] != expected_nhwc:
        got = [list(s.shape) for s in specs]
        raise MicrotError(
            f"the {name} SavedModel takes {got}, not one NHWC input {expected_nhwc}",
            "onnx2tf guessed the layout wrongly; change the split so that C, H and W differ",
        )
    worst = 0.0
    key = next(iter(fn.structured_input_signature[1]))
    for sample, expect in zip(samples_nhwc, want, strict=True):
        out = next(iter(fn(**{key: tf.constant(sample[None])}).values())).numpy()[0]
        if out.shape != expect.shape:
            raise MicrotError(
                f"the {name} SavedModel outputs shape {out.shape}, torch (NHWC) gives {expect.shape}",
                "onnx2tf changed the layout; report this model",
            )
        diff = float(np.abs(out - expect).max())
        if diff > _tolerance(expect):
            raise MicrotError(
                f"the {name} SavedModel differs from torch by {diff:.3g}",
                "onnx2tf changed the layout or an op's meaning; report this model",
            )
        worst = max(worst, diff)
    return worst


def quantize_saved_model(saved_dir: Path, representative_nhwc: Iterable[np.ndarray]) -> bytes:
    """Full-integer int8 TFLite (int8 in and out, per-channel weights) calibrated on the samples."""
    tf = import_tensorflow()
    samples = [np.asarray(s, dtype=np.float32)[None] for s in representative_nhwc]

    def representative():
        for sample in samples:
            yield [sample]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_dir))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with quiet() as log:
        try:
            return bytes(converter.convert())
        except Exception as err:  # converter errors are long multi-line texts
            raise MicrotError(
                f"int8 conversion of {saved_dir.parent.name} failed ({str(err).splitlines()[0]})",
                f"see: {log.tail()}",
            ) from None
