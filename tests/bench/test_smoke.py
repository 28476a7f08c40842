"""Every benchmark scenario runs end to end in smoke mode, so the suite never rots.

Nothing here asserts speed: only that each scenario measures its peers and writes its
report.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamhost.bench.loadgen import RequestResult
from streamhost.bench.metrics import percentile, summarize


def test_percentiles_interpolate_like_numpy():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) == 0.0


def test_summary_uses_vllm_definitions():
    a = RequestResult(ok=True, ttft=0.1, latency=1.0, itl=[0.3, 0.3, 0.3], output_tokens=4)
    b = RequestResult(ok=False, error="HTTP 500")
    s = summarize([a, b], duration=2.0, slo_ttft_ms=200, slo_tpot_ms=250)
    assert (s.completed, s.failed) == (1, 1)
    assert s.output_throughput == 2.0
    assert s.tpot["p50"] == pytest.approx(300.0)  # (1.0 - 0.1) / (4 - 1)
    assert s.itl["p50"] == pytest.approx(300.0)
    assert s.goodput == 0.0  # TPOT 300 ms misses the 250 ms target


SCENARIOS = ("engine", "server", "gateway", "e2e")


# One test per scenario, each its own xdist group, so the scenarios run side by side.
@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario",
    [pytest.param(name, marks=pytest.mark.xdist_group(f"bench-{name}")) for name in SCENARIOS],
)
def test_each_scenario_runs_in_smoke_mode(tmp_path, scenario):
    result = subprocess.run(
        [
            *[sys.executable, "-m", "streamhost.cli", "bench", "--smoke"],
            *["--scenario", scenario, "--out", str(tmp_path)],
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / f"{scenario}.json").read_text())
    assert report["rows"], scenario
    assert (tmp_path / f"{scenario}.md").exists()
    if scenario != "gateway":  # the gateway scenario's report is a table only
        assert list(tmp_path.glob(f"{scenario}*.png"))
    if scenario == "server":
        assert {row[1] for row in report["rows"]} >= {"streamhost"}
    if scenario == "gateway":
        steady = [row for row in report["rows"] if row[0] == "synthetic:5 steady"]
        assert {row[2] for row in steady} >= {"direct", "gateway"}
        assert all(row[3] > 0 and row[6] > 0 for row in steady)  # a TTFB and a rate each
