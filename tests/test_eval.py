"""eval.py: pass@k by hand, scoring of known completions, and the command line end to end."""

import json
import os

import pytest
import torch
from helpers import tiny_chat_model

import eval as evaluation
from eval import evaluate, pass_at, pass_at_k
from data import build_prompts
from rollout import Rollout, Sampling
from tiny_model import build_tiny_tokenizer


def test_pass_at_k_by_hand():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)                  # = c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)             # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 1, 3) == pytest.approx(1 - 0 / 4 - 1 + 3 / 4)  # 1 - C(3,3)/C(4,3) = 3/4
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 4, 1) == 1.0 and pass_at_k(4, 2, 3) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def fake_sampler(answer_for):
    """A stand-in for rollout.sample whose completions are answer_for(problem index, sample index)."""
    calls = {"offset": 0}

    def fake(model, prompts, n=1, **kw):
        texts = [answer_for(calls["offset"] + i, j) for i in range(len(prompts)) for j in range(n)]
        calls["offset"] += len(prompts)
        B = len(texts)
        z = torch.zeros(B, 1)
        return Rollout(z.long(), z, z, z.long(), z.bool(), texts)
    return fake


def problems():
    tok = build_tiny_tokenizer()
    probs = [{"problem": f"{a}+1=", "gold": str(a + 1)} for a in range(6)]
    return tok, build_prompts(probs, tok, "raw", builtin=True)


def test_a_model_that_always_answers_right_scores_100(monkeypatch):
    tok, probs = problems()
    monkeypatch.setattr(evaluation, "sample", fake_sampler(lambda i, j: "\\boxed{%d}" % (i + 1)))
    res = evaluate(torch.nn.Linear(1, 1), tok, probs, Sampling(temperature=1.0, max_rows=8), samples=4, progress=False)
    assert res["mean@4"] == 1.0 and pass_at(res["results"], 1) == 1.0 and res["pass@4"] == 1.0
    assert all(r["correct"] == [True] * 4 for r in res["results"])


def test_half_right_scores_by_hand(monkeypatch):
    tok, probs = problems()
    # problem i: samples 0 and 1 right, 2 and 3 wrong -> c = 2 of 4 for every problem
    monkeypatch.setattr(evaluation, "sample", fake_sampler(lambda i, j: "\\boxed{%d}" % (i + 1 + (j >= 2))))
    res = evaluate(torch.nn.Linear(1, 1), tok, probs, Sampling(temperature=1.0, max_rows=8), samples=4, progress=False)
    assert res["mean@4"] == pytest.approx(0.5)
    assert pass_at(res["results"], 1) == pytest.approx(0.5)
    assert pass_at(res["results"], 2) == pytest.approx(1 - 1 / 6)     # 1 - C(2,2)/C(4,2)
    assert res["pass@4"] == pytest.approx(1.0)
    assert res["results"][0]["answers"] == ["1", "1", "2", "2"]


def test_completions_stop_at_every_end_token_of_the_model(monkeypatch):
    """A chat model ends its turn with a token other than the tokenizer's EOS (Qwen: <|im_end|>);
    evaluation stops at it too, as training does, instead of reading on past the answer."""
    from transformers import Qwen2ForCausalLM
    from tiny_model import tiny_model_config
    tok, probs = problems()
    model = Qwen2ForCausalLM(tiny_model_config())
    model.generation_config.eos_token_id = [7, tok.eos_token_id]
    seen = []
    fake = fake_sampler(lambda i, j: "\\boxed{1}")
    monkeypatch.setattr(evaluation, "sample", lambda m, p, **kw: seen.append(kw["eos_token_id"]) or fake(m, p, **kw))
    evaluate(model, tok, probs, Sampling(temperature=0.0), progress=False)
    assert seen and all(eos == sorted({tok.eos_token_id, 7}) for eos in seen)


