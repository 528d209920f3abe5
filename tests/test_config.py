"""microt.toml against its one schema: every bad value is refused up front by init and by every stage,
as one line naming the key, the value, what is allowed and the fix, with nothing written; the
reference page docs/config.md is the schema's own rendering; [device] ratio is the ratio eval
measures last and the report marks as chosen."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tomli_w

from microt_deploy import config_schema
from microt_deploy.config_schema import SCHEMA, default_config, schema_markdown, validate
from microt_deploy.errors import MicrotError
from microt_deploy.project import DEFAULT_CONFIG, init_project, open_project

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "microt_deploy.cli"]
ENV = {**os.environ, "MICROT_PIO_OFFLINE": "1", "COLUMNS": "300"}
ENV.pop("MICROT_DEBUG", None)
# error: microt.toml: <key> = <value> <problem> (used by <verbs>: <what>); <fix>
VALUE_ERROR = re.compile(r"^error: microt\.toml: (?P<key>.+?) = (?P<value>.+?) (?P<problem>(is|has|sums|repeats) .+?)"
                         r" \(used by (?P<used>[^:()]+): (?P<what>[^()]+)\); (?P<fix>[^;]+)$")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=ENV, cwd=ROOT)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the CLI's project lock (PROJECT/.microt.lock: who runs a command)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".microt.lock"}


def one_line_error(res: subprocess.CompletedProcess, code: int = 2) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# (case id, microt.toml text, verb, the exact line the user sees)
BAD = [
    ("string-for-int", '[train]\nbatch_size = "64"\n', "train",
     'error: microt.toml: train.batch_size = "64" is a string, not an integer (used by train: training batch '
     "size); write an integer such as 64"),
    ("table-for-list", "[eval.ratios]\nlow = 0.3\n", "eval",
     "error: microt.toml: eval.ratios = { low = 0.3 } is a table, not a list of numbers (used by eval: "
     "stage-decision ratios swept); write a list such as [0.3, 0.5, 0.7]"),
    ("eval-ratio-1.5", "[eval]\nratios = [0.3, 1.5]\n", "eval",
     "error: microt.toml: eval.ratios[1] = 1.5 is outside [0, 1] (used by eval: stage-decision ratios swept); "
     "fix the value"),
    ("empty-ratios", "[eval]\nratios = []\n", "eval",
     "error: microt.toml: eval.ratios = [] is empty (used by eval: stage-decision ratios swept); "
     "give at least one"),
    ("device-ratio-1.5", "[device]\nratio = 1.5\n", "eval",
     "error: microt.toml: device.ratio = 1.5 is outside [0, 1] (used by eval: the project's stage-decision "
     "ratio); fix the value"),
    ("negative-max-samples", "[device]\nmax_test_samples = -1\n", "eval",
     "error: microt.toml: device.max_test_samples = -1 is not >= 0 (used by eval: test samples streamed to the "
     "device, 0 for all); fix the value"),
    ("split-sum", "[data]\nsplit = [0.6, 0.2, 0.25]\n", "train",
     "error: microt.toml: data.split = [0.6, 0.2, 0.25] sums to 1.05, not 1 (used by train, export, "
     "train-device, eval: train / calib / test fractions summing to 1); fix the value"),
    ("split-two-parts", "[data]\nsplit = [0.5, 0.5]\n", "train",
     "error: microt.toml: data.split = [0.5, 0.5] has 2 numbers, not 3 (used by train, export, train-device, "
     "eval: train / calib / test fractions summing to 1); fix the value"),
    ("split-block-range", "[model]\nsplit_block = 7\n", "train",
     "error: microt.toml: model.split_block = 7 is outside 1..6 for the 7 blocks of model.blocks (used by "
     "train, export: the backbone is cut after this many blocks); cut after at least one block and before the "
     "last one"),
    ("odd-kernel", "[model]\nblocks = [[1, 8, 1, 3], [4, 16, 2, 4]]\nsplit_block = 1\n", "train",
     "error: microt.toml: model.blocks[1] = [4, 16, 2, 4] is not 4 integers: expand >= 1, out_channels >= 1, stride 1 "
     "or 2, odd kernel (used by train: the inverted-residual blocks of the extractor); write each "
     "block as expand, out_channels, stride, kernel, e.g. [4, 16, 2, 3]"),
    ("bool-as-string", '[train]\nsskd_ce = "yes"\n', "train",
     'error: microt.toml: train.sskd_ce = "yes" is a string, not a boolean (used by train: add the '
     "cross-entropy Loss 2 to distillation); write a boolean such as false"),
    ("duplicate-task", '[[tasks]]\nname = "digits"\nclasses = 10\n[[tasks]]\nname = "digits"\nlabels = "loops"\n'
     "classes = 3\n", "train",
     'error: microt.toml: tasks[1].name = "digits" repeats tasks[0].name (used by train, train-device, eval, '
     "export-lib: the task's unique name); give each task its own name"),
    ("one-class", '[[tasks]]\nname = "digits"\nclasses = 1\n', "train",
     "error: microt.toml: tasks[0].classes = 1 is outside 2..255 (used by train, build, train-device, eval: "
     "number of classes of the task); fix the value"),
    ("unknown-board", '[device]\nboard = "qemu_mps2"\n', "build",
     'error: microt.toml: device.board = "qemu_mps2" is not a known board id (used by build, flash, '
     'train-device, eval, demo: the target board); did you mean "qemu_mps2_an386"?'),
]

UNKNOWN = [
    ("typo-key", "[device]\nratoi = 0.4\n", "eval",
     "error: microt.toml: device.ratoi = 0.4 is not a known key (see docs/config.md); did you mean "
     "device.ratio? rename it or remove it"),
    ("typo-section", "[modle]\nsplit_block = 2\n", "train",
     "error: microt.toml: modle = { split_block = 2 } is not a known section (see docs/config.md); did you mean "
     "model? rename it or remove it"),
    ("wrong-section", "[train]\ntrain_epochs = 5\n", "train",
     "error: microt.toml: train.train_epochs = 5 is not a known key (see docs/config.md); it belongs in "
     "device.train_epochs; move it to that section"),
    ("task-typo", '[[tasks]]\nname = "digits"\nlables = "digit"\nclasses = 10\n', "train",
     'error: microt.toml: tasks[0].lables = "digit" is not a known key (see docs/config.md); did you mean '
     "tasks[0].labels? rename it or remove it"),
    ("tasks-as-table", '[tasks]\nname = "digits"\nclasses = 10\n', "train",
     'error: microt.toml: tasks = { name = "digits", classes = 10 } is a table, not a list of tables; '
     "write each entry as its own tasks table (see docs/config.md)"),
    ("corrupt", "[model\nbroken", "train", None),
]


@pytest.mark.parametrize(("text", "verb", "expected"), [c[1:] for c in BAD + UNKNOWN],
                         ids=[c[0] for c in BAD + UNKNOWN])
def test_bad_config_is_refused_up_front(tmp_path: Path, text: str, verb: str, expected: str | None) -> None:
    (tmp_path / "microt.toml").write_text(text)
    before = snapshot(tmp_path)
    # eval's usage errors exit 4 (its CI contract: docs in README); the other verbs' 2
    line = one_line_error(cli(verb, "--project", str(tmp_path)), 4 if verb == "eval" else 2)
    if expected is None:  # corrupt TOML: the parser's words, then the fix
        assert line.startswith(f"error: {tmp_path / 'microt.toml'} is not valid TOML (")
        assert line.endswith("; fix the file or delete it to start over")
    else:
        assert line == expected
    assert snapshot(tmp_path) == before  # nothing written, nothing changed


@pytest.mark.parametrize("case", BAD + UNKNOWN[:-1], ids=[c[0] for c in BAD + UNKNOWN[:-1]])
def test_the_cli_shows_the_whole_message(case: tuple[str, str, str, str], tmp_path: Path) -> None:
    # the same words in process: the terminal (rich markup) swallows nothing
    (tmp_path / "microt.toml").write_text(case[1])
    with pytest.raises(MicrotError) as err:
        open_project(tmp_path)
    assert f"error: {err.value.one_line()}" == case[3]
    if case in BAD:
        match = VALUE_ERROR.match(case[3])
        assert match, case[3]
        assert match["key"].split(".")[0].split("[")[0] in {s.name for s in SCHEMA}


def test_init_refuses_what_train_would_refuse(tmp_path: Path) -> None:
    line = one_line_error(cli("init", str(tmp_path / "p"), "--split-block", "9"))
    assert line == ("error: microt.toml: model.split_block = 9 is outside 1..6 for the 7 blocks of model.blocks "
                    "(used by train, export: the backbone is cut after this many blocks); cut after at least one "
                    "block and before the last one")
    assert not (tmp_path / "p").exists()

    line = one_line_error(cli("init", str(tmp_path / "p"), "--ratio", "1.5"))
    assert "1.5 is outside [0, 1]" in line
    assert not (tmp_path / "p").exists()


def test_init_over_a_bad_config_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "microt.toml").write_text("[device]\nratoi = 0.4\n")
    before = snapshot(tmp_path)
    line = one_line_error(cli("init", str(tmp_path), "--board", "host"))
    assert "device.ratoi = 0.4 is not a known key" in line and "did you mean device.ratio?" in line
    assert snapshot(tmp_path) == before


def test_init_in_process_writes_nothing_on_refusal(tmp_path: Path) -> None:
    with pytest.raises(MicrotError, match=r"train\.lr = 0 is not > 0"):
        init_project(tmp_path / "p", {"train": {"lr": 0}})
    assert not (tmp_path / "p").exists()


def test_valid_config_passes(tmp_path: Path) -> None:
    config = {
        "model": {"backbone": "mcunet-in3", "input_size": 64, "split_block": 9, "teacher": "torchscript:t.pt",
                  "teacher_input_size": 96},
        "train": {"threads": 1, "sskd_ce": True, "teacher_lr": 0.001, "lr": 1},
        "data": {"max_per_class": 10, "split": [0.5, 0.25, 0.25]},
        "tasks": [{"name": "digits", "classes": 10, "labels": "digit"}, {"name": "loops", "classes": 3}],
        "device": {"board": "nucleo_l4r5zi", "ratio": 0, "max_train_samples": 0, "port": "/dev/ttyACM0"},
        "eval": {"ratios": [1, 0.25]},
    }
    (tmp_path / "microt.toml").write_text(tomli_w.dumps(config))
    project = open_project(tmp_path)
    assert project.config["device"]["ratio"] == 0 and project.config["model"]["stem_channels"] == 8
    # through the CLI: past the config, stopped by the missing export as before
    line = one_line_error(cli("compile", "--project", str(tmp_path)))
    assert "microt-deploy export" in line


def test_init_writes_the_schema_defaults(tmp_path: Path) -> None:
    res = cli("init", str(tmp_path / "p"), "--ratio", "0.25")
    assert res.returncode == 0, res.stderr
    written = tomllib.loads((tmp_path / "p" / "microt.toml").read_text())
    expected = default_config()
    expected["device"]["ratio"] = 0.25
    assert written == expected
    assert DEFAULT_CONFIG == default_config()
    validate(DEFAULT_CONFIG)


def test_docs_are_the_schema() -> None:
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == schema_markdown(), "regenerate: python -m microt_deploy.config_schema > docs/config.md"
    assert config_schema.DOCS_COMMAND in committed
    for section in SCHEMA:
        for key in section.keys:
            assert f"| `{key.name}`" in committed


def test_schema_module_prints_the_docs() -> None:
    res = subprocess.run([*CLI[:2], "microt_deploy.config_schema"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env=ENV)
    assert res.returncode == 0 and res.stdout == schema_markdown()


def test_every_key_is_described() -> None:
    for section in SCHEMA:
        for key in section.keys:
            assert key.used_by and key.description and key.kind.allowed(), (section.name, key.name)
            assert "(" not in key.description, "keeps the one-line message's parentheses unambiguous"


def test_backbone_presets_match_the_model() -> None:
    from microt_deploy.model.backbone import PRESETS

    assert {name: len(p["blocks"]) for name, p in PRESETS.items()} == config_schema.BACKBONE_PRESETS


def test_preset_split_block_is_checked_against_the_preset() -> None:
    config = default_config()
    config["model"].update({"backbone": "mcunet-in3", "split_block": 18})
    with pytest.raises(MicrotError, match=r'split_block = 18 is outside 1\.\.17 for the 18 blocks of backbone'):
        validate(config)


# ---------------------------------------------------------------- [device] ratio is the chosen ratio


def test_sweep_puts_the_chosen_ratio_last() -> None:
    from microt_deploy.evaluate.report import sweep

    assert sweep([0.3, 0.5, 0.7], 0.5) == [0.3, 0.7, 0.5]
    assert sweep([0.3, 0.7, 0.3], 0.4) == [0.3, 0.7, 0.4]
    assert sweep([], 0.5) == [0.5]


class FakeDevice:
    """Answers the session's requests; records every set_ratio."""

    def __init__(self) -> None:
        self.ratios: list[tuple[int, float]] = []

    def hello(self) -> Any:
        return SimpleNamespace(counter_unit="instructions", max_slots=10_000, max_tasks=8)

    def set_ratio(self, task: int, ratio: float, first: int, n: int) -> float:
        self.ratios.append((task, ratio))
        return 0.5

    def load_input(self, data: bytes) -> None:
        pass

    def infer(self, task: int, force_full: bool = False) -> Any:
        return SimpleNamespace(part_prediction=0, confidence=0.7, full_prediction=1, prediction=0, exit_stage=0,
                               counters=[100, 10, 5, 80, 5])

    def exit(self, code: int) -> None:
        pass


