"""eval.py: accuracy of a model on a problem set: mean@k, pass@k, and per-problem results.

Chapter 6 of the tutorial.

    python eval.py --model runs/default/model --samples 4            # built-in held-out split
    python eval.py --model DIR --data math500_test.jsonl --samples 4 --temperature 0.7 --top-p 0.8 --top-k 20
    python eval.py --model DIR --data FILE.jsonl --samples 1 --temperature 0    # greedy accuracy

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

import torch
from tqdm import tqdm

import parallel
from data import build_prompts, load_model_and_tokenizer, load_problems, tiny_task_problems
from reward import extract_answer, is_equiv
from rollout import sample, stop_token_ids


def pass_at_k(n, c, k):
    """Unbiased estimate of P(at least one of k samples is right) from n samples with c right.

        pass@k = 1 - C(n - c, k) / C(n, k)         (= 1 when n - c < k)
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate(model, tokenizer, problems, samples=1, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=64,
             batch_size=64, seed=0, progress=True, pass_ks=None, eos_token_id=None):
    """Score a model on problems (dicts with "prompt_ids" and "gold"; "problem" is carried along).

    returns {"mean@k": float, "pass@j": float for each j in pass_ks (default [k]), "results": [...]}
    where results has one row per problem: completions, extracted answers, correct flags.
    Sampling uses its own generator seeded with `seed`, so evaluating never moves training's RNG.
    eos_token_id: the id(s) that end a completion; default rollout.stop_token_ids (the tokenizer's EOS
    and the generation config's, e.g. a chat model's end-of-turn token).
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    pass_ks = pass_ks or [samples]
    eos = eos_token_id if eos_token_id is not None else stop_token_ids(model, tokenizer)
    per_batch = max(1, batch_size // samples)
    results = []
    bar = tqdm(total=len(problems), desc="eval", disable=not progress, leave=False)
    for s in range(0, len(problems), per_batch):
        chunk = problems[s:s + per_batch]
        ro = sample(model, [p["prompt_ids"] for p in chunk], n=samples, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, top_k=top_k, eos_token_id=eos,
                    pad_token_id=tokenizer.pad_token_id, generator=gen, tokenizer=tokenizer)
        for i, p in enumerate(chunk):
            texts = ro.texts[i * samples:(i + 1) * samples]
            answers = [extract_answer(t) for t in texts]
            correct = [is_equiv(a, p["gold"]) for a in answers]
            results.append({"problem": p.get("problem", ""), "gold": p["gold"], "completions": texts,
                            "answers": answers, "correct": correct})
        bar.update(len(chunk))
    bar.close()
    n = len(results)
    out = {"mean@%d" % samples: sum(sum(r["correct"]) / samples for r in results) / max(n, 1)}
    for j in pass_ks:
        out["pass@%d" % j] = sum(pass_at_k(samples, sum(r["correct"]), j) for r in results) / max(n, 1)
    out["results"] = results
    return out


def shared_accuracy(model, tokenizer, problems, samples=1, seed=0, progress=True, **kw):
    """Mean@k of evaluate() on problems that the ranks of a torchrun job share: rank r evaluates
    problems r, r + N, r + 2N, ... (seeded seed + r), and the right answers are summed over the ranks.
    In one process it is evaluate()'s mean@k. None when there are no problems."""
    if not problems:
        return None
    rank, _ = parallel.rank_and_world()
    mine = parallel.my_share(problems)
    with parallel.full_weights(model):          # FSDP: whole weights while decoding
        res = evaluate(model, tokenizer, mine, samples=samples, seed=seed + rank, progress=progress and rank == 0, **kw)
    right = parallel.all_reduce(torch.tensor(res[f"mean@{samples}"] * len(mine), dtype=torch.float64))
    return right.item() / len(problems)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory (or hub id where the network allows)")
    ap.add_argument("--data", default="", help="JSONL problem set; default: the built-in task's held-out split")
    ap.add_argument("--problem-field", default="", help="default: 'problem', else 'question'")
    ap.add_argument("--answer-field", default="answer")
    ap.add_argument("--template", default="auto", choices=["auto", "chat", "plain", "raw"])
    ap.add_argument("--samples", type=int, default=1, help="k completions per problem")
    ap.add_argument("--pass-k", type=int, nargs="*", default=None, help="report pass@j for these j (default k)")
    ap.add_argument("--temperature", type=float, default=None, help="default 0 (greedy) for k=1, else 1.0")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: 8 built-in, 1024 with --data")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N problems")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences sampled together")
    ap.add_argument("--out", default="", help="per-problem JSONL (default: eval_results.jsonl next to the model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    temperature = args.temperature if args.temperature is not None else (0.0 if args.samples == 1 else 1.0)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_model_and_tokenizer(args.model, device)
    model.eval()
    if args.data:
        problems = load_problems(args.data, args.problem_field, args.answer_field)
        max_new = args.max_new_tokens or 1024
    else:
        problems = tiny_task_problems()["test"]
        max_new = args.max_new_tokens or 8
    if args.limit:
        problems = problems[:args.limit]
    problems = build_prompts(problems, tok, args.template, builtin=not args.data)
    res = evaluate(model, tok, problems, samples=args.samples, temperature=temperature, top_p=args.top_p,
                   top_k=args.top_k, max_new_tokens=max_new, batch_size=args.batch_size, seed=args.seed,
                   pass_ks=args.pass_k)
    out = args.out or os.path.join(args.model if os.path.isdir(args.model) else ".", "eval_results.jsonl")
    with open(out, "w") as f:
        for r in res["results"]:
            f.write(json.dumps(r) + "\n")
    summary = {k: round(v, 4) for k, v in res.items() if k != "results"}
    summary.update(problems=len(problems), samples=args.samples, temperature=temperature)
    print(json.dumps(summary))
    print(f"per-problem results: {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
