"""checkpoint.py: an interrupted run resumes to the weights of one never interrupted; a damaged checkpoint is one
line naming the file and what to do."""

import json
import os
import signal

import pytest
import torch
from helpers import small_run_args

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