def test_eval_measures_the_project_ratio_last_and_marks_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from microt_deploy import pipeline
    from microt_deploy.evaluate import session

    project = init_project(tmp_path / "p", {
        "data": {"max_per_class": 12},
        "device": {"ratio": 0.4, "max_train_samples": 8, "max_calib_samples": 4, "max_test_samples": 3},
    })
    project.export_dir.mkdir()
    (project.export_dir / "export.json").write_text(json.dumps(
        {"input": {"shape": [1, 32, 32, 3], "scale": 0.05, "zero_point": 0}}))
    device = FakeDevice()

    @contextlib.contextmanager
    def fake_open(*_: Any) -> Any:
        yield device

    def fake_train(_device: Any, tasks: Any, *_: Any) -> list[Any]:
        return [session.TrainedTask(t.name, {"loss": 0.1}, (np.zeros(1), np.zeros(1)), (np.zeros(1), np.zeros(1)))
                for t in tasks]

    monkeypatch.setattr(pipeline, "open_device", fake_open)
    monkeypatch.setattr(pipeline, "_simulate", lambda *a: {})
    monkeypatch.setattr(session, "store_features", lambda *a, **k: None)
    monkeypatch.setattr(session, "train_tasks", fake_train)
    report = pipeline.evaluate(project.root, None, None, Console(quiet=True), ratios=[0.3, 0.7])

    assert report["chosen_ratio"] == 0.4
    for task in report["tasks"]:
        assert list(task["ratios"]) == ["0.3", "0.4", "0.7"]  # the report's rows stay sorted
    assert [r for t, r in device.ratios if t == 0][-1] == pytest.approx(0.4)  # the device is left at it
    assert device.ratios[-1][1] == pytest.approx(0.4)
    md = (Path(report["run_dir"]) / "report.md").read_text()
    assert "| digits | 0.40 (chosen) |" in md and "| digits | 0.30 |" in md
    assert "`device.ratio = 0.4`" in md


