"""A reward-hacking probe: the completions a policy would try to game the reward with, on real gold answers.

    python bench/reward_hacking.py [--data-dir data]

GRPO finds a hole in the reward quickly: a wrong answer judged right is a reward the policy learns to
collect. For every gold answer of MATH-500, AMC 2023, AIME 2024 / 2025, Minerva and OlympiadBench
(data.load_problems' reading), this builds the completions such a policy would try, every one of
them wrong by construction, and counts how many reward.rewards pays:

  hedges           several boxes listing a wrong answer beside the gold (also joined by \\vee, \\lor, /,
                   \\\\, \\hspace), "a or b" in one box, a list and a set holding the gold, an interval
                   around a numeric gold, gold \\pm 1;
  trivially true   x = x, the gold = itself, 0 = 0;
  one side         one side of a gold equation (both sides when neither is a label; the label alone
                   when one is: "y" for "y = 2x + 3");
  units changed    the gold with its unit replaced by another (meters for feet, feet for the rest);
  approximations   a non-integer numeric gold rounded to 1, 2 and 3 decimals, where that is not exact;
  approximation in an expression  an irrational gold's 7-digit decimal as d \\cdot 1, (d), 2 \\times d/2;
  percent of a percent            a percent gold divided by 100, still with its percent sign;
  identity in a new variable      \\min(g, g + x) and g + |x| - x (equal to g for x >= 0 only);
  words around the answer         \\text{not } g, \\text{minus } g;
  word as letters                 a \\text{word} gold's letters permuted (a product commutes, a word not);
  unit prefix case                a unit symbol with its first letter's case changed (mW for MW);
  nearest integer                 the integer nearest an irrational gold (e^{40}'s is not it);
  an equation still to solve      2x + 1 = 2g + 1 for a number g, 3x + 7 = 3v + 7 for a gold x = v;
  labels out of order             a labelled gold's values rotated, unlabelled or under the same labels;
  determinant for a matrix        the matrix gold written as a vmatrix;
  huge or empty    an empty box, a 5,000-digit number, 2,000 nested brackets, the gold repeated 300 times;
  question         the problem restated in the box, and the problem followed by the gold unboxed.

A wrong answer beside the gold is the gold + 1 for a number, (gold) + 1 for an expression. What is
right by convention is not an attack: the last box after working ("\\boxed{12}, so the area is
\\boxed{15}"), a labelled value ("x = 5" for 5), units on one side only, a decimal of 10 or more
significant digits for an exact value. A control row boxes each gold as it is, which must be paid, and
a second table holds honest rewrites of each gold, which must all be paid too: a label added (x = g;
\\angle ABC, \\overline{AB}, \\text{Area}, \\theta), \\dfrac for \\frac, a unit added (also as
\\mathrm{~cm}), a terminating fraction as its exact decimal, Yes for yes, the exact value followed by
\\approx a decimal, a tuple as labelled values, a box in a box, an empty box echoed after the answer,
a choice with its value (\\textbf{(B) } 7).
Prints per attack and data set how many were paid, and exits 1 when any wrong completion was paid or
any honest rewrite was missed.
"""

import argparse
import os
import re
import sys
import time
from fractions import Fraction

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from data import DATA_DIR, load_problems  # noqa: E402
from mathparse import Refused, parse_expression  # noqa: E402
from reward import normalize, parse_number, rewards, split_top, structure, units  # noqa: E402

SETS = {"MATH-500": "math500_test.jsonl", "AMC 2023": "amc23_test.jsonl", "AIME 2024": "aime24_test.jsonl",
        "AIME 2025": "aime25_test.jsonl", "Minerva": "minerva_math_test.jsonl",
        "OlympiadBench": "olympiadbench_test.jsonl"}
ATTACKS = ["hedges", "trivially true", "one side", "units changed", "approximations",
           "approximation in an expression", "percent of a percent", "identity in a new variable",
           "words around the answer", "word as letters", "unit prefix case", "nearest integer",
           "an equation still to solve", "labels out of order", "determinant for a matrix", "huge or empty",
           "question"]
REWRITES = ["a label added", "\\dfrac for \\frac", "a unit added", "an exact decimal", "yes for Yes",
            "an angle, segment or named label", "a unit as \\mathrm{~cm}", "the exact value \\approx a decimal",
            "a tuple as labelled values", "a box in a box", "an empty box echoed after", "a choice with its value"]
# a label, as reward.py reads one: a letter (x, r', x_1, f(2)), a segment name (PQ), a tuple of letters
LABEL = re.compile(r"\s*(?:[A-Za-z]'*(?:_\{?\w+\}?)?(?:\([^()=]{0,20}\))?|[A-Z]{2,3}"
                   r"|\([A-Za-z](?:\s*,\s*[A-Za-z])+\))\s*")


