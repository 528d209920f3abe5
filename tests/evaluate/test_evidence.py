"""`microt-deploy evidence`: bad input refused in one line, the labels-only extractor trained without ever
touching a teacher, and (slow) the whole table on a tiny project: three different extractors, every figure
recomputed from the per-sample predictions and the measured instructions, the outputs reused on a rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from microt_deploy.errors import MicrotError
from microt_deploy.evaluate import evidence

CLI = [sys.executable, "-m", "microt_deploy.cli"]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- fast


def test_parse_ratios_accepts_fractions_and_refuses_the_rest():
    assert evidence.parse_ratios(None) == [0.3, 0.5, 0.7]
    assert evidence.parse_ratios("0.7, 0.3,0.5,0.3") == [0.3, 0.5, 0.7]
    for text, match in (("0", "ratio 0 is outside \\(0, 1\\)"), ("0.5,1", "ratio 1 is outside"),
                        ("-0.2", "ratio -0.2 is outside"), ("x", "'x' is not a number"), (",", "names no ratio"),
                        ("nan", "outside")):
        with pytest.raises(MicrotError, match=match):
            evidence.parse_ratios(text)


def test_variant_configs_override_only_training():
    from microt_deploy.project import DEFAULT_CONFIG

    base = DEFAULT_CONFIG
    t = base["train"]
    un = evidence.variant_config(base, "unoptimized")
    assert un["train"]["labels_only"] is True and un["train"]["l6_weight"] == 0.0
    assert un["train"]["joint_epochs"] == t["sskd_epochs"] + t["joint_epochs"]
    assert un["train"]["sskd_epochs"] == un["train"]["teacher_epochs"] == 0
    assert evidence.variant_config(base, "sskd")["train"]["joint_epochs"] == 0
    assert evidence.variant_config(base, "joint")["train"] == t
    short = evidence.variant_config(base, "unoptimized", epochs=2)["train"]
    assert short["joint_epochs"] == 4 and short["teacher_epochs"] == 0
    assert evidence.variant_config(base, "joint", epochs=2)["train"]["teacher_epochs"] == 2
    for v in evidence.VARIANTS:
        cfg = evidence.variant_config(base, v)
        assert {k: cfg[k] for k in cfg if k != "train"} == {k: base[k] for k in base if k != "train"}
    assert "labels_only" not in base["train"]  # the project's config is not modified


@pytest.fixture(scope="module")
def tiny_untrained(tmp_path_factory) -> Path:
    from microt_deploy.project import init_project

    from ..model.tiny import tiny_config

    root = tmp_path_factory.mktemp("evidence_bad") / "p"
    init_project(root, tiny_config())
    return root


@pytest.mark.parametrize(("args", "message"), [
    (("--ratios", "0.3,1.5"), "stage-decision ratio 1.5 is outside (0, 1)"),
    (("--ratios", "0"), "stage-decision ratio 0 is outside (0, 1)"),
    (("--ratios", "half"), "--ratios: 'half' is not a number"),
])
def test_bad_ratios_are_one_line_and_a_non_zero_exit(tiny_untrained: Path, args: tuple[str, ...], message: str):
    res = run_cli("evidence", "-p", str(tiny_untrained), *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert message in lines[0]
    assert not (tiny_untrained / "evidence").exists()


def test_a_missing_project_is_one_line_and_a_non_zero_exit(tmp_path: Path):
    missing = tmp_path / "no-such-project"
    res = subprocess.run([sys.executable, "-m", "microt_deploy.evaluate.evidence", "-p", str(missing)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"project folder {missing} does not exist" in lines[0]
    assert not missing.exists()


def test_labels_only_training_never_builds_or_calls_a_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A teacher file that does not exist, and every way train.py has to build, load, cache or call a
    teacher made to fail: labels-only training still runs, on L4 and L6 alone."""
    from microt_deploy.model import train as train_mod
    from microt_deploy.project import init_project

    from ..model.tiny import tiny_config

    def refuse(*_a, **_k):
        raise AssertionError("a teacher was touched")

    for name in ("_builtin_teacher", "load_external_teacher", "cached_teacher_embeddings", "train_ssl_convnet",
                 "ConvNetTeacher", "Targets", "teacher_identity", "standardise", "standardised_targets",
                 "embed_images"):
        monkeypatch.setattr(train_mod, name, refuse)
    cfg = tiny_config(labels_only=True, joint_epochs=2)
    cfg["model"]["teacher"] = f"torchscript:{tmp_path / 'missing-teacher.pt'}"
    project = init_project(tmp_path / "p", cfg)
    summary = train_mod.train_project(project, fresh=True)
    assert summary["teacher"]["spec"] is None and summary["teacher"]["labels_only"] is True
    assert summary["sskd"]["losses"] == [] and summary["sskd"]["skipped"] is True
    assert [set(epoch) for epoch in summary["joint"]["losses"]] == [{"total", "l4", "l6"}] * 2
    assert not (project.checkpoints / "teacher_cache").exists()
    assert (project.checkpoints / "extractor.pt").is_file()


