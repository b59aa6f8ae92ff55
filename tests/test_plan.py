"""plan.py (--plan): the parts by hand on a tiny config, the README's 1.5B example, bad input, and the
plan against a measured peak (CPU)."""

import importlib.util
import json
import os

import pytest
from transformers import Qwen2Config, Qwen2ForCausalLM

import plan
import train
from config import Config
from data import DataError

GiB = 2 ** 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Qwen2.5-Math-1.5B's config.json (the shapes; the weights are never needed)
QWEN_MATH_15B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
                 "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                 "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 4096,
                 "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu"}


def config_dir(tmp_path, config, name="model"):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    return str(d)


def test_parts_by_hand_on_a_tiny_config():
    config = Qwen2Config(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    s = plan.shape(config)
    assert s["N"] == sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())     # counted on the meta device
    assert (s["L"], s["h"], s["I"], s["V"], s["kv"]) == (2, 16, 32, 100, 8)
    cfg = Config(prompts_per_step=4, group_size=2, micro_batch_size=2, max_new_tokens=10, max_prompt_tokens=6)
    rows, total = plan.plan(cfg, s, device="cpu")
    parts = dict(rows)
    N = s["N"]
    assert parts["weights (N w / shards)"] == 4 * N and parts["AdamW moments (2 N w / shards)"] == 8 * N
    # the log-prob head of 2 sequences x 10 new tokens x 100 logits, fp32: logits, exp, gradient, and
    # half a copy of the backward's temporaries
    assert parts["logits and log-softmax (b T V, or b c V chunked)  <- peak phase"] == 2 * 10 * 100 * (4 + 4 + 4 + 2)
    # KV cache: 8 rows x 16 tokens x (k, v) x 2 layers x 8 x 4 bytes
    kv = [x for name, x in rows if name.startswith("KV cache")][0]
    assert kv == 8 * 16 * 2 * 2 * 8 * 4
    peak = [x for name, x in rows if name.endswith("<- peak phase")]
    # 8 rows in micro-batches of 2: from the second micro-batch on, the gradients are there too
    assert parts["gradients (N w / shards)  <- peak phase"] == 4 * N
    assert total == pytest.approx(4 * N + 8 * N + sum(peak))
    # sharding divides the state: FSDP over 4 ranks holds a quarter of weights, gradients and moments
    sharded = dict(plan.plan(Config(**{**vars(cfg), "fsdp": True}), s, device="cpu", world=4)[0])
    assert sharded["weights (N w / shards)"] == N and sharded["AdamW moments (2 N w / shards)"] == 2 * N


