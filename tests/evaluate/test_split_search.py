"""`microt-deploy split-search`: the head trainer against the firmware's own, the choice against a brute
force, bad cuts refused in one line, and (slow) a whole search on a tiny trained project: table, JSON,
plot, figures recomputed from the table, microt.toml updated, the trained cut's features and instructions
equal to the project's own export and firmware, caches reused, the reverse criterion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from microt_deploy.errors import MicrotError
from microt_deploy.evaluate import split_search
from microt_deploy.evaluate.host_train import train_heads

CLI = [sys.executable, "-m", "microt_deploy.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- fast


def test_parse_cuts_lists_ranges_and_refusals():
    assert split_search.parse_cuts(None, 7) == [1, 2, 3, 4, 5, 6]
    assert split_search.parse_cuts("all", 4) == [1, 2, 3]
    assert split_search.parse_cuts("2-4,6, 3", 7) == [2, 3, 4, 6]
    for text, match in (("7", "cut 7 is outside 1..6 for the 7-block backbone"), ("0-2", "cut 0 is outside 1..6"),
                        ("4-2", "runs backwards"), ("x", "'x' is not a cut number"), (",", "names no cut")):
        with pytest.raises(MicrotError, match=match):
            split_search.parse_cuts(text, 7)
    assert split_search.block_count({"backbone": "mcunet-in3"}) == 18
    assert split_search.block_count({"blocks": [[1, 8, 1, 3]] * 5}) == 5


@pytest.fixture(scope="module")
def tiny_untrained(tmp_path_factory) -> Path:
    from microt_deploy.project import init_project

    from ..model.tiny import tiny_config

    root = tmp_path_factory.mktemp("split_bad") / "p"
    init_project(root, tiny_config())
    return root


@pytest.mark.parametrize(("cuts", "bad"), [("3", 3), ("0", 0), ("1-5", 5)])
def test_a_cut_out_of_range_is_one_line_and_a_non_zero_exit(tiny_untrained: Path, cuts: str, bad: int):
    before = (tiny_untrained / "microt.toml").read_text()
    res = run_cli("split-search", "-p", str(tiny_untrained), "--cuts", cuts)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"cut {bad} is outside 1..2 for the 3-block backbone" in lines[0]
    assert "pass cuts in 1..2" in lines[0]
    assert not (tiny_untrained / "split_search").exists()
    assert (tiny_untrained / "microt.toml").read_text() == before


def test_usage_errors_before_any_work(tiny_untrained: Path):
    res = run_cli("split-search", "-p", str(tiny_untrained))
    assert res.returncode == 2 and "no trained extractor" in res.stderr and "microt-deploy train" in res.stderr
    res = run_cli("split-search", "-p", str(tiny_untrained), "--max-accuracy-loss", "1%", "--min-saving", "10%")
    assert res.returncode == 2 and "pass one of them" in res.stderr
    res = run_cli("split-search", "-p", str(tiny_untrained), "--task", "nope")
    assert res.returncode == 2 and "--task 'nope' is not one of the project's tasks (digits, loops)" in res.stderr
    res = run_cli("split-search", "-p", str(tiny_untrained), "--ratio", "1.5")
    assert res.returncode == 2 and "outside [0, 1]" in res.stderr


def _train_on_firmware(tmp_path: Path, xs: np.ndarray, labels: np.ndarray, n_classes: int, epochs: int,
                       lr: float, seed: int) -> tuple[list, object]:
    """The firmware's own mdt_train (host build, toy graphs) on the features of the inputs ``xs``:
    (the two heads read back, the TRAIN answer)."""
    from microt_deploy.boards import load_board
    from microt_deploy.link.device import Device
    from microt_deploy.targets import build, launch, render_firmware
    from tests.firmware.toy_model import write_toy_model

    board = load_board("host")
    render_firmware(write_toy_model(tmp_path / "compiled"), board, tmp_path / "fw",
                    {"max_tasks": 2, "max_classes": 8, "max_slots": 64})
    image = build(board, tmp_path / "fw").image
    with launch(board, image, limit_s=120) as port:
        device = Device(port, timeout=5.0, long_timeout=30.0)
        for i, x in enumerate(xs):
            device.load_input(x.tobytes())
            device.store_features(i)
        device.set_labels(0, n_classes, 0, labels.tobytes())
        answer = device.train(0, epochs=epochs, lr=lr, first_slot=0, n_slots=len(xs), seed=seed)
        heads = [device.read_head(0, 0), device.read_head(0, 1)]
        device.exit(0)
    return heads, answer


def _toy_features(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from tests.firmware.toy_model import toy_outputs

    return np.stack([toy_outputs(x)[1] for x in xs]), np.stack([toy_outputs(x)[2] for x in xs])


def _toy_params() -> list[dict]:
    from tests.firmware.toy_model import SCALES

    return [{"scale": SCALES[k][0], "zero_point": SCALES[k][1]} for k in ("part", "full")]


def test_host_trainer_equals_the_firmware_trainer(tmp_path: Path):
    """The oracle: the firmware's own mdt_train (host build, toy graphs) on the same stored features."""
    rng = np.random.default_rng(3)
    xs = rng.integers(-60, 60, size=(48, 16), dtype=np.int8)
    labels = ((xs[:, 0].astype(int) + xs[:, 9] > 0).astype(np.uint8) + (xs[:, 2] > 20)).astype(np.uint8)
    epochs, lr, seed = 12, 0.05, 7
    on_device, _ = _train_on_firmware(tmp_path, xs, labels, 3, epochs, lr, seed)
    on_host = train_heads(*_toy_features(xs), labels, 3, *_toy_params(), epochs, lr, seed)
    for (w_dev, b_dev), (w_host, b_host) in zip(on_device, on_host, strict=True):
        assert w_dev.shape == w_host.shape and np.abs(w_dev).max() > 0.05  # trained, not zeros
        np.testing.assert_allclose(w_host, w_dev, rtol=0, atol=1e-5)  # float32 rounding, not the algorithm
        np.testing.assert_allclose(b_host, b_dev, rtol=0, atol=1e-5)