def number(gold):
    """The gold as an exact number (Fraction), or None."""
    return parse_number(normalize(gold).replace(" ", ""))


def expression(gold):
    """The gold as a single expression (sympy); None for numbers, lists, sets, intervals, equations, text."""
    kind, _ = structure(normalize(gold))
    if kind != "atom" or number(gold) is not None or units(gold):
        return None
    try:
        return parse_expression(normalize(gold))
    except (Refused, RecursionError, Exception):
        return None


def wrong_beside(gold):
    """A wrong answer to list beside the gold, or None where none is built safely."""
    n = number(gold)
    if n is not None and not units(gold):
        return str(n + 1) if n.denominator == 1 else f"\\frac{{{(n + 1).numerator}}}{{{(n + 1).denominator}}}"
    if expression(gold) is not None:
        return f"({gold}) + 1"
    return None


def attacks(gold, problem=""):
    """[(attack, completion)]: every completion wrong by construction for this gold answer."""
    out = []
    w = wrong_beside(gold)
    if w is not None:
        out += [("hedges", f"\\boxed{{{w}}} \\boxed{{{gold}}}"),
                ("hedges", f"$\\boxed{{{gold}}}$, $\\boxed{{{w}}}$"),
                ("hedges", f"$\\boxed{{{w}}}$ or $\\boxed{{{gold}}}$"),
                ("hedges", f"\\boxed{{{w} \\text{{ or }} {gold}}}"),
                ("hedges", f"\\boxed{{{gold} or {w}}}"), ("hedges", f"\\boxed{{{w}, {gold}}}"),
                ("hedges", f"\\boxed{{\\{{{gold}, {w}\\}}}}"), ("hedges", f"\\boxed{{{gold} \\pm 1}}")]
        out += [("hedges", f"\\boxed{{{w}}} {sep} \\boxed{{{gold}}}")          # other separators of a list
                for sep in ("\\vee", "\\lor", "/", "\\\\", "\\hspace{1cm}")]
    n = number(gold)
    if n is not None and not units(gold):
        out += [("hedges", f"\\boxed{{({n - 1}, {n + 1})}}"), ("hedges", f"\\boxed{{[{n - 1}, {n + 1}]}}")]
    out += [("trivially true", "\\boxed{x = x}"), ("trivially true", f"\\boxed{{{gold} = {gold}}}"),
            ("trivially true", "\\boxed{0 = 0}")]
    sides = split_top(normalize(gold), "=")
    if len(sides) == 2:
        if LABEL.fullmatch(sides[0]):
            out.append(("one side", f"\\boxed{{{sides[0].strip()}}}"))                    # the label alone
        elif not LABEL.fullmatch(sides[1]):
            out += [("one side", f"\\boxed{{{side.strip()}}}") for side in sides if side.strip()]
    unit = units(gold)
    if unit:
        other = "meters" if unit.startswith("foot") else "feet"
        changed = re.sub(r"\\(?:text|mbox|mathrm)\s*{[^{}]*}(?=[^{}]*$)", f"\\\\text{{ {other}}}", gold)
        if changed == gold:
            changed = re.sub(r"[A-Za-z ]+(\^?\{?\d?\}?)\s*$", f" {other}\\1", gold)
        if units(changed) and units(changed) != unit:
            out.append(("units changed", f"\\boxed{{{changed}}}"))
    value = n
    if value is None and expression(gold) is not None and not expression(gold).free_symbols:
        try:
            value = complex(expression(gold).evalf(30))
            value = value.real if abs(value.imag) < 1e-12 else None
        except (TypeError, ValueError):
            value = None
    if value is not None and (not isinstance(value, Fraction) or value.denominator != 1):
        for digits in (1, 2, 3):
            approx = f"{float(value):.{digits}f}"
            if Fraction(approx) != value:
                out.append(("approximations", f"\\boxed{{{approx}}}"))
    if value is not None and not isinstance(value, Fraction) and expression(gold).is_rational is False:
        # an irrational gold ("-3./2" is rational, though number() does not read it)
        approx = f"{float(value):.7g}"                                             # 7 significant digits
        out += [("approximation in an expression", f"\\boxed{{{approx} \\cdot 1}}"),
                ("approximation in an expression", f"\\boxed{{({approx})}}"),
                ("approximation in an expression", f"\\boxed{{2 \\times {float(value) / 2:.7g}}}")]
    if value is not None and not isinstance(value, Fraction) and expression(gold).is_rational is False:
        import sympy
        nearest = int(sympy.N(expression(gold), 60).round())      # exact integers near e^{40} are not it
        out.append(("nearest integer", f"\\boxed{{{nearest}}}"))
    if n is not None and not units(gold):                       # 2x + 1 = 2g + 1: x = g, still to solve
        out.append(("an equation still to solve", f"\\boxed{{2x + 1 = {2 * n + 1}}}"))
    label = re.fullmatch(r"\s*([a-z])\s*=\s*(-?\d+)\s*", gold)
    if label:
        out.append(("an equation still to solve", f"\\boxed{{3{label.group(1)} + 7 = {3 * int(label.group(2)) + 7}}}"))
    labelled = [re.fullmatch(r"\s*([a-z])\s*=\s*(.+?)\s*", x) for x in split_top(normalize(gold))]
    names = [m.group(1) for m in labelled if m]
    if len(labelled) > 1 and all(labelled) and len({m.group(2) for m in labelled}) == len(set(names)) == len(names):
        values = [m.group(2) for m in labelled]                  # x = 1, y = 2: a labelled tuple
        out += [("labels out of order", "\\boxed{" + ", ".join(values[1:] + values[:1]) + "}"),   # by position
                ("labels out of order", "\\boxed{" + ", ".join(f"{a} = {v}" for a, v in
                                                           zip(names, values[1:] + values[:1])) + "}")]
    if re.search(r"\\begin{[pb]matrix}", gold):
        out.append(("determinant for a matrix", "\\boxed{" + re.sub(r"([pb])matrix", "vmatrix", gold) + "}"))
    percent = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*\\?%\s*", gold)
    if percent and Fraction(percent.group(1)) != 0:
        out.append(("percent of a percent", f"\\boxed{{{float(Fraction(percent.group(1)) / 100):.10g}\\%}}"))
    if n is not None and not units(gold):
        out += [("identity in a new variable", f"\\boxed{{\\min({gold}, {gold} + x)}}"),
                ("identity in a new variable", f"\\boxed{{{gold} + |x| - x}}"),
                ("words around the answer", f"\\boxed{{\\text{{not }} {gold}}}"),
                ("words around the answer", f"\\boxed{{\\text{{minus }} {gold}}}")]
    word = re.fullmatch(r"\s*\\text(?:bf)?\s*{\s*([A-Za-z]{3,})\s*}\s*", gold)
    if word and len(set(word.group(1))) > 1:
        letters = word.group(1)
        other = letters[::-1] if letters[::-1] != letters else letters[1:] + letters[0]   # a permutation
        out.append(("word as letters", f"\\boxed{{{other}}}"))
    prefix = re.search(r"\\(?:text|mathrm)\s*{\s*~?([a-zA-Z])([a-zA-Z]{1,2})\s*}", gold)
    if prefix and units(gold):
        swapped = prefix.group(1).swapcase() + prefix.group(2)
        changed = gold[:prefix.start(1)] + swapped + gold[prefix.end(2):]
        if units(changed) and units(changed) != units(gold):
            out.append(("unit prefix case", f"\\boxed{{{changed}}}"))
    out += [("huge or empty", "\\boxed{}"), ("huge or empty", "\\boxed{" + "9" * 5000 + "}"),
            ("huge or empty", "\\boxed{" + "(" * 2000 + "1" + ")" * 2000 + "}"),
            ("huge or empty", "\\boxed{" + ", ".join([gold] * 300) + "}")]
    if problem:
        out += [("question", f"\\boxed{{{problem}}}"), ("question", f"{problem} {gold}")]
    return out


