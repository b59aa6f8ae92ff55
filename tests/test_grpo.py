"""Worked examples for grpo.py, and the proof that 2-GRPO's gradient is DPO's (float64)."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from grpo import (dpo_loss, group_advantages, grpo_dpo_weight, grpo_loss, informative_groups, informative_share,
                  kl_k3, preference_pairs, tie_probability, token_logprobs)


@pytest.fixture(autouse=True)
def float64():
    """Every tensor in these examples is float64, so gradients can be compared to 1e-10."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# --- advantages -------------------------------------------------------------------------------------
def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])  # two groups of 4
    # group 1 = [1, 0, 1, 1]: mean 0.75, population std sqrt(0.75 * 0.25) = 0.4330
    # group 2 = [0, 0, 0, 1]: mean 0.25, std 0.4330
    s = math.sqrt(0.75 * 0.25)
    want_group = torch.tensor([0.25, -0.75, 0.25, 0.25, -0.25, -0.25, -0.25, 0.75]) / s
    assert torch.allclose(group_advantages(r, 4, "group", eps=0.0), want_group)
    want_center = torch.tensor([0.25, -0.75, 0.25, 0.25, -0.25, -0.25, -0.25, 0.75])
    assert torch.allclose(group_advantages(r, 4, "center"), want_center)
    # batch: one std over all 8 rewards (4 ones, 4 zeros: std 0.5)
    assert torch.allclose(group_advantages(r, 4, "batch", eps=0.0), want_center / 0.5)


def test_two_rollout_advantages_are_plus_minus_one():
    r = torch.tensor([3.0, -1.0, 0.0, 0.5])  # any two distinct values
    assert torch.allclose(group_advantages(r, 2, eps=0.0), torch.tensor([1.0, -1.0, -1.0, 1.0]))
    # the unbiased std would give +-1/sqrt(2); the code uses the population std, so +-1 above
    r2 = r.view(-1, 2)
    unbiased = (r2 - r2.mean(1, keepdim=True)) / r2.std(1, keepdim=True)
    assert torch.allclose(unbiased.abs(), torch.full((2, 2), 1 / math.sqrt(2)))


def test_equal_rewards_give_zero_advantage_and_no_nan():
    r = torch.ones(16)  # one G = 16 group, all correct
    for mode in ("group", "center", "batch"):
        adv = group_advantages(r, 16, mode)
        assert torch.equal(adv, torch.zeros(16))
    logp = torch.randn(16, 5, requires_grad=True)
    for agg in ("seq_mean", "token_mean", "seq_sum"):
        loss, stats = grpo_loss(logp, logp.detach(), group_advantages(r, 16), torch.ones(16, 5),
                                beta=0.1, ref_logp=logp.detach() + 0.1, aggregation=agg)
        (g,) = torch.autograd.grad(loss, logp)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
        assert all(math.isfinite(v) for v in stats.values())


def test_bad_group_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="group_size=4"):
        group_advantages(torch.zeros(6), 4)


# --- token log-probs --------------------------------------------------------------------------------
def test_token_logprobs_match_log_softmax_and_chunks_agree():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    tokens = torch.randint(0, 11, (3, 7), generator=g)
    want = logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, tokens), want, atol=1e-12)
    for chunk in (1, 2, 3, 7, 100):
        assert torch.allclose(token_logprobs(logits, tokens, chunk_size=chunk), want, atol=1e-12)
    want_t = (logits / 0.7).log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, tokens, temperature=0.7), want_t, atol=1e-12)
    # bf16 logits are upcast to float32 for the log-softmax
    assert token_logprobs(logits.bfloat16(), tokens).dtype == torch.float32


def test_token_logprobs_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # p = [1/2, 1/2], then [3/4, 1/4]
    lp = token_logprobs(logits, torch.tensor([[1, 0]]))
    assert torch.allclose(lp, torch.tensor([[math.log(0.5), math.log(0.75)]]))


