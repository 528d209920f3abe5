"""A hand-written stand-in for the compiler's mdt_model.h/.c (test helper, written to tmp dirs).

The three "graphs" are tiny integer maps with the contract's macros and arena bindings, so the
firmware's protocol, store, trainer and staged inference can be tested without the compiler:
trunk: split[i] = input[i]; part_head: part[j] = split[j] (j < PART); rest: full[j] = split[j] / 2
+ split[j + FULL] / 2 -> all within one arena with the split kept intact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT = 16
PART = 4
FULL = 8
SCALES = {"input": (0.05, -3), "split": (0.05, -3), "part": (0.1, 2), "full": (0.07, -1)}

HEADER = """#ifndef MDT_MODEL_H
#define MDT_MODEL_H
#include <stdint.h>
#define MDT_ARENA_SIZE 48
#define MDT_TRUNK_INPUT0_OFFSET 0
#define MDT_TRUNK_INPUT0_SIZE 16
#define MDT_TRUNK_INPUT0_SCALE 0.05f
#define MDT_TRUNK_INPUT0_ZERO_POINT -3
#define MDT_TRUNK_OUTPUT0_OFFSET 16
#define MDT_TRUNK_OUTPUT0_SIZE 16
#define MDT_TRUNK_OUTPUT0_SCALE 0.05f
#define MDT_TRUNK_OUTPUT0_ZERO_POINT -3
#define MDT_PART_HEAD_INPUT0_OFFSET 16
#define MDT_PART_HEAD_INPUT0_SIZE 16
#define MDT_PART_HEAD_OUTPUT0_OFFSET 32
#define MDT_PART_HEAD_OUTPUT0_SIZE 4
#define MDT_PART_HEAD_OUTPUT0_SCALE 0.1f
#define MDT_PART_HEAD_OUTPUT0_ZERO_POINT 2
#define MDT_REST_INPUT0_OFFSET 16
#define MDT_REST_INPUT0_SIZE 16
#define MDT_REST_OUTPUT0_OFFSET 36
#define MDT_REST_OUTPUT0_SIZE 8
#define MDT_REST_OUTPUT0_SCALE 0.07f
#define MDT_REST_OUTPUT0_ZERO_POINT -1
void mdt_trunk_run(int8_t *arena);
void mdt_part_head_run(int8_t *arena);
void mdt_rest_run(int8_t *arena);
#endif
"""

SOURCE = """#include "mdt_model.h"
void mdt_trunk_run(int8_t *arena)
{
    int i;
    for (i = 0; i < 16; i++) {
        arena[16 + i] = arena[i];
    }
    for (i = 0; i < 16; i++) {
        arena[i] = 0x55; /* the input region is scratch once the split exists */
    }
}
void mdt_part_head_run(int8_t *arena)
{
    int i;
    for (i = 0; i < 4; i++) {
        arena[32 + i] = arena[16 + i];
    }
}
void mdt_rest_run(int8_t *arena)
{
    int i;
    for (i = 0; i < 8; i++) {
        arena[36 + i] = (int8_t)(arena[16 + i] / 2 + arena[24 + i] / 2);
    }
    for (i = 32; i < 36; i++) {
        arena[i] = 0x66; /* the part features may be overwritten by the rest */
    }
}
"""


def write_toy_model(out_dir: Path) -> Path:
    """Write mdt_model.h/.c into ``out_dir`` (a compiled/ stand-in) and return it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "mdt_model.h").write_text(HEADER)
    (out_dir / "mdt_model.c").write_text(SOURCE)
    return out_dir


def toy_outputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the toy graphs compute for one int8 input of 16 bytes: split, part, full."""
    split = x.astype(np.int8)
    part = split[:PART].copy()
    a, b = split[:FULL].astype(np.int32), split[FULL:].astype(np.int32)
    full = (np.trunc(a / 2) + np.trunc(b / 2)).astype(np.int8)  # C division truncates toward zero
    return split, part, full


def write_wide_toy_model(out_dir: Path, input_size: int) -> Path:
    """The toy with an input of ``input_size`` bytes (a multiple of 16) at the arena's end, folded by the
    trunk into the same 16-byte split: split[i] = the int8 (wrapping) sum of input[i + 16 k]. Every input
    byte reaches the outputs, so a sample loaded in pieces is checked whole."""
    assert input_size % INPUT == 0 and input_size > INPUT
    header = (HEADER.replace("#define MDT_ARENA_SIZE 48", f"#define MDT_ARENA_SIZE {48 + input_size}")
              .replace("#define MDT_TRUNK_INPUT0_OFFSET 0", "#define MDT_TRUNK_INPUT0_OFFSET 48")
              .replace("#define MDT_TRUNK_INPUT0_SIZE 16", f"#define MDT_TRUNK_INPUT0_SIZE {input_size}"))
    trunk_start, trunk_end = SOURCE.index("void mdt_trunk_run"), SOURCE.index("void mdt_part_head_run")
    trunk = f"""void mdt_trunk_run(int8_t *arena)
{{
    int i, k;
    for (i = 0; i < 16; i++) {{
        uint8_t acc = 0;
        for (k = i; k < {input_size}; k += 16) {{
            acc = (uint8_t)(acc + (uint8_t)arena[48 + k]);
        }}
        arena[16 + i] = (int8_t)acc;
    }}
}}
"""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "mdt_model.h").write_text(header)
    (out_dir / "mdt_model.c").write_text(SOURCE[:trunk_start] + trunk + SOURCE[trunk_end:])
    return out_dir


def wide_toy_outputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the wide toy computes for one int8 input: its 16-byte fold, then the toy's graphs."""
    folded = (x.astype(np.int64).reshape(-1, INPUT).sum(axis=0) % 256).astype(np.uint8).view(np.int8)
    return toy_outputs(folded)
