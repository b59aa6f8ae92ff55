"""train.py: the default run end to end, resume, gradient accumulation, bad data, real-model loading."""

import json
import os
import signal

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

import train
from train import (Config, DataError, build_prompts, build_tiny_tokenizer, load_problems, parse_args,
                   policy_update, tiny_model_config, tiny_task_problems)


def small_run_args(tmp_path, tiny_model_dir, **over):
    """A few steps of the default setup, small enough for seconds on 2 CPU cores."""
    args = {"model": tiny_model_dir, "out_dir": str(tmp_path / "run"), "steps": 4, "prompts_per_step": 8,
            "eval_problems": 16, "eval_every": 0, "save_every": 2, "progress": False, "max_new_tokens": 12}
    args.update(over)
    argv = []
    for k, v in args.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [f"--no-{k.replace('_', '-')}"] if v is False else [flag, str(v)]
    return argv


def test_tiny_tokenizer_survives_save_and_load(tmp_path):
    tok = build_tiny_tokenizer()
    Qwen2ForCausalLM(tiny_model_config()).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["12+34=", "12+34=\\boxed{46}", "99+99=\\boxed{198}}}"]:
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
        assert loaded.decode(loaded(text)["input_ids"]) == text
    assert (loaded.eos_token_id, loaded.pad_token_id) == (1, 0)


def test_builtin_task_split_is_fixed_and_disjoint():
    a, b = tiny_task_problems(), tiny_task_problems()
    assert a == b
    assert (len(a["test"]), len(a["val"]), len(a["train"])) == (500, 200, 9300)
    seen = [p["problem"] for split in a.values() for p in split]
    assert len(set(seen)) == 10_000
    assert a["test"][0]["gold"] == str(sum(map(int, a["test"][0]["problem"][:-1].split("+"))))


def test_cli_defaults_are_the_config_defaults():
    assert parse_args([]) == Config()
    assert parse_args(["--group-size", "4", "--no-skip-ties", "--lr", "3e-5"]) == Config(group_size=4, skip_ties=False, lr=3e-5)
    with pytest.raises(SystemExit):
        parse_args(["--loss", "dpo", "--group-size", "4"])


def test_smoke_few_steps_write_metrics_checkpoint_and_model(tmp_path, tiny_model_dir):
    summary = train.main(small_run_args(tmp_path, tiny_model_dir))
    run = tmp_path / "run"
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for key in ("reward_mean", "accuracy", "adv_mean", "adv_std", "tie_frac", "response_len", "rollout_s",
                "train_s", "tokens_per_s", "lr", "rollouts"):
        assert key in rows[0]
    for key in ("loss", "clip_frac", "ratio_mean", "kl", "grad_norm"):            # rows with an update
        assert all(key in r for r in rows if "grad_norm" in r)
    assert rows[-1]["rollouts"] == 4 * 8 * 2 == summary["rollouts"]
    assert json.load(open(run / "config.json"))["group_size"] == 2
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 4
    assert not os.path.exists(run / "checkpoint.pt.tmp")
    AutoModelForCausalLM.from_pretrained(run / "model")          # the final model loads like any other
    assert 0.0 <= summary["held_out_before"] <= 1.0 and 0.0 <= summary["held_out_after"] <= 1.0


