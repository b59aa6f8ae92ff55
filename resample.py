"""resample.py: 2-GRPO + ReSampling: tied pairs are drawn again until the step has P informative ones.

An option of train.py (--resample fresh|same), from the latest version of "It Takes Two" (its
Table 1's "2-GRPO+RS", DAPO's dynamic sampling): with G = 2 and 0/1 rewards a pair carries a
gradient only when exactly one answer is right, which for a prompt of pass rate p happens with
probability 2p(1-p); the rest tie. Instead of training on the few informative pairs of each batch,
more groups are drawn, either of fresh prompts or of the tied prompts again, until P groups are
informative or a cap of extra rollouts is spent. Every rollout drawn counts in the metrics and the
rollout budget.
"""

import math
import random

import torch

from rollout import cat_rollouts, take_rows


def informative(r, group_size):
    """(P,) True for the groups whose rewards are not all equal (a nonzero advantage somewhere).
    r: (P*G,) rewards, groups contiguous."""
    g = r.view(-1, group_size)                                               # (P, G)
    return (g != g[:, :1]).any(1)


def resample_ties(problems, ro, r, draw, train_set, group_size, mode="fresh", budget=1.0, seed=0, pad_token_id=0):
    """Top a step up to len(problems) informative groups.

    problems, ro, r: the step's P prompts, their Rollout (P*G rows) and rewards (P*G,)
    draw(problems) -> (Rollout, rewards) samples and scores G completions of each given problem
    mode: "fresh" draws new prompts from train_set (a seeded random choice), "same" draws the tied
          prompts of the last round again
    budget: extra rollouts allowed, as a multiple of P * G (1.0: at most twice the rollouts)
    Returns (problems, Rollout, rewards, stats): P groups, the first P informative ones drawn, topped up
    with the first draw's tied groups when the budget ran out (grouped by draw); stats counts the
    groups drawn, the informative groups in the batch and the extra rollouts.
    """
    P, G = len(problems), group_size
    pool = [(problems, ro, r)]
    n_inf = int(informative(r, G).sum())
    cap, extra_groups, rng = int(budget * P), 0, random.Random(seed)
    while n_inf < P and extra_groups < cap:
        if mode == "same":
            last_p, _, last_r = pool[-1]
            new = [p for p, inf in zip(last_p, informative(last_r, G).tolist()) if not inf]
        else:   # as many fresh prompts as the informative share so far says are needed (at least 1 in 4)
            share = max(n_inf / (P + extra_groups), 0.25)
            new = [train_set[i] for i in rng.sample(range(len(train_set)), min(len(train_set),
                                                                               math.ceil((P - n_inf) / share)))]
        new = new[:cap - extra_groups]
        new_ro, new_r = draw(new)
        pool.append((new, new_ro, new_r))
        extra_groups += len(new)
        n_inf += int(informative(new_r, G).sum())
    # the batch: informative groups first, in the order drawn, then the first draw's ties
    picked = [(k, g) for k, (_, _, rr) in enumerate(pool) for g in informative(rr, G).nonzero().squeeze(1).tolist()]
    picked = (picked + [(0, g) for g in (~informative(r, G)).nonzero().squeeze(1).tolist()])[:P]
    by_draw = [[g for k2, g in picked if k2 == k] for k in range(len(pool))]
    parts = [take_rows(pool[k][1], [g * G + j for g in gs for j in range(G)]) for k, gs in enumerate(by_draw) if gs]
    out_problems = [pool[k][0][g] for k, gs in enumerate(by_draw) for g in gs]
    out_r = torch.cat([pool[k][2].view(-1, G)[gs].reshape(-1) for k, gs in enumerate(by_draw) if gs])
    stats = {"pairs_drawn": P + extra_groups, "informative_pairs": min(n_inf, P), "extra_rollouts": extra_groups * G}
    return out_problems, cat_rollouts(parts, pad_token_id), out_r, stats
