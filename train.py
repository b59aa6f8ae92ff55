"""train.py: GRPO (and online DPO) on verifiable math: the training step and the loop.

Chapter 5 of the tutorial. One training step:

    prompts  --rollout.sample-->  G completions each  --reward.rewards-->  r  (1 right, 0 wrong)
    r  --grpo.group_advantages-->  A  --grpo.grpo_loss over micro-batches-->  one optimizer step

    python train.py --group-size 2            # built-in task and tiny model: offline, CPU, ~2 minutes
    python train.py --model Qwen/Qwen2.5-Math-1.5B --data math_train.jsonl --eval-data math500_test.jsonl ...
    torchrun --nproc_per_node 4 train.py ...  # data parallel (parallel.py); add --fsdp to shard the model

The GRPO variant this file trains, by default (each is a flag):
  1. advantages: (r - group mean) / group *population* std, so G = 2 gives exactly +1 / -1 (--advantage);
  2. DAPO's asymmetric clip of the ratio: [1 - 0.2, 1 + 0.28] (--eps-low, --eps-high);
  3. loss aggregation: the mean over sequences of each sequence's token mean (--aggregation);
  4. no KL penalty and no reference model unless --beta > 0;
  5. zero-advantage rollouts (groups whose rewards all tie) are skipped before the backward pass:
     they carry no gradient (--skip-ties);
  6. G = 2 is online DPO: grpo.py section 6 derives it, --loss dpo trains the DPO loss on the same pairs.

With no --model and no --data the built-in tiny model (tiny_model.py) learns 2-digit addition.
"""

import copy
import math
import os
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

import parallel
import plan
from checkpoint import StopFlag, append_metrics, prepare_out_dir, save_checkpoint, save_final, start_or_resume
from config import check_config, parse_args
from data import (DataError, completion_tokens, load_model_and_tokenizer, problem_sets, prompt_sets,
                  prompts_for_step, upcoming_prompts)
from eval import shared_accuracy
from grpo import (aggregation_weight, dpo_loss, group_advantages, grpo_loss, informative_groups,
                  preference_pairs, tie_probability)
from precision import autocast, precision
from resample import resample_ties
from reward import rewards
from rollout import left_pad, sample, sequence_logprobs, stop_token_ids
from tiny_model import builtin_model_dir



# ---------------------------------------------------------------------------------------------------
# The data of one step
# ---------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """The rollouts of one step as the update reads them: B = P * G rows, grouped by prompt."""
    prompt_ids: torch.Tensor         # (B, L) long   the left-padded prompt of each row
    prompt_mask: torch.Tensor        # (B, L) long   1 on prompt tokens
    tokens: torch.Tensor             # (B, T) long   sampled completions (rollout.Rollout)
    mask: torch.Tensor               # (B, T) float  1 on completion tokens
    sampler_logp: torch.Tensor       # (B, T) float  log-probs the sampler recorded (a monitor: see old_logp)
    advantages: torch.Tensor         # (B,)   float  one per completion (grpo.group_advantages)
    ref_logp: torch.Tensor = None    # (B, T) float  under the frozen reference model, when --beta > 0
    chosen: torch.Tensor = None      # (N,)   long   rows of the pairs whose rewards differ (--loss dpo)
    rejected: torch.Tensor = None    # (N,)   long   their other rows
    ref_seq: torch.Tensor = None     # (B,)   float  reference sequence log-probs (--loss dpo); None with
                                     #               --dpo-ref old and one update: the update's own, detached
    old_logp: torch.Tensor = None    # (B, T) float  log pi_old, the ratio's denominator: None = the update's
                                     #               own forward, detached (one update per batch), else
                                     #               the training model's before the first update


@dataclass
class Run:
    """What the loop carries from step to step."""
    raw_model: torch.nn.Module       # the policy: samples, and holds the weights
    model: torch.nn.Module           # the same model as the update runs it (DDP / FSDP2 under torchrun)
    ref_model: torch.nn.Module       # frozen copy (--beta > 0, or DPO's initial reference), else None
    optimizer: torch.optim.Optimizer
    tok: object                      # the tokenizer
    eos: list                        # token ids that end a completion (rollout.stop_token_ids)
    device: torch.device
    train_set: list                  # problems with "prompt_ids" and "gold"
    held_out: list
    rollouts: int = 0                # sampled so far, all ranks, resampled ones included
    data_pos: int = 0                # prompts of the data stream used so far, all ranks (data.stream_prompts)


