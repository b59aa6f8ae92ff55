"""update.py: micro-batches give the gradient of one batch, tied rows skipped or filtered, the DPO batch
of pairs, 2-GRPO over a batch is online DPO over its informative pairs, the optimizer step."""

import pytest
import torch
from helpers import fixed_batch, flat_gradient

import update
from config import Config
from tiny_model import build_tiny_tokenizer
from update import accumulate_gradients, optimizer_step


@pytest.mark.parametrize("loss,aggregation,beta", [("grpo", "seq_mean", 0.0), ("grpo", "token_mean", 0.0),
                                                   ("grpo", "seq_sum", 0.0), ("grpo", "token_mean", 0.1),
                                                   ("dpo", "seq_mean", 0.0)])
def test_two_micro_batches_of_4_give_the_gradient_of_one_batch_of_8(loss, aggregation, beta):
    tok = build_tiny_tokenizer()
    grads = []
    for mb in (8, 4, 2):
        model, batch = fixed_batch(tok, loss=loss)
        cfg = Config(loss=loss, aggregation=aggregation, beta=beta, micro_batch_size=mb, grad_clip=0.0,
                     max_new_tokens=8, skip_ties=False)
        stats = accumulate_gradients(model, batch, cfg)
        assert stats is not None
        grads.append(flat_gradient(model))
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[1], grads[0], atol=1e-6, rtol=1e-4)
    assert torch.allclose(grads[2], grads[0], atol=1e-6, rtol=1e-4)


def gradient(batch_and_model, off_policy=False, **cfg):
    """The batch's gradient, accumulated (train.accumulate_gradients): (flat gradient, logged statistics).
    off_policy: old log-probs moved by up to +-0.3, so ratios differ from 1 (some clipped) and the
    loss is not ~0 (on-policy, sequence-mean GRPO's loss is -mean(A) = 0)."""
    model, batch = batch_and_model
    if off_policy:
        g = torch.Generator().manual_seed(1)
        batch.old_logp = batch.sampler_logp + 0.3 * (2 * torch.rand(batch.sampler_logp.shape, generator=g) - 1)
    cfg = Config(**{"grad_clip": 0.0, "max_new_tokens": 8, **cfg})
    stats = accumulate_gradients(model, batch, cfg)
    return (flat_gradient(model) if stats is not None else torch.zeros(0)), stats


def test_the_optimizer_step_frees_the_gradients_and_returns_their_norm():
    """After the step p.grad is None (sampling and evaluation get the memory back); the norm logged is
    the gradient's before clipping."""
    model, batch = fixed_batch(build_tiny_tokenizer())
    cfg = Config(grad_clip=1e-3, max_new_tokens=8)
    accumulate_gradients(model, batch, cfg)
    norm = flat_gradient(model).norm().item()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert optimizer_step(model, opt, cfg) == pytest.approx(norm, rel=1e-4) and norm > 1e-3   # fp32 sums
    assert all(p.grad is None for p in model.parameters())


def close(a, b, rel=1e-5):
    """Equal up to float32 summation order: every entry within rel * the largest entry of b."""
    return (a - b).abs().max() <= rel * b.abs().max()


@pytest.mark.parametrize("aggregation", ["seq_mean", "token_mean", "seq_sum"])
@pytest.mark.parametrize("micro_batch_size", [8, 3])
def test_skipping_ties_is_a_pure_speed_up(aggregation, micro_batch_size):
    """Rows 2 and 3 (prompt 1) tie: skipping them runs 6 of 8 rows, with the same loss and gradient."""
    tok = build_tiny_tokenizer()
    kept = []
    real = update.microbatch_loss
    run = {}
    for skip in (False, True):
        run["rows"] = 0

        def counting(logp, batch, rows, cfg):
            run["rows"] += len(rows)
            return real(logp, batch, rows, cfg)
        update.microbatch_loss = counting
        try:
            kept.append(gradient(fixed_batch(tok), off_policy=True, aggregation=aggregation,
                               micro_batch_size=micro_batch_size, skip_ties=skip) + (run["rows"],))
        finally:
            update.microbatch_loss = real
    (g_all, s_all, rows_all), (g_skip, s_skip, rows_skip) = kept
    assert (rows_all, rows_skip) == (8, 6)
    assert g_all.abs().max() > 0 and abs(s_all["loss"]) > 1e-3
    assert close(g_skip, g_all)
    assert s_skip["loss"] == pytest.approx(s_all["loss"], rel=1e-5)
    assert g_skip.norm().item() == pytest.approx(g_all.norm().item(), rel=1e-5)


@pytest.mark.parametrize("aggregation", ["seq_mean", "seq_sum"])
def test_filtering_ties_is_dapo_renormalisation(aggregation):
    """--filter-ties averages over the 6 informative rows instead of all 8: the step is 8/6 as large."""
    tok = build_tiny_tokenizer()
    g_all, _ = gradient(fixed_batch(tok), aggregation=aggregation, skip_ties=False)
    g_filter, _ = gradient(fixed_batch(tok), aggregation=aggregation, filter_ties=True)
    assert close(g_filter, g_all * 8 / 6)


def test_batch_level_two_grpo_is_online_dpo_over_the_informative_pairs():
    """At the sampling policy, with sequence sums (seq_sum, max_tokens 1) and DPO's beta = 1 against the
    sampler (dpo_ref old): 2-GRPO over the informative pairs only (--filter-ties) has DPO's batch
    gradient; 2-GRPO over all P pairs has it times N / P (here 3 informative pairs of 4)."""
    tok = build_tiny_tokenizer()
    model, batch = fixed_batch(tok, loss="dpo")
    batch.ref_seq = None                  # reference = pi_old: the update's own log-probs, detached
    g_dpo, _ = gradient((model, batch), loss="dpo", dpo_beta=1.0, dpo_ref="old")
    g_filter, _ = gradient(fixed_batch(tok), aggregation="seq_sum", max_new_tokens=1, filter_ties=True)
    g_exact, _ = gradient(fixed_batch(tok), aggregation="seq_sum", max_new_tokens=1)
    assert close(g_filter, g_dpo)
    assert close(g_exact, g_dpo * 3 / 4)
