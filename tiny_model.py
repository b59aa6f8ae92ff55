"""tiny_model.py: the built-in model, so that `python train.py` needs no download and no GPU.

Appendix of the tutorial. A tiny Qwen2 (2 layers, hidden 128, an 18-token character vocabulary) is
built from a config, saved and loaded back with save_pretrained / from_pretrained (the code path of
a real model), and warm-started with a short supervised phase on the built-in task (2-digit
addition, answered as \\boxed{N}, data.tiny_task_problems) so that RL starts with some signal. Both
are cached on disk, keyed by everything they depend on.
"""

import hashlib
import json
import os
import random
import time

import torch

from checkpoint import save_dir_atomic
from data import build_prompts, tiny_task_problems
from eval import evaluate
from rollout import Sampling
from parallel import barrier, is_main

TINY_VOCAB = ["<pad>", "<eos>", "<bos>", "<unk>"] + list("0123456789+=}") + ["\\boxed{"]


def tiny_model_config():
    """A ~0.5M-parameter Qwen2: 2 layers, hidden 128, a vocabulary of 18 tokens."""
    from transformers import Qwen2Config
    return Qwen2Config(vocab_size=len(TINY_VOCAB), hidden_size=128, intermediate_size=512,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=64,
                       tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2)


def build_tiny_tokenizer():
    """A character-level tokenizer built locally (no download), with "\\boxed{" as one added token.

    Characters are plain vocabulary entries with no merges, and "\\boxed{" is an *added* token: that
    is what survives transformers 5 reloading the tokenizer of a Qwen2 directory as Qwen2Tokenizer
    (byte-level BPE rebuilt from vocab, merges and added tokens), where a multi-character vocabulary
    entry would be split silently. tests/test_tiny_model.py checks the reloaded tokenizer encodes the same."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(TINY_VOCAB)}, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_tokens([AddedToken("\\boxed{", special=False, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")


def warm_start(model, tok, problems, target, seed, device, log):
    """Supervised warm start on the built-in task: teacher-forced cross-entropy on "\\boxed{N}<eos>",
    until greedy validation accuracy first passes `target` (a fixed step count lands anywhere from a
    few % to 30 % depending on the seed; a target gives RL a comparable start)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(seed)
    val = build_prompts(problems["val"], tok, "raw", builtin=True)
    train = problems["train"]
    step, acc = 0, 0.0
    model.train()
    t0 = time.perf_counter()
    while step < 5000:
        batch = rng.sample(train, 64)
        texts = [p["problem"] + "\\boxed{" + p["gold"] + "}" for p in batch]
        enc = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
        n_prompt = [len(tok(p["problem"])["input_ids"]) for p in batch]
        L = max(map(len, enc))
        ids = torch.tensor([e + [tok.pad_token_id] * (L - len(e)) for e in enc], device=device)
        labels = ids.clone()
        for i, (e, k) in enumerate(zip(enc, n_prompt)):
            labels[i, :k] = -100                 # no loss on the prompt
            labels[i, len(e):] = -100            # nor on padding
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            greedy = Sampling(max_new_tokens=8, temperature=0.0, max_rows=64)
            acc = evaluate(model, tok, val, greedy, progress=False)["mean@1"]
            model.train()
            if acc > target:
                break
    log(f"warm start: {step} supervised steps, validation accuracy {acc:.1%} "
        f"({time.perf_counter() - t0:.0f} s)")
    model.eval()


def builtin_model_dir(cache_dir, seed=0, target=0.2, device="cpu", log=print):
    """Build (once, on rank 0) the tiny model and its warm start; returns the directory of the warm model."""
    key = json.dumps({"cfg": tiny_model_config().to_dict(), "vocab": TINY_VOCAB, "seed": seed,
                      "target": target, "v": 1}, sort_keys=True)
    root = os.path.join(cache_dir, "tiny-addition-" + hashlib.sha256(key.encode()).hexdigest()[:12])
    base, warm = os.path.join(root, "base"), os.path.join(root, "warm")
    if is_main() and not os.path.exists(warm):
        from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM
        if not os.path.exists(base):
            torch.manual_seed(seed)
            model, tok = Qwen2ForCausalLM(tiny_model_config()), build_tiny_tokenizer()
            save_dir_atomic(base, lambda d: (model.save_pretrained(d), tok.save_pretrained(d)))
        model = AutoModelForCausalLM.from_pretrained(base).to(device)   # the same path as a real model
        tok = AutoTokenizer.from_pretrained(base)
        torch.manual_seed(seed)
        warm_start(model, tok, tiny_task_problems(), target, seed, device, log)
        save_dir_atomic(warm, lambda d: (model.save_pretrained(d), tok.save_pretrained(d)))
    elif is_main():
        log(f"warm start: cached in {warm}")
    barrier()
    return warm
