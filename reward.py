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

import math
import random
import re
import signal
import threading
from fractions import Fraction

import sympy

MAX_COMPLETION_CHARS = 200_000   # longer completions: only the tail is searched for an answer
MAX_ANSWER_CHARS = 1_000         # a longer extracted answer is judged wrong
MAX_DEPTH = 40                   # nesting depth of brackets / operators in the parser
MAX_DIGITS = 5_000               # an exact number with more digits is refused
MAX_EXPONENT = 10_000            # |n| in x^n when n is a number
MAX_FACTORIAL = 1_000            # n in n!
DEFAULT_TIMEOUT = 1.0            # seconds for one is_equiv call


class Refused(Exception):
    """The input is outside what the checker accepts (too big, too deep, not whitelisted)."""


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


def last_boxed(text):
    """Content of the last \\boxed{...} or \\fbox{...} with balanced braces, else None."""
    pos = len(text)
    for _ in range(100):  # an unbalanced last box: try the one before it, a bounded number of times
        pos = max(text.rfind("\\boxed", 0, pos), text.rfind("\\fbox", 0, pos))
        if pos < 0:
            return None
        j = pos + (6 if text.startswith("\\boxed", pos) else 5)
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            inner = _braced(text, j)
            if inner is not None:
                return inner
        elif j < len(text):  # "\boxed 5": one token
            m = re.match(r"[^\s$]+", text[j:j + MAX_ANSWER_CHARS])
            if m:
                return m.group(0)
    return None


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


