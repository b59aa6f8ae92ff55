"""Peak memory of every phase of a run, measured, against plan.py's plan of the same work.

    python bench/memory.py [--seqs 2] [--prompt 64] [--completion 256] [--layers 2] [--device cpu|cuda]
    python bench/memory.py --phases          # sampling, held-out evaluation, optimizer step (CPU)
    python bench/memory.py --recipes         # every recipe of docs/gpu.md run by train.py at its flags (CPU)
    python bench/memory.py --recipes --rows lora     # LoRA's rows only (--rows full: full fine-tuning's)

--phases: for the small config (its full 151,936-token vocabulary), in a fresh process each, the peak
memory of sampling 64 rows (32 prompts x 2) of --prompt + --completion tokens, of evaluating 64
prompts once each, and of AdamW's first step (its moments and temporaries), against the plan of the
same work (plan.plan: the sampling and held-out evaluation phases; the optimizer step's temporaries
and the moments it creates). On a CPU the peak is the growth of the process's high-water mark
(VmHWM, reset through /proc/self/clear_refs at the phase's start, with glibc's mmap threshold fixed
so that freed memory goes back to the system).

--recipes: each row of docs/gpu.md's recipe tables (bench/recipes.py) that one CPU process can hold is
run by train.py itself, in a fresh process, at the row's flags under --dtype mixed: the row's model
shape with 2 decoder layers (the real width, heads and vocabulary), random weights, a character
tokenizer, prompts of --prompt tokens and --completion new tokens (shortened for a CPU), as many
prompts per step as fill the row's rollout micro-batch (at least two training micro-batches), 2 steps
with a held-out evaluation after the first (a rollout micro-batch of problems). Rewards are made up
(one rollout of each pair right) so that every pair trains, the plan's worst case. LoRA's rows run
under --dtype float32 (the plan for that dtype): a frozen bf16 base on a CPU is either repacked by oneDNN
at every forward (2 GB for the 151,936-row head, a copy no GPU makes) or, without oneDNN, slower than
this benchmark can wait for. Each phase's
measured growth of the process's high-water mark (VmHWM, reset at the phase's start) is printed
beside plan.plan's figure for the same flags and shape on a CPU: sampling and evaluation of step 0,
the update of step 1 (AdamW's moments exist then, as in every later step; the plan's larger of the
training micro-batch and the optimizer step), and the log-probs phase (pi_old / pi_ref; no phase of
its own in the plan, whose training micro-batch it stays under). Rows not run, and why: torchrun
--fsdp (one process here; tests/test_parallel.py runs FSDP2 on two), --cpu-offload (on a CPU host and
device memory are one), and Qwen2.5-Math-7B full fine-tuning (its state, 16 bytes x 1.6 billion
parameters even at 2 layers, is more than this machine's memory).

Without --phases or --recipes: one training forward + backward, for each memory option.

Configs with the dimensions of Qwen2.5-0.5B and Qwen2.5-1.5B (hidden size, heads, MLP width and the
151,936-token vocabulary), random weights built from the config, with --layers decoder layers
(fewer than the real 24 / 28 so it runs on a CPU; the vocabulary, which dominates the log-prob
memory, is full size). For each option the GRPO log-probs of --seqs sequences are computed
(rollout.sequence_logprobs) and backpropagated:

  plain       logits (B, T, V) made whole, then log-softmax
  chunk       hidden states, then lm_head + log-softmax 128 positions at a time (--logprob-chunk 128)
  ckpt        gradient checkpointing of the decoder layers (--gradient-checkpointing)
  chunk+ckpt  both
  chunk+ckpt+lora16  both, and LoRA adapters of rank 16 on every Linear of attention and the MLP, the
              base frozen (--lora-rank 16: lora.py)

Peak memory is the growth of the process's high-water mark on CPU (VmHWM, reset before the step, so the
model build's own peak does not hide the step's; each option runs in a fresh process),
torch.cuda.max_memory_allocated on a GPU, divided by the number of sequences. Each result is also
printed as a ratio to `plain`, measured in the same run, and beside what plan.py plans for the same
work (the activations of the micro-batch and the log-prob head): planned / measured.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.append(os.path.dirname(os.path.abspath(__file__)))   # bench/recipes.py, after the project's own modules
CONFIGS = {
    "small (h 256)": dict(hidden_size=256, intermediate_size=1024, num_attention_heads=4, num_key_value_heads=2,
                          tie_word_embeddings=True),
    "Qwen2.5-0.5B": dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
                         tie_word_embeddings=True),
    "Qwen2.5-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                         tie_word_embeddings=True),
}
OPTIONS = {"plain": (0, False, 0), "chunk": (128, False, 0), "ckpt": (0, True, 0), "chunk+ckpt": (128, True, 0),
           "chunk+ckpt+lora16": (128, True, 16)}

# the workers' CPU measure: VmHWM grown since reset() (Linux: /proc/self/clear_refs)
HIGH_WATER = '''def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))
def reset():                                   # the high-water mark starts again at the current size
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")
'''


def source(worker):
    """A worker's Python source, with the project's root and HIGH_WATER filled in."""
    return worker.format(root=os.path.abspath(ROOT), high_water=HIGH_WATER)


WORKER = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
from transformers import Qwen2Config, Qwen2ForCausalLM
from rollout import sequence_logprobs
a = json.loads(sys.argv[1])
torch.manual_seed(0)
dev = torch.device(a["device"])
cfg = Qwen2Config(vocab_size=151936, num_hidden_layers=a["layers"], max_position_embeddings=4096, **a["config"])
model = Qwen2ForCausalLM(cfg).to(dev)
if a["lora"]:
    import lora
    lora.add_adapters(model, a["lora"], 32.0)
if a["ckpt"]:
    (getattr(model, 'activation_checkpointing_enable', None) or model.gradient_checkpointing_enable)()
model.train()
B, L, T = a["seqs"], a["prompt"], a["completion"]
ids = torch.randint(0, 151936, (B, L), device=dev); pm = torch.ones(B, L, dtype=torch.long, device=dev)
tok = torch.randint(0, 151936, (B, T), device=dev); m = torch.ones(B, T, device=dev)
ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
def step():
    with ctx:
        lp = sequence_logprobs(model, ids, pm, tok, m, 1.0, a["chunk"] or None)
    (lp * m).sum().backward()
    model.zero_grad(set_to_none=True)
{high_water}if dev.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = reset()                              # not the model build's peak
t0 = time.perf_counter(); step()
if dev.type == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = status("VmHWM") - base
dt = time.perf_counter() - t0
t0 = time.perf_counter(); step()
if dev.type == "cuda":
    torch.cuda.synchronize()
dt = min(dt, time.perf_counter() - t0)
print(json.dumps({{"peak_mb_per_seq": peak / 2**20 / B, "tokens_per_s": B * (L + T) / dt}}))
"""