def test_dpo_loss_and_kl_paths_run(tmp_path, tiny_model_dir):
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=3, loss="dpo", prompts_per_step=16,
                              out_dir=str(tmp_path / "dpo")))
    rows = [json.loads(line) for line in open(tmp_path / "dpo" / "metrics.jsonl")]
    updated = [r for r in rows if "loss" in r]
    assert updated and all("pair_accuracy" in r and r["loss"] > 0 for r in updated)   # -log sigmoid > 0
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=3, beta=0.05, num_iterations=2, lr=1e-3,
                              prompts_per_step=16, out_dir=str(tmp_path / "kl")))
    rows = [json.loads(line) for line in open(tmp_path / "kl" / "metrics.jsonl")]
    updated = [r for r in rows if "loss" in r]
    assert updated and all(r["kl"] >= 0 for r in updated)
    # the stats are the second update's: after one step the policy moved, so ratio != 1 and KL > 0
    assert any(r["ratio_mean"] != 1.0 and r["kl"] > 0 for r in updated)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_model_dir, monkeypatch):
    common = dict(steps=5, schedule="cosine", warmup_steps=1, lr=1e-3)
    train.main(small_run_args(tmp_path, tiny_model_dir, out_dir=str(tmp_path / "straight"), **common))

    real_step = train.train_step

    def ctrl_c_during_step_2(step, *a, **k):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)         # Ctrl-C arrives in the middle of a step
        return real_step(step, *a, **k)
    monkeypatch.setattr(train, "train_step", ctrl_c_during_step_2)
    with pytest.raises(SystemExit) as stopped:
        train.main(small_run_args(tmp_path, tiny_model_dir, out_dir=str(tmp_path / "resumed"), **common))
    assert stopped.value.code == 130
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3                            # the step in flight finished, then it saved
    monkeypatch.setattr(train, "train_step", real_step)
    train.main(small_run_args(tmp_path, tiny_model_dir, out_dir=str(tmp_path / "resumed"), resume=True, **common))

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 5
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]


def fixed_batch(tok, seed=0):
    """A hand-made rollout batch: 4 prompts x G=2, with rewards that give 3 informative pairs."""
    from rollout import left_pad, sample
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_model_config())
    prompts = [tok(p)["input_ids"] for p in ["1+2=", "33+4=", "5+60=", "7+8="]]
    ro = sample(model, prompts, n=2, max_new_tokens=8, eos_token_id=1, seed=seed)
    ids, mask, _ = left_pad(prompts, 0)
    rows = torch.arange(4).repeat_interleave(2)
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    from grpo import group_advantages, preference_pairs
    chosen, rejected = preference_pairs(r)
    return model, {"prompt_ids": ids[rows], "prompt_mask": mask[rows], "tokens": ro.tokens, "mask": ro.mask,
                   "old_logp": ro.logprobs, "advantages": group_advantages(r, 2), "ref_logp": ro.logprobs - 0.1,
                   "chosen": chosen, "rejected": rejected, "ref_seq": (ro.logprobs * ro.mask).sum(1) + 0.2}


@pytest.mark.parametrize("loss,aggregation,beta", [("grpo", "seq_mean", 0.0), ("grpo", "token_mean", 0.0),
                                                   ("grpo", "seq_sum", 0.0), ("grpo", "token_mean", 0.1),
                                                   ("dpo", "seq_mean", 0.0)])
def test_two_micro_batches_of_4_give_the_gradient_of_one_batch_of_8(loss, aggregation, beta):
    tok = build_tiny_tokenizer()
    grads = []
    for mb in (8, 4, 2):
        model, batch = fixed_batch(tok)
        cfg = Config(loss=loss, aggregation=aggregation, beta=beta, micro_batch_size=mb, grad_clip=0.0,
                     max_new_tokens=8, skip_ties=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)           # lr 0: p.grad stays for inspection
        stats = policy_update(model, opt, batch, cfg, torch.device("cpu"))
        assert stats is not None
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[1], grads[0], atol=1e-6, rtol=1e-4)
    assert torch.allclose(grads[2], grads[0], atol=1e-6, rtol=1e-4)


def test_skipping_ties_does_not_change_the_gradient():
    tok = build_tiny_tokenizer()
    grads = []
    for skip in (False, True):
        model, batch = fixed_batch(tok)
        cfg = Config(aggregation="token_mean", micro_batch_size=3, grad_clip=0.0, max_new_tokens=8, skip_ties=skip)
        policy_update(model, torch.optim.SGD(model.parameters(), lr=0.0), batch, cfg, torch.device("cpu"))
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
    # zero-advantage rows add nothing to the sum; only the normalization (tokens) differs
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cos > 0.999999


