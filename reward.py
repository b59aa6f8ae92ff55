"""reward.py: is the model's final answer right? Extract it, then check it, safely.

Chapter 3 of the tutorial. The reward is the only supervision GRPO gets, so the checker must be
right (a correct answer judged wrong teaches nothing) and safe (model text is untrusted input).

    extract_answer(completion)  -> the last \\boxed{...} / \\fbox{...}, GSM8K's "#### N", "the answer is N"
    is_equiv(pred, gold)        -> True / False, in four steps, stopping at the first decisive one:
        1. normalized strings are equal        ("\\dfrac12" == "\\frac{1}{2}", "1,000" == "1000")
        2. both are plain numbers              (exact for rationals: "0.5" == "1/2" == "50\\%")
        3. both parse to expressions           (our own parser -> sympy, numeric spot-check, simplify)
        4. structures                          (tuples, intervals, sets, lists, equations, matrices)
    rewards(completions, golds) -> [1.0 or 0.0, ...]   the batch API that train.py calls

Safety: model text never reaches eval, exec, sympify, parse_expr or parse_latex. A small recursive-
descent parser below turns a whitelisted subset of LaTeX/plain math into sympy objects, and refuses
anything else. Sizes are bounded before sympy sees them (input length, nesting depth, digits,
exponents, factorials), and sympy runs under a hard timeout (SIGALRM in the main thread: no thread or
process is left behind). Any failure means "not equal", with a reason for logging; nothing raises.
"""

import functools
import math
import random
import re
from fractions import Fraction

import sympy

from mathparse import (DEFAULT_TIMEOUT, MAX_ANSWER_CHARS, MAX_COMPLETION_CHARS, Refused, _Timeout, parse_expression,
                       time_limit)

# ---------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------
def _braced(text, start):
    """The content of the {...} group whose '{' is at text[start], or None if it never closes."""
    depth = 0
    end = min(len(text), start + MAX_ANSWER_CHARS + 2)
    for j in range(start, end):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:j]
    return None


def boxes(text, limit=100):
    """Contents of the \\boxed{...} / \\fbox{...} groups of text, last first, at most `limit` of them;
    an unbalanced box is passed over; "\\boxed 5" (no braces) is one token."""
    out, pos = [], len(text)
    for _ in range(limit):
        pos = max(text.rfind("\\boxed", 0, pos), text.rfind("\\fbox", 0, pos))
        if pos < 0:
            break
        j = pos + (6 if text.startswith("\\boxed", pos) else 5)
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            inner = _braced(text, j)
            if inner is not None:
                out.append(inner)
        elif j < len(text):
            m = re.match(r"[^\s$]+", text[j:j + MAX_ANSWER_CHARS])
            if m:
                out.append(m.group(0))
    return out


def last_boxed(text):
    """Content of the last \\boxed{...} or \\fbox{...} with balanced braces, else None."""
    found = boxes(text, limit=100)
    return found[0] if found else None


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


def extract_answer(text, fallback=False):
    """The final answer a completion gives, as a string, or None.

    In order: the last \\boxed{}/\\fbox{}; GSM8K's "#### N"; "the answer is X". With fallback=True
    (for evaluating models that do not box; training keeps "no box, no reward"), then: a "Final
    Answer: X" line, the last display-math block \\[...\\] or $$...$$, and the last number.
    """
    if not isinstance(text, str):
        return None
    text = text[-MAX_COMPLETION_CHARS:]
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    hashes = text.rfind("####")
    if hashes >= 0:
        m = re.match(r"\s*([^\n]{1,%d})" % MAX_ANSWER_CHARS, text[hashes + 4:])
        if m:
            return m.group(1).strip()
    idx = text.lower().rfind("the answer is")
    if idx >= 0:
        m = re.match(r"\s*:?\s*([^\n]{1,%d})" % MAX_ANSWER_CHARS, text[idx + 13:])
        if m:
            return _sentence(m.group(1))
    if not fallback:
        return None
    idx = text.lower().rfind("final answer")
    if idx >= 0:
        m = re.match(r"\s*(?:is)?\s*:?\s*(?:the final answer is)?\s*:?\s*([^\n]{1,%d})" % MAX_ANSWER_CHARS,
                     text[idx + 12:], re.IGNORECASE)
        if m and _sentence(m.group(1)):
            return _sentence(m.group(1))
    blocks = re.findall(r"\\\[(.{1,%d}?)\\\]|\$\$(.{1,%d}?)\$\$" % (MAX_ANSWER_CHARS, MAX_ANSWER_CHARS),
                        text[-20_000:], re.DOTALL)
    if blocks:
        return (blocks[-1][0] or blocks[-1][1]).strip()
    nums = re.findall(_NUMBER, text[-10_000:])
    return nums[-1] if nums else None


