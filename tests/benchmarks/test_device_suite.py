"""benchmarks/device_suite.py runs end to end (tiny generator, 64 px), so the GPU plan never rots.

Only the suite's plumbing and its invariants are checked here (every case measured, estimates
beside refinement peaks, ours faithful to the official cost); its timings mean nothing at 64 px.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "device_suite.py"


def _suite():
    spec = importlib.util.spec_from_file_location("device_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_measures_every_case(tmp_path, capsys):
    out = tmp_path / "suite.json"
    # One thread: a tiny model's many small kernels are at the mercy of OpenMP on a busy machine.
    results = _suite().main(["--smoke", "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    rows = results["rows"]
    cases = {(r["kind"], r["dtype"], r["mode"]) for r in rows}
    for dtype in ("fp32", "bf16"):
        assert {("plain", dtype, "official"), ("plain", dtype, "ours"),
                ("refine", dtype, "official"), ("refine", dtype, "ours")} <= cases
    assert ("refine", "fp32", "ours+checkpointing") in cases
    assert ("option", "fp32", "channels_last") in cases
    for row in rows:
        assert "skipped" not in row, row
        assert row["seconds"] > 0 and row["peak_gib"] >= 0
        if row["kind"] in ("plain", "refine"):  # the estimator's prediction beside every peak
            assert row["estimate_bytes"] > 0 and math.isfinite(row["estimate_over_peak"])
        if row["kind"] == "refine":
            assert row["seconds_per_finest_iteration"] > 0
        if row["mode"] not in ("official", "defaults"):
            reference = "defaults" if row["kind"] == "option" else "official"
            assert f"time_vs_{reference}" in row
            if row["dtype"] == "fp32":  # ours is the official computation up to round-off
                assert row[f"hole_diff_vs_{reference}"]["max"] < 1e-4, row
    table = capsys.readouterr().out
    assert table.count("\n") >= len(rows) + 2 and "ours+checkpointing" in table


def test_time_budget_skips_the_cases_left(capsys):
    """A spent --budget-seconds turns every later case into a skipped row (the GPU window is fixed)."""
    results = _suite().main(["--smoke", "--threads", "1", "--budget-seconds", "0", "--options"])
    assert results["rows"] and all(r["skipped"].startswith("time budget") for r in results["rows"])
    assert "skipped: time budget" in capsys.readouterr().out
