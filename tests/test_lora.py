"""lora.py: with B = 0 the adapted model is the base model; only the adapters train; merged and unmerged
forwards agree; the reference with adapters off is the base; a LoRA run trains (GRPO and DPO), resumes to
the same adapters, saves a checkpoint of adapters only, a merged model/ and PEFT's adapter/ layout."""

import json

import pytest
import torch
from helpers import interrupted_run, small_run_args
from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

import lora
import precision
import train
from config import learning_rate_of, parse_args
from tiny_model import tiny_model_config

IDS = torch.tensor([[1, 5, 7, 9, 2, 4], [3, 3, 8, 1, 6, 2]])


def adapted(rank=4, seed=0, random_b=False):
    """(base, the same weights with adapters of `rank`); random_b: B drawn at random, not zero."""
    torch.manual_seed(seed)
    base = Qwen2ForCausalLM(tiny_model_config())
    model = Qwen2ForCausalLM(tiny_model_config())
    model.load_state_dict(base.state_dict())
    lora.add_adapters(model, rank, alpha=8.0)
    if random_b:
        with torch.no_grad():
            for a in lora.adapters(model).values():
                a.B.normal_(0, 0.1)
    return base, model


def test_with_b_zero_the_adapted_model_is_the_base_model():
    base, model = adapted()
    names = lora.DEFAULT_TARGETS                                    # q, k, v, o, gate, up, down
    assert len(lora.adapters(model)) == 7 * tiny_model_config().num_hidden_layers and len(names) == 7
    assert torch.equal(model(IDS).logits, base(IDS).logits)


def test_only_the_adapters_receive_gradients():
    _, model = adapted(random_b=True)
    model(IDS).logits.logsumexp(-1).mean().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained == {n for n, p in model.named_parameters() if ".adapter." in n} and trained
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if p.grad is not None)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        4 * (m.in_features + m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)
        and hasattr(m, "adapter"))                                 # r (in + out) per adapted layer


def test_merged_and_unmerged_forwards_agree_and_adapters_off_is_the_base():
    base, model = adapted(random_b=True)
    unmerged = model(IDS).logits
    assert not torch.allclose(unmerged, base(IDS).logits, atol=1e-3)         # the adapters do something
    with precision.weights_in_compute_dtype(model):              # sampling's weights: W + (alpha / r) B A
        assert all(not a.enabled for a in lora.adapters(model).values())
        merged = model(IDS).logits
    assert torch.allclose(merged, unmerged, atol=1e-5)          # fp32 rounding apart
    with lora.adapters_off(model):
        assert torch.equal(model(IDS).logits, base(IDS).logits)
    merged_sd = lora.merged_state_dict(model.state_dict(), 4, 8.0)
    plain = Qwen2ForCausalLM(tiny_model_config())
    plain.load_state_dict(merged_sd)                            # an ordinary model of the base class
    assert torch.allclose(plain(IDS).logits, unmerged, atol=1e-5)


SAVED = ["embed_tokens", "input_layernorm", "post_attention_layernorm", "norm"]   # the embedding (= the head), norms


def test_modules_to_save_train_beside_the_adapters_and_are_their_base_values_with_adapters_off():
    """--lora-modules-to-save (PEFT's modules_to_save): the embedding and the norms train in full beside
    the adapters; the tied head is the embedding, trained once; with adapters off they read their base
    values, and after it their trained values again."""
    base, model = adapted(random_b=True)
    trained = lora.train_modules(model, SAVED)
    L = tiny_model_config().num_hidden_layers
    assert len(trained) == 1 + 2 * L + 1 and "model.embed_tokens.weight" in trained   # not lm_head: tied
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model(IDS).logits.logsumexp(-1).mean().backward()
    got_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got_grad == {n for n, p in model.named_parameters() if ".adapter." in n} | set(trained)
    with torch.no_grad():                                       # as a few steps of AdamW would move them
        for name in trained:
            model.get_parameter(name).add_(0.1)
    moved = model(IDS).logits
    with lora.adapters_off(model):
        assert torch.equal(model(IDS).logits, base(IDS).logits)            # the reference: the base model
    assert torch.equal(model(IDS).logits, moved)                          # the trained values are back
    assert torch.equal(model.model.norm.weight, base.model.norm.weight + 0.1)


def test_bad_lora_flags_are_one_line(tmp_path, tiny_model_dir):
    for over, says in [({"lora_rank": 9999}, "--lora-rank 9999 is above the narrowest adapted layer's width"),
                       ({"lora_rank": 2, "lora_targets": "nothing"}, "--lora-targets nothing match no Linear"),
                       ({"lora_rank": 2, "lora_modules_to_save": "norm,nothing"},
                        "--lora-modules-to-save nothing match no module"),
                       ({"lora_rank": 2, "lora_modules_to_save": "mlp"},
                        "--lora-modules-to-save mlp hold Linears adapted by --lora-targets"),
                       ({"lora_modules_to_save": "norm"}, "--lora-modules-to-save trains modules beside LoRA's"),
                       ({"lora_rank": 2, "lora_modules_to_save": "norm", "fsdp": True},
                        "--lora-modules-to-save does not go with --fsdp")]:
        with pytest.raises(SystemExit) as e:
            train.main(small_run_args(tmp_path, tiny_model_dir, steps=1, **over))
        assert str(e.value).startswith("error: ") and says in str(e.value) and "\n" not in str(e.value)


def test_the_learning_rate_without_lr_is_loras_default():
    assert learning_rate_of(parse_args([])) == 2e-4
    from config import LORA_LR
    assert learning_rate_of(parse_args(["--lora-rank", "8"])) == pytest.approx(2e-4 * LORA_LR)
    assert learning_rate_of(parse_args(["--lora-rank", "8", "--lr", "1e-3"])) == 1e-3


