"""Coverage-guided fuzzing of the .tflite reader (microt_deploy/compiler/reader.py) with atheris.

Any input must either parse into a Graph or raise MicrotError (a one-line refusal); any other
exception, a hang or a crash is a finding. Run through fuzz/run.py (`make fuzz`), or by hand:
    .venv/bin/python fuzz/fuzz_reader.py WORK_CORPUS fuzz/corpus/reader -max_total_time=60
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["microt_deploy", "tflite", "flatbuffers"]):
    from microt_deploy.compiler.reader import read_model
    from microt_deploy.errors import MicrotError


def test_one_input(data: bytes) -> None:
    try:
        graph = read_model(data, "fuzz")
    except MicrotError:
        return
    # A parsed graph must be self-consistent enough for the compiler to walk it.
    for op in graph.ops:
        for idx in [*op.inputs, *op.outputs]:
            if idx >= 0:
                graph.t(idx)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
