"""compiled.py: the compiled decode step for GPUs (--compile).

Appendix to chapter 2 (rollout.py): a decoder with the four methods of rollout.EagerDecoder
(new_cache, start, compact, __call__), which `rollout.decoder_for(model, compile=True)` makes and
train.py / eval.py / suite.py --compile pass to rollout.sample; imported only then.

The eager loop is bound by kernel launches on a GPU: each step launches a few hundred small kernels
from Python. torch.compile(mode="reduce-overhead") replays a whole decode step as one CUDA graph, but
a graph fixes every shape and address, so this decoder differs from the eager one in four ways only:
  - the KV cache has a fixed shape (rows, heads, S, head_dim), S = the prompt + new tokens rounded up
    to 256 (fixed_cache_length), allocated once and reused by every later call that fits; each step
    writes its key/value at one position (FixedLayer) and attention reads all S positions, the ones
    not written yet masked out;
  - the rows decoded together are padded up to a bucket size (a power of two, or the micro-batch
    size) with copies of a live row, whose outputs are dropped: compaction then changes the batch size
    only among a few buckets, each captured once (an all-masked padding row would make SDPA return NaN);
  - the decode step attends with decode_attention, which reads grouped-query keys and values in place;
  - the decode step (the model's forward) is compiled; prefill, sampling and compaction stay eager.
The loop is the same (rows compacted at the same steps, tokens drawn for the live rows alone), so the
random stream is the same: for one seed both decoders give the same tokens, and log-probs equal up
to floating-point summation order (tests/test_rollout.py, fp32). In bf16 a logit that rounds
differently in a compiled kernel can change a draw now and then: another sample of the same policy.
"""

import weakref

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from kv_cache import PreallocatedLayer, additive_mask, cache_kwarg, decode_attention_in, new_cache
from precision import compute_dtype


