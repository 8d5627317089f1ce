"""What each kind of process loads: the deriver and `trackside worker` only store and derive already
classified events, so they do not load ua-parser's resolver (its compiled regexes are about 30 MB of
each process); the sidecar, which classifies, does. Checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("ua_parser", "trackside.enrich.user_agent")


def loaded_after(*modules: str) -> dict[str, bool]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        f"print(json.dumps({{h: h in sys.modules for h in {list(HEAVY)!r}}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("modules", [("trackside.deriver",), ("rollups.worker",)], ids=["deriver", "worker"])
def test_storing_and_deriving_processes_do_not_load_the_user_agent_parser(modules):
    assert loaded_after(*modules) == dict.fromkeys(HEAVY, False)


def test_the_sidecar_loads_it_to_classify():
    assert loaded_after("sidecar.app") == dict.fromkeys(HEAVY, True)
