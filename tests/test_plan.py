"""plan.py (--plan): the parts by hand on a tiny config, docs/gpu.md's 1.5B example, bad input, and the
plan against a measured peak (CPU)."""

import json
import os

import pytest
from helpers import bench_module
from transformers import Qwen2Config, Qwen2ForCausalLM

import plan
import train
from config import Config
from data import DataError

GiB = 2 ** 30
# Qwen2.5-Math-1.5B's config.json (the shapes; the weights are never needed)
QWEN_MATH_15B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
                 "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                 "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 4096,
                 "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu"}


TRANSIENT = ("the largest transient of prefill, expanding the prompts' cache, a decode step, LoRA's merge "
             "(R V (a + 8), ...)")


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
    phases, total = plan.plan(cfg, s, device="cpu")
    assert list(phases) == ["kept", "sampling", "training micro-batch", "optimizer step", "held-out evaluation"]
    N = s["N"]
    kept, sampling, train_mb, step, evaluation = (dict(phases[p]) for p in phases)
    assert kept == {"weights (N w / shards)": 4 * N, "AdamW moments (2 N w / shards)": 8 * N}
    # the log-prob head of 2 sequences x 10 new tokens x 100 logits, fp32: logits, exp, gradient, and
    # half a copy of the backward's temporaries; 8 rows in micro-batches of 2: from the second micro-batch
    # on the gradients are there too
    assert train_mb["logits and log-softmax (b T V, or b c V chunked)"] == 2 * 10 * 100 * (4 + 4 + 4 + 2)
    assert train_mb["gradients (N w / shards)"] == 4 * N
    # sampling 8 rows (4 prompts x 2) of 6 + 10 tokens: the KV cache, 8 x 16 tokens x (k, v) x 2 layers x 8
    # x 4 bytes = 16,384; and the largest transient: the prefill (the 4 prompts' cache, 8,192, one layer's
    # activations over 4 x 6 prompt tokens, their logits), expanding the prompts' cache into the rows'
    # (8,192 + 16,384 + 4 x 100 x 4 + 8 x 100 x 4 = 29,376), a decode step (16,384 + 8 x 100 x (4 + 8))
    assert sampling["KV cache of a rollout micro-batch (R S 2 L kv a)"] == 8 * 16 * 2 * 2 * 8 * 4
    prefill = 4 * 16 * 128 + 4 * 6 * (3 * 32 + 4 * 16 + 2 * 8) * 4 + 4 * 100 * 4
    expand = 4 * 16 * 128 + 8 * 16 * 128 + 4 * 100 * 4 + 8 * 100 * 4
    decode = 8 * 16 * 128 + 8 * 100 * 12
    assert sampling[TRANSIENT] == max(prefill, expand, decode) - 8 * 16 * 128 == 29376 - 16384
    # the optimizer step: the gradients and, on a CPU (AdamW tensor by tensor), two temporaries of the
    # largest tensor (the 100 x 16 embedding); on CUDA the fused step makes none
    temporaries = "AdamW step temporaries (fused on CUDA: none; a CPU: 2 N_max x 4 / shards)"
    assert step == {"gradients (N w / shards)": 4 * N, temporaries: 2 * 1600 * 4}
    assert dict(plan.plan(cfg, s, device="cuda")[0]["optimizer step"])[temporaries] == 0
    # held-out evaluation: as many rows, one sample per prompt, so 8 prompts are prefilled: the prefill is
    # its largest transient
    prefill = 8 * 16 * 128 + 8 * 6 * (3 * 32 + 4 * 16 + 2 * 8) * 4 + 8 * 100 * 4
    assert evaluation[TRANSIENT] == prefill - 8 * 16 * 128
    assert total == pytest.approx(12 * N + max(sum(p.values()) for p in (sampling, train_mb, step, evaluation)))
    # sharding divides the state: FSDP over 4 ranks holds a quarter of weights, gradients and moments
    sharded = dict(plan.plan(Config(**{**vars(cfg), "fsdp": True}), s, device="cpu", world=4)[0]["kept"])
    assert sharded["weights (N w / shards)"] == N and sharded["AdamW moments (2 N w / shards)"] == 2 * N


