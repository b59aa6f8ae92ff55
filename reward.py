"""reward.py: is the model's final answer right? Extract it, then check it, safely.

Chapter 3 of the tutorial. The reward is the only supervision GRPO gets, so the checker must be
right both ways: a right answer judged wrong teaches nothing, and a wrong answer judged right is a
reward the policy learns to collect (bench/reward_hacking.py tries 40,000 such completions on real
gold answers; none is paid). And it must be safe: model text is untrusted input.

    rewards(completions, golds) -> [1.0 or 0.0, ...]    what train.py calls (eval.py: judge, the same)
    extract_answer(completion)  -> the boxed answer, else GSM8K's "#### N", else "the answer is N"
    is_equiv(pred, gold)        -> True / False, in five steps, stopping at the first decisive one:
        0. units                       differing units are not equal ("7 meters" is not "7 feet")
        1. normalized strings          ("\\dfrac12" == "\\frac{1}{2}", "1,000" == "1000")
        2. both plain numbers          (exact for rationals: "0.5" == "1/2" == "50\\%")
        3. labels and chains           ("x = 5" against 5; "\\sqrt{256} = 16" against 16)
        4. structures                  (tuples, intervals, sets, lists, equations, matrices)
        5. expressions                 (our own parser -> sympy, numeric spot-check, simplify)

What counts as the same answer, and what does not (tests/test_reward.py holds each as a case):

    equal                                             not equal
    the last box: "\\boxed{12}, so ... \\boxed{15}" = 15   boxes listed one by one are one list:
                                                      "\\boxed{3} or \\boxed{5}" is "3, 5", not 5
    "x = 5", "f(2) = 5", "PQ = 5", "(a, b) = (4, 1)"  "x = x", "7 = 7": they state nothing
      against the value (a label is one variable)     "11a + c" against "7 = 11a + c" (one side)
    an equivalent equation: "x + y = 5" =             "x + y = 6"; "25" against "x^2 + y^2 = 25"
      "2x + 2y - 10 = 0" (terms moved, scaled)
    a computed chain "\\sqrt{324-68} = 16" against 16  "7 \\text{ meters}" against "7 \\text{ feet}"
    "7 \\text{ cm}" against 7 (a unit on one side)     "98.995" against "70\\sqrt{2}" (an approximation)
    a decimal of 10+ significant digits for an exact  "0.333" against "\\frac{1}{3}"; "3.14159 \\cdot 1"
      value: "0.3333333333" = "\\frac{1}{3}"             against "\\pi": a decimal anywhere makes the
    an exact decimal: "-1.5" = "-3./2", "0.125" =       answer an approximation, judged as a plain
      "2^{-3}"                                          decimal is (10 significant digits)
    "50\\%" against "0.5" (a percent on one side)       "0.05\\%" against "5\\%" (on both: the same unit)
    "x^2" and "|x|^2"                                 "x" and "|x|" (variables are tried negative);
                                                      "\\min(7, 7 + x)" against 7 (a variable only one
                                                      side has); "ABCD" against "\\text{CBAD}" (a word
                                                      is no product); "5 \\text{ mW}" against
                                                      "5 \\text{ MW}"; "\\text{not } 7" against 7
    a list in any order, "\\pm" as its two values     a list with one more or one less item
    "x > 3" and "(3, \\infty)"                          "I(0)" and 0 (a function's value is no product)
    "y = 2, x = 1" = "x = 1, y = 2" (by label);        "2, 1" against "x = 1, y = 2" (by position)
      "1, 2" and "a = 2, b = 3" = "(2, 3)" by position "3x + 7 = 22" against "x = 5" (still to solve)
    "\\boxed{\\boxed{7}}"; "\\boxed{7} ... \\boxed{}" = 7   "\\boxed{3} \\vee \\boxed{5}": a list, as "or"
    "0.\\overline{3}", "\\mathbb{R}", "10001_{2}",       "235385266837019985" against "e^{40}" (numbers
      "5\\sqrt{2} \\approx 7.07", "\\textbf{(B) } 7"       compare at 50 digits); a vmatrix for a matrix

Safety: model text never reaches eval, exec, sympify, parse_expr or parse_latex. mathparse.py, a
small recursive-descent parser, turns a whitelisted subset of LaTeX/plain math into sympy objects,
and refuses anything else. Sizes are bounded before sympy sees them (input length, nesting depth,
digits, exponents, factorials), and sympy runs under a hard timeout (SIGALRM in the main thread: no
thread or process is left behind). Any failure means "not equal", with a reason for logging.
"""

import random
import re
from fractions import Fraction

import mpmath
import sympy

from mathparse import (DEFAULT_TIMEOUT, MAX_ANSWER_CHARS, MAX_COMPLETION_CHARS, Refused, TimedOut,
                       parse_expression, time_limit)

