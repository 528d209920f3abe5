"""The evidence table (issue 11, part 3): what self-supervised distillation and joint training buy on
the project's own data, against an unoptimized extractor, at several stage-decision ratios.

``microt-deploy evidence -p PROJECT`` (or ``python -m microt_deploy.evaluate.evidence -p PROJECT``)
trains three extractors with the project's config, each in a project folder of its own under
``PROJECT/evidence/<variant>/`` (a copy of microt.toml with a few [train] overrides; the project's own
checkpoints and exports are never touched):

- ``unoptimized``: labels only, no teacher (``train.labels_only``: stage 1 skipped, no teacher built or
  called); stage 3 trains the full head's cross entropy L4 alone (``l6_weight = 0``: the part gets no
  loss of its own, as the first blocks of a classifier pretrained on labels) for ``sskd_epochs +
  joint_epochs`` epochs, the student's epochs of the MicroT schedule;
- ``sskd``: stage 1 only (``joint_epochs = 0``): the distilled extractor exported as it is;
- ``joint``: the whole MicroT schedule (stages 1 and 3), as ``microt-deploy train`` runs it.

Each is exported (int8 trunk / part_head / rest). Then, per variant and task, staged inference is
simulated on the host exactly as eval predicts the device's answers: the int8 features of the train,
calibration and test images (TFLite's reference kernels), the part and full heads trained on the train
samples eval would send as the device trains them (:func:`microt_deploy.evaluate.host_train.train_heads`),
the threshold at each ratio from the calibration confidences by the device's rule, and part, full and
staged accuracy and the exit rate on the whole test split. Energy: the three graphs' retired instructions
measured once in the firmware on the emulated Cortex-M4F (the split search's
:func:`~microt_deploy.evaluate.split_search.measure_cut`, on the joint variant: the architecture is the
same for all three), staged = trunk + part_head + (1 - exit rate) x rest against full = trunk + rest.

Outputs: ``PROJECT/evidence/evidence.json`` and ``evidence.md`` (or ``--json`` / ``--md``), written
atomically; the JSON keeps the per-sample part / full predictions, part confidences and thresholds, so
every figure of the table can be recomputed. A variant whose config and checkpoint are unchanged is
reused (``--fresh`` retrains).
"""

from __future__ import annotations

import copy
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microt_deploy import __version__, atomic
from microt_deploy.errors import MicrotError
from microt_deploy.evaluate.split_search import _digest, _read_json
from microt_deploy.project import Project, open_project

EVIDENCE_DIR = "evidence"
JSON_FILE = "evidence.json"
MD_FILE = "evidence.md"
FORMAT_VERSION = 1
DEFAULT_RATIOS = (0.3, 0.5, 0.7)
VARIANTS = ("unoptimized", "sskd", "joint")
DESCRIPTIONS = {
    "unoptimized": "unoptimized: labels only, no teacher (full-head cross entropy)",
    "sskd": "after self-supervised distillation (stage 1)",
    "joint": "after joint training (stages 1 + 3, MicroT)",
}
# The paper's headline figures, as its abstract states them (arXiv 2403.08040): accuracy over the
# unoptimized feature extractor and energy saved against standard full-model inference, at the standard
# stage-decision ratio 0.5 and at best; on MCUNet / ProxylessNAS students, Oxford Pets / CUB-200 /
# PlantCLEF tasks, STM32H7A3ZI and STM32L4R5ZI boards.
PAPER = {
    "source": "MicroT, arXiv 2403.08040 (SEC 2024), abstract",
    "accuracy_gain_at_0.5": 0.0591,
    "accuracy_gain_best": 0.0987,
    "energy_saving_at_0.5": 0.1447,
    "energy_saving_best": 0.2913,
}
DIGITS_NOTE = ("scikit-learn's bundled digits (1797 8x8 grey images, upscaled): no package on the registries "
               "ships a real image classification set inside its wheel (the cifar10 / mnist-datasets wheels "
               "are downloaders; torchvision, tensorflow-datasets and keras download at run time), so this is "
               "the best offline substitute; pass your own ImageFolder as data.dataset")

Say = Callable[[str], None]


# ---------------------------------------------------------------- inputs