def extract_answer(text, last_number_fallback=False):
    """The final answer a completion gives, as a string, or None.

    In order: the last \\boxed{}/\\fbox{}; GSM8K's "#### N"; "the answer is X"; and, only when
    last_number_fallback is on, the last number in the text.
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
            ans = m.group(1).strip()
            ans = re.sub(r"\.\s.*$", "", ans)  # stop at the end of the sentence
            return ans.strip().strip("$").rstrip(".").strip()
    if last_number_fallback:
        nums = re.findall(_NUMBER, text[-10_000:])
        if nums:
            return nums[-1]
    return None


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
    s = re.sub(r"\\(?:mbox|mathrm|textbf|mathbf|textit|operatorname)\s*{", r"\\text{", s)
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
    s = re.sub(r"(?<!\\)\\[!,;: ]|~", "", s)            # thin spaces, but not the row break \\
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\^\s*{\s*\\circ\s*}|\^\s*\\circ|\u00b0", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _unwrap_text(s)
    s = s.strip()
    s = re.sub(r"\.$", "", s).strip()
    s = _UNIT_RE.sub("", s).strip()
    s = s.replace("{,}", ",")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s.replace(" ", "")):
        s = s.replace(",", "")                   # thousands separators: "58,500" -> "58500"
    # \frac12 -> \frac{1}{2}, \frac1{x} -> \frac{1}{x}, \sqrt2 -> \sqrt{2}
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*{([^{}]*)}\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d+|[a-zA-Z])", r"\\sqrt{\1}", s)
    s = re.sub(r"^[a-zA-Z]\s*\\in(?![a-zA-Z])", "", s)       # "x \in [2, 5)" -> "[2, 5)"
    # a leading "x =" / "y=" (one variable) is not part of the value
    m = re.fullmatch(r"\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=(?!=)(.*)", s)
    if m and "=" not in m.group(1):
        s = m.group(1)
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
# Step 3: our own whitelisted parser -> sympy
# ---------------------------------------------------------------------------------------------------
_FUNCS = {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
          "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
          "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "exp": sympy.exp,
          "ln": sympy.log, "log": sympy.log}
_GREEK = {"alpha", "beta", "gamma", "delta", "theta", "phi", "varphi", "lambda", "mu", "omega", "rho",
          "sigma", "tau", "epsilon", "varepsilon", "psi", "eta", "kappa", "nu", "xi", "zeta", "chi"}
_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+(?![a-zA-Z]))?|\.\d+)"  # number
                    r"|\\([a-zA-Z]+)"                                         # \command
                    r"|([a-zA-Z])"                                            # letter
                    r"|(\\{|\\}|[-+*/^()\[\]{}!|_,]))")                       # punctuation


def tokenize(s):
    if len(s) > MAX_ANSWER_CHARS:
        raise Refused("answer too long")
    tokens, pos = [], 0
    s = s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise Refused(f"unexpected character {s[pos]!r}")
        num, cmd, letter, punct = m.groups()
        if num is not None:
            if len(num) > 100:
                raise Refused("number literal too long")
            tokens.append(("num", num))
        elif cmd is not None:
            tokens.append(("cmd", cmd))
        elif letter is not None:
            tokens.append(("var", letter))
        else:
            tokens.append(("p", punct))
        pos = m.end()
    return tokens


def _check_size(x):
    """Refuse exact numbers with more than MAX_DIGITS digits (they make everything after slow)."""
    if isinstance(x, sympy.Rational):
        bits = max(abs(int(x.p)).bit_length(), abs(int(x.q)).bit_length())
        if bits * 0.30103 > MAX_DIGITS:
            raise Refused("number too large")
    return x


def _power(base, exp):
    """base ** exp, refusing results that would be astronomically large."""
    if exp.is_Number:
        if abs(exp) > MAX_EXPONENT and not (base.is_Number and abs(base) <= 1):
            raise Refused("exponent too large")
        if base.is_Rational and exp.is_Integer:
            b = max(abs(int(base.p)), abs(int(base.q)), 2)
            if abs(int(exp)) * math.log10(b) > MAX_DIGITS:
                raise Refused("power too large")
    elif exp.has(sympy.zoo, sympy.nan):
        raise Refused("undefined exponent")
    out = sympy.Pow(base, exp)
    if out.is_Pow and out.exp.is_Number and abs(out.exp) > MAX_EXPONENT:  # (x^9999)^9999 = x^99980001
        raise Refused("exponent too large")
    return _check_size(out)


class _Parser:
    """Recursive descent over the token list. Grammar (lowest binding first):

        expr    := term (('+' | '-') term)*
        term    := unary (('*' | '/' | \\cdot | \\times | \\div) unary | <implicit> postfix)*
        unary   := ('+' | '-') unary | postfix
        postfix := atom ('^' exponent | '!' | '_' group)*
        atom    := number | letter | \\pi | \\infty | greek | ( expr ) | { expr } | [ expr ] | | expr |
                 | \\frac group group | \\sqrt [ '[' expr ']' ] group | func [^exponent] argument
    """

    def __init__(self, tokens):
        self.toks, self.i, self.depth = tokens, 0, 0

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else (None, None)

    def take(self, kind=None, value=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            raise Refused(f"expected {value or kind}, got {tok[1]!r}")
        self.i += 1
        return tok

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Refused("nested too deeply")

    def parse(self):
        out = self.expr()
        if self.peek()[0] is not None:
            raise Refused(f"unexpected {self.peek()[1]!r}")
        return out

    def expr(self):
        self.enter()
        out = self.term()
        while self.peek() in (("p", "+"), ("p", "-")):
            op = self.take()[1]
            rhs = self.term()
            out = _check_size(out + rhs if op == "+" else out - rhs)
        self.depth -= 1
        return out

    def starts_atom(self):
        kind, val = self.peek()
        if kind in ("num", "var"):
            return True
        if kind == "cmd":
            return val in ("frac", "sqrt", "pi", "infty") or val in _FUNCS or val in _GREEK
        return kind == "p" and val in ("(", "{", "[")

    def term(self):
        out = self.unary()
        while True:
            kind, val = self.peek()
            if (kind, val) in (("p", "*"), ("cmd", "cdot"), ("cmd", "times")):
                self.take()
                out = _check_size(out * self.unary())
            elif (kind, val) in (("p", "/"), ("cmd", "div")):
                self.take()
                den = self.unary()
                if den == 0:
                    raise Refused("division by zero")
                out = _check_size(out / den)
            elif self.starts_atom():  # implicit multiplication: 2x, 3\sqrt{2}, (a)(b)
                out = _check_size(out * self.postfix())
            else:
                return out

    def unary(self):
        if self.peek() == ("p", "-"):
            self.take()
            self.enter()
            out = -self.unary()
            self.depth -= 1
            return out
        if self.peek() == ("p", "+"):
            self.take()
            return self.unary()
        return self.postfix()

    def postfix(self):
        self.enter()
        out = self.atom()
        while True:
            tok = self.peek()
            if tok == ("p", "^"):
                self.take()
                out = _power(out, self.exponent())
            elif tok == ("p", "!"):
                self.take()
                if not (out.is_Integer and 0 <= out <= MAX_FACTORIAL):
                    raise Refused("factorial of a large or non-integer number")
                out = sympy.factorial(out)
            else:
                break
        self.depth -= 1
        return out

    def exponent(self):
        """What follows ^: a {group}, or one signed atom (x^2, x^-1, e^x)."""
        if self.peek() == ("p", "-"):
            self.take()
            return -self.exponent()
        return self.atom()

    def group(self):
        """A {...} argument, or a single token (as in \\frac12 or \\sqrt2)."""
        if self.peek() == ("p", "{"):
            self.take()
            out = self.expr()
            self.take("p", "}")
            return out
        return self.atom()

    def atom(self):
        self.enter()
        kind, val = self.take()
        if kind == "num":
            out = _check_size(sympy.Rational(Fraction(val)))
        elif kind == "var":
            out = {"e": sympy.E, "i": sympy.I}.get(val) or sympy.Symbol(val)
            if self.peek() == ("p", "_"):  # subscripted variable a_1, a_{12}
                self.take()
                sub = self.take()[1] if self.peek() != ("p", "{") else self._subscript()
                out = sympy.Symbol(f"{val}_{sub}")
        elif kind == "p" and val in ("(", "[", "{"):
            close = {"(": ")", "[": "]", "{": "}"}[val]
            out = self.expr()
            self.take("p", close)
        elif kind == "p" and val == "|":
            out = sympy.Abs(self.expr())
            self.take("p", "|")
        elif kind == "cmd" and val == "frac":
            num = self.group()
            den = self.group()
            if den == 0:
                raise Refused("division by zero")
            out = _check_size(num / den)
        elif kind == "cmd" and val == "sqrt":
            index = sympy.Integer(2)
            if self.peek() == ("p", "["):
                self.take()
                index = self.expr()
                self.take("p", "]")
                if not (index.is_Integer and 2 <= index <= 100):
                    raise Refused("unsupported root index")
            out = _power(self.group(), 1 / index)
        elif kind == "cmd" and val == "pi":
            out = sympy.pi
        elif kind == "cmd" and val == "infty":
            out = sympy.oo
        elif kind == "cmd" and val in _GREEK:
            out = sympy.Symbol(val)
        elif kind == "cmd" and val in _FUNCS:
            out = self.function(val)
        else:
            raise Refused(f"unsupported {val!r}")
        self.depth -= 1
        return out

    def _subscript(self):
        self.take("p", "{")
        parts = []
        while self.peek() != ("p", "}"):
            kind, val = self.take()
            if kind not in ("num", "var"):
                raise Refused("unsupported subscript")
            parts.append(val)
        self.take("p", "}")
        return "".join(parts)

    def function(self, name):
        """\\sin x, \\sin^2 x, \\sin(x), \\log_2 8, \\log_{10}(x)."""
        base = None
        if name == "log" and self.peek() == ("p", "_"):
            self.take()
            base = self.group()
        power = None
        if self.peek() == ("p", "^"):
            self.take()
            power = self.exponent()
        arg = self.postfix()
        out = _FUNCS[name](arg) if base is None else sympy.log(arg, base)
        return out if power is None else _power(out, power)


def parse_expression(s):
    """A normalized answer string -> sympy expression, using only the whitelisted grammar above."""
    plain = re.sub(r"(?<![\\a-zA-Z])(sin|cos|tan|cot|sec|csc|log|ln|exp|sqrt|pi)(?![a-zA-Z])", r"\\\1", s)
    return _Parser(tokenize(plain)).parse()


# ---------------------------------------------------------------------------------------------------
# Deciding equality of two sympy expressions
# ---------------------------------------------------------------------------------------------------
class _Timeout(Exception):
    pass


class time_limit:
    """A hard time limit for the block, via SIGALRM, in the main thread (no thread, no process).

    Elsewhere (a worker thread) it cannot interrupt, and `hard` is False: callers then skip the one
    unbounded step (sympy.simplify). Nested limits keep the outer one.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.hard = (threading.current_thread() is threading.main_thread()
                     and hasattr(signal, "setitimer")
                     and signal.getitimer(signal.ITIMER_REAL)[0] == 0)

    def __enter__(self):
        if self.hard:
            def on_alarm(signum, frame):
                raise _Timeout()
            self.old = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.hard:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        return False


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
    ("pm", items) for "a \\pm b", ("eq", (lhs, rhs)), ("atom", s).
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
    sides = split_top(s, "=")
    if len(sides) == 2:
        return "eq", tuple(sides)
    return "atom", s


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
            return ("%" in pred and pn / 100 == gn) or ("%" in gold and gn / 100 == pn)
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

    def structures_equal(self, kp, vp, kg, vg, depth):
        eq = lambda a, b: self.equal(a, b, depth + 1)  # noqa: E731
        unordered = ("set", "list", "pm")
        if kp in unordered and kg in unordered:
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


def rewards(completions, golds, timeout=DEFAULT_TIMEOUT, last_number_fallback=False):
    """1.0 for each completion whose extracted final answer equals its gold answer, else 0.0.

    completions, golds: lists of strings, same length. Repeated (answer, gold) pairs in the batch
    (common: G rollouts of one prompt often agree) are checked once.
    """
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    cache = {}
    out = []
    for text, gold in zip(completions, golds):
        pred = extract_answer(text, last_number_fallback)
        key = (pred, gold)
        if key not in cache:
            cache[key] = 1.0 if is_equiv(pred, gold, timeout) else 0.0
        out.append(cache[key])
    return out
