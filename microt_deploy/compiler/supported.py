"""The one list of what the compiler runs: every supported TFLite builtin op with the options and
shapes it accepts. The compiler's reader refuses anything else (reader.py), export checks its graphs
against the same list (export/tflite_info.py), and ``docs/ops.md`` is generated from it
(:func:`ops_markdown`; regenerate with ``python -m microt_deploy.compiler.supported > docs/ops.md``).

The per-op checks themselves live with each op's lowering (ops/*.py); this table is what they accept,
written for people. Every entry is bit-exact with TFLite's reference kernels (BUILTIN_REF)."""

from __future__ import annotations

DOCS_COMMAND = "python -m microt_deploy.compiler.supported > docs/ops.md"

FUSED_ACTIVATIONS = "fused activation NONE, RELU, RELU6 or RELU_N1_TO_1"
SAME_QUANT = "input and output with the same scale and zero point"

# op -> (options and shapes accepted, what else to know)
OPS: dict[str, tuple[str, str]] = {
    "ADD": ("broadcasting of any two shapes up to 4-D (scalars, per-channel, rows, columns, both sides); "
            f"constant or activation operands; {FUSED_ACTIVATIONS}", "int8, per-tensor quantization"),
    "AVERAGE_POOL_2D": ("any filter size and strides (also unequal), padding SAME or VALID; "
                        f"{FUSED_ACTIVATIONS}", f"4-D NHWC; {SAME_QUANT}"),
    "CONCATENATION": ("any axis (also negative), any number of inputs, rank 1-4",
                      f"{SAME_QUANT} for every input; no fused activation"),
    "CONV_2D": ("any kernel size, strides and dilations (also unequal), padding SAME or VALID, with or "
                f"without bias; {FUSED_ACTIVATIONS}",
                "4-D NHWC; symmetric int8 filter, per-tensor or per-channel; no grouped convolution"),
    "DEPTHWISE_CONV_2D": ("any depth multiplier, kernel size, strides and dilations, padding SAME or VALID; "
                          f"{FUSED_ACTIVATIONS}", "4-D NHWC; symmetric int8 filter, per-tensor or per-channel"),
    "DEQUANTIZE": ("int8 activation -> float32", "only as a graph output (float-I/O models)"),
    "FULLY_CONNECTED": (f"any input rank, keep_num_dims, with or without bias; {FUSED_ACTIVATIONS}",
                        "default weights format; symmetric int8 weights, per-tensor or per-channel"),
    "HARD_SWISH": ("any shape", "output scale >= input scale / 128"),
    "LOGISTIC": ("any shape", "output scale 1/256, zero point -128"),
    "MAX_POOL_2D": ("any filter size and strides (also unequal), padding SAME or VALID; "
                    f"{FUSED_ACTIVATIONS}", f"4-D NHWC; {SAME_QUANT}"),
    "MEAN": ("any set of axes (also negative, repeated), keep_dims true or false, rank 1-4",
             "constant axes; per-tensor quantization"),
    "MUL": (f"broadcasting of any two shapes up to 4-D; constant or activation operands; {FUSED_ACTIVATIONS}",
            "int8, per-tensor quantization"),
    "PAD": ("any non-negative paddings, rank 1-4; folded into the CONV_2D / DEPTHWISE_CONV_2D that is its "
            "only reader (no buffer, no pass) when it pads H and W only",
            f"constant paddings; {SAME_QUANT}"),
    "PADV2": ("any non-negative paddings and constant pad value, rank 1-4; folded like PAD when the value "
              "is the input's zero point", f"constant paddings; {SAME_QUANT}"),
    "QUANTIZE": ("int8 -> int8 (requantize), float32 -> int8", "float32 only as a graph input"),
    "RELU": ("any shape", "per-tensor quantization"),
    "RELU6": ("any shape", "per-tensor quantization"),
    "RELU_N1_TO_1": ("any shape", "per-tensor quantization"),
    "RESHAPE": ("any shape of the same size", f"{SAME_QUANT}; runs as an alias (no copy)"),
    "RESIZE_NEAREST_NEIGHBOR": ("any output size, align_corners, half_pixel_centers",
                                f"4-D NHWC; constant size; {SAME_QUANT}"),
    "SOFTMAX": ("any beta, over the last axis of any rank", "output scale 1/256, zero point -128"),
    "SQUEEZE": ("any squeeze dims", f"{SAME_QUANT}; runs as an alias (no copy)"),
    "SUM": ("any set of axes (also negative, repeated), keep_dims true or false, rank 1-4",
            "constant axes; per-tensor quantization. Checked against tflite-micro's reference kernel: "
            "TF 2.19's BUILTIN_REF int8 SUM returns wrong values (measured), its other kernels agree"),
    "TRANSPOSE": ("any permutation, rank 1-4", f"constant permutation; {SAME_QUANT}"),
}

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(OPS))
REEXPORT_WITHOUT = ("re-export the model without it (e.g. RELU/RELU6/LOGISTIC instead of TANH, pooling or MEAN "
                    "instead of other reductions, RESHAPE instead of slicing); docs/ops.md lists what runs")


