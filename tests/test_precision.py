"""Mixed precision (--dtype mixed: fp32 weights, bf16 autocast), tried on a CPU: the ratio is exactly 1
on-policy, the KV cache and the sampling weights are in the compute dtype, and fp32 runs log what they
logged before this was built."""

import json
import os

import pytest
import torch
from helpers import small_run_args
from transformers import Qwen2Config, Qwen2ForCausalLM

import kv_cache
import precision
import rollout
import train
from config import parse_args

HERE = os.path.dirname(os.path.abspath(__file__))


def small_qwen(tie=True):
    """A 2-layer Qwen2 with grouped-query attention (4 heads, 2 KV heads) and a tied output head."""
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie))


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8]]


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


# ---------------------------------------------------------------------------------------------------
# The ratio: pi_old from the training forward
# ---------------------------------------------------------------------------------------------------
def test_mixed_precision_run_logs_a_ratio_of_exactly_one_and_the_sampler_gap(tmp_path, tiny_model_dir):
    """--dtype mixed on a CPU: step 0's update has ratio exactly 1.0 and nothing clipped, while the
    sampler's log-probs differ from the training forward's (bf16 decode vs full-sequence kernels)."""
    out = str(tmp_path / "mixed")
    train.main(small_run_args(tmp_path, tiny_model_dir, dtype="mixed", steps=2, prompts_per_step=16, group_size=4,
                              out_dir=out))
    rows = [r for r in metrics(out) if "grad_norm" in r]
    assert rows and rows[0]["step"] == 0
    for r in rows:
        assert r["ratio_mean"] == 1.0 and r["clip_frac"] == 0.0
        assert 0 < r["sampler_gap_mean"] <= r["sampler_gap_max"] < 0.1


def test_with_two_updates_the_first_has_ratio_one_and_the_second_moves(tmp_path, tiny_model_dir):
    out = str(tmp_path / "mu2")
    train.main(small_run_args(tmp_path, tiny_model_dir, dtype="mixed", steps=1, prompts_per_step=16, group_size=4,
                              num_iterations=2, lr=1e-3, out_dir=out))
    (r,) = metrics(out)
    assert r["ratio_mean_first_update"] == 1.0 and r["clip_frac_first_update"] == 0.0
    assert r["ratio_mean"] != 1.0                                   # the second update sees the moved policy
    assert r["sampler_gap_mean"] > 0


def test_dpo_against_the_old_policy_starts_from_a_zero_margin_in_any_dtype(tmp_path, tiny_model_dir):
    """--dpo-ref old: the reference is pi_old, the update's own log-probs: margin exactly 0, loss log 2."""
    out = str(tmp_path / "dpo")
    train.main(small_run_args(tmp_path, tiny_model_dir, dtype="mixed", loss="dpo", dpo_ref="old", steps=1,
                              prompts_per_step=16, out_dir=out))
    (r,) = metrics(out)
    assert r["reward_margin"] == 0.0 and r["loss"] == pytest.approx(0.6931471805599453, abs=1e-7)


def test_dtype_flag_takes_mixed_and_names_the_allowed_values():
    assert parse_args(["--dtype", "mixed"]).dtype == "mixed"
    with pytest.raises(SystemExit):
        parse_args(["--dtype", "fp8"])


# ---------------------------------------------------------------------------------------------------
# Sampling in the compute dtype
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compile", [False, {"backend": "eager"}], ids=["eager", "compiled"])
def test_dtype_mixed_kv_cache_holds_keys_and_values_in_bf16(compile, monkeypatch):
    """Under autocast the rotary embedding hands over fp32 keys; the cache stores them in bf16, like
    the values (the eager path's PreallocatedLayer and the compiled path's fixed cache alike)."""
    stored = []
    real = rollout._sample_microbatch

    def spy(model, *args):
        out = real(model, *args)
        decoder = args[-1]
        layers = decoder.cache.layers if isinstance(decoder, kv_cache.CompiledDecoder) else None
        stored.extend((lay.k_store.dtype, lay.v_store.dtype) for lay in layers or [])
        return out
    monkeypatch.setattr(rollout, "_sample_microbatch", spy)
    kv_real = kv_cache.PreallocatedLayer.update

    def kv_spy(self, k, v, *a, **kw):
        result = kv_real(self, k, v, *a, **kw)
        stored.append((self.k_store.dtype, self.v_store.dtype))
        return result
    monkeypatch.setattr(kv_cache.PreallocatedLayer, "update", kv_spy)
    model = small_qwen()
    with bf16_autocast():
        rollout.sample(model, PROMPTS, n=2, max_new_tokens=6, seed=0, compile=compile)
    assert stored and set(stored) == {(torch.bfloat16, torch.bfloat16)}
    stored.clear()
    rollout.sample(model, PROMPTS, n=2, max_new_tokens=6, seed=0)                    # fp32: fp32
    assert set(stored) == {(torch.float32, torch.float32)}


