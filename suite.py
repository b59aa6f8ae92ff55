"""suite.py: the paper's five benchmarks with its protocol, in one table beside its own results.

Appendix to chapter 6 (eval.py, whose `evaluate` it runs on each benchmark).

    python suite.py --model runs/math-2grpo/model                  # MATH-500, AMC 2023, Minerva, AIME 2025,
                                                                    # OlympiadBench: Mean@32 / Pass@32
    python suite.py --model DIR --benchmarks a.jsonl b.jsonl        # any files, the same table

The protocol of "It Takes Two" (arXiv 2510.00977): 32 samples per problem at temperature 0.7, top-p
0.8, top-k 20, up to 4096 new tokens (cut where prompt + completion would not fit the model's
positions). The table is the paper's layout, with its Table 1 rows below ours when the model's name
says it is Qwen2.5-Math-1.5B or -7B. Per benchmark, the per-problem results and a summary go to
eval_suite/ beside the model; a second run reuses a benchmark only when every setting that changes a
number is the same (the model's path and a fingerprint of its config and weights, template, seed,
protocol, --compile), and otherwise evaluates it again with a line naming what differs.
"""

import argparse
import json
import os
import sys


from data import DATA_DIR, DataError, build_prompts, load_problems
from checkpoint import model_fingerprint, write_text
from eval import add_arguments, check_arguments, evaluate, load_model
from precision import autocast
from rollout import Sampling, decoder_for

PAPER_SUITE = {"MATH-500": "math500_test.jsonl", "AMC 2023": "amc23_test.jsonl",
               "Minerva": "minerva_math_test.jsonl", "AIME 2025": "aime25_test.jsonl",
               "OlympiadBench": "olympiadbench_test.jsonl"}
