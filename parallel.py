"""parallel.py: everything that exists only because of torchrun.

Chapter 8 of the tutorial (read it after train.py). With one process every function here is a
no-op or the identity, which is why train.py can read as if there were one GPU:

    rank, world, device = parallel.init("auto")     # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK
    train_model = parallel.wrap(model, fsdp=..., device=device)   # DDP, FSDP2, or the model itself
    parallel.all_reduce(x)                          # sum over ranks (a copy through the GPU on NCCL)
    with parallel.full_weights(model): ...          # FSDP2: whole weights while sampling

Data parallel GRPO: each rank samples its own prompts (whole groups, so advantages stay local), DDP
averages the gradients (FSDP2 reduce-scatters them), the ranks share the held-out evaluation, and
rank 0 logs and saves.
"""

import contextlib
import os

import torch
import torch.distributed as dist


def init(device="auto", one_rank_group=False):
    """Start the process group under torchrun (on GPUs NCCL for CUDA tensors and gloo for CPU ones:
    --cpu-offload keeps gradients in host memory, whose clipping all-reduces them; gloo on CPUs);
    returns (rank, world, device).
    Each rank takes the GPU LOCAL_RANK. Without torchrun: (0, 1, the device asked for), and with
    one_rank_group=True a group of this one process (FSDP2 needs one, e.g. for --cpu-offload on one GPU)."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(f"cuda:{local}" if device == "cuda" else device)
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if (torchrun or one_rank_group) and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)                 # one GPU per rank
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        if torchrun:
            dist.init_process_group(backend)
        else:                                             # no torchrun: an in-memory store for one rank
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    rank, world = rank_and_world()
    return rank, world, device


def shutdown():
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_main():
    return rank_and_world()[0] == 0


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_reduce(x, op="sum"):
    """x summed ("sum"), averaged ("mean") or maximized ("max") over ranks, on x's device (a group with
    NCCL alone, made outside init, gets a copy on the GPU)."""
    if dist.is_initialized():
        comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else x.device
        y = x.detach().to(comm, copy=True)
        dist.all_reduce(y, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        x = y.to(x.device) / (dist.get_world_size() if op == "mean" else 1)
    return x


def mean_over_ranks(x):
    """Mean of x's entries over all ranks (every rank has the same count): a float."""
    return (all_reduce(x.float().mean()) / rank_and_world()[1]).item()


def pad_to_ranks(items):
    """items, then a None for each item another rank has more: every rank runs as many micro-batches
    (their forward and backward passes hold DDP's and FSDP's collectives), the padding ones of weight
    0, so no rank waits forever for one that has finished. In one process: items as they are."""
    n = int(all_reduce(torch.tensor(len(items)), "max"))
    return items + [None] * (n - len(items))


def my_share(items):
    """This rank's part of a list: rank r takes r, r + N, r + 2N, ... (held-out problems)."""
    rank, world = rank_and_world()
    return items[rank::world]


# ---------------------------------------------------------------------------------------------------
# Wrapping the model: DDP, or FSDP2
# ---------------------------------------------------------------------------------------------------
def wrap(model, fsdp=False, device=None, compute_dtype=None, cpu_offload=False):
    """The model the training step runs: DDP(model) under torchrun, FSDP2 shards with fsdp=True
    (in place: call before making the optimizer, which must see the sharded parameters), the model
    itself in one process. cpu_offload=True: FSDP2 with the state in host memory (see shard_model), on
    one process (a group of one, see init) or sharded over torchrun's."""
    _, world = rank_and_world()
    if fsdp or cpu_offload:
        if world == 1 and not cpu_offload:
            raise SystemExit("error: --fsdp shards the model across processes: launch with torchrun "
                             "--nproc_per_node N (N >= 2)")
        return shard_model(model, compute_dtype, offload=cpu_offload,
                           pin_memory=device is None or device.type == "cuda")   # pinning needs a GPU
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[device.index] if device is not None and device.type == "cuda" else None)


def shard_model(model, compute_dtype=None, pin_memory=True, offload=False):
    """FSDP2: shard each decoder layer, then the rest (embeddings, final norm, head), across the ranks.
    Each rank then holds 1/world of the weights, gradients and optimizer state; a layer's full weights
    exist only while it computes (all-gathered before, freed after). compute_dtype=torch.bfloat16: the
    shards stay fp32 (as do the optimizer's updates and the gradients' reduction) but are gathered as
    bf16, which halves the traffic and the memory of gathered weights (FSDP2's mixed precision).
    offload=True: FSDP2's CPUOffloadPolicy keeps the shards, their gradients and so the AdamW state
    (which the optimizer makes beside the parameters) in host memory, pinned (pin_memory) for fast
    copies; a layer's weights are copied to the GPU for its forward and backward, and the optimizer
    steps on the CPU. The GPU then holds activations and a layer or two of weights while training."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
    kwargs = {"mp_policy": MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
              } if compute_dtype else {}
    if offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=pin_memory)
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def decoder_layers(model):
    """The model's decoder layers, the unit FSDP2 shards and offloads (the classes a Hugging Face model
    names in _no_split_modules, e.g. Qwen2DecoderLayer)."""
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in layer_classes]


def unwrap(model):
    """The model itself, also when it is wrapped for data parallel (DDP keeps it in .module)."""
    return getattr(model, "module", model)


def is_sharded(model):
    """True when FSDP2's fully_shard has made the model an FSDPModule (its weights split over ranks)."""
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def is_data_parallel(model):
    """True under DDP (the model sits in .module) or FSDP2 (is_sharded): then forward passes must go
    through the model's own forward, where the engine's hooks run."""
    return model is not unwrap(model) or is_sharded(model)


def no_sync(model, last):
    """DDP: skip the gradient all-reduce on all but the last micro-batch (FSDP and one process: nothing)."""
    return contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()


@contextlib.contextmanager
def full_weights(model):
    """FSDP2: all-gather every layer's weights once and keep them while sampling or evaluating, so the
    many small forward passes of decoding make no collectives (and ranks may make different numbers of
    them: their completions end at different steps). Every rank must enter; resharded on exit, and each
    module resharding after its forward again as before, the root excepted: FSDP2 never reshards the
    root after its forward (the backward needs it at once), so it is left so. Costs one full copy of the
    weights per rank for the duration. Nothing to do without FSDP."""
    sharded = [m for m in model.modules() if is_sharded(m)]
    for m in sharded:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m in sharded:
            m.reshard()
            if m is not model:
                m.set_reshard_after_forward(True, recurse=False)


def full_state_dicts(model, optimizer):
    """(model, optimizer) state dicts with whole tensors. Under FSDP each rank holds a shard: they are
    gathered (a collective, every rank must call) onto rank 0's CPU; other ranks get empty dicts."""
    if not is_sharded(model):
        return unwrap(model).state_dict(), optimizer.state_dict() if optimizer is not None else None
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(model, options=options),
            get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None)


def load_full_state_dicts(model, optimizer, model_state, optimizer_state, strict=True):
    """The inverse of full_state_dicts: whole state dicts into a (possibly sharded) model and optimizer;
    under FSDP every rank reads the whole dicts and keeps its own shard. strict=False: model_state may
    hold only some of the model's entries (a LoRA checkpoint's adapters), the rest are left as they are."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                       options=StateDictOptions(full_state_dict=True, strict=strict))
    else:
        unwrap(model).load_state_dict(model_state, strict=strict)
        optimizer.load_state_dict(optimizer_state)