# ---------------------------------------------------------------- slow: the whole table on a tiny project


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory) -> tuple[Path, dict]:
    from microt_deploy.project import init_project

    from ..model.tiny import tiny_config

    root = tmp_path_factory.mktemp("evidence") / "p"
    cfg = tiny_config()
    cfg["data"]["max_per_class"] = 14  # 140 images: 35 test samples, 21 calibration samples
    cfg["device"].update({"train_epochs": 10})
    init_project(root, cfg)
    out = root.parent / "out.json"
    res = run_cli("evidence", "-p", str(root), "--ratios", "0.3,0.5,0.7", "--json", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return root, json.loads(out.read_text()) | {"_stdout": res.stdout, "_md": out.with_suffix(".md").read_text()}


@pytest.mark.slow
def test_three_different_extractors_and_the_labels_only_one_without_a_teacher(evidence_run):
    import torch

    root, result = evidence_run
    assert list(result["variants"]) == list(evidence.VARIANTS)
    weights = {}
    for v in evidence.VARIANTS:
        blob = torch.load(root / "evidence" / v / "checkpoints" / "extractor.pt", weights_only=True)
        weights[v] = blob["state_dict"]
    for a, b in (("unoptimized", "sskd"), ("unoptimized", "joint"), ("sskd", "joint")):
        floats = [k for k in weights[a] if weights[a][k].is_floating_point()]
        assert any(not torch.equal(weights[a][k], weights[b][k]) for k in floats), (a, b)
    assert not (root / "checkpoints").exists()  # the project's own checkpoints are never written
    trained = {v: json.loads((root / "evidence" / v / "checkpoints" / "train.json").read_text())
               for v in evidence.VARIANTS}
    assert trained["unoptimized"]["teacher"]["spec"] is None and trained["unoptimized"]["sskd"]["losses"] == []
    assert all(set(e) == {"total", "l4", "l6"} for e in trained["unoptimized"]["joint"]["losses"])
    assert len(trained["unoptimized"]["joint"]["losses"]) == 2 + 3  # sskd + joint epochs of the schedule
    assert not (root / "evidence" / "unoptimized" / "checkpoints" / "teacher_cache").exists()
    for v in ("sskd", "joint"):  # the others did train the builtin teacher and distil it
        assert trained[v]["teacher"]["spec"] == "builtin:ssl-convnet" and len(trained[v]["teacher"]["losses"]) == 2
        assert len(trained[v]["sskd"]["losses"]) == 2
    assert trained["sskd"]["joint"]["losses"] == [] and len(trained["joint"]["joint"]["losses"]) == 3


@pytest.mark.slow
def test_every_figure_recomputed_from_predictions_and_instructions(evidence_run):
    _root, result = evidence_run
    e = result["energy"]
    instr = e["instructions"]
    assert all(instr[g] > 0 for g in ("trunk", "part_head", "rest"))
    full = instr["trunk"] + instr["rest"]
    assert e["full_instructions"] == pytest.approx(full)
    n_test = result["samples"]["test"]
    for variant in result["variants"].values():
        for task in variant["tasks"].values():
            s = task["samples"]
            y, pp, pc, fp = (np.asarray(s[k]) for k in ("labels", "part_pred", "part_conf", "full_pred"))
            assert len(y) == n_test
            assert task["part_accuracy"] == pytest.approx(np.mean(pp == y))
            assert task["full_accuracy"] == pytest.approx(np.mean(fp == y))
            calib = np.sort(np.asarray(s["calib_part_conf"]))
            assert len(calib) == result["samples"]["calib"]
            for key, row in task["ratios"].items():
                r = float(key)
                assert row["threshold"] == calib[int(np.float32(1 - r) * np.float32(len(calib) - 1))]
                exits = pc >= row["threshold"]
                staged = np.where(exits, pp, fp)
                assert row["staged_accuracy"] == pytest.approx(np.mean(staged == y))
                assert row["exit_rate"] == pytest.approx(np.mean(exits))
                staged_instr = instr["trunk"] + instr["part_head"] + (1 - np.mean(exits)) * instr["rest"]
                assert row["staged_instructions"] == pytest.approx(staged_instr)
                assert row["saving"] == pytest.approx(1 - staged_instr / full)
    for name, head in result["headline"].items():
        for key, h in head["ratios"].items():
            ours = result["variants"]["joint"]["tasks"][name]["ratios"][key]["staged_accuracy"]
            base = result["variants"]["unoptimized"]["tasks"][name]["ratios"][key]["staged_accuracy"]
            assert h["accuracy_gain"] == pytest.approx(ours - base)
        assert head["accuracy_gain_at_0.5"] == head["ratios"]["0.5"]["accuracy_gain"]
        assert head["energy_saving_best"] == max(h["saving"] for h in head["ratios"].values())
    assert result["paper"]["accuracy_gain_at_0.5"] == 0.0591 and result["paper"]["energy_saving_best"] == 0.2913
    for text in (result["_md"], result["_stdout"]):
        assert "+5.91" in text and "14.47 %" in text and "+9.87" in text and "29.13 %" in text
        assert "staged @0.5" in text and "no package on the registries" in text


@pytest.mark.slow
def test_a_rerun_reuses_every_variant(evidence_run, tmp_path: Path):
    root, first = evidence_run
    out = tmp_path / "again.json"
    res = run_cli("evidence", "-p", str(root), "--json", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.count("reusing") == 3, res.stderr
    again = json.loads(out.read_text())
    # (the instructions are re-measured only if the compiled C or firmware_templates/ changed: split-search's cache)
    for v in evidence.VARIANTS:
        assert again["seconds"][v]["reused"] is True and first["seconds"][v]["reused"] is False
        assert again["seconds"][v]["train_s"] == first["seconds"][v]["train_s"]
        assert again["variants"][v]["tasks"] == first["variants"][v]["tasks"]
