"""grpo.py: the GRPO objective, the DPO objective, and why 2-GRPO *is* online DPO.

Chapter 1 of the tutorial. Everything here is a plain function over tensors; the training loop
(train.py) calls them. Notation used in the comments:

    P   prompts in a batch          G   rollouts (completions) per prompt, the "group size"
    B   = P * G sequences           T   completion tokens (right-padded)      V  vocabulary size
    r   reward of a completion      A   its advantage                       pi  the policy

GRPO (DeepSeekMath, Shao et al. 2024) samples G completions per prompt, scores each with a verifiable
reward, and uses the reward relative to the group as the advantage of every token of the completion.
"It Takes Two: Your GRPO Is Secretly DPO" (arXiv 2510.00977) observes that this is a contrastive
objective, and that with G = 2 it is exactly online DPO; the derivation is at the bottom of this file
and tests/test_grpo.py proves it numerically.
"""

import math

import torch
import torch.nn.functional as F

ADVANTAGE_MODES = ("group", "center", "batch")
AGGREGATIONS = ("seq_mean", "token_mean", "seq_sum")


# ---------------------------------------------------------------------------------------------------
# 1. Group advantages
# ---------------------------------------------------------------------------------------------------
def group_advantages(rewards, group_size, mode="group", eps=1e-6):
    """Advantage of each completion relative to the other completions of its prompt.

    rewards: (P*G,) flat, each group of G contiguous (prompt 0's G rollouts, then prompt 1's, ...)
    returns: (P*G,) advantages, same layout.

    mode="group"  (GRPO):     A_i = (r_i - mean_g) / (std_g + eps)
    mode="center" (Dr. GRPO): A_i =  r_i - mean_g
    mode="batch":             A_i = (r_i - mean_g) / (std_batch + eps)   (one std for the whole batch)

    std is the *population* std (divide by G, not G - 1). Why: with G = 2 and r_1 != r_2 it makes the
    advantages exactly +1 and -1, whatever the two rewards are, which is what makes 2-GRPO equal DPO
    (see the bottom of the file). The unbiased std (torch.std's default, used by some libraries) gives
    +-1/sqrt(2) for G = 2: the same direction, a learning rate sqrt(2) smaller.
    A group whose rewards are all equal has r_i - mean_g = 0 exactly, so its advantages are 0, not NaN.
    """
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"advantage mode must be one of {ADVANTAGE_MODES}, got {mode!r}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be flat with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    r = rewards.view(-1, group_size)                     # (P, G)
    centered = r - r.mean(dim=1, keepdim=True)           # (P, G)  r_i - mean_g
    if mode == "center":
        adv = centered
    elif mode == "group":
        adv = centered / (r.std(dim=1, unbiased=False, keepdim=True) + eps)
    else:  # "batch"
        adv = centered / (rewards.std(unbiased=False) + eps)
    return adv.reshape(-1)


# ---------------------------------------------------------------------------------------------------
# 2. Which groups carry a gradient
# ---------------------------------------------------------------------------------------------------
# A group whose rewards are all equal has A = 0 for every rollout: no gradient. With 0/1 rewards and a
# prompt of pass rate p, G rollouts all tie with probability p^G + (1 - p)^G, so a group is informative
# with probability 1 - p^G - (1 - p)^G: for G = 2, 2 p (1 - p), at most 1/2. train.py skips tied rows
# and logs the tie share, resample.py replaces tied pairs, eval.py estimates the share for a model.
def informative_groups(rewards, group_size):
    """(P,) True for the groups whose rewards are not all equal.  rewards: (P*G,), groups contiguous."""
    g = rewards.view(-1, group_size)                                          # (P, G)
    return (g != g[:, :1]).any(1)


def tie_probability(p, group_size):
    """P(all G rewards equal) for a prompt of pass rate p:  p^G + (1 - p)^G."""
    return p ** group_size + (1 - p) ** group_size


def informative_share(k, c, group_size):
    """The expected share of informative groups of G rollouts, 1 - p^G - (1 - p)^G, estimated for a
    problem with c of k samples right. For G <= k, P(all G right) is estimated without bias by
    C(c, G) / C(k, G) (G of the k samples drawn without replacement, as in pass@k). For G > k the k
    samples cannot say: the share only grows with G, so the estimate at G = k is returned, a lower
    bound."""
    G = min(group_size, k)
    return 1.0 - (math.comb(c, G) + math.comb(k - c, G)) / math.comb(k, G)


