"""bench/gpu_check.py --dry-run: every part of the GPU check runs on tiny shapes on the CPU, and the
report names each part (the real run needs a GPU)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run_runs_every_part(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    for heading in ("## 1. test suite", "## 1b. precision", "## 2. sampling", "## 3. decode at batch 1", "## 4. step-time goals",
                    "## 5. training memory", "## 6. 2-GRPO", "## 7. recipes under a memory cap"):
        assert heading in report, heading
    assert "FAILED" not in report and "skipped: out of time" not in report, report
    assert "seconds per step: [" in report and "batch-1 decode, compiled:" in report
    assert report.count("| ran |") == 4                   # both step-time runs and the dry run's two recipes ran
    assert "--cpu-offload" in report.split("## 7.")[1]        # one of them offloads the state to host memory
    goals = report.split("## Goals (issue #14)")[1]                       # each goal gets a verdict (tiny shapes)
    lines = [line for line in goals.splitlines() if line.startswith("- ")]
    assert len(lines) == 5 and "no result" not in goals, goals
    assert all(line.endswith("met") for line in lines if "bandwidth" not in line)   # no bandwidth figure on a CPU
    assert "transformers" in report.splitlines()[2]                       # the versions are printed