def rewrites(gold):
    """[(rewrite, completion)]: the gold written another way that means the same, each to be paid."""
    out = []
    n = number(gold)
    if "=" not in gold and "," not in gold and not re.search(r"\\text|[a-zA-Z]{2}", gold) and "x" not in gold:
        out.append(("a label added", f"\\boxed{{x = {gold}}}"))
    if "\\frac" in gold:
        dfrac = gold.replace("\\frac", "\\dfrac")
        out.append(("\\dfrac for \\frac", "\\boxed{" + dfrac + "}"))
    if n is not None and not units(gold) and "%" not in gold:
        out.append(("a unit added", f"\\boxed{{{gold} \\text{{ units}}}}"))
        d = n.denominator
        while d % 2 == 0:
            d //= 2
        while d % 5 == 0:
            d //= 5
        if d == 1 and n.denominator > 1 and "." not in gold:               # a terminating decimal
            out.append(("an exact decimal", f"\\boxed{{{float(n):.12g}}}"))
    if gold.strip().lower() in ("yes", "no"):
        out.append(("yes for Yes", f"\\boxed{{{gold.strip().swapcase()}}}"))
    if n is not None and not units(gold) and "%" not in gold and "," not in gold:   # "x = 10,080": a list?
        out += [("an angle, segment or named label", f"\\boxed{{{label} = {gold}}}")
                for label in ("\\angle ABC", "\\overline{AB}", "\\text{Area}", "\\theta")]
        out.append(("a unit as \\mathrm{~cm}", f"\\boxed{{{gold} \\mathrm{{~cm}}}}"))
    value = expression(gold)
    if value is not None and not value.free_symbols and value.is_rational is False and value.is_real:
        out.append(("the exact value \\approx a decimal", f"\\boxed{{{gold} \\approx {float(value.evalf(20)):.4g}}}"))
    kind, items = structure(normalize(gold))
    if kind == "seq" and items[:2] == ("(", ")") and "x" not in gold and "y" not in gold and len(items[2]) <= 4:
        out.append(("a tuple as labelled values", "\\boxed{" + ", ".join(
            f"{name} = {v}" for name, v in zip("abcd", items[2])) + "}"))
    out += [("a box in a box", f"\\boxed{{\\boxed{{{gold}}}}}"),
            ("an empty box echoed after", f"The answer is $\\boxed{{{gold}}}$. (Put the answer in \\boxed{{}}.)")]
    choice = re.fullmatch(r"\s*(?:\\text(?:bf)?\s*{\s*)?\(([A-E])\)\s*}?\s*", gold)
    if choice:
        out.append(("a choice with its value", f"\\boxed{{\\textbf{{({choice.group(1)}) }} 7}}"))
    return out


