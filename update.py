"""update.py: the policy update: a step's rollouts as a batch, the log-probs it is compared with, the
gradient accumulated over micro-batches, and the optimizer step.

Appendix to chapter 5 (train.py, whose train_step calls make_batch, reference_and_old_logprobs and
update_policy). The objective itself is grpo.py's (grpo_loss, dpo_loss); what this file adds is how a
batch too large for one forward pass is run: micro-batches whose losses are weighted by their share of
the batch's (the summed gradient is the full batch's), tied rows skipped, and under torchrun padding
passes so that every rank makes as many backward passes (parallel.py).

    batch = make_batch(problems, rollout, r, advantages, cfg, pad_token_id)     # B rows
    reference_and_old_logprobs(run, batch, cfg)                                 # pi_ref, pi_old
    stats = update_policy(run, batch, cfg)        # accumulate_gradients, then optimizer_step, mu times
"""

import contextlib
from dataclasses import dataclass

import torch

import parallel
from data import completion_tokens
from grpo import aggregation_weight, dpo_loss, grpo_loss, preference_pairs
from lora import adapters_off
from precision import autocast
from rollout import left_pad, sequence_logprobs


@dataclass
class Batch:
    """The rollouts of one step as the update reads them, B rows (make_batch): GRPO's P * G rows grouped
    by prompt, or for DPO the informative pairs, each chosen row followed by its rejected row, then ties."""
    prompt_ids: torch.Tensor         # (B, L) long   the left-padded prompt of each row
    prompt_mask: torch.Tensor        # (B, L) long   1 on prompt tokens
    tokens: torch.Tensor             # (B, T) long   sampled completions (rollout.Rollout)
    mask: torch.Tensor               # (B, T) float  1 on completion tokens
    sampler_logp: torch.Tensor       # (B, T) float  log-probs the sampler recorded: a monitor (pi_old below)
    advantages: torch.Tensor         # (B,)   float  one per completion (grpo.group_advantages)
    ref_logp: torch.Tensor = None    # (B, T) float  log pi_ref (--beta > 0)
    ref_seq: torch.Tensor = None     # (B,)   float  DPO's reference sequence log-probs; None: pi_old's
    old_logp: torch.Tensor = None    # (B, T) float  log pi_old; None: the update's own, detached (below)


def make_batch(problems, rollout, r, adv, cfg, pad_token_id):
    """The Batch the update reads: each rollout row with its left-padded prompt. GRPO keeps the P * G rows
    as drawn; DPO puts the pairs whose rewards differ first, chosen then rejected (grpo.preference_pairs),
    and the tied rows (advantage 0, no pair) last, so that micro-batches hold whole pairs and only the
    loss differs between the two."""
    device = rollout.tokens.device
    prompt_ids, prompt_mask, _ = left_pad([p["prompt_ids"] for p in problems], pad_token_id, device)  # (P, L)
    rows = torch.arange(len(r), device=device)                                                # (P*G,)
    if cfg.loss == "dpo":           # the pairs whose rewards differ, chosen then rejected, then the ties
        pairs = torch.stack(preference_pairs(r, cfg.group_size), dim=1).reshape(-1)        # (2N,) c, r, c, r
        rows = torch.cat([pairs, rows[~torch.isin(rows, pairs)]])
    prompt = rows // cfg.group_size                                                 # each row's prompt
    return Batch(prompt_ids[prompt], prompt_mask[prompt], rollout.tokens[rows], rollout.mask[rows],
                 rollout.logprobs[rows], adv[rows])


