"""lora.py: LoRA in plain PyTorch: train two small matrices beside each Linear, not the model.

Appendix to chapter 5 (train.py --lora-rank R). Each chosen nn.Linear y = W x keeps its weight W
(out, in), frozen, and gains an adapter of rank r:

    y = W x + (alpha / r) B A x          A: (r, in), random;  B: (out, r), zero
                                         (Hu et al. 2021, eq. 3; A initialized as nn.Linear does)

so the adapted model starts exactly at the base model (B A = 0), and only A and B receive gradients:
r (in + out) numbers per layer instead of in x out. The adapter is a small module (Adapter) attached
to the Linear as `.adapter`, whose output a forward hook adds to the Linear's; the model keeps its
Hugging Face class, so loading, gradient checkpointing, DDP and FSDP2 see the model they know.

For RL this costs next to nothing: "LoRA Without Regret" (Schulman et al., Thinking Machines, 2025)
finds LoRA, even at rank 1, matches full fine-tuning on RL for math when every Linear of attention and
the MLP is adapted, at about 10x full fine-tuning's learning rate; a policy-gradient step carries about
one bit per episode. (A tiny model learning a new skill from scratch, as the built-in task's, needs
more rank than a pretrained model eliciting one, and misses what LoRA leaves frozen, its embedding and
norms: with them trained beside rank 32 it matches full fine-tuning; docs/training.md, LoRA.)

--lora-modules-to-save trains some modules in full beside the adapters (PEFT's modules_to_save: the
embedding, the norms), each keeping a copy of its base value for the reference (train_modules).

What the rest of the code does with adapters:
  - the reference policy (--beta > 0, DPO's initial reference) is the same model with its adapters off
    (adapters_off), and the modules trained beside them at their base values: no second copy of the model;
  - sampling reads merged weights W + (alpha / r) B A, made once per call beside the bf16 copies
    precision.weights_in_compute_dtype makes anyway: no extra matmuls per token;
  - a checkpoint holds the adapters and their optimizer state (trainable_state), the base is named by
    path and fingerprint; the final model/ is the merged model (merged_state_dict) and adapter/ holds
    the adapters (and the modules trained beside them) in PEFT's file layout (save_adapter), which
    peft.PeftModel.from_pretrained loads.
"""

import contextlib
import json
import math
import os

import torch

# every Linear of attention and of the MLP (Qwen2, Llama and most decoders name them so); the embeddings
# and the output head stay frozen
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Adapter(torch.nn.Module):
    """The low-rank update of one Linear: x -> (alpha / r) B A x, its weights in fp32."""

    def __init__(self, linear, rank, alpha, generator=None):
        super().__init__()
        self.A = torch.nn.Parameter(torch.empty(rank, linear.in_features))
        self.B = torch.nn.Parameter(torch.zeros(linear.out_features, rank))
        torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=generator)   # as nn.Linear's weight
        self.to(linear.weight.device)
        self.scale = alpha / rank
        self.enabled = True

    def forward(self, x):                                  # x: (..., in) -> (..., out), in x's dtype
        # the small fp32 A and B cast to the activations' dtype (--dtype bfloat16: bf16), as autocast does
        # under mixed precision: no copy of the activations; the gradient still reaches the fp32 weights
        A, B = self.A.to(x.dtype), self.B.to(x.dtype)
        return torch.nn.functional.linear(torch.nn.functional.linear(x, A), B) * self.scale

    def merged_weight(self, weight):
        """W + (alpha / r) B A: (out, in) in fp32, the Linear's weight with the adapter added, made by one
        addmm (no (out, in) temporaries of B A beside it: for a 7B MLP weight each would be 272 MB)."""
        return torch.addmm(weight.float(), self.B, self.A, alpha=self.scale)


def _add_adapter_output(linear, inputs, output):
    """The Linear's forward hook: W x, plus the adapter's output while it is on."""
    adapter = linear.adapter
    return output + adapter(inputs[0]).to(output.dtype) if adapter.enabled else output


