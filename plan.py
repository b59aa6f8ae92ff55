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

from config import names
from data import completion_tokens
from compiled import fixed_cache_length
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
            "N_linear": sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
                            for p in m.parameters(recurse=False)),            # a tied head counts again
            "N_max": max(p.numel() for p in model.parameters()),              # the largest tensor
            "linears": linear_sizes(model), "modules": module_sizes(model)}


def linear_sizes(model):
    """{name of a Linear (q_proj, up_proj, ...): (sum of in + out, sum of in x out) over the layers}: what
    LoRA adapters of rank r on those Linears hold (r (in + out) each) and what merging them reads."""
    sizes = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            both, weight = sizes.get(name.split(".")[-1], (0, 0))
            sizes[name.split(".")[-1]] = (both + m.in_features + m.out_features, weight + m.weight.numel())
    return sizes


def module_sizes(model):
    """{name of a module (embed_tokens, norm, ...): {id of each parameter under it: its numel}} over the
    layers: what --lora-modules-to-save trains (a tied weight is one id under embed_tokens and lm_head)."""
    sizes = {}
    for name, m in model.named_modules():
        if name:
            sizes.setdefault(name.split(".")[-1], {}).update({id(p): p.numel() for p in m.parameters()})
    return sizes


def saved_sizes(cfg, s):
    """(parameters --lora-modules-to-save trains beside the adapters, each counted once; the largest of
    them); (0, 0) without."""
    chosen = {} if not cfg.lora_rank else {k: n for name in names(cfg.lora_modules_to_save)
                                           for k, n in s["modules"].get(name, {}).items()}
    return sum(chosen.values()), max(chosen.values(), default=0)


def lora_sizes(cfg, s):
    """(adapter parameters, weights of the adapted Linears) of --lora-rank on --lora-targets: r (in + out)
    and in x out, summed over the Linears adapted; (0, 0) without LoRA."""
    if not cfg.lora_rank:
        return 0, 0
    targets = [t.strip() for t in cfg.lora_targets.split(",")]
    return (cfg.lora_rank * sum(s["linears"].get(t, (0, 0))[0] for t in targets),
            sum(s["linears"].get(t, (0, 0))[1] for t in targets))


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


PHASES = ("sampling", "training micro-batch", "optimizer step", "held-out evaluation")


