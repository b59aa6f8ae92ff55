"""Chunked log-probs: the same numbers and gradients, with much less peak memory for a large vocabulary."""

import os
import subprocess
import sys
import textwrap

import torch
from helpers import bench_module
from transformers import Qwen2Config, Qwen2ForCausalLM

from rollout import sequence_logprobs


def batch(vocab, B=3, L=5, T=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(1, vocab, (B, L), generator=g)
    prompt_mask = torch.ones(B, L, dtype=torch.long)
    prompt_mask[0, :2] = 0                                        # left padding in one row
    tokens = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, T)
    mask[1, 7:] = 0                                               # a row that ended early
    return prompt, prompt_mask, tokens, mask


def test_chunked_logprobs_and_gradients_equal_the_plain_ones():
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    args = batch(300)
    results = []
    for chunk in (None, 1, 4, 64):
        model.zero_grad()
        lp = sequence_logprobs(model, *args, temperature=0.9, chunk_size=chunk)
        (lp * args[3]).sum().backward()
        results.append((lp.detach(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])))
    for lp, grad in results[1:]:
        assert torch.allclose(lp, results[0][0], atol=1e-5)
        assert torch.allclose(grad, results[0][1], atol=1e-5, rtol=1e-4)


PEAK = textwrap.dedent("""
    import resource, sys, torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from rollout import sequence_logprobs
    torch.manual_seed(0)
    torch.set_num_threads(2)
    V, B, L, T = 151936, 4, 8, 256                # Qwen2.5's vocabulary; fp32 logits are 622 MB
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    ids = torch.randint(0, V, (B, L)); pm = torch.ones(B, L, dtype=torch.long)
    tok = torch.randint(0, V, (B, T)); m = torch.ones(B, T)
    chunk = int(sys.argv[1]) or None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sequence_logprobs(model, ids, pm, tok, m, 1.0, chunk).sum().backward()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)   # MB above the start
""")


def peak_mb(chunk):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", PEAK, str(chunk)], capture_output=True, text=True, check=True,
                         cwd=root)
    return int(out.stdout.strip().splitlines()[-1])


def test_chunked_path_has_a_much_lower_peak_memory():
    plain, chunked = peak_mb(0), peak_mb(32)
    # plain holds (B, T, V) fp32 logits (622 MB) and their gradient; chunks of 32 positions hold 1/8 of it
    assert plain > 1000, plain
    assert chunked < plain / 3, (plain, chunked)


def bench_memory():
    return bench_module("memory")


def test_every_phase_the_cpu_has_is_planned_within_20_percent():
    """bench/memory.py --phases: sampling, the held-out evaluation and AdamW's step, each measured in a fresh
    process (the growth of the high-water mark), against plan.py's plan of the same work."""
    bench = bench_memory()
    for phase in ("sampling", "held-out evaluation", "optimizer step"):
        measured, planned = bench.measure_phase(phase, bench.CONFIGS["small (h 256)"], completion=16)
        assert 0.8 <= planned / measured <= 1.2, (phase, measured, planned)


def test_a_recipe_run_by_train_py_stays_within_10_percent_of_its_plan():
    """bench/memory.py --recipes, one row: docs/gpu.md's 16 GB recipe for Qwen2.5-0.5B (the real width,
    heads and vocabulary; 1 layer and short sequences here) run by train.py at its flags under --dtype
    mixed, two steps with a held-out evaluation: every planned phase within 10% of its measured growth."""
    bench = bench_memory()
    card, name, flags, _ = next(r for r in bench.recipe_rows() if r[:2] == (16, "Qwen2.5-0.5B-Instruct"))
    assert "--micro-batch-size" in flags and "--gradient-checkpointing" in flags   # the row's own flags
    result = bench.run_recipe(name, flags, prompt=16, completion=8, layers=1)
    assert set(result) == {"sampling", "logprobs", "update", "evaluation"}
    for phase, (measured, planned) in result.items():
        if planned is not None:
            assert 0.9 <= planned / measured <= 1.1, (phase, measured, planned)
