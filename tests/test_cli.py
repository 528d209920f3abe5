"""The CLI's contract with users: one-line errors, non-zero exits, no half-written outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "microt_deploy.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_unknown_board_is_one_line_naming_the_known_ones(tmp_path: Path) -> None:
    res = run("init", str(tmp_path / "p"), "--board", "nucleo_nope")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "unknown board 'nucleo_nope'" in lines[0]
    assert "nucleo_l4r5zi" in lines[0] and "qemu_mps2_an386" in lines[0]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "p" / "microt.toml").exists()


def test_init_writes_config_with_choices(tmp_path: Path) -> None:
    res = run("init", str(tmp_path / "p"), "--board", "nucleo_l4r5zi", "--ratio", "0.3")
    assert res.returncode == 0, res.stderr
    import tomllib

    cfg = tomllib.loads((tmp_path / "p" / "microt.toml").read_text())
    assert cfg["device"]["board"] == "nucleo_l4r5zi"
    assert cfg["device"]["ratio"] == 0.3
    assert cfg["tasks"][0]["name"] == "digits"


def test_ratio_out_of_range_is_refused(tmp_path: Path) -> None:
    res = run("init", str(tmp_path / "p"), "--ratio", "1.5")
    assert res.returncode == 2
    assert "outside [0, 1]" in res.stderr


@pytest.mark.parametrize("verb", ["train", "export", "compile", "build", "eval", "report"])
def test_stage_outside_a_project_says_how_to_start(tmp_path: Path, verb: str) -> None:
    res = run(verb, "--project", str(tmp_path / "nothing"))
    assert res.returncode == (4 if verb == "eval" else 2), res.stderr
    assert "not a microt-deploy project" in res.stderr and "microt-deploy init" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_stage_before_its_inputs_names_the_missing_step(tmp_path: Path) -> None:
    assert run("init", str(tmp_path / "p")).returncode == 0
    res = run("compile", "--project", str(tmp_path / "p"))
    assert res.returncode == 2
    assert "microt-deploy export" in res.stderr
    res = run("build", "--project", str(tmp_path / "p"))
    assert res.returncode == 2
    assert "microt-deploy compile" in res.stderr
    assert not (tmp_path / "p" / "compiled").exists()


def test_corrupt_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "microt.toml").write_text("[model\nbroken")
    res = run("compile", "--project", str(tmp_path))
    assert res.returncode == 2
    assert "not valid TOML" in res.stderr


def test_boards_lists_every_board_file() -> None:
    res = subprocess.run([*CLI, "boards"], capture_output=True, text=True, timeout=60,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    for board in ("qemu_mps2_an386", "host", "nucleo_l4r5zi", "nucleo_h7a3zi_q", "disco_f746ng", "esp32dev"):
        assert board in res.stdout


def test_compile_patch_stages_option_and_key(tmp_path: Path) -> None:
    """`compile --patch-stages` and `[compile] patch_stages`: a bad value is one line before anything is
    written; the default "fit" takes no patch stage for a model that fits the board."""
    import json

    from tests.targets.split_model import build_split_model

    project = tmp_path / "p"
    assert run("init", str(project)).returncode == 0
    build_split_model(project / "export")
    bad = run("compile", "--project", str(project), "--patch-stages", "fits")
    assert bad.returncode == 2, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "--patch-stages = 'fits' is neither" in bad.stderr
    assert not (project / "compiled").exists()
    ok = run("compile", "--project", str(project))
    assert ok.returncode == 0, ok.stderr
    plan = json.loads((project / "compiled" / "plan.json").read_text())
    assert not any(la["patch_stage"] for g in plan["graphs"] for la in g["layers"])
    assert "does not fit" not in ok.stdout + ok.stderr
    cfg = (project / "microt.toml").read_text()
    assert 'patch_stages = "fit"' in cfg  # init writes the key at its default
    (project / "microt.toml").write_text(cfg.replace('patch_stages = "fit"', 'patch_stages = "always"'))
    res = run("compile", "--project", str(project))
    assert res.returncode == 2 and "compile.patch_stages" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
