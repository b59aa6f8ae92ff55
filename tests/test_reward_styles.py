"""reward.py on the answer styles real models and datasets write (issue: LaTeX spellings,
inequalities as intervals, several answers, labels, long decimals, thousands separators, more
functions, chains of equalities, answers without a box). Each case: (prediction, gold, equal?)."""

import pytest
from helpers import table_cases

from reward import check, extract_answer, rewards

STYLES = {
    "latex spellings": [
        ("\\cfrac{1}{2}", "\\frac{1}{2}", True), ("\\cfrac{3}{4}", "0.75", True), ("\\cfrac{2}{3}", "\\frac{3}{2}", False),
        ("5\\textnormal{ cm}", "5", True), ("12 \\mathrm{m}", "12", True), ("7\\mathrm{~kg}", "7", True),
        ("3 \\textrm{ hours}", "3", True), ("3 \\textrm{ hours}", "4", False), ("9 \\text{m}^2", "9", True),
        ("50 percent", "50", True), ("50 percent", "0.5", True), ("50 percent", "5", False),
        ("\\textbf{(B)}", "B", True), ("\\textbf{(B)}", "C", False),
        ("x \\neq 2", "x \\ne 2", True), ("x != 2", "x \\neq 2", True), ("x \\ne 2", "x \\ne 3", False),
        ("\\dfrac{5}{8}", "\\cfrac{5}{8}", True), ("\\tfrac{1}{3}", "0.3", False), ("25 \\textnormal{ percent}", "25", True),
        ("4\\,\\mathrm{cm}^2", "4", True), ("4\\,\\mathrm{cm}^2", "40", False),
    ],
    "inequality": [
        ("x > 3", "(3, \\infty)", True), ("x \\gt 3", "(3,\\infty)", True), ("x \\geq 3", "[3, \\infty)", True),
        ("x \\ge 3", "[3,\\infty)", True), ("x>=3", "[3,\\infty)", True), ("x < -1", "(-\\infty, -1)", True),
        ("x \\le 5", "(-\\infty, 5]", True), ("x\\leq5", "(-\\infty,5]", True), ("x <= 5", "(-\\infty,5]", True),
        ("-4 \\le x \\le 9", "[-4, 9]", True), ("-4 \\leq x \\leq 9", "x \\in [-4, 9]", True),
        ("-4 < x \\le 9", "(-4, 9]", True), ("0 < x < 1", "(0,1)", True), ("\\frac12 \\le x < 2", "[0.5, 2)", True),
        ("7 \\leq x", "x \\geq 7", True), ("7 \\leq x", "[7, \\infty)", True), ("3 > x", "x < 3", True),
        ("-x > -2", "x < 2", True), ("2x \\le 6", "x \\le 3", True), ("-3x + 1 < 7", "x > -2", True),
        ("x > 3", "[3, \\infty)", False), ("x \\ge 3", "(3, \\infty)", False), ("x < 3", "(3, \\infty)", False),
        ("-4 \\le x \\le 9", "(-4, 9)", False), ("-4 \\le x \\le 9", "[-4, 8]", False), ("7 \\le x", "x \\le 7", False),
        ("-x > -2", "x > 2", False), ("x > 3", "x > 4", False), ("0 < x < 1", "[0,1]", False),
        ("x \\geqslant 2", "[2, \\infty)", True), ("x \\leqslant -\\frac{1}{2}", "(-\\infty, -0.5]", True),
        ("t > 0", "(0, \\infty)", True), ("1 < 2x < 4", "(\\frac12, 2)", True), ("1 < 2x < 4", "(1, 4)", False),
        ("x > 2", "2", False),
    ],
    "several answers": [
        ("3, -5", "-5, 3", True), ("3; -5", "-5, 3", True), ("3 \\text{ and } -5", "-5, 3", True),
        ("3 and -5", "3, -5", True), ("x = 3 \\text{ or } x = -5", "-5, 3", True), ("3 or -5", "3,-5", True),
        ("3, 5", "-5, 3", False), ("3; 5", "3, -5", False), ("3 \\text{ and } 4", "3, 5", False),
        ("1+\\sqrt{2}, 1-\\sqrt{2}", "1 \\pm \\sqrt{2}", True), ("1-\\sqrt{2}, 1+\\sqrt{2}", "1\\pm\\sqrt2", True),
        ("1+\\sqrt{2}, 1+\\sqrt{2}", "1 \\pm \\sqrt{2}", False), ("-1 \\pm \\sqrt{2}", "1 \\pm \\sqrt{2}", False),
        ("(1,2), (3,4)", "(3,4), (1,2)", True), ("(1,2), (1,2), (3,4)", "(1,2), (3,4)", True),
        ("(1,2), (3,5)", "(1,2), (3,4)", False), ("(1,2)", "(1,2), (3,4)", False),
        ("2, 2, 3", "2, 3", True), ("2, 3", "2, 2, 3", False), ("-2 \\text{ or } 2", "\\pm 2", True),
        ("\\{1, 2\\}", "1; 2", True), ("1, 2", "1, 2, 2", False),
    ],
    "labels": [
        ("(a,b)=(4,1)", "(4,1)", True), ("(a, b) = (4, 1)", "(4, 1)", True), ("(a,b)=(4,1)", "(1,4)", False),
        ("x_1 = 2, x_2 = 3", "2, 3", True), ("x_1=2,x_2=3", "3,2", True), ("x_1 = 2, x_2 = 3", "2, 4", False),
        ("PQ=6, RS=2", "6, 2", True), ("PQ = 6", "6", True), ("PQ=6, RS=2", "6, 3", False),
        ("a = 5", "5", True), ("f(2) = 7", "7", True), ("f(2) = 7", "8", False), ("AB = 2\\sqrt{3}", "2\\sqrt3", True),
        ("x = 4", "y = 4", False), ("x = 4", "x = 4", True), ("b = -3", "-3", True), ("b = -3", "3", False),
        ("r' = 5", "5", True),
    ],
    "long decimals": [
        ("0.0714285714285714", "\\frac{1}{14}", True), ("0.33333333333", "\\frac13", True),
        ("0.6666666667", "\\frac{2}{3}", True), ("0.6666666666", "\\frac{2}{3}", True),
        ("3.1415926536", "\\pi", True), ("1.4142135624", "\\sqrt{2}", True),
        ("0.0714", "\\frac{1}{14}", False), ("0.333", "\\frac{1}{3}", False), ("0.67", "\\frac{2}{3}", False),
        ("0.0714285714285", "\\frac{1}{15}", False), ("0.3333333333", "\\frac{1}{4}", False),
        ("0.66666666", "\\frac{2}{3}", False), ("0.1428571429", "\\frac17", True), ("0.142857", "\\frac17", False),
        ("-0.3333333333", "-\\frac13", True), ("-0.3333333333", "\\frac13", False),
    ],
    "thousands": [
        ("1,000", "1000", True), ("12,345,678", "12345678", True), ("41, 205", "41, 205", True),
        ("41, 205", "41205", False), ("41, 205", "205, 41", True), ("1,000", "1, 000", False),
        ("\\$1,250", "1250", True), ("1,250.50", "1250.5", True), ("1,25", "125", False),
        ("100,000", "10^5", True), ("3, 600", "3600", False),
    ],
    "functions": [
        ("\\binom{5}{2}", "10", True), ("\\binom{10}{3}", "120", True), ("\\dbinom{6}{3}", "20", True),
        ("\\binom{5}{2}", "20", False), ("\\binom{n}{2}", "\\frac{n(n-1)}{2}", True),
        ("\\lfloor 3.7 \\rfloor", "3", True), ("\\lceil 3.2 \\rceil", "4", True), ("\\lfloor -1.5 \\rfloor", "-2", True),
        ("\\lfloor 3.7 \\rfloor", "4", False), ("\\lceil 3.2 \\rceil", "3", False),
        ("\\min(3, 5)", "3", True), ("\\max(3, 5)", "5", True), ("\\max(3,5)", "3", False),
        ("\\gcd(12, 18)", "6", True), ("\\gcd(12,18)", "3", False), ("\\operatorname{lcm}(4, 6)", "12", True),
        ("\\operatorname{lcm}(4,6)", "24", False), ("\\mathbf{1 4 4 0 0}", "14400", True),
        ("\\mathbf{14400}", "14400", True), ("\\mathbf{1 4 4 0 0}", "1440", False), ("1 4 4 0 0", "14400", True),
    ],
    "chains": [
        ("\\sqrt{324-68}=\\sqrt{256}=16", "16", True), ("2+3=5", "5", True), ("\\frac{6}{4}=\\frac{3}{2}", "1.5", True),
        ("\\sqrt{256}=16", "15", False), ("2+3=5", "6", False), ("16 = 4^2", "16", True),
        ("x = 2 + 3 = 5", "5", True), ("y = 2x+1", "y = 2x + 1", True), ("y = 2x+1", "2x+1", True),
        ("\\frac{10}{2} = 5", "6", False), ("3^2 + 4^2 = 25", "25", True),
    ],
}