# ---------------------------------------------------------------------------------------------------
# 3. Per-token log-probs from logits
# ---------------------------------------------------------------------------------------------------
def token_logprobs(logits, tokens, temperature=1.0, chunk_size=None):
    """log pi(token_t | context) for given tokens, without a full (B, T, V) log-softmax copy.

    logits: (B, T, V) the model's logits at the positions that predict `tokens`
    tokens: (B, T) long
    returns: (B, T) log-probs in float32 (float64 if the logits are float64)

        log softmax(z / tau)[y] = z_y / tau - logsumexp(z / tau)

    Only the gathered entry and one logsumexp per position are kept. chunk_size (positions along T)
    bounds the float32 temporaries to (B, chunk_size, V) when the logits are in bf16 or the vocabulary
    is large; None processes the whole sequence at once.
    """
    T = tokens.shape[1]
    step = T if not chunk_size else chunk_size
    dtype = torch.promote_types(logits.dtype, torch.float32)                 # bf16 -> fp32, fp64 stays
    out = []
    for s in range(0, T, max(step, 1)):
        z = logits[:, s:s + step].to(dtype)                                  # (B, c, V)
        if temperature != 1.0:
            z = z / temperature
        picked = z.gather(-1, tokens[:, s:s + step, None]).squeeze(-1)       # (B, c)  z_y
        out.append(picked - torch.logsumexp(z, dim=-1))                      # (B, c)
    return torch.cat(out, dim=1) if out else logits.new_zeros(tokens.shape, dtype=dtype)


def masked_sum(x, mask, dim=None):
    """sum of x where mask is 1.  x, mask: (B, T)."""
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x, mask, dim=None):
    """mean of x over the positions where mask is 1 (0 if there are none)."""
    return masked_sum(x, mask, dim) / mask.sum(dim).clamp(min=1)


