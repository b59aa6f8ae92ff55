"""eval.py: accuracy of a model on a problem set: mean@k, pass@k, and per-problem results.

Chapter 6 of the tutorial.

    python eval.py --model runs/default/model --samples 4            # built-in held-out split
    python eval.py --model DIR --data math500_test.jsonl --samples 4 --temperature 0.7 --top-p 0.8 --top-k 20
    python eval.py --model DIR --data FILE.jsonl --samples 1 --temperature 0    # greedy accuracy

The paper's five benchmarks with its protocol and its Table 1 beside them: suite.py (an appendix).

For each problem, k completions are sampled and each is checked by reward.py (c of the k are right):
    mean@k = average over problems of c / k           (pass@1 estimated with k samples)
    pass@j = average over problems of 1 - C(k - c, j) / C(k, j)   (Chen et al. 2021, unbiased, j <= k)
The prompt template is the one train.py uses (data.build_prompts), so a model is evaluated on the
prompts it was trained on.
"""

import argparse
import json
import math
import os
import sys
from dataclasses import replace

import torch
from tqdm import tqdm

import parallel
from checkpoint import write_text
from data import (DataError, build_prompts, completion_tokens, load_model_and_tokenizer, load_problems,
                  tiny_task_problems)
from grpo import informative_share
from precision import autocast
from reward import judge
from rollout import Sampling, decoder_for, sample, stop_token_ids


def pass_at_k(n, c, k):
    """Unbiased estimate of P(at least one of k samples is right) from n samples with c right.

        pass@k = 1 - C(n - c, k) / C(n, k)         (= 1 when n - c < k)
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def fit_context(model, problems, max_new_tokens, desc="eval"):
    """max_new_tokens, cut so that the longest prompt plus its completion fits the model's positions
    (max_position_embeddings: 4,096 in all for Qwen2.5-Math), with one line when it cuts."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = max((len(p["prompt_ids"]) for p in problems), default=0)
    if limit and longest + max_new_tokens > limit:
        cut = max(1, limit - longest)
        print(f"{desc}: {max_new_tokens} new tokens cut to {cut}, so that the longest prompt ({longest} "
              f"tokens) plus its completion fits the model's {limit} positions", file=sys.stderr)
        return cut
    return max_new_tokens


