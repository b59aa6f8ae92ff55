"""rollout.py: sample many completions at once from a Hugging Face causal LM, with exact log-probs.

Chapter 2 of the tutorial. Sampling is where GRPO spends most of its time, so this is a small,
hand-written decoding loop rather than `model.generate`:

  1. left-pad the prompts into one batch (P, L) with an attention mask and position ids
     position_ids = cumsum(mask) - 1, so every prompt's first real token is at position 0;
  2. prefill the P prompts once, then expand the KV cache to P * n rows (n samples per prompt):
     the prompt is never recomputed n times;
  3. decode one token per step for all rows at once, reusing the KV cache (allocated once for the
     whole run, see PreallocatedLayer); a row that emitted EOS is finished: its later tokens are
     padding, masked out; once a quarter of the rows have finished they leave the batch and its
     KV cache (compaction), and the loop stops when every row is done.

The attention mask is built once for the run: for SDPA and eager attention as the additive 4D mask
they take (transformers passes a 4D mask through untouched), so no mask is rebuilt per step.

The log-prob of each sampled token is recorded as it is sampled, under softmax(logits / temperature):
after temperature, before top-k / top-p truncation (temperature 0, greedy, records temperature 1).
`sequence_logprobs` below computes the same quantity for the training step by one full-sequence
forward. In fp32 the two agree to ~1e-6; in bf16 one-token decode kernels and a full-sequence forward
round differently, so train.py takes pi_old, the GRPO ratio's denominator, from the training forward
(the ratio is then exactly 1 on-policy) and logs the sampler's distance from it (sampler_gap).

Rows are laid out group by group: prompt 0's n samples, then prompt 1's, ... which is the layout
grpo.group_advantages expects.

On a GPU this loop is bound by kernel launches, not by the card: the last section of this file is
the same loop with a fixed-shape KV cache and a compiled decode step (sample(..., compile=True),
train.py --compile), which CUDA graphs replay; same tokens for the same seed.
"""

import contextlib
import inspect
import weakref
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from grpo import token_logprobs


@dataclass
class Rollout:
    """A batch of B = P * n completions, right-padded to T tokens.

    tokens:   (B, T) long    sampled token ids, pad_token_id after the end
    mask:     (B, T) float   1 for completion tokens (the EOS token included), 0 for padding
    logprobs: (B, T) float32 log-prob of each sampled token under softmax(logits / temperature), 0 at padding
    lengths:  (B,)   long    number of completion tokens (mask.sum(1))
    finished: (B,)   bool    True where the row ended with EOS, False where max_new_tokens cut it
    texts:    list of B decoded completions (special tokens skipped), if a tokenizer was given
    """
    tokens: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    texts: list


