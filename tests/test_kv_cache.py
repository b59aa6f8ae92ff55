"""kv_cache.py: the eager loop's cache is allocated once and written in place, keeps the rows it is told
to, stores keys and values in the compute dtype, and refuses to overflow; the additive mask by hand."""

import contextlib

import pytest
import torch

from kv_cache import PreallocatedLayer, additive_mask, decode_attention


def test_a_layer_is_allocated_once_and_written_in_place():
    layer = PreallocatedLayer(new_tokens=2)
    k, v = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 4, 8)              # 3 rows, 2 heads, a 4-token prompt
    keys, values = layer.update(k, v)
    store = layer.k_store
    assert store.shape == (3, 2, 6, 8) and torch.equal(keys, k) and torch.equal(values, v)
    step_k, step_v = torch.randn(3, 2, 1, 8), torch.randn(3, 2, 1, 8)
    keys, _ = layer.update(step_k, step_v)
    assert layer.k_store is store and keys.shape == (3, 2, 5, 8)         # no new allocation, one more position
    assert torch.equal(keys[:, :, 4:], step_k) and keys.data_ptr() == store.data_ptr()   # a view of the store
    layer.update(step_k, step_v)
    with pytest.raises(RuntimeError, match="KV cache full"):
        layer.update(step_k, step_v)                                     # 4 + 2 positions, no more


def test_rows_are_kept_or_repeated_and_stored_in_the_compute_dtype():
    layer = PreallocatedLayer(new_tokens=3, dtype=torch.bfloat16)
    k = torch.arange(2 * 1 * 2 * 1, dtype=torch.float32).reshape(2, 1, 2, 1)   # rows 0 and 1
    layer.update(k, k)
    assert layer.k_store.dtype == torch.bfloat16
    layer.batch_select_indices(torch.tensor([1, 1, 0]))                 # prompt rows -> sample rows
    assert layer.keys.shape == (3, 1, 2, 1) and layer.k_store.shape == (3, 1, 5, 1)
    assert layer.keys[:, 0, :, 0].tolist() == [[2.0, 3.0], [2.0, 3.0], [0.0, 1.0]]


def test_additive_mask_by_hand():
    mask = additive_mask(torch.tensor([[0, 1, 1]]), torch.float32)
    lowest = torch.finfo(torch.float32).min
    assert mask.shape == (1, 1, 1, 3) and mask[0, 0, 0].tolist() == [lowest, 0.0, 0.0]


def test_decode_attention_equals_attention_over_repeated_keys():
    """6 query heads over 2 key/value heads (groups of 3), one query position, a padding mask: the
    grouped layout gives what SDPA gives over keys and values repeated per head (without the copy)."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 6, 1, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    mask = additive_mask(torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 0, 0]]), torch.float32)   # (2, 1, 1, 5)
    out, _ = decode_attention(SimpleNamespace(), q, k, v, mask, scaling=0.5)
    want = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1),
                                                            attn_mask=mask, scale=0.5)       # head h reads kv h // 3
    assert out.shape == (2, 1, 6, 8)                                # (b, q, heads, d), as transformers returns
    assert torch.allclose(out, want.transpose(1, 2), atol=1e-6)
    # a masked key has no weight: changing it changes nothing
    k2 = k.clone()
    k2[0, :, 0] = 100.0
    assert torch.allclose(decode_attention(SimpleNamespace(), q, k2, v, mask, scaling=0.5)[0], out, atol=1e-6)


def test_the_eager_decode_step_reads_grouped_keys_in_place(monkeypatch):
    """A grouped-query model (4 query heads over 2 key/value heads) sampled by rollout.py's eager loop:
    every decode step of every layer attends with decode_attention, and transformers' repeat_kv (a copy
    of the cache per query head, which transformers 5.17 makes whenever a 4D mask is passed) runs at most
    in the prefill, once per layer. The tokens are those of a reference without decode_attention."""
    import transformers.integrations.sdpa_attention as hf_sdpa
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import kv_cache
    from rollout import Sampling, sample
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         attn_implementation="sdpa")).eval()
    prompts, sampling = [[3, 4, 5], [6, 7]], Sampling(max_new_tokens=6)
    calls = {"decode": 0, "repeat_kv": 0}
    original_decode, original_repeat = kv_cache.decode_attention, hf_sdpa.repeat_kv

    def counted_decode(*args, **kwargs):
        calls["decode"] += 1
        return original_decode(*args, **kwargs)

    def counted_repeat(*args, **kwargs):
        calls["repeat_kv"] += 1
        return original_repeat(*args, **kwargs)
    monkeypatch.setattr(kv_cache, "decode_attention", counted_decode)
    monkeypatch.setattr(hf_sdpa, "repeat_kv", counted_repeat)
    ro = sample(model, prompts, n=2, sampling=sampling, eos_token_id=[], seed=0)
    assert calls["decode"] == 2 * (6 - 1)                    # 2 layers x 5 decode steps (the 6th token needs none)
    assert calls["repeat_kv"] <= 2 * 2                       # the prefill's, at most (k and v, 2 layers)
    monkeypatch.setattr(kv_cache, "decode_attention_in", lambda model: contextlib.nullcontext())
    monkeypatch.setattr("rollout.decode_attention_in", lambda model: contextlib.nullcontext())
    reference = sample(model, prompts, n=2, sampling=sampling, eos_token_id=[], seed=0)
    assert torch.equal(ro.tokens, reference.tokens)
    assert torch.allclose(ro.logprobs, reference.logprobs, atol=1e-5)
