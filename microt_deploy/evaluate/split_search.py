"""`microt-deploy split-search`: where to cut the extractor, chosen by measurement.

The trained extractor is one network; a cut k only chooses which block's output is the split (trunk =
stem + blocks[0:k], part features = its global average pool, the rest resumes from it). For every
candidate cut the search:

1. **exports** the checkpoint's very weights viewed at cut k (``export_project`` on a copy of the
   checkpoint whose split is k): trunk / part_head / rest int8 TFLite in ``PROJECT/split_search/cut_<k>/``,
   reused while ``checkpoints/extractor.pt`` and the config are unchanged;
2. **measures** each graph's instructions in the firmware: the cut folder is a project of its own and
   the project's ``compile`` and ``build`` run on it (the three graphs as one program, as the firmware
   runs them), the image runs on the emulated Cortex-M4F (QEMU ``-icount shift=0``) and RUN_GRAPHS
   answers each graph's retired instructions, the counters eval reads (kept in the cut's
   ``measure.json`` while the graph files are unchanged). Not the bench's graph-alone figure: a graph
   compiled alone may overwrite its input (row-wise in-place convolutions), which the firmware's rest
   may not (the part head still reads the split): 4.5 % more instructions for the demo's rest;
3. **predicts accuracy** on the calibration split: the int8 part and full features of the train and
   calibration samples eval would send (reference kernels, as the host simulation runs them), each task's
   heads trained as the device trains them (:mod:`microt_deploy.evaluate.host_train`), the stage-decision
   threshold from the calibration confidences at the ratio by the device's rule, then part, full and
   staged accuracy and the exit rate;
4. **predicts energy**: staged instructions = trunk + part_head + (1 - exit rate) x rest, the full model
   trunk + rest (the eval report's definition of saving: 1 - staged / full); mJ by the bench board's power
   model. The linear heads' own instructions (a few thousand float operations) are not included.

It picks the cut that saves the most energy while every task's staged accuracy stays within
``max_accuracy_loss`` of its full model (or, with ``min_saving``, the most accurate cut that saves at
least that much), and writes ``search.json`` and ``split_search.png`` into ``PROJECT/split_search/``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microt_deploy import __version__, atomic, config_schema
from microt_deploy.errors import MicrotError
from microt_deploy.project import Project, open_project
from microt_deploy.targets.flashed import sha256_file

SEARCH_DIR = "split_search"
RESULT_FILE = "search.json"
PLOT_FILE = "split_search.png"
GRAPHS = ("trunk", "part_head", "rest")
FORMAT_VERSION = 1
DEFAULT_MAX_ACCURACY_LOSS = 0.01  # one percentage point below the full model
# Saving and accuracy compared with this slack (float noise, not a tolerance a user would notice).
EPS = 1e-9

Say = Callable[[str], None]


@dataclass
class SearchOptions:
    """What to search and how to choose. ``max_accuracy_loss`` / ``min_saving`` are fractions (0.01 is
    one percentage point / 1 %); exactly one of them applies (``min_saving`` when given). ``cuts``: None
    for every cut 1 .. blocks - 1; ``tasks``: None for all of the project's tasks."""

    ratio: float | None = None
    max_accuracy_loss: float = DEFAULT_MAX_ACCURACY_LOSS
    min_saving: float | None = None
    cuts: Sequence[int] | None = None
    tasks: Sequence[str] | None = None
    fresh: bool = False


# ---------------------------------------------------------------- cuts


def block_count(model_cfg: dict[str, Any]) -> int:
    """Blocks of the configured backbone (a preset's when ``backbone`` is set), without torch."""
    if model_cfg.get("backbone"):
        return int(config_schema.BACKBONE_PRESETS[model_cfg["backbone"]])
    return len(model_cfg.get("blocks") or [])