def evaluate(model, tokenizer, problems, sampling, samples=1, seed=0, answer_fallback=False, decoder=None,
             desc="eval", progress=True):
    """Score a model on problems (dicts with "prompt_ids" and "gold"; "problem" is carried along): k =
    `samples` completions of each, drawn as `sampling` says (rollout.Sampling; its max_rows rows at a
    time), ended by any of rollout.stop_token_ids (the tokenizer's EOS and the generation config's, e.g.
    a chat model's end-of-turn token).

    returns {"mean@k": float, "pass@k": float, "results": [...]} where results has one row per problem:
    completions, extracted answers, correct flags (pass@j for other j: pass_at). Sampling uses its own
    generator seeded with `seed`, so evaluating never moves training's RNG. Each completion is judged
    by reward.judge; answer_fallback also reads answers that are not boxed (a "Final Answer:" line, the
    last display-math block, the last number: for models that do not box). decoder: rollout.sample's.
    """
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    sampling = replace(sampling, max_new_tokens=fit_context(model, problems, sampling.max_new_tokens, desc))
    eos = stop_token_ids(model, tokenizer)
    per_batch = max(1, (sampling.max_rows or len(problems) * samples) // samples)
    results = []
    bar = tqdm(total=len(problems), desc=desc, disable=not progress, leave=False)
    for s in range(0, len(problems), per_batch):
        chunk = problems[s:s + per_batch]
        rollout = sample(model, [p["prompt_ids"] for p in chunk], n=samples, sampling=sampling,
                         eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, generator=gen,
                         tokenizer=tokenizer, decoder=decoder)
        for i, p in enumerate(chunk):
            texts = rollout.texts[i * samples:(i + 1) * samples]
            judged = [judge(t, p["gold"], fallback=answer_fallback) for t in texts]     # (answer, right?)
            answers, correct = [a for a, _ in judged], [ok for _, ok in judged]
            results.append({"problem": p.get("problem", ""), "gold": p["gold"], "completions": texts,
                            "answers": answers, "correct": correct})
        bar.update(len(chunk))
    bar.close()
    mean = sum(sum(r["correct"]) / samples for r in results) / max(len(results), 1)
    return {f"mean@{samples}": mean, f"pass@{samples}": pass_at(results, samples), "results": results}


def pass_at(results, j):
    """pass@j over evaluate()'s per-problem results (k samples each, j <= k)."""
    return sum(pass_at_k(len(r["correct"]), sum(r["correct"]), j) for r in results) / max(len(results), 1)


# ---------------------------------------------------------------------------------------------------
# When is G = 2 enough? The share of groups that carry a gradient, from k samples per problem
# ---------------------------------------------------------------------------------------------------
def group_size_diagnostic(results, group_sizes=(2, 4, 8, 16)):
    """From evaluate()'s per-problem results (k samples each): the distribution of pass rates and the
    expected share of informative groups for each G. Returns a dict, and the lines to print."""
    k = len(results[0]["correct"])
    rights = [sum(r["correct"]) for r in results]
    n = len(rights)
    bins = [("0", lambda c: c == 0), ("(0, 1/4]", lambda c: 0 < c <= k / 4),
            ("(1/4, 1/2]", lambda c: k / 4 < c <= k / 2), ("(1/2, 3/4]", lambda c: k / 2 < c <= 3 * k / 4),
            ("(3/4, 1)", lambda c: 3 * k / 4 < c < k), ("1", lambda c: c == k)]
    hist = {name: sum(map(test, rights)) / n for name, test in bins}
    share = {G: sum(informative_share(k, c, G) for c in rights) / n for G in group_sizes}
    some = 1 - hist["0"] - hist["1"]
    lines = [f"pass rates over {k} samples (share of problems): "
             + " | ".join(f"{name}: {v:.0%}" for name, v in hist.items()),
             "expected share of groups with a learning signal, 1 - p^G - (1-p)^G: "
             + " | ".join(f"G = {G}: " + (">= " if G > k else "") + f"{v:.1%}" for G, v in share.items()),
             f"reading: {some:.0%} of your problems give G = 2 a signal (right in some but not all of {k} "
             f"samples), and {share[2]:.0%} of all pairs would carry a gradient; {hist['0']:.0%} were never "
             f"solved and {hist['1']:.0%} always: no group size learns from those."]
    return {"pass_rate_hist": hist, "informative_share": share, "problems_with_signal": some}, lines


def shared_accuracy(model, tokenizer, problems, sampling, samples=1, seed=0, progress=True, decoder=None):
    """Mean@k of evaluate() on problems that the ranks of a torchrun job share: rank r evaluates
    problems r, r + N, r + 2N, ... (seeded seed + r), and the right answers are summed over the ranks.
    In one process it is evaluate()'s mean@k. None when there are no problems."""
    if not problems:
        return None
    rank, _ = parallel.rank_and_world()
    mine = parallel.my_share(problems)
    with parallel.full_weights(model):          # FSDP: whole weights while decoding
        res = evaluate(model, tokenizer, mine, sampling, samples=samples, seed=seed + rank, decoder=decoder,
                       progress=progress and rank == 0)
    right = parallel.all_reduce(torch.tensor(res[f"mean@{samples}"] * len(mine), dtype=torch.float64))
    return right.item() / len(problems)


def add_arguments(ap):
    """The flags eval.py and suite.py share: the model, the prompts, how completions are sampled."""
    ap.add_argument("--model", required=True, help="model directory (or hub id where the network allows)")
    ap.add_argument("--template", default="auto", choices=["auto", "chat", "plain", "raw"])
    ap.add_argument("--samples", type=int, default=None, help="k completions per problem")
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--top-p", type=float, default=None, help="nucleus sampling; 1: off")
    ap.add_argument("--top-k", type=int, default=None, help="top-k sampling; 0: off")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="new tokens per completion at most")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences sampled together")
    ap.add_argument("--out", default="", help="where the results go (default: next to the model)")
    ap.add_argument("--answer-fallback", action="store_true",
                    help="also read answers that are not boxed (a 'Final Answer:' line, the last display-"
                         "math block, the last number), for models that do not box; training never does")
    ap.add_argument("--compile", action="store_true",
                    help="sample with the compiled decode path (compiled.py; CUDA graphs on CUDA; "
                         "same completions, compiles first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")


