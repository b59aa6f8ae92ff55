"""plan.py: will the run fit? The memory a training run needs at its peak, per rank, before any weight.

Reference page of the tutorial, reached through `python train.py ... --plan [--gpu-memory GB]`: it
reads only the model's config.json (the parameters are counted on the meta device: no weights are
loaded), takes the same flags as the run, prints what each part of the run holds at its peak and
exits; with --gpu-memory it adds a verdict and, when the run does not fit, the smallest changes of
flags that make it fit. All sizes are in GiB (2^30 bytes).

Notation: N parameters, L layers, h hidden size, I MLP width, kv = key/value heads x head size,
V vocabulary, b sequences of one micro-batch, S = prompt + new tokens of a sequence, T new tokens,
R rows sampled together, w bytes per weight (4 fp32, 2 bf16), a bytes per activation (2 under mixed
precision or bf16: --dtype auto on CUDA; 4 in fp32: --dtype auto on a CPU), W ranks.

The peak is the state that stays (weights, AdamW moments, a reference model) plus the larger of the
two phases that come and go: the forward and backward of one micro-batch (with the gradients from
the second micro-batch on), or sampling (with the gradients of the last update).
"""

import torch

from data import completion_tokens
from kv_cache import fixed_cache_length
from parallel import decoder_layers
from precision import precision

GiB = 2 ** 30
# Bytes per token per decoder layer that autograd keeps for the backward pass, for a Qwen2/Llama
# layer (RMSNorm, GQA attention with rotary embeddings and a fused SDPA kernel, SwiGLU MLP), counted
# from what each op saves (Korthikanti et al. 2022 count the same way for GPT layers, 34 s b h):
#   2 RMSNorms: fp32 input and normalised copy        2 x 8h
#   q/k/v, o, gate/up, down projections: their inputs  (3 + 1 + 2) x a h + a I
#   rotary embedding of q and k, SDPA inputs + output 3 x a (h + kv) + a h
#   SiLU(gate), gate * up: their inputs               3 x a I
# which gives about 16h + a (10h + 3kv + 4I); fitted against bench/memory.py's measurements (CPU,
# fp32, three shapes, four options) the count is closer to 1.1x that, which ACT_SLACK covers
# (allocator rounding, temporaries alive at the peak).
ACT_SLACK = 1.1


def shape(config):
    """The sizes the plan needs, from a transformers config (a Qwen2 / Llama-style decoder)."""
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):                     # parameters with shapes and no storage
        model = AutoModelForCausalLM.from_config(config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layer = next(iter(decoder_layers(model)), None)                 # one decoder layer (as FSDP2 shards)
    return {"N": sum(p.numel() for p in model.parameters()), "L": config.num_hidden_layers,
            "h": config.hidden_size, "I": config.intermediate_size, "V": config.vocab_size,
            "kv": getattr(config, "num_key_value_heads", heads) * head_dim,
            "N_layer": sum(p.numel() for p in layer.parameters()) if layer is not None else 0,
            "N_linear": sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)   # a tied head
                            for p in m.parameters(recurse=False))}                                 # counts again


def activation_bytes_per_token(s, a, checkpointing):
    """Bytes kept for the backward per token of a micro-batch, all layers: each layer's saved tensors
    (see ACT_SLACK), or with --gradient-checkpointing each layer's fp32 input (4h) plus one layer's
    saved tensors while it is recomputed."""
    layer = ACT_SLACK * (16 * s["h"] + a * (10 * s["h"] + 3 * s["kv"] + 4 * s["I"]))
    return s["L"] * 4 * s["h"] + layer if checkpointing else s["L"] * layer


def logit_bytes(s, a, b, T, chunk):
    """The log-prob head of one micro-batch: logits (b, T, V) in a bytes, their fp32 copy when a = 2,
    the log-softmax's exp temporary and the logits' gradient in fp32 (rollout.sequence_logprobs and
    grpo.token_logprobs), and about half an fp32 copy more of the backward's temporaries (measured);
    with --logprob-chunk c only (b, c, V) of them exist at a time, plus the hidden states (b, T, h)
    in fp32 that the chunks read."""
    per_position = s["V"] * (a + (4 if a == 2 else 0) + 4 + 4 + 2)
    if chunk:
        return b * min(chunk, T) * per_position + b * T * s["h"] * 4
    return b * T * per_position