def test_eval_command_line_end_to_end(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "res.jsonl"
    summary = evaluation.main(["--model", tiny_model_dir, "--samples", "2", "--temperature", "1.0", "--limit", "12",
                               "--pass-k", "1", "2", "--out", str(out)])
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 12 and set(rows[0]) == {"problem", "gold", "completions", "answers", "correct"}
    right = sum(sum(r["correct"]) for r in rows)
    assert summary["mean@2"] == pytest.approx(round(right / 24, 4))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["problems"] == 12
    greedy = evaluation.main(["--model", tiny_model_dir, "--limit", "12", "--out", str(out)])
    assert greedy["temperature"] == 0.0 and "mean@1" in greedy


def test_eval_compile_gives_the_same_completions(tiny_model_dir, tmp_path, monkeypatch):
    """--compile samples through rollout.py's compiled path: the same completions and scores (traced by
    torch.compile without code generation here, for speed; tests/test_rollout.py compiles for real)."""
    import compiled
    calls = []
    monkeypatch.setattr(compiled, "compile_options", lambda device: calls.append(device) or {"backend": "eager"})
    argv = ["--model", tiny_model_dir, "--samples", "2", "--temperature", "1.0", "--limit", "12", "--batch-size", "8"]
    plain = evaluation.main(argv + ["--out", str(tmp_path / "plain.jsonl")])
    compiled = evaluation.main(argv + ["--out", str(tmp_path / "compiled.jsonl"), "--compile"])
    assert calls and compiled == plain
    assert open(tmp_path / "plain.jsonl").read() == open(tmp_path / "compiled.jsonl").read()


def test_group_size_diagnostic_by_hand():
    from eval import group_size_diagnostic
    # 4 problems x 4 samples: never right, always right, 2 of 4, 1 of 4
    results = [{"correct": c} for c in ([False] * 4, [True] * 4, [True, True, False, False], [True, False, False, False])]
    diag, lines = group_size_diagnostic(results, group_sizes=(2, 4))
    assert diag["pass_rate_hist"]["0"] == 0.25 and diag["pass_rate_hist"]["1"] == 0.25
    assert diag["pass_rate_hist"]["(0, 1/4]"] == 0.25 and diag["pass_rate_hist"]["(1/4, 1/2]"] == 0.25
    # G = 2: (0 + 0 + 4/6 + 3/6) / 4;  G = 4: (0 + 0 + 1 + 1) / 4
    assert diag["informative_share"][2] == pytest.approx((4 / 6 + 3 / 6) / 4)
    assert diag["informative_share"][4] == pytest.approx(0.5)
    assert diag["problems_with_signal"] == 0.5
    assert "50% of your problems give G = 2 a signal" in lines[-1]


def test_eval_prints_the_group_size_diagnostic(tiny_model_dir, tmp_path, capsys):
    summary = evaluation.main(["--model", tiny_model_dir, "--samples", "4", "--temperature", "1.0", "--limit", "8",
                               "--out", str(tmp_path / "r.jsonl")])
    err = capsys.readouterr().err
    assert "give G = 2 a signal" in err and "G = 16" in err
    assert set(summary["group_size"]["informative_share"]) == {"2", "4", "8", "16"}


def test_new_tokens_are_cut_to_fit_the_models_positions(tmp_path, capsys, monkeypatch):
    """Qwen2.5-Math has 4,096 positions in all: prompt + completion must fit, so new tokens are cut."""
    from data import build_prompts, load_model_and_tokenizer
    model, tok = load_model_and_tokenizer(tiny_chat_model(tmp_path / "m"))
    model.config.max_position_embeddings = 40
    problems = build_prompts([{"problem": "1+1?", "gold": "2"}, {"problem": "12+34?", "gold": "46"}], tok, "raw")
    asked = []
    real = evaluation.sample
    monkeypatch.setattr(evaluation, "sample", lambda *a, **k: asked.append(k["sampling"].max_new_tokens) or real(*a, **k))
    res = evaluation.evaluate(model, tok, problems, Sampling(max_new_tokens=100, temperature=0.0, max_rows=64), progress=False)
    assert asked == [40 - 6] and len(res["results"]) == 2                  # the longest prompt: 6 tokens
    assert "100 new tokens cut to 34" in capsys.readouterr().err
    evaluation.evaluate(model, tok, problems, Sampling(max_new_tokens=30, temperature=0.0, max_rows=64), progress=False)     # fits: not cut
    assert asked[-1] == 30 and "cut" not in capsys.readouterr().err


# --- bad flags: one line naming the flag, exit 1, before anything loads ---------------------------
@pytest.mark.parametrize("argv,says", [
    (["--samples", "0"], "--samples 0 must be >= 1"),
    (["--temperature", "-1"], "--temperature -1.0 must be >= 0 (0: greedy)"),
    (["--max-new-tokens", "-5"], "--max-new-tokens -5 must be >= 0"),
    (["--top-p", "0"], "--top-p 0.0 must be in (0, 1]"),
    (["--top-k", "-1"], "--top-k -1 must be >= 0"),
    (["--batch-size", "0"], "--batch-size 0 must be >= 1"),
    (["--limit", "-2"], "--limit -2 must be >= 0"),
    (["--samples", "4", "--temperature", "0"], "--samples 4 needs --temperature > 0"),
    (["--samples", "4", "--temperature", "1", "--pass-k", "8"], "--pass-k 8 must be in [1, --samples 4]"),
])
def test_a_bad_eval_flag_is_one_line_naming_it(argv, says, monkeypatch):
    monkeypatch.setattr(evaluation, "load_model", lambda args: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as e:
        evaluation.main(["--model", "M"] + argv)
    assert str(e.value).startswith("error: ") and says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("script,argv", [
    ("eval.py", ["--model", "nothere"]), ("eval.py", ["--model", "M", "--samples", "0"]),
    ("suite.py", ["--model", "M", "--batch-size", "0"]), ("suite.py", ["--model", "nothere"]),
    ("suite.py", ["--model", "M", "--top-p", "2"]),
])
def test_eval_and_suite_exit_1_with_one_line_and_no_traceback(script, argv):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, script, *argv], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: --"), proc.stderr
