"""train.py: GRPO (and online DPO) on verifiable math: the training step and the loop.

Chapter 5 of the tutorial. One training step:

    prompts  --rollout.sample-->  G completions each  --reward.rewards-->  r  (1 right, 0 wrong)
    r  --grpo.group_advantages-->  A  --grpo.grpo_loss over micro-batches-->  one optimizer step

    python train.py --group-size 2            # built-in task and tiny model: offline, CPU, ~3 minutes
    python train.py --model Qwen/Qwen2.5-Math-1.5B --data data/math_train.jsonl ...    # docs/training.md
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
from checkpoint import (PhaseClock, StopFlag, append_metrics, prepare_out_dir, save_checkpoint, save_final,
                        start_or_resume)
from config import check_config, learning_rate_of, names, parse_args
from data import (DataError, completion_tokens, load_model_and_tokenizer, problem_sets, prompt_sets,
                  prompts_for_step, upcoming_prompts)
from eval import shared_accuracy
from grpo import group_advantages, informative_groups, tie_probability
from lora import add_adapters, train_modules
from precision import autocast, precision
from resample import resample_ties
from reward import rewards
from rollout import Sampling, decoder_for, sample, stop_token_ids
from tiny_model import builtin_model_dir
from update import make_batch, reference_and_old_logprobs, update_policy


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
    sampling: Sampling               # how rollouts are drawn (--temperature, --top-p, ...)
    decoder: object = None           # rollout.sample's decoder: None (eager), or compiled (--compile)
    clock: PhaseClock = None         # seconds and peak memory of each phase, for the metrics row
    model_path: str = ""             # the model's directory or hub id (LoRA: the adapters' base)
    rollouts: int = 0                # sampled so far, all ranks, resampled ones included
    data_pos: int = 0                # prompts of the data stream used so far, all ranks (data.stream_prompts)


# ---------------------------------------------------------------------------------------------------
# The training step: prompts -> rollouts and rewards -> advantages -> batch -> log-probs -> updates
# ---------------------------------------------------------------------------------------------------
def train_step(step, run, cfg):
    """One step of GRPO (or DPO) on fresh rollouts. Returns what the step logs."""
    # 1. this step's prompts: P from the data stream at run.data_pos (data.py), this rank's share of them
    problems = step_problems(step, run, cfg)
    # 2. G completions of each and their rewards r (P*G,): 1 where the final answer equals the gold
    #    answer (reward.py), else 0; with --resample, more groups where pairs tie (resample.py)
    with run.clock("sampling"):
        problems, rollout, r, drawn = sample_and_reward(step, run, cfg, problems)
    # 3. advantages relative to each prompt's group: A = (r - mean_g) / std_g                 (P*G,)
    adv = group_advantages(r, cfg.group_size, cfg.advantage)
    # 4. the batch the update reads: each row with its prompt (DPO: the informative pairs)
    batch = make_batch(problems, rollout, r, adv, cfg, pad_token_id=run.tok.pad_token_id)
    # 5. the log-probs the objective compares with: pi_ref, and pi_old where it is not the update's own
    with run.clock("logprobs"):
        reference_and_old_logprobs(run, batch, cfg)
    # 6. the updates: --num-iterations optimizer steps on these rollouts (1: on-policy)
    with run.clock("update"):
        stats = update_policy(run, batch, cfg)
    return {**stats, **batch_metrics(run, cfg, drawn, r, adv, rollout)}


def step_problems(step, run, cfg):
    """The step's problems: P prompts of the data stream from run.data_pos, this rank's share of them."""
    rank, world = parallel.rank_and_world()
    picked = prompts_for_step(step, n_train=len(run.train_set), prompts_per_step=cfg.prompts_per_step,
                              seed=cfg.seed, rank=rank, world=world, start=run.data_pos)
    run.data_pos += cfg.prompts_per_step
    return [run.train_set[i] for i in picked]


def rollout_seed(seed, step, rank):
    """The sampling seed of one step on one rank: a function of (seed, step, rank) alone, so a resumed
    run draws what the uninterrupted one drew, and the ranks draw different completions."""
    return seed * 1_000_003 + step * 1_009 + rank


def sample_and_reward(step, run, cfg, problems):
    """G completions of each problem and their rewards; with --resample, tied pairs replaced (resample.py)
    by the data stream's next prompts (which the next steps then skip) or the same prompts again.
    Returns (problems, Rollout of P*G rows, rewards (P*G,), what was drawn: the first draw's rewards)."""
    rank, world = parallel.rank_and_world()
    gen = torch.Generator(device=run.device).manual_seed(rollout_seed(cfg.seed, step, rank))

    def sample_groups(batch_problems):
        rollout = sample(run.raw_model, [p["prompt_ids"] for p in batch_problems], n=cfg.group_size,
                         sampling=run.sampling, eos_token_id=run.eos, pad_token_id=run.tok.pad_token_id,
                         generator=gen, tokenizer=run.tok, decoder=run.decoder)
        golds = [p["gold"] for p in batch_problems for _ in range(cfg.group_size)]
        return rollout, torch.tensor(rewards(rollout.texts, golds), device=run.device)
    # (under FSDP the whole weights are gathered once for the rollout: parallel.full_weights)
    with autocast(run.device, cfg.dtype), parallel.full_weights(run.raw_model):
        rollout, r = sample_groups(problems)
        drawn = {"first_rewards": r, "pairs_drawn": len(problems), "extra_rollouts": 0}
        if cfg.resample != "off":
            take, taken = upcoming_prompts(run.data_pos, n_train=len(run.train_set), seed=cfg.seed, rank=rank,
                                           world=world)
            def upcoming(n):                 # the stream's next n problems (the next steps skip them)
                return [run.train_set[i] for i in take(n)]
            problems, rollout, r, counts = resample_ties(
                problems, rollout, r, draw=sample_groups, upcoming=upcoming, group_size=cfg.group_size,
                mode=cfg.resample, budget=cfg.resample_budget, pad_token_id=run.tok.pad_token_id)
            drawn.update(counts)
            run.data_pos += world * int(parallel.all_reduce(torch.tensor(len(taken)), "max"))
    return problems, rollout, r, drawn


def batch_metrics(run, cfg, drawn, r, adv, rollout):
    """What the step's rollouts say, over all ranks: the pass rate on the step's own prompts (the first
    draw's rewards), the tie share observed and predicted from it (grpo.tie_probability), what
    --resample drew (r: the trained batch's rewards), where the data stream is."""
    G, P, first = cfg.group_size, cfg.prompts_per_step, drawn["first_rewards"]
    mean, total = parallel.mean_over_ranks, lambda x: int(parallel.all_reduce(torch.tensor(x)))
    p = mean(first)                                                       # the policy's pass rate
    trained_informative = total(int(informative_groups(r, G).sum()))
    return {"reward_mean": p, "accuracy": mean((first > 0).float()),
            "adv_mean": adv.mean().item(), "adv_std": adv.std(unbiased=False).item(),
            "tie_frac": mean((~informative_groups(first, G)).float()),    # observed, and if every prompt
            "tie_predicted": tie_probability(p, G),                         # had the batch's pass rate
            "informative_pairs": trained_informative, "informative_share": trained_informative / P,
            "pairs_drawn": total(drawn["pairs_drawn"]), "extra_rollouts": total(drawn["extra_rollouts"]),
            "data_pos": run.data_pos, "epoch": round(run.data_pos / len(run.train_set), 4),
            "response_len": mean(rollout.lengths.float()), "completion_tokens": int(rollout.mask.sum())}


def learning_rate(step, cfg):
    """--lr at `step`: linear warm-up, then constant, cosine or linear decay to 0. A function of the step
    alone (set before each step, as nanoGPT does), so a step that makes no update moves it all the same
    and a resumed run needs no schedule state."""
    lr = learning_rate_of(cfg)                       # --lr, or its default (LoRA's larger)
    if step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return lr
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return lr * (0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else max(0.0, 1 - frac))


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------
def setup(cfg, device, log):
    """Data, model, reference, optimizer: everything the loop needs. A bad file fails before any model."""
    train_set, held_out = problem_sets(cfg.data, cfg.eval_data, cfg.problem_field, cfg.answer_field)
    path = cfg.model or builtin_model_dir(cfg.cache_dir, cfg.seed, cfg.warm_start_target, device, log)
    home = "cpu" if cfg.cpu_offload else device   # --cpu-offload: parallel.wrap moves it a layer at a time
    mixed = torch.bfloat16 if precision(cfg.dtype, device) == "mixed" else None   # bf16 compute, fp32 weights
    weights = "bfloat16" if cfg.lora_rank and mixed else cfg.dtype       # LoRA: a frozen base in bf16 will do
    raw_model, tok = load_model_and_tokenizer(path, home, weights, cfg.gradient_checkpointing)
    if cfg.lora_rank:                   # adapters beside the frozen model (lora.py); only they train
        try:
            add_adapters(raw_model, cfg.lora_rank, cfg.lora_alpha, names(cfg.lora_targets), seed=cfg.seed)
            if names(cfg.lora_modules_to_save):         # modules trained in full beside them (the embedding, ...)
                train_modules(raw_model, names(cfg.lora_modules_to_save), torch.float32 if mixed else raw_model.dtype)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    train_set, held_out = prompt_sets(train_set[:cfg.train_problems or None], held_out, tok,
                                      template=cfg.template, builtin=not cfg.data,
                                      max_tokens=cfg.max_prompt_tokens, log=log)
    ref_model = None      # a frozen copy, in bf16 under mixed precision (LoRA: the model, adapters off)
    if (cfg.beta > 0 or (cfg.loss == "dpo" and cfg.dpo_ref == "initial")) and not cfg.lora_rank:
        ref_model = copy.deepcopy(raw_model).eval().requires_grad_(False).to(device, mixed or raw_model.dtype)
    # torchrun: DDP or FSDP2 shards; --cpu-offload: FSDP2, state in host memory (before the optimizer is made)
    model = parallel.wrap(raw_model, fsdp=cfg.fsdp, device=device, compute_dtype=mixed,
                          cpu_offload=cfg.cpu_offload)
    # on a GPU the fused AdamW step: one kernel, no full-size temporary (the foreach step makes N x 4 bytes)
    fused = {"fused": True} if device.type == "cuda" and not cfg.cpu_offload else {}
    trainable = [p for p in raw_model.parameters() if p.requires_grad]               # LoRA: the adapters
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate_of(cfg), weight_decay=cfg.weight_decay, **fused)
    sampling = Sampling(max_new_tokens=completion_tokens(cfg.max_new_tokens, cfg.data),
                        temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                        max_rows=cfg.rollout_batch_size or None)
    return Run(raw_model=raw_model, model=model, ref_model=ref_model, optimizer=optimizer, tok=tok,
               eos=stop_token_ids(raw_model, tok), device=device, train_set=train_set,
               held_out=held_out[:cfg.eval_problems], sampling=sampling,
               decoder=decoder_for(raw_model, cfg.compile), clock=PhaseClock(device), model_path=path)