# --- data -----------------------------------------------------------------------------------------
def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_load_math_and_gsm8k_rows(tmp_path):
    math = write(tmp_path / "math.jsonl", [json.dumps({"problem": "1+1?", "answer": "\\frac{1}{2}"}), "",
                                           json.dumps({"problem": "2+2?", "answer": 4})])
    assert load_problems(math) == [{"problem": "1+1?", "gold": "\\frac{1}{2}"}, {"problem": "2+2?", "gold": "4"}]
    gsm = write(tmp_path / "gsm.jsonl", [json.dumps({"question": "How many?", "answer": "so 1,080\n#### 1,080"})])
    assert load_problems(gsm) == [{"problem": "How many?", "gold": "1080"}]
    custom = write(tmp_path / "c.jsonl", [json.dumps({"q": "x?", "a": "3"})])
    assert load_problems(custom, "q", "a") == [{"problem": "x?", "gold": "3"}]


@pytest.mark.parametrize("lines,message", [
    (['{"problem": "a", "answer": "1"}', '{"problem": "b", "answer": '], r"bad\.jsonl:2: malformed JSON"),
    (['{"problem": "a", "answer": "1"}', '{"problem": "b"}'], r"bad\.jsonl:2: missing field 'answer'"),
    (['{"text": "a", "answer": "1"}'], r"bad\.jsonl:1: missing field 'question'"),
    (['["a", "b"]'], r"bad\.jsonl:1: expected a JSON object"),
    (['{"problem": "a", "answer": ""}'], r"bad\.jsonl:1: field 'answer' is empty"),
    ([""], r"bad\.jsonl: no problems"),
])
def test_bad_data_names_file_and_line(tmp_path, lines, message):
    path = write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=message):
        load_problems(path)


def test_bad_data_fails_before_any_training(tmp_path, tiny_model_dir, capsys):
    with pytest.raises(DataError, match="no such file"):
        load_problems(str(tmp_path / "missing.jsonl"))
    path = write(tmp_path / "bad.jsonl", ['{"problem": "a", "answer": "1"}', "{oops"])
    with pytest.raises(SystemExit) as e:
        train.main(small_run_args(tmp_path, tiny_model_dir, data=path))
    assert "bad.jsonl:2: malformed JSON" in str(e.value.code)
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


def test_prompt_templates():
    tok = build_tiny_tokenizer()
    probs = [{"problem": "1+2=", "gold": "3"}]
    assert build_prompts(probs, tok, "auto", builtin=True)[0]["prompt_ids"] == tok("1+2=")["input_ids"]
    plain = build_prompts(probs, tok, "plain")[0]["prompt_ids"]
    assert len(plain) > len(tok("1+2=")["input_ids"])
    tok.chat_template = "{% for m in messages %}<bos>{{ m['content'] }}<eos>{% endfor %}{% if add_generation_prompt %}={% endif %}"
    chat = build_prompts(probs, tok, "auto")[0]["prompt_ids"]
    assert chat[0] == tok.bos_token_id and chat[-1] == tok("=")["input_ids"][0]
    assert build_prompts(probs, tok, "raw", max_tokens=2) == []          # too long: left out


def test_real_model_directory_and_jsonl_data(tmp_path, tiny_model_dir):
    """--model DIR --data FILE: the path a Hugging Face model and MATH/GSM8K files take."""
    rows = [json.dumps({"question": f"{a}+{b}=", "answer": f"work\n#### {a + b}"}) for a in range(5) for b in range(4)]
    data = write(tmp_path / "train.jsonl", rows)
    held = write(tmp_path / "test.jsonl", rows[:6])
    summary = train.main(small_run_args(tmp_path, tiny_model_dir, data=data, eval_data=held, template="raw",
                                        steps=2, out_dir=str(tmp_path / "real")))
    assert summary["rollouts"] == 2 * 8 * 2 and summary["held_out_after"] is not None