def honest(golds_by_set, progress=print):
    """{(set, rewrite): (paid, tried)}: the honest rewrites of every gold, each of which must be paid."""
    paid = {}
    for name, problems in golds_by_set.items():
        rows = [(w, c, p["gold"]) for p in problems for w, c in rewrites(p["gold"])]
        for (rewrite, completion, gold), r in zip(rows, rewards([c for _, c, _ in rows], [g for *_, g in rows])):
            got, tried = paid.get((name, rewrite), (0, 0))
            paid[(name, rewrite)] = (got + (r > 0), tried + 1)
            if r == 0:
                progress(f"  MISSED {name} | {rewrite} | {completion[:120]!r} | gold {gold!r}")
    return paid


def probe(golds_by_set, progress=print):
    """{(set, attack): (paid, tried)} and {set: (control paid, golds)}; progress(line) per set."""
    paid, control = {}, {}
    for name, problems in golds_by_set.items():
        t0 = time.perf_counter()
        rows = [(a, c, p["gold"]) for p in problems for a, c in attacks(p["gold"], p["problem"])]
        results = rewards([c for _, c, _ in rows], [g for *_, g in rows])
        for (attack, completion, gold), r in zip(rows, results):
            got, tried = paid.get((name, attack), (0, 0))
            paid[(name, attack)] = (got + (r > 0), tried + 1)
            if r > 0:
                progress(f"  PAID {name} | {attack} | {completion[:120]!r} | gold {gold!r}")
        golds = [p["gold"] for p in problems]
        control[name] = (int(sum(rewards([f"\\boxed{{{g}}}" for g in golds], golds))), len(golds))
        progress(f"{name}: {len(rows)} attacks on {len(problems)} gold answers "
                 f"({time.perf_counter() - t0:.1f} s)")
    return paid, control


def table(paid, control, sets, rows=ATTACKS, head="attack"):
    lines = [f"| {head} | " + " | ".join(sets) + " | all |", "|---|" + "---|" * (len(sets) + 1)]
    for attack in rows:
        cells = [paid.get((s, attack), (0, 0)) for s in sets]
        total = (sum(p for p, _ in cells), sum(t for _, t in cells))
        lines.append(f"| {attack} | " + " | ".join(f"{p} / {t}" for p, t in cells + [total]) + " |")
    if control is not None:
        total = (sum(p for p, _ in control.values()), sum(t for _, t in control.values()))
        lines.append("| control: the gold itself (must be paid) | "
                     + " | ".join(f"{p} / {t}" for p, t in [control[s] for s in sets] + [total]) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=DATA_DIR)
    args = ap.parse_args()
    golds = {name: load_problems(os.path.join(args.data_dir, f), log=lambda m: None)
             for name, f in SETS.items()}
    paid, control = probe(golds)
    kept = honest(golds)
    print("\nWrong completions paid (paid / tried), per attack and data set:\n")
    print(table(paid, control, list(SETS)))
    print("\nHonest rewrites of the gold paid (paid / tried): each must be\n")
    print(table(kept, None, list(SETS), rows=REWRITES, head="rewrite"))
    wrong_paid = sum(p for p, _ in paid.values())
    missed = sum(t - p for p, t in kept.values()) + sum(t - p for p, t in control.values())
    print(f"\n{wrong_paid} wrong completions paid of {sum(t for _, t in paid.values())}; {missed} honest "
          f"rewrites (and golds) missed of {sum(t for _, t in kept.values()) + sum(t for _, t in control.values())}")
    return 1 if wrong_paid or missed else 0


if __name__ == "__main__":
    sys.exit(main())
