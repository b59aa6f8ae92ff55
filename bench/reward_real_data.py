"""Real-data check of reward.py: does the checker agree with the datasets' own answers?

    python bench/reward_real_data.py [--data-dir data]

For every set that ships reference solutions, the final answer of each reference solution (its last
\\boxed{}, boxed alone and read by reward.extract_answer as a completion would be) must be judged equal
to the set's gold answer (data.load_problems' reading of the row):
  MATH-500, MATH train, Minerva: the last \\boxed{} of `solution` against `answer`;
  OlympiadBench: its solutions carry no \\boxed{}, so its `final_answer` as written (with its $...$)
                 is boxed and checked against `answer`;
  GSM8K test: the "#### N" answer against itself written as \\boxed{N}.
Prints the agreement per set and lists every miss with the checker's reason. The answer fields of MATH
train and Minerva were cut from the last box of the solution; where a solution boxes several answers
in one list ("$\\boxed{(-2,18)}$ and $\\boxed{(8,38)}$"), the reward reads the whole list (reward.py's
rule for several boxes) and the field keeps one: those solutions are counted on a line of their own.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from data import DATA_DIR, load_problems  # noqa: E402
from reward import check, extract_answer, is_equiv, last_boxed  # noqa: E402

# name -> (file, the reference's final answer written as a model would, the row's id)
SETS = {
    "MATH-500": ("math500_test.jsonl", lambda row: "\\boxed{%s}" % last_boxed(row["solution"]), "unique_id"),
    "MATH train": ("math_train.jsonl", lambda row: "\\boxed{%s}" % last_boxed(row["solution"]), "unique_id"),
    "Minerva": ("minerva_math_test.jsonl", lambda row: "\\boxed{%s}" % last_boxed(row["solution"]), "idx"),
    "OlympiadBench": ("olympiadbench_test.jsonl", lambda row: "\\boxed{%s}" % ", ".join(row["final_answer"]), "id"),
    "GSM8K test": ("gsm8k_test.jsonl", lambda row: "\\boxed{%s}" % row["answer"].rsplit("####", 1)[1].strip(), None),
}


def agreement(path, reference, id_field):
    """(right, total, misses): each gold answer of the file against its reference's final answer."""
    with open(path, encoding="utf-8") as f:
        rows = {i: json.loads(line) for i, line in enumerate(f, 1) if line.strip()}
    right, misses = 0, []
    problems = load_problems(path, log=lambda msg: None)         # rows with an empty gold are left out
    for p in problems:
        row = rows[p["line"]]
        pred = extract_answer(reference(row))
        good, reason = check(pred, p["gold"])
        right += good
        if not good:
            misses.append((row.get(id_field, p["line"]) if id_field else p["line"], pred, p["gold"], reason))
    return right, len(problems), misses


def listed_answers(path):
    """Reference solutions whose boxes list several different answers (the reward reads the list)."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    solutions = [r["solution"] for r in rows if isinstance(r.get("solution"), str) and last_boxed(r["solution"])]
    return sum(not is_equiv(extract_answer(s), last_boxed(s)) for s in solutions)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=DATA_DIR)
    args = ap.parse_args()
    t0 = time.perf_counter()
    for name, (file, reference, id_field) in SETS.items():
        right, n, misses = agreement(os.path.join(args.data_dir, file), reference, id_field)
        print(f"{name}: {right}/{n} = {100 * right / n:.1f}%", flush=True)
        listed = listed_answers(os.path.join(args.data_dir, file))
        if listed:
            print(f"  ({listed} reference solutions box several answers in one list, which the reward reads "
                  f"as the list)")
        for m in misses:
            print("  MISS", *m, sep=" | ")
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
