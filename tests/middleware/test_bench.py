"""`bench/middleware_bench.py` still runs (a tiny round; the figures themselves are for the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "middleware_bench.py"


def test_the_benchmark_runs(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(BENCH), "--requests", "300", "--rounds", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert set(result["cpu_us_per_request"]) == {"bare", "capture", "embedded"}
    assert result["events_written_by_embedded"] == 300 + 300  # the warm-up round, then the measured one
