"""reward.py side by side with Math-Verify, the checker most GRPO users run.

    pip install "math-verify[antlr4_13_2]"        # for this benchmark only; no project module imports it
    python bench/reward_vs_math_verify.py [--data-dir data] [--gsm8k 400]

A generated set of (completion, gold, expected) pairs built from the gold answers of MATH-500 and
GSM8K: equal rewrites and wrong perturbations, in the answer styles real models write (LaTeX
spellings, long and short decimals, thousands separators, labels, chains of equalities,
inequalities against intervals, \\pm against lists, one box per answer, units). Each completion is
judged by both checkers against its gold: reward.judge(completion, gold), and Math-Verify's
verify(parse("$" + gold + "$"), parse(completion)). Prints the agreement with the expected label per
category for both, where they disagree, checks per second for both (measured in the same run), the
slowest of the test suite's hostile inputs for both, and bench/reward_hacking.py's probe for both:
how many of the wrong completions a policy would game the reward with each checker pays.
"""

import argparse
import importlib.util
import json
import os
import random
import re
import sys
import time
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from data import DATA_DIR  # noqa: E402
from reward import judge, normalize, parse_number, rewards, structure, units  # noqa: E402


def answer_count(gold):
    """How many answers a gold answer lists: its top-level items ("3, -5": 2), 2 for "a \\pm b", else 1."""
    kind, items = structure(normalize(gold))
    return len(items) if kind in ("list", "set", "pm") else 1


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def bump_digit(s, rng):
    """A wrong answer: one digit of s changed."""
    digits = [i for i, c in enumerate(s) if c.isdigit()]
    if not digits:
        return None
    i = rng.choice(digits)
    return s[:i] + str((int(s[i]) + rng.randint(1, 9)) % 10) + s[i + 1:]


def pairs_for(gold, rng):
    """[(category, completion, expected)] for one gold answer."""
    out = [("same", f"The answer is $\\boxed{{{gold}}}$.", True)]
    wrong = None if re.search(r"\\(?:text|mbox)", gold) else bump_digit(gold, rng)     # not a unit's digit
    if wrong and wrong != gold:
        out.append(("digit changed", f"\\boxed{{{wrong}}}", False))
    g = normalize(gold)
    value = parse_number(g.replace(" ", ""))
    if "\\frac" in gold:
        out.append(("latex spelling", f"\\boxed{{{gold.replace(chr(92) + 'frac', chr(92) + 'dfrac')}}}", True))
        out.append(("latex spelling", f"\\boxed{{{gold.replace(chr(92) + 'frac', chr(92) + 'cfrac')}}}", True))
    if value is not None and value.denominator != 1 and "." not in g:
        long = f"{float(value):.12f}"
        out.append(("long decimal", f"\\boxed{{{long}}}", True))
        short = f"{float(value):.3f}"
        out.append(("short decimal", f"\\boxed{{{short}}}", Fraction(short) == value))
    if value is not None and value.denominator == 1:
        n = int(value)
        if abs(n) >= 1000:
            out.append(("thousands", f"\\boxed{{{n:,}}}", True))
            out.append(("comma list", f"\\boxed{{{str(n)[:-3]}, {str(n)[-3:]}}}", False))
        out.append(("label", f"\\boxed{{x = {n}}}", True))
        a = rng.randint(1, 9)
        out.append(("chain", f"\\boxed{{{n - a} + {a} = {n}}}", True))
        out.append(("chain", f"\\boxed{{{n} + {a} = {n + a}}}", False))
        out.append(("units", f"\\boxed{{{n}\\text{{ cm}}}}", units(gold) in ("", "centimeter")))   # differing: wrong
        out.append(("sign", f"\\boxed{{{-n}}}", n == 0))
    m = re.fullmatch(r"\((-?[^,()]+), ?\\infty\)", g)
    if m:
        out.append(("inequality", f"\\boxed{{x > {m.group(1)}}}", True))
        out.append(("inequality", f"\\boxed{{x \\ge {m.group(1)}}}", False))
    m = re.fullmatch(r"\[(-?[^,()]+), ?(-?[^,()]+)\]", g)
    if m:
        out.append(("inequality", f"\\boxed{{{m.group(1)} \\le x \\le {m.group(2)}}}", True))
        out.append(("inequality", f"\\boxed{{{m.group(1)} < x \\le {m.group(2)}}}", False))
    if "\\pm" in gold and gold.count("\\pm") == 1 and "," not in gold:
        plus, minus = gold.replace("\\pm", "+"), gold.replace("\\pm", "-")
        out.append(("pm as a list", f"\\boxed{{{minus}, {plus}}}", True))
        out.append(("pm as a list", f"\\boxed{{{plus}}}", False))
    if answer_count(gold) > 1 and "," in gold and not gold.lstrip().startswith(("(", "[", "\\{")):
        items = [x.strip() for x in gold.split(",")]
        out.append(("one box per answer", " and ".join(f"\\boxed{{{x}}}" for x in reversed(items)), True))
        out.append(("one box per answer", f"\\boxed{{{items[0]}}}", False))
        joined = " \\text{ and } ".join(items)
        out.append(("words between answers", "\\boxed{" + joined + "}", True))
    m = re.fullmatch(r"\((-?\d+), ?(-?\d+)\)", g)
    if m and m.group(1) != m.group(2):
        out.append(("tuple swapped", f"\\boxed{{({m.group(2)}, {m.group(1)})}}", False))
        out.append(("label", f"\\boxed{{(a, b) = {gold}}}", True))
    return out


