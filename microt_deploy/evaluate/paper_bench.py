"""`make bench-paper`: the paper's backbones (MCUNet ``mcunet-in3``, ProxylessNAS ``proxyless-w0.3``) at
their native 176x176, cut after block 9, through the whole pipeline on the emulated Cortex-M4F with
L4R5ZI-sized memory (``qemu_mps2_an386``: 640 KB SRAM, 2 MB flash), one project per backbone:

train (builtin self-supervised teacher, SSKD, joint part/full training) -> export (float vs int8
agreement of the part and full features) -> compile (one arena for trunk / part head / rest) -> stack
(each graph benched alone in QEMU: bit-exact against TFLite's reference kernels, painted stack) ->
build (fit check against the board) -> eval (heads trained on the device, staged inference at ratios
0.3 / 0.5 / 0.7, every device answer predicted by the host simulation).

Writes a JSON (default ``bench/paper.json``) and a Markdown table beside it, with the wall time of
every step. Data: scikit-learn's bundled digits resized to 176 (nothing is downloaded); the projects
live under ``--workdir`` (default: the machine's state folder, ``paper-bench/``)::

    python -m microt_deploy.evaluate.paper_bench [--schedule full|quick] [--backbones all] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from microt_deploy import atomic
from microt_deploy.errors import MicrotError

BACKBONES = ("mcunet-in3", "proxyless-w0.3")
BOARD = "qemu_mps2_an386"
SPLIT_BLOCK = 9  # the paper's (and its public code's) cut
INPUT_SIZE = 176
RATIOS = [0.3, 0.5, 0.7]
GRAPHS = ("trunk", "part_head", "rest")

# Training schedules. ``quick`` is the pipeline at scale in a few minutes per backbone (features barely
# trained); ``full`` is what `make bench-paper` runs: 6 / 12 / 12 epochs on 30 images per class, about ten
# minutes of training per backbone on 2 CPU cores (bench/paper.json's seconds). The paper's own schedule
# (hundreds of epochs on ImageNet-scale data) needs a GPU: `train` takes the same config there.
SCHEDULES: dict[str, dict[str, Any]] = {
    "quick": {"train": {"teacher_epochs": 1, "sskd_epochs": 2, "joint_epochs": 2, "batch_size": 16},
              "data": {"max_per_class": 15}},
    "full": {"train": {"teacher_epochs": 6, "sskd_epochs": 12, "joint_epochs": 12, "batch_size": 32},
             "data": {"max_per_class": 30}},
}


def project_config(backbone: str, schedule: str) -> dict[str, Any]:
    """The microt.toml overrides of one backbone's project (on top of the defaults)."""
    if backbone not in BACKBONES:
        raise MicrotError(f"unknown backbone {backbone!r}", f"use one of {', '.join(BACKBONES)}")
    if schedule not in SCHEDULES:
        raise MicrotError(f"unknown schedule {schedule!r}", f"use one of {', '.join(SCHEDULES)}")
    sched = SCHEDULES[schedule]
    return {
        "tasks": [{"name": "digits", "labels": "digit", "classes": 10}],
        "model": {"backbone": backbone, "input_size": INPUT_SIZE, "split_block": SPLIT_BLOCK,
                  "teacher": "builtin:ssl-convnet"},
        "train": {"seed": 0, "threads": 2, **sched["train"]},
        "data": {"dataset": "digits", "split": [0.6, 0.15, 0.25], "seed": 0, **sched["data"]},
        # every sample of the (capped) splits goes to the device
        "device": {"board": BOARD, "max_train_samples": 0, "max_calib_samples": 0, "max_test_samples": 0,
                   "ratio": 0.5},
        "eval": {"ratios": RATIOS},
    }


def _timed(console: Console, name: str, times: dict[str, float | None], fn: Any) -> Any:
    console.rule(name)
    t0 = time.monotonic()
    result = fn()
    times[name] = round(time.monotonic() - t0, 1)
    console.print(f"[green]{name} done in {times[name]:.1f} s[/]")
    return result