def parse_cuts(text: str | None, n_blocks: int) -> list[int]:
    """``--cuts``: a list and / or ranges (``2-5``, ``3,5,7``, ``2-4,7``); None or "all": every cut 1 ..
    n_blocks - 1. A cut out of range or a malformed item is one line naming it and the range."""
    valid = f"1..{n_blocks - 1}"
    if text is None or text.strip().lower() in ("", "all"):
        return list(range(1, n_blocks))
    cuts: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(item), int(item))
        except ValueError:
            raise MicrotError(f"--cuts '{text}': '{item}' is not a cut number or a range such as 2-5",
                              f"pass cuts in {valid}, e.g. --cuts 2-5 or --cuts 3,5") from None
        if first > last:
            raise MicrotError(f"--cuts '{text}': the range '{item}' runs backwards", f"write it as {last}-{first}")
        for k in (first, last):
            if not 1 <= k < n_blocks:
                raise MicrotError(f"--cuts: cut {k} is outside {valid} for the {n_blocks}-block backbone (the trunk "
                                  "keeps at least one block and the rest at least one)",
                                  f"pass cuts in {valid}, e.g. --cuts 1-{n_blocks - 1}")
        cuts.extend(range(first, last + 1))
    if not cuts:
        raise MicrotError(f"--cuts '{text}' names no cut", f"pass cuts in {valid}")
    return sorted(set(cuts))


# ---------------------------------------------------------------- caching


_sha256 = sha256_file  # the file digest the flash records use


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _tree_digest(root: Path) -> str:
    """One digest of every file under ``root`` (names and contents): the firmware sources a count depends on."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cut_dir(project: Project, k: int) -> Path:
    return project.root / SEARCH_DIR / f"cut_{k}"


def cut_project(project: Project, k: int) -> Project:
    """The project as it would be cut at ``k``: its own checkpoints/ (a copy of the extractor with split
    k) and export/ under ``split_search/cut_<k>/``; data, tasks and device settings are the project's."""
    config = copy.deepcopy(project.config)
    config["model"]["split_block"] = int(k)
    return Project(root=cut_dir(project, k), config=config)


# ---------------------------------------------------------------- export and measurement of one cut


def export_cut(project: Project, k: int, extractor_sha: str, fresh: bool, say: Say) -> tuple[Project, dict]:
    """cut_<k>/export/ for the checkpoint's weights cut at ``k`` (reused when the extractor and the
    config it depends on are unchanged); returns the cut's project and its export.json."""
    from microt_deploy.project import init_project

    cut = cut_project(project, k)
    init_project(cut.root, cut.config)  # the cut folder is a project: `compile` and `build` run on it later
    cfg = cut.config
    key = {"version": FORMAT_VERSION, "microt_deploy": __version__, "extractor_sha256": extractor_sha,
           "model": cfg["model"], "data": cfg["data"], "tasks": cfg["tasks"]}
    key_path = cut.root / "export_key.json"
    info_path = cut.export_dir / "export.json"
    if not fresh and _read_json(key_path) == key and info_path.is_file() and all(
            (cut.export_dir / f"{g}.tflite").is_file() for g in GRAPHS):
        say(f"cut {k}: export reused ({cut.export_dir})")
        return cut, json.loads(info_path.read_text())
    say(f"cut {k}: export (torch -> ONNX -> int8 TFLite)")
    from microt_deploy.export import export_project
    from microt_deploy.model.backbone import Backbone
    from microt_deploy.model.train import load_extractor, save_extractor

    trained = load_extractor(project.checkpoints / "extractor.pt")
    model = Backbone({**trained.config, "split_block": int(k)})
    model.load_state_dict(trained.state_dict())  # the cut moves no weight: the same parameters
    key_path.unlink(missing_ok=True)
    save_extractor(cut.checkpoints / "extractor.pt", model.eval())
    info = export_project(cut)
    shutil.rmtree(cut.checkpoints, ignore_errors=True)  # a copy of the project's weights: not kept
    atomic.write_text(key_path, json.dumps(key, indent=1, default=str) + "\n")
    return cut, info


MEASURE_BOARD = "qemu_mps2_an386"  # the emulated Cortex-M4F: its counter is retired instructions
MEASURE_SAMPLES = 4  # calibration samples run per cut (the counts do not depend on the data, but are checked)


