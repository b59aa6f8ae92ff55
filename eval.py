"""eval.py: accuracy of a model on a problem set: mean@k, pass@k, and per-problem results.

Chapter 6 of the tutorial.

    python eval.py --model runs/default/model --samples 4            # built-in held-out split
    python eval.py --model DIR --data math500_test.jsonl --samples 4 --temperature 0.7 --top-p 0.8 --top-k 20
    python eval.py --model DIR --data FILE.jsonl --samples 1 --temperature 0    # greedy accuracy
    python eval.py --model DIR --suite paper      # the paper's five benchmarks, its protocol, its Table 1

For each problem, k completions are sampled and each is checked by reward.py (c of the k are right):
    mean@k = average over problems of c / k           (pass@1 estimated with k samples)
    pass@j = average over problems of 1 - C(k - c, j) / C(k, j)   (Chen et al. 2021, unbiased, j <= k)
The prompt template is the one train.py uses (data.build_prompts), so a model is evaluated on the
prompts it was trained on.
"""

import argparse
import hashlib
import json
import math
import os
import sys

import torch
from tqdm import tqdm

import parallel
from checkpoint import atomic_file
from data import DataError, autocast, build_prompts, load_model_and_tokenizer, load_problems, tiny_task_problems
from reward import judge
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


def fit_context(model, problems, max_new_tokens, desc="eval"):
    """max_new_tokens, cut so that the longest prompt plus its completion fits the model's positions
    (max_position_embeddings: 4,096 in all for Qwen2.5-Math), with one line when it cuts."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = max((len(p["prompt_ids"]) for p in problems), default=0)
    if limit and longest + max_new_tokens > limit:
        cut = max(1, limit - longest)
        print(f"{desc}: {max_new_tokens} new tokens cut to {cut}, so that the longest prompt ({longest} tokens) "
              f"plus its completion fits the model's {limit} positions", file=sys.stderr)
        return cut
    return max_new_tokens


def evaluate(model, tokenizer, problems, samples=1, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=64,
             batch_size=64, seed=0, progress=True, pass_ks=None, eos_token_id=None, desc="eval", answer_fallback=False,
             compile=False):
    """Score a model on problems (dicts with "prompt_ids" and "gold"; "problem" is carried along).

    returns {"mean@k": float, "pass@j": float for each j in pass_ks (default [k]), "results": [...]}
    where results has one row per problem: completions, extracted answers, correct flags.
    Sampling uses its own generator seeded with `seed`, so evaluating never moves training's RNG.
    Each completion is judged by reward.judge; answer_fallback also reads answers that are not boxed
    (a "Final Answer:" line, the last display-math block, the last number: for models that do not box).
    eos_token_id: the id(s) that end a completion; default rollout.stop_token_ids (the tokenizer's EOS
    and the generation config's, e.g. a chat model's end-of-turn token). compile: rollout.sample's
    compiled decode path (same completions; faster on a GPU once compiled).
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    pass_ks = pass_ks or [samples]
    max_new_tokens = fit_context(model, problems, max_new_tokens, desc)
    eos = eos_token_id if eos_token_id is not None else stop_token_ids(model, tokenizer)
    per_batch = max(1, batch_size // samples)
    results = []
    bar = tqdm(total=len(problems), desc=desc, disable=not progress, leave=False)
    for s in range(0, len(problems), per_batch):
        chunk = problems[s:s + per_batch]
        ro = sample(model, [p["prompt_ids"] for p in chunk], n=samples, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, top_k=top_k, eos_token_id=eos,
                    pad_token_id=tokenizer.pad_token_id, generator=gen, tokenizer=tokenizer, compile=compile)
        for i, p in enumerate(chunk):
            texts = ro.texts[i * samples:(i + 1) * samples]
            judged = [judge(t, p["gold"], fallback=answer_fallback) for t in texts]     # (answer, right?)
            answers, correct = [a for a, _ in judged], [ok for _, ok in judged]
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


# ---------------------------------------------------------------------------------------------------
# When is G = 2 enough? The share of groups that carry a gradient, from k samples per problem
# ---------------------------------------------------------------------------------------------------
def informative_share(k, c, G):
    """Expected share of groups of G rollouts whose rewards are not all equal (a nonzero advantage,
    so a gradient), for a problem with c of k samples right:

        1 - P(all G right) - P(all G wrong) = 1 - p^G - (1 - p)^G      (G = 2: 2 p (1 - p))

    For G <= k, P(all G right) is estimated without bias by C(c, G) / C(k, G) (G of the k samples
    drawn without replacement, as in pass@k). For G > k the k samples cannot say: the share only
    grows with G, so the estimate at G = k is returned, a lower bound."""
    G = min(G, k)
    return 1.0 - (math.comb(c, G) + math.comb(k - c, G)) / math.comb(k, G)


def group_size_diagnostic(results, group_sizes=(2, 4, 8, 16)):
    """From evaluate()'s per-problem results (k samples each): the distribution of pass rates and the
    expected share of informative groups for each G. Returns a dict, and the lines to print."""
    k = len(results[0]["correct"])
    rights = [sum(r["correct"]) for r in results]
    n = len(rights)
    bins = [("0", lambda c: c == 0), ("(0, 1/4]", lambda c: 0 < c <= k / 4), ("(1/4, 1/2]", lambda c: k / 4 < c <= k / 2),
            ("(1/2, 3/4]", lambda c: k / 2 < c <= 3 * k / 4), ("(3/4, 1)", lambda c: 3 * k / 4 < c < k), ("1", lambda c: c == k)]
    hist = {name: sum(map(test, rights)) / n for name, test in bins}
    share = {G: sum(informative_share(k, c, G) for c in rights) / n for G in group_sizes}
    some = 1 - hist["0"] - hist["1"]
    lines = [f"pass rates over {k} samples (share of problems): "
             + " | ".join(f"{name}: {v:.0%}" for name, v in hist.items()),
             "expected share of groups with a learning signal, 1 - p^G - (1-p)^G: "
             + " | ".join(f"G = {G}: " + (">= " if G > k else "") + f"{v:.1%}" for G, v in share.items()),
             f"reading: {some:.0%} of your problems give G = 2 a signal (right in some but not all of {k} samples), "
             f"and {share[2]:.0%} of all pairs would carry a gradient; {hist['0']:.0%} were never solved and "
             f"{hist['1']:.0%} always: no group size learns from those."]
    return {"pass_rate_hist": hist, "informative_share": share, "problems_with_signal": some}, lines


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


# ---------------------------------------------------------------------------------------------------
# The paper's table: five benchmarks with its protocol, its own rows beside ours
# ---------------------------------------------------------------------------------------------------
PAPER_SUITE = {"MATH-500": "math500_test.jsonl", "AMC 2023": "amc23_test.jsonl", "Minerva": "minerva_math_test.jsonl",
               "AIME 2025": "aime25_test.jsonl", "OlympiadBench": "olympiadbench_test.jsonl"}
# "32 samples per problem at temperature 0.7, top-p 0.8, top-k 20, max length 4096"
PAPER_PROTOCOL = {"samples": 32, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_new_tokens": 4096}
# Table 1 (v2) of "It Takes Two" (arXiv 2510.00977), trained on MATH: Mean@32 / Pass@32 (%), in
# PAPER_SUITE's order; picked when the model's name says which base model it is
PAPER_ROWS = {
    "qwen2.5-math-1.5b": [
        ("paper: Qwen2.5-Math-1.5B base", [(31.83, 81.92), (34.30, 79.23), (5.33, 28.91), (3.64, 22.31), (15.40, 37.16)]),
        ("paper: 2-GRPO on MATH (2.05 h)", [(69.28, 87.43), (49.53, 81.76), (16.25, 33.26), (9.48, 32.88), (22.31, 37.24)]),
        ("paper: 16-GRPO on MATH (8.53 h)", [(70.24, 87.24), (51.25, 83.46), (16.84, 33.46), (10.10, 35.82), (23.11, 37.82)])],
    "qwen2.5-math-7b": [
        ("paper: Qwen2.5-Math-7B base", [(47.16, 85.95), (38.36, 85.29), (5.99, 31.10), (5.00, 25.17), (9.83, 34.30)]),
        ("paper: 2-GRPO on MATH (2.43 h)", [(75.23, 89.77), (64.60, 81.53), (23.13, 38.45), (12.81, 38.85), (26.39, 40.20)]),
        ("paper: 16-GRPO on MATH (9.30 h)", [(75.90, 88.24), (61.79, 80.77), (22.81, 37.68), (13.23, 34.22), (25.99, 40.11)])],
}
NOTES = {"OlympiadBench": "OlympiadBench ids 2791 and 2890 repeat MATH training problems (train/intermediate_algebra/"
                          "753 and 1087) up to LaTeX spacing, with the same answers: a model trained on MATH has seen them."}


def find_data_dir():
    """Where the benchmark files are: ./data beside this file, else ../shared/data (this project's
    workspace), else the current directory."""
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.path.join(here, "data"), os.path.join(here, "..", "shared", "data")):
        if os.path.isfile(os.path.join(d, PAPER_SUITE["MATH-500"])):
            return d
    return "."


def suite_files(suite, data_dir=None):
    """{benchmark name: file}: the paper's five benchmarks (suite ["paper"]) or the files given."""
    if suite == ["paper"]:
        data_dir = data_dir or find_data_dir()
        return {name: os.path.join(data_dir, f) for name, f in PAPER_SUITE.items()}
    return {os.path.splitext(os.path.basename(f))[0]: f for f in suite}


def _write_atomic(path, text):
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def run_suite(model, tok, benchmarks, out_dir, protocol, template="auto", batch_size=64, seed=0, model_name="",
              compile=False):
    """Evaluate every benchmark of `benchmarks` ({name: (file, load_problems' problems)}) with `protocol` (samples, temperature, top_p, top_k,
    max_new_tokens, answer_fallback); per benchmark, the per-problem results (JSONL) and a summary are written to
    out_dir, atomically, and a benchmark whose summary was written with the same settings (the model's path
    and fingerprint, template, seed, protocol, compile) is not evaluated again (the run resumes); one
    with other settings is evaluated again, with a line naming what differs. Returns (summaries, table)."""
    os.makedirs(out_dir, exist_ok=True)
    k, summaries = protocol["samples"], {}
    settings = {"model": model_name, "fingerprint": model_fingerprint(model), "template": template, "seed": seed,
                "protocol": protocol, "compile": bool(compile)}          # everything that changes a number
    for name, (path, problems) in benchmarks.items():
        slug = name.lower().replace(" ", "_").replace("-", "")
        summary_path = os.path.join(out_dir, slug + ".summary.json")
        if os.path.exists(summary_path):
            done = json.load(open(summary_path))
            differ = [key for key in settings if done.get("settings", {}).get(key) != settings[key]]
            differ += ["problems"] * (done.get("problems") != len(problems))
            if not differ:
                print(f"{name}: done earlier ({summary_path})", file=sys.stderr)
                summaries[name] = done
                continue
            print(f"{name}: evaluating again: the results in {summary_path} were made with another "
                  f"{', '.join(differ)}", file=sys.stderr)
        prompts = build_prompts(problems, tok, template)
        with autocast(next(model.parameters()).device):
            res = evaluate(model, tok, prompts, samples=k, temperature=protocol["temperature"], top_p=protocol["top_p"],
                           top_k=protocol["top_k"], max_new_tokens=protocol["max_new_tokens"], batch_size=batch_size,
                           seed=seed, pass_ks=[1, k], desc=name, answer_fallback=protocol.get("answer_fallback", False),
                           compile=compile)
        _write_atomic(os.path.join(out_dir, slug + ".jsonl"), "".join(json.dumps(r) + "\n" for r in res["results"]))
        summaries[name] = {"file": path, "problems": len(problems), "protocol": protocol, "settings": settings,
                           f"mean@{k}": res[f"mean@{k}"], f"pass@{k}": res[f"pass@{k}"]}
        _write_atomic(summary_path, json.dumps(summaries[name], indent=2))
    table = suite_table(summaries, k, model_name, f"{model_name} {getattr(model.config, '_name_or_path', '')}")
    _write_atomic(os.path.join(out_dir, "table.md"), table + "\n")
    _write_atomic(os.path.join(out_dir, "summary.json"), json.dumps({"model": model_name, "benchmarks": summaries},
                                                                     indent=2))
    return summaries, table


def model_fingerprint(model):
    """16 hex digits that change with the model's config or any of its weights: a hash of the config and,
    per tensor, its name, shape, dtype, sum and first values (reductions on the device: no copy)."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, t in model.state_dict().items():
            flat = t.detach().flatten()
            h.update(f"{name}{tuple(t.shape)}{t.dtype}{flat.double().sum().item()!r}"
                     f"{flat[:4].double().tolist()}".encode())
    return h.hexdigest()[:16]


def suite_table(summaries, k, model_name="", names_of_model=""):
    """The paper's layout: one row per model, Mean@k / Pass@k (%) per benchmark and their average;
    the paper's own rows (Table 1) below ours when names_of_model (its path, its config's name) say
    which base model it is."""
    names = list(summaries)
    cells = [(100 * s[f"mean@{k}"], 100 * s[f"pass@{k}"]) for s in summaries.values()]

    def row(label, pairs):
        avg = (sum(m for m, _ in pairs) / len(pairs), sum(p for _, p in pairs) / len(pairs))
        return f"| {label} | " + " | ".join(f"{m:.2f} / {p:.2f}" for m, p in pairs + [avg]) + " |"
    lines = [f"Mean@{k} / Pass@{k} (%)", "", "| model | " + " | ".join(names) + " | average |",
             "|---|" + "---|" * (len(names) + 1), row(model_name or "this model", cells)]
    paper = next((rows for key, rows in PAPER_ROWS.items() if key in (names_of_model or model_name).lower()), None)
    if paper and names == list(PAPER_SUITE):
        lines += [row(label, pairs) for label, pairs in paper]
        lines += ["", "Paper rows: Table 1 of \"It Takes Two: Your GRPO Is Secretly DPO\" (arXiv 2510.00977, v2), "
                  "Mean@32 / Pass@32" + ("" if k == 32 else f"; ours use k = {k}, so Pass@k is not comparable")]
    lines += [NOTES[n] for n in names if n in NOTES]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory (or hub id where the network allows)")
    ap.add_argument("--data", default="", help="JSONL problem set; default: the built-in task's held-out split")
    ap.add_argument("--suite", nargs="+", default=None, help="'paper' (its five benchmarks) or JSONL files: one "
                                                             "table, results per benchmark, resumable")
    ap.add_argument("--data-dir", default=None, help="where --suite paper finds its files (default: ./data, "
                                                     "else ../shared/data)")
    ap.add_argument("--problem-field", default="", help="default: 'problem', else 'question'")
    ap.add_argument("--answer-field", default="answer")
    ap.add_argument("--template", default="auto", choices=["auto", "chat", "plain", "raw"])
    ap.add_argument("--samples", type=int, default=None, help="k completions per problem (default 1; suite: 32)")
    ap.add_argument("--pass-k", type=int, nargs="*", default=None, help="report pass@j for these j (default k)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="default 0 (greedy) for k=1, else 1.0; suite: 0.7")
    ap.add_argument("--top-p", type=float, default=None, help="default 1 (off); suite: 0.8")
    ap.add_argument("--top-k", type=int, default=None, help="default 0 (off); suite: 20")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="default: 8 built-in, 1024 with --data, 4096 with --suite")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N problems")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences sampled together")
    ap.add_argument("--out", default="", help="per-problem JSONL (default: eval_results.jsonl next to the model); "
                                              "with --suite a directory (default: eval_suite next to the model)")
    ap.add_argument("--answer-fallback", action="store_true",
                    help="also read answers that are not boxed (a 'Final Answer:' line, the last display-math block, "
                         "the last number), for models that do not box; training never does")
    ap.add_argument("--compile", action="store_true", help="sample with rollout.py's compiled decode path (CUDA "
                                                           "graphs on CUDA; same completions, compiles first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        return suite_main(args) if args.suite else evaluate_main(args)
    except DataError as e:
        raise SystemExit(f"error: {e}")


def _load(args):
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_model_and_tokenizer(args.model, device)
    return model.eval(), tok, device


def suite_main(args):
    # every file is read (and checked) before the model loads
    benchmarks = {name: (path, load_problems(path)) for name, path in suite_files(args.suite, args.data_dir).items()}
    protocol = {"samples": args.samples or PAPER_PROTOCOL["samples"], "answer_fallback": args.answer_fallback,
                "temperature": PAPER_PROTOCOL["temperature"] if args.temperature is None else args.temperature,
                "top_p": PAPER_PROTOCOL["top_p"] if args.top_p is None else args.top_p,
                "top_k": PAPER_PROTOCOL["top_k"] if args.top_k is None else args.top_k,
                "max_new_tokens": args.max_new_tokens or PAPER_PROTOCOL["max_new_tokens"]}
    model, tok, device = _load(args)
    out = args.out or os.path.join(args.model if os.path.isdir(args.model) else ".", "eval_suite")
    summaries, table = run_suite(model, tok, benchmarks, out, protocol, args.template, args.batch_size, args.seed,
                                 model_name=args.model, compile=args.compile)
    print(table)
    print(f"results per benchmark, table.md and summary.json: {out}", file=sys.stderr)
    return summaries


def evaluate_main(args):
    samples = args.samples or 1
    temperature = args.temperature if args.temperature is not None else (0.0 if samples == 1 else 1.0)
    if args.data:                                           # the data first: a bad file fails before the model
        problems = load_problems(args.data, args.problem_field, args.answer_field)
        max_new = args.max_new_tokens or 1024
    else:
        problems = tiny_task_problems()["test"]
        max_new = args.max_new_tokens or 8
    if args.limit:
        problems = problems[:args.limit]
    model, tok, device = _load(args)
    problems = build_prompts(problems, tok, args.template, builtin=not args.data)
    with autocast(device):                       # bf16 on CUDA
        res = evaluate(model, tok, problems, samples=samples, temperature=temperature, top_p=args.top_p or 1.0,
                       top_k=args.top_k or 0, max_new_tokens=max_new, batch_size=args.batch_size, seed=args.seed,
                       pass_ks=args.pass_k, answer_fallback=args.answer_fallback, compile=args.compile)
    out = args.out or os.path.join(args.model if os.path.isdir(args.model) else ".", "eval_results.jsonl")
    _write_atomic(out, "".join(json.dumps(r) + "\n" for r in res["results"]))
    summary = {k: round(v, 4) for k, v in res.items() if k != "results"}
    summary.update(problems=len(problems), samples=samples, temperature=temperature)
    if samples >= 2:                             # when is G = 2 enough for this model on this data?
        diag, lines = group_size_diagnostic(res["results"])
        print("\n".join(lines), file=sys.stderr)
        summary["group_size"] = {"informative_share": {str(G): round(v, 4) for G, v in diag["informative_share"].items()},
                                 "problems_with_signal": round(diag["problems_with_signal"], 4)}
    print(json.dumps(summary))
    print(f"per-problem results: {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