# ---------------------------------------------------------------------------------------------------
# The reward: what train.py and eval.py call
# ---------------------------------------------------------------------------------------------------
def rewards(completions, golds, timeout=DEFAULT_TIMEOUT, fallback=False):
    """1.0 for each completion whose final answer (extract_answer) equals its gold answer, else 0.0.

    completions, golds: lists of strings, same length. Repeated (answer, gold) pairs in the batch
    (common: G rollouts of one prompt often agree) are judged once. fallback: see extract_answer (off
    for training: no box, no reward).
    """
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    judged = {}
    out = []
    for text, gold in zip(completions, golds):
        key = (extract_answer(text, fallback), gold)
        if key not in judged:
            judged[key] = 1.0 if is_equiv(key[0], gold, timeout) else 0.0
        out.append(judged[key])
    return out


def judge(completion, gold, timeout=DEFAULT_TIMEOUT, fallback=False):
    """(the answer read, right?) for one completion (eval.py logs both)."""
    pred = extract_answer(completion, fallback)
    return pred, is_equiv(pred, gold, timeout)


def gold_answer(text):
    """A dataset's gold answer field: GSM8K's "... #### 42" -> "42"; anything else as it is."""
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().replace(",", "")
    return text.strip()


# ---------------------------------------------------------------------------------------------------
# Extraction: the final answer of a completion
# ---------------------------------------------------------------------------------------------------
MAX_BOXES = 20                  # a run of more boxes than this states no answer


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


def box_spans(text, limit=100):
    """(start, end, content) of the \\boxed{...} / \\fbox{...} groups of text, last first, at most
    `limit` of them; "\\boxed 5" (no braces) is one token. Passed over: an unbalanced box, an empty one
    (an instruction echoed: "put it in \\boxed{}"), a box inside a box (the outer one is the answer,
    its content unwrapped when it is just the inner box). At most 4 limit + 20 openers are looked at:
    thousands of unclosed "\\boxed{" cost no more than a few."""
    out, pos = [], len(text)
    for _ in range(4 * limit + 20):
        if len(out) >= limit:
            break
        pos = max(text.rfind("\\boxed", 0, pos), text.rfind("\\fbox", 0, pos))
        if pos < 0:
            break
        j = pos + (6 if text.startswith("\\boxed", pos) else 5)
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            inner = _braced(text, j)
            if inner is not None and inner.strip():
                end = j + len(inner) + 2
                nested = [span for span in out if span[0] > pos and span[1] <= end]
                if len(nested) == 1 and inner.strip() == text[nested[0][0]:nested[0][1]]:
                    inner = nested[0][2]                        # \boxed{\boxed{7}}: the box of 7
                out = [span for span in out if span not in nested]
                out.append((pos, end, inner))
        elif j < len(text):
            m = re.match(r"[^\s$]+", text[j:j + MAX_ANSWER_CHARS])
            if m:
                out.append((pos, j + m.end(), m.group(0)))
    return out


def boxes(text, limit=100):
    """Contents of the boxes of text, last first (box_spans)."""
    return [inner for _, _, inner in box_spans(text, limit)]


# what may stand between boxes that list answers one by one: spaces, commas, "and", "or" (also written
# \vee, \lor, /), $, \quad, \hspace{...}, a line break \\
_LISTING = re.compile(r"(?:\s|[,;&$/]|\\[,;:! ]|\\q?quad|\\text\s*{\s*(?:and|or)\s*}|\band\b|\bor\b"
                      r"|\\vee\b|\\lor\b|\\\\|\\hspace\*?\s*{[^{}]*})*")


def boxed_answer(text):
    """The boxed answer of a completion, one rule for several boxes: the last box, together with the
    boxes just before it that only list-separators part from it ("\\boxed{3} and \\boxed{-5}",
    "\\boxed{3}, \\boxed{5}", "\\boxed{3} or \\boxed{5}" are the lists "3, -5", "3, 5", "3, 5"; a box
    repeated is one). Earlier boxes with words between are working, not the answer: "\\boxed{12}, so
    the area is \\boxed{15}" answers 15. More than MAX_BOXES listed boxes answer nothing (""). None
    when there is no box."""
    spans = box_spans(text, MAX_BOXES + 1)
    if not spans:
        return None
    run = spans[:1]
    for span in spans[1:]:
        if not _LISTING.fullmatch(text[span[1]:run[-1][0]]):
            break
        run.append(span)
    if len(run) > MAX_BOXES:
        return ""
    items = []
    for _, _, inner in reversed(run):          # in the order written, each answer once (however written:
        inner = inner.strip()                  # "\\boxed{15\\frac{39}{40}} or \\boxed{\\frac{639}{40}}": one)
        if not any(inner.replace(" ", "") == x.replace(" ", "")
                   or (len(run) <= 4 and is_equiv(inner, x, 0.25)) for x in items):
            items.append(inner)
    return ", ".join(items)


def last_boxed(text):
    """Content of the last \\boxed{...} or \\fbox{...} with balanced braces, else None (a dataset's
    reference solution: data.py reads Minerva's gold answers with it)."""
    found = boxes(text, limit=1)
    return found[0] if found else None


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