def test_compile_keeps_a_fixed_kv_cache_through_training():
    """--compile: the KV cache is rounded up to 256 positions and stays allocated (rollout.CompiledDecoder
    reuses it), so it counts in every phase; on CUDA the CUDA graphs' pool of decode-step logits too."""
    config = Qwen2Config(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    s = plan.shape(config)
    cfg = Config(prompts_per_step=4, group_size=2, micro_batch_size=2, max_new_tokens=10, max_prompt_tokens=6)
    eager_rows, eager = plan.plan(cfg, s, device="cpu")
    rows, total = plan.plan(Config(**{**vars(cfg), "compile": True}), s, device="cpu")
    fixed = dict(rows)["--compile: fixed KV cache, kept (R S' 2 L kv a, S' = S up to 256)"]
    assert fixed == 8 * 256 * 2 * 2 * 8 * 4                         # 8 rows x 256 positions (16 rounded up)
    assert not any(name.startswith("KV cache") for name, _ in rows)
    # while sampling, the prompts' cache is made (8 rows x 6 prompt tokens) and copied into the fixed one
    assert dict(rows)["--compile: the prompts' KV cache, copied into it (R P 2 L kv a, P prompt tokens)  "
                      "(other phase, not at the peak)"] == 8 * 6 * 2 * 2 * 8 * 4
    assert total == pytest.approx(eager + fixed)                    # the peak phase (training) is unchanged
    cuda = dict(plan.plan(Config(**{**vars(cfg), "compile": True}), s, device="cuda")[0])
    assert cuda["--compile: CUDA graphs' pool, decode-step logits (R V x 6 bytes)"] == 8 * 100 * 6


def test_the_readme_example_does_not_fit_24_gib_and_says_what_would(tmp_path, capsys):
    model = config_dir(tmp_path, QWEN_MATH_15B, "Qwen2.5-Math-1.5B")
    argv = ["--plan", "--model", model, "--group-size", "2", "--prompts-per-step", "64", "--max-new-tokens", "1024",
            "--micro-batch-size", "8", "--gpu-memory", "24"]
    out = train.main(argv)
    text = capsys.readouterr().out
    assert out["total_gib"] > 24 and "does not fit" in text and "GiB" in text
    # fp32 weights, gradients and AdamW moments alone: 1.54e9 x 16 bytes = 23.0 GiB
    assert "weights (N w / shards)" in text and "1.54B parameters" in text
    fix = [line for line in text.splitlines() if line.strip().startswith("fits with:")][0]
    # no memory flag alone fits one card: the state goes to host memory (FSDP2's CPU offload)
    assert fix.split("(")[0].split() == ["fits", "with:", "--cpu-offload", "--logprob-chunk", "256",
                                         "--gradient-checkpointing"]
    flags = fix.split("with: ", 1)[1].rsplit("  (", 1)[0].split()
    again = train.main(argv + flags)
    text = capsys.readouterr().out
    # on the GPU: no weights, gradients or moments; the whole bf16 model while sampling (1.54e9 x 2 bytes)
    assert "whole weights gathered for sampling (N x 2 bytes)" in text and "weights (N w / shards)" not in text
    assert "host memory (CPU RAM) per rank for --cpu-offload: 23.0 GiB" in text       # 1.54e9 x 16 bytes
    assert again["total_gib"] + plan.CONTEXT_GIB <= 24 and "fits:" in text
    # without host memory to spare, two 24 GiB cards hold the sharded state
    os.environ["WORLD_SIZE"] = "2"
    try:
        sharded = train.main(argv + ["--fsdp", "--logprob-chunk", "256", "--gradient-checkpointing"])
    finally:
        del os.environ["WORLD_SIZE"]
    assert sharded["total_gib"] + plan.CONTEXT_GIB <= 24 and "fits:" in capsys.readouterr().out
    # an 80 GiB card fits it on one GPU with the memory flags alone
    train.main(argv[:-1] + ["80"])
    assert "fits with: --logprob-chunk 256 --gradient-checkpointing" in capsys.readouterr().out


def test_bad_input_gets_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as e:
        train.main(["--plan", "--model", str(empty)])
    assert "without config.json" in str(e.value.code) and "\n" not in str(e.value.code)
    odd = config_dir(tmp_path, {"model_type": "no-such-architecture"}, "odd")
    with pytest.raises(SystemExit) as e:
        train.main(["--plan", "--model", odd])
    assert "unknown architecture" in str(e.value.code)
    not_causal = config_dir(tmp_path, {"model_type": "t5"}, "t5")            # no causal LM of this architecture
    with pytest.raises(DataError, match="cannot plan"):
        plan.model_shape(not_causal)
    for bad in ("0", "-3", "lots"):
        with pytest.raises(SystemExit):
            train.main(["--plan", "--gpu-memory", bad])
        err = capsys.readouterr().err
        assert "give the card's memory in GiB, a positive number" in err


def test_the_plan_is_within_25_percent_of_a_measured_peak():
    """bench/memory.py's measurement (peak RSS growth of one forward + backward, in a fresh process)
    against the plan of the same work, for a small Qwen2 with a 151,936-token vocabulary."""
    spec = importlib.util.spec_from_file_location("bench_memory", os.path.join(ROOT, "bench", "memory.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg = bench.CONFIGS["small (h 256)"]
    for chunk, ckpt in bench.OPTIONS.values():
        r = bench.measure(cfg, layers=2, seqs=4, prompt=32, completion=128, chunk=chunk, ckpt=ckpt, device="cpu")
        assert 0.75 <= r["planned_mb_per_seq"] / r["peak_mb_per_seq"] <= 1.25, (chunk, ckpt, r)
