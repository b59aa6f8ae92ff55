"""suite.py: the paper's five benchmarks end to end on a tiny model, the table's layout, and resuming only
with the same settings."""

import json

import pytest
from helpers import benchmark_files, tiny_chat_model

import suite


def test_paper_suite_end_to_end_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    d = benchmark_files(tmp_path / "data")
    model = tiny_chat_model(tmp_path / "Qwen2.5-Math-1.5B-tiny")      # the name picks the paper's rows
    out = tmp_path / "suite"
    argv = ["--model", model, "--data-dir", str(d), "--samples", "2", "--max-new-tokens", "16",
            "--out", str(out)]
    summaries = suite.main(argv)
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
    monkeypatch.setattr(suite, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    again = suite.main(argv)
    assert again == summaries and capsys.readouterr().err.count("done earlier") == 5


def test_suite_of_files(tmp_path, capsys):
    d = benchmark_files(tmp_path / "data")
    model = tiny_chat_model(tmp_path / "m")
    summaries = suite.main(["--model", model, "--benchmarks", str(d / "amc23_test.jsonl"), str(d / "aime25_test.jsonl"),
                            "--samples", "1", "--temperature", "0", "--max-new-tokens", "4", "--out",
                            str(tmp_path / "s")])
    assert list(summaries) == ["amc23_test", "aime25_test"]
    assert "| model | amc23_test | aime25_test | average |" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["model", "weights", "template", "seed", "protocol", "compile"])
def test_a_suite_result_is_reused_only_with_every_setting_the_same(tmp_path, capsys, monkeypatch, change):
    """Re-running into the same --out with another model (path or weights), template, seed, protocol or
    decode path evaluates again, naming what differs; nothing else does."""
    import shutil
    import torch
    d = benchmark_files(tmp_path / "data")
    model = tiny_chat_model(tmp_path / "m")
    out = str(tmp_path / "s")
    argv = ["--model", model, "--benchmarks", str(d / "aime25_test.jsonl"), "--samples", "1", "--temperature", "0",
            "--max-new-tokens", "4", "--out", out]
    suite.main(argv)
    calls = []
    real = suite.evaluate
    monkeypatch.setattr(suite, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    suite.main(argv)
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
            monkeypatch.setattr("compiled.compile_options", lambda device: {"backend": "eager"})
    suite.main(argv)
    err = capsys.readouterr().err
    assert calls == [1] and "done earlier" not in err
    named = {"model": "model", "weights": "fingerprint", "template": "template", "seed": "seed",
             "protocol": "protocol", "compile": "compile"}[change]
    assert f"were made with another {named}" in err
