"""How fast is the answer checker? Checks per second on MATH-500 gold answers.

    python bench/reward_speed.py [--data-dir data]
    python bench/reward_speed.py --against ../other-checkout     # now vs another version's checker

Three workloads: each answer against itself (step 1 decides), against a rewritten but equal form
(\\frac{a}{b} -> a/b, spaces added: later steps decide), and against a perturbed, wrong answer
(a digit changed: the slowest path, since every step must fail). The baseline, measured in the same
run, is one GRPO rollout's worth of work it must never dominate: a plain Python string compare
of the same pairs (so the ratio says what the safety and the maths cost). --against DIR loads DIR's
reward.py and mathparse.py beside this checkout's, in the same process, and times the two on each
workload in alternating passes (12 each): the median ratio of the paired passes is robust to the
load of a shared machine, which moves both alike.
"""

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from data import DATA_DIR  # noqa: E402
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


def load_checker(directory, tag):
    """is_equiv of the reward.py in `directory` (with that directory's mathparse.py), loaded under other
    module names so that it sits beside this checkout's."""
    import importlib.util
    saved = sys.modules.pop("mathparse", None)
    try:
        modules = {}
        for name in ("mathparse", "reward"):
            spec = importlib.util.spec_from_file_location(name if name == "mathparse" else f"{tag}_{name}",
                                                          os.path.join(directory, name + ".py"))
            modules[name] = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = modules[name]
            spec.loader.exec_module(modules[name])
        return modules["reward"].is_equiv
    finally:
        sys.modules.pop("mathparse", None)
        if saved is not None:
            sys.modules["mathparse"] = saved


def paired(pairs, ours, theirs, rounds=12):
    """(our checks/s, theirs, the median ratio of paired passes: ours / theirs)."""
    import statistics
    mine, other = [], []
    for _ in range(rounds):
        for fn, out in ((theirs, other), (ours, mine)):
            t0 = time.perf_counter()
            for p, g in pairs:
                fn(p, g)
            out.append(len(pairs) / (time.perf_counter() - t0))
    return (statistics.median(mine), statistics.median(other),
            statistics.median(a / b for a, b in zip(mine, other)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--against", default="", help="another checkout: its checker timed beside this one")
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
    if args.against:
        theirs = load_checker(os.path.abspath(args.against), "against")
        print(f"\nagainst {args.against} (12 alternating passes each; the median ratio of paired passes):")
        print(f"{'workload':<22}{'ours /s':>10}{'theirs /s':>11}{'ours / theirs':>15}")
        for name, pairs in (("same answer", list(zip(golds, golds))),
                            ("rewritten, equal", [(rewrite(g), g) for g in golds]),
                            ("perturbed, wrong", [(perturb(g), g) for g in golds])):
            ours_rate, theirs_rate, ratio = paired(pairs, is_equiv, theirs)
            print(f"{name:<22}{ours_rate:>10.0f}{theirs_rate:>11.0f}{ratio:>14.2f}x", flush=True)


if __name__ == "__main__":
    main()