# ---------------------------------------------------------------------------------------------------
# pi_ref and pi_old
# ---------------------------------------------------------------------------------------------------
# pi_old, the ratio's denominator, is the policy that drew the rollouts. It is taken from the training
# forward, not from the log-probs the sampler recorded: in bf16 one-token decode kernels and a
# full-sequence forward round differently, and that gap would enter the ratio. With one update per
# batch pi_old is the update's own log-probs, detached, so the ratio is exactly 1 at no cost; with
# --num-iterations > 1, one no-grad pass in the update's micro-batches before the first update. The
# sampler's log-probs stay as a monitor (sampler_gap_mean / _max; docs/precision.md).
def reference_and_old_logprobs(run, batch, cfg):
    """Fill in the log-probs the objective reads besides the update's own: pi_ref (--beta > 0; DPO's
    initial reference, as sequence sums) and pi_old with --num-iterations > 1 (DPO's 'old' reference).
    pi_ref is the frozen copy run.ref_model, or with LoRA the policy itself with its adapters off."""
    if cfg.beta > 0 or (cfg.loss == "dpo" and cfg.dpo_ref == "initial"):
        frozen = run.ref_model
        with contextlib.nullcontext(frozen) if frozen is not None else adapters_off(run.model) as ref_model:
            ref_logp = reference_logprobs(ref_model, batch, cfg)                              # (B, T)
        if cfg.beta > 0:
            batch.ref_logp = ref_logp
        if cfg.loss == "dpo" and cfg.dpo_ref == "initial":
            batch.ref_seq = (ref_logp * batch.mask).sum(1)                                      # (B,)
    if cfg.num_iterations > 1:
        batch.old_logp = old_logprobs(run.model, batch, cfg)
        if cfg.loss == "dpo" and cfg.dpo_ref == "old":
            batch.ref_seq = (batch.old_logp * batch.mask).sum(1)


def logprobs_of_rows(model, batch, rows, cfg):
    """(len(rows), T) log-probs of the rollout rows `rows` (indices or a slice) under `model`."""
    with autocast(batch.tokens.device, cfg.dtype):
        return sequence_logprobs(model, batch.prompt_ids[rows], batch.prompt_mask[rows], batch.tokens[rows],
                                 batch.mask[rows], temperature=cfg.temperature,
                                 chunk_size=cfg.logprob_chunk or None)


@torch.no_grad()
def old_logprobs(model, batch, cfg):
    """(B, T) log pi_old for --num-iterations > 1, in the update's micro-batches (the same forward to the
    bit, so the first update's ratio is exactly 1 in any dtype); rows it does not run keep the sampler's."""
    old = batch.sampler_logp.clone()
    for rows in micro_batches(batch, cfg)[0]:      # padding passes too: as many as every other rank (FSDP)
        logp = logprobs_of_rows(model, batch, torch.tensor([0]) if rows is None else rows, cfg).float()
        if rows is not None:
            old[rows] = logp
    return old


@torch.no_grad()
def reference_logprobs(ref_model, batch, cfg):
    """(B, T) log-probs of the rollouts under the frozen reference model, micro-batched."""
    B, mb = batch.tokens.shape[0], cfg.micro_batch_size
    return torch.cat([logprobs_of_rows(ref_model, batch, slice(s, s + mb), cfg).float()
                      for s in range(0, B, mb)])


# ---------------------------------------------------------------------------------------------------
# The update: gradients accumulated over micro-batches, then one optimizer step
# ---------------------------------------------------------------------------------------------------
def update_policy(run, batch, cfg):
    """--num-iterations optimizer steps on one batch. Logs the last update's statistics, the sampler gap
    of the first (where pi_old is measured against the sampler), and with several updates the first's
    ratio and clip share (1 and 0: see pi_old above). Nothing when no row carries a learning signal."""
    updates = []
    for _ in range(cfg.num_iterations):
        run.optimizer.zero_grad(set_to_none=True)
        stats = accumulate_gradients(run.model, batch, cfg)
        if stats is None:
            return {}
        stats["grad_norm"] = optimizer_step(run.model, run.optimizer, cfg)
        updates.append(stats)
    first, last = updates[0], updates[-1]
    out = {**last, **{k: v for k, v in first.items() if k.startswith("sampler_gap")}}
    if len(updates) > 1:
        out.update(ratio_mean_first_update=first["ratio_mean"], clip_frac_first_update=first["clip_frac"])
    return out


