"""rollout.py: sample many completions at once from a Hugging Face causal LM, with exact log-probs.

Chapter 2 of the tutorial. Sampling is where GRPO spends most of its time, so this is a small,
hand-written decoding loop rather than `model.generate`:

  1. left-pad the prompts into one batch (P, L) with an attention mask and position ids
     position_ids = cumsum(mask) - 1, so every prompt's first real token is at position 0;
  2. prefill the P prompts once, then expand the KV cache to P * n rows (n samples per prompt):
     the prompt is never recomputed n times;
  3. decode one token per step for all rows at once, reusing the KV cache (allocated once for the
     whole run, see kv_cache.py); a row that emitted EOS is finished: its later tokens are
     padding, masked out; once a quarter of the rows have finished they leave the batch and its
     KV cache (compaction), and the loop stops when every row is done.

The attention mask is built once for the run: for SDPA and eager attention as the additive 4D mask
they take (transformers passes a 4D mask through untouched), so no mask is rebuilt per step.

The log-prob of each sampled token is recorded as it is sampled, under softmax(logits / temperature):
after temperature, before top-k / top-p truncation (temperature 0, greedy, records temperature 1).
`sequence_logprobs` below computes the same quantity for the training step by one full-sequence
forward. In fp32 the two agree to ~1e-6; in bf16 they round differently, which is why pi_old comes
from the training forward (update.py, "pi_ref and pi_old").

Rows are laid out group by group: prompt 0's n samples, then prompt 1's, ... which is the layout
grpo.group_advantages expects.

How to sample is one value, `Sampling` (new tokens, temperature, top-p, top-k, rows decoded at once),
which train.py, eval.py and suite.py pass whole. The loop asks a decoder for each decode step
(EagerDecoder: the model's forward over kv_cache.py's cache). On a GPU the loop is bound by kernel
launches, not by the card: the appendix compiled.py has a decoder with a fixed-shape KV cache and a
compiled step that CUDA graphs replay (`decoder_for(model, compile=True)`, train.py --compile); same
tokens for the same seed.
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

from grpo import token_logprobs
from kv_cache import additive_mask, cache_kwarg, decode_attention_in, forward_params, new_cache
from precision import compute_dtype, weights_in_compute_dtype


@dataclass(frozen=True)
class Sampling:
    """How completions are drawn, one value from the command line to the loop."""
    max_new_tokens: int = 64         # new tokens per completion at most
    temperature: float = 1.0         # softmax(logits / temperature); 0: greedy
    top_p: float = 1.0               # nucleus sampling; 1: off
    top_k: int = 0                   # top-k sampling; 0: off
    max_rows: int = None             # rows decoded together at most (memory); None: all at once


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


def _prefill(model, cache, prompts, counts, max_new_tokens, pad_id):
    """Run the prompts once into `cache` and expand it to their rows: returns the first next-token
    logits (b, V), the attention mask for the whole run (b, L + max_new_tokens), 1 where a key is seen
    (the prompt's padding is 0, every new position 1), the next position of each row (b,) and the
    padded prompt length L."""
    device = next(model.parameters()).device
    ids, mask, pos = left_pad(prompts, pad_id, device)                          # (P, L)
    rows = torch.repeat_interleave(torch.arange(len(prompts), device=device),
                                   torch.tensor(counts, device=device))         # (b,) prompt of each row
    extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                **{cache_kwarg(model): cache}, **extra)
    logits = out.logits[:, -1].float()[rows]                                    # (b, V) next-token logits
    cache.batch_select_indices(rows)                                            # (P, ...) -> (b, ...)
    mask = torch.cat([mask[rows], mask.new_ones(rows.numel(), max_new_tokens)], dim=1)
    return logits, mask, pos[rows, -1] + 1, ids.shape[1]


class EagerDecoder:
    """The decode steps of this loop: the model's own forward over a KV cache that grows in place
    (kv_cache.PreallocatedLayer). compiled.CompiledDecoder has the same four methods."""
    keeps_weights = False            # the bf16 weight copies are made per call (precision.py)

    def new_cache(self, model, new_tokens):
        """The cache to prefill the prompts into, with room for new_tokens more positions."""
        return new_cache(model, new_tokens, compute_dtype(model))

    def start(self, model, cache, mask, L):
        """Keep the prefilled cache; the run's mask (b, L + new tokens) as the attention takes it: for
        SDPA and eager attention the additive 4D mask (made once for the run), and the decode steps then
        attend with kv_cache.decode_attention; else the mask as it is."""
        self.cache, self.cache_kw = cache, cache_kwarg(model)
        self.regroup = getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")
        return additive_mask(mask, compute_dtype(model)) if self.regroup else mask

    def compact(self, keep, filled):
        """Keep only the rows `keep` (n,) of the cache."""
        self.cache.batch_select_indices(keep)

    def __call__(self, model, ids, pos, mask, at):
        """One step for the r rows: their last tokens ids (r,) at positions pos (r,), attending to the
        first at + 1 positions of mask -> next-token logits (r, V). With SDPA or eager attention (start)
        the step attends with kv_cache.decode_attention: grouped keys and values read without a copy."""
        with decode_attention_in(model) if self.regroup else contextlib.nullcontext():
            out = model(input_ids=ids[:, None], attention_mask=mask[..., :at + 1], position_ids=pos[:, None],
                        use_cache=True, **{self.cache_kw: self.cache})
        return out.logits[:, -1].float()


def _draw(logits, sampling, generator):
    """One token per row from logits (r, V), and its log-prob under softmax(logits / temperature)."""
    temperature, top_p, top_k = sampling.temperature, sampling.top_p, sampling.top_k
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
    after_end = (ended.cumsum(1) - ended.long()) > 0                  # positions after the first EOS
    return (~after_end).float(), ended.any(1)


@torch.inference_mode()
def _sample_microbatch(model, prompts, counts, sampling, eos, pad_id, generator, check_every, decoder):
    """Sample counts[i] completions of prompts[i]; returns tokens, mask, logprobs, finished (rows grouped).

    Finished rows leave the batch: at every check (a host sync, every `check_every` steps), once a
    quarter of the rows being decoded have emitted EOS, the batch and its KV cache are compacted to the
    running rows, so the forward pass costs what the unfinished completions need, not what the longest
    one needs (GRPO's completions end at very different lengths). `live` maps each decoded row to its
    row of the output. decoder: makes the cache and the decode steps (EagerDecoder above, or one with its
    four methods).
    """
    max_new_tokens = sampling.max_new_tokens
    cache = decoder.new_cache(model, max_new_tokens)
    logits, mask, next_pos, L = _prefill(model, cache, prompts, counts, max_new_tokens, pad_id)
    mask = decoder.start(model, cache, mask, L)                                 # the decoder holds the cache
    del cache
    device, b = logits.device, logits.shape[0]
    eos_ids = torch.tensor(eos or [-1], device=device)
    tokens = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros(b, max_new_tokens, device=device)
    live = torch.arange(b, device=device)           # (r,) output row of each row being decoded
    running = torch.ones(b, dtype=torch.bool, device=device)                    # (r,) not finished yet
    for step in range(max_new_tokens):
        nxt, lp = _draw(logits, sampling, generator)                            # (r,), (r,)
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
                decoder.compact(keep, L + step)
                live, running, nxt, mask = live[keep], running[keep], nxt[keep], mask[keep]
                next_pos = next_pos[keep]
        logits = decoder(model, nxt, next_pos, mask, L + step)        # the token at position L + step
        next_pos = next_pos + 1
    tokens, logps = tokens[:, :step + 1], logps[:, :step + 1]
    completion, finished = _completion(tokens, eos_ids)
    return tokens, completion, logps, finished


def sample(model, prompts, n=1, sampling=Sampling(), eos_token_id=None, pad_token_id=0, generator=None,
           seed=None, tokenizer=None, decoder=None):
    """Sample n completions for each prompt, as `sampling` says.

    prompts: list of P token-id lists (any lengths); returns a Rollout of B = P * n rows, grouped by
    prompt. eos_token_id: an int or a list of ints. generator (or seed) makes sampling reproducible.
    sampling.max_rows bounds the rows decoded together (memory): larger requests are split into
    micro-batches transparently, each prefilling its prompts once. decoder: None for this file's eager
    loop, or the compiled one (`decoder_for(model, compile=True)`, compiled.py).
    """
    device = next(model.parameters()).device
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(0 if seed is None else seed)
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    cap = sampling.max_rows or len(prompts) * n
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
    parts = []
    was_training = model.training
    model.eval()
    try:      # under mixed precision the Linear layers read bf16 copies of their weights (precision.py)
        with weights_in_compute_dtype(model, keep=getattr(decoder, "keeps_weights", False)):
            for batch in batches:
                parts.append(_sample_microbatch(model, [prompts[i] for i, _ in batch], [c for _, c in batch],
                                                sampling, eos, pad_token_id, generator, check_every,
                                                decoder or EagerDecoder()))
    finally:
        model.train(was_training)
    rollout = cat_rollouts([Rollout(tok, m, lp, m.sum(1).long(), fin, []) for tok, m, lp, fin in parts],
                           pad_token_id)
    if tokenizer is not None:
        completions = [t[m.bool()].tolist() for t, m in zip(rollout.tokens, rollout.mask)]
        rollout.texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    return rollout


def cat_rollouts(parts, pad_token_id=0):
    """The rows of several Rollouts as one, right-padded to the longest completion."""
    T = max(p.tokens.shape[1] for p in parts)

    def cat(name, fill):                                                         # (sum of b, T)
        padded = [getattr(p, name) for p in parts]
        return torch.cat([torch.nn.functional.pad(x, (0, T - x.shape[1]), value=fill) for x in padded])
    return Rollout(cat("tokens", pad_token_id), cat("mask", 0.0), cat("logprobs", 0.0),
                   torch.cat([p.lengths for p in parts]), torch.cat([p.finished for p in parts]),
                   [t for p in parts for t in p.texts])


def take_rows(rollout, rows):
    """The Rollout of the rows `rows` (a list of indices) of rollout."""
    idx = torch.tensor(rows, dtype=torch.long, device=rollout.tokens.device)
    return Rollout(rollout.tokens[idx], rollout.mask[idx], rollout.logprobs[idx], rollout.lengths[idx],
                   rollout.finished[idx], [rollout.texts[i] for i in rows] if rollout.texts else [])


def decoder_for(model, compile=False):
    """The decoder sample() runs: None for the eager loop above, or with compile the compiled one of the
    appendix compiled.py (imported only then; CUDA graphs on CUDA, the first calls compile for a minute
    or more on a large model). compile may be a dict of torch.compile options instead of
    compile_options(device), e.g. {"backend": "eager"} to check the path without compiling."""
    if not compile:
        return None
    from compiled import compile_options, compiled_decoder
    options = compile if isinstance(compile, dict) else compile_options(next(model.parameters()).device)
    return compiled_decoder(model, options)


def sequence_logprobs(model, prompt_ids, prompt_mask, tokens, mask, temperature=1.0, chunk_size=None):
    """log pi(token) of each completion token, recomputed by one forward pass (with gradient).

    prompt_ids, prompt_mask: (B, L) left-padded prompts (one row per completion)
    tokens, mask:            (B, T) right-padded completions (Rollout.tokens, Rollout.mask)
    returns:                 (B, T) log-probs under softmax(logits / temperature), as Rollout.logprobs

    chunk_size=None: logits for the T positions that predict completion tokens (logits_to_keep = T + 1),
    then grpo.token_logprobs. That holds (B, T, V) logits: with a 150k vocabulary, B = 8 and T = 1024,
    4.9 GB in fp32, plus as much again for the backward.
    chunk_size=c: the output head runs on c positions at a time, lm_head -> log-softmax -> gathered
    log-prob under activation checkpointing, so at most (B, c, V) logits exist at any time, in the
    forward and in the backward (recomputed there chunk by chunk): ChunkedLogprobHead stands in for the
    model's head for the one forward. Under DDP or FSDP2 the forward goes through the wrapper, where the
    engine's hooks run.
    """
    T = tokens.shape[1]
    ids = torch.cat([prompt_ids, tokens], dim=1)                                # (B, L + T)
    attn = torch.cat([prompt_mask, mask.to(prompt_mask.dtype)], dim=1)
    pos = position_ids_from_mask(attn)
    raw = getattr(model, "module", model)                                       # DDP keeps it in .module
    plain_head = not any(getattr(raw.config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
    extra = {"logits_to_keep": T + 1} if "logits_to_keep" in forward_params(model) else {}
    if chunk_size and plain_head and extra:
        head = raw.get_output_embeddings()
        raw.set_output_embeddings(ChunkedLogprobHead(head, tokens, temperature, chunk_size))
        try:                                    # the model's "logits" are then the (B, T) log-probs
            out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, **extra)
            return out.logits
        finally:
            raw.set_output_embeddings(head)
    # (some heads post-process their logits: there the logits are made whole, the log-softmax chunked)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, **extra).logits
    logits = logits[:, -(T + 1):-1]                                             # (B, T, V) predicts tokens
    return token_logprobs(logits, tokens, temperature, chunk_size)


class ChunkedLogprobHead(torch.nn.Module):
    """The output head of one training forward, made to return log-probs instead of logits: given the
    hidden states (B, T + 1, H) of the positions kept (logits_to_keep), it returns log pi(tokens) (B, T),
    computing head -> log-softmax -> gather on `chunk` positions at a time under activation
    checkpointing. It runs inside the model's own forward, so DDP's and FSDP2's hooks see a forward as
    usual (FSDP2 keeps the root's weights, the head among them, gathered until the backward)."""

    def __init__(self, head, tokens, temperature, chunk):
        super().__init__()
        self.head, self.tokens, self.temperature, self.chunk = head, tokens, temperature, chunk

    def forward(self, hidden):                                                 # (B, T + 1, H)
        hidden = hidden[:, :-1]                                                # (B, T, H) predicts tokens

        def chunk_logprobs(h, y):                                              # (B, c, H), (B, c) -> (B, c)
            return token_logprobs(self.head(h), y, self.temperature)
        T, c = self.tokens.shape[1], self.chunk
        return torch.cat([torch.utils.checkpoint.checkpoint(chunk_logprobs, hidden[:, s:s + c],
                                                            self.tokens[:, s:s + c], use_reentrant=False)
                          for s in range(0, T, c)], dim=1)
