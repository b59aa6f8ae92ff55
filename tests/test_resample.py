"""resample.py (2-GRPO + ReSampling): tied pairs drawn again until the step has P informative ones."""

import json

import torch
from helpers import small_run_args

import train
from grpo import informative_groups
from resample import resample_ties
from rollout import Rollout

G = 2


def fake_draw(rewards_of):
    """A stand-in for sampling + scoring: each problem's G completions are tokens [id, j] and their
    rewards rewards_of(problem, call number)."""
    calls = []

    def draw(problems):
        calls.append([p["id"] for p in problems])
        tokens = torch.tensor([[p["id"], j] for p in problems for j in range(G)])
        z = torch.zeros(tokens.shape)
        ro = Rollout(tokens, z + 1, z, torch.full((len(tokens),), 2), torch.ones(len(tokens), dtype=torch.bool),
                     [f"{p['id']}/{j}" for p in problems for j in range(G)])
        r = torch.tensor([x for p in problems for x in rewards_of(p, len(calls))], dtype=torch.float)
        return ro, r
    return draw, calls


def check_rows_follow_problems(problems, ro):
    assert ro.tokens[:, 0].tolist() == [p["id"] for p in problems for _ in range(G)]
    assert ro.texts == [f"{p['id']}/{j}" for p in problems for j in range(G)]


def stream(first=100):
    """A stand-in for the data stream's next prompts: ids first, first + 1, ... in order."""
    taken = []

    def upcoming(n):
        new = [{"id": first + len(taken) + i} for i in range(n)]
        taken.extend(new)
        return new
    return upcoming, taken


def test_fresh_prompts_come_from_the_stream_until_p_pairs_are_informative_groups():
    problems = [{"id": i} for i in range(4)]
    # first draw: groups 1 and 3 informative; the stream's problems: even ids informative, odd ones tie
    draw, calls = fake_draw(lambda p, call: (1.0, 0.0) if p["id"] % 2 == 0 else (0.0, 0.0))
    ro, r = draw(problems)
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    upcoming, taken = stream()
    out_p, out_ro, out_r, stats = resample_ties(problems, ro, r, draw, upcoming, G, "fresh", budget=4.0)
    assert len(out_p) == 4 and informative_groups(out_r, G).all()
    check_rows_follow_problems(out_p, out_ro)
    assert [p["id"] for p in out_p] == [1, 3, 100, 102]        # the step's own informative pairs, then the stream's
    assert calls[1:] == [[100, 101, 102, 103]]                   # 2 of 4 informative so far: 2 / (1/2) = 4 more
    assert [p["id"] for p in taken] == [100, 101, 102, 103]
    assert stats == {"pairs_drawn": 8, "extra_rollouts": G * 4}


def test_the_budget_caps_extra_rollouts_and_ties_fill_the_step():
    problems = [{"id": i} for i in range(4)]
    draw, calls = fake_draw(lambda p, call: (0.0, 0.0))                  # every new pair ties
    ro, _ = draw(problems)
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    out_p, out_ro, out_r, stats = resample_ties(problems, ro, r, draw, stream()[0], G, "fresh", budget=1.5)
    assert stats["extra_rollouts"] == G * 6 == G * sum(len(c) for c in calls[1:])   # 1.5 x 4 groups, no more
    assert sorted(p["id"] for p in out_p) == [0, 1, 2, 3]               # the first draw's pairs, ties included
    assert int(informative_groups(out_r, G).sum()) == 2 and stats["pairs_drawn"] == 10
    check_rows_follow_problems(out_p, out_ro)


def test_the_default_cap_is_16_grpos_rollouts():
    """--resample-budget 7: at most 7 x P x 2 extra rollouts, 8 x 2-GRPO's = 16-GRPO's rollouts in all."""
    from config import Config
    problems = [{"id": i} for i in range(4)]
    draw, _ = fake_draw(lambda p, call: (0.0, 0.0))
    ro, r = draw(problems)
    *_, stats = resample_ties(problems, ro, r, draw, stream()[0], G, "fresh", budget=Config().resample_budget)
    assert G * stats["pairs_drawn"] == 16 * len(problems)


def test_same_mode_draws_the_tied_prompts_again():
    problems = [{"id": i} for i in range(4)]
    draw, calls = fake_draw(lambda p, call: (1.0, 0.0))                 # on the second try every pair splits
    ro, _ = draw(problems)
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    out_p, out_ro, out_r, stats = resample_ties(problems, ro, r, draw, None, G, "same", budget=1.0)
    assert calls[1:] == [[0, 2]]
    assert [p["id"] for p in out_p] == [1, 3, 0, 2] and informative_groups(out_r, G).all()
    check_rows_follow_problems(out_p, out_ro)


def test_a_resampling_run_counts_every_rollout(tmp_path, tiny_model_dir):
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=2, prompts_per_step=8, resample="fresh",
                              resample_budget=2.0, temperature=1.5))
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    for row in rows:
        assert row["pairs_drawn"] * G == 8 * G + row["extra_rollouts"]
        assert row["extra_rollouts"] <= 2.0 * 8 * G and 0 <= row["informative_pairs"] <= 8
        assert row["extra_rollouts"] > 0 or row["informative_pairs"] == 8
        assert 0 <= row["tie_predicted"] <= 1
    assert rows[-1]["rollouts"] == sum(r["pairs_drawn"] * G for r in rows)
    assert json.load(open(tmp_path / "run" / "summary.json"))["rollouts"] == rows[-1]["rollouts"]


def test_refills_are_the_streams_next_prompts_and_the_next_step_starts_after_them(tmp_path, tiny_model_dir):
    """The stream moves on by P and by every refill (the same prompts are not trained on twice in an
    epoch); a resumed run continues from the checkpoint's position."""
    from data import prompts_for_step, stream_prompts, tiny_task_problems
    import torch as _torch
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    drawn = []
    real = train.sample

    def spy(model, prompts, *a, **k):            # the problems of every draw, as their prompts' text
        drawn.append([tok.decode(p, skip_special_tokens=True) for p in prompts])
        return real(model, prompts, *a, **k)
    train.sample = spy
    try:
        args = small_run_args(tmp_path, tiny_model_dir, steps=2, prompts_per_step=8, resample="fresh",
                              temperature=1.5, save_every=1)
        train.main(args)
    finally:
        train.sample = real
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    problems = tiny_task_problems()["train"]
    n = len(problems)
    order = [problems[i]["problem"] for i in stream_prompts(range(0, 400), n, seed=0)]
    flat = [p for d in drawn for p in d]
    assert flat == order[:len(flat)]                                  # every prompt drawn: the stream, in order
    assert rows[0]["data_pos"] == rows[0]["pairs_drawn"] and rows[1]["data_pos"] == len(flat)    # used: next step
    assert rows[1]["epoch"] == round(len(flat) / n, 4)
    assert all(r["informative_share"] == r["informative_pairs"] / 8 for r in rows)
    ckpt = _torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["progress"] == {"rollouts": rows[-1]["rollouts"], "data_pos": len(flat)}
    assert prompts_for_step(0, n, 8, seed=0) == stream_prompts(range(8), n, seed=0)