def run_backbone(backbone: str, workdir: Path, schedule: str, console: Console,
                 reuse: bool = False) -> dict[str, Any]:
    """One backbone end to end; its entry of the results. ``reuse``: keep a trained extractor and an
    export already in the project (their times are the ones train.json / export.json recorded)."""
    from microt_deploy import pipeline
    from microt_deploy.evaluate import bench
    from microt_deploy.project import init_project

    root = workdir / backbone
    config_path = root / "microt.toml"
    if config_path.is_file():
        config_path.unlink()  # the bench's own config, not one merged with an earlier run's
    project = init_project(root, project_config(backbone, schedule))
    times: dict[str, float | None] = {}
    reused: list[str] = []
    train_json, export_json = project.checkpoints / "train.json", project.export_dir / "export.json"
    if reuse and (project.checkpoints / "extractor.pt").is_file() and train_json.is_file():
        times["train"] = round(json.loads(train_json.read_text())["seconds"]["total_s"], 1)
        reused.append("train")
        console.print(f"[dim]{backbone}: reusing the trained extractor ({times['train']} s when trained)[/]")
    else:
        _timed(console, f"{backbone}: train", times, lambda: pipeline.train(root, console, fresh=True))
        times["train"] = times.pop(f"{backbone}: train")
    if reuse and "train" in reused and export_json.is_file():
        times["export"] = round(json.loads(export_json.read_text())["seconds"], 1)
        reused.append("export")
        console.print(f"[dim]{backbone}: reusing the export ({times['export']} s when exported)[/]")
    else:
        _timed(console, f"{backbone}: export", times, lambda: pipeline.export(root, console))
        times["export"] = times.pop(f"{backbone}: export")
    plan = _timed(console, f"{backbone}: compile", times, lambda: pipeline.compile(root, console))
    times["compile"] = times.pop(f"{backbone}: compile")
    graphs = [project.export_dir / f"{g}.tflite" for g in GRAPHS]
    # each graph alone on the Cortex-M4 image of `microt-deploy bench`: bit-exact check and the painted
    # stack's high-water mark (kept for `build`'s stack line); a failure there leaves peak SRAM open
    # but not the rest of the run
    try:
        stack = _timed(console, f"{backbone}: stack", times,
                       lambda: bench.run_bench(graphs, None, console, os_variant=False))
    except MicrotError as err:
        console.print(f"[red]{backbone}: the stack bench failed: {err.one_line()}[/]")
        stack = {"models": [], "error": err.one_line()}
        times[f"{backbone}: stack"] = None
    times["stack"] = times.pop(f"{backbone}: stack")
    built = _timed(console, f"{backbone}: build", times, lambda: pipeline.build(root, BOARD, console))
    times["build"] = times.pop(f"{backbone}: build")
    report = _timed(console, f"{backbone}: eval", times, lambda: pipeline.evaluate(root, BOARD, None, console))
    times["eval"] = times.pop(f"{backbone}: eval")
    export_info = json.loads(export_json.read_text())
    row = summarize(backbone, project.config, times, export_info, plan, stack, built, report)
    row["reused"] = reused
    return row


