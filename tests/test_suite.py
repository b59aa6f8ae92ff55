"""eval.py --suite: the paper's five benchmarks end to end on a tiny model, the table's layout,
resuming, and the loader on each benchmark's own field names (and on the real files when present)."""

import json
import os

import pytest
from helpers import benchmark_files, tiny_chat_model, write_jsonl

import eval as evaluation
from data import load_problems

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def test_loader_reads_each_benchmarks_own_fields(tmp_path):
    d = benchmark_files(tmp_path / "data")
    amc = load_problems(str(d / "amc23_test.jsonl"))
    assert [p["gold"] for p in amc] == ["1", "2", "3"] and amc[0]["problem"] == "0+1?" and amc[0]["id"] == "0"
    assert [p["gold"] for p in load_problems(str(d / "minerva_math_test.jsonl"))] == ["0", "2", "4"]
    assert [p["gold"] for p in load_problems(str(d / "olympiadbench_test.jsonl"))] == ["0, 1", "1, 2", "2, 3"]
    assert [p["line"] for p in load_problems(str(d / "math500_test.jsonl"))] == [1, 2, 3]


def test_rows_with_an_empty_gold_answer_are_skipped_with_one_line(tmp_path):
    rows = [json.dumps({"problem": "a", "answer": "1"}), json.dumps({"problem": "b", "answer": ""}),
            json.dumps({"problem": "c", "solution": "no box: \\boxed{}", "answer": ""}), json.dumps({"problem": "d", "answer": "4"})]
    said = []
    probs = load_problems(write_jsonl(tmp_path / "train.jsonl", rows), log=said.append)
    assert [p["gold"] for p in probs] == ["1", "4"]
    assert said == [f"{tmp_path / 'train.jsonl'}: skipped 2 row(s) with an empty gold answer (line 2, 3)"]


def test_paper_suite_end_to_end_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    d = benchmark_files(tmp_path / "data")
    model = tiny_chat_model(tmp_path / "Qwen2.5-Math-1.5B-tiny")      # the name picks the paper's rows
    out = tmp_path / "suite"
    argv = ["--model", model, "--suite", "paper", "--data-dir", str(d), "--samples", "2", "--max-new-tokens", "16",
            "--out", str(out)]
    summaries = evaluation.main(argv)
    table = capsys.readouterr().out
    assert list(summaries) == ["MATH-500", "AMC 2023", "Minerva", "AIME 2025", "OlympiadBench"]
    lines = table.splitlines()
    assert lines[0] == "Mean@2 / Pass@2 (%)"
    assert lines[2] == "| model | MATH-500 | AMC 2023 | Minerva | AIME 2025 | OlympiadBench | average |"
    ours = lines[4].split(" | ")
    assert ours[0] == f"| {model}" and len(ours) == 7
    means = [float(c.split(" / ")[0]) for c in ours[1:6]]
    assert float(ours[6].split(" / ")[0].rstrip(" |")) == pytest.approx(sum(means) / 5, abs=0.01)
    assert any(line.startswith("| paper: 2-GRPO on MATH") and "69.28 / 87.43" in line for line in lines)
    assert "Pass@k is not comparable" in table and "2791 and 2890" in table
    for slug in ("math500", "amc_2023", "minerva", "aime_2025", "olympiadbench"):
        rows = [json.loads(line) for line in open(out / f"{slug}.jsonl")]
        assert len(rows) == 3 and all(len(r["completions"]) == 2 for r in rows)
    assert json.load(open(out / "summary.json"))["benchmarks"]["AIME 2025"]["problems"] == 3
    assert (out / "table.md").read_text().strip() == table.strip()
    # resumable: a second run redoes nothing
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    again = evaluation.main(argv)
    assert again == summaries and capsys.readouterr().err.count("done earlier") == 5