# ---------------------------------------------------------------------------------------------------
# The training step: sample -> reward -> advantages -> loss -> optimizer step
# ---------------------------------------------------------------------------------------------------
def train_step(step, run, cfg):
    """One step of GRPO (or DPO) on fresh rollouts. Returns the row logged for this step."""
    t0 = time.perf_counter()
    G, tok, device = cfg.group_size, run.tok, run.device
    rank, world = parallel.rank_and_world()
    # 1. this step's prompts: P from the data stream at run.data_pos (data.py), this rank's share of them
    n_train, P = len(run.train_set), cfg.prompts_per_step
    picked = prompts_for_step(step, n_train, P, cfg.seed, rank, world, start=run.data_pos)
    problems = [run.train_set[i] for i in picked]                                      # P prompts
    # 2. G completions of each, their log-probs under the policy that sampled them, and 3. their rewards:
    #    1 where the final answer equals the gold answer (reward.py), else 0; --resample draws more
    #    groups where pairs tie (resample.py)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step * 1_009 + rank)
    # (under FSDP the whole weights are gathered once for the rollout: parallel.full_weights)
    memory = {}                                      # on a GPU: each phase's peak (plan.peak_memory)
    with plan.peak_memory(device, memory, "sampling"), autocast(device, cfg.dtype), \
            parallel.full_weights(run.raw_model):
        rollout, r = sample_groups(run, cfg, problems, gen)                                  # r: (P*G,)
        first_r, drawn = r, {"pairs_drawn": len(problems), "extra_rollouts": 0}
        if cfg.resample != "off":     # refills: the stream's next prompts, which the next steps then skip
            take, taken = upcoming_prompts(run.data_pos + P, n_train, cfg.seed, rank, world)
            problems, rollout, r, drawn = resample_ties(
                problems, rollout, r, lambda p: sample_groups(run, cfg, p, gen),
                lambda n: [run.train_set[i] for i in take(n)], G, cfg.resample, cfg.resample_budget,
                tok.pad_token_id)
            run.data_pos += world * int(parallel.all_reduce(torch.tensor(len(taken)), "max"))
    run.data_pos += P
    t_rollout = time.perf_counter() - t0
    # 4. advantages relative to each prompt's group: A = (r - mean_g) / std_g                 (P*G,)
    adv = group_advantages(r, G, cfg.advantage)
    # 5. the batch the update reads: every row carries its prompt (and, if needed, reference log-probs)
    prompt_ids, prompt_mask, _ = left_pad([p["prompt_ids"] for p in problems], tok.pad_token_id, device)
    rows = torch.arange(len(problems), device=device).repeat_interleave(G)                   # (P*G,)
    batch = Batch(prompt_ids[rows], prompt_mask[rows], rollout.tokens, rollout.mask, rollout.logprobs, adv)
    if cfg.beta > 0:
        batch.ref_logp = reference_logprobs(run.ref_model, batch, cfg)
    if cfg.loss == "dpo":
        batch.chosen, batch.rejected = preference_pairs(r, 2)
        if cfg.dpo_ref == "initial":
            batch.ref_seq = (reference_logprobs(run.ref_model, batch, cfg) * rollout.mask).sum(1)   # (P*G,)
    # 6. pi_old, the ratio's denominator, comes from the training forward, not from the sampler (whose
    #    one-token decode kernels round differently in bf16): with one update per batch it is the update's
    #    own log-probs, detached (ratio exactly 1); with more, one no-grad pass before the first update
    if cfg.num_iterations > 1:
        batch.old_logp = old_logprobs(run.model, batch, cfg)
        if cfg.loss == "dpo" and cfg.dpo_ref == "old":
            batch.ref_seq = (batch.old_logp * rollout.mask).sum(1)
    # 7. the update: --num-iterations optimizer steps on these rollouts (1: on-policy)
    t1 = time.perf_counter()
    with plan.peak_memory(device, memory, "update"):
        updates = [policy_update(run.model, run.optimizer, batch, cfg) or {}
                   for _ in range(cfg.num_iterations)]
    stats = dict(updates[-1])                          # the last update's statistics, and from the first:
    stats.update({k: v for k, v in updates[0].items() if k.startswith("sampler_gap")})   # |pi_old - sampler|
    if cfg.num_iterations > 1 and updates[0]:                                             # ratio 1, no clip
        stats.update(ratio_mean_first_update=updates[0]["ratio_mean"],
                     clip_frac_first_update=updates[0]["clip_frac"])
    times = {"rollout_s": round(t_rollout, 4), "train_s": round(time.perf_counter() - t1, 4),
             "tokens_per_s": round(rollout.mask.sum().item() / max(t_rollout, 1e-9), 1)}
    return {**{k: v for k, v in stats.items() if k != "adv_mean"}, "step": step,
            **batch_metrics(run, cfg, first_r, r, adv, rollout, drawn), **times, **memory,
            "lr": run.optimizer.param_groups[0]["lr"], "step_s": round(time.perf_counter() - t0, 4)}