def measure_cut(cut: Project, k: int, samples: np.ndarray, fresh: bool, say: Say) -> dict[str, dict[str, Any]]:
    """Per graph of cut ``k``: its instructions in the firmware, as the device counts them in eval.

    The cut folder is made a project of its own (its microt.toml: the project's with the cut), and the
    project's stages run on it: ``compile`` (the three graphs as one program on one arena, the split
    kept intact for the part head and the rest, exactly as the firmware runs them) and ``build`` for the
    emulated Cortex-M4F; the image runs in QEMU (``-icount shift=0``) and RUN_GRAPHS answers each graph's
    retired instructions for a few calibration samples (mean), its outputs checked against TFLite's
    reference kernels. Kept in cut_<k>/measure.json while the generated C and the firmware sources are
    unchanged (compiling again takes a second; building and running is what the cache saves)."""
    from rich.console import Console

    from microt_deploy import pipeline
    from microt_deploy.boards import load_board
    from microt_deploy.export import reference_outputs
    from microt_deploy.firmware.render import TEMPLATES

    path = cut.root / "measure.json"
    board = load_board(MEASURE_BOARD)
    quiet = Console(stderr=True, quiet=True)
    plan = pipeline.compile(cut.root, quiet, board_id=board.id)  # fast; its C decides whether to re-measure
    key = {"version": FORMAT_VERSION, "board": MEASURE_BOARD, "samples": len(samples),
           "compiled": {p.name: _sha256(p) for p in sorted(cut.compiled_dir.glob("mdt_model.*"))},
           "firmware_templates": _tree_digest(TEMPLATES)}
    cached = None if fresh else _read_json(path)
    if cached and cached.get("key") == key:
        say(f"cut {k}: instructions reused ({path})")
        return cached["graphs"]
    say(f"cut {k}: build for {board.id}, run the graphs in QEMU")
    pipeline.build(cut.root, board.id, quiet)
    ref = reference_outputs(cut.export_dir, samples)
    counts: dict[str, list[int]] = {g: [] for g in GRAPHS}
    with pipeline.open_device(open_project(cut.root), board, None) as device:
        hello = device.hello()
        for i, sample in enumerate(samples):
            device.load_input(np.ascontiguousarray(sample, dtype=np.int8).tobytes())
            for g, n in device.run_graphs().items():
                counts[g].append(int(n))
            for tensor, name in enumerate(("split", "part_features", "full_features")):
                got = np.frombuffer(device.read_tensor(tensor), dtype=np.int8)
                if not np.array_equal(got, ref[name][i].reshape(-1)):
                    raise MicrotError(f"cut {k}: the firmware's {name} differ from TFLite's reference kernels on "
                                      f"calibration sample {i}", "report it: the compiler is wrong for this graph")
        device.exit(0)
    per_graph = {g["prefix"]: g for g in plan["graphs"]}
    graphs = {g: {"instructions": float(np.mean(counts[g])), "min": min(counts[g]), "max": max(counts[g]),
                  "unit": hello.counter_unit, "macs": int(per_graph[pipeline.PREFIX[g]]["macs"]),
                  "layers": len(per_graph[pipeline.PREFIX[g]]["layers"])} for g in GRAPHS}
    program = {"arena_bytes": int(plan["arena_bytes"]), "const_bytes": int(plan["const_bytes"])}
    atomic.write_text(path, json.dumps({"key": key, "graphs": graphs, "program": program}, indent=1) + "\n")
    return graphs


# ---------------------------------------------------------------- prediction


def staged_instructions(trunk: float, part_head: float, rest: float, exit_rate: float) -> float:
    """Mean instructions per staged inference: the trunk and part head always run, the rest for the
    samples that do not exit at the part."""
    return trunk + part_head + (1.0 - exit_rate) * rest


def full_instructions(trunk: float, rest: float) -> float:
    """Full-model inference: the trunk, then the rest (no part head)."""
    return trunk + rest