def test_suite_of_files(tmp_path, capsys):
    d = benchmark_files(tmp_path / "data")
    model = tiny_chat_model(tmp_path / "m")
    summaries = evaluation.main(["--model", model, "--suite", str(d / "amc23_test.jsonl"), str(d / "aime25_test.jsonl"),
                                 "--samples", "1", "--temperature", "0", "--max-new-tokens", "4", "--out",
                                 str(tmp_path / "s")])
    assert list(summaries) == ["amc23_test", "aime25_test"]
    assert "| model | amc23_test | aime25_test | average |" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data (the real problem sets) is not here")
def test_the_real_files_load(capsys):
    counts = {"math500_test.jsonl": 500, "amc23_test.jsonl": 40, "minerva_math_test.jsonl": 272,
              "aime25_test.jsonl": 30, "olympiadbench_test.jsonl": 675, "gsm8k_test.jsonl": 1319}
    for name, n in counts.items():
        assert len(load_problems(os.path.join(SHARED, name))) == n, name
    said = []
    train = load_problems(os.path.join(SHARED, "math_train.jsonl"), log=said.append)
    assert len(train) == 7498 and said[0].endswith("skipped 2 row(s) with an empty gold answer (line 5530, 5532)")


@pytest.mark.parametrize("change", ["model", "weights", "template", "seed", "protocol", "compile"])
def test_a_suite_result_is_reused_only_with_every_setting_the_same(tmp_path, capsys, monkeypatch, change):
    """Re-running into the same --out with another model (path or weights), template, seed, protocol or
    decode path evaluates again, naming what differs; nothing else does."""
    import shutil
    import torch
    d = benchmark_files(tmp_path / "data")
    model = tiny_chat_model(tmp_path / "m")
    out = str(tmp_path / "s")
    argv = ["--model", model, "--suite", str(d / "aime25_test.jsonl"), "--samples", "1", "--temperature", "0",
            "--max-new-tokens", "4", "--out", out]
    evaluation.main(argv)
    calls = []
    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    evaluation.main(argv)
    assert calls == [] and "done earlier" in capsys.readouterr().err          # the same settings: reused
    if change == "model":
        argv[1] = str(shutil.copytree(model, tmp_path / "m2"))
    elif change == "weights":                                                # same path, other weights
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained(model)
        with torch.no_grad():
            m.lm_head.weight.mul_(1.5)
        m.save_pretrained(model)
    else:
        argv += {"template": ["--template", "plain"], "seed": ["--seed", "1"], "protocol": ["--top-p", "0.9"],
                 "compile": ["--compile"]}[change]
        if change == "compile":
            monkeypatch.setattr("rollout.compile_options", lambda device: {"backend": "eager"})
    evaluation.main(argv)
    err = capsys.readouterr().err
    assert calls == [1] and "done earlier" not in err
    named = {"model": "model", "weights": "fingerprint", "template": "template", "seed": "seed",
             "protocol": "protocol", "compile": "compile"}[change]
    assert f"were made with another {named}" in err


def test_new_tokens_are_cut_to_fit_the_models_positions(tmp_path, capsys, monkeypatch):
    """Qwen2.5-Math has 4,096 positions in all: prompt + completion must fit, so new tokens are cut."""
    from data import build_prompts, load_model_and_tokenizer
    model, tok = load_model_and_tokenizer(tiny_chat_model(tmp_path / "m"))
    model.config.max_position_embeddings = 40
    problems = build_prompts([{"problem": "1+1?", "gold": "2"}, {"problem": "12+34?", "gold": "46"}], tok, "raw")
    asked = []
    real = evaluation.sample
    monkeypatch.setattr(evaluation, "sample", lambda *a, **k: asked.append(k["max_new_tokens"]) or real(*a, **k))
    res = evaluation.evaluate(model, tok, problems, max_new_tokens=100, progress=False)
    assert asked == [40 - 6] and len(res["results"]) == 2                  # the longest prompt: 6 tokens
    assert "100 new tokens cut to 34" in capsys.readouterr().err
    evaluation.evaluate(model, tok, problems, max_new_tokens=30, progress=False)     # fits: not cut
    assert asked[-1] == 30 and "cut" not in capsys.readouterr().err