def left_pad(prompts, pad_token_id, device=None):
    """Lists of token ids -> ids (P, L) left-padded, mask (P, L), position_ids (P, L)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    L = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_token_id] * (L - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask, position_ids_from_mask(mask)


def position_ids_from_mask(mask):
    """position of each token among the real tokens of its row: cumsum(mask) - 1 (padding -> 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def stop_token_ids(model, tokenizer):
    """Every id that ends a completion: the tokenizer's EOS and the generation config's (a list for
    chat models, e.g. <|im_end|> and <|endoftext|>)."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
    return sorted(i for i in ids if i is not None)


def _forward_params(model):
    """Names the model's forward accepts (looking through a DDP wrapper, which keeps it in .module)."""
    return inspect.signature(getattr(model, "module", model).forward).parameters


def _cache_kwarg(model):
    """transformers renamed `past_key_values` to `cache` (5.x); pass the cache under either name."""
    return "cache" if "cache" in _forward_params(model) else "past_key_values"


def _new_cache(model, new_tokens, dtype=None):
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
            self.k_store, self.v_store = self._select(self.k_store, indices), self._select(self.v_store, indices)
            self.keys, self.values = self.k_store[:, :, :self.length], self.v_store[:, :, :self.length]

    def _select(self, store, indices):
        """store[indices], copying only the filled positions (not the room left for new tokens)."""
        out = store.new_empty((len(indices),) + store.shape[1:])
        torch.index_select(store[:, :, :self.length], 0, indices, out=out[:, :, :self.length])
        return out


def filter_logits(logits, top_k=0, top_p=1.0):
    """Set logits outside the top-k / top-p (nucleus) set to -inf.  logits: (b, V), already / temperature."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]                  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already cover top_p of the mass
        drop_sorted = probs.cumsum(-1) - probs > top_p                          # (b, V), never the first
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _prefill(model, prompts, counts, max_new_tokens, pad_id, room=None):
    """Run the prompts once and expand to their rows: returns the KV cache (b rows, with room for
    `room` more positions, default max_new_tokens), the first next-token logits (b, V), the attention
    mask for the whole run (b, L + max_new_tokens), 1 where a key is seen (the prompt's padding is 0,
    every new position 1), the next position of each row (b,) and the padded prompt length L."""
    device = next(model.parameters()).device
    ids, mask, pos = left_pad(prompts, pad_id, device)                               # (P, L)
    rows = torch.repeat_interleave(torch.arange(len(prompts), device=device),
                                   torch.tensor(counts, device=device))         # (b,) prompt of each row
    cache = _new_cache(model, max_new_tokens if room is None else room, compute_dtype(model))
    extra = {"logits_to_keep": 1} if "logits_to_keep" in _forward_params(model) else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                **{_cache_kwarg(model): cache}, **extra)
    logits = out.logits[:, -1].float()[rows]                                    # (b, V) next-token logits
    cache.batch_select_indices(rows)                                            # (P, ...) -> (b, ...)
    mask = torch.cat([mask[rows], mask.new_ones(rows.numel(), max_new_tokens)], dim=1)
    return cache, logits, mask, pos[rows, -1] + 1, ids.shape[1]


def additive_mask(mask, dtype):
    """0/1 mask (b, S) -> the additive 4D mask SDPA and eager attention take, (b, 1, 1, S): 0 where a key
    is seen, the dtype's minimum where not (transformers passes 4D masks through as they are)."""
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask == 0, torch.finfo(dtype).min)
    return additive[:, None, None, :]


def compute_dtype(model):
    """The dtype the model's forward computes in: autocast's where autocast is on for the model's device
    (mixed precision: fp32 weights, bf16 matmuls), else the weights' own."""
    p = next(model.parameters())
    on = torch.is_autocast_enabled(p.device.type)
    return torch.get_autocast_dtype(p.device.type) if on else p.dtype


_KEPT_WEIGHTS = weakref.WeakKeyDictionary()         # model -> {(module, name): its weight in the compute dtype}


@contextlib.contextmanager
def weights_in_compute_dtype(model, keep=False):
    """Mixed precision while decoding, without casting every weight at every step: each nn.Linear's fp32
    weight (and bias) is swapped for a copy in the compute dtype for the duration, made once per call.
    Autocast casts a Linear's inputs to bf16 in any case, so the result is the same to the bit; the
    embedding and the norms keep their fp32 weights (a tied output head is untied meanwhile). Nothing
    happens without autocast (fp32 or bf16 weights) or where the weights are not fp32 (FSDP gathers
    them in bf16 already). keep=True keeps the copies between calls and refreshes them in place (the
    compiled path: CUDA graphs read weights at fixed addresses)."""
    dtype = compute_dtype(model)
    swaps = [(m, name, w) for m in model.modules() if isinstance(m, torch.nn.Linear)
             for name, w in m._parameters.items() if w is not None and w.dtype == torch.float32] \
        if dtype != torch.float32 else []
    copies = _KEPT_WEIGHTS.setdefault(model, {}) if keep and swaps else {}
    with torch.no_grad():
        for m, name, w in swaps:
            if (m, name) in copies:
                copies[(m, name)].copy_(w)                                      # refreshed: w was updated
            else:
                copies[(m, name)] = torch.nn.Parameter(w.to(dtype), requires_grad=False)
            m._parameters[name] = copies[(m, name)]
    try:
        yield
    finally:
        for m, name, w in swaps:
            m._parameters[name] = w


