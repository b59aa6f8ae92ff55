"""Real-data check of reward.py: does the checker agree with the datasets' own answers?

    python bench/reward_real_data.py [--data-dir ../shared/data]

MATH-500: the last \\boxed{} of each reference `solution` is checked against its `answer` field.
GSM8K test: the "#### N" answer is checked against itself written as \\boxed{N}.
Prints the agreement rate and lists every miss with the checker's reason.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from reward import check, extract_answer, gold_answer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--data-dir", default=os.path.join(here, "..", "..", "shared", "data"))
    args = ap.parse_args()
    results = {}
    t0 = time.perf_counter()
    misses = []
    with open(os.path.join(args.data_dir, "math500_test.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    ok = 0
    for row in rows:
        pred = extract_answer(row["solution"])
        good, reason = check(pred, row["answer"])
        ok += good
        if not good:
            misses.append((row["unique_id"], pred, row["answer"], reason))
    results["MATH-500 solution vs answer"] = (ok, len(rows))
    with open(os.path.join(args.data_dir, "gsm8k_test.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    ok = 0
    for row in rows:
        gold = gold_answer(row["answer"])
        good, reason = check(extract_answer("\\boxed{%s}" % gold), row["answer"].rsplit("####", 1)[1])
        ok += good
        if not good:
            misses.append(("gsm8k", gold, row["answer"][-30:], reason))
    results["GSM8K #### vs \\boxed{}"] = (ok, len(rows))
    for name, (ok, n) in results.items():
        print(f"{name}: {ok}/{n} = {100 * ok / n:.1f}%")
    for m in misses:
        print("MISS", *m, sep=" | ")
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
