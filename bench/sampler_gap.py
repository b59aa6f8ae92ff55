"""Precision of each phase: how far the sampler's log-probs are from the training forward's, what that
gap would do to the first update's ratio if pi_old were the sampler's log-probs (train.py takes it from
the training forward), and the KV cache's bytes per token.

    python bench/sampler_gap.py                          # CPU: tiny model and a 1.5B shape cut to 2 layers
    python bench/sampler_gap.py --device cuda --layers 28 --rows 64 --new-tokens 256    # a GPU

For each --dtype (float32, mixed = fp32 weights + bf16 autocast, bfloat16) and each shape, it samples
`rows` completions with rollout.sample, recomputes their log-probs with rollout.sequence_logprobs as
the update does (same precision), and prints:
  - gap mean / max: |log pi_train - log pi_sampler| over completion tokens (what train.py logs as
    sampler_gap_mean / sampler_gap_max);
  - pi_old = sampler: the first update's ratio mean and clip fraction with pi_old = the sampler's
    log-probs (advantages +1/-1 alternating, DAPO's clip [0.8, 1.28]), and the share of tokens whose
    ratio is off 1 by more than 1%;
  - pi_old = training forward: the same with the training forward's log-probs, detached (train.py);
  - KV bytes/token: the cache's bytes per token of one sequence (all layers, keys and values), as
    stored, and in brackets as the rotary embedding hands the keys over (keys in fp32 under autocast:
    what a cache storing them as they come would hold).
The 1.5B shape is Qwen2.5-Math-1.5B's config.json (hidden 1536, 12 heads, 2 KV heads, vocabulary
151,936) with random weights (no pretrained weights here), cut to --layers layers. Random weights give
near-uniform next-token distributions, so the gap of a trained model can differ: on a GPU, part 4 of
bench/gpu_check.py logs the same gap from a run of the 1.5B shape; a trained checkpoint can be measured
with --model DIR.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import kv_cache  # noqa: E402
import rollout  # noqa: E402
from grpo import grpo_loss  # noqa: E402
from precision import autocast, precision  # noqa: E402

SHAPE_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                  vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=4096)


def build(shape, layers, device, dtype):
    """A random Qwen2 of `shape` ("tiny": the built-in model's config) with `layers` layers, weights in
    the --dtype's weight dtype."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from precision import DTYPES
    from tiny_model import tiny_model_config
    cfg = tiny_model_config() if shape == "tiny" else Qwen2Config(**SHAPE_1_5B, num_hidden_layers=layers)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).to(device, DTYPES[precision(dtype, device)]).eval()


def kv_bytes_per_token(model, prompt, device, dtype):
    """(bytes per token as the cache stores them, bytes per token as the keys and values reach it), all
    layers, read from the cache layers of one short sampling call."""
    layers, reached = [], []
    real = kv_cache.PreallocatedLayer.update

    def spy(self, k, v, *a, **kw):                      # the first call of each layer is the prefill
        if not self.is_initialized:
            layers.append(self)
            reached.append(k[0, :, 0].nbytes + v[0, :, 0].nbytes)
        return real(self, k, v, *a, **kw)
    kv_cache.PreallocatedLayer.update = spy
    try:
        with autocast(device, dtype):
            rollout.sample(model, [prompt], n=1, sampling=rollout.Sampling(max_new_tokens=1), seed=0)
    finally:
        kv_cache.PreallocatedLayer.update = real
    return sum(layer.k_store[0, :, 0].nbytes + layer.v_store[0, :, 0].nbytes for layer in layers), sum(reached)


def measure(model, device, dtype, rows, new_tokens, prompt_len=16):
    """The figures of one (model, dtype): a dict."""
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, V, (prompt_len,), generator=g).tolist() for _ in range(max(1, rows // 2))]
    with autocast(device, dtype):
        ro = rollout.sample(model, prompts, n=2, sampling=rollout.Sampling(max_new_tokens=new_tokens), seed=0, eos_token_id=[])
        ids, pmask, _ = rollout.left_pad(prompts, 0, device)
        idx = torch.arange(len(prompts), device=device).repeat_interleave(2)
        with torch.no_grad():
            train_logp = rollout.sequence_logprobs(model, ids[idx], pmask[idx], ro.tokens, ro.mask).float()
    mask = ro.mask
    gap = (train_logp - ro.logprobs).abs() * mask
    adv = torch.tensor([1.0, -1.0], device=device).repeat(len(prompts))
    _, before = grpo_loss(train_logp, ro.logprobs, adv, mask, 0.2, 0.28)
    _, after = grpo_loss(train_logp, train_logp.detach(), adv, mask, 0.2, 0.28)
    stored, incoming = kv_bytes_per_token(model, prompts[0], device, dtype)
    off = ((torch.exp(train_logp - ro.logprobs) - 1).abs() > 0.01).float() * mask       # ratio off by > 1%
    return {"gap_mean": (gap.sum() / mask.sum()).item(), "gap_max": gap.max().item(),
            "off_1pct": (off.sum() / mask.sum()).item(),
            "ratio_before": before["ratio_mean"], "clip_before": before["clip_frac"],
            "ratio_after": after["ratio_mean"], "clip_after": after["clip_frac"],
            "kv_bytes": stored, "kv_bytes_old": incoming, "tokens": int(mask.sum())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", nargs="+", default=["tiny", "1.5B"], choices=["tiny", "1.5B"])
    ap.add_argument("--layers", type=int, default=2, help="layers of the 1.5B shape (28 in the real model)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "mixed", "bfloat16"],
                    choices=["float32", "mixed", "bfloat16"])
    ap.add_argument("--rows", type=int, default=16, help="completions (pairs of two per prompt)")
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 16))
    command = " ".join(["python bench/sampler_gap.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"precision, `{command}` (torch {torch.__version__}, {args.device}; {args.rows} completions x "
             f"{args.new_tokens} tokens)", "",
             "| shape | --dtype | gap mean | gap max | pi_old = sampler: ratio mean / clip frac / off > 1% | "
             "pi_old = training forward: ratio mean / clip frac | KV bytes/token (keys as handed over) | s |", "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    results = []
    for shape in args.shapes:
        for dtype in args.dtypes:
            t0 = time.perf_counter()
            model = build(shape, args.layers, args.device, dtype)
            r = measure(model, args.device, dtype, args.rows, args.new_tokens)
            del model
            name = "tiny (built-in)" if shape == "tiny" else f"1.5B shape, {args.layers} layers"
            line = (f"| {name} | {dtype} | {r['gap_mean']:.2e} | {r['gap_max']:.2e} | {r['ratio_before']:.6f} / "
                    f"{r['clip_before']:.3f} / {r['off_1pct']:.1%} | {r['ratio_after']:.6f} / {r['clip_after']:.3f} | {r['kv_bytes']:,}"
                    f" ({r['kv_bytes_old']:,}) | {time.perf_counter() - t0:.0f} |")
            print(line, flush=True)
            lines.append(line)
            results.append({"shape": shape, "dtype": dtype, **r})
    return results, lines


if __name__ == "__main__":
    main()
