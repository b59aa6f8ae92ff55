"""parallel.py: torchrun with DDP or FSDP2 (--fsdp), on CPU with 2 gloo processes: one step equals one
process on the union of the batches, and a torchrun run trains, evaluates, checkpoints and resumes."""

import json
import os

import pytest
import torch
from helpers import fixed_batch, small_run_args
from transformers import AutoModelForCausalLM, AutoTokenizer

import parallel
import train
from config import Config
from data import build_prompts, tiny_task_problems
from tiny_model import build_tiny_tokenizer
from rollout import Sampling
from update import accumulate_gradients, optimizer_step


def update(model, optimizer, batch, cfg):
    """One update: the batch's gradient accumulated, then the optimizer's step. Returns the statistics."""
    stats = accumulate_gradients(model, batch, cfg)
    optimizer_step(model, optimizer, cfg)
    return stats


def _data_parallel_worker(rank, world, init_file, out_dir, engine, cfg_kwargs):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from datetime import timedelta
    torch.set_num_threads(1)
    # a timeout turns a stuck collective into an error (the test fails) instead of a hang
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    model, local = fixed_batch(build_tiny_tokenizer(), rank=rank)   # prompts 2r and 2r+1: whole groups
    wrapped = DDP(model) if engine == "ddp" else parallel.shard_model(model, torch.bfloat16 if engine == "fsdp-bf16"
                                                                   else None)
    if engine != "ddp":                                # each rank holds half of every weight
        from torch.distributed.tensor import DTensor
        assert all(isinstance(p, DTensor) and p.to_local().numel() <= (p.numel() + 1) // 2
                   for p in wrapped.parameters())
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
    computed_in = []                                   # dtype of the gathered weights a layer computes with
    model.model.layers[0].mlp.register_forward_pre_hook(lambda m, a: computed_in.append(m.up_proj.weight.dtype))
    update(wrapped, opt, local, Config(**cfg_kwargs))
    assert set(computed_in) == {torch.bfloat16 if engine == "fsdp-bf16" else torch.float32}
    weights, _ = parallel.full_state_dicts(wrapped, None)     # FSDP: gathered from both ranks' shards
    if rank == 0 or engine == "ddp":
        torch.save(weights, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()          # both ranks are done; the process group goes with the process (no teardown race)


@pytest.mark.parametrize("engine,aggregation,grad_clip,chunk", [
    ("ddp", "seq_mean", 0.0, 0), ("ddp", "token_mean", 0.0, 3), ("fsdp", "seq_mean", 0.0, 3),
    ("fsdp", "token_mean", 0.05, 0), ("fsdp-bf16", "seq_mean", 0.0, 0)])
def test_data_parallel_step_equals_one_process_on_the_union_of_the_batches(tmp_path, engine, aggregation,
                                                                           grad_clip, chunk):
    import torch.multiprocessing as mp
    # micro-batches of 2 with ties skipped: rank 0 keeps 2 rows (one chunk), rank 1 keeps 4 (two
    # chunks), so the padding with zero-weight backward passes is exercised too; grad_clip 0.05 is
    # below the gradient's norm, so clipping (a norm over both ranks' shards under FSDP) changes the step
    # chunk 3: the log-prob head in chunks of 3 positions inside the wrapped forward (rollout.ChunkedLogprobHead)
    cfg_kwargs = dict(aggregation=aggregation, micro_batch_size=2, grad_clip=grad_clip, max_new_tokens=8, beta=0.0,
                      logprob_chunk=chunk)
    mp.start_processes(_data_parallel_worker, args=(2, str(tmp_path / "init"), str(tmp_path), engine, cfg_kwargs),
                       nprocs=2, start_method="spawn")
    model, batch = fixed_batch(build_tiny_tokenizer())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    # the ranks skip their tied rows (--skip-ties, the default); one process here runs every row: the same step
    update(model, opt, batch, Config(**cfg_kwargs, skip_ties=False))
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt") if engine == "ddp" else r0     # FSDP: one gathered copy
    moved = 0.0
    start, _ = fixed_batch(build_tiny_tokenizer())
    if engine == "fsdp-bf16":
        # bf16 compute: not the fp32 step to the bit, but the same step (direction and size) to ~1%
        delta = torch.cat([(r0[k] - w).flatten() for k, w in start.state_dict().items()])
        want = torch.cat([(v - start.state_dict()[k]).flatten() for k, v in model.state_dict().items()])
        assert torch.cosine_similarity(delta, want, dim=0) > 0.99
        assert abs(delta.norm() / want.norm() - 1) < 0.05
        return
    for k, v in model.state_dict().items():
        assert torch.equal(r0[k], r1[k]), k                       # the ranks agree
        assert torch.allclose(r0[k], v, atol=1e-6), k             # and equal the single process
        moved = max(moved, (v - start.state_dict()[k]).abs().max().item())
    assert moved > 1e-4                                           # the step really changed the weights


TIED_ON_RANK_1 = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0)       # rank 1 holds prompts 2 and 3: both tie


