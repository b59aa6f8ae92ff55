"""Mixed precision (--dtype mixed: fp32 weights, bf16 autocast), tried on a CPU: the ratio is exactly 1
on-policy, the KV cache and the sampling weights are in the compute dtype, and fp32 runs train as they
did with the sampler's log-probs as pi_old (a reference computed in the same run)."""

import json
import os

import pytest
import torch
from helpers import small_run_args
from transformers import Qwen2Config, Qwen2ForCausalLM

import compiled
import kv_cache
import precision
import rollout
import train
import update
from config import parse_args

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
        layers = decoder.cache.layers if isinstance(decoder, compiled.CompiledDecoder) else None
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
        rollout.sample(model, PROMPTS, n=2, sampling=rollout.Sampling(max_new_tokens=6), seed=0, decoder=rollout.decoder_for(model, compile))
    assert stored and set(stored) == {(torch.bfloat16, torch.bfloat16)}
    stored.clear()
    rollout.sample(model, PROMPTS, n=2, sampling=rollout.Sampling(max_new_tokens=6), seed=0)                    # fp32: fp32
    assert set(stored) == {(torch.float32, torch.float32)}


def test_dtype_mixed_sampling_reads_bf16_weights_with_the_same_result_as_autocast_casting_them():
    """weights_in_compute_dtype swaps each Linear's fp32 weight for a bf16 copy while sampling: autocast
    would cast it to the same bf16 values at every step, so tokens and log-probs are equal to the bit;
    the fp32 weights (and the tied embedding) are back afterwards."""
    model = small_qwen()
    seen = []
    model.model.layers[0].mlp.up_proj.register_forward_pre_hook(lambda m, a: seen.append(m.weight.dtype))
    with bf16_autocast():
        ours = rollout.sample(model, PROMPTS, n=3, sampling=rollout.Sampling(max_new_tokens=12), seed=1)
    assert set(seen) == {torch.bfloat16}
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.lm_head.weight.dtype == torch.float32
    seen.clear()
    real = rollout.weights_in_compute_dtype
    try:                                                    # autocast casting the fp32 weights at every step
        rollout.weights_in_compute_dtype = lambda model, keep=False: __import__("contextlib").nullcontext()
        with bf16_autocast():
            cast = rollout.sample(model, PROMPTS, n=3, sampling=rollout.Sampling(max_new_tokens=12), seed=1)
    finally:
        rollout.weights_in_compute_dtype = real
    assert set(seen) == {torch.float32}
    assert torch.equal(ours.tokens, cast.tokens) and torch.equal(ours.logprobs, cast.logprobs)


def test_dtype_mixed_compiled_path_reads_weights_of_the_compute_dtype_kept_between_calls(monkeypatch):
    """The compiled decode step runs with bf16 Linear weights, the same tensors at every call (CUDA graphs
    read fixed addresses), refreshed in place when the fp32 weights change."""
    model = small_qwen()
    seen = []
    real_call = compiled.CompiledDecoder.__call__

    def call(self, m, *a):
        seen.append({lin.weight.dtype for lin in m.modules() if isinstance(lin, torch.nn.Linear)})
        return real_call(self, m, *a)
    monkeypatch.setattr(compiled.CompiledDecoder, "__call__", call)
    with bf16_autocast():
        first = rollout.sample(model, PROMPTS, n=2, sampling=rollout.Sampling(max_new_tokens=6), seed=0, decoder=rollout.decoder_for(model, {"backend": "eager"}))
    assert seen and all(s == {torch.bfloat16} for s in seen)
    kept = dict(precision._KEPT_WEIGHTS[model])
    up = model.model.layers[0].mlp.up_proj
    with torch.no_grad():
        up.weight.add_(1.0)                                      # an optimizer step
    with bf16_autocast():
        rollout.sample(model, PROMPTS, n=2, sampling=rollout.Sampling(max_new_tokens=6), seed=0, decoder=rollout.decoder_for(model, {"backend": "eager"}))
    assert all(precision._KEPT_WEIGHTS[model][k] is v for k, v in kept.items())   # the same tensors
    assert torch.equal(kept[(up, "weight")], up.weight.detach().bfloat16())     # refreshed
    assert first.tokens.shape[0] == 4