def _draw(logits, temperature, top_p, top_k, generator):
    """One token per row from logits (r, V), and its log-prob under softmax(logits / temperature)."""
    tau = temperature if temperature > 0 else 1.0
    z = logits if tau == 1.0 else logits / tau                                  # (r, V)
    if temperature > 0:
        truncated = bool(top_k) or top_p < 1.0
        probs = (filter_logits(z, top_k, top_p) if truncated else z).softmax(-1)
        nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)       # (r,)
    else:
        truncated, nxt = True, z.argmax(-1)
    # log pi(token) under softmax(z): the sampled probability itself when nothing was truncated,
    # else z_y - logsumexp(z) (a reduction, not a second (r, V) log-softmax)
    lp = (probs.gather(1, nxt[:, None]).squeeze(1).log() if not truncated
          else z.gather(1, nxt[:, None]).squeeze(1) - torch.logsumexp(z, -1))
    return nxt, lp


def _completion(tokens, eos_ids):
    """A row's tokens run up to and including its first EOS: returns the completion mask (b, T) float
    and whether each row ended with EOS (b,)."""
    ended = torch.isin(tokens, eos_ids)                                         # (b, T)
    after_end = (ended.cumsum(1) - ended.long()) > 0                            # positions after the first EOS
    return (~after_end).float(), ended.any(1)


@torch.inference_mode()
def _sample_microbatch(model, prompts, counts, max_new_tokens, temperature, top_p, top_k, eos, pad_id,
                       generator, check_every, decoder=None):
    """Sample counts[i] completions of prompts[i]; returns tokens, mask, logprobs, finished (rows grouped).

    Finished rows leave the batch: at every check (a host sync, every `check_every` steps), once a
    quarter of the rows being decoded have emitted EOS, the batch and its KV cache are compacted to the
    running rows, so the forward pass costs what the unfinished completions need, not what the longest
    one needs (GRPO's completions end at very different lengths). `live` maps each decoded row to its
    row of the output. decoder: a CompiledDecoder (the last section of this file) makes the decode steps
    over its fixed-shape cache instead of the model's forward; all else is this loop.
    """
    cache, logits, mask, next_pos, L = _prefill(model, prompts, counts, max_new_tokens, pad_id,
                                                room=0 if decoder else None)
    device, b = logits.device, logits.shape[0]
    if decoder is not None:
        mask = decoder.start(model, cache, mask, L)                             # its cache holds the prompts now
        del cache
    elif getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager"):
        mask = additive_mask(mask, compute_dtype(model))                        # made once for the run
    cache_kw = _cache_kwarg(model)
    eos_ids = torch.tensor(eos or [-1], device=device)
    tokens = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros(b, max_new_tokens, device=device)
    live = torch.arange(b, device=device)           # (r,) output row of each row being decoded
    running = torch.ones(b, dtype=torch.bool, device=device)                    # (r,) not finished yet
    for step in range(max_new_tokens):
        nxt, lp = _draw(logits, temperature, top_p, top_k, generator)          # (r,), (r,)
        tokens[live, step] = torch.where(running, nxt, pad_id)                  # finished rows get padding
        logps[live, step] = torch.where(running, lp, 0.0)
        running = running & ~torch.isin(nxt, eos_ids)
        if step == max_new_tokens - 1:
            break
        if (step + 1) % check_every == 0:
            n_running = int(running.sum())                                      # the one host sync
            if n_running == 0:
                break
            if n_running <= 0.75 * live.numel():                                # compact: drop finished rows
                keep = running.nonzero().squeeze(1)
                if decoder is None:
                    cache.batch_select_indices(keep)
                else:
                    decoder.compact(keep, L + step)
                live, running, nxt, mask, next_pos = live[keep], running[keep], nxt[keep], mask[keep], next_pos[keep]
        if decoder is None:
            out = model(input_ids=nxt[:, None], attention_mask=mask[..., :L + step + 1],
                        position_ids=next_pos[:, None], use_cache=True, **{cache_kw: cache})
            logits = out.logits[:, -1].float()
        else:                                                                   # the compiled step, at L + step
            logits = decoder(model, cache_kw, nxt, next_pos, mask, L + step)
        next_pos = next_pos + 1
    tokens, logps = tokens[:, :step + 1], logps[:, :step + 1]
    completion, finished = _completion(tokens, eos_ids)
    return tokens, completion, logps, finished