def _sentence(ans):
    """An answer written in a sentence: up to the end of the sentence, without $ and the final dot."""
    ans = re.sub(r"\.\s.*$", "", ans.strip())
    return ans.strip().strip("$").rstrip(".").strip().strip("$").strip()


# ---------------------------------------------------------------------------------------------------
# Step 1: normalization
# ---------------------------------------------------------------------------------------------------
_UNITS = ("square units", "sq units", "units", "unit", "cm", "mm", "km", "meters", "meter",
          "inches", "inch", "feet", "foot", "ft", "miles", "mile", "mph", "hours", "hour", "minutes",
          "minute", "seconds", "second", "days", "day", "dollars", "dollar", "cents", "cent",
          "degrees", "degree", "pounds", "pound", "students", "people", "ways", "points")
_UNIT_RE = re.compile(r"(?<=[\d}.)])\s*(?:%s)\^?\d?$" % "|".join(re.escape(u) for u in _UNITS))


def _unwrap_text(s):
    """\\text{...} and friends: units after a number are dropped, words are kept as plain text."""
    s = re.sub(r"\\(?:mbox|mathrm|textbf|mathbf|textit|textnormal|textrm|textsf|operatorname)\s*{", r"\\text{", s)
    stripped = re.sub(r"\\text\s*{[^{}]*}(?:\^\s*{?\d}?)?", "", s)   # a unit, maybe squared
    if re.search(r"\d", stripped) and stripped.strip() not in ("", "(", ")"):
        return stripped                          # "5.4 \text{ cents}" -> "5.4"
    return re.sub(r"\\text\s*{([^{}]*)}", r"\1", s)  # "\text{Evelyn}" -> "Evelyn"


def normalize(s):
    """Canonical string form of an answer: removes what never changes its value.
    Runs of spaces become one space; step 1 of is_equiv compares the forms with no spaces at all."""
    s = s.strip()
    s = s.replace("\u2212", "-").replace("\u00b7", "\\cdot").replace("\u00d7", "\\times")
    s = s.replace("\u03c0", "\\pi").replace("\u221e", "\\infty").replace("\u221a", "\\sqrt")
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])\s*", "", s)
    s = re.sub(r"\\(?:displaystyle|textstyle)", "", s)
    s = re.sub(r"(?<!\\)\\[!,;: ]\s*|~", "", s)         # thin spaces, but not the row break \\
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\\[dt]binom", r"\\binom", s)
    # relations, one spelling each: \le \ge \ne < >
    s = re.sub(r"\\(?:leqslant|leq|le)(?![a-zA-Z])|<=", r"\\le ", s)
    s = re.sub(r"\\(?:geqslant|geq|ge)(?![a-zA-Z])|>=", r"\\ge ", s)
    s = re.sub(r"\\(?:neq|ne)(?![a-zA-Z])|!=", r"\\ne ", s)
    s = re.sub(r"\\lt(?![a-zA-Z])", "<", s)
    s = re.sub(r"\\gt(?![a-zA-Z])", ">", s)
    s = re.sub(r"\\operatorname\s*{(gcd|lcm|min|max)}", r"\\\1", s)
    if re.search(r"\d", s):                                 # "3 and -5", "x = 3 \text{ or } x = -5", "3; -5"
        s = re.sub(r"\\text\s*{\s*(?:and|or)\s*}|(?<![a-zA-Z\\])(?:and|or)(?![a-zA-Z])", ",", s)
        s = s.replace(";", ",")
    s = re.sub(r"\^\s*{\s*\\circ\s*}|\^\s*\\circ|\u00b0", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _unwrap_text(s)
    s = s.strip()
    s = re.sub(r"\.$", "", s).strip()
    s = _UNIT_RE.sub("", s).strip()
    s = s.replace("{,}", ",")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")                   # thousands separators: "58,500" -> "58500", not "41, 205"
    if re.fullmatch(r"\d( \d)+", s):
        s = s.replace(" ", "")                   # spaced digits, as \mathbf{1 4 4 0 0} is written
    # \frac12 -> \frac{1}{2}, \frac1{x} -> \frac{1}{x}, \sqrt2 -> \sqrt{2}
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*{([^{}]*)}\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d+|[a-zA-Z])", r"\\sqrt{\1}", s)
    s = re.sub(r"^[a-zA-Z]\s*\\in(?![a-zA-Z])", "", s)       # "x \in [2, 5)" -> "[2, 5)"
    return re.sub(r"\s+", " ", s).strip()   # spaces kept (once): "\log_2 8" is not "\log_28"