def saving(staged: float, full: float) -> float:
    """Energy saved against full-model inference (the eval report's ``energy_saved_vs_full``)."""
    return 1.0 - staged / full if full else 0.0


def _limit(n: int, cap: int) -> int:
    return min(n, cap) if cap and cap > 0 else n


def predict_tasks(cut: Project, info: dict[str, Any], splits: dict[str, Any], tasks: Sequence[dict[str, Any]],
                  ratio: float) -> dict[str, dict[str, Any]]:
    """Per task at cut ``cut``: part / full / staged accuracy, exit rate and threshold on the calibration
    split, with heads trained on the train split as the device trains them."""
    from microt_deploy.evaluate import simulate
    from microt_deploy.evaluate.host_train import train_heads
    from microt_deploy.export import quantize_input, reference_outputs

    dev = cut.config["device"]
    n_train = _limit(len(splits["train"].images), int(dev.get("max_train_samples", 0)))
    n_calib = _limit(len(splits["calib"].images), int(dev.get("max_calib_samples", 0)))
    train_ref = reference_outputs(cut.export_dir, quantize_input(splits["train"].images[:n_train], info))
    calib_ref = reference_outputs(cut.export_dir, quantize_input(splits["calib"].images[:n_calib], info))
    seed = int(cut.config["train"]["seed"])
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        name = task["name"]
        y_train = splits["train"].labels[name][:n_train]
        y_calib = splits["calib"].labels[name][:n_calib]
        part_head, full_head = train_heads(train_ref["part_features"], train_ref["full_features"], y_train,
                                           int(task["classes"]), info["part_features"], info["full_features"],
                                           int(dev["train_epochs"]), float(dev["train_lr"]), seed)
        sim = simulate.simulate_heads(calib_ref["part_features"], calib_ref["full_features"], info, part_head,
                                      full_head)
        threshold = simulate.threshold_for_ratio(sim.part_conf, ratio)
        pred, stage = simulate.staged_predictions(sim, threshold)
        full_acc = float(np.mean(sim.full_pred == y_calib))
        staged_acc = float(np.mean(pred == y_calib))
        out[name] = {
            "part_accuracy": float(np.mean(sim.part_pred == y_calib)),
            "full_accuracy": full_acc,
            "staged_accuracy": staged_acc,
            "accuracy_loss": full_acc - staged_acc,
            "exit_rate": float(np.mean(stage == 0)),
            "threshold": float(threshold),
            "part_accuracy_on_exits": float(np.mean(pred[stage == 0] == y_calib[stage == 0])) if np.any(stage == 0)
            else None,
        }
    return out


def _cut_entry(k: int, graphs: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]], ratio: float,
               board: Any, mac_share: float) -> dict[str, Any]:
    instr = {g: graphs[g]["instructions"] for g in GRAPHS}
    macs = {g: graphs[g]["macs"] for g in GRAPHS}
    full = full_instructions(instr["trunk"], instr["rest"])
    for t in tasks.values():
        staged = staged_instructions(instr["trunk"], instr["part_head"], instr["rest"], t["exit_rate"])
        t.update({"staged_instructions": staged, "energy_mj": board.energy_mj(staged),
                  "saving": saving(staged, full)})
    return {
        "cut": k,
        "macs": macs,
        "trunk_mac_share": macs["trunk"] / (macs["trunk"] + macs["rest"]) if macs["trunk"] + macs["rest"] else 0.0,
        "trunk_mac_share_analytic": mac_share,
        # what the cut could save if instructions followed MACs and exactly `ratio` of the samples exited
        "mac_bound_saving": ratio * (1.0 - mac_share),
        "instructions": instr,
        "full_instructions": full,
        "full_energy_mj": board.energy_mj(full),
        "instruction_unit": graphs["trunk"].get("unit", "instructions"),
        "tasks": tasks,
        "saving": float(np.mean([t["saving"] for t in tasks.values()])),
        "energy_mj": float(np.mean([t["energy_mj"] for t in tasks.values()])),
        "accuracy_loss": max(t["accuracy_loss"] for t in tasks.values()),
        "staged_accuracy": float(np.mean([t["staged_accuracy"] for t in tasks.values()])),
    }


