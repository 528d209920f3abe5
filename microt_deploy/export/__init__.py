"""Stage package: export (torch -> ONNX -> int8 TFLite for trunk / part_head / rest, with parity).

Public API: ``export_project``, ``quantize_input``, ``reference_outputs``, ``check_split_params``.
Imports are lazy so that reading export.json does not pull in torch or TensorFlow.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_project", "quantize_input", "reference_outputs", "check_split_params"]


def __getattr__(name: str) -> Any:
    if name == "export_project":
        from microt_deploy.export.pipeline import export_project

        return export_project
    if name in ("quantize_input", "check_split_params"):
        from microt_deploy.export import quantize

        return getattr(quantize, name)
    if name == "reference_outputs":
        from microt_deploy.export.reference import reference_outputs

        return reference_outputs
    raise AttributeError(name)