def planned_mb_per_seq(cfg, layers, seqs, prompt, completion, chunk, ckpt, device, lora=0):
    """plan.py's "training micro-batch" phase for this benchmark's step, per sequence: a run whose step is
    one micro-batch of `seqs` sequences (the activations and the log-prob head of the micro-batch, and
    the output head's gradient, made first in the backward; LoRA's head is frozen)."""
    import plan
    from config import Config
    from transformers import Qwen2Config
    s = plan.shape(Qwen2Config(vocab_size=151936, num_hidden_layers=layers, **cfg))
    step = Config(prompts_per_step=seqs, group_size=1, micro_batch_size=seqs, max_new_tokens=completion,
                  logprob_chunk=chunk, gradient_checkpointing=ckpt, lora_rank=lora)
    phases, _ = plan.plan(step, s, device, prompt_tokens=prompt)      # dtype auto: fp32 on a CPU, mixed on CUDA
    return sum(size for _, size in phases["training micro-batch"]) / 2 ** 20 / seqs


def measure(cfg, layers, seqs, prompt, completion, option, device):
    """One option in a fresh process: {"peak_mb_per_seq", "tokens_per_s"}, and plan.py's "planned_mb_per_seq"."""
    chunk, ckpt, rank = OPTIONS[option]
    a = dict(config=cfg, layers=layers, seqs=seqs, prompt=prompt, completion=completion, chunk=chunk, ckpt=ckpt,
             lora=rank, device=device)
    out = subprocess.run([sys.executable, "-c", source(WORKER), json.dumps(a)],
                         capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["planned_mb_per_seq"] = planned_mb_per_seq(cfg, layers, seqs, prompt, completion, chunk, ckpt, device, rank)
    return r


PHASE_WORKER = """
import json, sys, torch
sys.path.insert(0, {root!r})
from transformers import Qwen2Config, Qwen2ForCausalLM
import rollout
a = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(2)
model = Qwen2ForCausalLM(Qwen2Config(vocab_size=151936, num_hidden_layers=a["layers"], max_position_embeddings=4096,
                                     **a["config"]))
R, G, P, T = a["rows"], a["group"], a["prompt"], a["completion"]
prompts = [torch.randint(3, 151936, (P,)).tolist() for _ in range(R)]
{high_water}if a["phase"] == "optimizer step":
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    base = reset()
    opt.step()
else:
    k = G if a["phase"] == "sampling" else 1
    rollout.sample(model, prompts[:2], n=k, sampling=rollout.Sampling(4), seed=0, eos_token_id=[])     # warm-up
    base = reset()
    rollout.sample(model, prompts[:R // k], n=k, sampling=rollout.Sampling(T, max_rows=R), seed=0, eos_token_id=[])
print(json.dumps({{"mb": (status("VmHWM") - base) / 2**20}}))
"""


def measure_phase(phase, cfg, layers=2, rows=64, group=2, prompt=64, completion=256):
    """(measured MB, planned MB) of one phase ("sampling", "held-out evaluation", "optimizer step") on the
    CPU, in a fresh process."""
    import plan
    from config import Config
    from transformers import Qwen2Config
    a = dict(phase=phase, config=cfg, layers=layers, rows=rows, group=group, prompt=prompt, completion=completion)
    out = subprocess.run([sys.executable, "-c", source(PHASE_WORKER), json.dumps(a)],
                         capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    measured = json.loads(out.stdout.strip().splitlines()[-1])["mb"]
    s = plan.shape(Qwen2Config(vocab_size=151936, num_hidden_layers=layers, **cfg))
    run = Config(prompts_per_step=rows // group, group_size=group, max_new_tokens=completion,
                 max_prompt_tokens=prompt, rollout_batch_size=rows)
    phases = plan.plan(run, s, "cpu")[0]
    parts = dict(phases["kept"]) | dict(phases[phase])
    if phase == "optimizer step":          # the gradients were there before; the first step makes the moments
        planned = parts["AdamW moments (2 N w / shards)"] + sum(x for n, x in phases[phase] if "gradients" not in n)
    else:
        planned = sum(x for _, x in phases[phase])
    return measured, planned / 2 ** 20


RECIPE_WORKER = """
import contextlib, json, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(2)
import checkpoint, train
a = json.loads(sys.argv[1])
{high_water}timed = checkpoint.PhaseClock.__call__
@contextlib.contextmanager
def measured(clock, phase):       # the phase's growth of the high-water mark, beside its seconds
    base = reset()
    with timed(clock, phase):
        yield
    clock.row["hwm_" + phase + "_mb"] = (status("VmHWM") - base) / 2**20
checkpoint.PhaseClock.__call__ = measured
load = train.load_model_and_tokenizer
def load_resident(*args, **kwargs):   # the weights in the process's own memory from the start, as a GPU holds
    model, tok = load(*args, **kwargs)  # them: not the safetensors file's mmapped pages, which would join the
    with torch.no_grad():               # high-water mark in whichever phase first reads them (an untied
        for p in model.parameters():    # embedding's rows: a few at every step)
            p.data = p.data.clone()
    return model, tok
train.load_model_and_tokenizer = load_resident
train.rewards = lambda texts, golds: [float(i % 2) for i in range(len(texts))]   # every pair informative
train.main(a["argv"])
"""


def recipe_rows():
    """(card GiB, model, flags) of every row of docs/gpu.md's two recipe tables that fits in one process
    (bench/recipes.py), LoRA's with --lora-rank 16; rows left out, with why, as (card, model, None, why)."""
    import dataclasses
    import recipes
    rows = []
    for base, pairs in ((recipes.BASE, [(n, c) for c in recipes.CARDS for n in recipes.SHAPES]),
                        (dataclasses.replace(recipes.BASE, lora_rank=recipes.LORA_RANK), recipes.LORA_ROWS)):
        for name, card in pairs:
            r = recipes.recipe(name, card, base)
            lora = f"--lora-rank {base.lora_rank} " if base.lora_rank else ""
            why = ("nothing fits" if r is None or (base.lora_rank and r[1] > 1)
                   else "torchrun --fsdp" if r[0].startswith("torchrun") or r[1] > 1
                   else "--cpu-offload" if "--cpu-offload" in r[0]
                   else "7B full fine-tuning: more than this machine's memory" if "7B" in name and not lora
                   else None)
            rows.append((card, name, None if why else (lora + r[0]).split(), why))
    return rows


def run_recipe(name, flags, prompt=32, completion=16, layers=2):
    """One recipe row run by train.py in a fresh process (RECIPE_WORKER): {phase: (measured MB, planned MB
    or None)} for sampling, logprobs, update and evaluation."""
    import tempfile

    import plan
    import recipes
    from gpu_check import write_model, write_problems
    from train import parse_args
    from transformers import Qwen2Config
    G, given = recipes.BASE.group_size, parse_args(flags)
    b = given.micro_batch_size if "--micro-batch-size" in flags else recipes.BASE.micro_batch_size
    R = given.rollout_batch_size or 2 * b                  # the rollout micro-batch (and evaluation's)
    rows = max(2 * b, R)                                   # two training micro-batches at least
    shape = {**recipes.SHAPES[name], "num_hidden_layers": layers}
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(os.path.join(tmp, "model"), shape, dtype="float32")
        problems = write_problems(os.path.join(tmp, "problems.jsonl"), prompt, n=max(rows, R))
        argv = flags + ["--model", model, "--data", problems, "--eval-data", problems,
                        "--template", "raw", "--dtype", "float32" if "--lora-rank" in flags else "mixed",
                        "--device", "cpu", "--steps", "2",
                        "--eval-every", "1", "--eval-problems", str(R), "--prompts-per-step", str(rows // G),
                        "--group-size", str(G), "--max-new-tokens", str(completion), "--max-prompt-tokens",
                        str(prompt), "--out-dir", os.path.join(tmp, "run"), "--no-save", "--no-progress"]
        argv += [] if "--micro-batch-size" in flags else ["--micro-batch-size", str(b)]
        out = subprocess.run([sys.executable, "-c", source(RECIPE_WORKER),
                              json.dumps({"argv": argv})], capture_output=True, text=True,
                             env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
        if out.returncode:
            raise RuntimeError(out.stderr.strip().splitlines()[-1])
        steps = [json.loads(line) for line in open(os.path.join(tmp, "run", "metrics.jsonl"))]
        phases = plan.plan(parse_args(argv), plan.shape(Qwen2Config(**shape)), "cpu", prompt_tokens=prompt)[0]
    planned = {p: sum(x for _, x in phases[p]) / 2 ** 20 for p in plan.PHASES}
    return {"sampling": (steps[0]["hwm_sampling_mb"], planned["sampling"]),
            "logprobs": (steps[1]["hwm_logprobs_mb"], None),
            "update": (steps[1]["hwm_update_mb"], max(planned["training micro-batch"], planned["optimizer step"])),
            "evaluation": (steps[0]["hwm_evaluation_mb"], planned["held-out evaluation"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqs", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--completion", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    ap.add_argument("--phases", action="store_true", help="sampling, evaluation and the optimizer step (CPU)")
    ap.add_argument("--recipes", action="store_true", help="every recipe row of docs/gpu.md, run by train.py (CPU)")
    ap.add_argument("--rows", choices=["all", "full", "lora"], default="all",
                    help="with --recipes: every row, full fine-tuning's only, or LoRA's only")
    args = ap.parse_args()
    if args.recipes:
        import torch
        import transformers
        transformers.utils.logging.disable_progress_bar()          # save_pretrained's bar in the table
        prompt, completion = (args.prompt, args.completion) if "--prompt" in sys.argv else (32, 16)
        print(f"docs/gpu.md's recipes run by train.py on the CPU: 2 layers of each shape (real width, heads, "
              f"vocabulary), {prompt} + {completion} tokens, --dtype mixed; torch {torch.__version__}, "
              f"transformers {transformers.__version__}")
        print(f"{'card':>4}  {'model':<22}{'flags':<62}{'phase':<12}{'measured MB':>12}{'planned MB':>12}"
              f"{'planned / measured':>20}")
        done = {}
        for card, name, flags, why in recipe_rows():
            if args.rows != "all" and (args.rows == "lora") != (flags is not None and "--lora-rank" in flags):
                continue
            if flags is None:
                print(f"{card:>4}  {name:<22}not run: {why}")
                continue
            if (name, tuple(flags)) in done:
                print(f"{card:>4}  {name:<22}{' '.join(flags) or '(none)':<62}as the {done[name, tuple(flags)]} GiB row")
                continue
            done[name, tuple(flags)] = card
            try:
                result = run_recipe(name, flags, prompt, completion)
            except RuntimeError as e:
                print(f"{card:>4}  {name:<22}{' '.join(flags):<62}failed: {e}")
                continue
            for phase, (measured, planned) in result.items():
                ratio = f"{planned / measured:>19.2f}x" if planned else f"{'-':>20}"
                print(f"{card:>4}  {name:<22}{' '.join(flags) or '(none)':<62}{phase:<12}{measured:>12.0f}"
                      f"{f'{planned:.0f}' if planned else '-':>12}{ratio}", flush=True)
        return
    if args.phases:
        print(f"small (h 256) config, {args.layers} layers, vocabulary 151,936; 64 rows of {args.prompt} + "
              f"{args.completion} tokens\n{'phase':<22}{'measured MB':>12}{'planned MB':>12}{'planned / measured':>20}")
        for phase in ("sampling", "held-out evaluation", "optimizer step"):
            measured, planned = measure_phase(phase, CONFIGS["small (h 256)"], args.layers, prompt=args.prompt,
                                              completion=args.completion)
            print(f"{phase:<22}{measured:>12.0f}{planned:>12.0f}{planned / measured:>19.2f}x", flush=True)
        return
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device: {name}; {args.seqs} sequences of {args.prompt} + {args.completion} tokens; {args.layers} layers")
    print(f"{'config':<16}{'option':<19}{'MB / sequence':>14}{'vs plain':>10}{'tokens/s':>10}{'vs plain':>10}"
          f"{'planned MB':>12}{'planned / measured':>20}")
    for cname in args.configs:
        cfg, base = CONFIGS[cname], None
        for opt in args.options:
            try:
                r = measure(cfg, args.layers, args.seqs, args.prompt, args.completion, opt, device)
            except RuntimeError as e:
                print(f"{cname:<16}{opt:<19} failed: {e}")
                continue
            base = base or r
            print(f"{cname:<16}{opt:<19}{r['peak_mb_per_seq']:>14.0f}{r['peak_mb_per_seq'] / base['peak_mb_per_seq']:>9.2f}x"
                  f"{r['tokens_per_s']:>10.0f}{r['tokens_per_s'] / base['tokens_per_s']:>9.2f}x"
                  f"{r['planned_mb_per_seq']:>12.0f}{r['planned_mb_per_seq'] / r['peak_mb_per_seq']:>19.2f}x", flush=True)


if __name__ == "__main__":
    main()
