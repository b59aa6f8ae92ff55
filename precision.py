"""precision.py: which dtype each phase of a run computes in (--dtype), and the context it runs under.

Appendix of the tutorial (docs/precision.md says why and what was measured). --dtype auto picks
one of three settings (float32 on a CPU, mixed on CUDA), or one is named:

    float32:  fp32 weights, fp32 compute                        (--dtype auto on a CPU)
    mixed:    fp32 weights and AdamW, bf16 autocast: matmuls     (--dtype auto on CUDA; selectable on a
              in bf16; norms, softmax, the residual stream fp32   CPU, so tests and benchmarks run it)
    bfloat16: bf16 weights, bf16 compute, no autocast

Every forward pass of a run (sampling, the update, the reference model, evaluation) goes through
`autocast`; while sampling under mixed precision the Linear layers read bf16 copies of their weights
(`weights_in_compute_dtype`), so nothing is cast per decoded token.
"""

import contextlib
import weakref

import torch

PRECISIONS = ("auto", "float32", "mixed", "bfloat16")
DTYPES = {"float32": torch.float32, "mixed": torch.float32, "bfloat16": torch.bfloat16}   # of the weights


def precision(dtype, device):
    """--dtype as it runs on `device`: "auto" is "mixed" on CUDA and "float32" elsewhere."""
    if dtype == "auto":
        return "mixed" if torch.device(device).type == "cuda" else "float32"
    return dtype


def autocast(device, dtype="auto"):
    """The context every forward pass of a run goes through: bf16 autocast under mixed precision,
    nothing otherwise. Without autocast's weight cache: it would keep a bf16 copy of every Linear weight
    (2 bytes x N_linear) until the block ends, for nothing: a weight is read once per forward, the
    backward keeps the casts it needs itself, gradient checkpointing casts again when it recomputes,
    and sampling reads bf16 copies made once per call (weights_in_compute_dtype)."""
    if precision(dtype, device) == "mixed":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def compute_dtype(model):
    """The dtype the model's forward computes in: autocast's where autocast is on for the model's device
    (mixed precision: fp32 weights, bf16 matmuls), else the weights' own."""
    p = next(model.parameters())
    on = torch.is_autocast_enabled(p.device.type)
    return torch.get_autocast_dtype(p.device.type) if on else p.dtype


_KEPT_WEIGHTS = weakref.WeakKeyDictionary()      # model -> {(module, name): its weight in the compute dtype}


@contextlib.contextmanager
def weights_in_compute_dtype(model, keep=False):
    """Mixed precision while decoding, without casting every weight at every step: each nn.Linear's fp32
    weight (and bias) is swapped for a copy in the compute dtype for the duration, made once per call.
    Autocast casts a Linear's inputs to bf16 in any case, so the result is the same to the bit; the
    embedding and the norms keep their fp32 weights (a tied output head is untied meanwhile). Nothing
    is cast without autocast (fp32 or bf16 weights) or where the weights are not fp32 (FSDP gathers
    them in bf16 already). A Linear with a LoRA adapter (lora.py) decodes with its merged weight
    W + (alpha / r) B A, in any dtype, its adapter off meanwhile: no extra matmuls per token. keep=True
    keeps the copies between calls and refreshes them in place (the compiled path: CUDA graphs read
    weights at fixed addresses)."""
    dtype = compute_dtype(model)

    def merged(m, name):                                     # a LoRA adapter to merge into this weight
        adapter = getattr(m, "adapter", None)
        return adapter if name == "weight" and adapter is not None and adapter.enabled else None
    swaps = [(m, name, w, merged(m, name)) for m in model.modules() if isinstance(m, torch.nn.Linear)
             for name, w in m._parameters.items()
             if w is not None and ((w.dtype == torch.float32 and dtype != torch.float32) or merged(m, name))]
    copies = _KEPT_WEIGHTS.setdefault(model, {}) if keep and swaps else {}
    with torch.no_grad():
        for m, name, w, adapter in swaps:
            value = w if adapter is None else adapter.merged_weight(w)                # W + (alpha / r) B A
            if (m, name) in copies:
                copies[(m, name)].copy_(value)                                  # refreshed: w was updated
            else:
                copies[(m, name)] = torch.nn.Parameter(value.to(dtype), requires_grad=False)
            m._parameters[name] = copies[(m, name)]
            if adapter is not None:
                adapter.enabled = False
    try:
        yield
    finally:
        for m, name, w, adapter in swaps:
            m._parameters[name] = w
            if adapter is not None:
                adapter.enabled = True
