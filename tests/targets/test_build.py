"""Rendering and building the firmware around a real compiled model, for the host and the
emulated Cortex-M4F; memory use and the one-line errors for a model that does not fit."""

import dataclasses
import json
import re
import shutil

import pytest

from microt_deploy.boards import load_board
from microt_deploy.errors import MicrotError, ToolMissingError
from microt_deploy.firmware.render import MIN_SLOTS, arena_budget, plan_sizes, read_model_sizes
from microt_deploy.targets import build, image_path, render_firmware
from microt_deploy.targets.toolchain import parse_memory_usage


def test_qemu_build_reports_flash_and_ram_within_the_board(built):
    config, result = built("qemu_mps2_an386")
    board = load_board("qemu_mps2_an386")
    assert result.image == image_path(board, result.image.parent) and result.image.is_file()
    assert result.image.read_bytes()[:4] == b"\x7fELF"
    usage = parse_memory_usage(result.log)
    assert usage["FLASH"] == (result.flash_bytes, board.flash_bytes)
    assert usage["RAM"] == (result.ram_bytes, board.ram_bytes)
    # RAM holds at least the arena, the feature store and the stack; flash at least the weights.
    store = config.max_slots * (config.part_dim + config.full_dim)
    assert result.ram_bytes >= config.arena_bytes + store + config.stack_bytes
    assert result.ram_bytes <= board.ram_bytes
    assert config.max_slots == 1536  # a tiny model: the cap, not the RAM, limits the slots
    recorded = json.loads((result.image.parent / "build.json").read_text())["result"]
    assert recorded["ram_bytes"] == result.ram_bytes


def test_host_build_runs_gcc_warning_clean(built):
    _, result = built("host")
    assert result.image.is_file() and result.flash_bytes > 0 and result.ram_bytes > 0
    assert "warning" not in result.log


def test_ram_overflow_is_one_line_with_numbers(split_model, tmp_path):
    board = load_board("qemu_mps2_an386")
    fw = tmp_path / "fw"
    render_firmware(split_model["compiled"], board, fw, {})
    # Shrink the linker's RAM region: the real linker must then refuse the image.
    ld = (fw / "link.ld").read_text()
    (fw / "link.ld").write_text(re.sub(r"(RAM\s+\(rwx\)\s*:\s*ORIGIN = 0x20000000, LENGTH = )\d+", r"\g<1>65536", ld))
    with pytest.raises(MicrotError) as err:
        build(board, fw)
    text = str(err.value)
    match = re.fullmatch(r"model does not fit qemu_mps2_an386: RAM overflowed by ([\d,]+) bytes "
                         r"\(needs ([\d,]+) of ([\d,]+)\); .+", text)
    assert match and "\n" not in text
    assert not image_path(board, fw).exists()


def test_slots_are_sized_from_the_ram_budget(split_model):
    board = load_board("qemu_mps2_an386")
    sizes = read_model_sizes(split_model["compiled"] / "mdt_model.h")
    big = dict(sizes, MDT_ARENA_SIZE=560_000)
    config = plan_sizes(board, big, {"max_slots": 60000})
    assert 16 <= config.max_slots < 60000
    assert config.fixed_ram_bytes + config.max_slots * config.slot_bytes <= board.ram_bytes
    with pytest.raises(MicrotError, match=r"model does not fit qemu_mps2_an386: arena 700,000 B"):
        plan_sizes(board, dict(sizes, MDT_ARENA_SIZE=700_000))


def test_arena_budget_is_the_largest_arena_that_still_fits(split_model):
    """compile's "fit" policy plans patch stages against arena_budget: an arena of exactly that size
    leaves plan_sizes the smallest feature store, one byte more does not fit."""
    board = load_board("nucleo_l4r5zi")
    sizes = read_model_sizes(split_model["compiled"] / "mdt_model.h")
    budget = arena_budget(board, sizes, {"max_tasks": 2})
    assert 0 < budget < board.ram_bytes
    assert plan_sizes(board, dict(sizes, MDT_ARENA_SIZE=budget), {"max_tasks": 2}).max_slots >= MIN_SLOTS
    with pytest.raises(MicrotError, match="model does not fit nucleo_l4r5zi"):
        plan_sizes(board, dict(sizes, MDT_ARENA_SIZE=budget + 1), {"max_tasks": 2})
    assert arena_budget(load_board("host"), sizes) is None


def test_render_refusals_and_atomicity(split_model, tmp_path):
    unknown_family = dataclasses.replace(load_board("nucleo_l4r5zi"), family="nrf52")
    with pytest.raises(MicrotError, match="no board layer for nucleo_l4r5zi"):
        render_firmware(split_model["compiled"], unknown_family, tmp_path / "a")
    with pytest.raises(MicrotError, match="no compiled model"):
        render_firmware(tmp_path / "empty", load_board("host"), tmp_path / "b")
    fw = tmp_path / "fw"
    render_firmware(split_model["compiled"], load_board("host"), fw, {"max_slots": 100})
    before = (fw / "mdt_config.h").read_text()
    assert "#define MDT_MAX_SLOTS 100u" in before and (fw / "mdt_graphs.h").is_file()
    with pytest.raises(MicrotError, match="unknown firmware options"):
        render_firmware(split_model["compiled"], load_board("host"), fw, {"max_slot": 5})
    assert (fw / "mdt_config.h").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_cross_compiler_names_the_debian_package(split_model, tmp_path, monkeypatch):
    board = load_board("qemu_mps2_an386")
    render_firmware(split_model["compiled"], board, tmp_path / "fw", {})
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without any toolchain
    assert shutil.which("arm-none-eabi-gcc") is None
    with pytest.raises(ToolMissingError, match="arm-none-eabi-gcc is not installed; install it: apt-get install "
                                               "gcc-arm-none-eabi"):
        build(board, tmp_path / "fw")