def plan(cfg, s, device="cuda", world=1, prompt_tokens=None):
    """({phase: [(part, bytes)]}, peak bytes) of one rank. "kept" holds what stays through the run; each of
    PHASES what exists only while it runs; the peak is kept + the largest phase. cfg: a config.Config (its
    flags), s: shape(config). prompt_tokens: the longest prompt (default cfg.max_prompt_tokens)."""
    cuda = device == "cuda"
    mode = precision(cfg.dtype, device)                          # float32 | mixed | bfloat16
    w = 2 if mode == "bfloat16" else 4
    a = 2 if mode in ("mixed", "bfloat16") else 4
    N, L, V, h, I, kv = s["N"], s["L"], s["V"], s["h"], s["I"], s["kv"]
    shard = world if cfg.fsdp or cfg.cpu_offload else 1
    offload = cfg.cpu_offload and cuda  # the state in host memory (host_bytes), not on the GPU
    T = completion_tokens(cfg.max_new_tokens, cfg.data)
    P = prompt_tokens or cfg.max_prompt_tokens
    S = P + T
    rows_per_rank = cfg.prompts_per_step * cfg.group_size // world
    b = min(cfg.micro_batch_size, rows_per_rank)
    R = cfg.rollout_batch_size or rows_per_rank                  # rows sampled together (and evaluated)
    root = N - L * s["N_layer"]                                  # embeddings, final norm, head
    kv_per_token = 2 * L * kv * a                                # keys and values of all layers
    N_a, N_t = lora_sizes(cfg, s)                                # LoRA: adapter parameters, adapted weights
    N_s, N_s_max = saved_sizes(cfg, s)                           # LoRA: parameters trained beside the adapters
    # per adapted Linear name, (in + out, in x out) summed over the layers (plan.linear_sizes)
    adapted = [s["linears"].get(t.strip(), (0, 0)) for t in cfg.lora_targets.split(",")]
    largest_adapted = max(size for _, size in adapted) // L      # in x out of the largest adapted Linear
    if cfg.lora_rank:       # the frozen base in the compute dtype (bf16 under mixed), the adapters in fp32
        kept = [("frozen base model (N a / shards)", N * a / shard),
                ("LoRA adapters (N_a = r (in + out) per Linear, x 4 / shards)", N_a * 4 / shard),
                ("AdamW moments of the adapters (2 N_a x 4 / shards)", 2 * N_a * 4 / shard)]
        if N_s:         # --lora-modules-to-save: a trained copy (fp32, or bf16 under --dtype bfloat16) and its
            # moments; their base values are the frozen base's
            kept.append(("modules trained beside the adapters: trained copy, AdamW moments (N_s x 3 w)", N_s * 3 * w))
    else:
        kept = [] if offload else [("weights (N w / shards)", N * w / shard),
                                   ("AdamW moments (2 N w / shards)", 2 * N * w / shard)]
    if world > 1 and not (cfg.fsdp or cfg.cpu_offload):
        kept.append(("DDP gradient buckets (trained parameters x w)", (N_a * 4 + N_s * w) or N * w))
    if (cfg.beta > 0 or (cfg.loss == "dpo" and cfg.dpo_ref == "initial")) and not cfg.lora_rank:
        kept.append(("frozen reference model (N x 2 bytes on CUDA)", N * (2 if cuda else w)))
    # the weights decoding reads: under FSDP / offload the whole model gathered (parallel.full_weights);
    # under mixed precision bf16 copies of the Linear weights (precision.weights_in_compute_dtype); with
    # LoRA the adapted Linears merged, W + (alpha / r) B A, in the compute dtype
    if cfg.fsdp or offload:
        read = [("whole weights gathered for decoding (N x 2 bytes)", N * (2 if mode == "mixed" else w))]
    elif cfg.lora_rank:     # and the fp32 modules trained beside the adapters, in bf16 under mixed
        read = [("adapted Linears merged for decoding (N_t a)", N_t * a)] + (
            [("modules trained beside the adapters, in bf16 for decoding (N_s x 2)", N_s * 2)]
            if N_s and mode == "mixed" else [])
    elif mode == "mixed":
        read = [("Linear weights in bf16 for decoding (N_linear x 2 bytes)", s["N_linear"] * 2)]
    else:
        read = []

    def decoding(rows, samples, tag):
        """A decoding run of `rows` rows, `samples` per prompt (rollout.sample): its KV cache, and the
        largest of the transients that come one after the other: the prefill (the prompts' cache, one
        layer's activations over the prompts, their next-token logits), expanding the prompts' cache into
        the rows' (both caches, the logits copied per row), a decode step (the last step's fp32 logits, the
        new ones and their fp32 copy)."""
        prompts = max(1, rows // samples)
        cache = rows * S * kv_per_token
        prompt_cache = prompts * (P if cfg.compile else S) * kv_per_token
        prefill = prompt_cache + prompts * P * (3 * I + 4 * h + 2 * kv) * a + prompts * V * a
        expand = prompt_cache + (0 if cfg.compile else cache) + prompts * V * a + rows * V * 4
        decode = (0 if cfg.compile else cache) + rows * V * (a + 8)
        # LoRA merges each adapted Linear before decoding (lora.Adapter.merged_weight): a bf16 base's
        # weight in fp32 and the fp32 sum W + (alpha / r) B A beside the bf16 copies (in `read`), the
        # largest: out x in x (4 + 4); an fp32 base is summed into its merged copy itself (none)
        merge = largest_adapted * 8 if cfg.lora_rank and mode != "float32" else 0
        parts = [] if cfg.compile else [(f"KV cache of {tag} (R S 2 L kv a)", cache)]
        return read * (not cfg.compile) + parts + [
            ("the largest transient of prefill, expanding the prompts' cache, a decode step, LoRA's merge "
             "(R V (a + 8), ...)",
             max(prefill, expand, decode, merge) - (0 if cfg.compile else cache))]
    if cfg.compile:         # the fixed cache (S rounded up to 256) and CUDA graphs' pool stay between calls
        kept.append(("--compile: fixed KV cache, kept (R S' 2 L kv a, S' = S up to 256)",
                     R * fixed_cache_length(S) * kv_per_token))
        kept += read        # the bf16 copies are kept too: CUDA graphs read fixed addresses
        if cuda:
            kept.append(("--compile: CUDA graphs' pool, decode-step logits (R V x 6 bytes)", R * V * 6))
    phases = {"kept": kept, "sampling": decoding(R, cfg.group_size, "a rollout micro-batch")}
    # training: from the second micro-batch on the gradients exist (the update frees them before the first
    # and after the step); the activations of one micro-batch; the log-prob head (rollout.ChunkedLogprobHead)
    grads = [] if offload else [("gradients (N w / shards)", N * w / shard)] if not cfg.lora_rank else \
        [("gradients of the adapters and modules trained beside them (N_a x 4 + N_s w)", N_a * 4 + N_s * w)]
    # one micro-batch per step: no gradient exists before it, but the head's (V h w) is made first in its
    # backward, while the log-prob head's temporaries are alive (bench/memory.py measures it)
    head_grad = [] if offload or (cfg.lora_rank and not N_s) else [
        ("gradient of the modules trained beside the adapters, made in the backward (N_s w)", N_s * w)
        if cfg.lora_rank else ("gradient of the output head, made first in the backward (V h w)", V * h * w)]
    train = (grads if rows_per_rank > b else head_grad) + [
        ("activations of one micro-batch (b S x per-token bytes)",
         b * S * activation_bytes_per_token(s, a, cfg.gradient_checkpointing)),
        ("logits and log-softmax (b T V, or b c V chunked)", logit_bytes(s, a, b, T, cfg.logprob_chunk))]
    if offload:             # FSDP2 copies a layer's weights in (the next one prefetched), its gradients out
        train.append(("--cpu-offload: embeddings/head + 2 layers' weights and gradients "
                      "((N_root + 2 N_layer)(a + 4))", (root + 2 * s["N_layer"]) * (a + 4)))
    elif cfg.fsdp:          # FSDP2 gathers a layer (and prefetches the next) and keeps the root gathered
        train.append(("--fsdp: the root and 2 layers gathered ((N_root + 2 N_layer) a)",
                      (root + 2 * s["N_layer"]) * a))
    phases["training micro-batch"] = train
    # the optimizer step: the gradients, and AdamW's temporaries: the fused step on CUDA makes none; on a
    # CPU the step goes tensor by tensor, two temporaries of the largest one; with --cpu-offload it runs on
    # the CPU (host memory)
    largest = (max(max(both for both, _ in adapted) * cfg.lora_rank // L, N_s_max)   # LoRA: about the largest
               if cfg.lora_rank else s["N_max"])                                    # adapter, or saved module
    phases["optimizer step"] = [] if offload else grads + [
        ("AdamW step temporaries (fused on CUDA: none; a CPU: 2 N_max x 4 / shards)",
         0 if cuda else 2 * largest * 4 / shard)]
    # held-out evaluation: decoding as many rows as a rollout micro-batch, eval_samples per prompt
    phases["held-out evaluation"] = decoding(R, cfg.eval_samples, "an evaluation micro-batch")
    return phases, sum(x for _, x in kept) + sum(x for _, x in phases[peak_phase(phases)])


def peak_phase(phases):
    """The phase of plan()'s phases that makes the peak."""
    return max(PHASES, key=lambda p: sum(x for _, x in phases[p]))


def host_bytes(cfg, s, world=1):
    """--cpu-offload: the host memory (CPU RAM) one rank needs for its shards of the weights, their
    gradients and the AdamW moments (4 N w / shards), besides the process itself."""
    w = 2 if cfg.dtype == "bfloat16" else 4
    return 4 * s["N"] * w / world if cfg.cpu_offload else 0


CONTEXT_GIB = 1.0      # the CUDA context with cuBLAS's workspaces, besides the tensors
SLACK = 1.1            # the caching allocator reserves more than it hands out (block rounding, fragments)
MARGIN = 0.95          # suggestions leave 5% of the card for the plan's own error


def needed_gib(total):
    """What a card must have for a plan's peak: the peak with the allocator's slack, and the CUDA context."""
    return total / GiB * SLACK + CONTEXT_GIB


def suggestions(cfg, s, gpu_gib, device="cuda", world=1, prompt_tokens=None, lora=True):
    """Flag changes that make the plan fit 95% of gpu_gib: [(flags, total)], the first changes that
    fit on one GPU, or else with the state sharded over 2, 4 or 8 GPUs (torchrun --fsdp). The memory flags
    are tried in order, each on top of the ones before: the log-prob head in chunks, activation
    checkpointing, then halving the training micro-batch and then the rollout micro-batch; then the same
    again with LoRA of rank 16 (a frozen base in bf16 and small adapters: lora.py), then with --cpu-offload
    (the state in host memory: slower steps, and host_bytes of CPU RAM); lora=False: full fine-tuning
    only. Only
    flag sets the run accepts are proposed (config.check_config: never --cpu-offload with --compile)."""
    import dataclasses
    from config import check_config
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
        return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                        for k, v in changes.items())

    def accepted(candidate, ranks):
        try:
            check_config(candidate, ranks)
            return True
        except SystemExit:
            return False
    offload = [(world, {"cpu_offload": True})] if device == "cuda" and not cfg.cpu_offload else []
    adapters = [(world, {"lora_rank": 16})] if lora and not cfg.lora_rank else []   # before --cpu-offload
    one_card = [(world, {})] + adapters + offload
    for ranks, base in one_card + [(n, {"fsdp": True}) for n in (2, 4, 8) if n > world]:
        changes = dict(base)
        for change in [{}] + tries:
            changes.update(change)
            candidate = dataclasses.replace(cfg, **changes)
            total = plan(candidate, s, device, ranks, prompt_tokens)[1]
            if needed_gib(total) <= MARGIN * gpu_gib and accepted(candidate, ranks):
                launch = f"torchrun --nproc_per_node {ranks} train.py ... " if ranks > 1 else ""
                return [(launch + flags(changes), total)]
    return []


def report(cfg, s, gpu_gib=None, device="cuda", world=1, prompt_tokens=None):
    """The lines --plan prints: every phase with its parts, the peak, and a verdict."""
    phases, total = plan(cfg, s, device, world, prompt_tokens)
    peak = peak_phase(phases)
    width = max(len(name) for parts in phases.values() for name, _ in parts) + 4
    lines = [f"memory plan per rank ({device}, {world} rank{'s' if world > 1 else ''}; {s['N'] / 1e9:.2f}B "
             f"parameters, {s['L']} layers), GiB:"]
    for phase, parts in phases.items():
        title = ("kept through the run" if phase == "kept" else f"{phase}, besides what is kept") + \
            ("  <- the peak" if phase == peak else "")
        lines.append(f"  {title:<{width + 2}}  {sum(x for _, x in parts) / GiB:8.2f}")
        lines += [f"    {name:<{width}}  {x / GiB:8.2f}" for name, x in parts]
    lines.append(f"  {'total at the peak (kept + ' + peak + ')':<{width + 2}}  {total / GiB:8.2f}")
    if cfg.cpu_offload:
        host = host_bytes(cfg, s, world) / GiB
        lines.append(f"host memory (CPU RAM) per rank for --cpu-offload: {host:.1f} GiB (weights, gradients, "
                     f"AdamW moments: 4 N w / ranks)")
    if device == "cuda":
        lines.append(f"on the card: {needed_gib(total):.1f} GiB with the allocator's slack (x{SLACK}) and "
                     f"the CUDA context ({CONTEXT_GIB} GiB); PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
                     f" keeps the slack small (sampling's shapes change every step)")
    if gpu_gib is not None:
        need = needed_gib(total)
        if need <= gpu_gib:
            lines.append(f"fits: {need:.1f} GiB of {gpu_gib:g} GiB, {gpu_gib - need:.1f} GiB to spare")
        else:
            lines.append(f"does not fit: {need:.1f} GiB on a {gpu_gib:g} GiB card, "
                         f"{need - gpu_gib:.1f} GiB too much")
            fixes = suggestions(cfg, s, gpu_gib, device, world, prompt_tokens)
            lines += [f"  fits with: {flags}  ({needed_gib(t):.1f} GiB)" for flags, t in fixes] or \
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
    total = plan(cfg, shape(run.raw_model.config), "cuda", world, longest_prompt)[1]
    need = needed_gib(total) - CONTEXT_GIB           # the context exists already: free memory excludes it
    log(f"memory plan: {need:.1f} GiB at the peak (python train.py ... --plan for every phase); "
        f"{free / GiB:.1f} GiB free on {torch.cuda.get_device_name(device)}")
    if need * GiB > free:
        log(f"warning: this run will probably run out of memory ({need:.1f} GiB planned, {free / GiB:.1f} "
            f"GiB free): see python train.py ... --plan --gpu-memory {free / GiB:.0f} for flags that fit")