def choose(cuts: Sequence[dict[str, Any]], max_accuracy_loss: float | None,
           min_saving: float | None) -> int | None:
    """The chosen cut: with ``min_saving``, the most accurate (mean staged accuracy over the tasks) of
    the cuts whose saving is at least that, the larger saving breaking ties; otherwise the cut that
    saves most among those whose every task loses at most ``max_accuracy_loss`` against its full
    model, the smaller loss breaking ties. None when no cut qualifies. Marks each cut's ``feasible``."""
    for c in cuts:
        if min_saving is not None:
            c["feasible"] = c["saving"] >= min_saving - EPS
        else:
            c["feasible"] = c["accuracy_loss"] <= (max_accuracy_loss or 0.0) + EPS
    feasible = [c for c in cuts if c["feasible"]]
    if not feasible:
        return None
    if min_saving is not None:
        best = max(feasible, key=lambda c: (c["staged_accuracy"], c["saving"], -c["cut"]))
    else:
        best = max(feasible, key=lambda c: (c["saving"], -c["accuracy_loss"], -c["cut"]))
    return int(best["cut"])


# ---------------------------------------------------------------- the search


def _energy_board() -> Any:
    from microt_deploy.boards import load_board

    return load_board(MEASURE_BOARD)


def prepare(project_dir: Path, options: SearchOptions, cuts_text: str | None = None) -> tuple[Project, list[int]]:
    """Check everything the search needs before any work: the project, the cuts, the ratio, the tasks."""
    project = open_project(project_dir)
    n_blocks = block_count(project.config["model"])
    cuts = list(options.cuts) if options.cuts is not None else parse_cuts(cuts_text, n_blocks)
    for k in cuts:
        if not 1 <= int(k) < n_blocks:
            raise MicrotError(f"--cuts: cut {k} is outside 1..{n_blocks - 1} for the {n_blocks}-block backbone",
                              f"pass cuts in 1..{n_blocks - 1}")
    ratio = float(project.config["device"]["ratio"] if options.ratio is None else options.ratio)
    if not 0.0 <= ratio <= 1.0:
        raise MicrotError(f"stage-decision ratio {ratio} is outside [0, 1]", "pass a fraction such as 0.5")
    if options.min_saving is None and not 0.0 <= options.max_accuracy_loss <= 1.0:
        raise MicrotError(f"--max-accuracy-loss {options.max_accuracy_loss:g} is not a fraction in [0, 1]",
                          "pass e.g. 0.01 or 1% (one percentage point)")
    if options.min_saving is not None and not 0.0 <= options.min_saving < 1.0:
        raise MicrotError(f"--min-saving {options.min_saving:g} is not a fraction in [0, 1)",
                          "pass e.g. 0.15 or 15%")
    names = [t["name"] for t in project.config["tasks"]]
    for name in options.tasks or ():
        if name not in names:
            raise MicrotError(f"--task '{name}' is not one of the project's tasks ({', '.join(names)})",
                              "pass a task name from microt.toml's [[tasks]]")
    if not (project.checkpoints / "extractor.pt").is_file():
        raise MicrotError(f"no trained extractor in {project.checkpoints}", "run `microt-deploy train` first")
    return project, cuts