def batch_metrics(run, cfg, first_r, r, adv, rollout, drawn):
    """What the step's rollouts say, over all ranks: the pass rate on the step's own prompts (first_r,
    the first draw's rewards), the tie share observed and predicted from it (grpo.tie_probability),
    what --resample drew (r: the trained batch's rewards), where the data stream is."""
    G, P = cfg.group_size, cfg.prompts_per_step
    mean, total = parallel.mean_over_ranks, lambda x: int(parallel.all_reduce(torch.tensor(x)))
    p = mean(first_r)                                                     # the policy's pass rate
    trained_informative = total(int(informative_groups(r, G).sum()))
    return {"reward_mean": p, "accuracy": mean((first_r > 0).float()),
            "adv_mean": adv.mean().item(), "adv_std": adv.std(unbiased=False).item(),
            "tie_frac": mean((~informative_groups(first_r, G)).float()),    # observed, and if every prompt
            "tie_predicted": tie_probability(p, G),                         # had the batch's pass rate
            "informative_pairs": trained_informative, "informative_share": trained_informative / P,
            "pairs_drawn": total(drawn["pairs_drawn"]), "extra_rollouts": total(drawn["extra_rollouts"]),
            "data_pos": run.data_pos, "epoch": round(run.data_pos / len(run.train_set), 4),
            "response_len": mean(rollout.lengths.float())}


def sample_groups(run, cfg, problems, gen):
    """G completions of each problem (a Rollout of P*G rows) and their rewards r (P*G,), 1 or 0."""
    rollout = sample(run.raw_model, [p["prompt_ids"] for p in problems], n=cfg.group_size,
                     max_new_tokens=completion_tokens(cfg.max_new_tokens, cfg.data),
                     temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, eos_token_id=run.eos,
                     pad_token_id=run.tok.pad_token_id, generator=gen,
                     max_batch_size=cfg.rollout_batch_size or None, tokenizer=run.tok, compile=cfg.compile)
    golds = [p["gold"] for p in problems for _ in range(cfg.group_size)]
    return rollout, torch.tensor(rewards(rollout.texts, golds), device=run.device)