def sample(model, prompts, n=1, max_new_tokens=64, temperature=1.0, top_p=1.0, top_k=0, eos_token_id=None,
           pad_token_id=0, generator=None, seed=None, max_batch_size=None, tokenizer=None, compile=False):
    """Sample n completions for each prompt.

    prompts: list of P token-id lists (any lengths); returns a Rollout of B = P * n rows, grouped by
    prompt. eos_token_id: an int or a list of ints. generator (or seed) makes sampling reproducible.
    max_batch_size bounds the rows decoded together (memory): larger requests are split into
    micro-batches transparently, each prefilling its prompts once.
    compile: True decodes with the compiled path at the end of this file (CUDA graphs on CUDA; the
    first calls compile, for a minute or more on a large model); a dict is passed to torch.compile
    instead of compile_options(device), e.g. {"backend": "eager"} to check the path without compiling.
    """
    device = next(model.parameters()).device
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(0 if seed is None else seed)
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    cap = max_batch_size or len(prompts) * n
    # pack (prompt, copies) pieces into micro-batches of at most `cap` rows
    batches, current, used = [], [], 0
    for i in range(len(prompts)):
        left = n
        while left:
            take = min(left, cap - used)
            current.append((i, take))
            used += take
            left -= take
            if used == cap:
                batches.append(current)
                current, used = [], 0
    if current:
        batches.append(current)
    check_every = 1 if device.type == "cpu" else 8   # the all-done check is a host sync on GPUs
    decoder = compiled_decoder(model, compile if isinstance(compile, dict) else compile_options(device)) \
        if compile else None
    parts = []
    was_training = model.training
    model.eval()
    try:      # under mixed precision the Linear layers read bf16 copies of their weights (see below)
        with weights_in_compute_dtype(model, keep=bool(compile)):
            for batch in batches:
                parts.append(_sample_microbatch(model, [prompts[i] for i, _ in batch], [c for _, c in batch],
                                                max_new_tokens, temperature, top_p, top_k, eos, pad_token_id,
                                                generator, check_every, decoder))
    finally:
        model.train(was_training)
    ro = cat_rollouts([Rollout(tok, m, lp, m.sum(1).long(), fin, []) for tok, m, lp, fin in parts], pad_token_id)
    if tokenizer is not None:
        ro.texts = tokenizer.batch_decode([t[m.bool()].tolist() for t, m in zip(ro.tokens, ro.mask)],
                                          skip_special_tokens=True)
    return ro


def cat_rollouts(parts, pad_token_id=0):
    """The rows of several Rollouts as one, right-padded to the longest completion."""
    T = max(p.tokens.shape[1] for p in parts)

    def cat(name, fill):                                                         # (sum of b, T)
        return torch.cat([torch.nn.functional.pad(getattr(p, name), (0, T - getattr(p, name).shape[1]), value=fill)
                          for p in parts])
    return Rollout(cat("tokens", pad_token_id), cat("mask", 0.0), cat("logprobs", 0.0),
                   torch.cat([p.lengths for p in parts]), torch.cat([p.finished for p in parts]),
                   [t for p in parts for t in p.texts])


def take_rows(ro, rows):
    """The Rollout of the rows `rows` (a list of indices) of ro."""
    idx = torch.tensor(rows, dtype=torch.long, device=ro.tokens.device)
    return Rollout(ro.tokens[idx], ro.mask[idx], ro.logprobs[idx], ro.lengths[idx], ro.finished[idx],
                   [ro.texts[i] for i in rows] if ro.texts else [])


