"""Stage package: model (MicroT stages 1-3).

- ``data.load_splits(config)``: train / calib / test splits (digits or an image folder).
- ``backbone.Backbone``: the splittable student, its ``trunk`` / ``part_head`` / ``rest`` views,
  presets (``mcunet-in3``, ``proxyless-w0.3``) and ``count_macs``.
- ``teacher.build_teacher``: the frozen teacher (builtin SSL ConvNet, ``torchscript:``,
  ``checkpoint:``, ``module:`` or ``timm:`` with a local weights file).
- ``train.train_project(project, progress=None, fresh=False)``: SSKD + joint training ->
  ``checkpoints/``, with cached external-teacher embeddings, per-epoch resumable checkpoints, CUDA /
  AMP when present and DDP under torchrun; ``train.load_extractor(path)`` rebuilds the student.
"""
