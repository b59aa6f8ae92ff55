"""compiled.py: the compiled decoder gives the eager loop's tokens and log-probs, decodes in buckets over a cache it keeps,
and attends over grouped-query keys without copying them."""

import shutil

import pytest
import torch
from helpers import FORCED_ISA
from test_rollout import EOS, PROMPTS, make, reference_logprobs

from rollout import Sampling, decoder_for, sample

# The compiled decoder (rollout.decoder_for(model, compile=True)): the same tokens and log-probs as the eager loop.
# {"backend": "eager"} runs it through torch.compile's tracer without generating code (seconds); the
# default backend generates C++ on the CPU (about a minute) and needs a C compiler.
HAS_CC = bool(shutil.which("cc") or shutil.which("gcc"))
COMPILERS = [pytest.param({"backend": "eager"}, id="traced"),
             pytest.param(True, id="inductor", marks=pytest.mark.skipif(
                 not HAS_CC or FORCED_ISA, reason="no C compiler (torch.compile's default backend builds C++ on "
                 "the CPU), or ATEN_CPU_CAPABILITY forced, which torch.compile's CPU code generation breaks under"))]
SETTINGS = [Sampling(24), Sampling(24, top_p=0.8), Sampling(24, temperature=0.0), Sampling(24, temperature=0.7, top_k=5),
            Sampling(24, max_rows=5)]


@pytest.mark.parametrize("options", COMPILERS)
def test_compiled_path_gives_the_eager_tokens_and_logprobs(options):
    model = make("qwen2")
    for sampling in SETTINGS:
        eager = sample(model, PROMPTS, n=4, sampling=sampling, eos_token_id=EOS, seed=3)
        compiled = sample(model, PROMPTS, n=4, sampling=sampling, eos_token_id=EOS, seed=3, decoder=decoder_for(model, options))
        assert torch.equal(compiled.tokens, eager.tokens) and torch.equal(compiled.mask, eager.mask)
        assert torch.equal(compiled.finished, eager.finished)
        assert torch.allclose(compiled.logprobs, eager.logprobs, atol=1e-5)
    assert eager.finished.any() and not eager.finished.all()
    for i in range(len(PROMPTS) * 4):                               # and a fresh forward pass's log-probs
        n = int(compiled.lengths[i])
        want = reference_logprobs(model, PROMPTS[i // 4], compiled.tokens[i, :n].tolist())
        assert torch.allclose(compiled.logprobs[i, :n], want, atol=1e-5)


@pytest.mark.parametrize("arch,attn", [("llama", "sdpa"), ("qwen2", "eager")])
def test_compiled_path_other_architectures_and_attention(arch, attn):
    model = make(arch, attn=attn)
    eager = sample(model, PROMPTS, n=4, sampling=Sampling(max_new_tokens=24), eos_token_id=EOS, seed=3)
    compiled = sample(model, PROMPTS, n=4, sampling=Sampling(max_new_tokens=24), eos_token_id=EOS, seed=3, decoder=decoder_for(model, {"backend": "eager"}))
    assert torch.equal(compiled.tokens, eager.tokens)
    assert torch.allclose(compiled.logprobs, eager.logprobs, atol=1e-5)


def test_compiled_path_decodes_in_buckets_and_reuses_its_cache():
    """16 rows: decoded as 16, then compacted to the next bucket up (8 or 16, the power of two >= the
    rows left, at least 8); the fixed cache is allocated once and kept by later calls that fit."""
    from compiled import _DECODERS
    model = make("qwen2")
    sample(model, PROMPTS, n=4, sampling=Sampling(max_new_tokens=24), eos_token_id=EOS, seed=3, decoder=decoder_for(model, {"backend": "eager"}))
    decoder = _DECODERS[model]
    k_store = decoder.cache.layers[0].k_store
    assert k_store.shape[0] == 16 and k_store.shape[2] == 256      # 7 prompt + 24 new positions, rounded up
    sizes, step = [], decoder.step
    decoder.step = lambda model, cache, kw, ids, pos, mask: sizes.append(ids.shape[0]) or step(model, cache, kw, ids, pos,
                                                                                     mask)
    ro = sample(model, PROMPTS, n=4, sampling=Sampling(max_new_tokens=24), eos_token_id=EOS, seed=4, decoder=decoder_for(model, {"backend": "eager"}))
    assert sizes[0] == 16 and set(sizes) == {16, 8} and sizes == sorted(sizes, reverse=True)
    assert int((~ro.finished).sum()) <= 8                           # the rows still running at the end fit 8
    assert decoder.cache.layers[0].k_store is k_store               # no new allocation
    sample(model, PROMPTS, n=1, sampling=Sampling(max_new_tokens=24), eos_token_id=EOS, seed=4, decoder=decoder_for(model, {"backend": "eager"}))
    assert decoder.cache.layers[0].k_store is k_store               # 4 rows fit in it too