def parse_ratios(text: str | Sequence[float] | None) -> list[float]:
    """``--ratios 0.3,0.5,0.7``: stage-decision ratios, each strictly between 0 and 1."""
    if text is None:
        return list(DEFAULT_RATIOS)
    items = text.split(",") if isinstance(text, str) else list(text)
    ratios: list[float] = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
        try:
            r = float(item)
        except ValueError:
            raise MicrotError(f"--ratios: '{item}' is not a number", "pass fractions such as --ratios 0.3,0.5,0.7") \
                from None
        if not (0.0 < r < 1.0) or math.isnan(r):
            raise MicrotError(f"--ratios: stage-decision ratio {r:g} is outside (0, 1) (the fraction of samples that "
                              "exit at the part model)", "pass fractions such as --ratios 0.3,0.5,0.7")
        ratios.append(r)
    if not ratios:
        raise MicrotError("--ratios names no ratio", "pass fractions such as --ratios 0.3,0.5,0.7")
    return sorted(set(ratios))


def prepare(project_dir: Path, ratios: str | Sequence[float] | None) -> tuple[Project, list[float]]:
    """Every usage error before any work: the project folder and the ratios."""
    parsed = parse_ratios(ratios)
    root = Path(project_dir)
    if not root.exists():
        raise MicrotError(f"project folder {root} does not exist",
                          f"run `microt-deploy init {root}` first, or pass an existing --project")
    return open_project(root), parsed


def variant_config(config: dict[str, Any], variant: str, epochs: int | None = None) -> dict[str, Any]:
    """The project's config with the variant's [train] overrides (``epochs``: teacher, sskd and joint
    epochs of the schedule, before the variant's own)."""
    if variant not in VARIANTS:
        raise MicrotError(f"unknown evidence variant {variant!r}", f"use one of {', '.join(VARIANTS)}")
    cfg = copy.deepcopy(config)
    train = cfg["train"]
    if epochs is not None:
        train.update({"teacher_epochs": int(epochs), "sskd_epochs": int(epochs), "joint_epochs": int(epochs)})
    dataset = str(cfg["data"].get("dataset", "digits"))
    if dataset != "digits":  # a folder relative to where the command runs: the variant sits elsewhere
        cfg["data"]["dataset"] = str(Path(dataset).expanduser().resolve())
    if variant == "unoptimized":
        train.update({"labels_only": True, "l6_weight": 0.0, "teacher_epochs": 0, "sskd_epochs": 0,
                      "joint_epochs": int(train["sskd_epochs"]) + int(train["joint_epochs"])})
    elif variant == "sskd":
        train["joint_epochs"] = 0
    else:
        train.pop("labels_only", None)
    return cfg


# ---------------------------------------------------------------- training and export of one variant


def prepare_variant(project: Project, variant: str, epochs: int | None, fresh: bool,
                    say: Say) -> tuple[Project, dict[str, Any], dict[str, float], dict[str, Any]]:
    """Train and export one variant in ``PROJECT/evidence/<variant>/`` (reused while its config and
    files are unchanged); returns its project, export.json, seconds per step and train.json."""
    from microt_deploy.project import init_project

    root = project.root / EVIDENCE_DIR / variant
    cfg = variant_config(project.config, variant, epochs)
    key = {"version": FORMAT_VERSION, "microt_deploy": __version__, "config": _digest(cfg)}
    key_path = root / "evidence_key.json"
    vproj = Project(root=root, config=cfg)
    info_path = vproj.export_dir / "export.json"
    train_path = vproj.checkpoints / "train.json"
    seconds: dict[str, Any] = {}
    stored = _read_json(key_path) or {}
    if (not fresh and stored.get("key") == key and info_path.is_file() and train_path.is_file()
            and all((vproj.export_dir / f"{g}.tflite").is_file() for g in ("trunk", "part_head", "rest"))):
        say(f"{variant}: reusing {root}")
        return vproj, json.loads(info_path.read_text()), {**stored.get("seconds", {}), "reused": True}, \
            json.loads(train_path.read_text())
    key_path.unlink(missing_ok=True)
    (root / "microt.toml").unlink(missing_ok=True)  # exactly the variant's config, nothing left from before
    vproj = init_project(root, cfg)
    from microt_deploy.export import export_project
    from microt_deploy.model.train import train_project

    say(f"{variant}: train ({DESCRIPTIONS[variant]})")
    t0 = time.perf_counter()
    summary = train_project(vproj, fresh=True)
    seconds["train_s"] = time.perf_counter() - t0
    say(f"{variant}: export (torch -> ONNX -> int8 TFLite)")
    t0 = time.perf_counter()
    info = export_project(vproj)
    seconds["export_s"] = time.perf_counter() - t0
    atomic.write_text(key_path, json.dumps({"key": key, "seconds": seconds}, indent=1) + "\n")
    seconds["reused"] = False
    return vproj, info, seconds, summary


