"""Helpers shared by the test files: a short training run's command line, a hand-made rollout batch,
and a JSONL writer."""

import torch
from transformers import Qwen2ForCausalLM

from grpo import group_advantages, preference_pairs
from rollout import left_pad, sample
from tiny_model import tiny_model_config
from train import Batch


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


def fixed_batch(tok, seed=0, rewards=(1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0)):
    """A random tiny model and a hand-made rollout Batch: 4 prompts x G=2; the default rewards give 3
    informative pairs and one tie (prompt 1)."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_model_config())
    prompts = [tok(p)["input_ids"] for p in ["1+2=", "33+4=", "5+60=", "7+8="]]
    ro = sample(model, prompts, n=2, max_new_tokens=8, eos_token_id=1, seed=seed)
    ids, mask, _ = left_pad(prompts, 0)
    rows = torch.arange(4).repeat_interleave(2)
    r = torch.tensor(rewards)
    chosen, rejected = preference_pairs(r)
    return model, Batch(ids[rows], mask[rows], ro.tokens, ro.mask, ro.logprobs, group_advantages(r, 2),
                        ref_logp=ro.logprobs - 0.1, chosen=chosen, rejected=rejected,
                        ref_seq=(ro.logprobs * ro.mask).sum(1) + 0.2)


def write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)