def _two_step_inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features as a briefly trained backbone gives them: the class moves one feature by two int8 steps
    on a large common value (96 / 98 / 100), beside a constant feature and two class-blind ones."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = np.zeros((n, 16), np.int8)
    x[:, 0] = 96 + 2 * y
    x[:, 1] = rng.integers(40, 45, n)
    x[:, 2] = rng.integers(-20, 21, n)
    x[:, 3] = 100
    x[:, 8:] = x[:, :8]  # the toy rest halves and adds: full[0] = x[0]
    return x, y.astype(np.uint8)


def test_firmware_trainer_learns_features_that_move_by_two_steps(tmp_path: Path):
    """Plain SGD on the dequantised features (9.4 / 9.6 / 9.8 beside 4.0 and +-2) stays at chance in 30
    epochs (measured: 32 % on held-out samples); standardised per feature over the training slots, the
    heads separate the classes. Oracle: the labels, by construction; held-out accuracy through the heads
    read back, evaluated by numpy on the dequantised features (the fold must hold for that)."""
    from microt_deploy.evaluate import simulate

    xs, labels = _two_step_inputs(60, 1)
    held_out, y_held = _two_step_inputs(60, 2)
    (part_head, full_head), answer = _train_on_firmware(tmp_path, xs, labels, 3, 30, 0.05, 7)
    assert answer.part_accuracy >= 0.95 and answer.full_accuracy >= 0.95, answer
    params = _toy_params()
    part, full = _toy_features(held_out)
    sim = simulate.simulate_heads(part, full, {"part_features": params[0], "full_features": params[1]},
                                  part_head, full_head)
    assert np.mean(sim.part_pred == y_held) >= 0.95 and np.mean(sim.full_pred == y_held) >= 0.95
    on_host = train_heads(*_toy_features(xs), labels, 3, *params, 30, 0.05, 7)
    for (w_dev, b_dev), (w_host, b_host) in zip((part_head, full_head), on_host, strict=True):
        np.testing.assert_allclose(w_host, w_dev, rtol=0, atol=1e-4 * max(1.0, float(np.abs(w_dev).max())))
        np.testing.assert_allclose(b_host, b_dev, rtol=0, atol=1e-4 * max(1.0, float(np.abs(b_dev).max())))


def _entries(rng: np.random.Generator, n: int) -> list[dict]:
    return [{"cut": k + 1, "saving": float(rng.uniform(0, 0.4)), "accuracy_loss": float(rng.uniform(-0.02, 0.05)),
             "staged_accuracy": float(rng.uniform(0.5, 1.0))} for k in range(n)]


