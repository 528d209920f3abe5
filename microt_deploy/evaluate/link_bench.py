"""Evaluation speed on the emulated board: an N-sample evaluation of a trained project (store the
train and calibration features, train the heads, evaluate N test samples over the ratio sweep) per
transport (the host file over semihosting, the UART) on the same firmware image, with samples/s,
seconds, bytes sent and the link's KiB/s. ``--profile`` adds the time per command type.

    python -m microt_deploy.evaluate.link_bench -p PROJECT --eval-samples 1000 [--transport both]

When the test split has fewer than N samples it is cycled (and the output says so). The image is
the project's built firmware for the board (``microt-deploy build`` first; ``--image`` for another).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from microt_deploy.errors import MicrotError

TIMED = ("load_input", "store_features", "set_ratio", "infer", "host_open", "load_sample", "store_samples",
         "set_threshold", "set_labels", "train", "read_head", "hello")


def prepare(project_dir: Path, n: int, board_id: str | None = None) -> dict[str, Any]:
    """The project's quantised splits as `microt-deploy eval` sends them, the test split cycled to n."""
    from microt_deploy import pipeline
    from microt_deploy.boards import load_board
    from microt_deploy.evaluate import report as reporting
    from microt_deploy.export import quantize_input
    from microt_deploy.model.data import load_splits
    from microt_deploy.project import open_project

    project = open_project(project_dir)
    board = load_board(board_id or project.config["device"]["board"])
    if board.run not in ("qemu", "host"):
        raise MicrotError(f"{board.id} is not started here", "bench an emulated board or the host build")
    info = pipeline.load_export_info(project)
    dev = project.config["device"]
    splits = load_splits(project.config)
    tasks = pipeline._task_specs(project, splits)
    n_train = pipeline._limit(len(splits["train"].images), int(dev.get("max_train_samples", 0)))
    n_calib = pipeline._limit(len(splits["calib"].images), int(dev.get("max_calib_samples", 0)))
    n_test = len(splits["test"].images)
    order = np.arange(n) % n_test
    for t in tasks:
        t.train_labels, t.test_labels = t.train_labels[:n_train], t.test_labels[order]
    return {
        "project": project, "board": board, "tasks": tasks, "cycled": n > n_test, "test_split": n_test,
        "train": quantize_input(splits["train"].images[:n_train], info),
        "calib": quantize_input(splits["calib"].images[:n_calib], info),
        "test": quantize_input(splits["test"].images, info)[order],
        "ratios": reporting.sweep(project.config["eval"]["ratios"], float(dev["ratio"])),
        "epochs": int(dev["train_epochs"]), "lr": float(dev["train_lr"]), "seed": int(project.config["train"]["seed"]),
    }