# ---------------------------------------------------------------------------------------------------
# 4. The clipped surrogate objective (PPO-style), with optional KL to a reference policy
# ---------------------------------------------------------------------------------------------------
def kl_k3(logp, ref_logp):
    """Per-token k3 estimator of KL(pi || pi_ref) (Schulman 2020), evaluated on samples from pi.

        k3 = exp(ref - logp) - (ref - logp) - 1   >= 0, since e^x >= 1 + x; = 0 where pi = pi_ref
    logp, ref_logp: (B, T)
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def grpo_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.2, beta=0.0, ref_logp=None,
              aggregation="seq_mean", max_tokens=None):
    """GRPO clipped surrogate loss and the statistics people log.

    logp:       (B, T) log pi_theta of the sampled tokens (with gradient)
    old_logp:   (B, T) log pi_old of the same tokens, the policy before this update (no gradient; train.py
                takes it from the training forward, docs/precision.md)
    advantages: (B,)   one advantage per completion, shared by all its tokens
    mask:       (B, T) 1 for completion tokens, 0 for padding
    ref_logp:   (B, T) log pi_ref, needed when beta > 0

    Per token (DAPO's asymmetric clip, eps_low = eps_high gives PPO's):
        ratio = exp(logp - old_logp)
        l_t   = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + beta * k3_t

    Aggregation over tokens, the choice the GRPO variants differ on:
        "seq_mean"   (GRPO):     mean over sequences of (mean over each sequence's tokens)
        "token_mean" (DAPO):     sum over all tokens of the batch / number of tokens in the batch
        "seq_sum"    (Dr. GRPO): sum over all tokens / (B * max_tokens), a constant; max_tokens
                                 defaults to T. With max_tokens = 1 this is the sequence log-prob
                                 sum averaged over sequences, the form used in the DPO derivation.

    returns: (loss scalar, stats dict of floats: clip_frac, ratio_mean, kl)
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    mask = mask.to(logp.dtype)
    A = advantages.to(logp.dtype)[:, None]                                   # (B, 1)
    ratio = torch.exp(logp - old_logp)                                       # (B, T)
    unclipped = ratio * A
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * A
    per_token = -torch.min(unclipped, clipped)                               # (B, T)
    kl = None
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        kl = kl_k3(logp, ref_logp)                                           # (B, T)
        per_token = per_token + beta * kl

    if aggregation == "seq_mean":
        loss = masked_mean(per_token, mask, dim=1).mean()
    elif aggregation == "token_mean":
        loss = masked_sum(per_token, mask) / mask.sum().clamp(min=1)
    else:  # "seq_sum"
        norm = logp.shape[1] if max_tokens is None else max_tokens
        loss = masked_sum(per_token, mask) / (logp.shape[0] * norm)

    with torch.no_grad():
        # a token is "clipped" when min() picked the clipped term, so its gradient is 0
        is_clipped = clipped < unclipped
        stats = {
            "clip_frac": masked_mean(is_clipped.to(logp.dtype), mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
            "kl": masked_mean(kl, mask).item() if kl is not None else 0.0,
        }
    return loss, stats


def aggregation_weight(mask, aggregation):
    """How much of the full batch's loss a micro-batch is: its sequences, or its tokens for token_mean.
    mask: (b, T) of the micro-batch. The full-batch loss is sum over micro-batches of
    loss_mb * weight_mb / total weight, which is what makes gradient accumulation give the same
    gradient as one big batch."""
    return mask.sum().cpu() if aggregation == "token_mean" else torch.tensor(float(mask.shape[0]))


# ---------------------------------------------------------------------------------------------------
# 5. DPO, and turning 2-rollout groups into preference pairs
# ---------------------------------------------------------------------------------------------------
def dpo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta=0.1):
    """DPO loss, sigmoid form (Rafailov et al. 2023, eq. 7), averaged over pairs.

    all inputs: (N,) *sequence* log-probs, i.e. token log-probs summed over each completion
        h_w = log pi(y_w) - log pi_ref(y_w)          (chosen)
        h_l = log pi(y_l) - log pi_ref(y_l)          (rejected)
        L   = -log sigmoid(beta * (h_w - h_l))
    returns: (loss scalar, stats dict: reward_margin = beta * (h_w - h_l) mean, accuracy = share > 0)
    """
    margin = beta * ((chosen_logp - ref_chosen_logp) - (rejected_logp - ref_rejected_logp))  # (N,)
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        stats = {"reward_margin": margin.mean().item(), "pair_accuracy": (margin > 0).float().mean().item()}
    return loss, stats


def preference_pairs(rewards, group_size=2):
    """Indices (chosen, rejected) of the groups of 2 whose two rewards differ.

    rewards: (P*2,) flat, groups contiguous.  returns: chosen (N,), rejected (N,) long, N <= P.
    Ties (equal rewards) make no pair: they carry no preference, and in GRPO they get zero advantage.
    """
    if group_size != 2:
        raise ValueError("preference pairs are defined for group_size=2")
    r = rewards.view(-1, 2)                                   # (P, 2)
    keep = (r[:, 0] != r[:, 1]).nonzero().squeeze(1)          # (N,) groups with a winner
    first_wins = r[keep, 0] > r[keep, 1]
    base = 2 * keep
    chosen = torch.where(first_wins, base, base + 1)
    rejected = torch.where(first_wins, base + 1, base)
    return chosen, rejected


# ---------------------------------------------------------------------------------------------------
# 6. Why 2-GRPO is DPO (the derivation; tests/test_grpo.py checks every line of it)
# ---------------------------------------------------------------------------------------------------
# (1) Advantages. G = 2, rewards r1 != r2, mean m = (r1 + r2)/2, population std s = |r1 - r2|/2.
#     A1 = (r1 - m)/s = (r1 - r2)/|r1 - r2| = +-1, A2 = -A1. So the winner o+ has A = +1 and the loser
#     o- has A = -1, whatever the reward values. (Unbiased std: s = |r1 - r2|/sqrt(2), A = +-1/sqrt(2).)
#     Ties: r1 = r2 gives r - m = 0, so A = 0 for both, and the pair contributes no gradient.
#
# (2) 2-GRPO gradient. On-policy the ratio is exp(logp - logp_old) = 1 with value 1 and gradient
#     grad ratio = grad logp. Inside the clip range min() picks ratio * A, so with tokens summed over
#     each sequence ("seq_sum" with max_tokens = 1) and the loss averaged over the 2 sequences:
#         L_grpo      = -1/2 [ A+ * sum_t ratio_t(o+) + A- * sum_t ratio_t(o-) ]
#         grad L_grpo = -1/2 [ grad log pi(o+) - grad log pi(o-) ]
#     (With "seq_mean", each sum is divided by that sequence's length: -1/2 [grad log pi(o+)/|o+|
#     - grad log pi(o-)/|o-|]; the same pair, weighted per token.)
#
# (3) DPO gradient. L_dpo = -log sigmoid(beta (h_w - h_l)), h = log pi(y) - log pi_ref(y). Using
#     d/dx[-log sigmoid(x)] = -sigmoid(-x):
#         grad L_dpo = -beta sigmoid(beta (h_l - h_w)) [ grad log pi(y_w) - grad log pi(y_l) ]
#     At pi = pi_ref, h_w = h_l = 0 and sigmoid(0) = 1/2; with beta = 1 and y_w = o+, y_l = o-:
#         grad L_dpo = -1/2 [ grad log pi(o+) - grad log pi(o-) ] = grad L_grpo.
#
# (4) So 2-GRPO is online DPO (pairs from the current policy, reference = the sampling policy) with the
#     sigmoid weight frozen at 1/2. Away from pi = pi_ref, for one pair, the two directions stay the
#     same and only the scale differs: grad L_dpo / grad L_grpo = 2 beta sigmoid(beta (h_l - h_w)). Over
#     a batch that factor differs from pair to pair, so DPO re-weights the pairs by their sigmoid terms
#     (a pair it already ranks well counts less) where 2-GRPO weights them all alike.
def grpo_dpo_weight(h_chosen, h_rejected, beta=1.0):
    """The factor 2 * beta * sigmoid(beta * (h_l - h_w)) with grad L_dpo = factor * grad L_2grpo.

    h_chosen, h_rejected: (N,) log pi(y) - log pi_ref(y). At pi = pi_ref and beta = 1 it is exactly 1.
    """
    return 2 * beta * torch.sigmoid(beta * (h_rejected - h_chosen))