def flat():
    return table_cases(STYLES)


def test_there_are_150_new_cases_with_look_alikes():
    cases = flat()
    assert len(cases) >= 150
    assert sum(not want for *_, want in cases) >= len(cases) / 3


@pytest.mark.parametrize("cat,pred,gold,want", flat(), ids=lambda x: x if isinstance(x, str) else "")
def test_style(cat, pred, gold, want):
    ok, reason = check(pred, gold)
    assert ok is want, f"[{cat}] {pred!r} vs {gold!r}: {reason}"


# --- several boxes, and answers without a box ------------------------------------------------------
@pytest.mark.parametrize("completion,gold,want", [
    ("the roots are \\boxed{3} and \\boxed{-5}.", "-5, 3", 1.0),
    ("so \\boxed{3} and \\boxed{-5}", "3, -5", 1.0),
    ("\\boxed{1} then \\boxed{3} and \\boxed{-5}", "3, -5", 1.0),            # the last two boxes
    ("\\boxed{3} and \\boxed{5}", "-5, 3", 0.0),
    ("\\boxed{3}", "-5, 3", 0.0),                                           # half of the answer
    ("\\boxed{3} and \\boxed{-5}", "3", 0.0),                               # the gold has one answer: the last box
    ("\\boxed{-5} ... \\boxed{3}", "3", 1.0),
    ("\\boxed{1 + \\sqrt{2}}, \\boxed{1 - \\sqrt{2}}", "1 \\pm \\sqrt{2}", 1.0),
    ("\\boxed{(1,2)} and \\boxed{(3,4)}", "(3,4), (1,2)", 1.0),
])
def test_several_boxes_against_a_list(completion, gold, want):
    assert rewards([completion], [gold]) == [want]


@pytest.mark.parametrize("text,want", [
    ("We get\n\\[\nx = \\frac{1}{2}\n\\]\nwhich is the answer.", "x = \\frac{1}{2}"),
    ("so $$42$$", "42"),
    ("Work...\nFinal Answer: 17\n", "17"),
    ("Final answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
    ("the result is 3, then 4", "4"),                                       # the last number, last of all
    ("nothing numeric here", None),
])
def test_answers_without_a_box_behind_the_fallback_option(text, want):
    assert extract_answer(text, fallback=True) == want
    assert extract_answer(text) is None                                     # the default: no box, no answer


def test_the_box_wins_over_every_fallback():
    assert extract_answer("\\[ 5 \\]\nFinal Answer: 6\n\\boxed{7}", fallback=True) == "7"
    assert rewards(["Final Answer: 17"], ["17"]) == [0.0]                   # training: no box, no reward
    assert rewards(["Final Answer: 17"], ["17"], fallback=True) == [1.0]
