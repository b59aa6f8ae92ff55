"""train.py: GRPO (and online DPO) on verifiable math, end to end.

Chapter 4 of the tutorial. One training step:

    prompts  --rollout.sample-->  G completions each  --reward.rewards-->  r  (1 right, 0 wrong)
    r  --grpo.group_advantages-->  A  --grpo.grpo_loss over micro-batches-->  one optimizer step

    python train.py --group-size 2            # built-in task and tiny model: offline, CPU, ~2 minutes
    python train.py --model Qwen/Qwen2.5-Math-1.5B --data math_train.jsonl --eval-data math500_test.jsonl ...
    torchrun --nproc_per_node 4 train.py ...  # data parallel: each rank samples its own prompts
    torchrun --nproc_per_node 4 train.py --fsdp ...   # the same, weights sharded across the ranks (FSDP2)

With no --model and no --data, a tiny Qwen2 (2 layers, hidden 128, an 18-token character vocabulary)
is built from a config, saved and loaded back with save_pretrained / from_pretrained (the code path
of a real model), and warm-started with a short supervised phase on the built-in task (2-digit
addition, answered as \\boxed{N}) so that RL starts with some signal. Both are cached on disk.
"""

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from tqdm import tqdm

from eval import evaluate
from grpo import ADVANTAGE_MODES, AGGREGATIONS, dpo_loss, group_advantages, grpo_loss, preference_pairs
from reward import gold_answer, rewards
from rollout import is_sharded, left_pad, sample, sequence_logprobs, stop_token_ids, unwrap


