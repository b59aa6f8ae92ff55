"""Peak memory of every phase of a run, measured, against plan.py's plan of the same work.

    python bench/memory.py [--seqs 2] [--prompt 64] [--completion 256] [--layers 2] [--device cpu|cuda]
    python bench/memory.py --phases          # sampling, held-out evaluation, optimizer step (CPU)

--phases: for the small config (its full 151,936-token vocabulary), in a fresh process each, the peak
memory of sampling 64 rows (32 prompts x 2) of --prompt + --completion tokens, of evaluating 64
prompts once each, and of AdamW's first step (its moments and temporaries), against the plan of the
same work (plan.plan: the sampling and held-out evaluation phases; the optimizer step's temporaries
and the moments it creates). On a CPU the peak is the growth of the process's high-water mark
(VmHWM, reset through /proc/self/clear_refs at the phase's start, with glibc's mmap threshold fixed
so that freed memory goes back to the system).

Without --phases: one training forward + backward, for each memory option.

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

Peak memory is the growth of the process's peak RSS on CPU (each option runs in a fresh process),
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

WORKER = """
import json, resource, sys, time, torch
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
if dev.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter(); step()
if dev.type == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
dt = time.perf_counter() - t0
t0 = time.perf_counter(); step()
if dev.type == "cuda":
    torch.cuda.synchronize()
dt = min(dt, time.perf_counter() - t0)
print(json.dumps({{"peak_mb_per_seq": peak / 2**20 / B, "tokens_per_s": B * (L + T) / dt}}))
"""


def planned_mb_per_seq(cfg, layers, seqs, prompt, completion, chunk, ckpt, device):
    """plan.py's bytes for this benchmark's step, per sequence: the activations and the log-prob head of
    one micro-batch (the gradients are made in the backward, after that peak, as in a run's first
    micro-batch)."""
    import plan
    from transformers import Qwen2Config
    s = plan.shape(Qwen2Config(vocab_size=151936, num_hidden_layers=layers, **cfg))
    a = 2 if device == "cuda" else 4                  # bf16 autocast on CUDA, fp32 on a CPU
    total = (seqs * (prompt + completion) * plan.activation_bytes_per_token(s, a, ckpt)
             + plan.logit_bytes(s, a, seqs, completion, chunk))
    return total / 2 ** 20 / seqs


def measure(cfg, layers, seqs, prompt, completion, option, device):
    """One option in a fresh process: {"peak_mb_per_seq", "tokens_per_s"}, and plan.py's "planned_mb_per_seq"."""
    chunk, ckpt, rank = OPTIONS[option]
    a = dict(config=cfg, layers=layers, seqs=seqs, prompt=prompt, completion=completion, chunk=chunk, ckpt=ckpt,
             lora=rank, device=device)
    out = subprocess.run([sys.executable, "-c", WORKER.format(root=os.path.abspath(ROOT)), json.dumps(a)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["planned_mb_per_seq"] = planned_mb_per_seq(cfg, layers, seqs, prompt, completion, chunk, ckpt, device)
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
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))
def reset():                                   # the high-water mark starts again at the current size
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")
if a["phase"] == "optimizer step":
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
    out = subprocess.run([sys.executable, "-c", PHASE_WORKER.format(root=os.path.abspath(ROOT)), json.dumps(a)],
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
    args = ap.parse_args()
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
    print(f"{'config':<16}{'option':<12}{'MB / sequence':>14}{'vs plain':>10}{'tokens/s':>10}{'vs plain':>10}"
          f"{'planned MB':>12}{'planned / measured':>20}")
    for cname in args.configs:
        cfg, base = CONFIGS[cname], None
        for opt in args.options:
            try:
                r = measure(cfg, args.layers, args.seqs, args.prompt, args.completion, opt, device)
            except RuntimeError as e:
                print(f"{cname:<16}{opt:<12} failed: {e}")
                continue
            base = base or r
            print(f"{cname:<16}{opt:<12}{r['peak_mb_per_seq']:>14.0f}{r['peak_mb_per_seq'] / base['peak_mb_per_seq']:>9.2f}x"
                  f"{r['tokens_per_s']:>10.0f}{r['tokens_per_s'] / base['tokens_per_s']:>9.2f}x"
                  f"{r['planned_mb_per_seq']:>12.0f}{r['planned_mb_per_seq'] / r['peak_mb_per_seq']:>19.2f}x", flush=True)


if __name__ == "__main__":
    main()