def sequence_logprobs(model, prompt_ids, prompt_mask, tokens, mask, temperature=1.0, chunk_size=None, wrapped=False):
    """log pi(token) of each completion token, recomputed by one forward pass (with gradient).

    prompt_ids, prompt_mask: (B, L) left-padded prompts (one row per completion)
    tokens, mask:            (B, T) right-padded completions (Rollout.tokens, Rollout.mask)
    returns:                 (B, T) log-probs under softmax(logits / temperature), as Rollout.logprobs

    chunk_size=None: logits for the T positions that predict completion tokens (logits_to_keep = T + 1),
    then grpo.token_logprobs. That holds (B, T, V) logits: with a 150k vocabulary, B = 8 and T = 1024,
    4.9 GB in fp32, plus as much again for the backward.
    chunk_size=c: the decoder's hidden states (B, T, H) only, then for each chunk of c positions
    lm_head -> log-softmax -> gathered log-prob under activation checkpointing, so at most (B, c, V)
    logits exist at any time, in the forward and in the backward (recomputed there chunk by chunk).
    wrapped=True: the model is wrapped for data parallel (parallel.is_data_parallel: DDP or FSDP2), so
    the forward must go through its own forward, where the engine's hooks run; then the logits are made
    whole and only the log-softmax is chunked.
    """
    T = tokens.shape[1]
    ids = torch.cat([prompt_ids, tokens], dim=1)                                # (B, L + T)
    attn = torch.cat([prompt_mask, mask.to(prompt_mask.dtype)], dim=1)
    pos = position_ids_from_mask(attn)
    raw = getattr(model, "module", model)                                       # DDP keeps it in .module
    plain_head = not any(getattr(raw.config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
    if chunk_size and not wrapped and plain_head:
        hidden = raw.base_model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False)
        hidden = hidden.last_hidden_state[:, -(T + 1):-1]                       # (B, T, H) predicts tokens
        head = raw.get_output_embeddings()

        def chunk_logprobs(h, y):                                               # (B, c, H), (B, c) -> (B, c)
            return token_logprobs(head(h), y, temperature)
        out = [torch.utils.checkpoint.checkpoint(chunk_logprobs, hidden[:, s:s + chunk_size],
                                                 tokens[:, s:s + chunk_size], use_reentrant=False)
               for s in range(0, T, chunk_size)]
        return torch.cat(out, dim=1)
    # (under DDP / FSDP the forward must go through the model's own forward, and some heads post-process
    # their logits: there, the logits are made whole and only the log-softmax is chunked)
    extra = {"logits_to_keep": T + 1} if "logits_to_keep" in _forward_params(model) else {}
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, **extra).logits
    logits = logits[:, -(T + 1):-1]                                             # (B, T, V) predicts tokens
    return token_logprobs(logits, tokens, temperature, chunk_size)


# ------------------------------------------------------------------------------------------------------
# The compiled decode path: sample(..., compile=True), train.py --compile
#
# The loop above is bound by kernel launches on a GPU: each step launches a few hundred small kernels
# from Python. torch.compile(mode="reduce-overhead") replays a whole decode step as one CUDA graph, but a
# graph fixes every shape and address, so this path (sample's loop, with a CompiledDecoder making its
# decode steps) differs from the eager one in four ways only:
#   - the KV cache has a fixed shape (rows, heads, S, head_dim), S = the prompt + new tokens rounded up,
#     allocated once and reused by every later call that fits; each step writes its key/value at one
#     position (FixedLayer) and attention reads all S positions, the ones not written yet masked out;
#   - the rows decoded together are padded up to a bucket size (a power of two, or the micro-batch
#     size) with copies of a live row, whose outputs are dropped: compaction then changes the batch size
#     only among a few buckets, each captured once (an all-masked padding row would make SDPA return NaN);
#   - the decode step attends with decode_attention, which reads grouped-query keys and values in place;
#   - the decode step (the model's forward) is compiled; prefill, sampling and compaction stay eager.
# The loop is the same (rows compacted at the same steps, tokens drawn for the live rows alone), so the
# random stream is the same: for one seed both paths give the same tokens, and log-probs equal up
# to floating-point summation order (tests/test_rollout.py, fp32). In bf16 a logit that rounds
# differently in a compiled kernel can change a draw now and then: another sample of the same policy.
# ------------------------------------------------------------------------------------------------------

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