def plan(cfg, s, device="cuda", world=1, prompt_tokens=None):
    """[(part, bytes)] of one rank at the run's peak, then the total. cfg: a config.Config (its flags),
    s: shape(config). prompt_tokens: the longest prompt (default cfg.max_prompt_tokens)."""
    cuda = device == "cuda"
    mode = precision(cfg.dtype, device)                          # float32 | mixed | bfloat16
    w = 2 if mode == "bfloat16" else 4
    a = 2 if mode in ("mixed", "bfloat16") else 4
    N, L, V = s["N"], s["L"], s["V"]
    shard = world if cfg.fsdp or cfg.cpu_offload else 1
    offload = cfg.cpu_offload and cuda  # the state in host memory (host_bytes), not on the GPU
    T = completion_tokens(cfg.max_new_tokens, cfg.data)
    S = (prompt_tokens or cfg.max_prompt_tokens) + T
    rows_per_rank = cfg.prompts_per_step * cfg.group_size // world
    b = min(cfg.micro_batch_size, rows_per_rank)
    R = cfg.rollout_batch_size or rows_per_rank
    grads = ("gradients (N w / shards)", N * w / shard)
    parts = [("weights (N w / shards)", N * w / shard),
             ("AdamW moments (2 N w / shards)", 2 * N * w / shard)]
    if offload:             # (report() prints their host memory)
        grads, parts = None, []
    if world > 1 and not (cfg.fsdp or cfg.cpu_offload):
        parts.append(("DDP gradient buckets (N w)", N * w))
    if cfg.beta > 0 or (cfg.loss == "dpo" and cfg.dpo_ref == "initial"):
        parts.append(("frozen reference model (N x 2 bytes on CUDA)", N * (2 if cuda else w)))
    # the update frees the gradients (zero_grad) before its first micro-batch, whose forward peaks
    # before its backward makes them again; from the second micro-batch on they are there. Sampling
    # runs with the gradients of the last update still allocated.
    train = [("activations of one micro-batch (b S x per-token bytes)",
              b * S * activation_bytes_per_token(s, a, cfg.gradient_checkpointing)),
             ("logits and log-softmax (b T V, or b c V chunked)", logit_bytes(s, a, b, T, cfg.logprob_chunk))]
    if rows_per_rank > b and grads:
        train.append(grads)
    if offload:             # FSDP2 copies a layer's weights in (the next one prefetched) and its gradients out
        root = N - L * s["N_layer"]                               # embeddings, final norm, head
        train.append(("--cpu-offload: embeddings/head + 2 layers' weights and gradients ((N_root + 2 N_layer)(a + 4))",
                      (root + 2 * s["N_layer"]) * (a + 4)))
    kv_cache = ("KV cache of one rollout micro-batch (R S 2 L kv a)", R * S * 2 * L * s["kv"] * a)
    if cfg.compile:         # kv_cache.CompiledDecoder keeps its fixed cache (S rounded up to 256) between calls,
        S_fixed = fixed_cache_length(S)  # and CUDA graphs keep their memory pool: both there while training too
        parts.append(("--compile: fixed KV cache, kept (R S' 2 L kv a, S' = S up to 256)",
                      R * S_fixed * 2 * L * s["kv"] * a))
        kv_cache = ("--compile: the prompts' KV cache, copied into it (R P 2 L kv a, P prompt tokens)",
                    R * (S - T) * 2 * L * s["kv"] * a)
        if cuda:
            parts.append(("--compile: CUDA graphs' pool, decode-step logits (R V x 6 bytes)", R * V * 6))
    sampling = [grads] * bool(grads) + [kv_cache, ("sampling logits (R V x 3 fp32)", R * V * 4 * 3)]
    if cfg.fsdp or offload:  # parallel.full_weights: the whole model, gathered for decoding
        sampling.append(("whole weights gathered for sampling (N x 2 bytes)", N * (2 if mode == "mixed" else w)))
    elif mode == "mixed":    # precision.weights_in_compute_dtype: bf16 copies of the Linear weights while sampling,
        copy = ("Linear weights in bf16 for sampling (N_linear x 2 bytes)", s["N_linear"] * 2)   # kept with --compile
        (parts if cfg.compile else sampling).append(copy)
    peak_phase = train if sum(x for _, x in train) >= sum(x for _, x in sampling) else sampling
    other = sampling if peak_phase is train else train
    rows = parts + [(name + "  <- peak phase", x) for name, x in peak_phase] + \
        [(name + "  (other phase, not at the peak)", x) for name, x in other]
    total = sum(x for _, x in parts) + sum(x for _, x in peak_phase)
    return rows, total


def host_bytes(cfg, s, world=1):
    """--cpu-offload: the host memory (CPU RAM) one rank needs for its shards of the weights, their
    gradients and the AdamW moments (4 N w / shards), besides the process itself."""
    w = 2 if cfg.dtype == "bfloat16" else 4
    return 4 * s["N"] * w / world if cfg.cpu_offload else 0


CONTEXT_GIB = 0.75     # the CUDA context and allocator slack the card needs besides the tensors
MARGIN = 0.9           # suggestions leave 10% of the card for fragmentation and the plan's own error


