"""Helpers shared by the test files: a short training run's command line, a hand-made rollout batch,
a JSONL writer, a tiny chat model on disk, tiny benchmark files in their original layouts, and bench/
scripts loaded as modules."""

import importlib.util
import json
import os

import torch
from transformers import Qwen2ForCausalLM

from config import Config
from grpo import group_advantages
from rollout import Sampling, sample, take_rows
from tiny_model import tiny_model_config
from update import make_batch


# torch.compile's CPU code generation follows a forced ATEN_CPU_CAPABILITY (how the suite stands in for
# other CPUs) and breaks under it: "default" writes C++ that does not compile, "avx2" returns wrong
# logits on an AVX-512 CPU (torch 2.13). Its tests skip then; the traced path runs under every setting.
FORCED_ISA = bool(os.environ.get("ATEN_CPU_CAPABILITY"))


def bench_module(name):
    """bench/<name>.py loaded as a module (bench/ is not a package, and its scripts are not on sys.path)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", name + ".py")
    spec = importlib.util.spec_from_file_location("bench_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def fixed_batch(tok, seed=0, rewards=(1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0), loss="grpo", rank=None):
    """A random tiny model and the Batch of hand-scored rollouts (train.make_batch): 4 prompts x G=2; the
    default rewards give 3 informative pairs and one tie (prompt 1). A reference is made up: pi_ref =
    the sampler's log-probs - 0.1, DPO's reference sequence log-probs + 0.2. rank 0 / 1: that rank's
    half of the rollouts under torchrun (prompts 0-1 / 2-3, whole groups)."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_model_config())
    problems = [{"prompt_ids": tok(p)["input_ids"]} for p in ["1+2=", "33+4=", "5+60=", "7+8="]]
    ro = sample(model, [p["prompt_ids"] for p in problems], n=2, sampling=Sampling(max_new_tokens=8),
                eos_token_id=1, seed=seed)
    r = torch.tensor(rewards)
    if rank is not None:
        problems, ro, r = problems[2 * rank:2 * rank + 2], take_rows(ro, list(range(4 * rank, 4 * rank + 4))), \
            r[4 * rank:4 * rank + 4]
    batch = make_batch(problems, ro, r, group_advantages(r, 2), Config(loss=loss), pad_token_id=0)
    batch.ref_logp = batch.sampler_logp - 0.1
    batch.ref_seq = (batch.sampler_logp * batch.mask).sum(1) + 0.2
    return model, batch


def flat_gradient(model):
    """Every parameter's gradient, flattened into one vector (zeros where a parameter has none)."""
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
                      for p in model.parameters()])


def interrupted_run(argv, monkeypatch, step=1):
    """train.main(argv) stopped by a Ctrl-C that arrives during `step`: it finishes that step, saves a
    checkpoint at step + 1 and exits (SystemExit 130)."""
    import os
    import signal

    import pytest

    import train
    real_step = train.train_step

    def ctrl_c(at, *a, **k):
        if at == step:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(at, *a, **k)
    monkeypatch.setattr(train, "train_step", ctrl_c)
    with pytest.raises(SystemExit) as stopped:
        train.main(argv)
    monkeypatch.setattr(train, "train_step", real_step)
    assert stopped.value.code == 130
    return argv


def write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def tiny_chat_model(path):
    """A tiny random Qwen2 with a character tokenizer and a Qwen-style chat template (<|im_end|> ends a
    turn), saved to `path` as a Hugging Face model directory: the shape of a real chat model, offline."""
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
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def benchmark_files(d):
    """Three problems per benchmark, each file in its own original layout."""
    d.mkdir()
    write_jsonl(d / "math500_test.jsonl", [json.dumps({"problem": f"What is {a}+{a}?", "answer": str(2 * a),
                                                       "unique_id": f"test/x/{a}.json"}) for a in range(3)])
    write_jsonl(d / "amc23_test.jsonl", [json.dumps({"id": a, "question": f"{a}+1?", "answer": float(a + 1)})
                                         for a in range(3)])                         # AMC: answers as floats
    write_jsonl(d / "minerva_math_test.jsonl", [json.dumps({"problem": f"{a}*2?", "solution": f"So \\boxed{{{2 * a}}}.",
                                                            "idx": a}) for a in range(3)])   # the answer is in the box
    write_jsonl(d / "aime25_test.jsonl", [json.dumps({"id": str(a), "question": f"{a}?", "answer": str(a)})
                                          for a in range(3)])
    write_jsonl(d / "olympiadbench_test.jsonl", [json.dumps({"id": 2790 + a, "question": f"{a}?",
                                                             "final_answer": [f"${a}$", f"${a + 1}$"]})
                                                 for a in range(3)])                 # a list of answers, in $...$
    return d


def table_cases(table):
    """{category: [(prediction, gold, want), ...]} -> [(category, prediction, gold, want), ...], the
    rows of an answer-checker case table as pytest parameters."""
    return [(cat, p, g, want) for cat, rows in table.items() for p, g, want in rows]

