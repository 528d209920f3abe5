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