def summarize(backbone: str, config: dict[str, Any], times: dict[str, float | None], export_info: dict[str, Any],
              plan: dict[str, Any], stack: dict[str, Any], built: Any, report: dict[str, Any]) -> dict[str, Any]:
    """The figures of one backbone's run from what the stages return (pure: tested on its own)."""
    from microt_deploy.evaluate.report import simulation_line
    from microt_deploy.firmware.render import KERNEL_STATIC_BYTES

    graph_stack = {Path(m["model"]).stem: m.get("stack_bytes") for m in stack["models"]}
    measured = [s for s in graph_stack.values() if s is not None]
    arena = int(plan["arena_size"])  # the arena as the firmware allocates it (aligned)
    parity = export_info["parity"]
    tasks = []
    for task in report["tasks"]:
        stages = task["mean_counts_per_stage"]
        tasks.append({
            "task": task["task"], "samples": task["samples"],
            "part_accuracy": task["part_accuracy"], "full_accuracy": task["full_accuracy"],
            "instructions_per_stage": {k: int(round(v)) for k, v in stages.items()},
            "full_model_instructions": int(round(task["full_model_counts"])),
            "full_model_energy_mj": task["full_model_energy_mj"],
            "part_model_energy_mj": task["part_model_energy_mj"],
            "ratios": {key: {"exit_at_part": r["exit_at_part"], "staged_accuracy": r["accuracy"],
                             "instructions_per_inference": int(round(r["counts_per_inference"])),
                             "energy_mj": r["energy_mj"], "energy_saved_vs_full": r["energy_saved_vs_full"]}
                       for key, r in task["ratios"].items()},
        })
    sim = report["simulation"]
    total = sum(c["samples"] for t in sim.values() for c in [t["part"], t["full"], *t["staged"].values()])
    agree = sum(c["agree"] for t in sim.values() for c in [t["part"], t["full"], *t["staged"].values()])
    fw = report.get("firmware", {}).get("build", {}).get("config", {})
    return {
        "backbone": backbone,
        "input_size": config["model"]["input_size"],
        "split_block": config["model"]["split_block"],
        "macs": {g["prefix"]: g["macs"] for g in plan["graphs"]},
        "schedule": {k: config["train"][k] for k in ("teacher_epochs", "sskd_epochs", "joint_epochs", "batch_size")},
        "samples": report.get("samples"),
        "seconds": times,
        "device_seconds": report.get("device_seconds"),
        "export_agreement": {kind: parity[f"{kind}_features"] for kind in ("part", "full")},
        "linear_probe": parity.get("linear_probe"),
        "arena_bytes": arena,
        "graph_stack_bytes": graph_stack,
        "peak_sram_bytes": arena + KERNEL_STATIC_BYTES + max(measured) if measured else None,
        "bit_exact_graphs": (all(m["bit_exact"] and m["bit_exact_naive"] for m in stack["models"])
                             if stack["models"] else None),
        "stack_error": stack.get("error"),
        "firmware_fixed_ram_bytes": fw.get("fixed_ram_bytes"),
        "input_bytes": fw.get("input_size"),
        "feature_slots": fw.get("max_slots"),
        "flash_bytes": getattr(built, "flash_bytes", None),
        "ram_bytes": getattr(built, "ram_bytes", None),
        "const_bytes": plan.get("const_bytes"),
        "tasks": tasks,
        "host_simulation": {"answers": total, "predicted": agree, "line": simulation_line(sim)},
        "run_dir": report.get("run_dir"),
    }


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: one row per backbone, then staged inference per ratio."""
    rows = results["backbones"]
    lines = [f"# The paper's backbones on {BOARD} ({results['schedule']} schedule)", "",
             f"{results['note']}", "",
             "| backbone | train s | export s | compile s | stack s | build s | eval s | part cos (min) | "
             "full cos (min) | trunk instr | part_head instr | rest instr | arena B | peak SRAM B | flash B | "
             "part acc | full acc | host sim |",
             "|---|" + "---:|" * 17]
    for r in rows:
        t, s, a = r["tasks"][0], r["seconds"], r["export_agreement"]
        st = t["instructions_per_stage"]
        lines.append(
            f"| {r['backbone']} | {s['train']} | {s['export']} | {s['compile']} | {s['stack']} | {s['build']} | "
            f"{s['eval']} | {a['part']['cosine_mean']:.5f} ({a['part']['cosine_min']:.5f}) | "
            f"{a['full']['cosine_mean']:.5f} ({a['full']['cosine_min']:.5f}) | {st['trunk']:,} | "
            f"{st['part_head']:,} | {st['rest']:,} | {r['arena_bytes']:,} | "
            f"{_n(r['peak_sram_bytes'])} | {_n(r['flash_bytes'])} | {_pct(t['part_accuracy'])} | "
            f"{_pct(t['full_accuracy'])} | {r['host_simulation']['predicted']:,} of "
            f"{r['host_simulation']['answers']:,} |")
    lines += ["", "| backbone | ratio | exit@part | staged acc | instructions/inf | energy mJ | full-model mJ | "
              "saved |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r["tasks"][0]
        for key, q in t["ratios"].items():
            lines.append(f"| {r['backbone']} | {key} | {_pct(q['exit_at_part'])} | {_pct(q['staged_accuracy'])} | "
                         f"{q['instructions_per_inference']:,} | {q['energy_mj']:.2f} | "
                         f"{t['full_model_energy_mj']:.2f} | {_pct(q['energy_saved_vs_full'])} |")
    lines.append("")
    for r in rows:
        notes = [f"graphs bit-exact vs TFLite reference kernels in QEMU: "
                 f"{ {True: 'yes', False: 'NO', None: '-'}[r['bit_exact_graphs']] }",
                 "measured graph stack B: " + ", ".join(f"{g} {_n(b)}" for g, b in r["graph_stack_bytes"].items()),
                 f"firmware RAM without the feature store {_n(r['firmware_fixed_ram_bytes'])} B "
                 f"(the {_n(r['input_bytes'])} B input is loaded into the arena), feature slots "
                 f"{_n(r['feature_slots'])}",
                 f"samples {r['samples']}"]
        if r.get("reused"):
            notes.append(f"{' and '.join(r['reused'])} reused from an earlier run of the same configuration "
                         "(their seconds are that run's)")
        if r.get("stack_error"):
            notes.append(f"stack bench failed: {r['stack_error']}")
        lines.append(f"- {r['backbone']}: " + "; ".join(notes))
    return "\n".join(lines) + "\n"


def table(results: dict[str, Any]) -> Table:
    out = Table(title=f"the paper's backbones at 176x176 on {BOARD} ({results['schedule']} schedule)")
    for col in ("backbone", "ratio", "exit@part", "part acc", "full acc", "staged acc", "trunk instr", "rest instr",
                "energy mJ", "full mJ", "saved", "peak SRAM B", "flash B"):
        out.add_column(col, justify="left" if col == "backbone" else "right")
    for r in results["backbones"]:
        t = r["tasks"][0]
        st = t["instructions_per_stage"]
        for key, q in t["ratios"].items():
            out.add_row(r["backbone"], key, _pct(q["exit_at_part"]), _pct(t["part_accuracy"]),
                        _pct(t["full_accuracy"]), _pct(q["staged_accuracy"]), f"{st['trunk']:,}",
                        f"{st['rest']:,}", f"{q['energy_mj']:.2f}", f"{t['full_model_energy_mj']:.2f}",
                        _pct(q["energy_saved_vs_full"]), _n(r["peak_sram_bytes"]), _n(r["flash_bytes"]))
    return out


def main(argv: list[str] | None = None) -> int:
    from microt_deploy.targets.flashed import state_dir

    parser = argparse.ArgumentParser(prog="python -m microt_deploy.evaluate.paper_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="all", help="'all' or a comma-separated list of " + ", ".join(BACKBONES))
    parser.add_argument("--schedule", default="full", choices=sorted(SCHEDULES))
    parser.add_argument("--workdir", type=Path, default=None, help="Where the projects go (default: "
                        "$MICROT_STATE_DIR or ~/.cache/microt-deploy, paper-bench/).")
    parser.add_argument("--reuse", action="store_true", help="Keep a trained extractor and its export found in "
                        "the projects (compile, stack, build and eval run again).")
    parser.add_argument("--json", type=Path, default=Path("bench/paper.json"), help="Results JSON (and .md beside it).")
    args = parser.parse_args(argv)
    console = Console(stderr=True, width=200)
    names = list(BACKBONES) if args.backbones == "all" else [n.strip() for n in args.backbones.split(",")]
    workdir = (args.workdir or state_dir() / "paper-bench").resolve()
    started = time.monotonic()
    results: dict[str, Any] = {
        "board": BOARD, "schedule": args.schedule, "split_block": SPLIT_BLOCK, "input_size": INPUT_SIZE,
        "ratios": RATIOS,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "note": ("digits (scikit-learn, 8x8 grey) resized to 176x176, one task (10 classes); instructions are QEMU "
                 "-icount shift=0 retired instructions, energy the board file's estimate (instructions / 120 MHz x "
                 "43.6 mW); peak SRAM = the one arena of the three graphs (the 176x176x3 input is loaded into it) "
                 "+ the deepest graph stack measured in QEMU; the firmware also holds the feature store, protocol "
                 "buffers and heads (fixed RAM in the JSON)"),
        "backbones": [],
    }
    try:
        for i, name in enumerate(names):
            console.rule(f"[bold]{i + 1}/{len(names)}: {name} at {INPUT_SIZE}x{INPUT_SIZE}, cut after block "
                         f"{SPLIT_BLOCK} ({args.schedule} schedule) in {workdir / name}")
            results["backbones"].append(run_backbone(name, workdir, args.schedule, console, args.reuse))
    except MicrotError as err:
        console.print(f"[red]error: {err.one_line()}[/]")
        return 1
    results["seconds"] = round(time.monotonic() - started, 1)
    atomic.write_text(args.json, json.dumps(results, indent=1) + "\n")
    atomic.write_text(args.json.with_suffix(".md"), markdown(results))
    Console(width=200).print(table(results))
    for r in results["backbones"]:
        console.print(f"{r['backbone']}: host simulation {r['host_simulation']['line']}; export part cos "
                      f"{r['export_agreement']['part']['cosine_mean']:.5f}, full cos "
                      f"{r['export_agreement']['full']['cosine_mean']:.5f}; seconds {r['seconds']}")
    console.print(f"wrote {args.json} and {args.json.with_suffix('.md')} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