def suggestions(cfg, s, gpu_gib, device="cuda", world=1, prompt_tokens=None):
    """Flag changes that make the plan fit 90% of gpu_gib: [(flags, total)], the first changes that
    fit on one GPU, or else with the state sharded over 2, 4 or 8 GPUs (torchrun --fsdp). The memory flags
    are tried in order, each on top of the ones before: the log-prob head in chunks, activation
    checkpointing, then halving the training micro-batch and then the rollout micro-batch; then the same
    again with --cpu-offload (the state in host memory: slower steps, and host_bytes of CPU RAM)."""
    import dataclasses
    budget = (MARGIN * gpu_gib - CONTEXT_GIB) * GiB
    tries = []
    if not cfg.logprob_chunk:
        tries.append({"logprob_chunk": 256})
    if not cfg.gradient_checkpointing:
        tries.append({"gradient_checkpointing": True})
    mb = cfg.micro_batch_size
    while mb > 1:
        mb //= 2
        tries.append({"micro_batch_size": mb})
    rb = cfg.rollout_batch_size or cfg.prompts_per_step * cfg.group_size // world
    while rb > 8:
        rb //= 2
        tries.append({"rollout_batch_size": rb})

    def flags(changes):
        return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in changes.items())
    one_card = [(world, {})] + ([(world, {"cpu_offload": True})] if device == "cuda" and not cfg.cpu_offload else [])
    for ranks, base in one_card + [(n, {"fsdp": True}) for n in (2, 4, 8) if n > world]:
        changes = dict(base)
        for change in [{}] + tries:
            changes.update(change)
            total = plan(dataclasses.replace(cfg, **changes), s, device, ranks, prompt_tokens)[1]
            if total <= budget:
                launch = f"torchrun --nproc_per_node {ranks} train.py ... " if ranks > 1 else ""
                return [(launch + flags(changes), total)]
    return []


def report(cfg, s, gpu_gib=None, device="cuda", world=1, prompt_tokens=None):
    """The lines --plan prints."""
    rows, total = plan(cfg, s, device, world, prompt_tokens)
    width = max(len(name) for name, _ in rows)
    lines = [f"memory plan per rank ({device}, {world} rank{'s' if world > 1 else ''}; {s['N'] / 1e9:.2f}B parameters, "
             f"{s['L']} layers), GiB:"]
    lines += [f"  {name:<{width}}  {x / GiB:8.2f}" for name, x in rows]
    lines.append(f"  {'total at the peak':<{width}}  {total / GiB:8.2f}")
    if cfg.cpu_offload:
        lines.append(f"host memory (CPU RAM) per rank for --cpu-offload: {host_bytes(cfg, s, world) / GiB:.1f} GiB "
                     f"(weights, gradients, AdamW moments: 4 N w / ranks)")
    if gpu_gib is not None:
        need = total / GiB + CONTEXT_GIB
        if need <= gpu_gib:
            lines.append(f"fits: {need:.1f} GiB (with {CONTEXT_GIB} GiB for the CUDA context) of {gpu_gib:g} GiB, "
                         f"{gpu_gib - need:.1f} GiB to spare")
        else:
            lines.append(f"does not fit: {need:.1f} GiB (with {CONTEXT_GIB} GiB for the CUDA context) on a "
                         f"{gpu_gib:g} GiB card, {need - gpu_gib:.1f} GiB too much")
            fixes = suggestions(cfg, s, gpu_gib, device, world, prompt_tokens)
            lines += [f"  fits with: {flags}  ({t / GiB + CONTEXT_GIB:.1f} GiB)" for flags, t in fixes] or \
                ["  no change of these flags makes it fit: a smaller model, or more GPUs"]
    return lines, total


def model_shape(name):
    """shape() of a model directory or hub id's config.json (no weights), or of the built-in tiny
    model when name is empty; an unknown architecture is one clear line."""
    from data import DataError, load_model_config
    if not name:
        from tiny_model import tiny_model_config
        return shape(tiny_model_config())
    config = load_model_config(name)
    try:
        return shape(config)
    except (ValueError, KeyError, AttributeError) as e:
        raise DataError(f"--model {name}: cannot plan a {type(config).__name__} "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def main(cfg):
    """--plan: print the plan of the run cfg describes (and a verdict with --gpu-memory), then return it."""
    import os
    device = "cpu" if cfg.device == "cpu" else "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    lines, total = report(cfg, model_shape(cfg.model), cfg.gpu_memory or None, device, world)
    if int(os.environ.get("RANK", "0")) == 0:
        print("\n".join(lines))
    return {"total_gib": total / GiB, "lines": lines}


def check_run(cfg, run, world, log):
    """At the start of a run on a GPU (train.Run): the plan's total against the card's free memory,
    with a warning when it will not fit. Nothing on a CPU."""
    device = run.device
    if device.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(device)
    longest_prompt = max(len(p["prompt_ids"]) for p in run.train_set)
    total = plan(cfg, shape(run.model.config), "cuda", world, longest_prompt)[1]
    log(f"memory plan: {total / GiB:.1f} GiB at the peak (python train.py ... --plan for the parts); "
        f"{free / GiB:.1f} GiB free on {torch.cuda.get_device_name(device)}")
    if total + CONTEXT_GIB * GiB > free:
        log(f"warning: this run will probably run out of memory ({total / GiB:.1f} GiB planned, {free / GiB:.1f} GiB "
            f"free): see python train.py ... --plan --gpu-memory {free / GiB:.0f} for flags that fit")
