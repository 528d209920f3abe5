"""`make fuzz`: build and run the bounded coverage-guided fuzzers, print what each did.

Targets: parser (mdt_protocol.c's receiver, libFuzzer), app (the command handlers: mdt_app.c +
microt.c + mdt_learn.c + kernels around the toy model, fuzz board layer, libFuzzer), reader (the
.tflite reader, atheris). libFuzzer builds use clang with -fsanitize=fuzzer,address,undefined.
Seeds: fuzz/corpus/<target>/ (committed, regenerated with --write-seeds); the working corpus and
any crash-* reproducer go to build/fuzz/<target>/.

    python fuzz/run.py [--seconds 60] [--targets parser,app,reader] [--write-seeds]
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from microt_deploy.link.protocol import Command, encode  # noqa: E402

FUZZ = ROOT / "fuzz"
BUILD = ROOT / "build" / "fuzz"
CORPUS = FUZZ / "corpus"
CLANG_FLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", "-std=c99"]
FW_OPTIONS = {"max_tasks": 2, "max_classes": 4, "max_slots": 16, "max_payload": 256}


def render_firmware_dir(out: Path) -> Path:
    """The portable firmware around the toy model (host board options), rendered into ``out``."""
    from microt_deploy.boards import load_board
    from microt_deploy.targets import render_firmware
    from tests.firmware.toy_model import write_toy_model

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    render_firmware(write_toy_model(out / "compiled"), load_board("host"), out / "fw", dict(FW_OPTIONS))
    return out / "fw"


def build_c(fw: Path, cc: str = "clang", flags: list[str] | None = None, driver: Path | None = None) -> dict[str, Path]:
    """Build the parser and app harnesses from the rendered firmware folder ``fw``; with ``driver``
    (a main() that replays files) instead of libFuzzer. Returns {target: executable}."""
    flags = CLANG_FLAGS if flags is None else flags
    out = fw.parent
    extra = [str(driver)] if driver else []
    exes = {"parser": out / "fuzz_parser", "app": out / "fuzz_app"}
    subprocess.run([cc, *flags, f"-I{fw}", f"-I{FUZZ}", str(FUZZ / "fuzz_parser.c"), str(fw / "mdt_protocol.c"),
                    *extra, "-o", str(exes["parser"])], check=True)
    objs = []
    for src in sorted(fw.glob("*.c")):
        if src.name == "mdt_board_host.c":
            continue
        obj = out / (src.stem + ".o")
        define = ["-Dmain=mdt_app_main"] if src.name == "mdt_app.c" else []
        subprocess.run([cc, *flags, *define, f"-I{fw}", f"-I{FUZZ}", "-c", str(src), "-o", str(obj)], check=True)
        objs.append(str(obj))
    subprocess.run([cc, *flags, f"-I{fw}", f"-I{FUZZ}", str(FUZZ / "fuzz_app.c"), str(FUZZ / "mdt_board_fuzz.c"),
                    *objs, *extra, "-lm", "-o", str(exes["app"])], check=True)
    return exes


def seeds() -> dict[str, dict[str, bytes]]:
    """The seed inputs of each target (what --write-seeds commits under fuzz/corpus/)."""
    hello = encode(Command.HELLO, 1)
    load = encode(Command.LOAD_INPUT, 2, struct.pack("<I", 0) + bytes(range(16)))
    parser = {
        "raw_frames": b"\x00\x00" + hello + load,
        "raw_truncated_then_good": b"\x00\x05" + load[:12] + hello,
        "raw_garbage_sync": b"\x00\x00\xa5\xa5\x5a\x07\x01" + hello + b"\xa5\x5a\x01\x02\x03\xff\xff" + hello,
        "records": bytes([1, 1, 3, 1, 0xAA, 0xBB, 2, 9, 40]) + bytes(range(8)) + bytes([0, 3, 1, 2, 3])
        + bytes([1, 2, 9, 0]) + bytes([3, 0]),
    }

    def rec(command: int, payload: bytes = b"") -> bytes:
        return bytes([command, len(payload)]) + payload

    session = b"\x00" + rec(Command.HELLO)
    for slot in range(4):
        x = bytes([120 if i == slot % 3 else (i * 7 + slot) % 50 for i in range(16)])
        session += rec(Command.LOAD_INPUT, struct.pack("<I", 0) + x)
        session += rec(Command.STORE_FEATURES, struct.pack("<I", slot))
    session += rec(Command.SET_LABELS, struct.pack("<BBI", 0, 3, 0) + bytes([0, 1, 2, 0]))
    stored = session
    session += rec(Command.TRAIN, struct.pack("<BHfIII", 0, 3, 0.05, 0, 4, 7))
    session += rec(Command.SET_RATIO, struct.pack("<BfII", 0, 0.5, 0, 4))
    session += rec(Command.INFER, b"\x00\x01") + rec(Command.READ_HEAD, struct.pack("<BBIH", 0, 1, 0, 8))
    session += rec(Command.RUN_GRAPHS) + rec(Command.READ_TENSOR, struct.pack("<BIH", 0, 0, 16))
    app = {
        "session": session,
        "train_inf": stored + rec(Command.TRAIN, struct.pack("<BHfIII", 0, 3, float("inf"), 0, 4, 7))
        + rec(Command.SET_RATIO, struct.pack("<BfII", 0, 0.5, 0, 4))
        + rec(Command.SET_RATIO, struct.pack("<BfII", 0, float("nan"), 0, 4)) + rec(Command.INFER, b"\x00\x00"),
        "errors": b"\x00" + rec(0x55) + rec(Command.HELLO, b"x") + rec(Command.EXIT, b"\x00") + rec(Command.HELLO),
        "timeouts_raw": b"\x07" + rec(0xFE, b"\xa5\x5a\x01\x02") + rec(Command.HELLO),
    }
    kws = (ROOT / "bench" / "models" / "mlperf_tiny_kws_ref_model.tflite").read_bytes()
    reader = {"kws_head_2k": kws[:2048], "kws_header": kws[:64], "not_tflite": b"TFL3" + bytes(60)}
    return {"parser": parser, "app": app, "reader": reader}


def write_seeds() -> None:
    for target, files in seeds().items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        print(f"fuzz/corpus/{target}: {len(files)} seeds")


STAT = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+)")


def summarize(target: str, log: str, rc: int, work: Path) -> dict:
    stats = STAT.findall(log)
    execs, cov, ft = (int(v) for v in stats[-1]) if stats else (0, 0, 0)
    done = re.search(r"Done (\d+) runs", log)
    if done:
        execs = int(done.group(1))
    crashes = sorted(p.name for p in work.glob("crash-*")) + sorted(p.name for p in work.glob("timeout-*")) \
        + sorted(p.name for p in work.glob("leak-*"))
    return {"target": target, "executions": execs, "cov": cov, "ft": ft, "rc": rc, "crashes": crashes}


def run_libfuzzer(target: str, exe: Path, seconds: int) -> dict:
    work = BUILD / target
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    cmd = [str(exe), str(corpus), str(CORPUS / target), f"-max_total_time={seconds}", "-timeout=10",
           "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={work}/"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    (work / "log.txt").write_text(done.stderr)
    return summarize(target, done.stderr, done.returncode, work)


def run_atheris(seconds: int) -> dict:
    work = BUILD / "reader"
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    seeds_dir = work / "seeds"
    seeds_dir.mkdir(exist_ok=True)
    # The smallest shared model, whole, joins the committed (cut) seeds.
    shutil.copy2(ROOT / "bench" / "models" / "mlperf_tiny_kws_ref_model.tflite", seeds_dir / "kws.tflite")
    cmd = [sys.executable, str(FUZZ / "fuzz_reader.py"), str(corpus), str(CORPUS / "reader"), str(seeds_dir),
           f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=4096", "-print_final_stats=1",
           f"-artifact_prefix={work}/"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    (work / "log.txt").write_text(done.stderr)
    return summarize("reader", done.stderr, done.returncode, work)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--targets", default="parser,app,reader")
    ap.add_argument("--write-seeds", action="store_true")
    args = ap.parse_args()
    if args.write_seeds:
        write_seeds()
        return 0
    targets = args.targets.split(",")
    results = []
    if {"parser", "app"} & set(targets):
        exes = build_c(render_firmware_dir(BUILD / "src"))
        results += [run_libfuzzer(t, exes[t], args.seconds) for t in ("parser", "app") if t in targets]
    if "reader" in targets:
        results.append(run_atheris(args.seconds))
    failed = False
    print(f"{'target':8} {'executions':>11} {'cov':>6} {'ft':>7}  crashes")
    for r in results:
        bad = r["crashes"] or r["rc"] != 0
        failed |= bool(bad)
        note = ", ".join(r["crashes"]) or ("none" if r["rc"] == 0 else f"exit {r['rc']}: see build/fuzz/"
                                          f"{r['target']}/log.txt")
        print(f"{r['target']:8} {r['executions']:>11} {r['cov']:>6} {r['ft']:>7}  {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