@contextlib.contextmanager
def _timed(device: Any, profile: dict[str, list[float]]) -> Iterator[None]:
    """Time every call of the Device methods in TIMED (count, seconds)."""
    originals = {}
    for name in TIMED:
        method = getattr(device, name)
        originals[name] = method

        def wrapper(*args: Any, _m: Any = method, _n: str = name, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _m(*args, **kwargs)
            finally:
                entry = profile.setdefault(_n, [0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - t0

        setattr(device, name, wrapper)
    try:
        yield
    finally:
        for name in originals:
            delattr(device, name)


def run_once(prep: dict[str, Any], image: Path, kind: str, profile: bool = False,
             n_eval: int | None = None) -> dict[str, Any]:
    """One whole session on a fresh emulator: store, train, evaluate; what it took."""
    from microt_deploy.evaluate import session
    from microt_deploy.link.device import Device
    from microt_deploy.targets import launch

    test = prep["test"] if n_eval is None else prep["test"][:n_eval]
    tasks = prep["tasks"]
    for t in tasks:
        t.test_labels = t.test_labels[: len(test)]
    n_train, n_calib = len(prep["train"]), len(prep["calib"])
    timings: dict[str, list[float]] = {}
    phases: dict[str, float] = {}
    with launch(prep["board"], image) as port:
        device = Device(port, local=True)
        device.hello()
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            if profile:
                stack.enter_context(_timed(device, timings))
            transport = stack.enter_context(session.open_transport(device, kind=kind))
            t0 = time.monotonic()
            session.store_features(device, prep["train"], 0, transport=transport)
            session.store_features(device, prep["calib"], n_train, transport=transport)
            phases["store"] = time.monotonic() - t0
            t0 = time.monotonic()
            session.train_tasks(device, tasks, n_train, prep["epochs"], prep["lr"], prep["seed"])
            phases["train"] = time.monotonic() - t0
            t0 = time.monotonic()
            evals = session.evaluate_tasks(device, tasks, test, n_train, n_calib, prep["ratios"], transport=transport)
            phases["evaluate"] = time.monotonic() - t0
            report = transport.report()
        seconds = time.monotonic() - started
        attempts = device.stats["attempts"]
        with contextlib.suppress(Exception):
            device.exit(0)
    n = len(test)
    out = {
        "transport": report["kind"], "samples": n, "seconds": round(seconds, 1),
        "samples_per_s": round(n / phases["evaluate"], 2),
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "bytes_sent": report["bytes_sent"], "link_kib_s": round(report["bytes_sent"] / 1024 / report["seconds"], 1),
        "round_trips": attempts, "round_trips_per_test_sample": None,
        "answers": {e.name: {"part_pred": e.part_pred.tolist(), "full_pred": e.full_pred.tolist(),
                             "forced_counters": e.forced_counters.tolist(),
                             "staged": {str(r): [e.staged_pred[r].tolist(), e.staged_counters[r].tolist()]
                                        for r in e.staged_pred}} for e in evals},
    }
    if profile:
        out["profile"] = {k: {"calls": int(c), "seconds": round(s, 2), "ms_per_call": round(1000 * s / c, 2)}
                          for k, (c, s) in sorted(timings.items(), key=lambda kv: -kv[1][1])}
        eval_calls = sum(timings.get(k, [0])[0] for k in ("load_sample", "infer", "set_threshold"))
        if "load_input" in timings and "load_sample" not in timings:
            eval_calls = None
        out["round_trips_per_test_sample"] = None if eval_calls is None else round(eval_calls / n, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microt_deploy.evaluate.link_bench",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-p", "--project", type=Path, required=True)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--transport", choices=("both", "semihosting", "uart"), default="both")
    parser.add_argument("--image", type=Path, help="firmware image (default: the project's built one)")
    parser.add_argument("--profile", action="store_true", help="time per command type")
    parser.add_argument("--json", type=Path, help="write the results (without the per-sample answers) here")
    args = parser.parse_args(argv)
    if args.eval_samples < 1:
        parser.error("--eval-samples must be at least 1")
    from microt_deploy import pipeline

    prep = prepare(args.project, args.eval_samples)
    image = args.image or pipeline._built_image(prep["project"], prep["board"])
    if prep["cycled"]:
        print(f"the test split has {prep['test_split']} samples: cycling it to {args.eval_samples}")
    kinds = ("semihosting", "uart") if args.transport == "both" else (args.transport,)
    results = []
    for kind in kinds:
        r = run_once(prep, image, kind, profile=args.profile)
        results.append(r)
        print(f"{r['transport']:>11}: {r['samples']} samples in {r['seconds']} s (store/train/evaluate "
              f"{r['phases_s']['store']}/{r['phases_s']['train']}/{r['phases_s']['evaluate']} s), "
              f"{r['samples_per_s']} test samples/s, {r['bytes_sent']:,} bytes sent, {r['link_kib_s']} KiB/s, "
              f"{r['round_trips']:,} round trips")
        for name, p in r.get("profile", {}).items():
            print(f"    {name:<15} {p['calls']:>7,} calls {p['seconds']:>8.2f} s {p['ms_per_call']:>8.2f} ms/call")
    if len(results) == 2:
        same = results[0]["answers"] == results[1]["answers"]
        print(f"same predictions and counters on both transports: {same}")
    if args.json:
        from microt_deploy import atomic

        atomic.write_text(args.json, json.dumps([{k: v for k, v in r.items() if k != "answers"} for r in results],
                                                indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MicrotError as err:  # one line, as the CLI prints it
        print(f"error: {err.one_line()}", file=sys.stderr)
        sys.exit(err.exit_code)
