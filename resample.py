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

from grpo import informative_groups
from rollout import cat_rollouts, take_rows


def resample_ties(problems, rollout, r, draw, upcoming, group_size, mode="fresh", budget=7.0, pad_token_id=0):
    """Top a step up to len(problems) informative groups.

    problems, rollout, r: the step's P prompts, their Rollout (P*G rows) and rewards (P*G,)
    draw(problems) -> (Rollout, rewards) samples and scores G completions of each given problem
    upcoming(n) -> the data stream's next n problems (mode "fresh"; each call takes new ones)
    mode: "fresh" draws the stream's next prompts, "same" the tied prompts of the last round again
    budget: extra rollouts allowed, as a multiple of P * G (7: 8x in all, 16-GRPO's rollouts at G = 2)
    Returns (problems, Rollout, rewards, stats): P groups, the first P informative ones drawn, topped up
    with the first draw's tied groups when the budget ran out (grouped by draw); stats counts the
    groups drawn and the extra rollouts.
    """
    P, G = len(problems), group_size
    pool = [(problems, rollout, r)]                                 # every draw: (problems, Rollout, r)
    n_inf = int(informative_groups(r, G).sum())
    cap, extra_groups = int(budget * P), 0
    while n_inf < P and extra_groups < cap:
        if mode == "same":
            last_problems, _, last_r = pool[-1]
            tied = (~informative_groups(last_r, G)).tolist()
            new = [p for p, t in zip(last_problems, tied) if t][:cap - extra_groups]
        else:   # as many fresh prompts as the informative share so far says are needed (at least 1 in 4)
            share = max(n_inf / (P + extra_groups), 0.25)
            new = upcoming(min(math.ceil((P - n_inf) / share), cap - extra_groups))
        new_rollout, new_r = draw(new)
        pool.append((new, new_rollout, new_r))
        extra_groups += len(new)
        n_inf += int(informative_groups(new_r, G).sum())
    # the batch: the first P informative groups, in the order drawn, topped up with the first draw's ties
    keep = [informative_groups(rk, G).nonzero().squeeze(1).tolist() for _, _, rk in pool]    # per draw
    room = P
    for k in range(len(pool)):
        keep[k] = keep[k][:room]
        room -= len(keep[k])
    keep[0] += (~informative_groups(r, G)).nonzero().squeeze(1).tolist()[:room]
    out_problems, parts, out_r = [], [], []
    for (draw_problems, draw_rollout, draw_r), groups in zip(pool, keep):
        if groups:
            out_problems += [draw_problems[g] for g in groups]
            rows = [g * G + j for g in groups for j in range(G)]                  # the G rows of each group
            parts.append(take_rows(draw_rollout, rows))
            out_r.append(draw_r.view(-1, G)[groups].reshape(-1))
    stats = {"pairs_drawn": P + extra_groups, "extra_rollouts": extra_groups * G}
    return out_problems, cat_rollouts(parts, pad_token_id), torch.cat(out_r), stats