def run_search(project_dir: Path, options: SearchOptions, say: Say | None = None,
               cuts_text: str | None = None) -> dict[str, Any]:
    """Search the cuts, choose one, write ``split_search/search.json`` and ``split_search.png``; returns
    what search.json holds. Does not touch microt.toml (:func:`write_choice` does)."""
    say = say or (lambda _line: None)
    project, cuts = prepare(project_dir, options, cuts_text)
    ratio = float(project.config["device"]["ratio"] if options.ratio is None else options.ratio)
    tasks = [t for t in project.config["tasks"] if not options.tasks or t["name"] in options.tasks]
    from microt_deploy.model.backbone import part_mac_share
    from microt_deploy.model.data import load_splits
    from microt_deploy.model.train import load_extractor, set_threads

    set_threads(project.config.get("train", {}))
    extractor = project.checkpoints / "extractor.pt"
    trained_cut = int(load_extractor(extractor).split_block)
    extractor_sha = _sha256(extractor)
    splits = load_splits(project.config)
    board = _energy_board()
    entries = []
    for k in cuts:
        cut, info = export_cut(project, k, extractor_sha, options.fresh, say)
        from microt_deploy.export import quantize_input

        samples = quantize_input(splits["calib"].images[:MEASURE_SAMPLES], info)
        graphs = measure_cut(cut, k, samples, options.fresh, say)
        say(f"cut {k}: heads trained as on the device, calibration split scored")
        per_task = predict_tasks(cut, info, splits, tasks, ratio)
        entries.append(_cut_entry(k, graphs, per_task, ratio, board, part_mac_share(cut.config["model"])))
    max_loss = None if options.min_saving is not None else options.max_accuracy_loss
    chosen = choose(entries, max_loss, options.min_saving)
    dev = project.config["device"]
    result = {
        "version": FORMAT_VERSION,
        "ratio": ratio,
        "criterion": ({"min_saving": options.min_saving} if options.min_saving is not None
                      else {"max_accuracy_loss": options.max_accuracy_loss}),
        "chosen": chosen,
        "trained_cut": trained_cut,
        "config_cut": int(project.config["model"]["split_block"]),
        "tasks": [t["name"] for t in tasks],
        "samples": {"train": _limit(len(splits["train"].images), int(dev.get("max_train_samples", 0))),
                    "calib": _limit(len(splits["calib"].images), int(dev.get("max_calib_samples", 0))),
                    "scored_on": "calib"},
        "energy_model": (f"instructions per graph in the firmware on the emulated Cortex-M4F ({board.id}, QEMU "
                         f"-icount shift=0) x cpi "
                         f"{board.cpi:g} / {board.clock_hz / 1e6:g} MHz x {board.active_mw:g} mW (the board file's "
                         "estimate); the linear heads' own instructions are not counted"),
        "method": ("per cut: the checkpoint's weights exported at the cut, compiled as one program and built for the "
                   "emulated Cortex-M4F, each graph's retired instructions read from the device (RUN_GRAPHS); heads "
                   "trained on the train split as the device trains them; threshold at the ratio from the "
                   "calibration confidences (the device's rule); accuracy, "
                   "exit rate and saving on the calibration split; staged = trunk + part_head + (1 - exit) x rest, "
                   "full = trunk + rest, saving = 1 - staged / full; a cut's saving is the mean over the tasks, "
                   "its accuracy loss the largest"),
        "cuts": entries,
    }
    write_outputs(project, result)
    return result


def write_outputs(project: Project, result: dict[str, Any]) -> tuple[Path, Path]:
    """search.json and split_search.png in PROJECT/split_search/, each written atomically."""
    folder = project.root / SEARCH_DIR
    json_path, png_path = folder / RESULT_FILE, folder / PLOT_FILE
    atomic.write_text(json_path, json.dumps(result, indent=1, default=float) + "\n")
    from microt_deploy.evaluate.plots import write_png

    write_png(plot(result), png_path)
    return json_path, png_path