def held_out_accuracy(run, cfg):
    """Mean@k on the held-out problems (None without any); the ranks share them (eval.shared_accuracy).
    Decoded as rollouts are, as many rows at a time (plan.py prices one such micro-batch), by the same
    decoder (the compiled one with --compile)."""
    rows = cfg.rollout_batch_size or cfg.prompts_per_step * cfg.group_size // parallel.rank_and_world()[1]
    sampling = Sampling(max_new_tokens=run.sampling.max_new_tokens, temperature=cfg.eval_temperature,
                        top_p=cfg.eval_top_p, top_k=cfg.eval_top_k, max_rows=rows)
    with autocast(run.device, cfg.dtype):
        return shared_accuracy(run.raw_model, run.tok, run.held_out, sampling, samples=cfg.eval_samples,
                               seed=cfg.seed, progress=cfg.progress, decoder=run.decoder)


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
            t0 = time.perf_counter()
            for group in run.optimizer.param_groups:        # the schedule follows the step index
                group["lr"] = learning_rate(step, cfg)
            row = {**train_step(step, run, cfg), "step": step, "lr": run.optimizer.param_groups[0]["lr"],
                   "step_s": round(time.perf_counter() - t0, 4)}        # sampling, scoring and the updates
            # ---- bookkeeping: metrics, held-out evaluation, checkpoints, Ctrl-C ---------------------
            done = step + 1
            run.rollouts += row["pairs_drawn"] * cfg.group_size
            row["rollouts"] = run.rollouts
            if run.held_out and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                with run.clock("evaluation"):
                    row["held_out_acc"] = held_out_accuracy(run, cfg)
            row.update(run.clock.take())
            row["tokens_per_s"] = round(row["completion_tokens"] / max(row["sampling_s"], 1e-9), 1)
            append_metrics(cfg.out_dir, row)
            bar.set_postfix({k: f"{row[k]:.2f}" for k in ("reward_mean", "accuracy", "tie_frac", "step_s",
                                                            "held_out_acc") if row.get(k) is not None})
            # every rank stops at the same step (Ctrl-C may reach the ranks at different moments)
            stopping = bool(parallel.all_reduce(torch.tensor(float(stop.stop)), "max"))
            if cfg.save and (done % cfg.save_every == 0 or done == cfg.steps or stopping):
                progress = {"rollouts": run.rollouts, "data_pos": run.data_pos}
                save_checkpoint(os.path.join(cfg.out_dir, "checkpoint.pt"), run.model, run.optimizer,
                                step=done, cfg=cfg, progress=progress)
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
    save_final(cfg.out_dir, run.model, run.tok, summary, cfg, base_path=run.model_path)
    before = f"{acc_before:.1%}" if acc_before is not None else "(see the run's first part)"
    acc = ("not measured (no held-out set: pass one with --eval-data FILE.jsonl)" if acc_after is None
           else f"{before} -> {acc_after:.1%}")
    log(f"held-out accuracy: {acc} | rollouts: {summary['rollouts']} | wall time: {wall:.0f} s | "
        f"model: {os.path.join(cfg.out_dir, 'model')}")
    return summary


def main(argv=None):
    cfg = parse_args(argv, description=__doc__)
    # sampling's shapes change every step: expandable segments keep the allocator's slack small (plan.py
    # plans with them); set before CUDA starts, unless the user chose an allocator setting
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
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