def micro_batches(batch, cfg):
    """How the update splits the batch: (chunks, weights, total). GRPO: chunks of rows, DPO: chunks of
    pairs, each weighted by its share of the batch's loss (grpo.aggregation_weight); under torchrun the
    list ends with a None for each padding pass (parallel.pad_to_ranks)."""
    mb = cfg.micro_batch_size
    if cfg.loss == "grpo":
        rows = torch.arange(batch.tokens.shape[0])
        total = aggregation_weight(batch.mask, cfg.aggregation)         # the whole batch, ties included
        if cfg.filter_ties or (cfg.skip_ties and cfg.beta == 0):
            rows = rows[(batch.advantages != 0).cpu()]    # zero advantage, zero gradient: skip the work
        if cfg.filter_ties:
            total = aggregation_weight(batch.mask[rows], cfg.aggregation)   # informative rows only
        chunks = [rows[i:i + mb] for i in range(0, len(rows), mb)]
        weights = [aggregation_weight(batch.mask[c], cfg.aggregation) for c in chunks]
    else:
        pairs = torch.arange(batch.chosen.shape[0])
        per = max(1, mb // 2)
        chunks = [pairs[i:i + per] for i in range(0, len(pairs), per)]
        weights = [torch.tensor(float(len(c))) for c in chunks]
        total = sum(weights, torch.tensor(0.0))           # DPO: the mean over informative pairs
    total = parallel.all_reduce(total, "mean")            # the engine averages gradients over ranks
    return parallel.pad_to_ranks(chunks), weights, total


def chunk_rows(batch, idx, cfg):
    """The rollout rows a chunk runs: GRPO's rows idx, DPO's pairs idx as [chosen..., rejected...], or
    row 0 for a padding pass (idx None)."""
    if idx is None:
        return torch.tensor([0])
    return idx if cfg.loss == "grpo" else torch.cat([batch.chosen[idx], batch.rejected[idx]])


def policy_update(model, optimizer, batch, cfg):
    """One optimizer step of GRPO (cfg.loss == "grpo") or DPO ("dpo") on a Batch of rollouts.

    Micro-batches of cfg.micro_batch_size rows, each loss scaled by its share of the batch's total
    (grpo.aggregation_weight): the summed gradient is the full batch's. --skip-ties does not run
    zero-advantage rows, which add 0 to loss and gradient, but counts them in the total: a pure
    speed-up. --filter-ties (DAPO) leaves them out of the total too: a step 1 / (1 - tie share) larger.
    Under torchrun every rank runs as many backward passes (zero-weight padding) so none waits forever.
    Returns the statistics to log, or None when no rollout carried a learning signal.
    """
    chunks, weights, total = micro_batches(batch, cfg)
    if not chunks:
        return None
    optimizer.zero_grad(set_to_none=True)
    stats_sum, stat_w, loss_sum = {}, 0.0, 0.0
    gaps = []                        # |log pi_train - log pi_sampler| of the tokens run, (b, T) each
    for i, idx in enumerate(chunks):
        rows = chunk_rows(batch, idx, cfg)
        with parallel.no_sync(model, last=i == len(chunks) - 1):   # DDP: all-reduce once, after the last
            logp = logprobs_of_rows(model, batch, rows, cfg)                                  # (b, T)
            if idx is None:                     # padding: a backward through every weight, adding 0
                (logp.sum() * 0.0).backward()
                continue
            loss, stats = microbatch_loss(logp, batch, idx, cfg)
            share = (weights[i] / total).item()
            (loss * share).backward()
        loss_sum += loss.item() * share            # loss = sum over micro-batches of loss_mb * share_mb
        for k, v in stats.items():
            stats_sum[k] = stats_sum.get(k, 0.0) + v * weights[i].item()
        stat_w += weights[i].item()
        gaps.append(((logp.detach().float() - batch.sampler_logp[rows]).abs(), batch.mask[rows]))
    params = parallel.unwrap(model).parameters()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)       # freed now: sampling and evaluation need the memory
    # loss: the batch's (over all ranks); clip_frac, ratio_mean, kl: means over the rows that were run
    out = {**{k: v / max(stat_w, 1e-12) for k, v in stats_sum.items()}, "grad_norm": grad_norm.item(),
           "loss": parallel.all_reduce(torch.tensor(loss_sum), "mean").item()}
    if gaps:     # how far the sampler's log-probs are from the training forward's: mean, max over tokens
        gap, seen = torch.cat([g for g, _ in gaps]), torch.cat([m for _, m in gaps])             # (rows, T)
        out.update(sampler_gap_mean=((gap * seen).sum() / seen.sum()).item(),
                   sampler_gap_max=(gap * seen).max().item())
    return out


def microbatch_loss(logp, batch, idx, cfg):
    """(loss, stats) of the rows idx (GRPO) or of the pairs idx (DPO), from their log-probs logp (b, T),
    with gradient, of chunk_rows' rows. pi_old is batch.old_logp, or else logp itself, detached: so the
    ratio exp(logp - old) is exactly 1 and its gradient is grad logp."""
    if cfg.loss == "grpo":
        old = logp.detach() if batch.old_logp is None else batch.old_logp[idx]
        return grpo_loss(logp, old, batch.advantages[idx], batch.mask[idx], cfg.eps_low,
                         cfg.eps_high, cfg.beta, batch.ref_logp[idx] if cfg.beta > 0 else None,
                         cfg.aggregation, max_tokens=completion_tokens(cfg.max_new_tokens, cfg.data))
    rows = chunk_rows(batch, idx, cfg)                      # one forward over the chosen and rejected rows
    seq = (logp * batch.mask[rows]).sum(1)                                               # (2N,) log pi(y)
    ref = seq.detach() if batch.ref_seq is None else batch.ref_seq[rows]                # (2N,) log pi_ref(y)
    n = len(idx)
    return dpo_loss(seq[:n], seq[n:], ref[:n], ref[n:], beta=cfg.dpo_beta)


