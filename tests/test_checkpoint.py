"""checkpoint.py: an interrupted run resumes to the weights of one never interrupted; a damaged checkpoint is one
line naming the file and what to do."""

import json
import os
import signal

import pytest
import torch
from helpers import interrupted_run, small_run_args

import train


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_model_dir, monkeypatch):
    common = dict(steps=5, schedule="cosine", warmup_steps=1, lr=1e-3)
    train.main(small_run_args(tmp_path, tiny_model_dir, out_dir=str(tmp_path / "straight"), **common))

    real_step = train.train_step

    def ctrl_c_during_step_2(step, *a, **k):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)         # Ctrl-C arrives in the middle of a step
        return real_step(step, *a, **k)
    monkeypatch.setattr(train, "train_step", ctrl_c_during_step_2)
    with pytest.raises(SystemExit) as stopped:
        train.main(small_run_args(tmp_path, tiny_model_dir, out_dir=str(tmp_path / "resumed"), **common))
    assert stopped.value.code == 130
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3                            # the step in flight finished, then it saved
    monkeypatch.setattr(train, "train_step", real_step)
    train.main(small_run_args(tmp_path, tiny_model_dir, out_dir=str(tmp_path / "resumed"), resume=True, **common))

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 5
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("damage", ["truncated", "not a checkpoint"])
def test_an_unreadable_checkpoint_is_named_with_what_to_do(tmp_path, tiny_model_dir, damage, capsys):
    args = small_run_args(tmp_path, tiny_model_dir, steps=2)
    train.main(args)
    path = tmp_path / "run" / "checkpoint.pt"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        torch.save({"weights": 1}, path)
    with pytest.raises(SystemExit) as e:
        train.main(args + ["--resume", "--steps", "3"])
    msg = str(e.value)
    assert msg.startswith(f"error: {path} cannot be resumed from") and "Start over without --resume" in msg
    assert "\n" not in msg


# --- no run is lost or mixed with another ----------------------------------------------------------
def stopped_run(tmp_path, tiny_model_dir, monkeypatch, **over):
    """A 4-step run stopped by Ctrl-C during step 1: its checkpoint is at step 2."""
    return interrupted_run(small_run_args(tmp_path, tiny_model_dir, steps=4, **over), monkeypatch)


def test_an_unfinished_run_is_refused_without_resume_or_overwrite(tmp_path, tiny_model_dir, monkeypatch):
    args = stopped_run(tmp_path, tiny_model_dir, monkeypatch)
    path = tmp_path / "run" / "checkpoint.pt"
    before = path.read_bytes()
    with pytest.raises(SystemExit) as e:
        train.main(args)                                          # the same command, --resume forgotten
    msg = str(e.value)
    assert msg.startswith(f"error: {tmp_path / 'run'} holds an unfinished run (checkpoint at step 2 of 4)")
    assert "--resume" in msg and "--overwrite" in msg and "\n" not in msg
    assert path.read_bytes() == before                            # nothing was touched
    said = []
    monkeypatch.setattr(train.tqdm, "write", said.append)
    train.main(args + ["--overwrite"])                            # told to: it starts over
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and any("--overwrite" in s for s in said)


def test_a_finished_run_run_again_is_moved_aside_with_one_line(tmp_path, tiny_model_dir, monkeypatch):
    args = small_run_args(tmp_path, tiny_model_dir, steps=2)
    train.main(args)
    first = (tmp_path / "run" / "metrics.jsonl").read_text()
    said = []
    monkeypatch.setattr(train.tqdm, "write", said.append)
    train.main(args)
    assert (tmp_path / "run.1" / "metrics.jsonl").read_text() == first          # kept, whole
    assert (tmp_path / "run.1" / "model" / "config.json").exists() and (tmp_path / "run" / "model").exists()
    assert f"{tmp_path / 'run'} held a finished run: moved to {tmp_path / 'run.1'}; starting a new run in " \
           f"{tmp_path / 'run'}" in said


def test_resume_refuses_settings_that_define_the_run_and_lists_the_others(tmp_path, tiny_model_dir, monkeypatch):
    args = stopped_run(tmp_path, tiny_model_dir, monkeypatch)
    with pytest.raises(SystemExit) as e:
        train.main(args + ["--resume", "--group-size", "4", "--seed", "3"])
    msg = str(e.value)
    assert msg.startswith("error: --resume continues the run in") and "\n" not in msg
    assert "--group-size 2 -> 4" in msg and "--seed 0 -> 3" in msg
    said = []
    monkeypatch.setattr(train.tqdm, "write", said.append)
    train.main(args + ["--resume", "--steps", "5", "--eval-every", "3"])
    assert "resuming with changed settings: --steps 4 -> 5, --eval-every 0 -> 3" in said
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 5


@pytest.mark.parametrize("case", ["out-dir is a file", "resume and overwrite"])
def test_out_dir_mistakes_are_one_line(tmp_path, tiny_model_dir, case):
    (tmp_path / "afile").write_text("x")
    over = {"out_dir": str(tmp_path / "afile")} if case == "out-dir is a file" else {"resume": True, "overwrite": True}
    with pytest.raises(SystemExit) as e:
        train.main(small_run_args(tmp_path, tiny_model_dir, **over))
    says = {"out-dir is a file": f"--out-dir {tmp_path / 'afile'} is a file, not a folder",
            "resume and overwrite": "--resume continues the run in --out-dir and --overwrite deletes it"}[case]
    assert str(e.value).startswith("error: ") and says in str(e.value) and "\n" not in str(e.value)