def test_choice_is_the_best_within_the_criterion_by_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cuts = _entries(rng, int(rng.integers(1, 9)))
        limit = float(rng.uniform(0, 0.04))
        chosen = split_search.choose(cuts, limit, None)
        ok = [c for c in cuts if c["accuracy_loss"] <= limit]
        if not ok:
            assert chosen is None
            continue
        best = next(c for c in cuts if c["cut"] == chosen)
        assert best["accuracy_loss"] <= limit and best["feasible"]
        assert not any(c["saving"] > best["saving"] for c in ok)
        floor = float(rng.uniform(0, 0.4))
        chosen = split_search.choose(cuts, None, floor)
        ok = [c for c in cuts if c["saving"] >= floor]
        if not ok:
            assert chosen is None
            continue
        best = next(c for c in cuts if c["cut"] == chosen)
        assert best["saving"] >= floor and not any(c["staged_accuracy"] > best["staged_accuracy"] for c in ok)


# ---------------------------------------------------------------- slow: a whole search on a tiny project


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    from microt_deploy.model.train import train_project
    from microt_deploy.project import init_project

    from ..model.tiny import tiny_config

    root = tmp_path_factory.mktemp("split") / "p"
    project = init_project(root, tiny_config())  # 3 blocks, trained with the cut after block 2
    train_project(project)
    before = (root / "microt.toml").read_text()
    res = run_cli("split-search", "-p", str(root))
    # 0: a cut within one point; 1: none (a tiny model's accuracy on 20 samples moves in 5-point steps)
    assert res.returncode in (0, 1), res.stderr
    result = json.loads((root / "split_search" / "search.json").read_text())
    return root, result, res, before