def logprobs_of_rows(model, batch, rows, cfg):
    """(len(rows), T) log-probs of the rollout rows `rows` (indices or a slice) under `model`."""
    with autocast(batch.tokens.device, cfg.dtype):
        return sequence_logprobs(model, batch.prompt_ids[rows], batch.prompt_mask[rows], batch.tokens[rows],
                                 batch.mask[rows], cfg.temperature, cfg.logprob_chunk or None,
                                 wrapped=parallel.is_data_parallel(model))


@torch.no_grad()
def old_logprobs(model, batch, cfg):
    """(B, T) log pi_old for --num-iterations > 1: the training model's own log-probs before the first
    update, in the update's micro-batches (the same forward to the bit, so the first update's ratio is
    exactly 1 in any dtype); rows the update does not run keep the sampler's."""
    old = batch.sampler_logp.clone()
    for idx in micro_batches(batch, cfg)[0]:        # padding passes too: as many as every other rank (FSDP)
        rows = chunk_rows(batch, idx, cfg)
        logp = logprobs_of_rows(model, batch, rows, cfg).float()
        if idx is not None:
            old[rows] = logp
    return old


@torch.no_grad()
def reference_logprobs(ref_model, batch, cfg):
    """(B, T) log-probs of the rollouts under the frozen reference model, micro-batched."""
    B, mb = batch.tokens.shape[0], cfg.micro_batch_size
    return torch.cat([logprobs_of_rows(ref_model, batch, slice(s, s + mb), cfg).float()
                      for s in range(0, B, mb)])


