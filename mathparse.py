"""mathparse.py: untrusted text in, bounded sympy out. The whitelisted parser reward.py checks with.

Appendix of the tutorial's reward chapter. Model text is untrusted input: it never reaches eval,
exec, sympify, parse_expr or parse_latex. A small recursive-descent parser turns a whitelisted
subset of LaTeX and plain math into sympy objects and refuses anything else (raising Refused).
Sizes are bounded before sympy sees them: input length, nesting depth, digits, exponents,
factorials, binomials; and time_limit puts a hard limit on sympy's work (SIGALRM in the main thread).
"""

import math
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
MAX_FACTORIAL = 1_000            # n in n!, and in \binom{n}{k}
DEFAULT_TIMEOUT = 1.0            # seconds for one reward.is_equiv call


class Refused(Exception):
    """The input is outside what the checker accepts (too big, too deep, not whitelisted)."""


# ---------------------------------------------------------------------------------------------------
# The grammar
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
                 | \\binom group group | \\lfloor expr \\rfloor | \\lceil expr \\rceil
                 | (\\min | \\max | \\gcd | \\lcm) ( expr , expr ... )
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

    def function_value(self):
        """True when a letter is followed by a number alone in parentheses, "(2)" or "(-1)": f(2) is the value
        of f at 2 (no one writes x * 2 as x(2)); x(x + 1) stays a product."""
        k = 2 if self.peek(1) == ("p", "-") else 1
        return self.peek() == ("p", "(") and self.peek(k)[0] == "num" and self.peek(k + 1) == ("p", ")")

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
            return (val in ("frac", "sqrt", "pi", "infty", "binom", "lfloor", "lceil") or val in _FUNCS
                    or val in _GREEK or val in _MULTI)
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
            elif val not in "ei" and self.function_value():   # I(0), f(2): a function's value, not I * 0
                out = sympy.Function(val)(self.group())
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
        elif kind == "cmd" and val == "binom":
            n, k = self.group(), self.group()
            out = _binomial(n, k)
        elif kind == "cmd" and val in ("lfloor", "lceil"):
            inner = self.expr()
            self.take("cmd", "rfloor" if val == "lfloor" else "rceil")
            out = sympy.floor(inner) if val == "lfloor" else sympy.ceiling(inner)
        elif kind == "cmd" and val in _MULTI:
            out = _MULTI[val](*self.arguments())
        else:
            raise Refused(f"unsupported {val!r}")
        self.depth -= 1
        return out

    def arguments(self):
        """(a, b, ...) after \\min, \\max, \\gcd, \\lcm: two to 20 arguments."""
        self.take("p", "(")
        args = [self.expr()]
        while self.peek() == ("p", ","):
            self.take()
            args.append(self.expr())
        self.take("p", ")")
        if not 2 <= len(args) <= 20:
            raise Refused("unsupported number of arguments")
        return args

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


def _integers(*args):
    if not all(a.is_Integer for a in args):
        raise Refused("gcd / lcm of non-integers")
    return args


_MULTI = {"min": sympy.Min, "max": sympy.Max,
          "gcd": lambda *a: sympy.Integer(math.gcd(*map(int, _integers(*a)))),
          "lcm": lambda *a: _check_size(sympy.Integer(math.lcm(*map(int, _integers(*a)))))}


def _binomial(n, k):
    """C(n, k): exact for integers up to MAX_FACTORIAL; with a symbolic n and a small integer k, the
    polynomial n (n - 1) ... (n - k + 1) / k!."""
    small = (lambda x: x.is_Integer and 0 <= x <= MAX_FACTORIAL)
    if not small(k) or (n.is_Number and not small(n)):
        raise Refused("unsupported binomial")
    if n.is_Integer:
        return sympy.binomial(n, k)
    if k > 50:
        raise Refused("binomial too large")
    return sympy.expand_func(sympy.binomial(n, k))


def parse_expression(s):
    """A normalized answer string -> sympy expression, using only the whitelisted grammar above."""
    plain = re.sub(r"(?<![\\a-zA-Z])(sin|cos|tan|cot|sec|csc|log|ln|exp|sqrt|pi|gcd|lcm|min|max)(?![a-zA-Z])",
                   r"\\\1", s)
    return _Parser(tokenize(plain)).parse()


# ---------------------------------------------------------------------------------------------------
# A hard time limit for sympy's work (reward.py compares the parsed expressions under it)
# ---------------------------------------------------------------------------------------------------
class TimedOut(Exception):
    """The time limit ran out (reward.check answers False with the reason)."""


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
                raise TimedOut()
            self.old = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.hard:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        return False