def generated(data_dir, n_gsm8k, seed=0):
    rng = random.Random(seed)
    golds = [r["answer"] for r in rows(os.path.join(data_dir, "math500_test.jsonl"))]
    golds += [r["answer"].rsplit("####", 1)[1].strip().replace(",", "")
              for r in rows(os.path.join(data_dir, "gsm8k_test.jsonl"))[:n_gsm8k]]
    return [(cat, comp, gold, want) for gold in golds for cat, comp, want in pairs_for(gold, rng)]


def math_verify_judge():
    from math_verify import parse, verify

    def mv(completion, gold):
        try:
            return bool(verify(parse("$" + gold + "$"), parse(completion)))
        except Exception:
            return False
    return mv


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--gsm8k", type=int, default=400, help="GSM8K test answers used (the first N)")
    args = ap.parse_args()
    try:
        mv = math_verify_judge()
    except ImportError:
        raise SystemExit('Math-Verify is not installed: pip install "math-verify[antlr4_13_2]"')
    cases = generated(args.data_dir, args.gsm8k)
    print(f"{len(cases)} pairs from MATH-500 and the first {args.gsm8k} GSM8K answers")
    ours, theirs, t_ours, t_theirs = [], [], 0.0, 0.0
    for _, comp, gold, _ in cases:
        t0 = time.perf_counter()
        ours.append(judge(comp, gold)[1])
        t1 = time.perf_counter()
        theirs.append(mv(comp, gold))
        t_theirs += time.perf_counter() - t1
        t_ours += t1 - t0
    cats = sorted({c for c, *_ in cases})
    print("\n| category | pairs | reward.py agrees | Math-Verify agrees |\n|---|---|---|---|")
    for cat in cats + ["all"]:
        idx = [i for i, c in enumerate(cases) if cat in ("all", c[0])]
        a = sum(ours[i] == cases[i][3] for i in idx)
        b = sum(theirs[i] == cases[i][3] for i in idx)
        name = f"**{cat}**" if cat == "all" else cat
        print(f"| {name} | {len(idx)} | {a} ({100 * a / len(idx):.1f}%) | {b} ({100 * b / len(idx):.1f}%) |")
    print(f"\nchecks per second: reward.py {len(cases) / t_ours:,.0f}, Math-Verify {len(cases) / t_theirs:,.0f} "
          f"(reward.py {t_theirs / t_ours:.1f}x)")
    disagree = [(c, comp, gold, want, o, t) for (c, comp, gold, want), o, t in zip(cases, ours, theirs) if o != t]
    print(f"\n{len(disagree)} pairs where the checkers disagree (category | completion | gold | expected | "
          f"reward.py | Math-Verify), first 40:")
    for d in disagree[:40]:
        print("  ", " | ".join(map(str, d)))
    # the hostile inputs of the test suite
    spec = importlib.util.spec_from_file_location("test_mathparse", os.path.join(HERE, "..", "tests", "test_mathparse.py"))
    tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tests)
    slowest = {"reward.py": (0.0, ""), "Math-Verify": (0.0, "")}
    for text in tests.HOSTILE:
        for name, fn in (("reward.py", lambda t: judge(t, "1")[1]), ("Math-Verify", lambda t: mv(t, "1"))):
            t0 = time.perf_counter()
            fn(text)
            dt = time.perf_counter() - t0
            if dt > slowest[name][0]:
                slowest[name] = (dt, text[:60].encode("unicode_escape").decode())
    print(f"\nhostile inputs ({len(tests.HOSTILE)}): slowest " +
          "; ".join(f"{name} {dt:.2f} s on {txt!r}" for name, (dt, txt) in slowest.items()))
    hacking_probe(args.data_dir, mv)


def hacking_probe(data_dir, mv):
    """bench/reward_hacking.py's attacks on the same real gold answers, judged by both checkers: the
    false positives (wrong completions paid) per attack."""
    spec = importlib.util.spec_from_file_location("reward_hacking", os.path.join(HERE, "reward_hacking.py"))
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    from data import load_problems
    cases = [(attack, completion, p["gold"]) for f in probe.SETS.values()
             for p in load_problems(os.path.join(data_dir, f), log=lambda m: None)
             for attack, completion in probe.attacks(p["gold"], p["problem"])]
    ours = rewards([c for _, c, _ in cases], [g for *_, g in cases])
    theirs = [mv(c, g) for _, c, g in cases]
    print(f"\nreward hacking probe ({len(cases)} wrong completions on the gold answers of "
          f"{', '.join(probe.SETS)}): paid / tried\n")
    print("| attack | tried | reward.py pays | Math-Verify pays |\n|---|---|---|---|")
    for attack in probe.ATTACKS + ["all"]:
        idx = [i for i, (a, *_) in enumerate(cases) if attack in ("all", a)]
        name = f"**{attack}**" if attack == "all" else attack
        print(f"| {name} | {len(idx)} | {sum(ours[i] > 0 for i in idx)} | {sum(bool(theirs[i]) for i in idx)} |")
    paid = [(a, c[:100], g) for (a, c, g), t in zip(cases, theirs) if t]
    print(f"\nMath-Verify pays {len(paid)}; the first 20 (attack | completion | gold):")
    for row in paid[:20]:
        print("  ", " | ".join(row))


if __name__ == "__main__":
    main()