def test_report_marks_the_chosen_ratio_in_the_terminal_table() -> None:
    from rich.console import Console

    from microt_deploy.evaluate.report import terminal_table

    row = {"ratio": 0.5, "exit_at_part": 0.5, "accuracy": 0.9, "counts_per_inference": 10.0, "energy_mj": 0.1,
           "energy_saved_vs_full": 0.2}
    report = {"board": {"id": "host", "counter_unit": "ns"}, "chosen_ratio": 0.5,
              "tasks": [{"task": "digits", "part_accuracy": 0.8, "full_accuracy": 0.95, "full_model_energy_mj": 0.2,
                         "ratios": {"0.5": row, "0.7": {**row, "ratio": 0.7}}}]}
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(terminal_table(report))
    text = console.export_text()
    assert "0.50*" in text and "0.70*" not in text and "the project's ratio (device.ratio in microt.toml)" in text


# ---------------------------------------------------------------- train prints a summary


def test_train_prints_a_summary(tmp_path: Path) -> None:
    from tests.model.tiny import tiny_config

    init_project(tmp_path / "p", tiny_config())
    res = cli("train", "--project", str(tmp_path / "p"))
    assert res.returncode == 0, res.stderr
    for words in ("teacher builtin:ssl-convnet", "SSKD (stage 1)", "joint (stage 3)", "linear-probe accuracy",
                  "digits", "loops", f"checkpoint: {tmp_path / 'p' / 'checkpoints' / 'extractor.pt'}"):
        assert words in res.stdout, words
    assert "{}" not in res.stdout