# --- data parallel (torchrun: DDP, or FSDP2 with --fsdp), on CPU with the gloo backend -----------
GRPO_KEYS = ("prompt_ids", "prompt_mask", "tokens", "mask", "old_logp", "advantages", "ref_logp")


def _data_parallel_worker(rank, world, init_file, out_dir, engine, cfg_kwargs):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from datetime import timedelta
    torch.set_num_threads(1)
    # a timeout turns a stuck collective into an error (the test fails) instead of a hang
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    model, batch = fixed_batch(build_tiny_tokenizer())
    rows = slice(4 * rank, 4 * rank + 4)              # rank r holds prompts 2r and 2r+1: whole groups
    local = {k: batch[k][rows] for k in GRPO_KEYS}
    wrapped = DDP(model) if engine == "ddp" else train.shard_model(model, torch.bfloat16 if engine == "fsdp-bf16"
                                                                   else None)
    if engine != "ddp":                                # each rank holds half of every weight
        from torch.distributed.tensor import DTensor
        assert all(isinstance(p, DTensor) and p.to_local().numel() <= (p.numel() + 1) // 2
                   for p in wrapped.parameters())
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
    computed_in = []                                   # dtype of the gathered weights a layer computes with
    model.model.layers[0].mlp.register_forward_pre_hook(lambda m, a: computed_in.append(m.up_proj.weight.dtype))
    policy_update(wrapped, opt, local, Config(**cfg_kwargs), torch.device("cpu"))
    assert set(computed_in) == {torch.bfloat16 if engine == "fsdp-bf16" else torch.float32}
    weights, _ = train.full_state_dicts(wrapped, None)     # FSDP: gathered from both ranks' shards
    if rank == 0 or engine == "ddp":
        torch.save(weights, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()          # both ranks are done; the process group goes with the process (no teardown race)


@pytest.mark.parametrize("engine,aggregation,grad_clip", [("ddp", "seq_mean", 0.0), ("ddp", "token_mean", 0.0),
                                                          ("fsdp", "seq_mean", 0.0), ("fsdp", "token_mean", 0.05),
                                                          ("fsdp-bf16", "seq_mean", 0.0)])
def test_data_parallel_step_equals_one_process_on_the_union_of_the_batches(tmp_path, engine, aggregation,
                                                                           grad_clip):
    import torch.multiprocessing as mp
    # micro-batches of 2 with ties skipped: rank 0 keeps 2 rows (one chunk), rank 1 keeps 4 (two
    # chunks), so the padding with zero-weight backward passes is exercised too; grad_clip 0.05 is
    # below the gradient's norm, so clipping (a norm over both ranks' shards under FSDP) changes the step
    cfg_kwargs = dict(aggregation=aggregation, micro_batch_size=2, grad_clip=grad_clip, max_new_tokens=8, beta=0.0)
    mp.start_processes(_data_parallel_worker, args=(2, str(tmp_path / "init"), str(tmp_path), engine, cfg_kwargs),
                       nprocs=2, start_method="spawn")
    model, batch = fixed_batch(build_tiny_tokenizer())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    policy_update(model, opt, {k: batch[k] for k in GRPO_KEYS}, Config(**cfg_kwargs), torch.device("cpu"))
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


def torchrun(argv, root):
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_torchrun_two_processes_end_to_end(tmp_path, tiny_model_dir, engine):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / engine
    # FSDP with the memory options and a KL reference too: each changes how the sharded model is run
    extra = dict(fsdp=True, gradient_checkpointing=True, logprob_chunk=4, beta=0.04) if engine == "fsdp" else {}
    torchrun(small_run_args(tmp_path, tiny_model_dir, steps=2, out_dir=str(out), **extra), root)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1]                    # rank 0 alone logs
    assert rows[-1]["rollouts"] == 2 * 8 * 2                      # 8 prompts per step over both ranks
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 2
    # the ranks share the held-out problems; greedy, so the start accuracy is one process's
    summary = json.load(open(out / "summary.json"))
    from eval import evaluate
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    held_out = build_prompts(tiny_task_problems()["test"][:16], tok, "auto", builtin=True)
    alone = evaluate(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok, held_out, max_new_tokens=12,
                     progress=False)["mean@1"]
    assert summary["held_out_before"] == pytest.approx(alone) and 0 <= summary["held_out_after"] <= 1
    if engine == "fsdp":
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
        with pytest.raises(SystemExit, match="written with --fsdp"):
            train.main(small_run_args(tmp_path, tiny_model_dir, steps=4, out_dir=str(out), resume=True, beta=0.04))