# ---------------------------------------------------------------------------------------------------
# Step 2: plain numbers, exactly
# ---------------------------------------------------------------------------------------------------
def parse_number(s):
    """A normalized string that is just a number -> Fraction, else None.

    "42", "-3.5", ".35625", "1/8", "\\frac{3}{4}", "-\\frac{1}{2}", "1.5e3", "2.5\\times10^{3}", and the
    mixed numbers MATH writes as "1\\frac{4}{5}" (= 9/5, not 1 * 4/5).
    """
    if len(s) > 100:
        return None
    m = re.fullmatch(r"(-?)(\d+)\\frac{(\d+)}{(\d+)}", s)     # a mixed number: 1\frac{4}{5} = 9/5
    if m and int(m.group(4)) != 0:
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -value if m.group(1) else value
    m = re.fullmatch(r"(-?)\\frac{(-?\d+)}{(-?\d+)}", s) or re.fullmatch(r"(-?)(-?\d+)/(-?\d+)", s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        if den == 0:
            return None
        return (-1 if m.group(1) else 1) * Fraction(num, den)
    m = re.fullmatch(r"(-?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d{1,4})|(?:\\times|\\cdot|\*)10\^{?([+-]?\d{1,4})}?)?", s)
    if m:
        exp = int(m.group(2) or m.group(3) or 0)
        return Fraction(m.group(1)) * Fraction(10) ** exp
    return None


# ---------------------------------------------------------------------------------------------------
# Step 3: expressions (parsed by mathparse.py, our own whitelisted parser -> sympy)
# ---------------------------------------------------------------------------------------------------
def _numeric(x, point, prec=30):
    """x evaluated at `point` ({symbol: Float}) as a complex number, or None where undefined.
    (evalf with subs= evaluates in floating point: no exact power towers are ever expanded.)"""
    v = sympy.N(x, prec, subs=point)
    if v.has(sympy.nan, sympy.zoo) or not v.is_number:
        return None
    try:
        return complex(v)
    except (TypeError, ValueError):
        return None


def _close(a, b, tol):
    if a == b:
        return True
    if any(math.isinf(abs(z)) or math.isnan(abs(z)) for z in (a, b)):
        return False
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def expressions_equal(a, b, approx=False, allow_simplify=True):
    """True iff sympy expressions a and b have the same value (as functions of their variables).

    Exact rationals compare exactly. Otherwise both are evaluated numerically (at 3 random points if
    they have variables); relative tolerance 1e-6 when a side was written as a decimal (approx), else
    1e-12. Where numeric evaluation is not conclusive, simplify(a - b) == 0 decides.
    """
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return False
    if a.has(sympy.oo, -sympy.oo) or b.has(sympy.oo, -sympy.oo):
        return False
    tol = 1e-6 if approx else 1e-12
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    rng = random.Random(1234)
    conclusive = True
    for _ in range(3 if symbols else 1):
        point = {s: sympy.Float(rng.uniform(0.5, 3.0), 30) for s in symbols}
        va, vb = _numeric(a, point), _numeric(b, point)
        if va is None or vb is None:
            conclusive = False
            break
        if not _close(va, vb, tol):
            return False
    if conclusive:
        return True
    if not allow_simplify:
        return False
    return sympy.simplify(a - b) == 0


# ---------------------------------------------------------------------------------------------------
# Step 4: structures
# ---------------------------------------------------------------------------------------------------
_OPEN, _CLOSE = "([{", ")]}"


def split_top(s, sep=","):
    """Split s at `sep` where it is outside every bracket."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _balanced(s):
    depth = 0
    for c in s:
        depth += (c in _OPEN) - (c in _CLOSE)
        if depth < 0:
            return False
    return depth == 0


def structure(s):
    """Classify a normalized answer: (kind, payload).

    ("matrix", rows), ("union", parts), ("set", items), ("seq", (open, close, items)), ("list", items),
    ("pm", items) for "a \\pm b", ("eq", (lhs, rhs)), ("atom", s). An inequality in one variable is
    the interval it describes, a "seq": "x > 3" is (3, \\infty), "-4 \\le x \\le 9" is [-4, 9].
    """
    m = re.fullmatch(r"\\begin{([pbvB]?matrix|array)}(?:{[^{}]*})?(.*)\\end{\1}", s)
    if m:
        rows = [r for r in m.group(2).split("\\\\") if r]
        return "matrix", [r.split("&") for r in rows]
    if len(split_top(s, "\\cup")) > 1:
        return "union", split_top(s, "\\cup")
    if s.startswith("\\{") and s.endswith("\\}") and _balanced(s[2:-2]):
        return "set", split_top(s[2:-2])
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _balanced(s[1:-1]):
        items = split_top(s[1:-1])
        if len(items) > 1:
            return "seq", (s[0], s[-1], items)
    items = split_top(s)
    if len(items) > 1:
        return "list", items
    if "\\pm" in s and s.count("\\pm") == 1:
        return "pm", [s.replace("\\pm", "+"), s.replace("\\pm", "-")]
    interval = inequality_interval(s)
    if interval is not None:
        return "seq", interval
    sides = split_top(s, "=")
    if len(sides) == 2:
        return "eq", tuple(sides)
    return "atom", s


_RELATION = re.compile(r"\\le(?![a-zA-Z])|\\ge(?![a-zA-Z])|<|>")


def _half_line(diff, op):
    """The solutions of `diff op 0` for diff linear in one variable: (lo, lo_closed, hi, hi_closed), or None.
    c v + k < 0 is v < -k/c when c > 0, and v > -k/c when c < 0 (the relation turns)."""
    symbols = diff.free_symbols
    if len(symbols) != 1:
        return None
    v = symbols.pop()
    c = diff.diff(v)
    k = diff - c * v
    if not (c.is_number and k.is_number and c.is_real and c != 0 and not k.has(v)):
        return None
    bound = -k / c
    below = op in ("<", "\\le")                     # diff < 0 or diff <= 0
    if c < 0:
        below = not below
    closed = op in ("\\le", "\\ge")
    return (-sympy.oo, False, bound, closed) if below else (bound, closed, sympy.oo, False)


def inequality_interval(s):
    """"x > 3" -> ("(", ")", ["3", "\\infty"]); "7 \\le x" and "-x \\le -7" too; "a < x \\le b" -> "(a, b]".
    None when s is not one or two relations between expressions linear in one variable."""
    ops = _RELATION.findall(s)
    if not ops or len(ops) > 2 or len(s) > 200:
        return None
    try:
        sides = [parse_expression(part) for part in _RELATION.split(s)]
    except (Refused, RecursionError):
        return None
    lo, lo_closed, hi, hi_closed = -sympy.oo, False, sympy.oo, False
    for (left, op, right) in zip(sides, ops, sides[1:]):       # a chain a < x <= b is two relations
        half = _half_line(left - right, op)
        if half is None:
            return None
        if half[0] != -sympy.oo:
            lo, lo_closed = half[0], half[1]
        if half[2] != sympy.oo:
            hi, hi_closed = half[2], half[3]
    return ("[" if lo_closed else "("), ("]" if hi_closed else ")"), [sympy.latex(lo), sympy.latex(hi)]


def _unordered_equal(xs, ys, eq):
    if len(xs) != len(ys):
        return False
    left = list(ys)
    for x in xs:
        for j, y in enumerate(left):
            if eq(x, y):
                del left[j]
                break
        else:
            return False
    return True


def _text_key(s):
    """Case- and space-insensitive form for text answers; "(C)" and "C" are the same choice."""
    s = re.sub(r"\\text{([^{}]*)}", r"\1", s).lower().replace(" ", "")
    m = re.fullmatch(r"\(([a-z])\)", s)
    return m.group(1) if m else s


_LABEL = re.compile(r"\s*((?:[A-Za-z]{1,3}'*(?:_\{?\w+\}?)?(?:\([^()=]{0,20}\))?)|\([A-Za-z](?:\s*,\s*[A-Za-z])+\))"
                    r"\s*=(?!=)(.*)")


def _label(s):
    """(label, value) of "x = 5", "x_1 = 2", "PQ = 6", "f(2) = 7", "(a, b) = (4, 1)"; (None, s) otherwise
    (and for lists: each item is looked at on its own)."""
    m = _LABEL.fullmatch(s)
    if m and len(split_top(s)) == 1 and m.group(2).strip():
        return m.group(1), m.group(2).strip()
    return None, s


def _percent_word(s):
    """"50 percent" is "50\\%"."""
    return re.sub(r"\s*(?:\\text\s*{\s*percent\s*}|percent)\s*\.?\s*$", r"\\%", s) if "percent" in s else s


def _rounds_to(text, value, other):
    """True when `text` is a decimal of 10 or more significant digits that rounds or truncates the
    exact number `other`: |value - other| < one unit of its last digit. Shorter decimals must be
    exact against a rational gold ("express as a common fraction": 0.0714 is not 1/14)."""
    m = re.fullmatch(r"-?(\d*)\.(\d+)", text)
    if not m or len((m.group(1) + m.group(2)).lstrip("0")) < 10:
        return False
    return abs(value - other) < Fraction(1, 10 ** len(m.group(2)))


class _Checker:
    """One is_equiv call: normalization, numbers, expressions, structures, with a shared budget."""

    def __init__(self, allow_simplify):
        self.allow_simplify = allow_simplify
        self.calls = 0
        self.refused = None      # the last reason the parser refused a side, for logging

    def equal(self, pred, gold, depth=0):
        self.calls += 1
        if depth > 8 or self.calls > 500:
            raise Refused("structure too large")
        pred, gold = _percent_word(pred), _percent_word(gold)
        p, g = normalize(pred), normalize(gold)
        pc, gc = p.replace(" ", ""), g.replace(" ", "")
        if pc == gc:                                            # step 1
            return True
        if not pc or not gc:
            return False
        pn, gn = parse_number(pc), parse_number(gc)             # step 2
        if pn is not None and gn is not None:
            if pn == gn:
                return True
            # "50\%" against "0.5": a percent sign on one side only may also mean "divide by 100"
            return (("%" in pred and pn / 100 == gn) or ("%" in gold and gn / 100 == pn)
                    or _rounds_to(pc, pn, gn) or _rounds_to(gc, gn, pn))
        sides = self.labels_and_chains(p, g, depth)             # "x = 5", "PQ = 6", "\sqrt{256} = 16"
        if sides is not None:
            return sides
        kp, vp = structure(p)                                   # step 4 (structures come first
        kg, vg = structure(g)                                   # so that (1,2) is not an expression)
        if kp != "atom" or kg != "atom":
            return self.structures_equal(kp, vp, kg, vg, depth)
        if _text_key(p) == _text_key(g):
            return True
        try:                                                    # step 3
            ep, eg = parse_expression(p), parse_expression(g)
        except Refused as e:
            self.refused = str(e)
            return False
        approx = "." in p or "." in g
        return expressions_equal(ep, eg, approx=approx, allow_simplify=self.allow_simplify)

    def labels_and_chains(self, p, g, depth):
        """A label before the value ("x = 5", "PQ = 6", "f(2) = 7", "(a, b) = (4, 1)") is not part of
        it: against a gold without "=", the value counts; two labelled answers need the same label.
        A chain of equalities ("\\sqrt{324 - 68} = \\sqrt{256} = 16") against a value: its last side.
        None when neither applies (then an equation is compared as an equation, step 4)."""
        eq = lambda a, b: self.equal(a, b, depth + 1)  # noqa: E731
        (pl, pv), (gl, gv) = _label(p), _label(g)
        if pl is not None and gl is not None:
            return pl.replace(" ", "") == gl.replace(" ", "") and eq(pv, gv)
        p_sides, g_sides = split_top(p, "="), split_top(g, "=")
        if pl is not None and len(g_sides) == 1:
            return eq(pv, g)
        if gl is not None and len(p_sides) == 1:
            return eq(p, gv)
        if len(p_sides) > 1 and len(g_sides) == 1 and len(split_top(p)) == 1:
            return eq(p_sides[-1], g)
        if len(g_sides) > 1 and len(p_sides) == 1 and len(split_top(g)) == 1:
            return eq(p, g_sides[-1])
        return None

    def structures_equal(self, kp, vp, kg, vg, depth):
        eq = lambda a, b: self.equal(a, b, depth + 1)  # noqa: E731
        unordered = ("set", "list", "pm")
        if kp in unordered and kg in unordered:
            gold_keys = [x.replace(" ", "") for x in vg]
            if len(set(gold_keys)) == len(gold_keys):            # the gold lists each answer once: so may we
                vp = list({x.replace(" ", ""): x for x in vp}.values())
            return _unordered_equal(vp, vg, eq)
        if kp != kg:
            return False
        if kp == "seq":
            (po, pc, pi), (go, gc, gi) = vp, vg
            return po == go and pc == gc and len(pi) == len(gi) and all(map(eq, pi, gi))
        if kp == "union":
            return _unordered_equal(vp, vg, eq)
        if kp == "matrix":
            return (len(vp) == len(vg) and all(len(a) == len(b) for a, b in zip(vp, vg))
                    and all(eq(x, y) for a, b in zip(vp, vg) for x, y in zip(a, b)))
        if kp == "eq":
            (pl, pr), (gl, gr) = vp, vg
            if eq(pl, gl) and eq(pr, gr):
                return True
            try:   # the same equation rearranged: lhs - rhs equal up to sign
                dp = parse_expression(pl) - parse_expression(pr)
                dg = parse_expression(gl) - parse_expression(gr)
            except Refused as e:
                self.refused = str(e)
                return False
            return (expressions_equal(dp, dg, allow_simplify=self.allow_simplify)
                    or expressions_equal(dp, -dg, allow_simplify=self.allow_simplify))
        return False


def check(pred, gold, timeout=DEFAULT_TIMEOUT):
    """(equal, reason). Never raises; reason says why an answer was judged wrong (for logging)."""
    if pred is None:
        return False, "no answer found"
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False, "answer is not a string"
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False, "answer too long"
    if "\x00" in pred:
        return False, "null byte in answer"
    limit = time_limit(timeout)
    try:
        checker = _Checker(allow_simplify=limit.hard)
        with limit:
            ok = checker.equal(pred, gold)
        if ok:
            return True, "equal"
        return False, f"not equal (refused: {checker.refused})" if checker.refused else "not equal"
    except _Timeout:
        return False, f"timed out after {timeout} s"
    except Refused as e:
        return False, f"refused: {e}"
    except RecursionError:
        return False, "refused: too deep"
    except Exception as e:  # sympy can raise almost anything on odd input; never into the trainer
        return False, f"error: {type(e).__name__}: {e}"


def is_equiv(pred, gold, timeout=DEFAULT_TIMEOUT):
    """True iff answer string `pred` means the same as gold answer string `gold`."""
    return check(pred, gold, timeout)[0]


# ---------------------------------------------------------------------------------------------------
# The batch API used by train.py and eval.py
# ---------------------------------------------------------------------------------------------------
def gold_answer(text):
    """A dataset's gold answer field: GSM8K's "... #### 42" -> "42"; anything else as it is."""
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().replace(",", "")
    return text.strip()


@functools.lru_cache(maxsize=4096)
def answer_count(gold):
    """How many answers a gold answer lists: its top-level items ("3, -5": 2), 2 for "a \\pm b", else 1."""
    kind, items = structure(normalize(gold))
    return len(items) if kind in ("list", "set", "pm") else 1


def _boxed_answers(completion, gold):
    """k > 1 when the gold lists k answers and the completion has several boxes (it may have boxed
    the answers one by one); else 1."""
    if isinstance(completion, str) and completion.count("box") > 1:
        return answer_count(gold)
    return 1


def judge(completion, gold, timeout=DEFAULT_TIMEOUT, fallback=False):
    """(the answer read, right?) for one completion. The answer is extract_answer's (its last box);
    when the gold lists k > 1 answers and the completion boxed them one by one ("\\boxed{3} and
    \\boxed{-5}"), its last k boxes, read as a list, are the answer."""
    pred = extract_answer(completion, fallback)
    if is_equiv(pred, gold, timeout):
        return pred, True
    k = _boxed_answers(completion, gold)
    if k > 1:
        found = boxes(completion[-MAX_COMPLETION_CHARS:], limit=k)
        if len(found) == k:
            several = ", ".join(b.strip() for b in reversed(found))
            if is_equiv(several, gold, timeout):
                return several, True
    return pred, False


def rewards(completions, golds, timeout=DEFAULT_TIMEOUT, fallback=False):
    """1.0 for each completion whose final answer (judge) equals its gold answer, else 0.0.

    completions, golds: lists of strings, same length. Repeated (answer, gold) pairs in the batch
    (common: G rollouts of one prompt often agree) are judged once; a completion that may have boxed
    several answers is keyed by its whole text. fallback: see extract_answer (off for training: no
    box, no reward).
    """
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    cache = {}
    out = []
    for text, gold in zip(completions, golds):
        key = (text if _boxed_answers(text, gold) > 1 else extract_answer(text, fallback), gold)
        if key not in cache:
            cache[key] = 1.0 if judge(text, gold, timeout, fallback)[1] else 0.0
        out.append(cache[key])
    return out
