"""Recipes that fit: for each card size and model, the flags plan.py finds for full fine-tuning, and
for LoRA (--lora-rank 16) on the cards people own.

    python bench/recipes.py            # prints docs/gpu.md's two recipe tables (config.json shapes only)
    python bench/recipes.py --lora-modules-to-save embed_tokens,input_layernorm,post_attention_layernorm,norm
                                       # and LoRA's table with those modules trained beside the adapters

Base run (the paper's setup scaled to one GPU): 2-GRPO, 64 prompts x 2 rollouts per step, 1024 new
tokens, MATH prompts of at most 512 tokens, micro-batches of 8, fp32 weights with AdamW and bf16
autocast (full fine-tuning, as the paper). For each card, plan.suggestions picks the first memory
flags that fit (--logprob-chunk, --gradient-checkpointing, smaller micro-batches), else the same with
--cpu-offload (weights, gradients and AdamW state in host memory: the host RAM column), else shards
the state over 2, 4 or 8 such cards with torchrun --fsdp. Shapes are the models' real config.json
values; no weights are loaded.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import plan  # noqa: E402
from config import Config  # noqa: E402

SHAPES = {   # config.json of each model (the fields plan.shape reads)
    "Qwen2.5-0.5B-Instruct": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "Qwen2.5-Math-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                              num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "Qwen2.5-Math-7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                            num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}
CARDS = [16, 24, 48, 80, 141]          # GiB: e.g. T4 / V100-16, RTX 4090 / A10, A6000 / L40S, A100 / H100, H200
BASE = Config(group_size=2, prompts_per_step=64, max_new_tokens=1024, max_prompt_tokens=512, micro_batch_size=8)
LORA_ROWS = ([("Qwen2.5-Math-1.5B", card) for card in (8, 12, 16, 24)]
             + [("Qwen2.5-Math-7B", card) for card in (24, 48)])
LORA_RANK = 16


def model_config(name):
    from transformers import Qwen2Config
    return Qwen2Config(**SHAPES[name])


def recipe(name, card, base=BASE):
    """(flags, ranks, planned GiB with the CUDA context, host GiB for --cpu-offload, 0 without) for the
    model on a card; flags "" when the base run fits as it is; None when nothing fits on 8 cards."""
    s = plan.shape(model_config(name))
    total = plan.plan(base, s, "cuda")[1]
    if plan.needed_gib(total) <= card:
        return "", 1, plan.needed_gib(total), 0
    fixes = plan.suggestions(base, s, card, "cuda", lora=False)
    if not fixes:
        return None
    flags, total = fixes[0]
    ranks = int(flags.split("--nproc_per_node ")[1].split()[0]) if flags.startswith("torchrun") else 1
    host = plan.host_bytes(Config(cpu_offload="--cpu-offload" in flags), s, ranks) / plan.GiB
    return flags.split("train.py ... ")[-1], ranks, plan.needed_gib(total), host


def table():
    lines = ["| card (GiB) | model | flags added to the base run | GPUs | planned peak per GPU, with context and slack (GiB) "
             "| host RAM for --cpu-offload (GiB) | full fine-tuning |", "|---|---|---|---|---|---|---|"]
    for card in CARDS:
        for name in SHAPES:
            r = recipe(name, card)
            if r is None:
                lines.append(f"| {card} | {name} | does not fit, even sharded over 8 such cards or offloaded (see "
                             f"below) | - | - | - | no: LoRA would be needed |")
                continue
            flags, ranks, peak, host = r
            lines.append(f"| {card} | {name} | {('`' + flags + '`') if flags else '(none)'} | {ranks} | {peak:.1f} | "
                         f"{f'{host:.0f}' if host else '-'} | yes |")
    return "\n".join(lines)


def lora_table(modules_to_save=""):
    """LoRA rows: the base run with --lora-rank 16 (a frozen bf16 base, fp32 adapters and their AdamW
    moments) on the cards most people own, and with --lora-modules-to-save `modules_to_save` when given
    (those modules' fp32 copies and moments too); planned, until a GPU measures them."""
    import dataclasses
    base = dataclasses.replace(BASE, lora_rank=LORA_RANK, lora_modules_to_save=modules_to_save)
    added = f"--lora-rank {LORA_RANK}" + (f" --lora-modules-to-save {modules_to_save}" if modules_to_save else "")
    lines = [f"| card (GiB) | model | flags added to the base run and `{added}` | planned peak, with "
             "context and slack (GiB) | measured |", "|---|---|---|---|---|"]
    for name, card in LORA_ROWS:
        r = recipe(name, card, base)
        if r is None or r[1] > 1:
            lines.append(f"| {card} | {name} | does not fit 95% of one such card (the plan's margin) "
                         f"| - | - |")
            continue
        flags, _, peak, _ = r
        lines.append(f"| {card} | {name} | {('`' + flags + '`') if flags else '(none)'} | {peak:.1f} | planned |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lora-modules-to-save", default="", help="also print LoRA's table with these modules "
                    "trained beside the adapters (train.py's flag of the same name)")
    args = ap.parse_args()
    print(table())
    print()
    print(lora_table())
    if args.lora_modules_to_save:
        print()
        print(lora_table(args.lora_modules_to_save))