def decode_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Attention of one decoding step (query length 1), for grouped-query attention without copying
    the KV cache: the queries of the g heads that share a key/value head become that head's g query
    positions, (b, heads, 1, d) -> (b, kv_heads, g, d), so SDPA reads each cached key and value once.
    (transformers' SDPA path, when compiled, repeats keys and values per query head instead: a copy of
    the whole cache, times g, every step.) Returns (b, 1, heads, d), as transformers' attention functions."""
    b, heads, q, d = query.shape
    g = heads // key.shape[1]                                                   # query heads per kv head
    out = torch.nn.functional.scaled_dot_product_attention(query.reshape(b, heads // g, g * q, d), key, value,
                                                           attn_mask=attention_mask, scale=scaling)
    return out.reshape(b, heads, q, d).transpose(1, 2), None                    # head h = kv head h // g, row h % g


DECODE_ATTENTION = "rollout_decode"          # its name among transformers' attention functions (registered once)


def _decode_step(model, cache, cache_kw, ids, pos, mask):
    """One decoding step, the compiled function: ids, pos (k, 1), mask (k, 1, 1, S) -> logits (k, V)."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_kw: cache})
    return out.logits[:, -1].float()


class CompiledDecoder:
    """State of the compiled path for one model: the fixed KV storage and the compiled decode step."""

    def __init__(self, model, options):
        attn = getattr(model.config, "_attn_implementation", None)
        if attn not in ("sdpa", "eager"):
            raise ValueError(f"compile=True needs sdpa or eager attention (it passes a 4D mask), not {attn!r}")
        from transformers import AttentionInterface
        AttentionInterface.register(DECODE_ATTENTION, decode_attention)
        self.step = torch.compile(_decode_step, **options)
        self.cache, self.rows, self.length = None, 0, 0
        self.cuda = next(model.parameters()).device.type == "cuda"

    def start(self, model, prefilled, mask, L):
        """A run's start: the prompts' cache `prefilled` (b rows of L positions) is copied into the fixed
        cache, (re)allocated, zero-filled, when it has too few rows or positions for the run; returns the
        run's additive mask (b, 1, 1, S) from its 0/1 mask (b, L + new tokens), with every new position
        masked until its step writes it."""
        if not all(isinstance(layer, PreallocatedLayer) for layer in getattr(prefilled, "layers", [None])):
            raise ValueError("compile=True needs transformers' cache layers (transformers >= 4.56)")
        b, needed = mask.shape
        if b > self.rows or needed > self.length:
            self.rows, self.length = max(b, self.rows), max(self.length, -(-needed // 256) * 256)
            self.write_at = torch.zeros(1, dtype=torch.long, device=mask.device)
            self.cache = DynamicCache(config=model.config)
            self.cache.layers = [FixedLayer(*(s.new_zeros((self.rows,) + s.shape[1:2] + (self.length,) + s.shape[3:])
                                              for s in (layer.k_store, layer.v_store)), self.write_at)
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

    def __call__(self, model, cache_kw, ids, pos, mask, write_at):
        """Decode one step for the r rows ids, pos (r,), mask (r, 1, 1, S), writing position write_at
        (which becomes seen in mask, in place): logits (r, V)."""
        mask[..., write_at] = 0
        r = ids.shape[0]
        bucket = min(self.rows, max(8, 1 << (r - 1).bit_length()))             # the bucket of r rows
        sel = torch.cat([torch.arange(r, device=ids.device), ids.new_zeros(bucket - r)])   # pad: copies of row 0
        inputs = ids[sel, None], pos[sel, None], mask[sel]
        for t in inputs:                          # one graph for every bucket (CUDA graphs: one capture each)
            torch._dynamo.maybe_mark_dynamic(t, 0)
        self.write_at.fill_(write_at)
        if self.cuda:
            torch.compiler.cudagraph_mark_step_begin()
        attn, model.config._attn_implementation = model.config._attn_implementation, DECODE_ATTENTION
        try:                                      # the decode step attends with decode_attention
            return self.step(model, self.cache, cache_kw, *inputs)[:r]
        finally:
            model.config._attn_implementation = attn


_DECODERS = weakref.WeakKeyDictionary()                                          # model -> CompiledDecoder


def compiled_decoder(model, options):
    """The model's CompiledDecoder, made with torch.compile `options` on first use and kept."""
    if model not in _DECODERS:
        _DECODERS[model] = CompiledDecoder(model, options)
    return _DECODERS[model]


def compile_options(device):
    """torch.compile's arguments for the decode step: CUDA graphs on CUDA, the default elsewhere."""
    return {"mode": "reduce-overhead"} if torch.device(device).type == "cuda" else {}
