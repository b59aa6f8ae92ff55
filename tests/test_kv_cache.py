"""kv_cache.py: the eager loop's cache is allocated once and written in place, keeps the rows it is told
to, stores keys and values in the compute dtype, and refuses to overflow; the additive mask by hand."""

import pytest
import torch

from kv_cache import PreallocatedLayer, additive_mask


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