def _all_ties_worker(rank, world, init_file, out_dir, loss):
    import torch.distributed as dist
    from datetime import timedelta
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))          # a rank left waiting fails, not hangs
    model, local = fixed_batch(build_tiny_tokenizer(), rewards=TIED_ON_RANK_1, loss=loss, rank=rank)
    wrapped = DDP(model)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
    stats = update(wrapped, opt, local, Config(loss=loss, micro_batch_size=2, grad_clip=0.0, max_new_tokens=8))
    assert stats is not None                    # rank 1 has nothing to learn, but steps with the others
    torch.save(model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()


@pytest.mark.parametrize("loss", ["grpo", "dpo"])
def test_a_rank_whose_pairs_all_tie_pads_with_zero_weight_passes(tmp_path, loss):
    """Under torchrun a rank whose groups all tie has no rows (GRPO) or no pairs (DPO) to run: it makes
    as many forward/backward passes as the other rank, of weight 0, so no collective waits forever,
    and the step is the one process's step on both ranks' rollouts."""
    import torch.multiprocessing as mp
    mp.start_processes(_all_ties_worker, args=(2, str(tmp_path / "init"), str(tmp_path), loss), nprocs=2,
                       start_method="spawn")
    model, batch = fixed_batch(build_tiny_tokenizer(), rewards=TIED_ON_RANK_1, loss=loss)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    update(model, opt, batch, Config(loss=loss, micro_batch_size=2, grad_clip=0.0, max_new_tokens=8))
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    start, _ = fixed_batch(build_tiny_tokenizer(), rewards=TIED_ON_RANK_1)
    moved = 0.0
    for k, v in model.state_dict().items():
        assert torch.equal(r0[k], r1[k]) and torch.allclose(r0[k], v, atol=1e-6), k
        moved = max(moved, (v - start.state_dict()[k]).abs().max().item())
    assert moved > 1e-4


def torchrun(argv, root):
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("engine", ["ddp", "fsdp", "ddp-lora", "fsdp-lora"])
def test_torchrun_two_processes_end_to_end(tmp_path, tiny_model_dir, engine):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / engine
    # FSDP with the memory options and a KL reference too: each changes how the sharded model is run;
    # LoRA under DDP: the adapters and the modules trained beside them (the embedding = the head, the final
    # norm) train, the reference is the model with its adapters off and those modules at their base values
    extra = {"fsdp": dict(fsdp=True, gradient_checkpointing=True, logprob_chunk=4, beta=0.04),
             "ddp-lora": dict(lora_rank=4, lr=5e-3, beta=0.04, prompts_per_step=32,
                              lora_modules_to_save="embed_tokens,norm"),
             "fsdp-lora": dict(fsdp=True, gradient_checkpointing=True, lora_rank=4, lr=5e-3, beta=0.04,
                               prompts_per_step=32)}.get(engine, {})
    torchrun(small_run_args(tmp_path, tiny_model_dir, steps=2, out_dir=str(out), **extra), root)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1]                    # rank 0 alone logs
    assert rows[-1]["rollouts"] == 2 * extra.get("prompts_per_step", 8) * 2      # prompts over both ranks
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 2
    # the ranks share the held-out problems; greedy, so the start accuracy is one process's
    summary = json.load(open(out / "summary.json"))
    from eval import evaluate
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    held_out = build_prompts(tiny_task_problems()["test"][:16], tok, "auto", builtin=True)

    def alone(model):          # one process's greedy accuracy of a model on the 16 problems
        return evaluate(AutoModelForCausalLM.from_pretrained(model), tok, held_out,
                        Sampling(max_new_tokens=12, temperature=0.0, max_rows=64), progress=False)["mean@1"]
    assert summary["held_out_before"] == pytest.approx(alone(tiny_model_dir))
    assert summary["held_out_after"] == pytest.approx(alone(out / "model"))      # the saved final model
    if engine.endswith("lora"):         # the checkpoint holds the adapters (and saved modules); model/ is merged
        ckpt = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
        saved = {"model.embed_tokens.weight", "model.norm.weight"} if engine == "ddp-lora" else set()
        assert {k for k in ckpt if ".adapter." not in k} == saved and any(".adapter." in k for k in ckpt)
        assert (out / "adapter" / "adapter_config.json").exists()
    if engine.startswith("fsdp"):
        # resume from the gathered checkpoint into a sharded model, one more step
        torchrun(small_run_args(tmp_path, tiny_model_dir, steps=3, out_dir=str(out), resume=True, **extra), root)
        rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
        assert [r["step"] for r in rows] == [0, 1, 2]
        assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 3
        # the final model is a whole, ordinary Hugging Face model, and the same as that of a run of 3
        # steps never interrupted
        model = AutoModelForCausalLM.from_pretrained(out / "model")
        assert model.config.architectures == ["Qwen2ForCausalLM"]
        torchrun(small_run_args(tmp_path, tiny_model_dir, steps=3, out_dir=str(tmp_path / "straight"), **extra), root)
        straight = AutoModelForCausalLM.from_pretrained(tmp_path / "straight" / "model").state_dict()
        start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
        assert straight.keys() == model.state_dict().keys()
        for k, v in model.state_dict().items():
            assert torch.equal(v, straight[k]), k
        assert any(not torch.equal(v, start[k]) for k, v in straight.items())     # training moved the weights
        # a sharded checkpoint is resumed sharded: without --fsdp it is a clear error, not a crash
        with pytest.raises(SystemExit, match="written with --fsdp / --cpu-offload"):
            train.main(small_run_args(tmp_path, tiny_model_dir, steps=4, out_dir=str(out), resume=True,
                                      **{**extra, "fsdp": False}))




