"""resample.py: 2-GRPO + ReSampling: tied pairs are replaced until the step has P informative ones.

An option of train.py (--resample fresh|same), as the latest version of "It Takes Two" ran it (v3,
sec. 4.3, Table 1's "2-GRPO+RS"; DAPO's dynamic sampling): with G = 2 and 0/1 rewards a pair carries
a gradient only when exactly one answer is right, which for a prompt of pass rate p happens with
probability 2p(1-p); the rest tie. Instead of training on the few informative pairs of each batch,
more groups are drawn until P groups are informative or the step has spent 16-GRPO's rollouts (8x
those of 2-GRPO, --resample-budget 7 extra): "fresh" takes the data stream's next prompts (those the
following steps would have trained on, as DAPO's and verl's dataloaders do, so an epoch ends in fewer
steps), "same" draws the tied prompts again. Every rollout drawn counts in the metrics and the
rollout budget.
"""

import math

import torch

from rollout import cat_rollouts, take_rows


def informative(r, group_size):
    """(P,) True for the groups whose rewards are not all equal (a nonzero advantage somewhere).
    r: (P*G,) rewards, groups contiguous."""
    g = r.view(-1, group_size)                                               # (P, G)
    return (g != g[:, :1]).any(1)


def resample_ties(problems, ro, r, draw, upcoming, group_size, mode="fresh", budget=7.0, pad_token_id=0):
    """Top a step up to len(problems) informative groups.

    problems, ro, r: the step's P prompts, their Rollout (P*G rows) and rewards (P*G,)
    draw(problems) -> (Rollout, rewards) samples and scores G completions of each given problem
    upcoming(n) -> the data stream's next n problems (mode "fresh"; each call takes new ones)
    mode: "fresh" draws the stream's next prompts, "same" the tied prompts of the last round again
    budget: extra rollouts allowed, as a multiple of P * G (7: 8x in all, 16-GRPO's rollouts at G = 2)
    Returns (problems, Rollout, rewards, stats): P groups, the first P informative ones drawn, topped up
    with the first draw's tied groups when the budget ran out (grouped by draw); stats counts the
    groups drawn, the informative groups in the batch and the extra rollouts.
    """
    P, G = len(problems), group_size
    pool = [(problems, ro, r)]                                       # every draw: (problems, Rollout, r)
    n_inf = int(informative(r, G).sum())
    cap, extra_groups = int(budget * P), 0
    while n_inf < P and extra_groups < cap:
        if mode == "same":
            last_problems, _, last_r = pool[-1]
            tied = (~informative(last_r, G)).tolist()
            new = [p for p, t in zip(last_problems, tied) if t][:cap - extra_groups]
        else:   # as many fresh prompts as the informative share so far says are needed (at least 1 in 4)
            share = max(n_inf / (P + extra_groups), 0.25)
            new = upcoming(min(math.ceil((P - n_inf) / share), cap - extra_groups))
        new_ro, new_r = draw(new)
        pool.append((new, new_ro, new_r))
        extra_groups += len(new)
        n_inf += int(informative(new_r, G).sum())
    # the batch: informative groups first, in the order drawn, then the first draw's ties, P in all:
    # (draw k, group g) pairs
    picked = [(k, g) for k, (_, _, rk) in enumerate(pool) for g in informative(rk, G).nonzero().squeeze(1).tolist()]
    picked = (picked + [(0, g) for g in (~informative(r, G)).nonzero().squeeze(1).tolist()])[:P]
    groups_of = [[g for k2, g in picked if k2 == k] for k in range(len(pool))]          # per draw, in order
    parts = [take_rows(pool[k][1], [g * G + j for g in gs for j in range(G)]) for k, gs in enumerate(groups_of) if gs]
    out_problems = [pool[k][0][g] for k, gs in enumerate(groups_of) for g in gs]
    out_r = torch.cat([pool[k][2].view(-1, G)[gs].reshape(-1) for k, gs in enumerate(groups_of) if gs])
    stats = {"pairs_drawn": P + extra_groups, "informative_pairs": min(n_inf, P), "extra_rollouts": extra_groups * G}
    return out_problems, cat_rollouts(parts, pad_token_id), out_r, stats