# ---------------------------------------------------------------------------------------------------
# Configuration: one dataclass, the command line is generated from it
# ---------------------------------------------------------------------------------------------------
@dataclass
class Config:
    # model and data
    model: str = field(default="", metadata={"help": "model directory or hub id; empty: the built-in tiny model"})
    data: str = field(default="", metadata={"help": "training JSONL; empty: the built-in addition task"})
    train_problems: int = field(default=0, metadata={"help": "use only the first N training problems; 0: all"})
    eval_data: str = field(default="", metadata={"help": "held-out JSONL; default: built-in held-out split"})
    problem_field: str = field(default="", metadata={"help": "problem field; empty: 'problem', else 'question'"})
    answer_field: str = field(default="answer", metadata={"help": "answer field (GSM8K's '#### N' is understood)"})
    template: str = field(default="auto", metadata={"help": "auto|chat|plain|raw (see build_prompts)"})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "longer prompts are left out, with a count"})
    out_dir: str = field(default="runs/default", metadata={"help": "metrics, config, checkpoint, final model"})
    cache_dir: str = field(default=".cache", metadata={"help": "where the tiny model and its warm start live"})
    # algorithm
    loss: str = field(default="grpo", metadata={"help": "grpo, or dpo: online DPO on 2-rollout pairs"})
    group_size: int = field(default=2, metadata={"help": "G, rollouts per prompt"})
    prompts_per_step: int = field(default=128, metadata={"help": "P, prompts per step (over all ranks)"})
    steps: int = field(default=1200, metadata={"help": "optimizer steps (each on P * G fresh rollouts)"})
    num_iterations: int = field(default=1, metadata={"help": "policy updates per rollout batch (mu)"})
    advantage: str = field(default="group", metadata={"help": "group | center | batch (grpo.group_advantages)"})
    aggregation: str = field(default="seq_mean", metadata={"help": "seq_mean | token_mean | seq_sum (grpo.grpo_loss)"})
    eps_low: float = field(default=0.2, metadata={"help": "clip range below 1"})
    eps_high: float = field(default=0.28, metadata={"help": "clip range above 1 (0.28: the paper's)"})
    beta: float = field(default=0.0, metadata={"help": "KL weight; a reference model is loaded only if > 0"})
    dpo_beta: float = field(default=0.1, metadata={"help": "beta of the DPO loss"})
    dpo_ref: str = field(default="initial", metadata={"help": "DPO reference: initial (frozen copy) or old (sampler)"})
    skip_ties: bool = field(default=True, metadata={"help": "drop zero-advantage rollouts before the backward"})
    # sampling
    max_new_tokens: int = field(default=0, metadata={"help": "completion length cap; 0: 8 built-in, 1024 with --data"})
    temperature: float = field(default=1.0, metadata={"help": "rollout temperature"})
    top_p: float = field(default=1.0, metadata={"help": "rollout nucleus sampling; 1: off"})
    top_k: int = field(default=0, metadata={"help": "rollout top-k sampling; 0: off"})
    # optimization
    lr: float = field(default=2e-4, metadata={"help": "AdamW learning rate (for the tiny model; ~1e-6 for 1B+)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps"})
    schedule: str = field(default="constant", metadata={"help": "constant | cosine | linear after warm-up"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm; 0 disables"})
    micro_batch_size: int = field(default=256, metadata={"help": "sequences per forward/backward"})
    rollout_batch_size: int = field(default=0, metadata={"help": "max sequences sampled together; 0: all"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward"})
    fsdp: bool = field(default=False, metadata={"help": "under torchrun: shard weights, gradients and optimizer "
                                                        "state across ranks (FSDP2) instead of DDP"})
    logprob_chunk: int = field(default=0, metadata={"help": "positions per log-softmax chunk; 0: all at once"})
    dtype: str = field(default="auto", metadata={"help": "auto (fp32, bf16 autocast on CUDA) | float32 | bfloat16"})
    seed: int = field(default=0, metadata={"help": "seeds the warm start, data order and sampling"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    # evaluation, logging, checkpoints
    eval_every: int = field(default=200, metadata={"help": "held-out evaluation every N steps; 0: start and end only"})
    eval_problems: int = field(default=500, metadata={"help": "held-out problems evaluated (first N)"})
    eval_samples: int = field(default=1, metadata={"help": "k; 1 with eval_temperature 0 is greedy accuracy"})
    eval_temperature: float = field(default=0.0, metadata={"help": "held-out sampling temperature; 0: greedy"})
    eval_top_p: float = field(default=1.0, metadata={"help": "held-out nucleus sampling (the paper: 0.8)"})
    eval_top_k: int = field(default=0, metadata={"help": "held-out top-k sampling (the paper: 20)"})
    save_every: int = field(default=200, metadata={"help": "checkpoint every N steps (and at the end)"})
    resume: bool = field(default=False, metadata={"help": "continue from out_dir/checkpoint.pt"})
    warm_start_target: float = field(default=0.2, metadata={"help": "built-in task: supervised warm start "
                                                           "until validation accuracy passes this"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


def parse_args(argv=None):
    """argparse over Config: every field is a --flag with its default; booleans take --x / --no-x."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "") + f" (default: {f.default!r})"
        if f.type is bool or f.type == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=helptext)
        else:
            ap.add_argument(flag, type=type(f.default), default=f.default, help=helptext)
    cfg = Config(**vars(ap.parse_args(argv)))
    check_config(cfg)
    return cfg


def check_config(cfg):
    """Refuse settings that cannot work, before anything is loaded."""
    problems = []
    if cfg.loss not in ("grpo", "dpo"):
        problems.append("--loss must be grpo or dpo")
    if cfg.loss == "dpo" and cfg.group_size != 2:
        problems.append("--loss dpo trains on 2-rollout pairs: use --group-size 2")
    if cfg.group_size < 2:
        problems.append("--group-size must be at least 2 (advantages are relative to the group)")
    if cfg.advantage not in ADVANTAGE_MODES:
        problems.append(f"--advantage must be one of {ADVANTAGE_MODES}")
    if cfg.aggregation not in AGGREGATIONS:
        problems.append(f"--aggregation must be one of {AGGREGATIONS}")
    if cfg.schedule not in ("constant", "cosine", "linear"):
        problems.append("--schedule must be constant, cosine or linear")
    if cfg.template not in ("auto", "chat", "plain", "raw"):
        problems.append("--template must be auto, chat, plain or raw")
    if cfg.dpo_ref not in ("initial", "old"):
        problems.append("--dpo-ref must be initial or old")
    if cfg.eval_samples > 1 and cfg.eval_temperature == 0:
        problems.append("--eval-samples > 1 needs --eval-temperature > 0 (greedy samples are identical)")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------
# The built-in task and the built-in tiny model
# ---------------------------------------------------------------------------------------------------
TINY_VOCAB = ["<pad>", "<eos>", "<bos>", "<unk>"] + list("0123456789+=}") + ["\\boxed{"]


def tiny_task_problems(seed=1234):
    """2-digit addition "a+b=" -> gold "a+b", all 10,000 pairs a, b in 0..99, in a fixed split:
    500 held-out test problems, 200 validation problems (for the warm start), 9,300 for training."""
    pairs = [(a, b) for a in range(100) for b in range(100)]
    random.Random(seed).shuffle(pairs)
    probs = [{"problem": f"{a}+{b}=", "gold": str(a + b)} for a, b in pairs]
    return {"test": probs[:500], "val": probs[500:700], "train": probs[700:]}


def tiny_model_config():
    """A ~0.5M-parameter Qwen2: 2 layers, hidden 128, a vocabulary of 18 tokens."""
    from transformers import Qwen2Config
    return Qwen2Config(vocab_size=len(TINY_VOCAB), hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                       tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2)


def build_tiny_tokenizer():
    """A character-level tokenizer built locally (no download), with "\\boxed{" as one added token.

    Characters are plain vocabulary entries with no merges, and "\\boxed{" is an *added* token: that
    is what survives transformers 5 reloading the tokenizer of a Qwen2 directory as Qwen2Tokenizer
    (byte-level BPE rebuilt from vocab, merges and added tokens), where a multi-character vocabulary
    entry would be split silently. tests/test_train.py checks the reloaded tokenizer encodes the same."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(TINY_VOCAB)}, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_tokens([AddedToken("\\boxed{", special=False, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")


def _save_dir_atomic(path, save):
    """save(tmp_dir) then swap tmp_dir into place, so `path` is always either the old or the new one."""
    tmp, old = path + ".tmp", path + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    if os.path.exists(path):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def warm_start(model, tok, cfg, device, problems, log):
    """Supervised warm start on the built-in task: teacher-forced cross-entropy on "\\boxed{N}<eos>",
    until greedy validation accuracy first passes cfg.warm_start_target (a fixed step count lands
    anywhere from a few % to 30 % depending on the seed; a target gives RL a comparable start)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(cfg.seed)
    val = build_prompts(problems["val"], tok, "raw", builtin=True)
    train = problems["train"]
    step, acc = 0, 0.0
    model.train()
    t0 = time.perf_counter()
    while step < 5000:
        batch = rng.sample(train, 64)
        texts = [p["problem"] + "\\boxed{" + p["gold"] + "}" for p in batch]
        enc = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
        n_prompt = [len(tok(p["problem"])["input_ids"]) for p in batch]
        L = max(map(len, enc))
        ids = torch.tensor([e + [tok.pad_token_id] * (L - len(e)) for e in enc], device=device)
        labels = ids.clone()
        for i, (e, k) in enumerate(zip(enc, n_prompt)):
            labels[i, :k] = -100                 # no loss on the prompt
            labels[i, len(e):] = -100            # nor on padding
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            acc = evaluate(model, tok, val, max_new_tokens=8, progress=False)["mean@1"]
            model.train()
            if acc > cfg.warm_start_target:
                break
    log(f"warm start: {step} supervised steps, validation accuracy {acc:.1%} ({time.perf_counter() - t0:.0f} s)")
    model.eval()


def builtin_model_dir(cfg, device, log, is_main):
    """Build (once) the tiny model and its warm start; returns the directory of the warm model."""
    key = json.dumps({"cfg": tiny_model_config().to_dict(), "vocab": TINY_VOCAB, "seed": cfg.seed,
                      "target": cfg.warm_start_target, "v": 1}, sort_keys=True)
    root = os.path.join(cfg.cache_dir, "tiny-addition-" + hashlib.sha256(key.encode()).hexdigest()[:12])
    base, warm = os.path.join(root, "base"), os.path.join(root, "warm")
    if is_main and not os.path.exists(warm):
        from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM
        if not os.path.exists(base):
            torch.manual_seed(cfg.seed)
            model, tok = Qwen2ForCausalLM(tiny_model_config()), build_tiny_tokenizer()
            _save_dir_atomic(base, lambda d: (model.save_pretrained(d), tok.save_pretrained(d)))
        model = AutoModelForCausalLM.from_pretrained(base).to(device)   # the same path as a real model
        tok = AutoTokenizer.from_pretrained(base)
        torch.manual_seed(cfg.seed)
        warm_start(model, tok, cfg, device, tiny_task_problems(), log)
        _save_dir_atomic(warm, lambda d: (model.save_pretrained(d), tok.save_pretrained(d)))
    elif is_main:
        log(f"warm start: cached in {warm}")
    barrier()
    return warm


# ---------------------------------------------------------------------------------------------------
# Data: JSONL problem sets, prompt templates
# ---------------------------------------------------------------------------------------------------
class DataError(ValueError):
    """A problem file that cannot be used; the message names the file and line."""


def load_problems(path, problem_field="", answer_field="answer"):
    """JSONL rows -> [{"problem": str, "gold": str}]. MATH/MATH-500 (problem, answer), GSM8K
    (question, answer with "#### N"), or other field names. Fails on the first bad row, naming it."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            pf = problem_field or ("problem" if "problem" in row else "question")
            for name in (pf, answer_field):
                if name not in row:
                    raise DataError(f"{path}:{lineno}: missing field {name!r} (fields: {', '.join(row)})")
                if not isinstance(row[name], (str, int, float)) or str(row[name]).strip() == "":
                    raise DataError(f"{path}:{lineno}: field {name!r} is empty or not text")
            out.append({"problem": str(row[pf]), "gold": gold_answer(str(row[answer_field]))})
    if not out:
        raise DataError(f"{path}: no problems in file")
    return out


INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PLAIN_TEMPLATE = "Problem: {problem}\n" + INSTRUCTION + "\n\nSolution:"


def build_prompts(problems, tok, template="auto", builtin=False, max_tokens=None):
    """Add "prompt_ids" to each problem.

    raw:   the problem text as it is (the built-in task: "12+34=")
    plain: PLAIN_TEMPLATE, "Problem: ...\\nPlease reason step by step, and put your final answer
           within \\boxed{}.\\n\\nSolution:"
    chat:  the tokenizer's chat template, one user turn: problem + " " + INSTRUCTION
    auto:  raw for the built-in task, chat where the tokenizer has a chat template, else plain
    Problems whose prompt is longer than max_tokens are left out.
    """
    if template == "auto":
        template = "raw" if builtin else ("chat" if getattr(tok, "chat_template", None) else "plain")
    out = []
    for p in problems:
        if template == "raw":
            ids = tok(p["problem"])["input_ids"]
        elif template == "plain":
            ids = tok(PLAIN_TEMPLATE.replace("{problem}", p["problem"]))["input_ids"]
        elif template == "chat":
            text = tok.apply_chat_template([{"role": "user", "content": p["problem"] + " " + INSTRUCTION}],
                                           add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            raise ValueError(f"unknown template {template!r}")
        if max_tokens and len(ids) > max_tokens:
            continue
        out.append({**p, "prompt_ids": ids})
    return out


# ---------------------------------------------------------------------------------------------------
# Models, devices, ranks
# ---------------------------------------------------------------------------------------------------
def rank_and_world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def barrier():
    if dist.is_initialized():
        dist.barrier()


def pick_device(cfg):
    local = int(os.environ.get("LOCAL_RANK", 0))
    if cfg.device == "auto":
        return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def shard_model(model, compute_dtype=None):
    """FSDP2: shard each decoder layer, then the rest (embeddings, final norm, head), across the ranks.
    Each rank then holds 1/world of the weights, gradients and optimizer state; a layer's full weights
    exist only while it computes (all-gathered before, freed after). compute_dtype=torch.bfloat16: the
    shards stay fp32 (as do the optimizer's updates and the gradients' reduction) but are gathered as
    bf16, which halves the traffic and the memory of gathered weights (FSDP2's mixed precision)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    kwargs = {"mp_policy": MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
              } if compute_dtype else {}
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])   # e.g. {"Qwen2DecoderLayer"}
    for module in model.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


@contextlib.contextmanager
def full_weights(model):
    """FSDP2: all-gather every layer's weights once and keep them while sampling or evaluating, so the
    many small forward passes of decoding make no collectives (and ranks may make different numbers of
    them: their completions end at different steps). Every rank must enter; resharded on exit.
    Costs one full copy of the weights per rank for the duration. Nothing to do without FSDP."""
    sharded = [m for m in model.modules() if is_sharded(m)]
    for m in sharded:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m in sharded:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def load_model_and_tokenizer(cfg, log=print):
    """(model, tokenizer, device): from cfg.model, or the built-in tiny model (built and cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    device = pick_device(cfg)
    rank, _ = rank_and_world()
    path = cfg.model or builtin_model_dir(cfg, device, log, rank == 0)
    dtype = {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, device


def autocast(device, cfg):
    """bf16 autocast on CUDA for fp32 weights (dtype auto); nothing elsewhere."""
    if device.type == "cuda" and cfg.dtype == "auto":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------
# One policy update: micro-batches, gradient accumulation, one optimizer step
# ---------------------------------------------------------------------------------------------------
def _all_reduce(x, op=None):
    """x summed (or op) over ranks, on x's device; a copy goes through the GPU where NCCL needs it."""
    if dist.is_initialized():
        comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else x.device
        y = x.detach().to(comm, copy=True)
        dist.all_reduce(y, op=op or dist.ReduceOp.SUM)
        x = y.to(x.device)
    return x


def aggregation_weight(mask, aggregation):
    """How much of the full batch's loss a micro-batch is: sequences, or tokens for token_mean.
    The full-batch loss is sum over micro-batches of loss_mb * weight_mb / total weight, which is
    what makes gradient accumulation give the same gradient as one big batch."""
    return mask.sum() if aggregation == "token_mean" else torch.tensor(float(mask.shape[0]))


def policy_update(model, optimizer, batch, cfg, device):
    """One optimizer step of GRPO (cfg.loss == "grpo") or DPO ("dpo") on a batch of rollouts.

    batch: prompt_ids, prompt_mask (B, L); tokens, mask, old_logp (B, T); advantages (B,);
           ref_logp (B, T) when cfg.beta > 0; for DPO, chosen / rejected (N,) row indices and
           ref_seq (B,) reference sequence log-probs.
    Rows are cut into micro-batches of cfg.micro_batch_size sequences; each loss is scaled by its
    share of the batch (aggregation_weight), so the summed gradient is the full-batch gradient. Under
    DDP / FSDP the engine averages gradients across ranks; the shares use the global total, and every
    rank runs the same number of backward passes (padding with zero-weight ones) so none waits forever.
    DDP syncs gradients once, after the last micro-batch (no_sync before); FSDP reduce-scatters after
    each one, so no rank ever holds a full gradient.
    Returns the statistics to log, or None when no rollout carried a learning signal.
    """
    _, world = rank_and_world()
    raw = unwrap(model)
    mb = cfg.micro_batch_size
    if cfg.loss == "grpo":
        rows = torch.arange(batch["tokens"].shape[0])
        if cfg.skip_ties and cfg.beta == 0:
            rows = rows[batch["advantages"] != 0]         # zero advantage, zero gradient: skip the work
        chunks = [rows[i:i + mb] for i in range(0, len(rows), mb)]
        weights = [aggregation_weight(batch["mask"][c], cfg.aggregation) for c in chunks]
    else:
        pairs = torch.arange(batch["chosen"].shape[0])
        per = max(1, mb // 2)
        chunks = [pairs[i:i + per] for i in range(0, len(pairs), per)]
        weights = [torch.tensor(float(len(c))) for c in chunks]
    total = _all_reduce(sum(weights, torch.tensor(0.0)))
    n_micro = int(_all_reduce(torch.tensor(len(chunks)), dist.ReduceOp.MAX))
    if total.item() == 0:
        return None
    optimizer.zero_grad(set_to_none=True)
    stats_sum, stat_w = {}, 0.0
    for i in range(n_micro):
        dummy = i >= len(chunks)                        # DDP padding: a backward that adds nothing
        idx = chunks[i] if not dummy else torch.tensor([0])
        last = i == n_micro - 1 or world == 1 or not hasattr(model, "no_sync")
        sync = contextlib.nullcontext() if last else model.no_sync()
        with sync:
            if cfg.loss == "grpo":
                loss, stats = _grpo_microbatch(model, batch, idx, cfg, device)
            else:
                loss, stats = _dpo_microbatch(model, batch, idx, cfg, device)
            share = 0.0 if dummy else (weights[i] / total).item() * world
            (loss * share).backward()
        if not dummy:
            stats["loss"] = loss.item()
            w = weights[i].item()
            for k, v in stats.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + v * w
            stat_w += w
    grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    optimizer.step()
    out = {k: v / max(stat_w, 1e-12) for k, v in stats_sum.items()}
    out["grad_norm"] = grad_norm.item()
    return out


def rows_logprobs(model, batch, rows, cfg, device):
    """(len(rows), T) log-probs of the rollout rows `rows` (indices or a slice) under `model`."""
    with autocast(device, cfg):
        return sequence_logprobs(model, batch["prompt_ids"][rows], batch["prompt_mask"][rows], batch["tokens"][rows],
                                 batch["mask"][rows], cfg.temperature, cfg.logprob_chunk or None)


def _grpo_microbatch(model, batch, idx, cfg, device):
    """Loss of rows idx: log-probs under the current policy, then grpo.grpo_loss."""
    logp = rows_logprobs(model, batch, idx, cfg, device)
    return grpo_loss(logp, batch["old_logp"][idx], batch["advantages"][idx], batch["mask"][idx], cfg.eps_low,
                     cfg.eps_high, cfg.beta, batch["ref_logp"][idx] if cfg.beta > 0 else None,
                     cfg.aggregation, max_tokens=cfg.max_new_tokens)


def _dpo_microbatch(model, batch, pair_idx, cfg, device):
    """DPO loss of the pairs pair_idx: one forward over their chosen and rejected rows."""
    ch, rj = batch["chosen"][pair_idx], batch["rejected"][pair_idx]
    rows = torch.cat([ch, rj])
    seq = (rows_logprobs(model, batch, rows, cfg, device) * batch["mask"][rows]).sum(1)   # (2N,) sequence log-probs
    n = len(ch)
    ref = batch["ref_seq"][rows]
    return dpo_loss(seq[:n], seq[n:], ref[:n], ref[n:], beta=cfg.dpo_beta)


@torch.no_grad()
def reference_logprobs(ref_model, batch, cfg, device):
    """(B, T) log-probs of the rollouts under a frozen model, micro-batched."""
    B, mb = batch["tokens"].shape[0], cfg.micro_batch_size
    return torch.cat([rows_logprobs(ref_model, batch, slice(s, s + mb), cfg, device).float() for s in range(0, B, mb)])


# ---------------------------------------------------------------------------------------------------
# Learning-rate schedule, data order, checkpoints
# ---------------------------------------------------------------------------------------------------
def lr_lambda(cfg):
    def f(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else max(0.0, 1 - frac)
    return f


def prompts_for_step(step, n_train, cfg, rank, world):
    """Indices of this rank's prompts at `step`: consecutive slices of a fresh seeded permutation per
    epoch over the training set. A function of (seed, step, rank): resuming needs no data state."""
    per_rank = cfg.prompts_per_step // world
    start = step * per_rank * world + rank * per_rank
    out = []
    for g in range(start, start + per_rank):
        epoch, pos = divmod(g, n_train)
        out.append(_permutation(cfg.seed, epoch, n_train)[pos])
    return out


_perm_cache = {}


def _permutation(seed, epoch, n):
    key = (seed, epoch, n)
    if key not in _perm_cache:
        order = list(range(n))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        _perm_cache.clear()
        _perm_cache[key] = order
    return _perm_cache[key]


def full_state_dicts(model, optimizer):
    """(model, optimizer) state dicts with whole tensors. Under FSDP each rank holds a shard: they are
    gathered (a collective, every rank must call) onto rank 0's CPU; other ranks get empty dicts."""
    if not is_sharded(model):
        return unwrap(model).state_dict(), optimizer.state_dict() if optimizer is not None else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(model, options=options),
            get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None)


def save_checkpoint(path, model, optimizer, scheduler, step, cfg):
    """Everything a resumed run needs, written by rank 0 to a temporary file and renamed into place
    (atomic). Every rank calls it (under FSDP the state is gathered from all of them)."""
    model_state, optimizer_state = full_state_dicts(model, optimizer)
    if rank_and_world()[0] != 0:
        return
    state = {"model": model_state, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
             "step": step, "config": dataclasses.asdict(cfg), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "python_rng": random.getstate()}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, model, optimizer, scheduler):
    """Restore a checkpoint of save_checkpoint into the (possibly sharded) model and its optimizer."""
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    sharded = is_sharded(model)
    if state["config"].get("fsdp", False) != sharded:
        raise SystemExit(f"error: {path} was written {'with' if not sharded else 'without'} --fsdp; "
                         f"resume it the same way (the optimizer state is laid out differently)")
    if sharded:   # every rank reads the whole (memory-mapped) file and keeps its own shard
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
    else:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    return state["step"], state["config"]


class StopFlag:
    """First Ctrl-C: finish the current step, save a checkpoint, exit. Second Ctrl-C: abort now."""

    def __init__(self):
        self.stop = False
        self.old = signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def restore(self):
        signal.signal(signal.SIGINT, self.old)


# ---------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------
def train(cfg):
    """Run GRPO / DPO as configured; returns a summary dict (accuracy before and after, rollouts, time)."""
    t_start = time.perf_counter()
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    if world_env > 1 and not dist.is_initialized():
        nccl = torch.cuda.is_available() and cfg.device != "cpu"
        if nccl:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))   # one GPU per rank
        dist.init_process_group("nccl" if nccl else "gloo")
    rank, world = rank_and_world()
    is_main = rank == 0
    if cfg.prompts_per_step % world:
        raise SystemExit(f"error: --prompts-per-step {cfg.prompts_per_step} must divide by {world} ranks")
    if cfg.fsdp and world == 1:
        raise SystemExit("error: --fsdp shards the model across processes: launch with torchrun "
                         "--nproc_per_node N (N >= 2)")
    log = (lambda msg: tqdm.write(msg)) if is_main else (lambda msg: None)
    builtin = not cfg.data
    if not cfg.max_new_tokens:
        cfg.max_new_tokens = 8 if builtin else 1024     # built-in: "\\boxed{" 3 digits "}" EOS is 6
    if is_main:
        os.makedirs(cfg.out_dir, exist_ok=True)

    # data first: a bad file fails here, before any model is loaded
    if builtin:
        split = tiny_task_problems()
        train_set, held_out = split["train"], split["test"]
    else:
        train_set = load_problems(cfg.data, cfg.problem_field, cfg.answer_field)
        held_out = load_problems(cfg.eval_data, cfg.problem_field, cfg.answer_field) if cfg.eval_data else []
    model, tok, device = load_model_and_tokenizer(cfg, log)
    train_set = train_set[:cfg.train_problems or None]
    n_train, n_held = len(train_set), len(held_out)
    train_set = build_prompts(train_set, tok, cfg.template, builtin, cfg.max_prompt_tokens)
    held_out = build_prompts(held_out, tok, cfg.template, builtin, cfg.max_prompt_tokens)
    if len(train_set) < n_train or len(held_out) < n_held:
        log(f"left out {n_train - len(train_set)} training and {n_held - len(held_out)} held-out problems "
            f"whose prompts are longer than --max-prompt-tokens {cfg.max_prompt_tokens}")
    held_out = held_out[:cfg.eval_problems]
    if not train_set:
        raise SystemExit(f"error: no training prompt fits --max-prompt-tokens {cfg.max_prompt_tokens}")
    eos = stop_token_ids(model, tok)
    if cfg.gradient_checkpointing:
        # transformers 5 renamed it activation_checkpointing_enable; 4.x has only the old name
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    ref_model = None
    if cfg.beta > 0 or (cfg.loss == "dpo" and cfg.dpo_ref == "initial"):
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        if device.type == "cuda":
            ref_model = ref_model.to(torch.bfloat16)
    if cfg.fsdp:                        # before the optimizer: it must see the sharded parameters
        # on CUDA with fp32 weights (dtype auto), compute in bf16 as autocast does elsewhere
        shard_model(model, torch.bfloat16 if device.type == "cuda" and cfg.dtype == "auto" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    ckpt_path = os.path.join(cfg.out_dir, "checkpoint.pt")
    start = 0
    if cfg.resume and os.path.exists(ckpt_path):
        start, old_cfg = load_checkpoint(ckpt_path, model, optimizer, scheduler)
        changed = {k: (old_cfg.get(k), v) for k, v in dataclasses.asdict(cfg).items()
                   if k not in ("resume", "steps", "progress") and old_cfg.get(k) != v}
        log(f"resumed from {ckpt_path} at step {start}" + (f" (changed settings: {changed})" if changed else ""))
    elif cfg.resume:
        log(f"--resume: no checkpoint at {ckpt_path}, starting from step 0")
    train_model = model
    if world > 1 and not cfg.fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if is_main:
        with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if is_main:
        _truncate_metrics(metrics_path, start)

    def held_out_accuracy():
        """Mean@k on the held-out problems, which the ranks share: rank r evaluates r, r + N, r + 2N, ..."""
        if not held_out:
            return None
        mine = held_out[rank::world]
        with autocast(device, cfg), full_weights(model):
            res = evaluate(model, tok, mine, samples=cfg.eval_samples, temperature=cfg.eval_temperature,
                           top_p=cfg.eval_top_p, top_k=cfg.eval_top_k, max_new_tokens=cfg.max_new_tokens,
                           batch_size=max(cfg.rollout_batch_size, 64) if cfg.rollout_batch_size else 256,
                           seed=cfg.seed + rank, progress=cfg.progress and is_main, eos_token_id=eos)
        right = _all_reduce(torch.tensor(res[f"mean@{cfg.eval_samples}"] * len(mine), dtype=torch.float64))
        return right.item() / len(held_out)

    acc_before = held_out_accuracy() if start == 0 else None
    if acc_before is not None:
        log(f"held-out accuracy before: {acc_before:.1%} ({len(held_out)} problems)")
    stop = StopFlag()
    rollouts = start * cfg.prompts_per_step * cfg.group_size
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="grpo" if cfg.loss == "grpo" else "dpo",
               disable=not (is_main and cfg.progress), dynamic_ncols=True)
    step = start
    try:
        for step in bar:
            row = train_step(step, train_model, model, ref_model, optimizer, tok, train_set, eos, cfg, device,
                             rank, world)
            with warnings.catch_warnings():   # a step whose groups all tie makes no optimizer step,
                warnings.simplefilter("ignore")   # and torch warns; the schedule follows the step index
                scheduler.step()
            rollouts += cfg.prompts_per_step * cfg.group_size
            row["rollouts"] = rollouts
            done = step + 1
            if held_out and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                row["held_out_acc"] = held_out_accuracy()
            if is_main:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                bar.set_postfix(reward=f"{row['reward_mean']:.2f}", acc=f"{row['accuracy']:.2f}",
                                ties=f"{row['tie_frac']:.2f}",
                                s=f"{row['step_s']:.2f}", **({"held_out": f"{row['held_out_acc']:.2f}"}
                                                            if row.get("held_out_acc") is not None else {}))
            # every rank stops at the same step (Ctrl-C may reach the ranks at different moments)
            stopping = bool(_all_reduce(torch.tensor(float(stop.stop)), dist.ReduceOp.MAX))
            if done % cfg.save_every == 0 or done == cfg.steps or stopping:
                save_checkpoint(ckpt_path, model, optimizer, scheduler, done, cfg)
            if stopping:
                barrier()
                log(f"stopped at step {done}; checkpoint saved: resume with the same command and --resume")
                raise SystemExit(130)
    finally:
        stop.restore()
        bar.close()
    barrier()
    acc_after = held_out_accuracy()
    weights, _ = full_state_dicts(model, None)
    if is_main:
        final = os.path.join(cfg.out_dir, "model")
        _save_dir_atomic(final, lambda d: (model.save_pretrained(d, state_dict=weights), tok.save_pretrained(d)))
    wall = time.perf_counter() - t_start
    summary = {"held_out_before": acc_before, "held_out_after": acc_after, "rollouts": rollouts,
               "steps": cfg.steps, "wall_s": round(wall, 1), "out_dir": cfg.out_dir}
    if is_main:
        before = f"{acc_before:.1%}" if acc_before is not None else "(see the first run)"
        after = f"{acc_after:.1%}" if acc_after is not None else "n/a (no --eval-data)"
        log(f"held-out accuracy: {before} -> {after} | rollouts: {rollouts} | wall time: {wall:.0f} s | "
            f"model: {os.path.join(cfg.out_dir, 'model')}")
        with open(os.path.join(cfg.out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _truncate_metrics(path, step):
    """On resume, drop logged rows past the checkpoint so the log matches the weights."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] < step]
    with open(path, "w") as f:
        f.writelines(rows)


def train_step(step, train_model, model, ref_model, optimizer, tok, train_set, eos, cfg, device, rank, world):
    """Sample, score, compute advantages, update. Returns the row logged for this step."""
    t0 = time.perf_counter()
    G = cfg.group_size
    problems = [train_set[i] for i in prompts_for_step(step, len(train_set), cfg, rank, world)]
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 1_000_003 + step * 1_009 + rank)     # a function of (seed, step, rank)
    with autocast(device, cfg), full_weights(model):
        ro = sample(model, [p["prompt_ids"] for p in problems], n=G, max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, eos_token_id=eos,
                    pad_token_id=tok.pad_token_id, generator=gen, max_batch_size=cfg.rollout_batch_size or None,
                    tokenizer=tok)
    golds = [p["gold"] for p in problems for _ in range(G)]
    r = torch.tensor(rewards(ro.texts, golds), device=device)                          # (P*G,)
    t_rollout = time.perf_counter() - t0
    adv = group_advantages(r, G, cfg.advantage)                                          # (P*G,)
    prompt_ids, prompt_mask, _ = left_pad([p["prompt_ids"] for p in problems], tok.pad_token_id, device)
    rows = torch.arange(len(problems), device=device).repeat_interleave(G)
    batch = {"prompt_ids": prompt_ids[rows], "prompt_mask": prompt_mask[rows], "tokens": ro.tokens,
             "mask": ro.mask, "old_logp": ro.logprobs, "advantages": adv}
    if cfg.beta > 0:
        batch["ref_logp"] = reference_logprobs(ref_model, batch, cfg, device)
    if cfg.loss == "dpo":
        batch["chosen"], batch["rejected"] = preference_pairs(r, 2)
        batch["ref_seq"] = ((reference_logprobs(ref_model, batch, cfg, device) if cfg.dpo_ref == "initial"
                             else ro.logprobs) * ro.mask).sum(1)
    t1 = time.perf_counter()
    stats = {}
    for _ in range(cfg.num_iterations):
        stats = policy_update(train_model, optimizer, batch, cfg, device) or {}
    t_train = time.perf_counter() - t1
    ties = (r.view(-1, G) == r.view(-1, G)[:, :1]).all(1).float()                       # (P,) all-equal groups
    # stats of the update first (loss, clip_frac, ratio_mean, kl, grad_norm...), then the batch's own
    row = {**{k: v for k, v in stats.items() if k != "adv_mean"},
           "step": step, "reward_mean": _mean_all(r), "accuracy": _mean_all((r > 0).float()),
           "adv_mean": adv.mean().item(), "adv_std": adv.std(unbiased=False).item(),
           "tie_frac": _mean_all(ties), "response_len": _mean_all(ro.lengths.float()),
           "rollout_s": round(t_rollout, 4), "train_s": round(t_train, 4),
           "tokens_per_s": round(ro.mask.sum().item() / max(t_rollout, 1e-9), 1),
           "lr": optimizer.param_groups[0]["lr"], "step_s": round(time.perf_counter() - t0, 4)}
    return row


def _mean_all(x):
    """Mean over all ranks' values (every rank has the same count)."""
    return (_all_reduce(x.float().mean()) / rank_and_world()[1]).item()


def main(argv=None):
    cfg = parse_args(argv)
    import transformers
    transformers.utils.logging.disable_progress_bar()     # our bars only
    try:
        summary = train(cfg)
    except DataError as e:
        raise SystemExit(f"error: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()