# "32 samples per problem at temperature 0.7, top-p 0.8, top-k 20, max length 4096"
PAPER_PROTOCOL = {"samples": 32, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_new_tokens": 4096}
# Table 1 (v2) of "It Takes Two" (arXiv 2510.00977), trained on MATH: Mean@32 / Pass@32 (%), in
# PAPER_SUITE's order; picked when the model's name says which base model it is
PAPER_ROWS = {
    "qwen2.5-math-1.5b": [
        ("paper: Qwen2.5-Math-1.5B base",
         [(31.83, 81.92), (34.30, 79.23), (5.33, 28.91), (3.64, 22.31), (15.40, 37.16)]),
        ("paper: 2-GRPO on MATH (2.05 h)",
         [(69.28, 87.43), (49.53, 81.76), (16.25, 33.26), (9.48, 32.88), (22.31, 37.24)]),
        ("paper: 16-GRPO on MATH (8.53 h)",
         [(70.24, 87.24), (51.25, 83.46), (16.84, 33.46), (10.10, 35.82), (23.11, 37.82)])],
    "qwen2.5-math-7b": [
        ("paper: Qwen2.5-Math-7B base",
         [(47.16, 85.95), (38.36, 85.29), (5.99, 31.10), (5.00, 25.17), (9.83, 34.30)]),
        ("paper: 2-GRPO on MATH (2.43 h)",
         [(75.23, 89.77), (64.60, 81.53), (23.13, 38.45), (12.81, 38.85), (26.39, 40.20)]),
        ("paper: 16-GRPO on MATH (9.30 h)",
         [(75.90, 88.24), (61.79, 80.77), (22.81, 37.68), (13.23, 34.22), (25.99, 40.11)])],
}
NOTES = {"OlympiadBench": "OlympiadBench ids 2791 and 2890 repeat MATH training problems "
                          "(train/intermediate_algebra/753 and 1087) up to LaTeX spacing, with the same "
                          "answers: a model trained on MATH has seen them."}


def suite_files(suite, data_dir=None):
    """{benchmark name: file}: the paper's five benchmarks (suite ["paper"]) or the files given."""
    if suite == ["paper"]:
        data_dir = data_dir or DATA_DIR
        return {name: os.path.join(data_dir, f) for name, f in PAPER_SUITE.items()}
    return {os.path.splitext(os.path.basename(f))[0]: f for f in suite}


def run_suite(model, tok, benchmarks, out_dir, protocol, template="auto", batch_size=64, seed=0,
              model_name="", decoder=None):
    """Evaluate every benchmark of `benchmarks` ({name: (file, load_problems' problems)}) with `protocol`
    (samples, temperature, top_p, top_k, max_new_tokens, answer_fallback); per benchmark, the per-problem
    results (JSONL) and a summary are written to out_dir, atomically, and a benchmark whose summary was
    written with the same settings (the model's path and fingerprint, template, seed, protocol, compile)
    is not evaluated again (the run resumes); one with other settings is evaluated again, with a line
    naming what differs. decoder: rollout.sample's (the compiled one with --compile). Returns
    (summaries, table)."""
    os.makedirs(out_dir, exist_ok=True)
    k, summaries = protocol["samples"], {}
    settings = {"model": model_name, "fingerprint": model_fingerprint(model), "template": template,
                "seed": seed, "protocol": protocol,                            # all that changes a number
                "compile": decoder is not None}
    sampling = Sampling(max_new_tokens=protocol["max_new_tokens"], temperature=protocol["temperature"],
                        top_p=protocol["top_p"], top_k=protocol["top_k"], max_rows=batch_size)
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
            res = evaluate(model, tok, prompts, sampling, samples=k, seed=seed, decoder=decoder, desc=name,
                           answer_fallback=protocol.get("answer_fallback", False))
        write_text(os.path.join(out_dir, slug + ".jsonl"),
                   "".join(json.dumps(r) + "\n" for r in res["results"]))
        summaries[name] = {"file": path, "problems": len(problems), "protocol": protocol,
                           "settings": settings, f"mean@{k}": res[f"mean@{k}"], f"pass@{k}": res[f"pass@{k}"]}
        write_text(summary_path, json.dumps(summaries[name], indent=2))
    names_of_model = f"{model_name} {getattr(model.config, '_name_or_path', '')}"     # path, config's name
    table = suite_table(summaries, k, model_name, names_of_model)
    write_text(os.path.join(out_dir, "table.md"), table + "\n")
    write_text(os.path.join(out_dir, "summary.json"),
               json.dumps({"model": model_name, "benchmarks": summaries}, indent=2))
    return summaries, table


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
    which = (names_of_model or model_name).lower()
    paper = next((rows for key, rows in PAPER_ROWS.items() if key in which), None)
    if paper and names == list(PAPER_SUITE):
        lines += [row(label, pairs) for label, pairs in paper]
        other_k = "" if k == 32 else f"; ours use k = {k}, so Pass@k is not comparable"
        lines += ["", "Paper rows: Table 1 of \"It Takes Two: Your GRPO Is Secretly DPO\" (arXiv 2510.00977, "
                  "v2), Mean@32 / Pass@32" + other_k]
    lines += [NOTES[n] for n in names if n in NOTES]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--benchmarks", nargs="+", default=["paper"],
                    help="'paper' (its five benchmarks, the default) or JSONL files")
    ap.add_argument("--data-dir", default=None, help="where the paper's files are (default: data/ of this "
                                                     "repository)")
    args = ap.parse_args(argv)
    check_arguments(args, PAPER_PROTOCOL["samples"] if args.samples is None else args.samples,
                    PAPER_PROTOCOL["temperature"] if args.temperature is None else args.temperature)
    notes = []                             # what loading said (rows skipped, golds read as text only)
    try:                                   # every file is read (and checked) before the model loads
        benchmarks = {name: (path, load_problems(path, log=notes.append))
                      for name, path in suite_files(args.benchmarks, args.data_dir).items()}
    except DataError as e:
        raise SystemExit(f"error: {e}")
    protocol = {"samples": args.samples or PAPER_PROTOCOL["samples"], "answer_fallback": args.answer_fallback,
                "temperature": (PAPER_PROTOCOL["temperature"] if args.temperature is None
                                else args.temperature),
                "top_p": PAPER_PROTOCOL["top_p"] if args.top_p is None else args.top_p,
                "top_k": PAPER_PROTOCOL["top_k"] if args.top_k is None else args.top_k,
                "max_new_tokens": args.max_new_tokens or PAPER_PROTOCOL["max_new_tokens"]}
    model, tok, _ = load_model(args)
    for note in notes:                     # said once the model is there: a bad --model stays one line
        print(note, file=sys.stderr)
    out = args.out or os.path.join(args.model if os.path.isdir(args.model) else ".", "eval_suite")
    summaries, table = run_suite(model, tok, benchmarks, out, protocol, args.template, args.batch_size,
                                 args.seed, model_name=args.model, decoder=decoder_for(model, args.compile))
    print(table)
    print(f"results per benchmark, table.md and summary.json: {out}", file=sys.stderr)
    return summaries


if __name__ == "__main__":
    main()