def test_merging_lora_into_a_bf16_base_is_a_transient_of_decoding():
    # a wide MLP: the largest adapted Linear is an MLP weight of 32 x 1024
    config = Qwen2Config(vocab_size=100, hidden_size=32, intermediate_size=1024, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    s = plan.shape(config)
    cfg = Config(prompts_per_step=4, group_size=2, micro_batch_size=2, max_new_tokens=10, max_prompt_tokens=6,
                 lora_rank=2)
    # on CUDA the base is bf16 (a = 2): merging that weight holds it in fp32 and the fp32 sum
    # W + (alpha / r) B A beside the bf16 copies, 32 x 1024 x (4 + 4) = 262,144 bytes, more than the
    # prefill's 4 x 6 x (3 x 1024 + 4 x 32 + 2 x 16) x 2 + ... ~ 155,000; the transient is counted above
    # the KV cache of 8 rows x 16 tokens x (k, v) x 2 layers x 16 x 2 bytes = 16,384
    sampling = dict(plan.plan(cfg, s, device="cuda")[0]["sampling"])
    assert sampling[TRANSIENT] == 32 * 1024 * (4 + 4) - 8 * 16 * 2 * 2 * 16 * 2
    # an fp32 base (a CPU) is summed by one addmm into its merged copy: decoding's transient as without LoRA
    fp32 = dict(plan.plan(cfg, s, device="cpu")[0]["sampling"])
    full = dict(plan.plan(Config(**{**vars(cfg), "lora_rank": 0}), s, device="cpu")[0]["sampling"])
    assert fp32[TRANSIENT] == full[TRANSIENT]


def test_compile_keeps_a_fixed_kv_cache_through_training():
    """--compile: the KV cache is rounded up to 256 positions and stays allocated (compiled.CompiledDecoder
    reuses it), so it is kept through the run; on CUDA the CUDA graphs' pool of decode-step logits too."""
    config = Qwen2Config(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    s = plan.shape(config)
    cfg = Config(prompts_per_step=4, group_size=2, micro_batch_size=2, max_new_tokens=10, max_prompt_tokens=6)
    eager_phases, eager = plan.plan(cfg, s, device="cpu")
    phases, total = plan.plan(Config(**{**vars(cfg), "compile": True}), s, device="cpu")
    fixed = dict(phases["kept"])["--compile: fixed KV cache, kept (R S' 2 L kv a, S' = S up to 256)"]
    assert fixed == 8 * 256 * 2 * 2 * 8 * 4                         # 8 rows x 256 positions (16 rounded up)
    assert not any(name.startswith("KV cache") for name, _ in phases["sampling"])
    # while sampling, the prompts' cache is made (4 prompts x 6 prompt tokens) and copied into the fixed one:
    # the largest transient is the prefill (that cache, one layer's activations, the prompts' logits)
    assert [x for _, x in phases["sampling"]] == [4 * 6 * 128 + 4 * 6 * (3 * 32 + 4 * 16 + 2 * 8) * 4 + 4 * 100 * 4]
    assert total == pytest.approx(eager + fixed)                    # the peak phase (training) is unchanged
    cuda = dict(plan.plan(Config(**{**vars(cfg), "compile": True}), s, device="cuda")[0]["kept"])
    assert cuda["--compile: CUDA graphs' pool, decode-step logits (R V x 6 bytes)"] == 8 * 100 * 6


def test_every_suggestion_passes_the_config_check_and_compile_is_never_offloaded(tmp_path):
    """Suggestions are flag sets the run accepts: each goes through config.check_config; with --compile,
    --cpu-offload (which the run refuses with it) is never proposed."""
    from config import check_config, parse_args
    from transformers import Qwen2Config as Q
    s = plan.shape(Q(**{k: v for k, v in QWEN_MATH_15B.items() if k not in ("architectures", "model_type")}))
    seen = 0
    for compile_ in (False, True):
        for card in (16, 24, 48, 80):
            for world in (1, 2):
                cfg = parse_args(["--model", "m", "--group-size", "2", "--prompts-per-step", "64", "--max-new-tokens",
                                  "1024", "--micro-batch-size", "8"] + ["--compile"] * compile_)
                for flags, _ in plan.suggestions(cfg, s, card, "cuda", world):
                    seen += 1
                    ranks = int(flags.split("--nproc_per_node ")[1].split()[0]) if flags.startswith("torchrun") else world
                    argv = flags.split("train.py ... ")[-1].split()
                    candidate = parse_args(["--model", "m", "--group-size", "2", "--prompts-per-step", "64",
                                            "--max-new-tokens", "1024", "--micro-batch-size", "8"]
                                           + ["--compile"] * compile_ + argv)
                    check_config(candidate, ranks)                  # raises SystemExit if the run would refuse
                    assert not (compile_ and "--cpu-offload" in argv), flags
    assert seen >= 8


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
    # no memory flag alone fits one card: LoRA does (a frozen bf16 base, small adapters), before offloading
    assert fix.split("(")[0].split()[:6] == ["fits", "with:", "--lora-rank", "16", "--logprob-chunk", "256"]
    lora = train.main(argv + fix.split("with: ", 1)[1].rsplit("  (", 1)[0].split())
    text = capsys.readouterr().out
    assert "frozen base model (N a / shards)" in text and "fits:" in text and plan.needed_gib(lora["total_gib"] * GiB) <= 24
    # full fine-tuning on one card: the state goes to host memory (FSDP2's CPU offload)
    flags = ["--cpu-offload", "--logprob-chunk", "256", "--gradient-checkpointing"]
    again = train.main(argv + flags)
    text = capsys.readouterr().out
    # on the GPU: no weights, gradients or moments; the whole bf16 model while sampling (1.54e9 x 2 bytes)
    assert "whole weights gathered for decoding (N x 2 bytes)" in text and "weights (N w / shards)" not in text
    assert "host memory (CPU RAM) per rank for --cpu-offload: 23.0 GiB" in text       # 1.54e9 x 16 bytes
    assert plan.needed_gib(again["total_gib"] * GiB) <= 24 and "fits:" in text
    # without host memory to spare, two 24 GiB cards hold the sharded state
    os.environ["WORLD_SIZE"] = "2"
    try:
        sharded = train.main(argv + ["--fsdp", "--logprob-chunk", "256", "--gradient-checkpointing",
                                     "--micro-batch-size", "2", "--rollout-batch-size", "32"])
    finally:
        del os.environ["WORLD_SIZE"]
    assert plan.needed_gib(sharded["total_gib"] * GiB) <= 24 and "fits:" in capsys.readouterr().out
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
    bench = bench_module("memory")
    cfg = bench.CONFIGS["small (h 256)"]
    for option in bench.OPTIONS:                                # LoRA's frozen base among them
        r = bench.measure(cfg, layers=2, seqs=4, prompt=32, completion=128, option=option, device="cpu")
        assert 0.75 <= r["planned_mb_per_seq"] / r["peak_mb_per_seq"] <= 1.25, (option, r)


def test_modules_trained_beside_lora_adapters_are_counted_once_with_their_moments():
    """--lora-modules-to-save: each parameter trained beside the adapters holds a trained copy and two
    AdamW moments, in fp32 (12 bytes; under mixed precision too, where the frozen base is bf16) or in
    bf16 under --dtype bfloat16 (6 bytes); a tied head named beside the embedding is the same parameter,
    counted once."""
    config = Qwen2Config(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    s = plan.shape(config)
    cfg = Config(prompts_per_step=4, group_size=2, micro_batch_size=2, max_new_tokens=10, max_prompt_tokens=6,
                 lora_rank=2, lora_modules_to_save="embed_tokens,lm_head,input_layernorm,norm")
    N_s = 100 * 16 + 2 * 16 + 16                 # the embedding (= the head), 2 layers' input norms, the final norm
    assert plan.saved_sizes(cfg, s) == (N_s, 100 * 16)
    part = "modules trained beside the adapters: trained copy, AdamW moments (N_s x 3 w)"
    for dtype, bytes_each in [("mixed", 12), ("float32", 12), ("bfloat16", 6)]:
        with_dtype = Config(**{**vars(cfg), "dtype": dtype})
        assert dict(plan.plan(with_dtype, s, device="cuda")[0]["kept"])[part] == N_s * bytes_each, dtype
    alone = Config(**{**vars(cfg), "lora_modules_to_save": ""})
    assert plan.plan(cfg, s, device="cuda")[1] > plan.plan(alone, s, device="cuda")[1] + N_s * 12
    assert plan.saved_sizes(Config(**{**vars(cfg), "lora_rank": 0}), s) == (0, 0)     # full fine-tuning: none
