"""The recipes per card of docs/gpu.md: the table is what bench/recipes.py prints, and every row's flags,
run with --plan on a config of that model's shape, give the row's verdict."""

import json
import os
import shlex

import pytest
from helpers import bench_module

import plan
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
recipes = bench_module("recipes")
BASE = ["--group-size", "2", "--prompts-per-step", "64", "--max-new-tokens", "1024", "--max-prompt-tokens", "512",
        "--micro-batch-size", "8"]


def readme_rows():
    text = open(os.path.join(ROOT, "docs", "gpu.md")).read()
    table = recipes.table()
    assert table in text, "docs/gpu.md recipe table is out of date: paste the output of python bench/recipes.py"
    return [line.strip("|").split("|") for line in table.splitlines()[2:]]


@pytest.mark.parametrize("row", range(len(recipes.CARDS) * len(recipes.SHAPES)))
def test_each_recipe_gets_its_verdict(tmp_path, capsys, monkeypatch, row):
    card, name, flags, gpus, peak, host, _ = [c.strip() for c in readme_rows()[row]]
    model = tmp_path / name
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                                                   **recipes.SHAPES[name]}))
    if flags.startswith("does not fit"):          # not even the most sharing of memory flags on 8 cards
        monkeypatch.setenv("WORLD_SIZE", "8")
        train.main(["--plan", "--model", str(model), *BASE, "--fsdp", "--logprob-chunk", "256",
                    "--gradient-checkpointing", "--micro-batch-size", "1", "--rollout-batch-size", "8",
                    "--gpu-memory", card])
        assert "does not fit" in capsys.readouterr().out
        return
    monkeypatch.setenv("WORLD_SIZE", gpus)
    extra = [] if flags == "(none)" else shlex.split(flags.strip("`"))
    out = train.main(["--plan", "--model", str(model), *BASE, *extra, "--gpu-memory", card])
    printed = capsys.readouterr().out
    assert "fits:" in printed
    assert plan.needed_gib(out["total_gib"] * plan.GiB) == pytest.approx(float(peak), abs=0.06)
    if "--cpu-offload" in flags:                  # the plan names the host memory the offloaded state needs
        printed_host = float(printed.split("per rank for --cpu-offload: ")[1].split(" GiB")[0])
        assert printed_host == pytest.approx(float(host), abs=0.5)


SAVED = "embed_tokens,input_layernorm,post_attention_layernorm,norm"      # docs/gpu.md's second LoRA table


@pytest.mark.parametrize("saved", ["", SAVED])
@pytest.mark.parametrize("row", range(len(recipes.LORA_ROWS)))
def test_each_lora_recipe_gets_its_verdict(tmp_path, capsys, row, saved):
    """docs/gpu.md's LoRA rows (and those with the embedding and norms trained beside the adapters) are
    what bench/recipes.py prints; each row's flags with --lora-rank 16 fit its card under --plan, and a
    row that does not fit has no flags that would."""
    table = recipes.lora_table(saved)
    assert table in open(os.path.join(ROOT, "docs", "gpu.md")).read(), "docs/gpu.md LoRA table is out of date"
    card, name, flags, peak, _ = [c.strip() for c in table.splitlines()[2 + row].strip("|").split("|")]
    model = tmp_path / name
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                                                   **recipes.SHAPES[name]}))
    lora = ["--lora-rank", str(recipes.LORA_RANK)] + (["--lora-modules-to-save", saved] if saved else [])
    if flags.startswith("does not fit"):              # not even with every memory flag at its smallest
        out = train.main(["--plan", "--model", str(model), *BASE, *lora, "--logprob-chunk", "256",
                          "--gradient-checkpointing", "--micro-batch-size", "1", "--rollout-batch-size", "8"])
        assert plan.needed_gib(out["total_gib"] * plan.GiB) > plan.MARGIN * float(card)
        return
    out = train.main(["--plan", "--model", str(model), *BASE, *lora, *shlex.split(flags.strip("`")), "--gpu-memory",
                      card])
    assert "fits:" in capsys.readouterr().out
    assert plan.needed_gib(out["total_gib"] * plan.GiB) == pytest.approx(float(peak), abs=0.06)
