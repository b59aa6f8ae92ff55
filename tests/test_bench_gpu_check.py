"""bench/gpu_check.py --dry-run: every part of the GPU check runs on tiny shapes on the CPU, inside its
budget, and the report is written part by part (the real run needs a GPU)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import FORCED_ISA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("## 1. environment", "## 2. tiny shape at the paper's lengths, two steps",
         "## 3. tiny shape, --cpu-offload, one step", "## 4. sampling at batch 64", "## 5. decode at batch 1",
         "## 6. train.py --compile, two steps", "## 7. recipes under a memory cap")


@pytest.mark.skipif(FORCED_ISA, reason="ATEN_CPU_CAPABILITY forced: the dry run's --compile part builds C++ "
                    "with torch.compile, whose CPU code generation breaks under it (helpers.FORCED_ISA)")
def test_gpu_check_dry_run_runs_every_part_in_its_budget(tmp_path):
    out = tmp_path / "gpu.md"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - t0 < 210
    report = out.read_text()
    for heading in PARTS:
        assert heading in report, heading
    assert "FAILED" not in report and "no result" not in report and "skipped" not in report, report
    assert report.count("seconds per step: [") == 4 and "batch-1 decode, compiled:" in report
    assert "step 2 compiled vs eager: " in report and "recompiles logged" in report.split("## 6.")[1]
    assert "hf" in report.split("## 4.")[1] and "compiled" in report.split("## 4.")[1]   # each method as measured
    assert report.count("| sampling |") == 2 and report.count("| update |") == 2          # per phase, vs the plan
    assert report.count("| ran |") == 2                           # one recipe of each kind ran
    assert "--cpu-offload" in report.split("## 7.")[1]            # one of them offloads the state to host memory
    assert "transformers" in report and "triton" in report and "C compiler" in report


def test_a_killed_gpu_check_keeps_the_parts_that_ended(tmp_path):
    """The report is appended to after every part: kill the whole run once part 2 has ended, and what it
    measured is there."""
    out = tmp_path / "gpu.md"
    proc = subprocess.Popen([sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and PARTS[1] in out.read_text()):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    report = out.read_text()
    assert PARTS[0] in report and PARTS[1] in report and "seconds per step: [" in report
    assert PARTS[6] not in report                                 # killed before the end: the rest is missing
