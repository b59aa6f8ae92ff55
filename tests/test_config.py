"""config.py: every flag checked in one place, before anything loads: one line naming the flag and
its allowed range, exit code 1, no traceback."""

import subprocess
import sys

import pytest

from config import Config, check_config, parse_args

ROOT = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))


@pytest.mark.parametrize("argv,says", [
    (["--prompts-per-step", "0"], "--prompts-per-step 0 must be >= 1"),
    (["--lr", "-1"], "--lr -1.0 must be >= 0"),
    (["--lora-rank", "-1"], "--lora-rank -1 must be >= 0"),
    (["--lora-rank", "4", "--cpu-offload"], "--lora-rank does not go with --cpu-offload"),
    (["--max-new-tokens", "-5"], "--max-new-tokens -5 must be >= 0"),
    (["--top-p", "1.5"], "--top-p 1.5 must be in (0, 1]"),
    (["--eps-low", "1"], "--eps-low 1.0 must be in [0, 1)"),
    (["--micro-batch-size", "0"], "--micro-batch-size 0 must be >= 1"),
    (["--dtype", "fp16"], "--dtype must be one of auto, float32, mixed, bfloat16"),
    (["--temperature", "0"], "--temperature 0 samples greedily: both rollouts of a prompt are the same"),
    (["--temperature", "-1"], "--temperature -1.0 must be > 0"),
    (["--group-size", "1"], "--group-size 1 must be at least 2"),
])
def test_a_bad_flag_is_one_line_naming_it(argv, says):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert str(e.value).startswith("error: ") and says in str(e.value) and "\n" not in str(e.value)


def test_every_problem_is_named_at_once_and_the_defaults_pass():
    check_config(Config())
    with pytest.raises(SystemExit) as e:
        parse_args(["--steps", "0", "--lr", "-1"])
    assert "--steps 0 must be >= 1" in str(e.value) and "--lr -1.0 must be >= 0" in str(e.value)


@pytest.mark.parametrize("argv", [["--prompts-per-step", "0"], ["--lr", "-1"], ["--max-new-tokens", "-5"],
                                  ["--temperature", "0"], ["--dtype", "fp16"]])
def test_the_command_line_exits_1_with_one_line_and_no_traceback(argv):
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: --")
