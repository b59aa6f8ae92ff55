"""kv_cache.py: where the sampler keeps its keys and values.

Appendix to chapter 2 (rollout.py), whose loop asks a decoder for four things: a KV cache to
prefill the prompts into (`new_cache`), the start of a run (`start`: the cache and the run's 0/1
attention mask in, the mask the steps use out), dropping finished rows (`compact`), and one decode
step (`__call__`: the rows' last tokens and positions in, next-token logits out). rollout.py's
EagerDecoder runs the model's forward over the cache of this file: transformers' DynamicCache whose
layers are allocated once for the run and written in place (PreallocatedLayer), in the compute dtype,
with the run's attention mask made once as the additive 4D mask attention takes (additive_mask).
compiled.py (another appendix, for GPUs) has a decoder with a fixed-shape cache and a compiled step.
"""

import contextlib
import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer



def forward_params(model):
    """Names the model's forward accepts (looking through a DDP wrapper, which keeps it in .module)."""
    return inspect.signature(getattr(model, "module", model).forward).parameters


def cache_kwarg(model):
    """transformers renamed `past_key_values` to `cache` (5.x); pass the cache under either name."""
    return "cache" if "cache" in forward_params(model) else "past_key_values"


def new_cache(model, new_tokens, dtype=None):
    """A KV cache for one decoding run: transformers' DynamicCache, with each layer's storage made
    in advance for `new_tokens` more positions (see PreallocatedLayer) and kept in `dtype`, the compute
    dtype. Falls back to the stock DynamicCache where the layer layout differs (other transformers
    versions, sliding windows)."""
    try:
        cache = DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()
    layers = getattr(cache, "layers", None)
    if layers and all(type(layer) is DynamicLayer for layer in layers):
        cache.layers = [PreallocatedLayer(new_tokens, dtype) for _ in layers]
    return cache


class PreallocatedLayer(DynamicLayer):
    """A DynamicLayer that does not grow by torch.cat.

    The stock layer appends each step's key/value with torch.cat, copying the whole cache every step
    (quadratic in the length). This one allocates (b, heads, prompt + new_tokens, head_dim) at the
    prefill and writes each step in place; attention sees a view of the filled part, so it does no
    extra work either. Keys and values are stored in `dtype` (the compute dtype): under bf16 autocast
    the rotary embedding hands over fp32 keys (fp32 cos/sin times bf16 projections), which attention
    casts to bf16 anyway, so storing them in bf16 changes no result and halves the keys' memory.
    """

    def __init__(self, new_tokens, dtype=None):
        super().__init__()
        self.new_tokens, self.dtype = new_tokens, dtype
        self.length = 0

    def update(self, key_states, value_states, *args, **kwargs):
        q = key_states.shape[-2]
        if self.dtype is not None:
            key_states, value_states = key_states.to(self.dtype), value_states.to(self.dtype)
        if not self.is_initialized:
            self.is_initialized, self.device = True, key_states.device
            b, h, _, d = key_states.shape
            shape = (b, h, q + self.new_tokens, d)
            self.k_store = key_states.new_empty(shape)
            self.v_store = value_states.new_empty(shape)
        end = self.length + q
        if end > self.k_store.shape[-2]:
            raise RuntimeError("KV cache full: more tokens than new_tokens")
        self.k_store[:, :, self.length:end] = key_states
        self.v_store[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self.k_store[:, :, :end], self.v_store[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices):
        """Keep (or repeat) rows: rows of the prompt prefill -> rows of the samples."""
        if self.is_initialized:
            self.k_store = self._select(self.k_store, indices)
            self.v_store = self._select(self.v_store, indices)
            self.keys, self.values = self.k_store[:, :, :self.length], self.v_store[:, :, :self.length]

    def _select(self, store, indices):
        """store[indices], copying only the filled positions (not the room left for new tokens)."""
        out = store.new_empty((len(indices),) + store.shape[1:])
        torch.index_select(store[:, :, :self.length], 0, indices, out=out[:, :, :self.length])
        return out


def additive_mask(mask, dtype):
    """0/1 mask (b, S) -> the additive 4D mask SDPA and eager attention take, (b, 1, 1, S): 0 where a key
    is seen, the dtype's minimum where not (transformers passes 4D masks through as they are)."""
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    additive = additive.masked_fill(mask == 0, torch.finfo(dtype).min)
    return additive[:, None, None, :]


def decode_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Attention of one decoding step (query length 1), for grouped-query attention without copying
    the KV cache: the queries of the g heads that share a key/value head become that head's g query
    positions, (b, heads, 1, d) -> (b, kv_heads, g, d), so SDPA reads each cached key and value once.
    (transformers' SDPA path repeats keys and values per query head instead, when compiled and, in
    transformers 5.17, whenever a 4D mask is passed: a copy of the whole cache, times g, every step.)
    attention_mask: additive (b, 1, 1, >= S). Returns (b, 1, heads, d), as transformers' attention
    functions do."""
    b, heads, q, d = query.shape
    g = heads // key.shape[1]                                                   # query heads per kv head
    mask = attention_mask[..., :key.shape[-2]]                                  # (b, 1, 1, S)
    out = torch.nn.functional.scaled_dot_product_attention(query.reshape(b, heads // g, g * q, d), key, value,
                                                           attn_mask=mask, scale=scaling)
    return out.reshape(b, heads, q, d).transpose(1, 2), None          # head h = kv head h // g, row h % g


DECODE_ATTENTION = "rollout_decode"     # its name among transformers' attention functions


@contextlib.contextmanager
def decode_attention_in(model):
    """For the duration, the model's attention layers call decode_attention (registered with
    transformers' AttentionInterface) instead of their SDPA or eager attention: a decode step's only."""
    from transformers import AttentionInterface
    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    attn, model.config._attn_implementation = model.config._attn_implementation, DECODE_ATTENTION
    try:
        yield
    finally:
        model.config._attn_implementation = attn
