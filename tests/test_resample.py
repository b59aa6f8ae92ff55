"""resample.py (2-GRPO + ReSampling): tied pairs drawn again until the step has P informative ones."""

import json

import torch
from helpers import small_run_args

import train
from resample import informative, resample_ties
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


def test_informative_groups():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    assert informative(r, 2).tolist() == [False, True, False, True]
    assert informative(torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]), 3).tolist() == [True, False]


def test_fresh_prompts_top_the_step_up_to_p_informative_pairs():
    train_set = [{"id": 100 + i} for i in range(50)]
    problems = [{"id": i} for i in range(4)]
    # first draw: groups 1 and 3 informative; fresh problems: even ids informative, odd ones tie
    draw, calls = fake_draw(lambda p, call: (1.0, 0.0) if p["id"] % 2 == 0 else (0.0, 0.0))
    ro, r = draw(problems)
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    out_p, out_ro, out_r, stats = resample_ties(problems, ro, r, draw, train_set, G, "fresh", budget=4.0, seed="s")
    assert len(out_p) == 4 and informative(out_r, G).all()
    check_rows_follow_problems(out_p, out_ro)
    assert [p["id"] for p in out_p][:2] == [1, 3]                     # the step's own informative pairs first
    assert all(p["id"] >= 100 for p in out_p[2:])                       # then fresh ones
    extra = sum(len(c) for c in calls[1:])
    assert stats == {"pairs_drawn": 4 + extra, "informative_pairs": 4, "extra_rollouts": G * extra}
    # seeded: the same seed draws the same fresh prompts
    again = resample_ties(problems, ro, r, fake_draw(lambda p, c: (1.0, 0.0) if p["id"] % 2 == 0 else (0.0, 0.0))[0],
                          train_set, G, "fresh", budget=4.0, seed="s")
    assert [p["id"] for p in again[0]] == [p["id"] for p in out_p]


def test_the_budget_caps_extra_rollouts_and_ties_fill_the_step():
    train_set = [{"id": 100 + i} for i in range(50)]
    problems = [{"id": i} for i in range(4)]
    draw, calls = fake_draw(lambda p, call: (0.0, 0.0))                  # every new pair ties
    ro, _ = draw(problems)
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    out_p, out_ro, out_r, stats = resample_ties(problems, ro, r, draw, train_set, G, "fresh", budget=1.5)
    assert stats["extra_rollouts"] == G * 6 == G * sum(len(c) for c in calls[1:])   # 1.5 x 4 groups, no more
    assert sorted(p["id"] for p in out_p) == [0, 1, 2, 3]               # the first draw's pairs, ties included
    assert stats["informative_pairs"] == 2 and stats["pairs_drawn"] == 10
    check_rows_follow_problems(out_p, out_ro)


def test_same_mode_draws_the_tied_prompts_again():
    problems = [{"id": i} for i in range(4)]
    draw, calls = fake_draw(lambda p, call: (1.0, 0.0))                 # on the second try every pair splits
    ro, _ = draw(problems)
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    out_p, out_ro, out_r, stats = resample_ties(problems, ro, r, draw, [], G, "same", budget=1.0)
    assert calls[1:] == [[0, 2]]
    assert [p["id"] for p in out_p] == [1, 3, 0, 2] and informative(out_r, G).all()
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