def test_cpu_offload_on_one_process_trains_like_the_plain_run(tmp_path, tiny_model_dir):
    """--cpu-offload without torchrun: a group of one process, FSDP2's CPUOffloadPolicy (unpinned on a
    CPU). The steps are the plain run's (same losses, gradients, weights); the checkpoint resumes with
    --cpu-offload and is refused without it; the final model is an ordinary Hugging Face model."""
    import torch.distributed as dist
    rows, models = [], []
    for offload in (False, True):
        out = tmp_path / f"offload-{offload}"
        train.main(small_run_args(tmp_path, tiny_model_dir, steps=2, prompts_per_step=16, group_size=8,
                                  micro_batch_size=16, cpu_offload=offload, out_dir=str(out)))
        assert not dist.is_initialized()                              # the run's group of one is closed
        rows.append([json.loads(line) for line in open(out / "metrics.jsonl")])
        models.append(AutoModelForCausalLM.from_pretrained(out / "model").state_dict())
    assert "grad_norm" in rows[0][0]
    for plain, offloaded in zip(*rows):
        for key in ("reward_mean", "informative_pairs", "loss", "grad_norm"):
            assert offloaded.get(key) == pytest.approx(plain.get(key), rel=1e-4, abs=1e-7), key
    for k, v in models[0].items():
        assert torch.allclose(models[1][k], v, atol=1e-6), k
    out = tmp_path / "offload-True"
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=3, prompts_per_step=16, group_size=8,
                              micro_batch_size=16, cpu_offload=True, resume=True, out_dir=str(out)))
    assert [json.loads(line)["step"] for line in open(out / "metrics.jsonl")] == [0, 1, 2]
    with pytest.raises(SystemExit, match="written with --fsdp / --cpu-offload"):
        train.main(small_run_args(tmp_path, tiny_model_dir, steps=4, prompts_per_step=16, group_size=8,
                                  micro_batch_size=16, resume=True, out_dir=str(out)))


def test_full_weights_leaves_every_module_resharding_as_before():
    """parallel.full_weights keeps every layer's weights gathered while sampling, then puts each module's
    resharding back as it was: the layers reshard after their forward again, and the root does not (FSDP2
    keeps the root's weights for the backward). Seen from outside: after one forward the same parameters
    are gathered (plain tensors) as after a forward of the freshly sharded model. A group of one process."""
    from torch.distributed.tensor import DTensor
    from transformers import Qwen2ForCausalLM
    from tiny_model import tiny_model_config
    parallel.init("cpu", one_rank_group=True)
    try:
        torch.manual_seed(0)
        model = parallel.shard_model(Qwen2ForCausalLM(tiny_model_config()), pin_memory=False)
        ids = torch.tensor([[5, 6, 7]])

        def gathered_after_a_forward():
            for m in model.modules():
                if parallel.is_sharded(m):
                    m.reshard()
            model(ids)
            return sorted(name for name, p in model.named_parameters() if not isinstance(p, DTensor))
        before = gathered_after_a_forward()
        assert before and "model.embed_tokens.weight" in before              # the root's stay gathered
        assert not any(name.startswith("model.layers.") for name in before)  # the layers' are freed
        with parallel.full_weights(model):
            inside = sorted(name for name, p in model.named_parameters() if not isinstance(p, DTensor))
            assert len(inside) == len(list(model.parameters()))               # every weight whole
        assert gathered_after_a_forward() == before
    finally:
        parallel.shutdown()
