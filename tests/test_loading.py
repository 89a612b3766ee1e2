"""Loading errors a person can act on, and the page's import staying light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from garage.models.loading import explain_load_error
from tests.conftest import ROOT


def test_gated_model_is_explained_with_a_mirror():
    err = explain_load_error("gemma-3-1b-it", OSError("401 Client Error: Unauthorized ... gated repo"))
    assert "accept the Gemma licence" in str(err) and "unsloth/gemma-3-1b-it" in str(err)


def test_offline_points_to_the_offline_model():
    err = explain_load_error("google/gemma-3-4b-it", OSError("We couldn't connect to 'https://huggingface.co'"))
    assert "unreachable" in str(err) and "tiny-gemma-3" in str(err)


def test_unknown_model_is_named():
    err = explain_load_error("me/typo", OSError("me/typo is not a valid model identifier listed on the Hub"))
    assert "not a model on the Hub" in str(err)


@pytest.mark.slow
def test_importing_the_app_loads_no_heavy_library():
    code = ("import sys, app; heavy = [m for m in ('torch', 'transformers', 'unsloth', 'datasets', 'trl', 'peft') "
            "if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_compiled_kernels_are_kept_under_the_garage_home(tmp_path, monkeypatch):
    from triton import knobs

    from garage.models.loading import import_unsloth, keep_compiled_kernels

    monkeypatch.setenv("GARAGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("UNSLOTH_MEGA_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "mine"))  # a cache the user chose stays theirs
    assert import_unsloth()
    from unsloth_zoo.compile_cache import _cache_root

    assert _cache_root() == str(tmp_path / "home" / "cache" / "unsloth")  # where Unsloth saves compiled bundles
    assert knobs.cache.dir == str(tmp_path / "mine")
    monkeypatch.delenv("TRITON_CACHE_DIR")
    keep_compiled_kernels()
    assert knobs.cache.dir == str(tmp_path / "home" / "cache" / "triton")


@pytest.mark.slow
def test_unsloth_per_block_compile_is_off_unless_asked_for(monkeypatch):
    from garage.models.loading import import_unsloth

    monkeypatch.delenv("UNSLOTH_BLOCK_COMPILE", raising=False)
    assert import_unsloth()
    from unsloth.models._block_compile import _enabled  # the switch Unsloth itself reads when it patches a model

    assert not _enabled()
    monkeypatch.setenv("UNSLOTH_BLOCK_COMPILE", "1")  # a user who wants it
    assert import_unsloth() and _enabled()