@pytest.mark.slow
def test_search_writes_table_json_plot_and_the_choice(searched):
    from microt_deploy.project import open_project

    root, result, res, before = searched
    assert [c["cut"] for c in result["cuts"]] == [1, 2] and result["trained_cut"] == 2
    assert result["ratio"] == 0.5 and result["criterion"] == {"max_accuracy_loss": 0.01}
    assert "split search at stage-decision ratio 0.5" in res.stdout and "part-head instr" in res.stdout
    assert (root / "split_search" / "split_search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if result["chosen"] is None:  # no cut within one point: said in one line, exit 1, microt.toml untouched
        assert res.returncode == 1
        assert res.stderr.strip().splitlines()[-1].startswith("error: no cut keeps the accuracy loss within 1 pp")
        assert all(any(t["full_accuracy"] - t["staged_accuracy"] > 0.01 for t in c["tasks"].values())
                   for c in result["cuts"])
        assert (root / "microt.toml").read_text() == before
        return
    assert res.returncode == 0, res.stderr
    # the choice: within the limit, and no cut within it saves more
    chosen = next(c for c in result["cuts"] if c["cut"] == result["chosen"])
    assert all(t["full_accuracy"] - t["staged_accuracy"] <= 0.01 + 1e-9 for t in chosen["tasks"].values())
    within = [c for c in result["cuts"] if all(t["full_accuracy"] - t["staged_accuracy"] <= 0.01 + 1e-9
                                               for t in c["tasks"].values())]
    assert max(c["saving"] for c in within) == chosen["saving"]
    assert open_project(root).config["model"]["split_block"] == result["chosen"]
    assert f"model.split_block = {result['chosen']} (was 2)" in res.stdout or result["chosen"] == 2
    if result["chosen"] != 2:
        assert "run `microt-deploy train`" in res.stdout


@pytest.mark.slow
def test_predictions_recomputed_from_the_table(searched):
    from microt_deploy.boards import load_board
    from microt_deploy.model.backbone import part_mac_share
    from microt_deploy.project import open_project

    root, result, _, _ = searched
    board = load_board("qemu_mps2_an386")
    config = open_project(root).config
    n_calib = result["samples"]["calib"]
    for c in result["cuts"]:
        i = c["instructions"]
        assert all(v > 0 for v in i.values()) and c["full_instructions"] == i["trunk"] + i["rest"]
        assert c["trunk_mac_share"] == pytest.approx(
            part_mac_share({**config["model"], "split_block": c["cut"]}), abs=1e-9)
        for t in c["tasks"].values():
            staged = i["trunk"] + i["part_head"] + (1 - t["exit_rate"]) * i["rest"]
            assert t["saving"] == pytest.approx(1 - staged / (i["trunk"] + i["rest"]), abs=1e-12)
            assert t["energy_mj"] == pytest.approx(board.energy_mj(staged), rel=1e-12)
            # the device's threshold rule: at least n - trunc((1 - r)(n - 1)) calibration samples exit
            k = int(np.float32(1 - np.float32(result["ratio"])) * np.float32(n_calib - 1))
            assert round(t["exit_rate"] * n_calib) >= n_calib - k
            assert t["accuracy_loss"] == pytest.approx(t["full_accuracy"] - t["staged_accuracy"])
        assert c["saving"] == pytest.approx(np.mean([t["saving"] for t in c["tasks"].values()]))
        assert c["accuracy_loss"] == max(t["accuracy_loss"] for t in c["tasks"].values())
    # a deeper cut keeps more in the trunk: it saves less
    assert result["cuts"][0]["instructions"]["trunk"] < result["cuts"][1]["instructions"]["trunk"]


@pytest.mark.slow
def test_trained_cut_equals_the_projects_own_export_and_firmware(searched):
    """The oracle: the project's own stages at the cut it was trained at (export, compile, build, the
    device's per-graph counters that eval reads) give the very features and instructions the search took."""
    from rich.console import Console

    from microt_deploy import pipeline
    from microt_deploy.boards import load_board
    from microt_deploy.export import export_project, quantize_input, reference_outputs
    from microt_deploy.model.data import load_splits
    from microt_deploy.project import open_project

    root, result, _, _ = searched
    project = open_project(root)
    project.config["model"]["split_block"] = 2  # the search may have written another cut
    export_project(project)
    info = json.loads((project.export_dir / "export.json").read_text())
    x = quantize_input(load_splits(project.config)["calib"].images, info)
    own = reference_outputs(project.export_dir, x)
    cut2 = reference_outputs(root / "split_search" / "cut_2" / "export", x)
    for key in ("split", "part_features", "full_features"):
        np.testing.assert_array_equal(own[key], cut2[key])
    project.save()
    quiet = Console(stderr=True, quiet=True)
    pipeline.compile(root, quiet)
    pipeline.build(root, "qemu_mps2_an386", quiet)
    runs = []
    with pipeline.open_device(open_project(root), load_board("qemu_mps2_an386"), None) as device:
        for sample in x[:split_search.MEASURE_SAMPLES]:  # the calibration samples the search ran
            device.load_input(sample.tobytes())
            runs.append(device.run_graphs())
        device.exit(0)
    counts = {g: float(np.mean([r[g] for r in runs])) for g in ("trunk", "part_head", "rest")}
    key = json.loads((root / "split_search" / "cut_2" / "measure.json").read_text())["key"]
    from microt_deploy.firmware.render import TEMPLATES

    own_c = {p.name: split_search._sha256(p) for p in sorted(project.compiled_dir.glob("mdt_model.*"))}
    same_c = key["compiled"] == own_c
    if same_c and key["firmware_templates"] == split_search._tree_digest(TEMPLATES):
        assert counts == result["cuts"][1]["instructions"]  # the same C: the very counts
    assert counts == pytest.approx(result["cuts"][1]["instructions"], rel=2e-3)  # firmware sources edited meanwhile
    assert counts["rest"] > 0 and counts["trunk"] > counts["part_head"] > 0


@pytest.mark.slow
def test_rerun_reuses_the_cuts_and_the_reverse_criterion(searched):
    root, first, _, _ = searched
    before = (root / "microt.toml").read_text()
    keys = {k: json.loads((root / "split_search" / f"cut_{k}" / "measure.json").read_text())["key"] for k in (1, 2)}
    res = run_cli("split-search", "-p", str(root), "--min-saving", "0", "--no-write", "--cuts", "1-2")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("export reused") == 2
    result = json.loads((root / "split_search" / "search.json").read_text())
    for k in (1, 2):  # re-measured only when the generated C or the firmware sources changed meanwhile
        key = json.loads((root / "split_search" / f"cut_{k}" / "measure.json").read_text())["key"]
        if key == keys[k]:
            assert f"cut {k}: instructions reused" in res.stderr and f"cut {k}: build" not in res.stderr
            assert result["cuts"][k - 1]["instructions"] == first["cuts"][k - 1]["instructions"]
    best = max(result["cuts"], key=lambda c: (c["staged_accuracy"], c["saving"]))
    assert result["chosen"] == best["cut"] and result["criterion"] == {"min_saving": 0.0}
    assert "microt.toml unchanged (--no-write)" in res.stdout
    assert (root / "microt.toml").read_text() == before
    res = run_cli("split-search", "-p", str(root), "--min-saving", "99%")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no cut saves 99.0% at ratio 0.5") and "--min-saving" in lines[-1]
    assert (root / "microt.toml").read_text() == before
