"""New tokens per second of rollout.sample vs model.generate, on the same model and prompts.

    python bench/rollout_speed.py [--batches 64 256] [--new-tokens 64] [--repeats 3] [--device cpu|cuda]

Both sample (temperature 1, top-p 1) with the KV cache on, for exactly --new-tokens tokens (no EOS
stop, so both do the same work). Models, random weights built from configs (no download):
  tiny   the default model of train.py (2-layer Qwen2, hidden 128, char vocabulary)
  50M    a Qwen2 config of about 50M parameters (8 layers, hidden 512, vocabulary 32k)
Runs alternate (generate, ours, generate, ours, ...) so drift on a shared machine hits both alike;
prints the median tokens/s of each and the median of the per-pair speed ratios (ours / generate).
"""

import argparse
import os
import statistics
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from rollout import left_pad, sample  # noqa: E402
from train import tiny_model_config  # noqa: E402

def tiny():
    cfg = tiny_model_config()
    cfg.max_position_embeddings = 128      # prompts + 64 new tokens exceed the built-in task's 64
    return cfg


CONFIGS = {
    "tiny": tiny,
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


def interleaved(a, b, repeats):
    """Time a and b alternately (a, b, a, b, ...) so that drift on a shared machine hits both alike;
    returns the median time of each and the median of the per-pair ratios time_a / time_b."""
    pairs = [(timed(a), timed(b)) for _ in range(repeats)]
    ta, tb = (statistics.median(x) for x in zip(*pairs))
    return ta, tb, statistics.median(x / y for x, y in pairs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=list(CONFIGS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}, "
          f"threads: {torch.get_num_threads()}, new tokens: {args.new_tokens}")
    print(f"{'model':<7}{'params':>8}{'batch':>7}{'generate tok/s':>16}{'ours tok/s':>12}{'ratio':>8}")
    for name in args.models:
        cfg = CONFIGS[name]()
        model = Qwen2ForCausalLM(cfg).to(dev).eval()
        if dev.type == "cuda":
            model = model.to(torch.bfloat16)
        model.generation_config.eos_token_id = None
        params = sum(p.numel() for p in model.parameters())
        for B in args.batches:
            g = torch.Generator().manual_seed(B)
            prompts = [torch.randint(3, cfg.vocab_size, (int(torch.randint(6, 16, (1,), generator=g)),),
                                     generator=g).tolist() for _ in range(B)]
            ids, mask, _ = left_pad(prompts, 0, dev)

            def hf():
                with torch.inference_mode():
                    model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                                   top_k=0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                   pad_token_id=0)

            def ours():
                sample(model, prompts, n=1, max_new_tokens=args.new_tokens, temperature=1.0, seed=0)

            hf(), ours()  # warm-up (allocator, kernels)
            t_hf, t_ours, ratio = interleaved(hf, ours, args.repeats)
            toks = B * args.new_tokens
            print(f"{name:<7}{params / 1e6:>7.1f}M{B:>7}{toks / t_hf:>16.0f}{toks / t_ours:>12.0f}"
                  f"{ratio:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