# ---------------------------------------------------------------- prediction


def _limit(n: int, cap: int) -> int:
    return min(n, cap) if cap and cap > 0 else n


def staged_outcome(labels: np.ndarray, part_pred: np.ndarray, part_conf: np.ndarray, full_pred: np.ndarray,
                   threshold: float) -> dict[str, float]:
    """Staged inference at a threshold: the part answers where its confidence reaches it."""
    exits = np.asarray(part_conf) >= threshold
    pred = np.where(exits, part_pred, full_pred)
    return {"staged_accuracy": float(np.mean(pred == labels)), "exit_rate": float(np.mean(exits))}


def predict_variant(vproj: Project, info: dict[str, Any], splits: dict[str, Any], ratios: Sequence[float],
                    ) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Per task: heads trained on the train samples as the device trains them, the threshold at each ratio
    from the calibration confidences (the device's rule), part / full / staged accuracy and exit rate on
    the test split, with the per-sample predictions. Also the sample counts used."""
    from microt_deploy.evaluate import simulate
    from microt_deploy.evaluate.host_train import train_heads
    from microt_deploy.export import quantize_input, reference_outputs

    dev = vproj.config["device"]
    n = {"train": _limit(len(splits["train"].images), int(dev.get("max_train_samples", 0))),
         "calib": _limit(len(splits["calib"].images), int(dev.get("max_calib_samples", 0))),
         "test": len(splits["test"].images)}
    ref = {name: reference_outputs(vproj.export_dir, quantize_input(splits[name].images[: n[name]], info))
           for name in n}
    seed = int(vproj.config["train"]["seed"])
    out: dict[str, dict[str, Any]] = {}
    for task in vproj.config["tasks"]:
        name = task["name"]
        y_train = splits["train"].labels[name][: n["train"]]
        y_test = np.asarray(splits["test"].labels[name][: n["test"]])
        part_head, full_head = train_heads(ref["train"]["part_features"], ref["train"]["full_features"], y_train,
                                           int(task["classes"]), info["part_features"], info["full_features"],
                                           int(dev["train_epochs"]), float(dev["train_lr"]), seed)
        calib = simulate.simulate_heads(ref["calib"]["part_features"], ref["calib"]["full_features"], info,
                                        part_head, full_head)
        test = simulate.simulate_heads(ref["test"]["part_features"], ref["test"]["full_features"], info,
                                       part_head, full_head)
        per_ratio = {}
        for r in ratios:
            threshold = simulate.threshold_for_ratio(calib.part_conf, r)
            per_ratio[f"{r:g}"] = {"ratio": r, "threshold": float(threshold),
                                   **staged_outcome(y_test, test.part_pred, test.part_conf, test.full_pred,
                                                    threshold)}
        out[name] = {
            "part_accuracy": float(np.mean(test.part_pred == y_test)),
            "full_accuracy": float(np.mean(test.full_pred == y_test)),
            "ratios": per_ratio,
            "samples": {"labels": y_test.tolist(), "part_pred": test.part_pred.tolist(),
                        "part_conf": [float(c) for c in test.part_conf], "full_pred": test.full_pred.tolist(),
                        "calib_part_conf": [float(c) for c in calib.part_conf]},
        }
    return out, n


# ---------------------------------------------------------------- energy


def measure(vproj: Project, info: dict[str, Any], splits: dict[str, Any], fresh: bool, say: Say) -> dict[str, Any]:
    """Each graph's retired instructions in the firmware on the emulated Cortex-M4F (the split search's
    measurement: compile and build the variant folder, RUN_GRAPHS in QEMU, outputs checked)."""
    from microt_deploy.evaluate import split_search
    from microt_deploy.export import quantize_input

    samples = quantize_input(splits["calib"].images[: split_search.MEASURE_SAMPLES], info)
    k = int(vproj.config["model"]["split_block"])
    graphs = split_search.measure_cut(vproj, k, samples, fresh, lambda line: say(line.replace(f"cut {k}: ", "")))
    instr = {g: float(graphs[g]["instructions"]) for g in split_search.GRAPHS}
    return {"instructions": instr, "unit": graphs["trunk"].get("unit", "instructions"),
            "macs": {g: int(graphs[g]["macs"]) for g in split_search.GRAPHS},
            "full_instructions": split_search.full_instructions(instr["trunk"], instr["rest"]),
            "board": split_search.MEASURE_BOARD, "measured_on": vproj.root.name}


def add_energy(tasks: dict[str, dict[str, Any]], energy: dict[str, Any], board: Any) -> None:
    """Staged instructions, energy and saving against full-model inference at every ratio, from the
    measured instructions and the exit rate on the test split."""
    from microt_deploy.evaluate.split_search import saving, staged_instructions

    instr = energy["instructions"]
    for task in tasks.values():
        for row in task["ratios"].values():
            staged = staged_instructions(instr["trunk"], instr["part_head"], instr["rest"], row["exit_rate"])
            row.update({"staged_instructions": staged, "energy_mj": board.energy_mj(staged),
                        "saving": saving(staged, energy["full_instructions"])})


# ---------------------------------------------------------------- the run


def headlines(result: dict[str, Any]) -> dict[str, Any]:
    """Per task: the joint (MicroT) extractor's staged accuracy over the unoptimized one's at each ratio
    (percentage points as fractions), the distilled one's likewise, and the energy saved; the ratio 0.5
    figures and the best over the ratios, beside the paper's."""
    out: dict[str, Any] = {}
    variants = result["variants"]
    if not all(v in variants for v in ("unoptimized", "joint")):
        return out
    for name in variants["joint"]["tasks"]:
        base = variants["unoptimized"]["tasks"][name]
        per: dict[str, Any] = {}
        for key, row in variants["joint"]["tasks"][name]["ratios"].items():
            b = base["ratios"][key]
            entry = {"accuracy_gain": row["staged_accuracy"] - b["staged_accuracy"],
                     "accuracy_gain_vs_unoptimized_full": row["staged_accuracy"] - base["full_accuracy"],
                     "saving": row["saving"]}
            if "sskd" in variants:
                entry["sskd_accuracy_gain"] = (variants["sskd"]["tasks"][name]["ratios"][key]["staged_accuracy"]
                                               - b["staged_accuracy"])
            per[key] = entry
        out[name] = {
            "ratios": per,
            "accuracy_gain_at_0.5": per["0.5"]["accuracy_gain"] if "0.5" in per else None,
            "energy_saving_at_0.5": per["0.5"]["saving"] if "0.5" in per else None,
            "accuracy_gain_best": max(e["accuracy_gain"] for e in per.values()),
            "energy_saving_best": max(e["saving"] for e in per.values()),
        }
    return out


