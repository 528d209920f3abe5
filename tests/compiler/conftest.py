"""Fixtures for the compiler tests: a per-session host-runner cache and a per-session model folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _host_runner_cache(tmp_path_factory):
    """Keep built host binaries inside the test session, not in the user's cache."""
    old = os.environ.get("MICROT_CACHE_DIR")
    os.environ["MICROT_CACHE_DIR"] = str(tmp_path_factory.mktemp("host-runner-cache"))
    yield
    if old is None:
        os.environ.pop("MICROT_CACHE_DIR", None)
    else:
        os.environ["MICROT_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tflite-models")