# --- aggregation, by hand ---------------------------------------------------------------------------
def test_aggregation_modes_by_hand():
    # on-policy (ratio 1), beta 0: per-token loss is -A. Two sequences, lengths 1 and 3, T = 4.
    logp = torch.zeros(2, 4)
    mask = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 0]])
    adv = torch.tensor([2.0, -1.0])
    # per-token loss: seq 0: [-2], seq 1: [1, 1, 1]
    loss, _ = grpo_loss(logp, logp, adv, mask, aggregation="seq_mean")
    assert loss.item() == pytest.approx((-2 + 1) / 2)                      # means -2 and 1
    loss, _ = grpo_loss(logp, logp, adv, mask, aggregation="token_mean")
    assert loss.item() == pytest.approx((-2 + 3) / 4)                      # 4 tokens
    loss, _ = grpo_loss(logp, logp, adv, mask, aggregation="seq_sum")
    assert loss.item() == pytest.approx((-2 + 3) / (2 * 4))                # B * T
    loss, _ = grpo_loss(logp, logp, adv, mask, aggregation="seq_sum", max_tokens=10)
    assert loss.item() == pytest.approx((-2 + 3) / (2 * 10))


def test_kl_term_and_stats_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    # k3 at token 0: d = log(0.5) = -0.693: e^d - d - 1 = 0.5 + 0.6931 - 1 = 0.1931; token 1: 0
    k3 = kl_k3(logp, ref)
    assert k3[0, 0].item() == pytest.approx(0.5 + math.log(2) - 1)
    assert k3[0, 1].item() == 0.0
    loss, stats = grpo_loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 2), beta=0.5, ref_logp=ref,
                            aggregation="token_mean")
    assert loss.item() == pytest.approx(0.5 * (0.5 + math.log(2) - 1) / 2)
    assert stats["kl"] == pytest.approx((0.5 + math.log(2) - 1) / 2)
    assert stats["ratio_mean"] == pytest.approx(1.0) and stats["clip_frac"] == 0.0


def test_k3_is_nonnegative_and_zero_for_equal_policies():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1000, generator=g) * 3, torch.randn(1000, generator=g) * 3
    assert (kl_k3(a, b) >= 0).all()
    assert torch.equal(kl_k3(a, a), torch.zeros(1000))


# --- clipping -------------------------------------------------------------------------------------
def test_clipped_tokens_get_zero_gradient():
    # 4 tokens of one sequence: ratios 1.5, 0.5, 1.1, 0.9 with eps_low = eps_high = 0.2
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.9]])).requires_grad_()
    mask = torch.ones(1, 4)
    for A, zero_grad in ((1.0, [True, False, False, False]),   # A > 0: ratio above 1 + eps is clipped
                         (-1.0, [False, True, False, False])):  # A < 0: ratio below 1 - eps is clipped
        loss, stats = grpo_loss(logp, old, torch.tensor([A]), mask, aggregation="token_mean")
        (g,) = torch.autograd.grad(loss, logp)
        assert [bool(x == 0) for x in g[0]] == zero_grad
        assert stats["clip_frac"] == 0.25
        # the unclipped tokens: d(-ratio * A / 4)/dlogp = -ratio * A / 4
        for t in range(4):
            if not zero_grad[t]:
                assert g[0, t].item() == pytest.approx(-math.exp(logp[0, t].item()) * A / 4)


def test_asymmetric_clip_range():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.25, 1.3]])).requires_grad_()
    loss, _ = grpo_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), eps_low=0.2, eps_high=0.28,
                        aggregation="token_mean")
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 0] != 0 and g[0, 1] == 0  # 1.25 < 1.28 still learns; 1.3 is clipped


def test_asymmetric_clip_range_for_a_negative_advantage_uses_the_lower_bound():
    """A < 0 lowers the probability: a token whose ratio already fell below 1 - eps_low = 0.8 is clipped
    (no gradient), one at 0.85 still learns, and a ratio above 1 is never clipped for A < 0 (min() keeps
    the larger loss). With the lower bound wrongly at 1 - eps_high = 0.72, the 0.75 token would learn."""
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[0.75, 0.85, 1.5]])).requires_grad_()
    loss, stats = grpo_loss(logp, old, torch.tensor([-1.0]), torch.ones(1, 3), eps_low=0.2, eps_high=0.28,
                            aggregation="token_mean")
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 0] == 0 and g[0, 1] != 0 and g[0, 2] != 0
    assert stats["clip_frac"] == pytest.approx(1 / 3)