def learning_rate(step, cfg):
    """--lr at `step`: linear warm-up, then constant, cosine or linear decay to 0. A function of the step
    alone (set before each step, as nanoGPT does), so a step that makes no update moves it all the same
    and a resumed run needs no schedule state."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else max(0.0, 1 - frac))


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------
def setup(cfg, device, log):
    """Data, model, reference, optimizer: everything the loop needs. A bad file fails before any model."""
    train_set, held_out = problem_sets(cfg.data, cfg.eval_data, cfg.problem_field, cfg.answer_field)
    path = cfg.model or builtin_model_dir(cfg.cache_dir, cfg.seed, cfg.warm_start_target, device, log)
    home = "cpu" if cfg.cpu_offload else device   # --cpu-offload: parallel.wrap moves it a layer at a time
    raw_model, tok = load_model_and_tokenizer(path, home, cfg.dtype, cfg.gradient_checkpointing)
    mixed = torch.bfloat16 if precision(cfg.dtype, device) == "mixed" else None   # bf16 compute, fp32 weights
    train_set, held_out = prompt_sets(train_set[:cfg.train_problems or None], held_out, tok, cfg.template,
                                      not cfg.data, cfg.max_prompt_tokens, log)
    ref_model = None                       # a frozen copy, in bf16 under mixed precision
    if cfg.beta > 0 or (cfg.loss == "dpo" and cfg.dpo_ref == "initial"):
        ref_model = copy.deepcopy(raw_model).eval().requires_grad_(False).to(device, mixed or raw_model.dtype)
    # torchrun: DDP or FSDP2 shards; --cpu-offload: FSDP2, state in host memory (before the optimizer is made)
    model = parallel.wrap(raw_model, cfg.fsdp, device, mixed, cfg.cpu_offload)
    # on a GPU the fused AdamW step: one kernel, no full-size temporary (the foreach step makes N x 4 bytes)
    fused = {"fused": True} if device.type == "cuda" and not cfg.cpu_offload else {}
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    return Run(raw_model, model, ref_model, optimizer, tok, stop_token_ids(raw_model, tok), device,
               train_set, held_out[:cfg.eval_problems])


def held_out_accuracy(run, cfg):
    """Mean@k on the held-out problems (None without any); the ranks share them (eval.shared_accuracy)."""
    with autocast(run.device, cfg.dtype):
        return shared_accuracy(run.raw_model, run.tok, run.held_out, samples=cfg.eval_samples,
                               temperature=cfg.eval_temperature, top_p=cfg.eval_top_p, top_k=cfg.eval_top_k,
                               max_new_tokens=completion_tokens(cfg.max_new_tokens, cfg.data),
                               eos_token_id=run.eos, seed=cfg.seed,
                               batch_size=cfg.rollout_batch_size or 256,   # as many rows as a rollout
                               progress=cfg.progress)


def train(cfg):
    """Run GRPO / DPO as configured; returns a summary dict (accuracy before and after, rollouts, time)."""
    t_start = time.perf_counter()
    _, world, device = parallel.init(cfg.device, one_rank_group=cfg.cpu_offload)
    check_config(cfg, world)
    log = tqdm.write if parallel.is_main() else (lambda msg: None)
    prepare_out_dir(cfg, log)                           # no run is lost or mixed with another
    run = setup(cfg, device, log)
    plan.check_run(cfg, run, world, log)                # on a GPU: will it fit? (plan.py)
    start, progress = start_or_resume(cfg, run.model, run.optimizer, log)
    run.rollouts = progress.get("rollouts", 0)
    run.data_pos = progress.get("data_pos", start * cfg.prompts_per_step)
    acc_before = held_out_accuracy(run, cfg) if start == 0 else None
    if acc_before is not None:
        log(f"held-out accuracy before: {acc_before:.1%} ({len(run.held_out)} problems)")
    elif not run.held_out:
        log("no held-out set: accuracy is not measured during training "
            "(pass one with --eval-data FILE.jsonl)")
    stop = StopFlag()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=cfg.loss, dynamic_ncols=True,
               disable=not (parallel.is_main() and cfg.progress))
    try:
        for step in bar:
            for group in run.optimizer.param_groups:        # the schedule follows the step index
                group["lr"] = learning_rate(step, cfg)
            row = train_step(step, run, cfg)
            # ---- bookkeeping: metrics, held-out evaluation, checkpoints, Ctrl-C ---------------------
            done = step + 1
            run.rollouts += row["pairs_drawn"] * cfg.group_size
            row["rollouts"] = run.rollouts
            if run.held_out and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                with plan.peak_memory(run.device, row, "evaluation"):
                    row["held_out_acc"] = held_out_accuracy(run, cfg)
            append_metrics(cfg.out_dir, row)
            bar.set_postfix({k: f"{row[k]:.2f}" for k in ("reward_mean", "accuracy", "tie_frac", "step_s",
                                                            "held_out_acc") if row.get(k) is not None})
            # every rank stops at the same step (Ctrl-C may reach the ranks at different moments)
            stopping = bool(parallel.all_reduce(torch.tensor(float(stop.stop)), "max"))
            if cfg.save and (done % cfg.save_every == 0 or done == cfg.steps or stopping):
                save_checkpoint(os.path.join(cfg.out_dir, "checkpoint.pt"), run.model, run.optimizer,
                                done, cfg, {"rollouts": run.rollouts, "data_pos": run.data_pos})
            if stopping:
                parallel.barrier()
                log(f"stopped at step {done}; checkpoint saved: resume with the same command and --resume")
                raise SystemExit(130)
    finally:
        stop.restore()
        bar.close()
    return finish(run, cfg, acc_before, t_start, log)


def finish(run, cfg, acc_before, t_start, log):
    """Held-out accuracy after training, the final model (an ordinary Hugging Face directory), the summary."""
    parallel.barrier()
    acc_after = held_out_accuracy(run, cfg)
    wall = time.perf_counter() - t_start
    summary = {"held_out_before": acc_before, "held_out_after": acc_after,
               "rollouts": run.rollouts, "steps": cfg.steps,
               "wall_s": round(wall, 1), "out_dir": cfg.out_dir}
    save_final(cfg.out_dir, run.model, run.tok, summary, save_model=cfg.save)
    before = f"{acc_before:.1%}" if acc_before is not None else "(see the run's first part)"
    acc = ("not measured (no held-out set: pass one with --eval-data FILE.jsonl)" if acc_after is None
           else f"{before} -> {acc_after:.1%}")
    log(f"held-out accuracy: {acc} | rollouts: {summary['rollouts']} | wall time: {wall:.0f} s | "
        f"model: {os.path.join(cfg.out_dir, 'model')}")
    return summary


def main(argv=None):
    cfg = parse_args(argv, description=__doc__)
    import transformers
    transformers.utils.logging.disable_progress_bar()     # our bars only
    try:
        return plan.main(cfg) if cfg.plan else train(cfg)
    except DataError as e:
        raise SystemExit(f"error: {e}")
    finally:
        parallel.shutdown()


if __name__ == "__main__":
    main()
