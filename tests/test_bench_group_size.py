"""bench/group_size.py's gradient estimates are real gradients: update.accumulate_gradients leaves the
batch's gradient in p.grad (the optimizer step is the caller's), and the benchmark reads it there."""

import torch
from helpers import bench_module


def test_gradient_estimates_are_the_update_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from data import build_prompts, tiny_task_problems
    from tiny_model import build_tiny_tokenizer
    bench = bench_module("group_size")
    tok = build_tiny_tokenizer()
    problems = build_prompts(tiny_task_problems()["train"][:64], tok, builtin=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    est = bench.gradient_estimates(model, tok, problems, 16, 2, seed0=0, budget=256)   # groups of 16: some mixed
    n = sum(p.numel() for p in model.parameters())
    assert est.shape == (2, n) and torch.isfinite(est).all()
    assert (est.norm(dim=1) > 0).all()                      # not the zeros of a freed p.grad
    assert not torch.equal(est[0], est[1])                  # two draws, two estimates