def test_on_policy_gradient_is_reinforce_with_group_mean_baseline():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 5, 9, generator=g, requires_grad=True)
    tokens = torch.randint(0, 9, (6, 5), generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.2).double()
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])  # G = 3, two prompts
    logp = token_logprobs(logits, tokens)
    loss, _ = grpo_loss(logp, logp.detach(), group_advantages(rewards, 3, "center"), mask,
                        aggregation="seq_sum", max_tokens=1)
    (g_grpo,) = torch.autograd.grad(loss, logits)
    # REINFORCE: -1/B sum_i (r_i - mean of its group) * log pi(o_i)
    baseline = rewards.view(2, 3).mean(1).repeat_interleave(3)
    seq_logp = (token_logprobs(logits, tokens) * mask).sum(1)
    (g_reinforce,) = torch.autograd.grad(-((rewards - baseline) * seq_logp).mean(), logits)
    assert torch.allclose(g_grpo, g_reinforce, atol=1e-12)


# --- DPO ------------------------------------------------------------------------------------------
def test_dpo_loss_by_hand():
    z = torch.zeros(1)
    loss, stats = dpo_loss(z, z, z, z, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))  # -log sigmoid(0)
    # h_w = -1 - (-2) = 1, h_l = -3 - (-2) = -1: margin = beta * 2 = 1 -> loss = log(1 + e^-1)
    loss, stats = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                           torch.tensor([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert stats["reward_margin"] == pytest.approx(1.0) and stats["pair_accuracy"] == 1.0


def test_preference_pairs():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    chosen, rejected = preference_pairs(r)
    assert chosen.tolist() == [0, 5] and rejected.tolist() == [1, 4]  # groups 1 and 3 are ties


# --- the equivalence, through a real (tiny) transformer ---------------------------------------------
def tiny_model(seed=0):
    """A 2-layer GPT-2 in float64. (GPT-2, not Qwen2: Qwen2's RMSNorm computes in float32 even in a
    float64 model, which would cap these comparisons at ~1e-7 instead of 1e-10.)"""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=13, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).double().eval()


def seq_token_logprobs(model, prompt, completions):
    """(2, T) token log-probs of two completions of one prompt, and their (2, T) mask."""
    T = max(len(c) for c in completions)
    ids = torch.tensor([prompt + c + [0] * (T - len(c)) for c in completions])
    mask = torch.tensor([[1.0] * len(c) + [0.0] * (T - len(c)) for c in completions])
    logits = model(ids).logits[:, len(prompt) - 1:-1]           # positions that predict completions
    return token_logprobs(logits, ids[:, len(prompt):]), mask


PROMPT, WINNER, LOSER = [1, 2, 3], [4, 5, 6, 7], [8, 9]


def grads_of(model, loss, keep=False):
    grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=keep)
    return torch.cat([g.reshape(-1) for g in grads])


def two_grpo_grad(model, aggregation="seq_sum"):
    logp, mask = seq_token_logprobs(model, PROMPT, [WINNER, LOSER])
    adv = group_advantages(torch.tensor([1.0, 0.0]), 2, eps=0.0)              # [+1, -1]
    loss, _ = grpo_loss(logp, logp.detach(), adv, mask, aggregation=aggregation, max_tokens=1)
    return grads_of(model, loss)


def dpo_grad(model, ref, beta=1.0):
    logp, mask = seq_token_logprobs(model, PROMPT, [WINNER, LOSER])
    with torch.no_grad():
        ref_logp, _ = seq_token_logprobs(ref, PROMPT, [WINNER, LOSER])
    seq, ref_seq = (logp * mask).sum(1), (ref_logp * mask).sum(1)
    loss, _ = dpo_loss(seq[:1], seq[1:], ref_seq[:1], ref_seq[1:], beta=beta)
    return grads_of(model, loss), (seq - ref_seq).detach()


