"""reward.py as worked examples: what counts as the same answer, what does not, the answer styles of real
model outputs, and the datasets' own reference answers (hostile input: tests/test_mathparse.py)."""

import json
import os

import pytest
from helpers import bench_module, table_cases

from data import DATA_DIR, load_problems
from reward import check, extract_answer, gold_answer, is_equiv, judge, normalize, rewards

# (prediction, gold, equal?) grouped by category. About half are look-alikes that are NOT equal.
CASES = {
    # an answer is exact only if every number in it is: a decimal anywhere makes it an approximation,
    # which needs 10 significant digits, as a plain decimal does; an exact decimal equals its exact gold
    "approximation in an expression": [
        ("25 \\times 3.14159", "25\\pi", False), ("3.141593 \\cdot 1", "\\pi", False), ("(1.414214)", "\\sqrt{2}", False),
        ("25 \\times 3.141592654", "25\\pi", True), ("-1.5", "-3./2", True), ("0.125", "2^{-3}", True),
        ("1.0 \\times 10^{-20}", "10^{-20}", True), ("1.5\\sqrt{2}", "\\frac{3\\sqrt{2}}{2}", True),
        ("3.14159x", "\\pi x", False),
    ],
    "percent on both sides": [
        ("0.05\\%", "5\\%", False), ("5\\%", "5 \\%", True), ("0.05", "5\\%", True), ("500\\%", "5\\%", False),
    ],
    # a variable only one side has is refused; variables are tried negative too
    "one-sided identities": [
        ("\\min(7, 7+x)", "7", False), ("x", "|x|", False), ("2\\ln x", "2\\ln|x|", False), ("|x|", "|x|", True),
        ("x^2", "|x|^2", True), ("2\\ln|x|", "\\ln x^2", True),
    ],
    "words are not products": [
        ("ABCD", "\\text{CBAD}", False), ("CBAD", "\\text{CBAD}", True), ("\\text{DCBA}", "ABCD", False),
    ],
    "unit prefixes keep their case": [
        ("5 \\text{ mW}", "5 \\text{ MW}", False), ("5 \\text{ meV}", "5 \\text{ MeV}", False),
        ("5 \\text{ MW}", "5 \\text{ MW}", True), ("5 \\text{ Meters}", "5 \\text{ meters}", True),
    ],
    "words before a number are kept": [
        ("\\text{not } 7", "7", False), ("\\text{minus } 5", "5", False), ("7 \\text{ apples}", "7", True),
    ],
    # labelled golds match by label in any order, unlabelled answers by position
    "labels": [
        ("y = 2, x = 1", "x = 1, y = 2", True), ("1, 2", "x = 1, y = 2", True), ("2, 1", "x = 1, y = 2", False),
        ("x = 2, y = 1", "x = 1, y = 2", False), ("a = 2, b = 3", "(2, 3)", True), ("a = 3, b = 2", "(2, 3)", False),
        ("\\theta = 30^\\circ", "30^\\circ", True), ("\\angle ABC = 45", "45", True), ("\\text{Area} = 12", "12", True),
        ("\\overline{AB} = 5", "5", True), ("\\overline{AB} = 6", "5", False),
    ],
    # an equation answers a solved gold only when it is solved for the same variable
    "solved equations": [
        ("5 = x", "x = 5", True), ("3x + 7 = 22", "x = 5", False), ("2x - y + 3 = 0", "y = 2x + 3", True),
        ("y = 5", "x = 5", False),
    ],
    # an exact number is equal to its exact gold to the digit, however large
    "exact numbers": [
        ("235385266837019985", "e^{40}", False), ("2", "\\log_2 4", True), ("3", "e^{40}", False),
    ],
    "notations": [
        ("10001_{2}", "10001_2", True), ("10001_{2}", "10011_2", False), ("0.\\overline{3}", "\\frac{1}{3}", True),
        ("1.2\\overline{45}", "\\frac{137}{110}", True), ("0.\\overline{3}", "0.3", False),
        ("\\varnothing", "\\emptyset", True), ("\\mathbb{R}", "(-\\infty, \\infty)", True),
        ("\\mathbb{R}", "(0, \\infty)", False), ("5\\sqrt{2} \\approx 7.07", "5\\sqrt{2}", True),
        ("7.07", "5\\sqrt{2}", False), ("x < 3 \\text{ or } x > 5", "(-\\infty, 3) \\cup (5, \\infty)", True),
        ("x < 3 \\text{ or } x > 6", "(-\\infty, 3) \\cup (5, \\infty)", False), ("Yes", "yes", True),
        ("No", "yes", False), ("\\textbf{(B) } 7", "(B)", True), ("\\textbf{(A) } 7", "(B)", False),
        ("3 \\mathrm{~m}/\\mathrm{s}", "3", True), ("4 \\mathrm{~m}/\\mathrm{s}", "3", False),
        ("\\begin{vmatrix} 1 & 2 \\\\ 3 & 4 \\end{vmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", False),
        ("\\begin{vmatrix} 1 & 2 \\\\ 3 & 4 \\end{vmatrix}", "\\begin{vmatrix}1&2\\\\3&4\\end{vmatrix}", True),
    ],
    "fraction": [
        ("\\frac{1}{2}", "\\frac12", True), ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
        ("\\tfrac{3}{4}", "3/4", True), ("2/4", "\\frac{1}{2}", True), ("\\frac{-1}{2}", "-\\frac{1}{2}", True),
        ("\\frac 59", "\\frac{5}{9}", True), ("\\frac{10}{4}", "2.5", True), ("9/5", "1\\frac{4}{5}", True),
        ("1\\frac{4}{5}", "\\frac{4}{5}", False),
        ("1/2", "2", False), ("\\frac{1}{2}", "\\frac{2}{1}", False), ("\\frac{1}{3}", "0.33", False),
        ("\\frac{3}{4}", "\\frac{4}{3}", False), ("\\frac{1}{2}", "\\frac{1}{4}", False),
    ],
    "decimal": [
        ("0.5", "\\frac{1}{2}", True), (".35625", "0.35625", True), ("1.50", "1.5", True),
        ("0.0000672", ".0000672", True), ("3.0", "3", True),
        ("0.5", "0.51", False), ("0.35625", "0.3562", False), ("1.5", "15", False), ("0.1", "0.01", False),
    ],
    "sqrt": [
        ("\\sqrt{8}", "2\\sqrt{2}", True), ("\\sqrt2", "\\sqrt{2}", True), ("\\frac{\\sqrt{21}}{5}", "\\frac{1}{5}\\sqrt{21}", True),
        ("\\sqrt[3]{8}", "2", True), ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", True), ("1.414213562", "\\sqrt{2}", True),
        ("1.41421356", "\\sqrt{2}", False),   # 9 significant digits: an approximation (10 are needed)
        ("\\sqrt{2}", "2", False), ("\\sqrt{3}", "\\sqrt[3]{3}", False), ("2\\sqrt{2}", "\\sqrt{2}", False),
        ("1.41", "\\sqrt{2}", False), ("\\sqrt{51}", "\\sqrt{15}", False),
    ],
    "pi": [
        ("288\\pi", "288 \\pi", True), ("\\pi r^2", "r^2\\pi", True), ("2\\pi", "\\pi \\cdot 2", True),
        ("\\frac{\\pi}{2}", "\\frac{1}{2}\\pi", True), ("3.14159265358979", "\\pi", True),
        ("\\pi", "3.14", False), ("2\\pi", "\\pi", False), ("\\frac{\\pi}{2}", "\\frac{\\pi}{3}", False),
        ("\\pi^2", "2\\pi", False),
    ],
    "interval": [
        ("(2,12) \\cup (12,102)", "(2, 12)\\cup(12, 102)", True), ("(12,102)\\cup(2,12)", "(2,12)\\cup(12,102)", True),
        ("[2, 5)", "x \\in [2,5)", True), ("(-\\infty, 3]", "(-\\infty,3]", True),
        ("\\left[ \\frac{1}{2}, 1 \\right)", "[0.5, 1)", True),
        ("[2,5)", "(2,5)", False), ("[2,5]", "[2,5)", False), ("(-\\infty,3)", "(-\\infty,3]", False),
        ("(2,12)", "(2,12)\\cup(12,102)", False), ("(0,9)\\cup(9,36)", "(0,9)\\cup(9,35)", False),
    ],
    "set": [
        ("\\{1,2\\}", "\\{2,1\\}", True), ("\\{1, 2, 3\\}", "\\{3,2,1\\}", True), ("1, 2", "2, 1", True),
        ("\\{1,2\\}", "1, 2", True), ("-2, 3", "3, -2", True), ("3 \\pm 2\\sqrt{2}", "3+2\\sqrt{2}, 3-2\\sqrt{2}", True),
        ("\\{1,2\\}", "\\{1,3\\}", False), ("1, 2", "1, 2, 3", False), ("1, 1", "1, 2", False),
        ("3 + 2\\sqrt{2}", "3 \\pm 2\\sqrt{2}", False),
    ],
    "tuple": [
        ("(6,31,-1)", "(6, 31, -1)", True), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("(1,-16,-4,43)", "(1, -16, -4, 43)", True), ("(0.5, 2)", "(\\frac12, 2)", True),
        ("(1,2)", "[1,2]", False), ("(1,2)", "(2,1)", False), ("(1,2)", "(1,2,3)", False), ("(1,2)", "1,2", False),
        ("(3,\\frac{\\pi}{2})", "(3,\\frac{\\pi}{3})", False),
    ],
    "degree": [
        ("55^\\circ", "55", True), ("120^{\\circ}", "120", True), ("30\u00b0", "30", True), ("45", "45^\\circ", True),
        ("55^\\circ", "56", False), ("90^\\circ", "180", False), ("120^{\\circ}", "12", False),
    ],
    "percent": [
        ("50\\%", "50", True), ("25%", "25", True), ("50\\%", "0.5", True), ("12.5\\%", "12.5", True),
        ("50\\%", "5", False), ("25\\%", "0.025", False), ("10%", "1", False),
    ],
    "text": [
        ("\\text{(E)}", "E", True), ("\\text{(C)}", "(C)", True), ("C", "\\text{(C)}", True),
        ("\\text{Evelyn}", "Evelyn", True), ("monday", "\\text{Monday}", True), ("\\text{east}", "East", True),
        ("\\text{(C)}", "D", False), ("Evelyn", "Evan", False), ("\\text{east}", "west", False),
        ("Monday", "Tuesday", False),
    ],
    "units": [
        ("5.4 \\text{ cents}", "5.4", True), ("10 \\text{ cm}", "10", True), ("18 dollars", "18", True),
        ("12\\mbox{ inches}", "12", True), ("6 square units", "6", True), ("24 \\text{ units}^2", "24", True),
        ("5.4 \\text{ cents}", "5.5", False), ("10 \\text{ cm}", "100", False), ("18 dollars", "1.8", False),
    ],
    "equation": [
        ("y = 2x + 1", "2x+1", True), ("x=5", "5", True), ("x^2 + y^2 = 1", "y^2+x^2=1", True),
        ("y = -13x + 3", "-13x+3", True), ("2x - y = 4", "y - 2x = -4", True), ("k=2", "2", True),
        ("y = 2x + 1", "2x - 1", False), ("x=5", "6", False), ("x^2 + y^2 = 1", "x^2+y^2=2", False),
        ("x + y = 1", "x - y = 1", False),
    ],
    "thousands": [
        ("1,000", "1000", True), ("58,500", "58500", True), ("1{,}234{,}567", "1234567", True),
        ("10\\,000", "10000", True), ("1,000,000", "10^6", True),
        ("1,000", "100", False), ("58,500", "5850", False), ("1,234", "1.234", False),
    ],
    "negative": [
        ("-4", "-4", True), ("-9", "- 9", True), ("\\frac{-3}{4}", "-0.75", True), ("-256", "-2^8", True),
        ("-4", "4", False), ("-41", "41", False), ("-\\frac{1}{2}", "\\frac{1}{2}", False), ("-2^8", "256", False),
    ],
    "scientific": [
        ("1.5e3", "1500", True), ("2.5\\times10^{3}", "2500", True), ("6.72 \\times 10^{-5}", ".0000672", True),
        ("1e6", "1000000", True), ("3 \\cdot 10^2", "300", True),
        ("1.5e3", "150", False), ("2.5\\times10^{3}", "25000", False), ("1e-3", "0.01", False),
    ],
    "matrix": [
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
        ("\\begin{pmatrix} \\frac12 \\\\ -1 \\end{pmatrix}", "\\begin{pmatrix} 0.5 \\\\ -1 \\end{pmatrix}", True),
        ("\\begin{bmatrix} 2 & 0 \\\\ 0 & 2 \\end{bmatrix}", "\\begin{bmatrix}2&0\\\\0&2\\end{bmatrix}", True),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}", False),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\end{pmatrix}", False),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\\\ 3 \\end{pmatrix}", False),
    ],
    "expression": [
        ("x^2+2x+1", "(x+1)^2", True), ("8n^2 + 4n + 1", "1 + 4n + 8n^2", True), ("p - q", "-q+p", True),
        ("\\sin^2 x + \\cos^2 x", "1", False), ("e^{i\\pi}", "-1", True), ("\\log_2 8", "3", True),
        ("6 - 5i", "6-5i", True), ("2k", "k \\cdot 2", True), ("\\frac{x}{2}", "0.5x", True),
        ("x^5 - x^4 + x^3 - x^2 + x - 1", "(x-1)(x^4+x^2+1)", True), ("|-3|", "3", True), ("5!", "120", True),
        ("(x+1)^2", "x^2+1", False), ("2k", "k+2", False), ("6 - 5i", "6+5i", False), ("\\ln 2", "\\log_2 e", False),
        ("x^2", "2x", False), ("\\sin x", "\\cos x", False), ("ab", "a+b", False), ("4!", "4", False),
    ],
    "plain number": [
        ("46", "46", True), ("720", "720.0", True), ("007", "7", True), ("12", " 12 ", True), ("12.", "12", True),
        ("46", "64", False), ("720", "72", False), ("0", "O", False), ("1", "11", False),
    ],
}