def test_dtype_mixed_sampling_reads_bf16_weights_with_the_same_result_as_autocast_casting_them():
    """weights_in_compute_dtype swaps each Linear's fp32 weight for a bf16 copy while sampling: autocast
    would cast it to the same bf16 values at every step, so tokens and log-probs are equal to the bit;
    the fp32 weights (and the tied embedding) are back afterwards."""
    model = small_qwen()
    seen = []
    model.model.layers[0].mlp.up_proj.register_forward_pre_hook(lambda m, a: seen.append(m.weight.dtype))
    with bf16_autocast():
        ours = rollout.sample(model, PROMPTS, n=3, max_new_tokens=12, seed=1)
    assert set(seen) == {torch.bfloat16}
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.lm_head.weight.dtype == torch.float32
    seen.clear()
    real = rollout.weights_in_compute_dtype
    try:                                                    # autocast casting the fp32 weights at every step
        rollout.weights_in_compute_dtype = lambda model, keep=False: __import__("contextlib").nullcontext()
        with bf16_autocast():
            cast = rollout.sample(model, PROMPTS, n=3, max_new_tokens=12, seed=1)
    finally:
        rollout.weights_in_compute_dtype = real
    assert set(seen) == {torch.float32}
    assert torch.equal(ours.tokens, cast.tokens) and torch.equal(ours.logprobs, cast.logprobs)


def test_dtype_mixed_compiled_path_reads_weights_of_the_compute_dtype_kept_between_calls(monkeypatch):
    """The compiled decode step runs with bf16 Linear weights, the same tensors at every call (CUDA graphs
    read fixed addresses), refreshed in place when the fp32 weights change."""
    model = small_qwen()
    seen = []
    real_call = kv_cache.CompiledDecoder.__call__

    def call(self, m, *a):
        seen.append({lin.weight.dtype for lin in m.modules() if isinstance(lin, torch.nn.Linear)})
        return real_call(self, m, *a)
    monkeypatch.setattr(kv_cache.CompiledDecoder, "__call__", call)
    with bf16_autocast():
        first = rollout.sample(model, PROMPTS, n=2, max_new_tokens=6, seed=0, compile={"backend": "eager"})
    assert seen and all(s == {torch.bfloat16} for s in seen)
    kept = dict(precision._KEPT_WEIGHTS[model])
    up = model.model.layers[0].mlp.up_proj
    with torch.no_grad():
        up.weight.add_(1.0)                                      # an optimizer step
    with bf16_autocast():
        rollout.sample(model, PROMPTS, n=2, max_new_tokens=6, seed=0, compile={"backend": "eager"})
    assert all(precision._KEPT_WEIGHTS[model][k] is v for k, v in kept.items())   # the same tensors
    assert torch.equal(kept[(up, "weight")], up.weight.detach().bfloat16())     # refreshed
    assert first.tokens.shape[0] == 4


# ---------------------------------------------------------------------------------------------------
# fp32 is unchanged
# ---------------------------------------------------------------------------------------------------
REFERENCE = json.load(open(os.path.join(HERE, "data", "fp32_before_precision.json")))


@pytest.mark.parametrize("case", sorted(k for k in REFERENCE if not k.startswith("_")))
def test_fp32_runs_sample_and_train_as_before_the_precision_change(case, tmp_path, tiny_model_dir, monkeypatch):
    """tests/data/fp32_before_precision.json holds what 3-step fp32 runs logged with the code before
    pi_old came from the training forward: the same tokens are sampled, the same rewards scored, and
    losses, gradient norms and ratios agree to fp32 rounding (pi_old was the sampler's, ~1e-7 away)."""
    import hashlib
    ref = REFERENCE[case]
    hashes = []
    real = rollout.sample

    def spy(*a, **k):
        ro = real(*a, **k)
        hashes.append(hashlib.sha256(ro.tokens.numpy().tobytes()).hexdigest()[:16])
        return ro
    monkeypatch.setattr(train, "sample", spy)
    out = tmp_path / case
    train.main(small_run_args(out, tiny_model_dir, steps=3, dtype="float32", **ref["flags"]))
    rows = metrics(out / "run")
    assert hashes == ref["rollout_tokens"]
    for got, want in zip(rows, ref["steps"], strict=True):
        assert got["reward_mean"] == want["reward_mean"]
        assert ("grad_norm" in got) == ("grad_norm" in want)
        for key in set(want) - {"reward_mean"}:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
