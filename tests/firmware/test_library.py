"""`export_library`: the compiled model as a C99 library for a user's own firmware.

A user program, written here as a user would write it and built against the exported folder only,
runs on the host: its tensors are the model's (the toy model's arithmetic; TFLite's reference kernels
for a really compiled model), its trained heads, threshold and staged answers are the very floats of
our firmware's TRAIN / READ_HEAD / SET_RATIO / INFER over the serial protocol. The same program
cross-compiles and links for a Cortex-M4F and M7 with -Werror, and the static RAM of the library's
objects is what the export reports. library.json passes PlatformIO's own manifest parser and schema.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from microt_deploy import __version__
from microt_deploy.errors import MicrotError
from microt_deploy.export.quantize import quantize
from microt_deploy.firmware import library
from microt_deploy.firmware.library import export_library, summary_lines
from microt_deploy.project import init_project
from tests.firmware.toy_model import FULL, INPUT, PART, SCALES, toy_outputs, write_toy_model

TASKS = [{"name": "blobs", "labels": "digit", "classes": 3}, {"name": "quads", "labels": "loops", "classes": 4}]
STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
CORTEX = {
    "m4f": ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"],
    "m7": ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"],
}
NOT_READY, OUT_OF_RANGE, BAD_ARGUMENT = 6, 7, 5

# The user's program: only microt.h. session.h (written by the test) holds the samples, as a user's
# program would hold its sensor data.
USER_MAIN = r"""
#include <stdio.h>

#include "microt.h"
#include "session.h"

static uint64_t ticks;

static uint64_t counter(void) /* a stand-in for a cycle counter: 7 per read */
{
    ticks += 7u;
    return ticks;
}

static void bytes(const char *tag, const int8_t *p, uint32_t n)
{
    uint32_t i;
    printf(" %s", tag);
    for (i = 0; i < n; i++) {
        printf(" %d", (int)p[i]);
    }
}

static void counts(const microt_counts_t *c)
{
    printf(" counts %lu %lu %lu %lu %lu", (unsigned long)c->trunk, (unsigned long)c->part_head,
           (unsigned long)c->part_classifier, (unsigned long)c->rest, (unsigned long)c->full_classifier);
}