def flat_cases():
    return table_cases(CASES)


def test_equivalence_is_symmetric_on_the_table():
    for cat, p, g, want in flat_cases():
        if cat in ("units", "percent"):   # the gold side decides what a unit or a percent means
            continue
        assert is_equiv(g, p) is want, (p, g)


# --- extraction -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ("so the answer is \\boxed{42}.", "42"),
    ("\\boxed{1} first, then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),             # multiple boxed: last
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),                   # nested braces
    ("\\fbox{7}", "7"),
    ("\\boxed 5 is it", "5"),
    ("\\boxed{2} and then \\boxed{3", "2"),                                    # unbalanced last box
    ("Janet makes 9 * 2 = 18.\n#### 18", "18"),                                 # GSM8K
    ("#### 1,234\n", "1,234"),
    ("Therefore, the answer is 7.", "7"),
    ("The answer is: $\\frac{1}{2}$", "\\frac{1}{2}"),
    ("no answer here, 3 and 4", None),                                         # no answer: None
    ("", None),
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


def test_the_fallbacks_are_off_by_default():
    assert extract_answer("I think 3 then 4") is None
    assert extract_answer("I think 3 then 4", fallback=True) == "4"


def test_gold_answer_of_gsm8k_and_math():
    assert gold_answer("16 - 3 - 4 = 9 ...\n#### 1,080") == "1080"
    assert gold_answer(" \\frac{1}{2} ") == "\\frac{1}{2}"