# the range of each shared flag that takes a number (None: not given, the command's default)
RANGES = {"samples": (lambda x: x >= 1, ">= 1"), "temperature": (lambda x: x >= 0, ">= 0 (0: greedy)"),
          "top_p": (lambda x: 0 < x <= 1, "in (0, 1]"), "top_k": (lambda x: x >= 0, ">= 0 (0: off)"),
          "max_new_tokens": (lambda x: x >= 0, ">= 0 (0: the default)"),
          "batch_size": (lambda x: x >= 1, ">= 1"), "limit": (lambda x: x >= 0, ">= 0 (0: all)")}


def check_arguments(args, samples, temperature):
    """Refuse flags that cannot work before anything loads, as train.py does (config.check_config): one
    line naming every problem, exit 1. samples, temperature: the values the command will use."""
    given = {k: getattr(args, k, None) for k in RANGES}
    problems = [f"--{k.replace('_', '-')} {v} must be {RANGES[k][1]}" for k, v in given.items()
                if v is not None and not RANGES[k][0](v)]
    if samples > 1 and temperature == 0:
        problems.append(f"--samples {samples} needs --temperature > 0 (greedy samples are all the same)")
    problems += [f"--pass-k {j} must be in [1, --samples {samples}]"
                 for j in getattr(args, "pass_k", None) or [] if not 1 <= j <= samples]
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def load_model(args):
    """(model in eval mode, tokenizer, device) of --model on --device, its weights in bf16 on a GPU (an
    evaluation needs no fp32 master copy); a model that is not there is one line, not a traceback."""
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        weights = "bfloat16" if torch.device(device).type == "cuda" else "float32"
        model, tok = load_model_and_tokenizer(args.model, device, weights)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    return model.eval(), tok, device


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--data", default="", help="JSONL problem set; default: the built-in held-out split")
    ap.add_argument("--problem-field", default="", help="default: 'problem', else 'question'")
    ap.add_argument("--answer-field", default="answer")
    ap.add_argument("--pass-k", type=int, nargs="*", default=None, help="pass@j for these j (default k)")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N problems")
    args = ap.parse_args(argv)
    samples = 1 if args.samples is None else args.samples
    temperature = args.temperature if args.temperature is not None else (0.0 if samples == 1 else 1.0)
    check_arguments(args, samples, temperature)
    try:                                            # the data first: a bad file fails before the model
        problems = load_problems(args.data, args.problem_field, args.answer_field) if args.data \
            else tiny_task_problems()["test"]
    except DataError as e:
        raise SystemExit(f"error: {e}")
    problems = problems[:args.limit or None]
    model, tok, device = load_model(args)
    problems = build_prompts(problems, tok, args.template, builtin=not args.data)
    sampling = Sampling(completion_tokens(args.max_new_tokens, args.data), temperature, args.top_p or 1.0,
                        args.top_k or 0, args.batch_size)
    with autocast(device):                       # bf16 on CUDA
        res = evaluate(model, tok, problems, sampling, samples=samples, seed=args.seed,
                       answer_fallback=args.answer_fallback, decoder=decoder_for(model, args.compile))
    out = args.out or os.path.join(args.model if os.path.isdir(args.model) else ".", "eval_results.jsonl")
    write_text(out, "".join(json.dumps(r) + "\n" for r in res["results"]))
    res.update({f"pass@{j}": pass_at(res["results"], j) for j in args.pass_k or []})
    summary = {k: round(v, 4) for k, v in res.items() if k != "results"}
    summary.update(problems=len(problems), samples=samples, temperature=temperature)
    if samples >= 2:                             # when is G = 2 enough for this model on this data?
        diag, lines = group_size_diagnostic(res["results"])
        print("\n".join(lines), file=sys.stderr)
        shares = {str(G): round(v, 4) for G, v in diag["informative_share"].items()}
        summary["group_size"] = {"informative_share": shares,
                                 "problems_with_signal": round(diag["problems_with_signal"], 4)}
    print(json.dumps(summary))
    print(f"per-problem results: {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
