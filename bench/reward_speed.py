"""How fast is the answer checker? Checks per second on MATH-500 gold answers.

    python bench/reward_speed.py [--data-dir ../shared/data]

Three workloads: each answer against itself (step 1 decides), against a rewritten but equal form
(\\frac{a}{b} -> a/b, spaces added: later steps decide), and against a perturbed, wrong answer
(a digit changed: the slowest path, since every step must fail). The baseline, measured in the same
run, is one GRPO rollout's worth of work it must never dominate: a plain Python string compare
of the same pairs (so the ratio says what the safety and the maths cost).
"""

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from reward import is_equiv  # noqa: E402


def perturb(ans):
    """Change the first digit (0->1, 1->2, ...) or append '+1'."""
    m = re.search(r"\d", ans)
    if not m:
        return ans + "+1"
    d = str((int(m.group()) + 1) % 10)
    return ans[:m.start()] + d + ans[m.end():]


def rewrite(ans):
    """\\frac{a}{b} -> a/b, and a space after each comma that separates items (not after a thousands
    separator: "58, 500" is a list of two numbers, "58,500" one number)."""
    ans = re.sub(r"(?<![\d ])\\frac{(\d+)}{(\d+)}", r"\1/\2", ans)
    return re.sub(r",(?!\s|\\!|\d{3}(?!\d))", ", ", ans)


def rate(pairs):
    t0 = time.perf_counter()
    ok = sum(is_equiv(p, g) for p, g in pairs)
    dt = time.perf_counter() - t0
    return len(pairs) / dt, ok


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.join(here, "..", "..", "shared", "data"))
    args = ap.parse_args()
    with open(os.path.join(args.data_dir, "math500_test.jsonl")) as f:
        golds = [json.loads(line)["answer"] for line in f]
    t0 = time.perf_counter()
    base = sum(p == g for p, g in zip(golds, golds))
    base_rate = len(golds) / max(time.perf_counter() - t0, 1e-9)
    print(f"{'workload':<22}{'checks/s':>10}{'judged equal':>14}")
    for name, pairs in (("same answer", list(zip(golds, golds))),
                        ("rewritten, equal", [(rewrite(g), g) for g in golds]),
                        ("perturbed, wrong", [(perturb(g), g) for g in golds])):
        r, ok = rate(pairs)
        print(f"{name:<22}{r:>10.0f}{ok:>10}/{len(pairs)}")
    print(f"(plain string == ran at {base_rate:.0f}/s on the same pairs, {base} equal)")


if __name__ == "__main__":
    main()
