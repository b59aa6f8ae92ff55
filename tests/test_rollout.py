"""rollout.py: the sampler's log-probs are exact, greedy decoding is generate's, seeds reproduce."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rollout import Sampling, filter_logits, left_pad, sample, sequence_logprobs

EOS, PAD = 1, 0
PROMPTS = [[3, 4, 5], [6, 7, 8, 9, 10, 11, 12], [13], [14, 15]]      # ragged: left padding matters


def make(arch, seed=0, attn="sdpa"):
    torch.manual_seed(seed)
    common = dict(vocab_size=24, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD, eos_token_id=EOS,
                  attn_implementation=attn)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    return LlamaForCausalLM(LlamaConfig(**common)).eval()


def sample_recording_batch_sizes(model, *args, **kwargs):
    """sample(...), and the number of rows of each forward pass it made (the prefill first)."""
    sizes = []
    hook = model.register_forward_pre_hook(lambda module, a, kw: sizes.append(kw["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        return sample(model, *args, **kwargs), sizes
    finally:
        hook.remove()


ARCHS = ["qwen2", "llama"]


def reference_logprobs(model, prompt, completion):
    """log pi of each completion token by a fresh forward pass over prompt + completion, no padding."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logp = model(ids).logits[0, len(prompt) - 1:-1].log_softmax(-1)
    return logp.gather(1, torch.tensor(completion)[:, None]).squeeze(1)


@pytest.mark.parametrize("arch,attn", [("qwen2", "sdpa"), ("llama", "sdpa"), ("qwen2", "eager")])
def test_logprobs_equal_a_fresh_forward_pass(arch, attn):
    model = make(arch, attn=attn)
    ro, sizes = sample_recording_batch_sizes(model, PROMPTS, n=4, sampling=Sampling(24, temperature=1.0),
                                             eos_token_id=EOS, seed=3)
    assert ro.finished.any() and not ro.finished.all()          # some rows stopped early, some did not
    assert (ro.lengths < 24).any() and (ro.lengths == 24).any()
    # prefill of the 4 prompts, then 16 rows; finished rows left the batch (compaction) on the way
    assert sizes[:2] == [4, 16] and int((~ro.finished).sum()) <= sizes[-1] < 16
    for i in range(len(PROMPTS) * 4):
        prompt = PROMPTS[i // 4]                                  # rows are grouped by prompt
        n = int(ro.lengths[i])
        completion = ro.tokens[i, :n].tolist()
        assert torch.allclose(ro.logprobs[i, :n], reference_logprobs(model, prompt, completion), atol=1e-5)
        assert (ro.tokens[i, n:] == PAD).all() and (ro.mask[i, n:] == 0).all() and (ro.logprobs[i, n:] == 0).all()
        assert bool(ro.finished[i]) == (completion[-1] == EOS)   # EOS ends a row and is its last token
        assert EOS not in completion[:-1]


@pytest.mark.parametrize("arch", ARCHS)
def test_training_logprobs_match_the_sampler(arch):
    """sequence_logprobs (used by train.py) gives the sampler's numbers: the first GRPO ratio is 1."""
    model = make(arch)
    for temperature in (1.0, 0.7):
        ro = sample(model, PROMPTS, n=3, sampling=Sampling(max_new_tokens=12, temperature=temperature), eos_token_id=EOS, seed=1)
        ids, mask, _ = left_pad(PROMPTS, PAD)
        rows = torch.arange(len(PROMPTS)).repeat_interleave(3)
        with torch.no_grad():
            lp = sequence_logprobs(model, ids[rows], mask[rows], ro.tokens, ro.mask, temperature)
        assert torch.allclose(lp * ro.mask, ro.logprobs, atol=1e-5)
        with torch.no_grad():
            chunked = sequence_logprobs(model, ids[rows], mask[rows], ro.tokens, ro.mask, temperature, chunk_size=5)
        assert torch.allclose(chunked, lp, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_generate(arch):
    model = make(arch)
    ro = sample(model, PROMPTS, n=1, sampling=Sampling(max_new_tokens=15, temperature=0.0), eos_token_id=EOS)
    for i, prompt in enumerate(PROMPTS):
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=15, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
        want = out[0, len(prompt):].tolist()
        got = ro.tokens[i, :len(want)].tolist()
        assert got == want
    # and batched generate, left-padded as the sampler pads
    ids, mask, _ = left_pad(PROMPTS, PAD)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=False, eos_token_id=EOS,
                         pad_token_id=PAD)[:, ids.shape[1]:]
    assert torch.equal(ro.tokens[:, :out.shape[1]], out)


def test_same_seed_same_samples_and_samples_differ():
    model = make("qwen2")
    a = sample(model, PROMPTS, n=8, sampling=Sampling(max_new_tokens=10), seed=7)
    b = sample(model, PROMPTS, n=8, sampling=Sampling(max_new_tokens=10), seed=7)
    c = sample(model, PROMPTS, n=8, sampling=Sampling(max_new_tokens=10), seed=8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)
    for p in range(len(PROMPTS)):                                  # n samples of one prompt are not all equal
        group = a.tokens[p * 8:(p + 1) * 8]
        assert len({tuple(row.tolist()) for row in group}) > 1


@pytest.mark.parametrize("cap", [1, 3, 5, 8])
def test_micro_batching_gives_the_same_result(cap):
    model = make("llama")
    full = sample(model, PROMPTS, n=2, sampling=Sampling(max_new_tokens=12, temperature=0.0), eos_token_id=EOS)
    small = sample(model, PROMPTS, n=2, sampling=Sampling(max_new_tokens=12, temperature=0.0, max_rows=cap), eos_token_id=EOS)
    T = full.tokens.shape[1]
    assert small.tokens.shape == full.tokens.shape
    assert torch.equal(small.tokens[:, :T], full.tokens)
    assert torch.allclose(small.logprobs, full.logprobs, atol=1e-5)
    assert torch.equal(small.lengths, full.lengths)


def test_top_k_one_is_greedy():
    model = make("qwen2")
    greedy = sample(model, PROMPTS, n=1, sampling=Sampling(max_new_tokens=10, temperature=0.0), eos_token_id=EOS)
    topk1 = sample(model, PROMPTS, n=1, sampling=Sampling(max_new_tokens=10, temperature=1.0, top_k=1), eos_token_id=EOS, seed=5)
    assert torch.equal(greedy.tokens, topk1.tokens)


def test_filter_logits_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    inf = float("-inf")
    assert filter_logits(logits, top_k=2).isinf().tolist() == [[False, False, True, True]]
    # top_p = 0.7: 0.5 is not enough, 0.5 + 0.3 covers it: keep the first two
    assert filter_logits(logits, top_p=0.7).isinf().tolist() == [[False, False, True, True]]
    # top_p = 0.45: the first token alone covers it
    kept = filter_logits(logits, top_p=0.45)
    assert kept[0, 0] != inf and kept[0, 1:].eq(inf).all()


def test_texts_are_decoded_without_special_tokens():
    from tiny_model import build_tiny_tokenizer, tiny_model_config
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_model_config()).eval()          # vocabulary = the tokenizer's 18
    ro = sample(model, [tok("1+1=")["input_ids"]], n=2, sampling=Sampling(max_new_tokens=6), eos_token_id=tok.eos_token_id, tokenizer=tok, seed=0)
    assert len(ro.texts) == 2
    for text, t, m in zip(ro.texts, ro.tokens, ro.mask):
        ids = [i for i in t[m.bool()].tolist() if i >= 4]           # ids 0-3 are special tokens
        assert text == "".join(tok.convert_ids_to_tokens(ids))


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1, 2], []], PAD)