# --- the one-GPU recipe of the README, on a tiny model of the same architecture -------------------
def readme_command(script):
    """The README's `python <script> ...` command of the one-GPU recipe, as an argument list."""
    import shlex
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "README.md")).read()
    section = text.split("## Reproducing on one GPU", 1)[1].split("\n## ", 1)[0]
    joined = section.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if ln.strip().startswith(f"python {script}"))
    return shlex.split(line)[2:]


def override(argv, **new):
    """Replace the values of some flags (paths, sizes) and keep every other flag as written."""
    out, i = [], 0
    flags = {"--" + k.replace("_", "-"): str(v) for k, v in new.items()}
    while i < len(argv):
        a = argv[i]
        if a in flags:
            out += [a, flags.pop(a)]
            i += 2
            continue
        out.append(a)
        i += 1
    assert not flags, f"the README recipe has no {list(flags)}"
    return out


def test_one_gpu_recipe_from_the_readme_runs_on_a_tiny_qwen2(tmp_path):
    import eval as evaluation
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config
    chars = ["<pad>", "<|im_end|>", "<|im_start|>", "<unk>"] + [chr(c) for c in range(32, 127)] + ["\n"]
    backend = Tokenizer(models.BPE({c: i for i, c in enumerate(chars)}, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<|im_end|>",
                                  unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(chars), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         eos_token_id=1, pad_token_id=0))
    model_dir = tmp_path / "tiny-qwen2"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rows = [json.dumps({"problem": f"What is {a} + {a}?", "answer": str(2 * a), "level": "Level 1"})
            for a in range(6)]
    data = write(tmp_path / "math_train.jsonl", rows)
    held = write(tmp_path / "math500_test.jsonl", rows[:3])
    argv = override(readme_command("train.py"), model=model_dir, data=data, eval_data=held, out_dir=tmp_path / "run",
                    prompts_per_step=4, steps=3, max_new_tokens=6, micro_batch_size=3, rollout_batch_size=4,
                    logprob_chunk=4, eval_every=2, eval_problems=3, eval_samples=2, save_every=2)
    summary = train.main(argv + ["--no-progress"])
    assert summary["rollouts"] == 3 * 4 * 2
    cfg = json.load(open(tmp_path / "run" / "config.json"))
    assert cfg["gradient_checkpointing"] and cfg["eps_high"] == 0.28 and cfg["template"] == "auto"
    ev = override(readme_command("eval.py"), model=tmp_path / "run" / "model", data=held, samples=8,
                  max_new_tokens=6)
    ev = [a for a in ev if a not in ("32",)]                          # --pass-k 1 8 32 -> 1 8 with 8 samples
    res = evaluation.main(ev + ["--out", str(tmp_path / "eval.jsonl")])
    assert res["problems"] == 3 and "pass@8" in res and "mean@8" in res


def flags_table():
    """The README's table of flags, as train.Config defines them."""
    import dataclasses
    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Config):
        default = "(empty)" if f.default == "" else f.default
        helptext = f.metadata.get("help", "").replace("|", "\\|")
        rows.append(f"| `--{f.name.replace('_', '-')}` | `{default}` | {helptext} |")
    return "\n".join(rows)


def test_readme_documents_every_flag_and_its_default():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(root, "README.md")).read()
    assert flags_table() in readme, "README flag table is out of date: paste tests/test_train.py::flags_table()"