def supported_list() -> str:
    """The supported ops, as refusal messages name them."""
    return ", ".join(SUPPORTED_OPS)


def unsupported_op_message(what: str) -> tuple[str, str]:
    """(problem, fix) for an op outside the list; ``what`` names it (e.g. "op 7 SQUARED_DIFFERENCE")."""
    return f"{what} is not supported", f"supported: {supported_list()}; {REEXPORT_WITHOUT}"


def ops_markdown() -> str:
    """docs/ops.md: one row per supported op."""
    lines = [
        "# Supported TFLite ops",
        "",
        "Generated from `microt_deploy/compiler/supported.py` (do not edit by hand); regenerate with",
        f"`{DOCS_COMMAND}`.",
        "",
        "The compiler (`microt-deploy compile`, `infer`, `bench`) and export's check accept exactly these",
        "builtin ops, with int8 activations (float32 only at a float-I/O model's edges: QUANTIZE at an",
        "input, DEQUANTIZE at an output), one subgraph and static shapes. Every op below is bit-exact with",
        "TFLite's reference kernels (`BUILTIN_REF`; SUM: tflite-micro's). Anything else is refused before",
        "any C is written, with one line naming the op, its operator index, its options and what to change,",
        "for example:",
        "",
        "```",
        "error: op 7 SQUARED_DIFFERENCE (output 'sq', options {}) is not supported; supported: ADD, ...; "
        "re-export the model without it ...",
        "```",
        "",
        "| op | options and shapes accepted | also required |",
        "|---|---|---|",
    ]
    for name in SUPPORTED_OPS:
        options, notes = OPS[name]
        lines.append(f"| `{name}` | {options} | {notes} |")
    lines += [
        "",
        "Static shape arithmetic is evaluated at read time and leaves the graph (`compiler/shape_fold.py`):",
        "`SHAPE`, a 1-D `STRIDED_SLICE` (begin / end / shrink-axis masks), `PACK` and `CONCATENATION` of",
        "constant int32 / int64 vectors, which TFLiteConverter writes for Keras `Reshape` / `Flatten` layers",
        "with a free batch dimension (Keras MobileNet's head, MobileNetV3's and EfficientNet's",
        "squeeze-and-excitation blocks). Keras 2 (`tf_keras`, TF 2.15 and older) also writes the flattening",
        "`Reshape`'s output as dynamic (signature `[-1, -1]`); once its shape input folds, that output gets the",
        "static shape TFLite's `RESHAPE` computes. A shape that still depends on run-time data is refused.",
        "",
        "Models may have several inputs and outputs; `microt-deploy infer` then reads and writes `.npz`",
        "files keyed by the tensor names.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(ops_markdown(), end="")