def accumulate_gradients(model, batch, cfg):
    """The gradient of the batch's loss, GRPO (cfg.loss == "grpo") or DPO ("dpo"), accumulated in p.grad.

    Micro-batches of cfg.micro_batch_size rows, each loss scaled by its share of the batch's total
    (grpo.aggregation_weight): the summed gradient is the full batch's. --skip-ties does not run
    zero-advantage rows, which add 0 to loss and gradient, but counts them in the total: a pure
    speed-up. --filter-ties (DAPO) leaves them out of the total too: a step 1 / (1 - tie share) larger.
    Under torchrun every rank runs as many backward passes (zero-weight padding) so none waits forever.
    Returns the statistics to log, or None when no rollout carries a learning signal.
    """
    chunks, weights, total = micro_batches(batch, cfg)
    if not chunks:
        return None
    stats_sum, stat_w, loss_sum = {}, 0.0, 0.0
    gaps = []                        # |log pi_train - log pi_sampler| of the tokens run, (b, T) each
    for i, rows in enumerate(chunks):
        with parallel.no_sync(model, last=i == len(chunks) - 1):   # DDP: all-reduce once, after the last
            if rows is None:                    # padding: a backward through every weight, adding 0
                (logprobs_of_rows(model, batch, torch.tensor([0]), cfg).sum() * 0.0).backward()
                continue
            logp = logprobs_of_rows(model, batch, rows, cfg)                                   # (b, T)
            loss, stats = microbatch_loss(logp, batch, rows, cfg)
            share = (weights[i] / total).item()
            (loss * share).backward()
        loss_sum += loss.item() * share            # loss = sum over micro-batches of loss_mb * share_mb
        for k, v in stats.items():
            stats_sum[k] = stats_sum.get(k, 0.0) + v * weights[i].item()
        stat_w += weights[i].item()
        gaps.append(((logp.detach().float() - batch.sampler_logp[rows]).abs(), batch.mask[rows]))
    # loss: the batch's (over all ranks); clip_frac, ratio_mean, kl: means over the rows that were run
    out = {**{k: v / max(stat_w, 1e-12) for k, v in stats_sum.items()},
           "loss": parallel.all_reduce(torch.tensor(loss_sum), "mean").item()}
    if gaps:     # how far the sampler's log-probs are from the training forward's: mean, max over tokens
        gap, seen = torch.cat([g for g, _ in gaps]), torch.cat([m for _, m in gaps])             # (rows, T)
        out.update(sampler_gap_mean=((gap * seen).sum() / seen.sum()).item(),
                   sampler_gap_max=(gap * seen).max().item())
    return out


def micro_batches(batch, cfg):
    """How the update splits the batch: (chunks of rows, their weights, the total weight), each chunk's
    loss weighted by its share of the batch's (grpo.aggregation_weight; DPO: its share of the pairs);
    under torchrun the list ends with a None for each padding pass (parallel.pad_to_ranks)."""
    aggregation = cfg.aggregation if cfg.loss == "grpo" else "seq_mean"      # DPO: a mean over pairs
    rows = torch.arange(batch.tokens.shape[0])
    total = aggregation_weight(batch.mask, aggregation)                  # the whole batch, ties included
    ties_out = cfg.filter_ties or cfg.loss == "dpo"                          # DPO: a tie makes no pair
    if ties_out or (cfg.skip_ties and cfg.beta == 0):
        rows = rows[(batch.advantages != 0).cpu()]            # zero advantage, zero gradient: skip the work
    if ties_out:
        total = aggregation_weight(batch.mask[rows], aggregation)                  # informative rows only
    pair = 2 if cfg.loss == "dpo" else 1                                        # DPO: whole pairs
    size = max(pair, cfg.micro_batch_size // pair * pair)
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
    weights = [aggregation_weight(batch.mask[c], aggregation) for c in chunks]
    total = parallel.all_reduce(total, "mean")                    # the engine averages gradients over ranks
    return parallel.pad_to_ranks(chunks), weights, total


def microbatch_loss(logp, batch, rows, cfg):
    """(loss, stats) of the rows `rows` from their log-probs logp (b, T), with gradient. pi_old is
    batch.old_logp, or logp itself, detached (pi_old above): the ratio exp(logp - old) is then exactly 1 and
    its gradient is grad logp. DPO's rows are pairs, chosen then rejected."""
    if cfg.loss == "dpo":
        seq = (logp * batch.mask[rows]).sum(1)                                            # (2n,) log pi(y)
        ref = seq.detach() if batch.ref_seq is None else batch.ref_seq[rows]             # (2n,) log pi_ref(y)
        return dpo_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], beta=cfg.dpo_beta)
    old = logp.detach() if batch.old_logp is None else batch.old_logp[rows]
    ref = batch.ref_logp[rows] if cfg.beta > 0 else None
    return grpo_loss(logp, old, batch.advantages[rows], batch.mask[rows], eps_low=cfg.eps_low,
                     eps_high=cfg.eps_high, beta=cfg.beta, ref_logp=ref, aggregation=cfg.aggregation,
                     max_tokens=completion_tokens(cfg.max_new_tokens, cfg.data))


def optimizer_step(model, optimizer, cfg):
    """Clip the gradient's norm (--grad-clip), step, and free the gradients (sampling and evaluation need
    the memory). Returns the norm before clipping."""
    params = parallel.unwrap(model).parameters()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm.item()