def extract_answer(text, fallback=False):
    """The final answer a completion gives, as a string, or None.

    In order: its boxed answer (boxed_answer: the last \\boxed{}/\\fbox{}, or the boxes that list the
    answers one by one); GSM8K's "#### N"; "the answer is X". With fallback=True (for evaluating
    models that do not box; training keeps "no box, no reward"), then: a "Final Answer: X" line, the
    last display-math block \\[...\\] or $$...$$, and the last number. An answer stated in math
    delimiters ($X$, \\(X\\), \\[X\\]) is X.
    """
    if not isinstance(text, str):
        return None
    text = text[-MAX_COMPLETION_CHARS:]
    boxed = boxed_answer(text)
    if boxed is not None:
        return boxed.strip()
    hashes = text.rfind("####")
    if hashes >= 0:
        m = re.match(r"\s*([^\n]{1,%d})" % MAX_ANSWER_CHARS, text[hashes + 4:])
        if m:
            return m.group(1).strip()
    idx = text.lower().rfind("the answer is")
    if idx >= 0:
        stated = _stated(re.sub(r"^\s*:?\s*", "", text[idx + 13:idx + 13 + 2 * MAX_ANSWER_CHARS]))
        if stated:
            return stated
    if not fallback:
        return None
    idx = text.lower().rfind("final answer")
    if idx >= 0:
        rest = text[idx + 12:idx + 12 + 2 * MAX_ANSWER_CHARS]
        stated = _stated(re.sub(r"^\s*(?:is)?\s*:?\s*(?:the final answer is)?\s*:?\s*", "", rest, flags=re.I))
        if stated:
            return stated
    blocks = re.findall(r"\\\[(.{1,%d}?)\\\]|\$\$(.{1,%d}?)\$\$" % (MAX_ANSWER_CHARS, MAX_ANSWER_CHARS),
                        text[-20_000:], re.DOTALL)
    if blocks:
        return (blocks[-1][0] or blocks[-1][1]).strip()
    nums = re.findall(_NUMBER, text[-10_000:])
    return nums[-1] if nums else None


def _stated(rest):
    """The answer at the start of `rest` (the text after "the answer is" / "Final Answer:"): the
    content of a math block ($...$, $$...$$, \\[...\\], \\(...\\)) that opens it, else its sentence."""
    for opening, closing in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if rest.startswith(opening):
            end = rest.find(closing, len(opening))
            if end > len(opening):
                return rest[len(opening):end].strip().rstrip(".").strip()
    return _sentence(rest.split("\n", 1)[0])


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


_UNIT_ALIASES = {"feet": "foot", "ft": "foot", "inches": "inch", "in": "inch", "cm": "centimeter",
                 "mm": "millimeter", "km": "kilometer", "m": "meter", "hr": "hour", "hrs": "hour",
                 "h": "hour",
                 "min": "minute", "mins": "minute", "sec": "second", "secs": "second", "s": "second",
                 "g": "gram", "kg": "kilogram", "lb": "pound", "lbs": "pound", "people": "person"}
_UNIT_TEXT = re.compile(r"(?<=[\d}.)\s])\s*\\text\s*{\s*([^{}]*?)\s*}\s*(?:\^\s*{?\s*([23])\s*}?)?\s*$")
_UNIT_WORD = re.compile(r"(?<=[\d}.)])\s*(%s)\s*(?:\^\s*{?\s*([23])\s*}?)?\s*$"
                        % "|".join(re.escape(u) for u in _UNITS))