def target_linears(model, targets=DEFAULT_TARGETS):
    """{name: nn.Linear} of every Linear of `model` whose name ends in one of `targets` (q_proj, ...)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in targets}


def add_adapters(model, rank, alpha, targets=DEFAULT_TARGETS, seed=0):
    """Freeze every weight of `model` and give each nn.Linear whose name ends in one of `targets` an
    Adapter of rank `rank`, its A drawn from a generator seeded with `seed` (the same command, the same
    adapters). Returns the names of the adapted Linears; raises ValueError (one line) when no Linear
    matches or the rank is above the smallest adapted width."""
    chosen = target_linears(model, targets)
    if not chosen:
        raise ValueError(f"--lora-targets {','.join(targets)} match no Linear layer of the model")
    narrowest = min(min(m.in_features, m.out_features) for m in chosen.values())
    if rank > narrowest:
        raise ValueError(f"--lora-rank {rank} is above the narrowest adapted layer's width ({narrowest})")
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    for m in chosen.values():
        m.adapter = Adapter(m, rank, alpha, generator)
        m.register_forward_hook(_add_adapter_output)
    return sorted(chosen)


def train_modules(model, names, dtype=torch.float32):
    """Train the modules whose names end in one of `names` in full beside the adapters (PEFT's
    modules_to_save: embed_tokens, input_layernorm, post_attention_layernorm, norm, ...): their parameters
    in `dtype` (fp32 under mixed precision, where AdamW's updates need it, as the adapters' do; else the
    model's own dtype, as full fine-tuning's --dtype keeps it), each keeping its base value, in the base's
    dtype, in the owning module's `lora_base` dict (no state-dict entry, nothing DDP broadcasts), which
    adapters_off swaps in. A tied weight (embed_tokens = lm_head) is one parameter: it trains once, as
    both. Returns the names of the parameters trained; ValueError (one line) when a name matches no module
    or a module holds an adapted Linear (call add_adapters first)."""
    found = {n: m for n, m in model.named_modules() if n and n.split(".")[-1] in names}
    missing = sorted(set(names) - {n.split(".")[-1] for n in found})
    if missing:
        raise ValueError(f"--lora-modules-to-save {','.join(missing)} match no module of the model")
    clash = sorted({n.split(".")[-1] for n, m in found.items() if any(isinstance(x, Adapter) for x in m.modules())})
    if clash:
        raise ValueError(f"--lora-modules-to-save {','.join(clash)} hold Linears adapted by --lora-targets")
    trained = {}                                        # id -> (owning module, attribute, full name)
    for name, m in found.items():
        for owner_name, owner in m.named_modules(prefix=name):
            for attr, p in owner.named_parameters(recurse=False):
                trained.setdefault(id(p), (owner, attr, f"{owner_name}.{attr}"))
    for owner, attr, _ in trained.values():
        p = getattr(owner, attr)
        owner.__dict__.setdefault("lora_base", {})[attr] = p.data           # the base value, frozen
        p.data = p.data.to(dtype, copy=True)                                # the trained copy
        p.requires_grad_(True)
    return sorted(name for _, _, name in trained.values())


def adapters(model):
    """{name of the adapted Linear: its Adapter}."""
    return {name: m.adapter for name, m in model.named_modules()
            if isinstance(getattr(m, "adapter", None), Adapter)}


def has_adapters(model):
    return any(isinstance(m, Adapter) for m in model.modules())


@contextlib.contextmanager
def adapters_off(model):
    """The base model for the duration: every adapter off and every module trained beside them
    (train_modules) at its base value (the reference policy of --beta and DPO). Swaps the values (.data)
    under the same parameters: no copy, and the optimizer's parameters stay the same objects."""
    found = [a for a in model.modules() if isinstance(a, Adapter)]
    saved = [(getattr(m, attr), base) for m in model.modules() for attr, base in getattr(m, "lora_base", {}).items()]
    trained = [p.data for p, _ in saved]
    for a in found:
        a.enabled = False
    for p, base in saved:
        p.data = base
    try:
        yield model
    finally:
        for a in found:
            a.enabled = True
        for (p, _), value in zip(saved, trained):
            p.data = value


def trainable_state(state_dict, model):
    """The entries of a state dict that train: the adapters' and those of the modules trained beside them
    (a LoRA checkpoint holds only these)."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in state_dict.items() if k in names}


def merged_state_dict(state_dict, rank, alpha):
    """The base model's state dict with every adapter merged into its Linear: W + (alpha / r) B A, in W's
    dtype, and no adapter entries: an ordinary Hugging Face model (from_pretrained reads it)."""
    out = {k: v for k, v in state_dict.items() if ".adapter." not in k}
    for key in [k for k in state_dict if k.endswith(".adapter.A")]:
        linear = key[:-len(".adapter.A")]
        A, B = state_dict[key].float(), state_dict[linear + ".adapter.B"].float()     # (r, in), (out, r)
        weight = out[linear + ".weight"]                                                # (out, in)
        out[linear + ".weight"] = (weight.float() + (B @ A) * (alpha / rank)).to(weight.dtype)
    return out


def save_adapter(directory, state_dict, rank, alpha, targets, base_model, modules_to_save=(), tied=False):
    """The adapters in PEFT's layout: adapter_config.json and adapter_model.safetensors, whose keys are
    PEFT's (base_model.model.<linear>.lora_A.weight (r, in), .lora_B.weight (out, r); a module trained
    beside them, base_model.model.<name>.weight), so that peft.PeftModel.from_pretrained(base, directory)
    loads them. tied: the model ties its embedding to its head (embed_tokens trained means lm_head too:
    PEFT's ensure_weight_tying)."""
    from safetensors.torch import save_file
    os.makedirs(directory, exist_ok=True)
    saved = set(modules_to_save) | ({"lm_head"} if tied and "embed_tokens" in modules_to_save else set())
    tensors = {}
    for key, value in state_dict.items():
        if key.endswith(".adapter.A") or key.endswith(".adapter.B"):
            linear, which = key.rsplit(".adapter.", 1)
            tensors[f"base_model.model.{linear}.lora_{which}.weight"] = value.detach().cpu().contiguous()
        elif saved & set(key.split(".")[:-1]):                # a tied head: its own copy (safetensors)
            tensors[f"base_model.model.{key}"] = value.detach().cpu().clone()
    save_file(tensors, os.path.join(directory, "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha,
              "target_modules": sorted(targets), "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
              "base_model_name_or_path": base_model, "inference_mode": True, "init_lora_weights": True,
              "use_rslora": False, "use_dora": False, "modules_to_save": sorted(modules_to_save) or None,
              "ensure_weight_tying": bool(tied and modules_to_save)}
    with open(os.path.join(directory, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
