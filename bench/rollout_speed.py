"""New tokens per second of rollout.sample vs model.generate, on the same model and prompts.

    python bench/rollout_speed.py [--batches 64 256] [--new-tokens 64] [--repeats 5] [--device cpu|cuda]
                                  [--models tiny 50M] [--workloads fixed eos] [--stop-prob 0.03125]
                                  [--static] [--compiled] [--json FILE]

Both sample (temperature 1, top-p 1) with the KV cache on, in two workloads:
  fixed  exactly --new-tokens tokens per row (no EOS), so both do the same work each step: this
         measures the per-step cost of the decoding loop alone;
  eos    rows stop at a stop token, as GRPO's completions do, so they end at different lengths:
         the stop tokens are the first max(1, round(V * stop_prob)) ids of the vocabulary (for the
         tiny model's 18-token vocabulary that is its EOS alone). Tokens/s counts the tokens each
         method produced up to and including the stop token; the mean length is printed too.
Models, random weights built from configs (no download):
  tiny   the default model of train.py (2-layer Qwen2, hidden 128, char vocabulary)
  50M    a Qwen2 config of about 50M parameters (8 layers, hidden 512, vocabulary 32k)
Runs alternate (generate, ours, generate, ours, ...) so drift on a shared machine hits both alike;
prints the median tokens/s of each and the median of the per-pair speed ratios (ours / generate).
--static adds generate with a static cache (compiled by transformers on CUDA), --compiled adds
rollout.sample with rollout.decoder_for(model, compile=True) (the compiled decode path, compiled.py;
its compilation happens in the untimed warm-up).
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from rollout import Sampling, decoder_for, left_pad, sample  # noqa: E402
from tiny_model import tiny_model_config  # noqa: E402

def tiny():
    cfg = tiny_model_config()
    cfg.max_position_embeddings = 128      # prompts + 64 new tokens exceed the built-in task's 64
    return cfg


def qwen(hidden, inter, layers, heads, kv):
    return lambda: Qwen2Config(vocab_size=151936, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                               num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                               tie_word_embeddings=True, pad_token_id=0)


CONFIGS = {
    "tiny": tiny,
    "0.5B": qwen(896, 4864, 24, 14, 2),        # Qwen2.5-0.5B's config.json shapes (random weights)
    "1.5B": qwen(1536, 8960, 28, 12, 2),       # Qwen2.5(-Math)-1.5B's
    "50M": lambda: Qwen2Config(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                               num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                               tie_word_embeddings=True, pad_token_id=0),
}


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=list(CONFIGS))
    ap.add_argument("--workloads", nargs="+", default=["fixed", "eos"], choices=["fixed", "eos"])
    ap.add_argument("--stop-prob", type=float, default=1 / 32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--static", action="store_true", help="also generate with a static cache (cache_implementation="
                                                           "'static'; transformers compiles its decoding step itself "
                                                           "where it supports that, as on CUDA): its fastest own path")
    ap.add_argument("--compiled", action="store_true", help="also the compiled decoder (compiled.py)")
    ap.add_argument("--compile-backend", default="", help="torch.compile backend for --compiled; default: "
                                                          "compiled.compile_options (eager: trace only, a dry run)")
    ap.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = ap.parse_args()
    rows = []
    torch.manual_seed(0)
    dev = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}, "
          f"threads: {torch.get_num_threads()}, new tokens: {args.new_tokens}")
    print(f"{'model':<7}{'params':>8}{'batch':>7}{'workload':>10}{'mean len':>10}{'generate tok/s':>16}"
          f"{'ours tok/s':>12}{'ratio':>8}" + (f"{'static tok/s':>14}{'ours/static':>13}" if args.static else "")
          + (f"{'compiled tok/s':>16}{'comp/generate':>15}" + (f"{'comp/static':>13}" if args.static else "")
             if args.compiled else ""))
    for name in args.models:
        cfg = CONFIGS[name]()
        model = Qwen2ForCausalLM(cfg).to(dev).eval()
        if dev.type == "cuda":
            model = model.to(torch.bfloat16)
        model.generation_config.eos_token_id = None
        params = sum(p.numel() for p in model.parameters())
        stop = list(range(1, 1 + max(1, round(cfg.vocab_size * args.stop_prob))))
        for B in sorted(args.batches, reverse=True):  # largest first: the compiled path's cache then fits all
            g = torch.Generator().manual_seed(B)
            prompts = [torch.randint(3, cfg.vocab_size, (int(torch.randint(6, 16, (1,), generator=g)),),
                                     generator=g).tolist() for _ in range(B)]
            ids, mask, _ = left_pad(prompts, 0, dev)
            for workload in args.workloads:
                eos = stop if workload == "eos" else None
                produced = {}

                def generate(key, **extra):
                    with torch.inference_mode():
                        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0,
                                             top_p=1.0, top_k=0, max_new_tokens=args.new_tokens,
                                             min_new_tokens=None if eos else args.new_tokens, eos_token_id=eos,
                                             pad_token_id=0, **extra)[:, ids.shape[1]:]
                    # tokens up to and including the first stop token (generate pads after it)
                    ended = torch.isin(out, torch.tensor(eos or [-1], device=dev))
                    produced[key] = int((ended.long().cumsum(1) - ended.long() == 0).sum())

                def rollout(key, **extra):
                    ro = sample(model, prompts, n=1, sampling=Sampling(max_new_tokens=args.new_tokens, temperature=1.0),
                                eos_token_id=eos, seed=0, **extra)
                    produced[key] = int(ro.lengths.sum())

                def hf():
                    generate("hf")

                def static():
                    generate("static", cache_implementation="static")

                def ours():
                    rollout("ours")

                def compiled():
                    rollout("compiled", decoder=decoder_for(model, {"backend": args.compile_backend}
                                                             if args.compile_backend else True))

                hf(), ours()  # warm-up (allocator, kernels)
                if args.static:
                    static()        # warm-up: on CUDA the first calls compile the decoding step
                if args.compiled:
                    t_compile = timed(compiled)   # compiles (once per model and batch bucket), then replays
                    print(f"  (compiled path: first call {t_compile:.0f} s, compilation included)", flush=True)
                def measured(key, fn):      # printed at once: a run cut short keeps every method it timed
                    t = timed(fn)
                    print(f"  ({name}, batch {B}, {workload}: {key} {produced[key] / t:.0f} tokens/s)", flush=True)
                    return t
                pairs = []
                for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both alike
                    t_hf = measured("hf", hf)
                    t_ours = measured("ours", ours)
                    t_static = measured("static", static) if args.static else None
                    t_compiled = measured("compiled", compiled) if args.compiled else None
                    pairs.append((produced["hf"] / t_hf, produced["ours"] / t_ours,
                                  produced["hf"], produced["ours"],
                                  produced["static"] / t_static if args.static else None,
                                  produced["compiled"] / t_compiled if args.compiled else None))
                hf_tps, our_tps = (statistics.median(p[i] for p in pairs) for i in (0, 1))
                ratio = statistics.median(p[1] / p[0] for p in pairs)
                mean_len = f"{statistics.mean(p[3] for p in pairs) / B:.0f}/{statistics.mean(p[2] for p in pairs) / B:.0f}"
                row = {"model": name, "params": params, "batch": B, "workload": workload, "generate_tps": hf_tps,
                       "ours_tps": our_tps, "ours_vs_generate": ratio}
                extra = ""
                if args.static:
                    row["static_tps"] = statistics.median(p[4] for p in pairs)
                    row["ours_vs_static"] = statistics.median(p[1] / p[4] for p in pairs)
                    extra = f"{row['static_tps']:>14.0f}{row['ours_vs_static']:>12.2f}x"
                if args.compiled:
                    row["compiled_tps"] = statistics.median(p[5] for p in pairs)
                    row["compiled_vs_generate"] = statistics.median(p[5] / p[0] for p in pairs)
                    extra += f"{row['compiled_tps']:>16.0f}{row['compiled_vs_generate']:>14.2f}x"
                    if args.static:
                        row["compiled_vs_static"] = statistics.median(p[5] / p[4] for p in pairs)
                        extra += f"{row['compiled_vs_static']:>12.2f}x"
                rows.append(row)
                if args.json:                     # after every row: a run cut short keeps what it measured
                    with open(args.json, "w") as f:
                        json.dump(rows, f, indent=1)
                print(f"{name:<7}{params / 1e6:>7.1f}M{B:>7}{workload:>10}{mean_len:>10}{hf_tps:>16.0f}"
                      f"{our_tps:>12.0f}{ratio:>7.2f}x" + extra, flush=True)


if __name__ == "__main__":
    main()