def units(s):
    """The unit written after an answer's number, in one spelling ("7 \\text{ meters}" -> "meter",
    "6 square units" -> "unit^2", "24 \\text{ cm}^2" -> "centimeter^2", "30^\\circ" -> "degree"), or ""
    when it has none. Answers with different units are not equal (checked before the numbers are)."""
    if not re.search(r"\d.*[a-zA-Z\u00b0]", s):             # no letter after a digit: no unit
        return ""
    s = re.sub(r"\\(?:mbox|mathrm|textbf|textit|textnormal|textrm|textsf)\s*{", r"\\text{",
               s.strip().rstrip("."))
    if re.search(r"\d\s*(?:\^\s*{\s*\\circ\s*}|\^\s*\\circ|\u00b0|\\text\s*{\s*degrees?\s*})\s*$", s):
        return "degree"
    m = _UNIT_TEXT.search(s) or _UNIT_WORD.search(s)
    if not m or not re.search(r"\d", s[:m.start()]) or not re.search(r"[a-zA-Z]", m.group(1)):
        return ""
    # names fold their case ("Meters"), symbols keep it: SI prefixes differ by case ("mW" is not "MW")
    words = [w if len(w) <= 3 else w.lower() for w in m.group(1).replace(".", " ").split()]
    power = m.group(2) or ""
    if words and words[0] in ("square", "sq", "cubic", "cu"):
        power, words = ("2" if words[0] in ("square", "sq") else "3"), words[1:]
    if not words or words[0] in ("and", "or"):
        return ""
    singular = [_UNIT_ALIASES.get(w, w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
                for w in words]
    return " ".join(singular) + (f"^{power}" if power else "")


def _unwrap_text(s):
    """\\text{...} and friends: units after a number are dropped, words are kept as plain text (also
    words before a number: "\\text{not } 7" is not 7)."""
    s = re.sub(r"\\(?:mbox|mathrm|textbf|mathbf|textit|textnormal|textrm|textsf|operatorname)\s*{",
               r"\\text{", s)
    s = re.sub(r"\\text\s*{([^{}]*)}\s*/\s*\\text\s*{([^{}]*)}", r"\\text{\1/\2}", s)   # \text{m}/\text{s}
    stripped = re.sub(r"(?<=[\d}.)])\s*\\text\s*{[^{}]*}(?:\^\s*{?\d}?)?", "", s)   # a unit, maybe squared
    if re.search(r"\d", stripped) and stripped.strip() not in ("", "(", ")"):
        return stripped                          # "5.4 \text{ cents}" -> "5.4"
    return re.sub(r"\\text\s*{([^{}]*)}", r"\1", s)  # "\text{Evelyn}" -> "Evelyn"


def _repeating_decimal(m):
    """"0.\\overline{3}" -> "\\frac{1}{3}", "1.2\\overline{45}" -> its fraction: exact."""
    whole, fixed, period = m.group(1), m.group(2), m.group(3)
    sign = -1 if whole.startswith("-") else 1
    value = int(whole.lstrip("-") or 0) + Fraction(int(fixed or 0), 10 ** len(fixed))
    value += Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
    value *= sign
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


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
    s = re.sub(r"\\varnothing(?![a-zA-Z])", r"\\emptyset", s)
    s = re.sub(r"\\mathbb\s*{\s*R\s*}|\\R(?![a-zA-Z])", r"(-\\infty, \\infty)", s)   # all reals
    s = re.sub(r"(?<=\S)\s*\\approx\s*-?[\d.]+\s*$", "", s)   # "5\sqrt{2} \approx 7.07": the exact part
    s = re.sub(r"(?<=[0-9A-F])_\s*{\s*(\d{1,2})\s*}", r"_\1", s)   # a base: "10001_{2}" is "10001_2"
    s = re.sub(r"(-?\d*)\.(\d*)\\overline\s*{\s*(\d{1,12})\s*}", _repeating_decimal, s)   # 0.\overline{3}
    s = re.sub(r"^\\text(?:bf)?\s*{\s*\(([A-Z])\)\s*}", r"(\1)", s)       # "\textbf{(B) } 7": choice B
    # relations, one spelling each: \le \ge \ne < >
    s = re.sub(r"\\(?:leqslant|leq|le)(?![a-zA-Z])|<=", r"\\le ", s)
    s = re.sub(r"\\(?:geqslant|geq|ge)(?![a-zA-Z])|>=", r"\\ge ", s)
    s = re.sub(r"\\(?:neq|ne)(?![a-zA-Z])|!=", r"\\ne ", s)
    s = re.sub(r"\\lt(?![a-zA-Z])", "<", s)
    s = re.sub(r"\\gt(?![a-zA-Z])", ">", s)
    s = re.sub(r"\\operatorname\s*{(gcd|lcm|min|max)}", r"\\\1", s)
    if re.search(r"\d", s):                # "3 and -5", "x = 3 \text{ or } x = -5", "3; -5", "3 \quad 5"
        s = re.sub(r"\s*\\q?quad\s*(?!\\text|\\mathrm|\\mbox|$)", ", ", s)
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
    # a decimal, maybe with an exponent: 1.5, 1.5e3, 1.5\times10^{3}
    m = re.fullmatch(r"(-?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d{1,4})"
                     r"|(?:\\times|\\cdot|\*)10\^{?([+-]?\d{1,4})}?)?", s)
    if m:
        exp = int(m.group(2) or m.group(3) or 0)
        return Fraction(m.group(1)) * Fraction(10) ** exp
    return None


def _percent_word(s):
    """"50 percent" is "50\\%"."""
    return re.sub(r"\s*(?:\\text\s*{\s*percent\s*}|percent)\s*\.?\s*$", r"\\%", s) if "percent" in s else s


def _rounds_to(text, value, other):
    """True when `text` is a decimal of 10 or more significant digits that rounds or truncates the
    exact number `other`: |value - other| < one unit of its last digit. Shorter decimals must be
    exact against a rational gold ("express as a common fraction": 0.0714 is not 1/14)."""
    m = re.fullmatch(r"-?(\d*)\.(\d+)", text)
    if not m or other is None or len((m.group(1) + m.group(2)).lstrip("0")) < 10:
        return False
    return abs(value - other) < Fraction(1, 10 ** len(m.group(2)))


# ---------------------------------------------------------------------------------------------------
# Steps 3 and 4: labels, chains and structures (tuples, intervals, sets, lists, equations, matrices)
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

    ("matrix", rows) (("det", rows) for a vmatrix), ("union", parts), ("set", items), ("seq", (open, close,
    items)), ("list", items),
    ("pm", items) for "a \\pm b", ("eq", (lhs, rhs)), ("atom", s). An inequality in one variable is
    the interval it describes, a "seq": "x > 3" is (3, \\infty), "-4 \\le x \\le 9" is [-4, 9].
    """
    m = re.fullmatch(r"[\[(]?\s*\\begin{([pbvB]?matrix|array)}(?:{[^{}]*})?(.*)\\end{\1}\s*[\])]?", s)
    if m:
        rows = [r for r in m.group(2).split("\\\\") if r]
        return "det" if m.group(1) == "vmatrix" else "matrix", [r.split("&") for r in rows]   # |A| is no A
    if len(split_top(s, "\\cup")) > 1:
        return "union", split_top(s, "\\cup")
    if s.startswith("\\{") and s.endswith("\\}") and _balanced(s[2:-2]):
        return "set", split_top(s[2:-2])
    if s.startswith("{") and s.endswith("}") and _balanced(s[1:-1]) and len(split_top(s[1:-1])) > 1:
        return "set", split_top(s[1:-1])                         # a bare-brace list: {2, 3, 5, 7}
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


def _proportional(a, b):
    """a = c b for a constant c != 0, checked at 3 random points: lhs - rhs of the same equation with
    its terms moved and both sides scaled ("2x + 2y = 10" and "x + y = 5")."""
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        return False
    rng, ratio = random.Random(4321), None
    for _ in range(3):
        point = {s: sympy.Float(rng.uniform(0.5, 3.0), 30) for s in symbols}
        va, vb = _numeric(a, point), _numeric(b, point)
        if va is None or vb is None or abs(va) < 1e-12 or abs(vb) < 1e-12:
            return False
        with mpmath.workdps(PRECISION):
            if ratio is not None and not _close(va / vb, ratio, 1e-9):
                return False
            ratio = va / vb
    return True


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


def _expand_pm(items):
    """Items of a set or list, with an item "a \\pm b" as its two values a + b, a - b."""
    out = []
    for x in items:
        out += [x.replace("\\pm", "+"), x.replace("\\pm", "-")] if x.count("\\pm") == 1 else [x]
    return out


def _text_key(s):
    """Case- and space-insensitive form for text answers; "(C)" and "C" are the same choice."""
    s = re.sub(r"\\text{([^{}]*)}", r"\1", s).replace(" ", "")
    m = re.fullmatch(r"\(([A-Za-z])\)", s)
    if s.lower() in ("yes", "no", "true", "false"):
        return s.lower()                                               # "Yes" is "yes"
    return (m.group(1) if m else s) if len(s) <= 3 else s.lower()     # letters keep their case: N is not n


# a label: a letter (x, r', x_1, f(2)), a segment or angle name (PQ, ABC), a tuple of letters ((a, b))
_GREEK = r"\\(?:alpha|beta|gamma|delta|theta|phi|varphi|omega|lambda|mu|sigma|rho|tau|psi|epsilon|eta|kappa)"
_LABEL = re.compile(r"\s*((?:[A-Za-z]'*(?:_\{?\w+\}?)?(?:\([^()=]{0,20}\))?)|[A-Z]{2,3}"
                    r"|\([A-Za-z](?:\s*,\s*[A-Za-z])+\)"
                    r"|" + _GREEK + r"(?:_\{?\w+\}?)?"                     # \theta, \theta_1
                    r"|m?\s*\\angle\s*[A-Z]{1,3}|\\overline\s*{\s*[A-Z]{2}\s*}"   # \angle ABC, \overline{AB}
                    r"|\\text\s*{\s*[A-Za-z][A-Za-z ]{0,30}}"            # \text{Area}
                    r")\s*=(?!=)(.*)")


def _solved(value):
    """True when a label's value has no variable: "x = 5" is solved, "y = 2x + 3" is a line's equation."""
    try:
        return not parse_expression(value).free_symbols
    except (Refused, RecursionError):
        return True


def _labelled_values(items):
    """{label: value} of a list whose every item is labelled by a name of its own ("x = 1, y = 2"), else
    None: "x_1 = 2, x_2 = 3" (the roots of one equation) is a set, in any order."""
    pairs = [_label(x) for x in items]
    labels = [label.replace(" ", "") for label, _ in pairs if label is not None]
    if len(labels) != len(items) or len({label.split("_")[0] for label in labels}) != len(labels):
        return None
    return {label: value for label, (_, value) in zip(labels, pairs)}


def _label(s):
    """(label, value) of "x = 5", "x_1 = 2", "PQ = 6", "f(2) = 7", "(a, b) = (4, 1)"; (None, s) otherwise
    (and for lists: each item is looked at on its own)."""
    m = _LABEL.fullmatch(s)
    if m and len(split_top(s)) == 1 and m.group(2).strip():
        label, value = m.group(1), m.group(2).strip()
        if label.replace(" ", "") != value.replace(" ", "") and len(split_top(value, "=")) == 1:
            return label, value                  # not "x = x", and no label inside: "n = f(n) = n"
    return None, s


# ---------------------------------------------------------------------------------------------------
# Step 5: expressions (parsed by mathparse.py, our own whitelisted parser -> sympy)
# ---------------------------------------------------------------------------------------------------
_DECIMAL = re.compile(r"\d*\.\d+|\d+\.(?!\d)")                  # 3.14159, .5, 3. (decimal literals)
_WORD = re.compile(r"\s*\\text(?:bf)?\s*{\s*[A-Za-z]{2,}(?:\s+[A-Za-z]+)*\s*}\s*\.?\s*")   # \text{CBAD}


def _significant(decimal):
    """Significant digits of a decimal literal: "3.14159" 6, "0.0012" 2, "25." 2."""
    return len(decimal.replace(".", "").lstrip("0")) or 1
PRECISION = 50         # digits of every numeric comparison: e^{40} + 1 is not e^{40} (a double would say so)


def _numeric(x, point, prec=PRECISION):
    """x evaluated at `point` ({symbol: Float}) as an mpmath complex of `prec` digits, or None where
    undefined. (evalf with subs= evaluates in floating point: no exact power towers are ever expanded.)"""
    v = sympy.N(x, prec, subs=point)
    if v.has(sympy.nan, sympy.zoo) or not v.is_number:
        return None
    try:
        with mpmath.workdps(prec):
            return mpmath.mpc(*(sympy.Float(part, prec)._mpf_ for part in v.as_real_imag()))
    except (TypeError, ValueError, AttributeError):
        return None


def _close(a, b, tol):
    """|a - b| <= tol max(1, |a|, |b|), in PRECISION digits."""
    with mpmath.workdps(PRECISION):
        if a == b:
            return True
        if not (mpmath.isfinite(a) and mpmath.isfinite(b)):
            return False
        return abs(a - b) <= tol * max(1, abs(a), abs(b))


def expressions_equal(a, b, approx=False, allow_simplify=True, tol=None):
    """True iff sympy expressions a and b have the same value (as functions of their variables).

    Exact rationals compare exactly (approx: within tol too). Otherwise both are evaluated numerically,
    at 3 random points if they have variables, each variable positive or negative (x is not |x|);
    relative tolerance `tol`, else 1e-6 when a side was written as a decimal (approx), else 1e-30 (the
    values are evaluated to PRECISION = 50 digits: "(e^{40}) + 1" is not "e^{40}").
    Where numeric evaluation is not conclusive, simplify(a - b) == 0 decides.
    """
    if a == b:
        return True
    if a.is_Rational and b.is_Rational and not approx:
        return False
    if a.has(sympy.oo, -sympy.oo) or b.has(sympy.oo, -sympy.oo):
        return False
    tol = tol if tol is not None else 1e-6 if approx else 1e-30
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    rng = random.Random(1234)
    conclusive = True
    for k in range(3 if symbols else 1):
        point = {s: sympy.Float((-1) ** (k + i) * rng.uniform(0.5, 3.0), 30) for i, s in enumerate(symbols)}
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
# The checker: the steps in order, with a shared budget
# ---------------------------------------------------------------------------------------------------
class _Checker:
    """One is_equiv call: normalization, numbers, expressions, structures, with a shared budget."""

    def __init__(self, allow_simplify):
        self.allow_simplify = allow_simplify
        self.calls = 0
        self.refused = None      # the last reason the parser refused a side, for logging

    def equal(self, pred, gold, depth=0):
        """pred (the answer) against gold, through the steps in order; depth: nesting of structures."""
        self.calls += 1
        if depth > 8 or self.calls > 500:
            raise Refused("structure too large")
        pred, gold = _percent_word(pred), _percent_word(gold)
        unit_p, unit_g = (units(pred), units(gold)) if pred != gold else ("", "")
        if unit_p and unit_g and unit_p != unit_g:                 # "7 meters" is not "7 feet"
            self.refused = f"different units: {unit_p} vs {unit_g}"
            return False
        norm_p, norm_g = normalize(pred), normalize(gold)
        compact_p, compact_g = norm_p.replace(" ", ""), norm_g.replace(" ", "")
        if compact_p == compact_g:                              # step 1: the same string
            return True
        if not compact_p or not compact_g:
            return False
        for a, b in ((compact_p, compact_g), (compact_g, compact_p)):    # "(B) 7" chooses B: a number
            choice, with_value = (re.fullmatch(r"\(?([A-E])\)?", b),      # may follow the choice
                                  re.fullmatch(r"\(([A-E])\)(?:-?\d+(?:\.\d+)?|\\frac{\d+}{\d+})", a))
            if choice and with_value:
                return choice.group(1) == with_value.group(1)
        num_p, num_g = parse_number(compact_p), parse_number(compact_g)   # step 2: numbers, exactly
        if num_p is not None and num_g is not None:
            if num_p == num_g:
                return True
            # "50\%" against "0.5": a percent sign on one side only may also mean "divide by 100"
            # (on both sides it is the same unit: "0.05\%" is not "5\%")
            one_sided = ("%" in pred) != ("%" in gold)
            return ((one_sided and "%" in pred and num_p / 100 == num_g)
                    or (one_sided and "%" in gold and num_g / 100 == num_p)
                    or _rounds_to(compact_p, num_p, num_g) or _rounds_to(compact_g, num_g, num_p))
        sides = self.labels_and_chains(norm_p, norm_g, depth)   # step 3: "x = 5", "\sqrt{256} = 16"
        if sides is not None:
            return sides
        kind_p, items_p = structure(norm_p)                     # step 4: structures (before step 5
        kind_g, items_g = structure(norm_g)                     # so that (1,2) is not an expression)
        if kind_p != "atom" or kind_g != "atom":
            return self.structures_equal(kind_p, items_p, kind_g, items_g, depth)
        if _text_key(norm_p) == _text_key(norm_g):
            return True
        if _WORD.fullmatch(pred) or _WORD.fullmatch(gold):     # a word is not a product of letters
            return False
        try:                                                    # step 5: expressions
            expr_p, expr_g = parse_expression(norm_p), parse_expression(norm_g)
        except Refused as e:
            self.refused = str(e)
            return False
        if expr_p.free_symbols != expr_g.free_symbols:          # a variable only one side has: an
            return False                                        # identity in it pays nothing (min(7, 7 + x))
        if (num_p is None) != (num_g is None) and not (expr_p.free_symbols or expr_g.free_symbols):
            # a number against an exact value: equal to it, or a decimal of 10 significant digits
            text, value, exact = ((compact_p, num_p, expr_g) if num_p is not None
                                  else (compact_g, num_g, expr_p))
            if "." in text:
                return (sympy.Rational(value) == exact
                        or _rounds_to(text, value, Fraction(str(sympy.N(exact, 40))) if exact.is_real else None))
            close = sympy.N(exact, 60)          # an exact number is equal to the digit, at any size:
            if close.is_real:                   # no integer is near enough to e^{40}
                return abs(Fraction(str(close)) - value) <= max(1, abs(value)) * Fraction(1, 10 ** 45)
        # an answer is exact only if every number in it is: a decimal anywhere makes it an approximation,
        # as precise as its least precise decimal, which needs 10 significant digits (as a plain decimal)
        digits = min((_significant(d) for d in _DECIMAL.findall(compact_p + " " + compact_g)), default=None)
        exact = expressions_equal(expr_p, expr_g, allow_simplify=self.allow_simplify)
        if exact or digits is None:
            return exact
        return digits >= 10 and expressions_equal(expr_p, expr_g, approx=True, tol=10.0 ** (1 - digits),
                                                  allow_simplify=False)

    def below(self, depth):
        """equal() one level down, for the parts of a structure."""
        def equal_part(pred, gold):
            return self.equal(pred, gold, depth + 1)
        return equal_part

    def labels_and_chains(self, pred, gold, depth):
        """A label before the value ("x = 5", "PQ = 6", "f(2) = 7", "(a, b) = (4, 1)") is not part of
        it: against a gold without "=", the value counts; two labelled answers need the same label.
        A chain of equalities ("\\sqrt{324 - 68} = \\sqrt{256} = 16") against a value: its last side.
        None when neither applies (then an equation is compared as an equation, step 4)."""
        equal = self.below(depth)
        (label_p, value_p), (label_g, value_g) = _label(pred), _label(gold)
        if label_p is not None and label_g is not None:
            return label_p.replace(" ", "") == label_g.replace(" ", "") and equal(value_p, value_g)
        sides_p, sides_g = split_top(pred, "="), split_top(gold, "=")
        # an equation solved for a variable ("x = 5") equals an equation solved for it ("5 = x"), not
        # one still to solve ("3x + 7 = 22")
        for (label, value), sides, other in (((label_g, value_g), sides_p, pred),
                                             ((label_p, value_p), sides_g, gold)):
            if label is not None and len(sides) == 2 and len(split_top(other)) == 1 and _solved(value):
                flipped, flipped_value = _label(sides[1] + "=" + sides[0])
                return (flipped is not None and flipped.replace(" ", "") == label.replace(" ", "")
                        and equal(*((flipped_value, value) if other is pred else (value, flipped_value))))
        if label_p is not None and len(sides_g) == 1:
            return equal(value_p, gold)
        if label_g is not None and len(sides_p) == 1:
            return equal(pred, value_g)
        if len(sides_p) > 1 and len(sides_g) == 1 and len(split_top(pred)) == 1:
            return self.computes_a_value(sides_p) and equal(sides_p[-1], gold)
        if len(sides_g) > 1 and len(sides_p) == 1 and len(split_top(gold)) == 1:
            return self.computes_a_value(sides_g) and equal(pred, sides_g[-1])
        return None

    def computes_a_value(self, sides):
        """True for a chain of equalities that computes a value: every side a number (no variable: an
        equation is not its right side), all equal, not all written alike ("7 = 7" states nothing)."""
        if len(sides) > 2 and _LABEL.fullmatch(sides[0] + "=" + sides[1]):
            sides = sides[1:]                                       # "x = 2 + 3 = 5": the label goes
        if len({x.replace(" ", "") for x in sides}) == 1:
            return False
        try:
            values = [parse_expression(x) for x in sides]
        except Refused as e:
            self.refused = str(e)
            return False
        if any(v.free_symbols for v in values):
            return False
        approx = any("." in x for x in sides)
        return all(expressions_equal(values[0], v, approx, self.allow_simplify) for v in values[1:])

    # structures of one kind (reward.structure) compared part by part: the kind's comparer
    def structures_equal(self, kind_p, items_p, kind_g, items_g, depth):
        unordered = ("set", "list", "pm")
        if kind_p in unordered and kind_g in unordered:
            return self.collections_equal(items_p, items_g, depth)
        if {kind_p, kind_g} == {"list", "union"}:                  # "x < 3 or x > 5" is a union
            return self.unions_equal(items_p, items_g, depth)
        if (kind_p, kind_g) in (("list", "seq"), ("seq", "list")):  # "a = 2, b = 3" against "(2, 3)"
            seq, labelled = (items_g, items_p) if kind_p == "list" else (items_p, items_g)
            values = _labelled_values(labelled)
            if seq[0] == "(" and seq[1] == ")" and values is not None:
                values = list(values.values())
                pred, gold = (values, seq[2]) if kind_p == "list" else (seq[2], values)
                return len(pred) == len(gold) and all(map(self.below(depth), pred, gold))
            return False
        if kind_p != kind_g or kind_p not in ("seq", "union", "matrix", "det", "eq"):
            return False
        compare = {"seq": self.sequences_equal, "union": self.unions_equal, "matrix": self.matrices_equal,
                   "det": self.matrices_equal, "eq": self.equations_equal}[kind_p]
        return compare(items_p, items_g, depth)

    def collections_equal(self, items_p, items_g, depth):
        """Sets, lists, a \\pm b: the same items in any order. Against a labelled gold ("x = 1, y = 2")
        labelled answers match by label, in any order, and unlabelled ones by position ("1, 2")."""
        labels_p, labels_g = _labelled_values(items_p), _labelled_values(items_g)
        if labels_p is not None and labels_g is not None:
            return labels_p.keys() == labels_g.keys() and all(
                self.below(depth)(labels_p[k], labels_g[k]) for k in labels_g)
        if labels_p is not None or labels_g is not None:        # one side labelled: by position
            values_p = list(labels_p.values()) if labels_p is not None else items_p
            values_g = list(labels_g.values()) if labels_g is not None else items_g
            return len(values_p) == len(values_g) and all(map(self.below(depth), values_p, values_g))
        items_p, items_g = _expand_pm(items_p), _expand_pm(items_g)     # "\{1, 2 \pm \sqrt{3}\}": 3 items
        gold_keys = [x.replace(" ", "") for x in items_g]
        if len(set(gold_keys)) == len(gold_keys):            # the gold lists each answer once: so may we
            items_p = list({x.replace(" ", ""): x for x in items_p}.values())
        return _unordered_equal(items_p, items_g, self.below(depth))

    def sequences_equal(self, seq_p, seq_g, depth):
        """Tuples and intervals: the same brackets, the same items in order."""
        (open_p, close_p, items_p), (open_g, close_g, items_g) = seq_p, seq_g
        return (open_p == open_g and close_p == close_g and len(items_p) == len(items_g)
                and all(map(self.below(depth), items_p, items_g)))

    def unions_equal(self, parts_p, parts_g, depth):
        return _unordered_equal(parts_p, parts_g, self.below(depth))

    def matrices_equal(self, rows_p, rows_g, depth):
        equal = self.below(depth)
        return (len(rows_p) == len(rows_g) and all(len(a) == len(b) for a, b in zip(rows_p, rows_g))
                and all(equal(x, y) for a, b in zip(rows_p, rows_g) for x, y in zip(a, b)))

    def equations_equal(self, eq_p, eq_g, depth):
        """The same sides, or the same equation rearranged: lhs - rhs equal up to sign or a factor."""
        (left_p, right_p), (left_g, right_g) = eq_p, eq_g
        equal = self.below(depth)
        if equal(left_p, left_g) and equal(right_p, right_g):
            return True
        try:
            diff_p = parse_expression(left_p) - parse_expression(right_p)
            diff_g = parse_expression(left_g) - parse_expression(right_g)
        except Refused as e:
            self.refused = str(e)
            return False
        return (expressions_equal(diff_p, diff_g, allow_simplify=self.allow_simplify)
                or expressions_equal(diff_p, -diff_g, allow_simplify=self.allow_simplify)
                or _proportional(diff_p, diff_g))


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
    except TimedOut:
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


def unreadable_gold(gold):
    """Why a gold answer cannot be read as math (our parser refuses it), or None when it can: a number,
    a structure, a word, an expression. Nothing but the same text can match an unreadable gold, so
    data.load_problems says so when it loads one, rather than a run paying 0 for it forever."""
    norm = normalize(gold)
    if parse_number(norm.replace(" ", "")) is not None or structure(norm)[0] != "atom":
        return None
    if re.fullmatch(r"[A-Za-z][A-Za-z ]*|\(?[A-Z]\)?", norm) or _WORD.fullmatch(gold):
        return None                                            # a word, a choice: compared as text
    try:
        with time_limit(DEFAULT_TIMEOUT):
            parse_expression(norm)
    except Refused as e:
        return str(e)
    except (TimedOut, RecursionError):
        return "too large"
    return None