def run(project_dir: Path, ratios: str | Sequence[float] | None = None, *, epochs: int | None = None,
        fresh: bool = False, variants: Sequence[str] = VARIANTS, say: Say | None = None) -> dict[str, Any]:
    """Train, export and evaluate the variants; returns the evidence (what evidence.json holds)."""
    say = say or (lambda _line: None)
    project, parsed = prepare(project_dir, ratios)
    started = time.perf_counter()
    from microt_deploy.evaluate.split_search import _energy_board
    from microt_deploy.model.data import load_splits
    from microt_deploy.model.train import set_threads

    set_threads(project.config.get("train", {}))
    splits = load_splits(project.config)
    board = _energy_board()
    results: dict[str, Any] = {}
    seconds: dict[str, dict[str, float]] = {}
    built: dict[str, tuple[Project, dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    for variant in variants:
        vproj, info, secs, summary = prepare_variant(project, variant, epochs, fresh, say)
        built[variant] = (vproj, info)
        say(f"{variant}: heads trained as on the device, test split scored")
        t0 = time.perf_counter()
        tasks, counts = predict_variant(vproj, info, splits, parsed)
        secs["predict_s"] = time.perf_counter() - t0
        seconds[variant] = secs
        train_cfg = vproj.config["train"]
        results[variant] = {
            "description": DESCRIPTIONS[variant],
            "folder": str(vproj.root.relative_to(project.root)),  # no machine paths in the record
            "train": {k: train_cfg.get(k) for k in ("labels_only", "teacher_epochs", "sskd_epochs", "joint_epochs",
                                                    "l3_weight", "l4_weight", "l5_weight", "l6_weight")
                      if k in train_cfg or k == "labels_only"},
            "teacher": summary.get("teacher", {}).get("spec"),
            "train_seconds": summary.get("seconds", {}),
            "probe": summary.get("probe", {}),
            "tasks": tasks,
        }
    reference = "joint" if "joint" in built else variants[-1]
    say(f"instructions: compile and build {reference} for {board.id}, run the graphs in QEMU")
    t0 = time.perf_counter()
    energy = measure(*built[reference], splits, fresh, say)
    energy["full_energy_mj"] = board.energy_mj(energy["full_instructions"])
    measure_s = time.perf_counter() - t0
    for v in results.values():
        add_energy(v["tasks"], energy, board)
    data = project.config["data"]
    result: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "microt_deploy": __version__,
        "project": project.root.name,
        "dataset": str(data.get("dataset", "digits")),
        "dataset_note": DIGITS_NOTE if str(data.get("dataset", "digits")) == "digits" else "the project's ImageFolder",
        "model": {"input_size": project.config["model"]["input_size"],
                  "split_block": project.config["model"]["split_block"],
                  "backbone": project.config["model"].get("backbone")},
        "ratios": parsed,
        "samples": {**counts, "scored_on": "test", "heads_trained_on": "train", "threshold_from": "calib"},
        "energy": {**energy, "energy_model": (
            f"retired instructions per graph in the firmware on the emulated Cortex-M4F ({board.id}, QEMU -icount "
            f"shift=0), measured once on the {reference} variant (same architecture for all); staged = trunk + "
            "part_head + (1 - exit rate) x rest, full = trunk + rest, saving = 1 - staged / full; mJ = instructions "
            f"x cpi {board.cpi:g} / {board.clock_hz / 1e6:g} MHz x {board.active_mw:g} mW (the board file's "
            "estimate); the linear heads' own instructions are not counted")},
        "variants": results,
        "paper": PAPER,
        "method": ("per variant: trained with the project's config in its own folder, exported int8; heads trained "
                   "on the train samples eval would send as the device trains them; the threshold at each ratio "
                   "from the calibration confidences by the device's rule; part, full and staged accuracy and the "
                   "exit rate on the whole test split (host simulation of the int8 graphs, as eval predicts the "
                   "device's answers)"),
        "seconds": {**seconds, "measure_s": measure_s},
    }
    result["headline"] = headlines(result)
    result["seconds"]["total_s"] = time.perf_counter() - started
    return result


# ---------------------------------------------------------------- outputs


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _pp(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The evidence as markdown: per task a table of the variants, then ours beside the paper's."""
    ratios = [f"{r:g}" for r in result["ratios"]]
    e = result["energy"]
    lines = [
        "# MicroT evidence table",
        "",
        f"Data: {result['dataset']} ({result['dataset_note']}). Input {result['model']['input_size']} px, cut after "
        f"block {result['model']['split_block']}. Heads trained on {result['samples']['train']} train samples as the "
        f"device trains them, thresholds from {result['samples']['calib']} calibration samples, scored on "
        f"{result['samples']['test']} test samples (host simulation of the int8 graphs).",
        "",
        f"Instructions (emulated Cortex-M4F, measured on the {e['measured_on']} variant): trunk "
        f"{e['instructions']['trunk']:,.0f}, part head {e['instructions']['part_head']:,.0f}, rest "
        f"{e['instructions']['rest']:,.0f}; full model {e['full_instructions']:,.0f} ({e['full_energy_mj']:.4f} mJ "
        "by the board file's power estimate).",
        "",
    ]
    for name in next(iter(result["variants"].values()))["tasks"]:
        lines += [f"## Task `{name}`", "",
                  "| extractor | part | full | " + " | ".join(f"staged @{r} (exit, energy saved)" for r in ratios)
                  + " |",
                  "|---|---:|---:|" + "---:|" * len(ratios)]
        for v in result["variants"].values():
            t = v["tasks"][name]
            cells = [f"{_pct(t['ratios'][r]['staged_accuracy'])} ({_pct(t['ratios'][r]['exit_rate'])}, "
                     f"{_pct(t['ratios'][r].get('saving'))})" for r in ratios]
            lines.append(f"| {v['description']} | {_pct(t['part_accuracy'])} | {_pct(t['full_accuracy'])} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    head = result.get("headline") or {}
    if head:
        paper = result["paper"]
        lines += ["## Ours beside the paper's", "",
                  "Accuracy gain: staged accuracy of the jointly trained (MicroT) extractor minus the unoptimized "
                  "extractor's at the same ratio, in percentage points; energy saved: against full-model inference "
                  "(trunk + rest), from the measured instructions and the exit rate on the test split. The paper's "
                  f"figures are quoted from {paper['source']} (its students, tasks and boards, not ours).", "",
                  "| figure | " + " | ".join(f"ours: `{n}`" for n in head) + " | paper |",
                  "|---|" + "---:|" * (len(head) + 1)]
        rows = (("accuracy gain at ratio 0.5", "accuracy_gain_at_0.5", _pp, lambda x: f"+{100 * x:.2f}"),
                ("accuracy gain, best ratio", "accuracy_gain_best", _pp, lambda x: f"+{100 * x:.2f}"),
                ("energy saved at ratio 0.5", "energy_saving_at_0.5", _pct, lambda x: f"{100 * x:.2f} %"),
                ("energy saved, best ratio", "energy_saving_best", _pct, lambda x: f"{100 * x:.2f} %"))
        for label, key, fmt, paper_fmt in rows:
            lines.append(f"| {label} | " + " | ".join(fmt(h[key]) for h in head.values())
                         + f" | {paper_fmt(paper[key])} |")
        lines += ["", "Per ratio (ours): " + "; ".join(
            f"`{n}` @{r}: {_pp(e_['accuracy_gain'])} pp"
            + (f" (SSKD alone {_pp(e_['sskd_accuracy_gain'])} pp)" if "sskd_accuracy_gain" in e_ else "")
            + f", {_pct(e_['saving'])} saved" for n, h in head.items() for r, e_ in h["ratios"].items()), ""]
    secs = result["seconds"]
    lines += ["## Time on this machine", "",
              "| step | " + " | ".join(result["variants"]) + " |", "|---|" + "---:|" * len(result["variants"])]
    for step in ("train_s", "export_s", "predict_s"):
        lines.append(f"| {step[:-2]} | " + " | ".join(f"{secs[v][step]:.1f} s" for v in result["variants"]) + " |")
    reused = [v for v in result["variants"] if secs[v].get("reused")]
    lines += ["", f"Instruction measurement (compile, build, QEMU): {secs['measure_s']:.1f} s; total "
              f"{secs['total_s']:.1f} s"
              + (f" ({', '.join(reused)} reused: train and export times are those of the run that made them)"
                 if reused else "") + ".", ""]
    return "\n".join(lines)


_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][-+0-9.eE]*(?:,\s*-?[0-9][-+0-9.eE]*)*)\s*\]")


def dumps(result: dict[str, Any]) -> str:
    """Indented JSON with every list of numbers (the per-sample predictions) on one line."""
    return _NUMBER_LIST.sub(lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]",
                            json.dumps(result, indent=1)) + "\n"


def write_outputs(result: dict[str, Any], json_path: Path, md_path: Path) -> None:
    atomic.write_text(json_path, dumps(result))
    atomic.write_text(md_path, markdown(result))


def default_paths(project_dir: Path) -> tuple[Path, Path]:
    folder = Path(project_dir) / EVIDENCE_DIR
    return folder / JSON_FILE, folder / MD_FILE


if __name__ == "__main__":  # the CLI's `evidence` verb: one-line errors, the project lock
    from microt_deploy.cli import main

    main(["evidence", *sys.argv[1:]], prog_name="python -m microt_deploy.evaluate.evidence")
