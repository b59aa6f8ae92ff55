"""mathparse.py (through reward.check): hostile model text is judged wrong, fast, creating nothing and
never reaching eval or exec; sympy's unbounded step is cut by the time limit, or skipped off the main thread."""

import time

import pytest

import reward
from reward import check, rewards

# --- hostile input: injection attempts, expression bombs, deep nesting, huge and odd strings --------------------------------------------------------------------------------
HOSTILE = [
    "__import__('os').system('touch pwned')",
    "__import__(\"os\").system(\"touch pwned\")",
    "().__class__.__bases__[0].__subclasses__()",
    "lambda: __import__('os').system('touch pwned')",
    "(lambda x: x)(1)",
    "x.__class__",
    "x.__globals__",
    "exec('open(\"pwned\",\"w\")')",
    "eval('1+1')",
    "open('pwned', 'w').write('x')",
    "__builtins__",
    "sympy.sympify('1')",
    "Symbol('x').__init__",
    "{a: 1 for a in range(10**9)}",
    "[x for x in ().__class__.__base__.__subclasses__()]",
    "1 if True else 0",
    "import os",
    "getattr(x, '__class__')",
    "\\text{__import__('os')}",
    "\\boxed{__import__('os')}",
    "9^{9^{9^9}}",
    "10^{10^{10}}",
    "100000!",
    "(10^{9999})!",
    "2^{2^{2^{2^{2^{2}}}}}",
    "(x^{9999})^{9999}",
    "((((2^{999})^{999})^{999})^{999})",
    "\\sqrt[1000000]{2}",
    "\\frac{1}{0}",
    "0^{-1}",
    "(" * 10_000 + "1" + ")" * 10_000,
    "{" * 10_000,
    "\\frac{" * 5_000,
    "-" * 900 + "1",
    "1" * 1_000_000,
    "\\boxed{}" * 10_000,
    "1\x002",
    "\u202e1\u202d",
    "\ud800",
    "\u0661\u0662",
    "x" * 999,
    "\\sin(" * 300 + "1" + ")" * 300,
    "e^{e^{e^{e^{e^{e^{e^{10}}}}}}}",
    "\\begin{pmatrix}" + "1&" * 400 + "1\\end{pmatrix}",
]


def test_the_hostile_list_goes_past_every_bound_of_the_parser():
    """The list holds an input beyond each of mathparse's size bounds, so raising a bound past what the
    list tries fails here rather than passing unnoticed."""
    import re

    import mathparse
    assert any(len(t) > mathparse.MAX_ANSWER_CHARS for t in HOSTILE)
    assert any(len(t) > mathparse.MAX_COMPLETION_CHARS for t in HOSTILE)
    assert any(t.count("(") > mathparse.MAX_DEPTH for t in HOSTILE)
    assert any(len(n) > mathparse.MAX_DIGITS for t in HOSTILE for n in re.findall(r"\d+", t))
    assert any(int(n) > mathparse.MAX_FACTORIAL for t in HOSTILE for n in re.findall(r"(\d+)!", t))


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_is_wrong_fast_and_harmless(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    limit = 0.5
    t0 = time.perf_counter()
    for pred, gold in ((text, "1"), (text, "2"), ("1", text)):
        ok, reason = check(pred, gold, timeout=limit)
        assert ok is False, (pred[:80], reason)
    assert rewards(["\\boxed{%s}" % text, text], ["1", "1"], timeout=limit) == [0.0, 0.0]
    assert time.perf_counter() - t0 < 5 * 4 * limit       # 4 checks, each well inside a few limits
    assert list(tmp_path.iterdir()) == []                  # nothing was created


def test_model_text_never_reaches_eval(monkeypatch):
    """sympify / parse_expr / parse_latex on a string all end in Python's eval or exec: forbid both.

    sympy's first simplify() imports sympy.physics.units, which sympifies its own constant strings:
    a warm-up pass does those imports before the trap is set."""
    import builtins
    import sympy

    texts = HOSTILE[:30] + ["x^2+2x+1", "\\frac{\\sqrt{2}}{2}", "(1,2)", "\\{1,2\\}", "x^2-1"]
    for text in texts:
        check(text, "(x+1)^2")

    calls = []

    def boom(*a, **k):
        calls.append(a)                       # recorded: check() itself would swallow the error
        raise AssertionError("eval/exec was called")
    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    with pytest.raises(AssertionError):       # the trap works: sympify of a string is caught
        sympy.sympify("1 + 1")
    calls.clear()
    for text in texts:
        check(text, "(x+1)^2")
    assert check("x^2+2x+1", "(x+1)^2") == (True, "equal")
    assert calls == []


def test_slow_simplify_is_cut_by_the_timeout(monkeypatch):
    import sympy

    def slow(expr, *a, **k):
        while True:
            pass
    monkeypatch.setattr(sympy, "simplify", slow)
    monkeypatch.setattr(reward, "_numeric", lambda *a, **k: None)  # force the simplify path
    t0 = time.perf_counter()
    ok, reason = check("x^2 - 1", "(x-1)(x+1)", timeout=0.2)
    assert ok is False and "timed out" in reason
    assert time.perf_counter() - t0 < 1.0


def test_in_a_worker_thread_the_unbounded_step_is_skipped(monkeypatch):
    import threading
    import sympy
    monkeypatch.setattr(sympy, "simplify", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    out = {}
    t = threading.Thread(target=lambda: out.update(r=check("x^2", "(x)(x)"), s=check("\\frac{1}{0}", "1")))
    t.start()
    t.join(10)
    assert out["r"] == (True, "equal") and out["s"][0] is False