def test_rewards_batch_and_cache():
    completions = ["\\boxed{4}", "\\boxed{5}", "#### 4", "nothing", "\\boxed{4}"]
    golds = ["4", "4", "4", "4", "2+2"]
    assert rewards(completions, golds) == [1.0, 0.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        rewards(["a"], [])


def test_normalize_examples():
    assert normalize("\\left( 3, \\dfrac{\\pi}{2} \\right)") == "( 3, \\frac{\\pi}{2} )"
    assert normalize("$10\\,000$.") == "10000"
    assert normalize("x \\in [2, 5)") == "[2, 5)"
    assert normalize("3 \\text{ and } -5") == "3 , -5" and normalize("41, 205") == "41, 205"


def test_no_answer_gives_reward_zero_and_a_reason():
    assert check(None, "1") == (False, "no answer found")
    assert rewards(["I don't know"], ["1"]) == [0.0]


# --- real data (the datasets' own reference answers) --------------------------------------------


def test_math500_reference_solutions_agree_with_their_answers():
    with open(os.path.join(DATA_DIR, "math500_test.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    misses = [(r["unique_id"], r["answer"]) for r in rows
              if not is_equiv(extract_answer(r["solution"]), r["answer"])]      # read as a completion
    assert misses == []


def test_gsm8k_answers_agree_with_themselves_boxed():
    with open(os.path.join(DATA_DIR, "gsm8k_test.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    golds = [extract_answer(r["answer"]) for r in rows]          # the text after "####"
    assert rewards(["\\boxed{%s}" % g for g in golds], golds) == [1.0] * len(rows)


@pytest.mark.parametrize("name", ["MATH-500", "MATH train", "Minerva", "OlympiadBench"])
def test_every_reference_answer_agrees_with_its_gold(name):
    """bench/reward_real_data.py's check of the sets with reference solutions: no miss."""
    bench = bench_module("reward_real_data")
    file, reference, id_field = bench.SETS[name]
    right, n, misses = bench.agreement(os.path.join(DATA_DIR, file), reference, id_field)
    assert misses == [] and right == n > 0


# --- the answer styles of real model outputs -------------------------------------------------------
# reward.py on the answer styles real models and datasets write (issue: LaTeX spellings,
# inequalities as intervals, several answers, labels, long decimals, thousands separators, more
# functions, chains of equalities, answers without a box). Each case: (prediction, gold, equal?).
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


@pytest.mark.parametrize("table", ["CASES", "STYLES"])
def test_every_rule_of_the_case_tables_is_tried_both_ways_and_no_case_twice(table):
    """Each category holds an answer that is paid and a look-alike that is not (a rule tried only one
    way can be passed by a checker that always says yes, or always no), and no (answer, gold) pair is
    listed twice, where the two entries could disagree."""
    for category, rows in globals()[table].items():
        assert {want for *_, want in rows} == {True, False}, category
    pairs = [(pred, gold) for _, pred, gold, _ in table_cases(globals()[table])]
    assert len(pairs) == len(set(pairs))


@pytest.mark.parametrize("cat,pred,gold,want", flat_cases() + table_cases(STYLES),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_equivalence(cat, pred, gold, want):
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


# --- a reward that never pays a wrong answer ---------------------------------------------------------
@pytest.mark.parametrize("pred,gold,want", [
    # an equation equals an equivalent equation (terms moved, both sides scaled), not one of its sides
    ("11a+c", "7 = 11a+c", False), ("7", "7 = 11a+c", False), ("11a + c = 7", "7 = 11a+c", True),
    ("0", "a+3z=0", False), ("1", "2x+z=1", False), ("0", "a^2+b=0", False), ("25", "x^2+y^2=25", False),
    ("x^2+y^2", "x^2+y^2=25", False), ("y^2 + x^2 = 25", "x^2+y^2=25", True), ("2x+2y=10", "x+y=5", True),
    ("x + y - 5 = 0", "x+y=5", True), ("x + y = 6", "x+y=5", False), ("-3x - 3y = -15", "x+y=5", True),
    # a label is a single variable (or a segment, a function value, a tuple of letters): its value counts
    ("2x+3", "y = 2x+3", True), ("y", "y = 2x+3", False), ("5", "x = 5", True), ("x = 5", "5", True),
    # trivially true statements state nothing
    ("7 = 7", "7", False), ("x = x", "7", False), ("I(0) = I(0)", "I(0)", False), ("m = m", "m", False),
    ("\\frac{10}{2} = 5", "5", True), ("x = 2 + 3 = 5", "5", True), ("N", "N=n", False), ("n", "N", False),
    # a letter applied to a number is a function's value, not a product
    ("0", "I(0)", False), ("I(0) e^{-t}", "I(0)", False), ("f(2)", "f(2)", True), ("x(x+1)", "x^2+x", True),
    # units: different units are unequal; equal units, or a unit on one side only, compare the numbers
    ("7 \\text{ meters}", "7 \\text{ feet}", False), ("5 \\text{ cm}", "5 \\text{ inches}", False),
    ("7 \\text{ m}", "7 \\text{ meters}", True), ("7 \\text{ meters}", "7", True), ("7", "7 \\text{ feet}", True),
    ("6 square units", "6 \\text{ units}^2", True), ("30^\\circ", "30 \\text{ degrees}", True),
    ("12 \\text{ inches}", "12 \\text{ feet}", False), ("3 \\text{ hours}", "3 \\text{ hour}", True),
    ("24 \\text{ cm}^2", "24 \\text{ m}^2", False), ("24 \\text{ cm}^2", "24 \\text{ cm}", False),
    ("24 \\text{ cm}^2", "24 \\text{ centimeters}^2", True),
    # approximations: a decimal of fewer than 10 significant digits is not an exact value
    ("98.995", "70 \\sqrt{2}", False), ("6366.198", "\\frac{20000}{\\pi}", False), ("3.14", "\\pi", False),
    # lists that were missed: \quad between answers, a bare-brace list, an array in brackets, \pm in a set
    ("3 \\quad 5", "3, 5", True), ("3 \\qquad 5", "5, 3", True), ("{2, 3, 5, 7}", "\\{2,3,5,7\\}", True),
    ("{2, 3, 5}", "\\{2,3,5,7\\}", False),
    ("\\left[\\begin{array}{cc}1&2\\\\3&4\\end{array}\\right]", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\left[\\begin{array}{cc}1&2\\\\3&5\\end{array}\\right]", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", False),
    ("\\{1, 2\\pm\\sqrt{3}\\}", "\\{1, 2+\\sqrt{3}, 2-\\sqrt{3}\\}", True),
    ("\\{1, 2\\pm\\sqrt{3}\\}", "\\{1, 2+\\sqrt{3}\\}", False),
])
def test_equal_only_when_the_answer_is_the_same(pred, gold, want):
    assert is_equiv(pred, gold) is want


@pytest.mark.parametrize("completion,gold,want", [
    ("\\boxed{3} or \\boxed{5}", "5", 0.0),                              # a hedge is a list: both answers
    ("$\\boxed{4}$, $\\boxed{5}$", "5", 0.0), ("\\boxed{4} \\boxed{5}", "5", 0.0),
    ("\\boxed{5} \\boxed{5}", "5", 1.0),                                 # one answer boxed twice
    ("\\boxed{12}, so the area is \\boxed{15}", "15", 1.0),              # working, then the answer
    ("$\\boxed{15\\frac{39}{40}}$, or $\\boxed{\\frac{639}{40}}$", "\\frac{639}{40}", 1.0),   # one value, twice
    (" and ".join(["\\boxed{1}"] * 21), "1", 0.0),                       # more than MAX_BOXES listed
    # separators that list answers too: a hedge however it is joined
    ("\\boxed{3} \\vee \\boxed{5}", "5", 0.0), ("\\boxed{3} / \\boxed{5}", "5", 0.0),
    ("\\boxed{3} \\\\ \\boxed{5}", "5", 0.0), ("\\boxed{3}\\hspace{1cm}\\boxed{5}", "5", 0.0),
    # an empty box (an instruction echoed) answers nothing; a box in a box is one answer
    ("The answer is \\boxed{7}. (Put it in \\boxed{}.)", "7", 1.0), ("\\boxed{\\boxed{7}}", "7", 1.0),
])
def test_several_boxes_one_rule(completion, gold, want):
    assert rewards([completion], [gold]) == [want]


@pytest.mark.parametrize("text", ["The answer is\n\\[ 42 \\]", "The final answer is \\[42\\]", "Final Answer: \\[ 42 \\]",
                                  "Final answer:\n\\[\n42\n\\]", "So the answer is \\(42\\).", "We get\n$$42$$"])
def test_a_number_in_display_math_without_a_box(text):
    assert judge(text, "42", fallback=True) == ("42", True)


def reward_hacking_probe():
    return bench_module("reward_hacking")


SAMPLE_GOLDS = ["5", "\\frac{1}{3}", "-12", "70 \\sqrt{2}", "y = 2x + 3", "x^2+y^2=25", "7 = 11a+c", "I(0)",
                "7 \\text{ cm}", "12 \\text{ inches}", "(1, 2)", "3, 5", "[2, 5)", "\\text{(C)}", "2 \\pm \\sqrt{3}",
                "12\\%", "\\text{CBAD}", "5 \\text{ MeV}", "e^{40}", "x = 1, y = 2",
                "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"]


def test_the_reward_hacking_probe_pays_no_attack_on_a_sample_of_gold_answers():
    """Every attack of bench/reward_hacking.py on hand-picked golds (each attack is tried on some): nothing
    is paid, and the gold itself is."""
    probe = reward_hacking_probe()
    tried = {}
    for gold in SAMPLE_GOLDS:
        cases = probe.attacks(gold, "What is the value of $x$ in the figure?")
        paid = [c for (_, c), r in zip(cases, rewards([c for _, c in cases], [gold] * len(cases))) if r]
        assert paid == [], (gold, paid)
        assert rewards(["\\boxed{%s}" % gold], [gold]) == [1.0]
        for attack, _ in cases:
            tried[attack] = tried.get(attack, 0) + 1
    assert set(tried) == set(probe.ATTACKS), tried


def test_every_real_gold_pays_its_honest_rewrites_and_none_of_its_attacks():
    """The property bench/reward_hacking.py measures, over every gold answer of the six sets: each attack
    built from it (hedges, approximations, in an expression too, a percent of a percent, identities in a
    new variable, words, unit prefixes, ...) is not paid; each honest rewrite (a label, a unit, \\dfrac,
    an exact decimal, Yes for yes) and the gold itself are."""
    probe = reward_hacking_probe()
    golds = {name: load_problems(os.path.join(DATA_DIR, f), log=lambda m: None) for name, f in probe.SETS.items()}
    said = []
    paid, control = probe.probe(golds, progress=said.append)
    kept = probe.honest(golds, progress=said.append)
    assert [line for line in said if "PAID" in line or "MISSED" in line] == []
    assert sum(p for p, _ in paid.values()) == 0 and sum(t for _, t in paid.values()) > 30_000
    assert all(p == t for p, t in list(kept.values()) + list(control.values())) and len(kept) >= 4


def test_thousands_of_unclosed_boxes_cost_no_more_than_a_few():
    """Each opener scans ahead for its closing brace: only the last 4 x 100 + 20 openers are looked at,
    so 30,000 unclosed "\\boxed{" are judged as fast as a few hundred (a bound on work, not on time)."""
    import reward
    looked = []
    original = reward._braced

    def counted(text, start):
        looked.append(start)
        return original(text, start)
    reward._braced = counted
    try:
        assert judge("\\boxed{" * 30_000 + " 7", "7") == (None, False)
    finally:
        reward._braced = original
    assert len(looked) <= 4 * reward.MAX_BOXES + 4 + 20