@pytest.mark.parametrize("loss", ["grpo", "dpo"])
def test_a_lora_run_trains_the_adapters_and_saves_them_small_and_merged(tmp_path, tiny_model_dir, loss):
    """GRPO (with a KL to the adapters-off reference) and DPO (against it): the adapters move, the base
    does not; the checkpoint holds the adapters alone; model/ is the merged model."""
    over = {"beta": 0.05} if loss == "grpo" else {"loss": "dpo"}
    out = tmp_path / loss
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=3, prompts_per_step=64, lora_rank=4, lr=5e-3,
                              out_dir=str(out), **over))
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert any("grad_norm" in r for r in rows) and all(r["lr"] == 5e-3 for r in rows)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["model"] and all(".adapter." in k for k in ckpt["model"]) and "base_fingerprint" in ckpt
    assert any(v.abs().sum() > 0 for k, v in ckpt["model"].items() if k.endswith(".adapter.B"))  # B moved
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    final = AutoModelForCausalLM.from_pretrained(out / "model")                   # merged, ordinary
    merged = lora.merged_state_dict({**base.state_dict(), **ckpt["model"]}, 4, 32.0)
    for k, v in final.state_dict().items():
        assert torch.allclose(v, merged[k], atol=1e-6), k
    moved = [k for k, v in final.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert moved and all(k.endswith("proj.weight") for k in moved)               # only adapted Linears


@pytest.mark.parametrize("saved", ["", ",".join(SAVED)])
def test_a_lora_run_resumes_to_the_same_adapters(tmp_path, tiny_model_dir, monkeypatch, saved):
    """Bit-identical after an interruption, with modules trained beside the adapters too (their base
    values, which the checkpoint's fingerprint reads, stay put as they train)."""
    common = dict(steps=4, prompts_per_step=64, lora_rank=4, lr=5e-3, save_every=1, beta=0.05,
                  lora_modules_to_save=saved)
    train.main(small_run_args(tmp_path, tiny_model_dir, out_dir=str(tmp_path / "straight"), **common))
    interrupted_run(small_run_args(tmp_path, tiny_model_dir, out_dir=str(tmp_path / "resumed"), **common), monkeypatch)
    train.main(small_run_args(tmp_path, tiny_model_dir, out_dir=str(tmp_path / "resumed"), resume=True, **common))
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    saved_keys = {k for k in a if ".adapter." not in k}            # the modules trained beside the adapters
    assert saved_keys == ({"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{n}.weight" for i in range(2) for n in SAVED[1:3]} if saved else set())
    assert all(not torch.equal(a[k], base[k]) for k in saved_keys)            # they trained
    rows = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert sum("grad_norm" in r for r in rows[2:]) >= 1                      # the resumed steps trained


def test_gradient_checkpointing_lets_the_gradient_reach_the_adapters(tmp_path, tiny_model_dir):
    _, model = adapted(random_b=True)
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    model.train()
    model(IDS).logits.logsumexp(-1).mean().backward()
    assert all(a.A.grad is not None and a.A.grad.abs().sum() > 0 for a in lora.adapters(model).values())


@pytest.mark.parametrize("saved", ["", ",".join(SAVED)])
def test_the_adapter_directory_loads_in_peft(tmp_path, tiny_model_dir, saved):
    """adapter/ in PEFT's layout: peft.PeftModel.from_pretrained(base, dir) gives the trained model, with
    the modules trained beside the adapters too (PEFT's modules_to_save, the tied head kept tied)."""
    peft = pytest.importorskip("peft", reason="peft is optional: pip install peft to check the adapter layout")
    out = tmp_path / "run"
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=2, lora_rank=4, lr=5e-3, out_dir=str(out),
                              lora_modules_to_save=saved))
    config = json.load(open(out / "adapter" / "adapter_config.json"))
    assert config["r"] == 4 and config["base_model_name_or_path"] == tiny_model_dir
    assert config["modules_to_save"] == (sorted(SAVED) if saved else None)
    ids = torch.tensor([[3, 4, 5, 6]])
    loaded = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    assert torch.allclose(loaded(ids).logits, merged(ids).logits, atol=1e-5)


@pytest.mark.parametrize("dtype, saved_dtype", [("bfloat16", torch.bfloat16), ("mixed", torch.float32)])
def test_a_lora_run_in_bf16_keeps_the_adapters_in_fp32(tmp_path, tiny_model_dir, dtype, saved_dtype):
    """--dtype bfloat16 (a bf16 model, no autocast: bf16 activations meet the fp32 adapters) and mixed (a
    bf16 frozen base under autocast) both train; the adapters are fp32 in either, a module trained beside
    them is in the weights' dtype (bf16, as full fine-tuning's --dtype bfloat16 keeps it) or fp32 (mixed)."""
    out = tmp_path / dtype
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=3, prompts_per_step=64, lora_rank=4, lr=5e-3,
                              dtype=dtype, lora_modules_to_save="norm", out_dir=str(out)))
    assert any("grad_norm" in json.loads(line) for line in open(out / "metrics.jsonl"))  # an update ran
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    assert {k: v.dtype for k, v in ckpt.items() if ".adapter." in k} == \
        {k: torch.float32 for k in ckpt if ".adapter." in k} and len(ckpt) > 1
    assert ckpt["model.norm.weight"].dtype == saved_dtype
    assert any(v.abs().sum() > 0 for k, v in ckpt.items() if k.endswith(".adapter.B"))     # they trained
