"""The one schema of ``microt.toml``: every section and key, its type, allowed values, default, what
it means and which verb reads it.

Everything about the config file comes from here: the defaults ``init`` writes
(:func:`default_config`, which ``project.DEFAULT_CONFIG`` is), the check that ``init`` and every stage
run when they load the file (:func:`validate`: the first problem as one line naming the key, the
value, what is allowed and where the key is used) and the reference page ``docs/config.md``
(:func:`schema_markdown`; regenerate it with ``python -m microt_deploy.config_schema > docs/config.md``).

This module must stay cheap to import (the CLI loads it for every verb): no torch, no numpy.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from microt_deploy.errors import MicrotError

SOURCE = "microt.toml"
DOCS_COMMAND = "python -m microt_deploy.config_schema > docs/config.md"
# model.backbone presets and their block counts (microt_deploy/model/backbone.py PRESETS; a test keeps
# the two equal: this module does not import torch to read them).
BACKBONE_PRESETS = {"mcunet-in3": 18, "proxyless-w0.3": 20}
TEACHER_PREFIXES = ("torchscript:", "checkpoint:", "module:", "timm:")
MAX_SEED = 2**32 - 1  # the device protocol carries the seed as uint32
MAX_DEVICE_EPOCHS = 2**16 - 1  # ... and the on-device epochs as uint16
MAX_BAUD = 15_000_000  # the fastest USB-serial bridge of a known board (STLINK-V3's VCP); boards cap it lower


class Invalid(Exception):
    """One problem with one value: ``suffix`` extends the key (``[1]``), ``problem`` ends the
    sentence ``<key> = <value> ...``, ``fix`` says what to do."""

    def __init__(self, problem: str, fix: str = "fix the value", suffix: str = "", value: Any = None,
                 has_value: bool = False, wrong_type: bool = False) -> None:
        super().__init__(problem)
        self.problem, self.fix, self.suffix = problem, fix, suffix
        self.value, self.has_value, self.wrong_type = value, has_value, wrong_type


# ---------------------------------------------------------------- value kinds


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def show(value: Any, limit: int = 60) -> str:
    """A value as it would be written in TOML, cut to ``limit`` characters."""
    text = _toml(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    return str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float)) and not isinstance(value, bool)


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


class Kind:
    """How a value is checked and described."""

    type_name = "?"

    def allowed(self) -> str:
        return "any"

    def check(self, value: Any) -> None:
        raise NotImplementedError

    def _type_error(self, value: Any, example: Any) -> Invalid:
        return Invalid(f"is {_type_of(value)}, not {self.type_name}",
                       f"write {self.type_name} such as {_toml(example)}", wrong_type=True)


@dataclass(frozen=True)
class Integer(Kind):
    lo: int | None = None
    hi: int | None = None
    type_name = "an integer"

    def allowed(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"{self.lo}..{self.hi}"
        if self.lo is not None:
            return f">= {self.lo}"
        return f"<= {self.hi}" if self.hi is not None else "any integer"

    def check(self, value: Any) -> None:
        if not _is_int(value):
            raise self._type_error(value, self.lo if self.lo is not None and self.lo > 0 else 1)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise Invalid(f"is outside {self.allowed()}" if self.hi is not None else f"is not {self.allowed()}")


@dataclass(frozen=True)
class Number(Kind):
    """A float (TOML integers are accepted too); ``lo_open`` / ``hi_open`` exclude the bound."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    type_name = "a number"

    def allowed(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"{'(' if self.lo_open else '['}{_fmt(self.lo)}, {_fmt(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        return "any number"

    def check(self, value: Any) -> None:
        if not _is_number(value):
            raise self._type_error(value, 0.5)
        if not math.isfinite(value):
            raise Invalid(f"is not a finite number ({self.allowed()})")
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low or high:
            raise Invalid(f"is outside {self.allowed()}" if self.hi is not None else f"is not {self.allowed()}")


@dataclass(frozen=True)
class Boolean(Kind):
    type_name = "a boolean"

    def allowed(self) -> str:
        return "true, false"

    def check(self, value: Any) -> None:
        if not isinstance(value, bool):
            raise self._type_error(value, True)


@dataclass(frozen=True)
class Text(Kind):
    """A string; ``choices`` (a tuple, or a callable giving one) and ``prefixes`` restrict it."""

    choices: tuple[str, ...] | Callable[[], Sequence[str]] | None = None
    prefixes: tuple[str, ...] = ()
    nonempty: bool = False
    note: str = ""  # the allowed values in words, when choices are looked up at check time
    type_name = "a string"

    def _choices(self) -> tuple[str, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def allowed(self) -> str:
        if self.note:
            return self.note
        choices = self._choices()
        parts = [", ".join(f'"{c}"' for c in choices)] if choices else []
        parts += [f'"{p}..."' for p in self.prefixes]
        if parts:
            return ", ".join(parts)
        return "a non-empty string" if self.nonempty else "any string"

    def check(self, value: Any) -> None:
        if not isinstance(value, str):
            raise self._type_error(value, "text")
        if self.nonempty and not value.strip():
            raise Invalid("is empty", "write a value")
        choices = self._choices()
        if choices is None or value in choices or value.startswith(self.prefixes):
            return
        close = difflib.get_close_matches(value, choices, n=1)
        listed = ", ".join(choices) if self.note else self.allowed()
        fix = f'did you mean "{close[0]}"?' if close else f"use one of {listed}"
        raise Invalid(f"is not {self.note}" if self.note else f"is not one of {self.allowed()}", fix)


@dataclass(frozen=True)
class NumberList(Kind):
    """A list of numbers, each checked by ``item``; ``length`` fixes the count, ``min_len`` bounds it."""

    item: Number = field(default_factory=Number)
    length: int | None = None
    min_len: int = 1
    type_name = "a list of numbers"

    def allowed(self) -> str:
        count = f"{self.length} numbers" if self.length else f"{self.min_len}+ numbers"
        return f"{count}, each in {self.item.allowed()}"

    def check(self, value: Any) -> None:
        if not isinstance(value, list):
            raise Invalid(f"is {_type_of(value)}, not a list of numbers", "write a list such as [0.3, 0.5, 0.7]")
        if self.length is not None and len(value) != self.length:
            raise Invalid(f"has {len(value)} numbers, not {self.length}")
        if len(value) < self.min_len:
            raise Invalid("is empty" if not value else f"has fewer than {self.min_len} numbers", "give at least one")
        for i, item in enumerate(value):
            try:
                self.item.check(item)
            except Invalid as err:
                raise Invalid(err.problem, err.fix, f"[{i}]", item, True) from None


@dataclass(frozen=True)
class BlockList(Kind):
    """model.blocks: ``[expand, out_channels, stride, kernel]`` per inverted-residual block."""

    type_name = "a list of [expand, out_channels, stride, kernel]"

    def allowed(self) -> str:
        return "2+ blocks, each 4 integers: expand >= 1, out_channels >= 1, stride 1 or 2, odd kernel"

    def check(self, value: Any) -> None:
        fix = "write each block as expand, out_channels, stride, kernel, e.g. [4, 16, 2, 3]"
        if not isinstance(value, list):
            raise Invalid(f"is {_type_of(value)}, not a list of blocks", fix)
        if len(value) < 2:
            raise Invalid(f"has {len(value)} block(s); the split needs at least 2", "give at least two blocks")
        for i, block in enumerate(value):
            ok = (isinstance(block, list) and len(block) == 4 and all(_is_int(v) for v in block)
                  and min(block) >= 1 and block[2] in (1, 2) and block[3] % 2 == 1)
            if not ok:
                raise Invalid("is not 4 integers: expand >= 1, out_channels >= 1, stride 1 or 2, odd kernel",
                              fix, f"[{i}]", block, True)


# ---------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Key:
    """One key: ``default`` is what init writes (``optional`` keys are not written: the code's
    fallback applies), ``used_by`` names the verbs that read it."""

    name: str
    kind: Kind
    default: Any
    used_by: str
    description: str
    optional: bool = False
    required: bool = False  # array-of-tables entries only: the entry must give it
    notes: str = ""  # more for docs/config.md
    allowed_text: str = ""  # docs/config.md's "allowed" when a cross-key check decides it
    default_text: str = ""  # docs/config.md's "default" when it is not a value


@dataclass(frozen=True)
class Section:
    """A ``[table]`` or, with ``array``, an ``[[array of tables]]``."""

    name: str
    keys: tuple[Key, ...]
    description: str
    array: bool = False
    default: Any = None  # the array's default entries

    def key(self, name: str) -> Key | None:
        return next((k for k in self.keys if k.name == name), None)


def _known_boards() -> list[str]:
    from microt_deploy.boards import known_boards

    return known_boards()


TRAIN = "train"
TRAIN_EXPORT_EVAL = "train, export, train-device, eval"
DEVICE = "train-device, eval"

SCHEMA: tuple[Section, ...] = (
    Section("model", (
        Key("input_size", Integer(1), 32, TRAIN_EXPORT_EVAL, "side of the square input image in pixels"),
        Key("stem_channels", Integer(1), 8, TRAIN, "output channels of the stride-2 stem convolution"),
        Key("blocks", BlockList(),
            [[1, 8, 1, 3], [4, 16, 2, 3], [4, 16, 1, 3], [4, 24, 2, 3], [4, 24, 1, 3], [4, 32, 1, 3],
             [4, 32, 1, 3]],
            TRAIN, "the inverted-residual blocks of the extractor",
            notes="one [expand ratio, out channels, stride, depthwise kernel] per block"),
        Key("split_block", Integer(), 3, "train, export", "the backbone is cut after this many blocks",
            allowed_text="1 .. number of blocks - 1",
            notes="the trunk is the stem and blocks[0:k]; part features pool its output"),
        Key("feature_channels", Integer(0), 64, TRAIN, "channels of the final 1x1 feature mix, 0 for none"),
        Key("teacher", Text(choices=("builtin:ssl-convnet",), prefixes=TEACHER_PREFIXES), "builtin:ssl-convnet",
            TRAIN, "the frozen teacher of stage 1",
            notes="the builtin self-supervised convnet, `torchscript:<path>`, `checkpoint:<path>` (a torch.save()d "
                  "module, or a state dict with teacher_arch), `module:<pkg.mod:factory>` or `timm:<model name>` "
                  "(with teacher_weights; timm is not a dependency); external teachers are frozen and their "
                  "embeddings of the train images cached (train.teacher_cache)"),
        Key("teacher_dim", Integer(1), 64, TRAIN, "embedding size of the teacher"),
        Key("backbone", Text(choices=tuple(BACKBONE_PRESETS)), None, TRAIN, "a preset architecture",
            optional=True, notes="replaces stem_channels, blocks and feature_channels"),
        Key("teacher_input_size", Integer(0), 0, TRAIN, "image side an external teacher sees, 0 to keep it",
            optional=True),
        Key("teacher_arch", Text(), "", TRAIN, "`pkg.mod:factory` building the module a `checkpoint:` state dict fits",
            optional=True),
        Key("teacher_weights", Text(), "", TRAIN, "local weights file of a `timm:` teacher; nothing is downloaded",
            optional=True, notes="e.g. DINOv2 ViT-S/14: teacher = \"timm:vit_small_patch14_dinov2.lvd142m\", "
                                 "teacher_dim = 384, teacher_input_size = 518"),
    ), "The student network (a MobileNetV2-style extractor), where it is cut, and its teacher."),
    Section("train", (
        Key("seed", Integer(0, MAX_SEED), 0, "train, train-device, eval", "random seed of host and device training"),
        Key("teacher_epochs", Integer(0), 30, TRAIN, "epochs of stage-1 teacher training",
            notes="self-supervised (NT-Xent); the builtin teacher only"),
        Key("sskd_epochs", Integer(0), 30, TRAIN, "epochs of stage-1 distillation into the student"),
        Key("joint_epochs", Integer(0), 30, TRAIN, "epochs of stage-3 joint part and full training"),
        Key("batch_size", Integer(2), 64, TRAIN, "training batch size", notes="a trailing batch of one is dropped"),
        Key("lr", Number(0, lo_open=True), 0.01, TRAIN, "SGD learning rate of stages 1 and 3"),
        Key("momentum", Number(0, 1, hi_open=True), 0.9, TRAIN, "SGD momentum of stages 1 and 3"),
        Key("weight_decay", Number(0), 5e-4, TRAIN, "SGD weight decay of stages 1 and 3"),
        Key("teacher_lr", Number(0, lo_open=True), 2e-3, TRAIN, "learning rate of the builtin teacher",
            optional=True),
        Key("sskd_ce", Boolean(), False, TRAIN, "add the cross-entropy Loss 2 to distillation", optional=True),
        Key("labels_only", Boolean(), False, TRAIN, "train the student on labels only, without a teacher",
            optional=True,
            notes="no teacher is built, trained or called and stage 1 is skipped; stage 3 runs joint_epochs of L4 + "
                  "L6 (the label cross entropies, weighted by l4_weight and l6_weight); the evidence table's "
                  "unoptimized extractor (microt_deploy/evaluate/evidence.py)"),
        Key("threads", Integer(1), 1, "train, export", "torch intra-op threads", optional=True),
        Key("optimizer", Text(choices=("sgd", "adam", "adamw")), "sgd", TRAIN,
            "optimiser of stages 1 and 3", optional=True, notes="momentum applies to sgd only"),
        Key("scheduler", Text(choices=("cosine", "constant")), "cosine", TRAIN,
            "learning-rate schedule of stages 1 and 3", optional=True,
            notes="cosine: decays to 0 over each stage's epochs"),
        Key("sskd_mse_weight", Number(0), 1.0, TRAIN, "weight of the distillation MSE in stage 1", optional=True),
        Key("sskd_ce_weight", Number(0), 1.0, TRAIN, "weight of Loss 2, the cross entropy, in stage 1",
            optional=True, notes="with sskd_ce only"),
        Key("l3_weight", Number(0), 1.0, TRAIN, "weight of L3, the full-feature MSE to the teacher, in stage 3",
            optional=True),
        Key("l4_weight", Number(0), 1.0, TRAIN, "weight of L4, the full-head cross entropy, in stage 3", optional=True),
        Key("l5_weight", Number(0), 1.0, TRAIN, "weight of L5, the part-feature MSE to the teacher, in stage 3",
            optional=True),
        Key("l6_weight", Number(0), 1.0, TRAIN, "weight of L6, the part-head cross entropy, in stage 3", optional=True),
        Key("aug_shift", Integer(0), 1, TRAIN, "largest random shift in pixels of stages 1 and 3's views",
            optional=True),
        Key("aug_noise", Number(0), 0.02, TRAIN, "std of the Gaussian noise of stages 1 and 3's views",
            optional=True),
        Key("aug_flip", Boolean(), False, TRAIN, "random left-right mirror in every training view", optional=True,
            notes="off by default: numerals are not mirror-symmetric; the builtin teacher's views too"),
        Key("teacher_temperature", Number(0, lo_open=True), 0.2, TRAIN, "NT-Xent temperature of the builtin teacher",
            optional=True),
        Key("teacher_aug_crop", Number(0, 1, lo_open=True), 0.7, TRAIN,
            "smallest side fraction of the builtin teacher's random resized crop", optional=True, notes="1: no crop"),
        Key("teacher_aug_shift", Integer(0), 2, TRAIN, "largest random shift of the builtin teacher's views",
            optional=True),
        Key("teacher_aug_contrast", Number(0, 1), 0.3, TRAIN, "random contrast strength of the builtin teacher's "
            "views", optional=True),
        Key("teacher_aug_noise", Number(0), 0.05, TRAIN, "noise std of the builtin teacher's views", optional=True),
        Key("teacher_cache", Boolean(), True, TRAIN, "cache an external teacher's embeddings of the train images",
            optional=True,
            notes="computed once on the un-augmented images into checkpoints/teacher_cache/ and reused while the "
                  "teacher's files and the train images are unchanged; false: the teacher sees every augmented view"),
        Key("device", Text(choices=("auto", "cpu", "cuda")), "auto", TRAIN, "where training runs", optional=True,
            notes="auto: CUDA when torch sees a GPU, else the CPU; under torchrun each rank takes its LOCAL_RANK GPU"),
        Key("amp", Boolean(), True, TRAIN, "mixed precision on CUDA: float16 autocast and a GradScaler",
            optional=True, notes="never on the CPU"),
    ), "Host training: stage 1 (teacher and self-supervised distillation) and stage 3 (joint training)."),
    Section("data", (
        Key("dataset", Text(nonempty=True, note='"digits" or a folder path'), "digits", TRAIN_EXPORT_EVAL,
            "the images", notes='"digits" is bundled; a folder holds one sub-folder of PNG or JPEG images per class'),
        Key("split", NumberList(Number(0, 1, lo_open=True), length=3), [0.6, 0.15, 0.25], TRAIN_EXPORT_EVAL,
            "train / calib / test fractions summing to 1"),
        Key("seed", Integer(0), 0, TRAIN_EXPORT_EVAL, "seed of the stratified split"),
        Key("max_per_class", Integer(0), 0, TRAIN_EXPORT_EVAL, "cap on images per class, 0 for all", optional=True),
    ), "The dataset and its stratified train / calibration / test split."),
    Section("tasks", (
        Key("name", Text(nonempty=True), None, "train, train-device, eval, export-lib", "the task's unique name",
            required=True, notes="train fits its heads on the first task's labels"),
        Key("labels", Text(nonempty=True), None, TRAIN_EXPORT_EVAL, "the dataset's label set for the task",
            optional=True, default_text="the task's name",
            notes='"digit" or "loops" on digits, "folder" on an image folder'),
        Key("classes", Integer(2, 255), None, "train, build, train-device, eval", "number of classes of the task",
            required=True, notes="must match the label set"),
    ), "The classification tasks sharing the extractor, one `[[tasks]]` table each (at least one).",
        array=True, default=[{"name": "digits", "labels": "digit", "classes": 10},
                             {"name": "loops", "labels": "loops", "classes": 3}]),
    Section("compile", (
        Key("patch_stages", Text(choices=("fit", "off", "auto", "min")), "fit", "compile",
            "when the compiler runs the trunk's high-resolution layers patch by patch, as MCUNetV2 does",
            notes='"fit": only when the arena would not fit the board\'s RAM otherwise, with the fewest '
                  'recomputed MACs that fit; "off": never; "auto": where it lowers the peak within 10 % extra '
                  'MACs; "min": the lowest peak at any cost. --patch-stages overrides it (also as '
                  '"<last layer>:<n>")'),
    ), "The compiler's choices that trade instructions for SRAM."),
    Section("device", (
        Key("board", Text(choices=_known_boards, note="a known board id"), "qemu_mps2_an386",
            "build, flash, train-device, eval, demo", "the target board",
            notes="an id listed by `microt-deploy boards`; --board overrides it"),
        Key("port", Text(), "", DEVICE, "serial port of a real board; empty: found by its USB ids",
            notes="--port overrides it; emulated boards need none"),
        Key("ratio", Number(0, 1), 0.5, "eval", "the project's stage-decision ratio",
            notes="eval always measures it (added to the sweep), sets it on the device last and marks it "
                  "chosen in the report"),
        Key("train_epochs", Integer(1, MAX_DEVICE_EPOCHS), 30, DEVICE, "epochs of on-device classifier training"),
        Key("train_lr", Number(0, lo_open=True), 0.05, DEVICE, "learning rate of on-device training"),
        Key("max_train_samples", Integer(0), 600, DEVICE, "train samples streamed to the device, 0 for all"),
        Key("max_calib_samples", Integer(0), 200, DEVICE, "calibration samples streamed to the device, 0 for all"),
        Key("max_test_samples", Integer(0), 300, "eval", "test samples streamed to the device, 0 for all"),
        Key("baud", Integer(1200, MAX_BAUD), 115200, "build, train-device, eval", "UART speed of the protocol link",
            optional=True,
            notes="at most the board's max_baud (boards/<id>.toml: what its USB-serial bridge carries); build "
                  "renders it into the firmware and refuses a rate the board's UART clock cannot make, naming the "
                  "nearest one it can; eval opens a real board's port at it (emulated boards ignore it: their "
                  "samples go by semihosting)"),
    ), "The target board and on-device training. Sending a 3 KiB image into QEMU's UART takes ~0.19 s, "
       "so the sample caps keep the demo near 5 minutes."),
    Section("eval", (
        Key("ratios", NumberList(Number(0, 1)), [0.3, 0.5, 0.7], "eval", "stage-decision ratios swept",
            notes="--ratios overrides them; device.ratio is always measured too"),
    ), "The evaluation sweep."),
)

SECTIONS = {s.name: s for s in SCHEMA}


def default_config() -> dict[str, Any]:
    """The config ``init`` writes: every non-optional key at its default, in schema order."""
    config: dict[str, Any] = {}
    for section in SCHEMA:
        if section.array:
            config[section.name] = copy.deepcopy(section.default)
        else:
            config[section.name] = {k.name: copy.deepcopy(k.default) for k in section.keys if not k.optional}
    return config


def lookup(dotted: str) -> Key:
    """The key ``section.name`` (``tasks.name`` for the task entries)."""
    section, _, name = dotted.partition(".")
    key = SECTIONS[section].key(name) if section in SECTIONS else None
    if key is None:
        raise KeyError(dotted)
    return key


# ---------------------------------------------------------------- validation


def _label(section: Section, key: str, index: int | None = None) -> str:
    if section.array:
        return f"{section.name}[{index}].{key}"
    return f"{section.name}.{key}"


def _fail(label: str, value: Any, problem: str, fix: str, key: Key | None = None) -> MicrotError:
    where = f" (used by {key.used_by}: {key.description})" if key is not None else ""
    return MicrotError(f"{SOURCE}: {label} = {show(value)} {problem}{where}", fix)


def _check_key(section: Section, key: Key, value: Any, index: int | None = None) -> None:
    try:
        key.kind.check(value)
    except Invalid as err:
        shown = err.value if err.has_value else value
        fix = err.fix
        if err.wrong_type and not err.suffix and key.default is not None:
            fix = f"write {key.kind.type_name} such as {_toml(key.default)}"
        raise _fail(_label(section, key.name, index) + err.suffix, shown, err.problem, fix, key) from None


def _unknown(section: Section | None, name: str, value: Any, index: int | None = None) -> MicrotError:
    if section is None:  # a top-level key that is not a section
        label, known = name, [s.name for s in SCHEMA]
        homes = [f"{s.name}.{name}" for s in SCHEMA if not s.array and s.key(name)]
    else:
        label = _label(section, name, index)
        known = [k.name for k in section.keys]
        homes = [f"{s.name}.{name}" for s in SCHEMA if s is not section and not s.array and s.key(name)]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if homes:
        fix = f"it belongs in {homes[0]}; move it to that section"
    elif close:
        suggestion = close[0] if section is None else _label(section, close[0], index)
        fix = f"did you mean {suggestion}? rename it or remove it"
    else:
        fix = f"remove it (known: {', '.join(known)})"
    kind = "section" if section is None else "key"
    return MicrotError(f"{SOURCE}: {label} = {show(value)} is not a known {kind} (see docs/config.md)", fix)


def validate(config: Any) -> None:
    """Check a whole (merged) config; raise a one-line :class:`MicrotError` on the first problem."""
    if not isinstance(config, dict):
        raise MicrotError(f"{SOURCE} is {_type_of(config)}, not a table of sections", "fix the file")
    for section in SCHEMA:
        if section.name in config:
            _check_section(section, config[section.name])
        elif section.array:  # the defaults always have tasks: only a merge without them gets here
            raise MicrotError(f"{SOURCE} has no {section.name}", "add one (see docs/config.md)")
    for name, value in config.items():
        if name not in SECTIONS:
            raise _unknown(None, name, value)
    _cross_checks(config)


def _check_section(section: Section, body: Any) -> None:
    if section.array:
        if not isinstance(body, list) or not all(isinstance(e, dict) for e in body):
            raise MicrotError(f"{SOURCE}: {section.name} = {show(body)} is {_type_of(body)}, not a list of tables",
                              f"write each entry as its own {section.name} table (see docs/config.md)")
        if not body:
            raise MicrotError(f"{SOURCE}: {section.name} = [] has no entries",
                              f"add a {section.name} entry (see docs/config.md)")
        for index, entry in enumerate(body):
            for key in section.keys:
                if key.required and key.name not in entry:
                    raise MicrotError(f"{SOURCE}: {section.name}[{index}] = {show(entry)} has no {key.name} "
                                      f"(used by {key.used_by}: {key.description})", f"add {key.name} to it")
            _check_table(section, entry, index)
        return
    if not isinstance(body, dict):
        raise MicrotError(f"{SOURCE}: {section.name} = {show(body)} is {_type_of(body)}, not a table",
                          f"make {section.name} a section of keys (see docs/config.md)")
    _check_table(section, body)


def _check_table(section: Section, body: dict[str, Any], index: int | None = None) -> None:
    for name, value in body.items():
        key = section.key(name)
        if key is None:
            raise _unknown(section, name, value, index)
        _check_key(section, key, value, index)


def _cross_checks(config: dict[str, Any]) -> None:
    data = config.get("data", {})
    split = data.get("split")
    if split is not None and abs(sum(split) - 1.0) > 1e-6:
        key = lookup("data.split")
        raise _fail("data.split", split, f"sums to {sum(split):g}, not 1", "fix the value", key)
    model = config.get("model", {})
    if "split_block" in model:
        n_blocks, where = len(model.get("blocks") or []), "model.blocks"
        if model.get("backbone"):
            n_blocks, where = BACKBONE_PRESETS[model["backbone"]], f'backbone "{model["backbone"]}"'
        k = model["split_block"]
        if not 1 <= k < n_blocks:
            raise _fail("model.split_block", k, f"is outside 1..{n_blocks - 1} for the {n_blocks} blocks "
                        f"of {where}", "cut after at least one block and before the last one",
                        lookup("model.split_block"))
    seen: dict[str, int] = {}
    for index, task in enumerate(config.get("tasks") or []):
        name = task["name"]
        if name in seen:
            raise _fail(f"tasks[{index}].name", name, f"repeats tasks[{seen[name]}].name",
                        "give each task its own name", lookup("tasks.name"))
        seen[name] = index


# ---------------------------------------------------------------- docs/config.md


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _sentence(key: Key) -> str:
    text = key.description[0].upper() + key.description[1:]
    return f"{text}; {key.notes}." if key.notes else f"{text}."


def _default_text(key: Key) -> str:
    if key.default_text:
        return key.default_text
    if key.required:
        return "(required)"
    return "(none)" if key.default is None else f"`{_toml(key.default)}`"


def _example_error() -> str:
    config = default_config()
    config["eval"]["ratios"] = [0.3, 1.5]
    try:
        validate(config)
    except MicrotError as err:
        return err.one_line()
    raise AssertionError("the example config passed")


def schema_markdown() -> str:
    """docs/config.md: a table per section, generated from :data:`SCHEMA`."""
    lines = [
        "# microt.toml reference",
        "",
        "Generated from `microt_deploy/config_schema.py` (do not edit by hand); regenerate with",
        f"`{DOCS_COMMAND}`.",
        "",
        "Every project folder holds a `microt.toml`. `microt-deploy init` writes it with the defaults below",
        "(keys marked *optional* are not written: the default applies until you add them). `init` and every",
        "stage check the whole file when they load it and stop at the first problem with one line naming",
        "the key, the value, what is allowed and which verb uses the key, for example:",
        "",
        "```",
        f"error: {_example_error()}",
        "```",
        "",
        "Messages name a key as `section.key` (`tasks[i].key` for the i-th `[[tasks]]` table, counted from 0).",
        "Unknown keys are errors too (with the closest known key), so a typo never goes unnoticed.",
        "",
    ]
    for section in SCHEMA:
        header = f"[[{section.name}]]" if section.array else f"[{section.name}]"
        lines += [f"## `{header}`", "", section.description, ""]
        if section.array:
            lines += ["Default:", "", "```toml"]
            for entry in section.default:
                lines += [header, *(f"{k} = {_toml(v)}" for k, v in entry.items()), ""]
            lines[-1] = "```"
            lines += [""]
        lines += ["| key | type | default | allowed | used by | description |", "|---|---|---|---|---|---|"]
        for key in section.keys:
            name = f"`{key.name}`" + (" *optional*" if key.optional else "")
            allowed = key.allowed_text or key.kind.allowed()
            lines.append(f"| {name} | {key.kind.type_name} | {_cell(_default_text(key))} "
                         f"| {_cell(allowed)} | {key.used_by} | {_cell(_sentence(key))} |")
        lines.append("")
    lines += [
        "## Checks across keys",
        "",
        "- `data.split`: three positive fractions summing to 1.",
        "- `model.split_block`: 1 .. (number of blocks - 1), counting the preset's blocks when `backbone` is set.",
        "- `[[tasks]]`: at least one; names unique; `classes` 2..255.",
        "- `device.ratio` and every `eval.ratios` entry in [0, 1]; `eval.ratios` not empty.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(schema_markdown(), end="")