int main(void)
{
    static int8_t split[MICROT_SPLIT_SIZE];
    microt_counts_t c;
    microt_result_t r;
    microt_train_result_t tr;
    const float *w, *b;
    float threshold = 0.0f;
    uint32_t i, k, nc, dim, which, flags;

    microt_init(counter, NULL);
    printf("STATUS %d %d %d %d %d\n", microt_run_graphs(split, &c), microt_set_input(1, samples[0], MICROT_INPUT_SIZE),
           microt_store_features(MICROT_MAX_SLOTS, NULL), microt_infer(MICROT_MAX_TASKS, 0, &r),
           microt_infer(TASK, 2u, &r));
    for (i = 0; i < N_SAMPLES; i++) {
        microt_set_input(0, samples[i], MICROT_INPUT_SIZE);
        microt_run_graphs(split, &c);
        printf("RUN %lu", (unsigned long)i);
        bytes("split", split, MICROT_SPLIT_SIZE);
        bytes("part", microt_part_features(), MICROT_PART_DIM);
        bytes("full", microt_full_features(), MICROT_FULL_DIM);
        counts(&c);
        printf("\n");
        if (microt_store_features(i, NULL) != MICROT_OK) {
            return 1;
        }
    }
    printf("UNTRAINED %d\n", microt_infer(TASK, 0, &r));
    if (microt_set_labels(TASK, N_CLASSES, 0, labels, N_SAMPLES) != MICROT_OK ||
        microt_train(TASK, EPOCHS, LR, 0, N_TRAIN, SEED, &tr) != MICROT_OK) {
        return 2;
    }
    printf("TRAIN %a %a %a %a %lu\n", tr.part_loss, tr.part_accuracy, tr.full_loss, tr.full_accuracy,
           (unsigned long)tr.counter);
    for (which = 0; which < 2; which++) {
        if (microt_head(TASK, which, &w, &b, &nc, &dim) != MICROT_OK) {
            return 3;
        }
        printf("HEAD %lu %lu %lu", (unsigned long)which, (unsigned long)nc, (unsigned long)dim);
        for (k = 0; k < nc * dim; k++) {
            printf(" %a", w[k]);
        }
        for (k = 0; k < nc; k++) {
            printf(" %a", b[k]);
        }
        printf("\n");
    }
    if (microt_set_ratio(TASK, RATIO, N_TRAIN, N_SAMPLES - N_TRAIN, &threshold) != MICROT_OK) {
        return 4;
    }
    printf("RATIO %a\n", threshold);
    for (i = N_TRAIN; i < N_SAMPLES; i++) {
        microt_set_input(0, samples[i], MICROT_INPUT_SIZE);
        for (flags = 0; flags < 2; flags++) {
            if (microt_infer(TASK, flags ? MICROT_FORCE_FULL : 0u, &r) != MICROT_OK) {
                return 5;
            }
            printf("INFER %lu %lu %u %u %u %u %a %a", (unsigned long)i, (unsigned long)flags, r.prediction,
                   r.exit_stage, r.part_prediction, r.full_prediction, r.part_confidence, r.full_confidence);
            counts(&r.counts);
            printf("\n");
        }
    }
    microt_set_input_f32(0, floats, MICROT_INPUT_SIZE);
    microt_run_graphs(split, NULL);
    printf("QUANT");
    bytes("split", split, MICROT_SPLIT_SIZE);
    printf("\n");
    microt_init(NULL, NULL); /* forgets the input; no counter: no counts */
    printf("REINIT %d", microt_run_graphs(split, &c));
    microt_set_input(0, samples[N_TRAIN], MICROT_INPUT_SIZE);
    microt_infer(TASK, MICROT_FORCE_FULL, &r);
    counts(&r.counts);
    printf("\n");
    return 0;
}
"""


def _c_float(x: float) -> str:
    return f"{float(np.float32(x)).hex()}f"


def _session_header(samples: np.ndarray, labels: np.ndarray, floats: np.ndarray, *, task: int, classes: int,
                    n_train: int, epochs: int, lr: float, seed: int, ratio: float) -> str:
    rows = ",\n".join("    {" + ", ".join(str(int(v)) for v in s) + "}" for s in samples)
    return "\n".join([
        "#ifndef SESSION_H", "#define SESSION_H",
        f"#define TASK {task}u", f"#define N_CLASSES {classes}u", f"#define N_SAMPLES {len(samples)}u",
        f"#define N_TRAIN {n_train}u", f"#define EPOCHS {epochs}u", f"#define LR {_c_float(lr)}",
        f"#define SEED {seed}u", f"#define RATIO {_c_float(ratio)}",
        f"static const int8_t samples[N_SAMPLES][MICROT_INPUT_SIZE] = {{\n{rows}\n}};",
        "static const uint8_t labels[N_SAMPLES] = {" + ", ".join(str(int(v)) for v in labels) + "};",
        "static const float floats[MICROT_INPUT_SIZE] = {" + ", ".join(_c_float(v) for v in floats) + "};",
        "#endif", "",
    ])


def _write_program(folder: Path, header: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.c").write_text(USER_MAIN)
    (folder / "session.h").write_text(header)
    return folder


def _host_run(lib: Path, program: Path) -> dict:
    """Build the user's program with the library's .c files and -I to the library only; run it."""
    exe = program / "app"
    sources = sorted(str(p) for p in lib.glob("*.c"))
    sanitize = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    subprocess.run(["gcc", *STRICT, *sanitize, f"-I{lib}", f"-I{program}", str(program / "main.c"), *sources,
                    "-lm", "-o", str(exe)], check=True, capture_output=True, text=True, timeout=180)
    done = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return _parse(done.stdout)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split()]


def _parse(out: str) -> dict:
    lines = out.splitlines()
    result: dict = {"runs": [], "infers": [], "heads": {}}
    for line in lines:
        tag, _, rest = line.partition(" ")
        if tag == "STATUS":
            result["status"] = _ints(rest)
        elif tag == "RUN":
            m = re.fullmatch(r"(\d+) split (.*) part (.*) full (.*) counts (.*)", rest)
            assert m, line
            result["runs"].append({"split": _ints(m[2]), "part": _ints(m[3]), "full": _ints(m[4]),
                                   "counts": _ints(m[5])})
        elif tag == "UNTRAINED":
            result["untrained"] = int(rest)
        elif tag == "TRAIN":
            *floats, counter = rest.split()
            result["train"] = [float.fromhex(v) for v in floats] + [int(counter)]
        elif tag == "HEAD":
            which, nc, dim, *values = rest.split()
            nc, dim = int(nc), int(dim)
            vals = np.array([float.fromhex(v) for v in values], dtype=np.float32)
            result["heads"][int(which)] = (vals[: nc * dim].reshape(nc, dim), vals[nc * dim:])
        elif tag == "RATIO":
            result["threshold"] = float.fromhex(rest)
        elif tag == "INFER":
            f = rest.split()
            result["infers"].append({"sample": int(f[0]), "force": int(f[1]), "prediction": int(f[2]),
                                     "exit_stage": int(f[3]), "part": int(f[4]), "full": int(f[5]),
                                     "part_conf": float.fromhex(f[6]), "full_conf": float.fromhex(f[7]),
                                     "counts": _ints(" ".join(f[9:]))})
        elif tag == "QUANT":
            result["quant"] = _ints(rest.split(" ", 1)[1])
        elif tag == "REINIT":
            status, counts = rest.split(" counts ")
            result["reinit"] = (int(status), _ints(counts))
    return result


def _separable(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Class c lights up input byte c, which both the part features (bytes 0..3) and the full see.
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.integers(-30, 30, (n, INPUT)).astype(np.int8)
    x[np.arange(n), labels] = 90 + rng.integers(0, 30, n)
    return x, labels


def _project(root: Path) -> Path:
    return init_project(root, {"tasks": TASKS}).root


# ---------------------------------------------------------------- the toy model


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory) -> dict:
    project = _project(tmp_path_factory.mktemp("lib_toy") / "proj")
    write_toy_model(project / "compiled")
    summary = export_library(project, max_slots=64)
    return {"project": project, "lib": Path(summary["path"]), "summary": summary}


TOY_SESSION = {"task": 1, "classes": 3, "n_train": 36, "epochs": 8, "lr": 0.05, "seed": 7, "ratio": 0.5}


@pytest.fixture(scope="module")
def toy_run(toy_export, tmp_path_factory) -> dict:
    x, y = _separable(48, 3, 0)
    floats = np.concatenate([np.random.default_rng(4).normal(0, 2, INPUT - 4), [100.0, -100.0, 0.025, -0.075]])
    program = _write_program(tmp_path_factory.mktemp("user_toy"), _session_header(x, y, floats, **TOY_SESSION))
    return {"x": x, "y": y, "floats": floats.astype(np.float32), "program": program,
            "out": _host_run(toy_export["lib"], program)}


def test_export_layout_config_and_summary(toy_export):
    lib, summary = toy_export["lib"], toy_export["summary"]
    assert lib == toy_export["project"] / "lib" / "microt"
    names = {p.name for p in lib.iterdir()}
    assert names == set(summary["files"])
    runtime = {p.name for p in library.TEMPLATES.joinpath("runtime").glob("*.[ch]")}
    assert runtime | {"microt.h", "microt.c", "mdt_learn.c", "mdt_learn.h", "mdt_model.c", "mdt_model.h",
                      "mdt_graphs.h", "mdt_config.h", "library.json", "README.md"} <= names
    # No serial protocol code, no board layer, no main loop.
    assert not names & {"mdt_app.c", "mdt_protocol.c", "mdt_board.h"} and not any("board" in n for n in names)
    config = (lib / "mdt_config.h").read_text()
    for line in ("#define MDT_MAX_TASKS 2u", "#define MDT_MAX_CLASSES 4u", "#define MDT_MAX_SLOTS 64u"):
        assert line in config
    assert (summary["max_tasks"], summary["max_classes"], summary["max_slots"]) == (2, 4, 64)
    # The RAM figures by hand from the toy model's sizes (arena 48 holding the input, part 4, full 8).
    slot = PART + FULL + 1 + 2 + 2 + 4
    assert summary["slot_bytes"] == slot
    assert summary["ram"] == {"arena": 48, "buffers": PART + FULL + 1 + 8 + 8, "feature_store": 64 * slot,
                              "heads": 2 * (8 + 4 * 4 * (PART + FULL + 2)),
                              "trainer": 4 * FULL + 4 * 4 + 1 + 8 * (PART + FULL),
                              "kernels": library.KERNEL_STATIC_BYTES}
    assert summary["static_ram_bytes"] == sum(summary["ram"].values())
    assert summary["flash_model_bytes"] is None  # the toy model has no plan.json
    readme = (lib / "README.md").read_text()
    assert "real = 0.05 * (q - (-3))" in readme and "`blobs` (3 classes)" in readme
    assert "-mfpu=fpv4-sp-d16 -mfloat-abi=hard" in readme and "-O2" in readme and "lib_deps" in readme
    assert f"{summary['static_ram_bytes']:,} B" in readme
    lines = summary_lines(summary)
    assert lines[0] == f"exported the microt library to {lib} ({len(summary['files'])} files; include microt.h)"
    assert lines[1].startswith(f"static RAM {summary['static_ram_bytes']:,} B: arena 48 B, feature store 64 slots")


def test_library_json_is_a_valid_platformio_manifest(toy_export):
    from platformio.package.manifest.parser import ManifestParserFactory
    from platformio.package.manifest.schema import ManifestSchema

    path = toy_export["lib"] / "library.json"
    raw = json.loads(path.read_text())
    manifest = ManifestSchema().load_manifest(ManifestParserFactory.new_from_file(str(path)).as_dict())
    assert (manifest["name"], manifest["version"]) == ("microt", __version__)
    assert raw["build"]["flags"][0] == "-std=c99" and "-O2" in raw["build"]["flags"]
    assert raw["build"]["srcFilter"] == ["+<*.c>"] and raw["build"]["includeDir"] == "."
    assert manifest["headers"] == ["microt.h"]
    # What PlatformIO's library builder reads: the sources the filter selects are the library's .c files.
    assert {p.name for p in path.parent.glob("*.c")} >= {"microt.c", "mdt_learn.c", "mdt_model.c"}


def test_user_program_tensors_are_the_models(toy_run):
    out = toy_run["out"]
    # before any input / past the end / slot out of range / no such task / a flag that does not exist
    assert out["status"] == [NOT_READY, OUT_OF_RANGE, OUT_OF_RANGE, BAD_ARGUMENT, BAD_ARGUMENT]
    assert len(out["runs"]) == len(toy_run["x"])
    for run, sample in zip(out["runs"], toy_run["x"], strict=True):
        split, part, full = toy_outputs(sample)
        assert (run["split"], run["part"], run["full"]) == (split.tolist(), part.tolist(), full.tolist())
        assert run["counts"] == [7, 7, 0, 7, 0]  # one counter read apart; no classifiers in RUN
    # Floats are quantised as microt_deploy.export.quantize does it (half away from zero, saturated).
    want = quantize(toy_run["floats"], SCALES["input"][0], SCALES["input"][1])
    assert out["quant"] == toy_outputs(want)[0].tolist()
    assert out["untrained"] == NOT_READY


def test_user_program_learns_a_separable_problem_and_stages(toy_run):
    out, y = toy_run["out"], toy_run["y"]
    n_train = TOY_SESSION["n_train"]
    part_loss, part_acc, full_loss, full_acc, counter = out["train"]
    assert part_acc == 1.0 and full_acc == 1.0 and part_loss < 0.5 and full_loss < 0.5 and counter == 7
    staged = [r for r in out["infers"] if r["force"] == 0]
    forced = [r for r in out["infers"] if r["force"] == 1]
    assert [r["prediction"] for r in staged] == y[n_train:].tolist()
    assert [r["full"] for r in forced] == y[n_train:].tolist()
    exits = [r["exit_stage"] for r in staged]
    assert 0 < sum(exits) < len(exits)  # the median threshold lets some exit at the part model
    for s, f in zip(staged, forced, strict=True):
        assert s["exit_stage"] == (0 if s["part_conf"] >= out["threshold"] else 1)
        assert (f["prediction"], f["exit_stage"], f["part_conf"]) == (s["prediction"], s["exit_stage"], s["part_conf"])
        if s["exit_stage"] == 0:
            assert s["full"] == 0xFF and s["full_conf"] == 0.0 and s["counts"] == [7, 7, 7, 0, 0]
        else:
            assert s["prediction"] == s["full"] and s["counts"] == [7, 7, 7, 7, 7]
    assert out["reinit"] == (NOT_READY, [0, 0, 0, 0, 0])
    # numpy on the heads the program trained: the same predictions, and docs/protocol.md's quantile rule
    # on the calibration confidences gives its threshold.
    x = toy_run["x"]
    (wp, bp), (wf, bf) = out["heads"][0], out["heads"][1]
    part_q = np.stack([toy_outputs(s)[1] for s in x]).astype(np.float32)
    full_q = np.stack([toy_outputs(s)[2] for s in x]).astype(np.float32)
    part_logits = np.float32(SCALES["part"][0]) * (part_q - np.float32(SCALES["part"][1])) @ wp.T + bp
    full_logits = np.float32(SCALES["full"][0]) * (full_q - np.float32(SCALES["full"][1])) @ wf.T + bf
    e = np.exp(part_logits - part_logits.max(1, keepdims=True))
    conf = 1.0 / e.sum(1)
    calib = np.sort(conf[n_train:])
    k = int(np.float32(np.float32(1.0) - np.float32(TOY_SESSION["ratio"])) * np.float32(len(calib) - 1))
    assert out["threshold"] == pytest.approx(calib[k], rel=1e-5)
    assert [r["part"] for r in staged] == np.argmax(part_logits[n_train:], 1).tolist()
    assert [r["full"] for r in forced] == np.argmax(full_logits[n_train:], 1).tolist()
    np.testing.assert_allclose([r["part_conf"] for r in staged], conf[n_train:], rtol=1e-5)


def test_user_program_trains_the_same_floats_as_the_firmware(toy_run, device):
    """Our firmware over the serial protocol, same samples, labels, seed: the same heads, bit for bit."""
    x, y, out = toy_run["x"], toy_run["y"], toy_run["out"]
    s = TOY_SESSION
    task, n_train = s["task"], s["n_train"]
    for i, sample in enumerate(x):
        device.load_input(sample)
        device.store_features(i)
    device.set_labels(task, s["classes"], 0, y)
    trained = device.train(task, epochs=s["epochs"], lr=s["lr"], first_slot=0, n_slots=n_train, seed=s["seed"])
    assert [trained.part_loss, trained.part_accuracy, trained.full_loss, trained.full_accuracy] == out["train"][:4]
    for which in (0, 1):
        w, b = device.read_head(task, which)
        np.testing.assert_array_equal(out["heads"][which][0], w)
        np.testing.assert_array_equal(out["heads"][which][1], b)
    assert device.set_ratio(task, s["ratio"], n_train, len(x) - n_train) == out["threshold"]
    lib = iter(out["infers"])
    for sample in x[n_train:]:
        device.load_input(sample)
        for force in (False, True):
            got, want = device.infer(task, force_full=force), next(lib)
            assert (got.prediction, got.exit_stage, got.part_prediction) == (
                want["prediction"], want["exit_stage"], want["part"])
            assert (got.full_prediction if got.full_prediction is not None else 0xFF) == want["full"]
            assert (got.confidence, got.full_confidence) == (want["part_conf"], want["full_conf"])


def test_readme_snippet_compiles(toy_export, tmp_path):
    readme = (toy_export["lib"] / "README.md").read_text()
    snippet = re.search(r"```c\n(#include \"microt.h\".*?)```", readme, re.S)[1]
    (tmp_path / "snippet.c").write_text(snippet)
    done = subprocess.run(["gcc", *STRICT, f"-I{toy_export['lib']}", "-c", str(tmp_path / "snippet.c"), "-o",
                           str(tmp_path / "snippet.o")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- the MCU build


def _arm_objects(lib: Path, program: Path, cpu: list[str], out: Path) -> tuple[list[Path], Path]:
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        pytest.fail("arm-none-eabi-gcc is required (apt-get install gcc-arm-none-eabi)")
    out.mkdir(parents=True, exist_ok=True)
    objects = []
    for source in sorted(lib.glob("*.c")):
        obj = out / f"{source.stem}.o"
        done = subprocess.run([gcc, *STRICT, *cpu, "-ffunction-sections", "-fdata-sections", f"-I{lib}", "-c",
                               str(source), "-o", str(obj)], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        objects.append(obj)
    main = out / "main.o"
    done = subprocess.run([gcc, *STRICT, *cpu, f"-I{lib}", f"-I{program}", "-c", str(program / "main.c"), "-o",
                           str(main)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return objects, main


def _static_bytes(objects: list[Path]) -> int:
    """The sizes of every data / bss object in the objects (nm -S), alignment padding aside."""
    listing = subprocess.run(["arm-none-eabi-nm", "-S", *map(str, objects)], capture_output=True, text=True,
                             check=True).stdout
    total = 0
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "bBdD":
            total += int(parts[1], 16)
    return total


@pytest.mark.parametrize("core", sorted(CORTEX))
def test_user_program_builds_for_cortex_m_and_needs_the_reported_ram(toy_export, toy_run, tmp_path, core):
    objects, main = _arm_objects(toy_export["lib"], toy_run["program"], CORTEX[core], tmp_path)
    elf = tmp_path / "app.elf"
    done = subprocess.run(["arm-none-eabi-gcc", *CORTEX[core], "--specs=nosys.specs", "-Wl,--gc-sections",
                           str(main), *map(str, objects), "-lm", "-o", str(elf)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert elf.read_bytes()[:4] == b"\x7fELF"
    assert _static_bytes(objects) == toy_export["summary"]["static_ram_bytes"]


# ---------------------------------------------------------------- refusals and atomicity


def test_refuses_a_project_without_compiled_graphs_in_one_line(tmp_path):
    project = _project(tmp_path / "proj")
    before = sorted(p.name for p in project.iterdir())
    with pytest.raises(MicrotError) as err:
        export_library(project)
    text = str(err.value)
    assert "\n" not in text and text.startswith("no compiled model (mdt_model.h/.c) in ")
    assert "microt-deploy compile" in text
    assert sorted(p.name for p in project.iterdir()) == before  # no lib/, nothing half-written
    write_toy_model(project / "compiled")
    with pytest.raises(MicrotError, match=r"--max-slots 0 out of range; use 1\.\.65535 feature slots"):
        export_library(project, max_slots=0)
    assert not (project / "lib").exists()


def test_never_replaces_a_foreign_folder_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    project = _project(tmp_path / "proj")
    write_toy_model(project / "compiled")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(MicrotError, match="is not a microt library export"):
        export_library(project, mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # A failure half way through the writing leaves neither the folder nor a temporary one.
    out = tmp_path / "out" / "microt"

    def broken(*_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(library, "graphs_header", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_library(project, out)
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.undo()
    # An earlier export is replaced whole (a new slot count).
    first = export_library(project, out, max_slots=16)
    second = export_library(project, out, max_slots=32)
    assert first["path"] == second["path"] == str(out)
    assert "#define MDT_MAX_SLOTS 32u" in (out / "mdt_config.h").read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["microt"]


# ---------------------------------------------------------------- a really compiled model


@pytest.fixture(scope="module")
def real_export(tmp_path_factory) -> dict:
    from tests.targets.split_model import build_split_model, compile_split_model

    root = tmp_path_factory.mktemp("lib_real")
    project = _project(root / "proj")
    paths = build_split_model(root / "export")
    plan = compile_split_model(paths, project / "compiled")
    summary = export_library(project, root / "microt_lib", max_slots=32)
    return {"paths": paths, "plan": plan, "summary": summary, "lib": Path(summary["path"]), "root": root}


def test_real_model_library_is_tflite_bit_exact_and_stages(real_export):
    from tests.targets.split_model import reference_chain

    x = np.random.default_rng(1).integers(-128, 128, (24, 8 * 8 * 3), dtype=np.int8)
    y = np.arange(24) % 3
    session = {"task": 0, "classes": 3, "n_train": 16, "epochs": 5, "lr": 0.05, "seed": 3, "ratio": 0.5}
    program = _write_program(real_export["root"] / "user",
                             _session_header(x, y, np.linspace(-3, 3, 192), **session))
    out = _host_run(real_export["lib"], program)
    for run, sample in zip(out["runs"], x, strict=True):
        split, part, full = reference_chain(real_export["paths"], sample)
        assert (run["split"], run["part"], run["full"]) == (split.tolist(), part.tolist(), full.tolist())
    assert np.isfinite(out["train"][0]) and 0.0 <= out["threshold"] <= 1.0
    for r in out["infers"]:
        assert r["exit_stage"] == (0 if r["part_conf"] >= out["threshold"] else 1)
    summary = real_export["summary"]
    assert summary["flash_model_bytes"] == real_export["plan"]["const_bytes"] > 0
    # the arena array the compiled header declares: the plan's peak, rounded up to the arena alignment
    header = (real_export["lib"] / "mdt_model.h").read_text()
    assert summary["arena_bytes"] == int(re.search(r"#define MDT_ARENA_SIZE (\d+)", header)[1])
    assert 0 <= summary["arena_bytes"] - real_export["plan"]["arena_bytes"] < 16
    assert '#define mdt_trunk_run trunk_run' in (real_export["lib"] / "mdt_graphs.h").read_text()
    objects, _ = _arm_objects(real_export["lib"], program, CORTEX["m4f"], real_export["root"] / "arm")
    assert _static_bytes(objects) == summary["static_ram_bytes"]