# ---------------------------------------------------------------------------------------------------
# fp32 is unchanged: pi_old from the training forward against pi_old from the sampler, in the same run
# ---------------------------------------------------------------------------------------------------
CASES = {"grpo": {"prompts_per_step": 16, "lr": 0.001},
         "grpo_token_mean": {"prompts_per_step": 16, "lr": 0.001, "aggregation": "token_mean",
                             "micro_batch_size": 4},
         "grpo_mu2_kl": {"num_iterations": 2, "beta": 0.05, "lr": 0.001, "prompts_per_step": 16},
         "dpo": {"loss": "dpo", "prompts_per_step": 16},
         "dpo_old": {"loss": "dpo", "dpo_ref": "old", "prompts_per_step": 16}}


def sampler_as_pi_old(monkeypatch):
    """The path before pi_old came from the training forward, as a reference: pi_old (and DPO's 'old'
    reference) are the log-probs the sampler recorded."""
    real_loss = update.microbatch_loss

    def loss(logp, batch, idx, cfg):
        batch.old_logp = batch.sampler_logp
        if cfg.loss == "dpo" and cfg.dpo_ref == "old":
            batch.ref_seq = (batch.sampler_logp * batch.mask).sum(1)
        return real_loss(logp, batch, idx, cfg)
    monkeypatch.setattr(update, "microbatch_loss", loss)
    monkeypatch.setattr(update, "old_logprobs", lambda model, batch, cfg: batch.sampler_logp.clone())


@pytest.mark.parametrize("case", sorted(CASES))
def test_fp32_runs_train_as_with_the_samplers_log_probs_as_pi_old(case, tmp_path, tiny_model_dir, monkeypatch):
    """In fp32 the sampler's log-probs and the training forward's agree to rounding, so taking pi_old
    from the training forward changes nothing but that rounding: a 3-step run and the same run with the
    sampler's log-probs as pi_old (computed here, on this machine) log the same rewards, the same first
    ratio to 1e-6, and losses, gradient norms and ratios equal to 1e-3 (AdamW's first steps are sign-like:
    a gradient entry at rounding level may step either way, so after an update the two runs part by
    ~1e-4, more or less by CPU). The reference run replays the first run's rollouts, so the comparison
    never depends on a sampled token falling the same way twice."""
    drawn = []
    real = rollout.sample

    def record(*a, **k):
        drawn.append(real(*a, **k))
        return drawn[-1]
    monkeypatch.setattr(train, "sample", record)
    train.main(small_run_args(tmp_path / "new", tiny_model_dir, steps=3, dtype="float32", **CASES[case]))
    replay = iter(drawn)
    monkeypatch.setattr(train, "sample", lambda *a, **k: next(replay))
    sampler_as_pi_old(monkeypatch)
    train.main(small_run_args(tmp_path / "old", tiny_model_dir, steps=3, dtype="float32", **CASES[case]))
    assert next(replay, None) is None                              # both runs sampled as often
    new, old = metrics(tmp_path / "new" / "run"), metrics(tmp_path / "old" / "run")
    assert len(new) == len(old) == 3 and any("grad_norm" in r for r in new)
    first = "ratio_mean_first_update" if "ratio_mean_first_update" in new[0] else "ratio_mean"
    if first in new[0]:                                           # the first update: on-policy in both
        assert new[0][first] == 1.0 and old[0][first] == pytest.approx(1.0, abs=1e-6)
    for got, want in zip(new, old):
        assert got["reward_mean"] == want["reward_mean"] and ("grad_norm" in got) == ("grad_norm" in want)
        if "grad_norm" in got:
            assert got["sampler_gap_max"] < 1e-4                  # fp32: the two log-probs agree to rounding
        for key in ("loss", "grad_norm", "ratio_mean", "clip_frac", "kl", "reward_margin"):
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-6), key


def test_mixed_precision_forward_keeps_no_autocast_weight_cache():
    """autocast's cache would hold a bf16 copy of every Linear weight until the block ends (2 bytes x
    N_linear, which plan.py does not price): the run's autocast has it off, and computes the same."""
    model, ids = small_qwen(), torch.tensor([[1, 2, 3, 4]])
    with precision.autocast("cpu", "mixed"):
        assert torch.is_autocast_enabled("cpu") and not torch.is_autocast_cache_enabled()
        ours = model(ids).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):                          # cache on: the same logits
        assert torch.equal(model(ids).logits, ours)
