"""benchmarks/gpu_check.sh's CPU dry run (what CI can run of the GPU check): it finishes, times
every variant of the step, compares a float64 α update and packs 1 and 2 trials through Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run",
                        "--out", str(out)], capture_output=True, text=True, timeout=300,
                       env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["dry_run"] is True
    for space in ("darts", "nb201"):
        row = res["steps"][space]
        for v in ("plain_fp32", "ours_fp32_nchw", "ours_fp32", "ours_fused", "ours_bf16"):
            assert row[v].get("median_s", 0) > 0, (space, v, row[v])
        assert row["ours_fp32"]["speedup_vs_plain"] > 0
    a = res["alpha_update"]
    assert a["bitwise_equal"] is True and a["max_abs_diff"] == 0.0  # CPU against CPU
    assert {k: v["done"] for k, v in res["packing"].items()} == {"1": 1, "2": 2}
    assert res["wall_s"] < 240


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_step_benchmark_profiles_kernels_and_times_the_autodl_gdas_reference():
    # benchmarks/step.py as a user runs it, tiny: one JSON line with both paths timed, the
    # kernel seconds of each, the floor ratio, and a peak RSS taken before the profiler ran.
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step.py"), "--space", "tiny",
                        "--method", "gdas", "--reference", "--steps", "2", "--warmup", "1",
                        "--batch", "4", "--channels", "4", "--profile", "1"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["method"]["activation"] == "gumbel_hard"
    for side in ("ours", "reference"):
        k = line[side]["kernels_s"]
        assert k["steps"] == 1 and 0 < k["conv"] < k["all_kernels"] and k["batch_norm"] > 0
        assert line[side]["timed_steps"] == 2 and line[side]["peak_rss_gb"] > 0
    f = line["floor_ratio"]
    assert 0 < f["conv"] < f["conv_and_batch_norm"]
