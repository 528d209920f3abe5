"""Stage package: model (MicroT stages 1-3).

- ``data.load_splits(config)``: train / calib / test splits (digits or an image folder).
- ``backbone.Backbone``: the splittable student, its ``trunk`` / ``part_head`` / ``rest`` views,
  presets (``mcunet-in3``, ``proxyless-w0.3``) and ``count_macs``.
- ``teacher.build_teacher``: the frozen self-supervised teacher (built-in, TorchScript or module).
- ``train.train_project(project, progress=None)``: SSKD + joint training -> ``checkpoints/``;
  ``train.load_extractor(path)`` rebuilds the trained student.
"""