def fixed_cache_length(positions):
    """The compiled path's cache length for `positions` (prompt + new tokens): rounded up to 256, so
    that runs of nearby lengths share one cache and one compiled graph (plan.py counts the same)."""
    return -(-positions // 256) * 256


class FixedLayer(DynamicLayer):
    """KV storage of fixed shape: the first b rows are the rows being decoded (b = the key's batch size),
    and each call writes its one position at `write_at` ((1,) long, set before the step). Returns all S
    positions of those rows: the 4D mask hides the ones not written yet (zero-filled at allocation, so
    finite: a masked key then adds exactly 0)."""

    def __init__(self, k_store, v_store, write_at):
        super().__init__()
        self.is_initialized, self.device = True, k_store.device
        self.k_store, self.v_store, self.write_at = k_store, v_store, write_at
        self.keys, self.values = k_store, v_store
        for t in (k_store, v_store, write_at):   # CUDA graphs read these in place, never copy them
            torch._dynamo.mark_static_address(t)

    def update(self, key_states, value_states, *args, **kwargs):
        b, h = key_states.shape[:2]
        # store[i, j, write_at] = key[i, j, 0] for the first b rows, written in place into the whole store
        # (an index_copy_ into the view store[:b] would be compiled as a copy of those rows, every step)
        rows, heads = torch.arange(b, device=self.device), torch.arange(h, device=self.device)
        at = (rows[:, None], heads[None, :], self.write_at)                     # broadcast to (b, h)
        self.k_store.index_put_(at, key_states[:, :, 0].to(self.k_store.dtype))      # the compute dtype
        self.v_store.index_put_(at, value_states[:, :, 0].to(self.v_store.dtype))
        return self.k_store[:b], self.v_store[:b]                               # (b, heads, S, head_dim)

    def get_seq_length(self, *args, **kwargs):
        return self.k_store.shape[-2]


def _decode_step(model, cache, cache_kw, ids, pos, mask):
    """One decoding step, the compiled function: ids, pos (k, 1), mask (k, 1, 1, S) -> logits (k, V)."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_kw: cache})
    return out.logits[:, -1].float()


class CompiledDecoder:
    """State of the compiled path for one model: the fixed KV storage and the compiled decode step."""
    keeps_weights = True             # CUDA graphs read the bf16 weight copies at fixed addresses

    def __init__(self, model, options):
        attn = getattr(model.config, "_attn_implementation", None)
        if attn not in ("sdpa", "eager"):
            raise ValueError(f"compile=True needs sdpa or eager attention (it passes a 4D mask), "
                             f"not {attn!r}")
        self.step = torch.compile(_decode_step, **options)
        self.cache, self.rows, self.length = None, 0, 0
        self.cuda = next(model.parameters()).device.type == "cuda"

    def new_cache(self, model, new_tokens):
        """The cache the prompts are prefilled into: no room for new tokens (start copies it over)."""
        return new_cache(model, 0, compute_dtype(model))

    def start(self, model, prefilled, mask, L):
        """A run's start: the prompts' cache `prefilled` (b rows of L positions) is copied into the fixed
        cache, (re)allocated, zero-filled, when it has too few rows or positions for the run; returns the
        run's additive mask (b, 1, 1, S) from its 0/1 mask (b, L + new tokens), with every new position
        masked until its step writes it."""
        if not all(isinstance(layer, PreallocatedLayer) for layer in getattr(prefilled, "layers", [None])):
            raise ValueError("compile=True needs transformers' cache layers (transformers >= 4.56)")
        b, needed = mask.shape
        self.cache_kw = cache_kwarg(model)
        if b > self.rows or needed > self.length:
            self.rows, self.length = max(b, self.rows), max(self.length, fixed_cache_length(needed))
            self.write_at = torch.zeros(1, dtype=torch.long, device=mask.device)
            self.cache = DynamicCache(config=model.config)
            def fixed(store):                     # (rows, heads, length, head_dim), zero-filled
                return store.new_zeros((self.rows, store.shape[1], self.length, store.shape[3]))
            self.cache.layers = [FixedLayer(fixed(layer.k_store), fixed(layer.v_store), self.write_at)
                                 for layer in prefilled.layers]
        for fixed, layer in zip(self.cache.layers, prefilled.layers):
            fixed.k_store[:b, :, :layer.length] = layer.keys
            fixed.v_store[:b, :, :layer.length] = layer.values
        return additive_mask(torch.cat([mask[:, :L], mask.new_zeros(b, self.length - L)], dim=1),
                             compute_dtype(model))

    def compact(self, keep, filled):
        """Rows `keep` (n,) of the rows being decoded become rows 0..n-1 (their first `filled` positions)."""
        for layer in self.cache.layers:
            for store in (layer.k_store, layer.v_store):
                store[:len(keep), :, :filled] = store[:, :, :filled].index_select(0, keep)

    def __call__(self, model, ids, pos, mask, write_at):
        """Decode one step for the r rows ids, pos (r,), mask (r, 1, 1, S), writing position write_at
        (which becomes seen in mask, in place): logits (r, V)."""
        mask[..., write_at] = 0
        r = ids.shape[0]
        bucket = min(self.rows, max(8, 1 << (r - 1).bit_length()))             # the bucket of r rows
        pad = ids.new_zeros(bucket - r)                                         # padding: copies of row 0
        sel = torch.cat([torch.arange(r, device=ids.device), pad])
        inputs = ids[sel, None], pos[sel, None], mask[sel]
        for t in inputs:                          # one graph for every bucket (CUDA graphs: one capture each)
            torch._dynamo.maybe_mark_dynamic(t, 0)
        self.write_at.fill_(write_at)
        if self.cuda:
            torch.compiler.cudagraph_mark_step_begin()
        with decode_attention_in(model):          # the decode step attends with decode_attention
            return self.step(model, self.cache, self.cache_kw, *inputs)[:r]


_DECODERS = weakref.WeakKeyDictionary()                                          # model -> CompiledDecoder


def compiled_decoder(model, options):
    """The model's CompiledDecoder, made with torch.compile `options` on first use and kept."""
    if model not in _DECODERS:
        _DECODERS[model] = CompiledDecoder(model, options)
    return _DECODERS[model]


def compile_options(device):
    """torch.compile's arguments for the decode step: CUDA graphs on CUDA, the default elsewhere."""
    return {"mode": "reduce-overhead"} if torch.device(device).type == "cuda" else {}