def test_two_grpo_gradient_equals_dpo_gradient_at_reference():
    model, ref = tiny_model(), tiny_model()
    g_grpo = two_grpo_grad(model)
    g_dpo, _ = dpo_grad(model, ref, beta=1.0)
    assert g_grpo.abs().max() > 1e-3                    # a real, nonzero gradient
    assert torch.allclose(g_grpo, g_dpo, atol=1e-10, rtol=0)
    # and both equal the closed form -1/2 [grad log pi(o+) - grad log pi(o-)]
    logp, mask = seq_token_logprobs(model, PROMPT, [WINNER, LOSER])
    seq = (logp * mask).sum(1)
    assert torch.allclose(g_grpo, grads_of(model, -0.5 * (seq[0] - seq[1])), atol=1e-10, rtol=0)


def test_away_from_reference_dpo_is_two_grpo_scaled_by_the_sigmoid_weight():
    model, ref = tiny_model(), tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):                                  # move pi away from pi_ref
        opt.zero_grad()
        logp, mask = seq_token_logprobs(model, PROMPT, [WINNER, LOSER])
        (-(logp * mask).sum() * 0.3).backward()
        opt.step()
    g_grpo = two_grpo_grad(model)
    for beta in (1.0, 0.1):
        g_dpo, h = dpo_grad(model, ref, beta=beta)
        w = grpo_dpo_weight(h[:1], h[1:], beta=beta)
        assert abs(w.item() - 1.0) > 0.05               # pi != pi_ref: the weight really moved
        assert torch.allclose(g_dpo, w * g_grpo, atol=1e-10, rtol=0)


def test_per_sequence_mean_divides_each_term_by_its_length():
    model = tiny_model()
    g = two_grpo_grad(model, aggregation="seq_mean")
    logp, mask = seq_token_logprobs(model, PROMPT, [WINNER, LOSER])
    seq = (logp * mask).sum(1)
    want = grads_of(model, -0.5 * (seq[0] / len(WINNER) - seq[1] / len(LOSER)))
    assert torch.allclose(g, want, atol=1e-10, rtol=0)


def test_ties_give_zero_gradient():
    model = tiny_model()
    logp, mask = seq_token_logprobs(model, PROMPT, [WINNER, LOSER])
    for r in ([1.0, 1.0], [0.0, 0.0]):
        adv = group_advantages(torch.tensor(r), 2)
        loss, _ = grpo_loss(logp, logp.detach(), adv, mask)
        g = grads_of(model, loss, keep=True)
        assert torch.equal(g, torch.zeros_like(g))
    chosen, rejected = preference_pairs(torch.tensor([1.0, 1.0]))
    assert chosen.numel() == 0 and rejected.numel() == 0


# --- which groups carry a gradient (grpo.py section 2) --------------------------------------------------
def test_informative_groups():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    assert informative_groups(r, 2).tolist() == [False, True, False, True]
    assert informative_groups(torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]), 3).tolist() == [True, False]


def test_tie_probability_by_hand():
    assert tie_probability(0.5, 2) == 0.5                 # 1/4 both right + 1/4 both wrong
    assert tie_probability(0.1, 2) == pytest.approx(0.82)  # 0.01 + 0.81
    assert tie_probability(0.5, 16) == pytest.approx(2 / 2 ** 16)


def test_informative_share_by_hand():
    # 2 of 4 right: pairs drawn from the 4 samples differ in 4 of C(4,2) = 6 ways -> 2/3 (plug-in: 1/2)
    assert informative_share(4, 2, 2) == pytest.approx(4 / 6)
    assert informative_share(4, 0, 2) == 0.0 and informative_share(4, 4, 3) == 0.0
    assert informative_share(4, 1, 4) == pytest.approx(1.0)           # all 4 together: always mixed
    # G > k: the share at G = k, a lower bound (1 for a problem both right and wrong in k samples)
    assert informative_share(2, 1, 8) == 1.0 and informative_share(4, 0, 16) == 0.0