def write_choice(project_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write the chosen cut into microt.toml (``model.split_block``, through ``init_project`` as `init
    --split-block` does); returns {"written", "previous", "split_block", "next"}: what must be rerun."""
    from microt_deploy.project import init_project

    project = open_project(project_dir)
    chosen = result["chosen"]
    previous = int(project.config["model"]["split_block"])
    if chosen is None:
        return {"written": False, "previous": previous, "split_block": previous, "next": ""}
    if chosen != previous:
        init_project(project.root, {"model": {"split_block": int(chosen)}})
    return {"written": chosen != previous, "previous": previous, "split_block": int(chosen),
            "next": next_steps(project, int(chosen), int(result["trained_cut"]))}


def next_steps(project: Project, k: int, trained_cut: int) -> str:
    """What must be rerun for the firmware to run cut ``k``."""
    if k != trained_cut:
        return (f"the extractor in checkpoints/ was jointly trained at cut {trained_cut} (export refuses it at cut "
                f"{k}): run `microt-deploy train` (stage 3 then trains the part at cut {k}; the config changed, so "
                "training starts over), then export, compile, build and eval")
    info = _read_json(project.export_dir / "export.json")
    if info is None or int(info.get("split", {}).get("block", -1)) != k:
        return f"the extractor was trained at cut {k}: run `microt-deploy export`, then compile, build and eval"
    return "export/ already holds this cut: nothing to rerun"


# ---------------------------------------------------------------- the table and the plot


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def table(result: dict[str, Any]) -> Any:
    """The search as a rich table: one row per cut and task."""
    from rich.table import Table

    crit = result["criterion"]
    rule = (f"saving >= {crit['min_saving']:.1%}, most accurate" if "min_saving" in crit
            else f"accuracy loss <= {crit['max_accuracy_loss'] * 100:.2g} pp, most saving")
    caption = (f"* chosen ({rule}); accuracy and exit rate on the calibration split ({result['samples']['calib']} "
               f"samples), instructions measured per graph on the emulated Cortex-M4F; extractor jointly trained "
               f"at cut {result['trained_cut']} (t)")
    t = Table(title=f"split search at stage-decision ratio {result['ratio']:g}", caption=caption)
    for col in ("cut", "trunk MACs", "trunk instr", "part-head instr", "rest instr", "task", "part acc", "full acc",
                f"exit@{result['ratio']:g}", "staged acc", "loss pp", "energy mJ", "full mJ", "saved"):
        t.add_column(col, justify="left" if col == "task" else "right")
    for c in result["cuts"]:
        mark = ("*" if c["cut"] == result["chosen"] else "") + ("t" if c["cut"] == result["trained_cut"] else "")
        style = None if c.get("feasible", True) else "dim"
        for i, (name, task) in enumerate(c["tasks"].items()):
            first = i == 0
            t.add_row(
                f"{c['cut']}{mark}" if first else "",
                f"{c['trunk_mac_share']:.0%}" if first else "",
                f"{c['instructions']['trunk']:,.0f}" if first else "",
                f"{c['instructions']['part_head']:,.0f}" if first else "",
                f"{c['instructions']['rest']:,.0f}" if first else "",
                name, _pct(task["part_accuracy"]), _pct(task["full_accuracy"]), f"{task['exit_rate']:.0%}",
                _pct(task["staged_accuracy"]), f"{task['accuracy_loss'] * 100:+.1f}",
                f"{task['energy_mj']:.4f}", f"{c['full_energy_mj']:.4f}", _pct(task["saving"]), style=style)
    return t


def _loss_words(loss: float) -> str:
    if loss < 0:
        return f"staged accuracy {-loss * 100:.1f} pp above the full model's"
    return f"accuracy loss {loss * 100:.1f} pp against the full model"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The outcome in words: the chosen cut, what it saves and loses, against the MAC bound."""
    chosen = next((c for c in result["cuts"] if c["cut"] == result["chosen"]), None)
    crit = result["criterion"]
    if chosen is None:
        return []
    lines = [f"chosen: cut after block {chosen['cut']}: trunk {chosen['trunk_mac_share']:.0%} of the MACs, predicted "
             f"saving {chosen['saving']:.1%} against full-model inference at ratio {result['ratio']:g} (a MAC-"
             f"proportional bound would be {chosen['mac_bound_saving']:.1%}), {_loss_words(chosen['accuracy_loss'])} "
             "(worst task; "
             + ("limit " + f"{crit['max_accuracy_loss'] * 100:.2g} pp)" if "max_accuracy_loss" in crit
                else f"asked: saving >= {crit['min_saving']:.1%})")]
    trained = next((c for c in result["cuts"] if c["cut"] == result["trained_cut"]), None)
    if trained is not None and trained is not chosen:
        lines.append(f"the cut the extractor was trained at, {trained['cut']}: saving {trained['saving']:.1%}, "
                     f"{_loss_words(trained['accuracy_loss'])}")
    return lines


def no_choice_error(result: dict[str, Any]) -> MicrotError:
    """One line for a search where no cut met the criterion (exit 1: the search ran, the ask failed)."""
    crit = result["criterion"]
    if "min_saving" in crit:
        best = max(result["cuts"], key=lambda c: c["saving"])
        return MicrotError(f"no cut saves {crit['min_saving']:.1%} at ratio {result['ratio']:g} (the most is cut "
                           f"{best['cut']}'s {best['saving']:.1%})",
                           "ask for less with --min-saving, raise --ratio, or use --max-accuracy-loss", exit_code=1)
    best = min(result["cuts"], key=lambda c: c["accuracy_loss"])
    return MicrotError(f"no cut keeps the accuracy loss within {crit['max_accuracy_loss'] * 100:.2g} pp at ratio "
                       f"{result['ratio']:g} (the least is cut {best['cut']}'s {best['accuracy_loss'] * 100:.1f} pp)",
                       "allow more with --max-accuracy-loss or lower --ratio", exit_code=1)


def plot(result: dict[str, Any]) -> Any:
    """Two panels over the cuts: accuracy (part, staged per task; full dashed) and the predicted energy
    saving (from measured instructions) beside the MAC-proportional bound, the chosen cut marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from microt_deploy.evaluate.plots import DPI, WIDTH

    cuts = [c["cut"] for c in result["cuts"]]
    fig = Figure(figsize=(WIDTH, 6.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    acc_ax, save_ax = fig.subplots(2, 1, sharex=True)
    colors = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")
    for i, name in enumerate(result["tasks"]):
        color = colors[i % len(colors)]
        rows = [c["tasks"][name] for c in result["cuts"]]
        acc_ax.plot(cuts, [100 * r["staged_accuracy"] for r in rows], "o-", color=color, label=f"{name} staged")
        acc_ax.plot(cuts, [100 * r["part_accuracy"] for r in rows], "s:", color=color, alpha=0.7,
                    label=f"{name} part only")
        acc_ax.plot(cuts, [100 * r["full_accuracy"] for r in rows], "--", color=color, alpha=0.5,
                    label=f"{name} full model")
    acc_ax.set_ylabel("accuracy on calib (%)")
    acc_ax.set_title(f"split search at ratio {result['ratio']:g}: accuracy per cut")
    acc_ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    acc_ax.grid(alpha=0.3)
    save_ax.plot(cuts, [100 * c["saving"] for c in result["cuts"]], "o-", color="#4C72B0",
                 label="predicted (measured instructions)")
    save_ax.plot(cuts, [100 * c["mac_bound_saving"] for c in result["cuts"]], "x--", color="#7f7f7f",
                 label="MAC-proportional bound")
    infeasible = [c for c in result["cuts"] if not c.get("feasible", True)]
    if infeasible:
        save_ax.plot([c["cut"] for c in infeasible], [100 * c["saving"] for c in infeasible], "o", color="#C44E52",
                     label="outside the criterion")
    if result["chosen"] is not None:
        best = next(c for c in result["cuts"] if c["cut"] == result["chosen"])
        for ax in (acc_ax, save_ax):
            ax.axvline(best["cut"], color="#55A868", alpha=0.6, lw=6, zorder=0)
        save_ax.annotate(f"chosen: cut {best['cut']}, {best['saving']:.1%}", (best["cut"], 100 * best["saving"]),
                         textcoords="offset points", xytext=(6, 8), fontsize=8)
    save_ax.set_xlabel("cut after block")
    save_ax.set_ylabel("energy saved vs full (%)")
    save_ax.set_xticks(cuts)
    save_ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    save_ax.grid(alpha=0.3)
    return fig
