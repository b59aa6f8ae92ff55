"""data.py: problem files and their bad rows, prompt templates, the built-in task, data order, model loading."""

import json
import os

import pytest
from helpers import benchmark_files, small_run_args, write_jsonl

import train
from data import (DATA_DIR, DataError, build_prompts, load_model_and_tokenizer, load_model_config, load_problems,
                  prompts_for_step, tiny_task_problems)
from tiny_model import build_tiny_tokenizer



def test_load_math_and_gsm8k_rows(tmp_path):
    math = write_jsonl(tmp_path / "math.jsonl", [json.dumps({"problem": "1+1?", "answer": "\\frac{1}{2}"}), "",
                                                 json.dumps({"problem": "2+2?", "answer": 4})])
    assert [(p["problem"], p["gold"], p["line"]) for p in load_problems(math)] == [("1+1?", "\\frac{1}{2}", 1),
                                                                                 ("2+2?", "4", 3)]
    gsm = write_jsonl(tmp_path / "gsm.jsonl", [json.dumps({"question": "How many?", "answer": "so 1,080\n#### 1,080"})])
    assert [(p["problem"], p["gold"]) for p in load_problems(gsm)] == [("How many?", "1080")]
    custom = write_jsonl(tmp_path / "c.jsonl", [json.dumps({"q": "x?", "a": "3"})])
    assert [(p["problem"], p["gold"]) for p in load_problems(custom, "q", "a")] == [("x?", "3")]


@pytest.mark.parametrize("lines,message", [
    (['{"problem": "a", "answer": "1"}', '{"problem": "b", "answer": '], r"bad\.jsonl:2: malformed JSON"),
    (['{"problem": "a", "answer": "1"}', '{"problem": "b"}'], r"bad\.jsonl:2: missing field 'answer'"),
    (['{"text": "a", "answer": "1"}'], r"bad\.jsonl:1: missing field 'question'"),
    (['["a", "b"]'], r"bad\.jsonl:1: expected a JSON object"),
    (['{"problem": "", "answer": "1"}'], r"bad\.jsonl:1: field 'problem' is empty"),
    (['{"problem": "a", "answer": ["1"]}'], r"bad\.jsonl:1: field 'answer' is not text"),
    (['{"problem": "a", "answer": ""}'], r"bad\.jsonl: no problems"),              # skipped, then none left
    ([""], r"bad\.jsonl: no problems"),
])
def test_bad_data_names_file_and_line(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=message):
        load_problems(path)


def test_bad_data_fails_before_any_training(tmp_path, tiny_model_dir):
    with pytest.raises(DataError, match="no such file"):
        load_problems(str(tmp_path / "missing.jsonl"))
    path = write_jsonl(tmp_path / "bad.jsonl", ['{"problem": "a", "answer": "1"}', "{oops"])
    with pytest.raises(SystemExit) as e:
        train.main(small_run_args(tmp_path, tiny_model_dir, data=path))
    assert "bad.jsonl:2: malformed JSON" in str(e.value.code)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_prompt_templates():
    tok = build_tiny_tokenizer()
    probs = [{"problem": "1+2=", "gold": "3"}]
    assert build_prompts(probs, tok, "auto", builtin=True)[0]["prompt_ids"] == tok("1+2=")["input_ids"]
    plain = build_prompts(probs, tok, "plain")[0]["prompt_ids"]
    assert len(plain) > len(tok("1+2=")["input_ids"])
    tok.chat_template = "{% for m in messages %}<bos>{{ m['content'] }}<eos>{% endfor %}{% if add_generation_prompt %}={% endif %}"
    chat = build_prompts(probs, tok, "auto")[0]["prompt_ids"]
    assert chat[0] == tok.bos_token_id and chat[-1] == tok("=")["input_ids"][0]
    assert build_prompts(probs, tok, "raw", max_tokens=2) == []          # too long: left out


def test_builtin_task_split_is_fixed_and_disjoint():
    a, b = tiny_task_problems(), tiny_task_problems()
    assert a == b
    assert (len(a["test"]), len(a["val"]), len(a["train"])) == (500, 200, 9300)
    seen = [p["problem"] for split in a.values() for p in split]
    assert len(set(seen)) == 10_000
    assert a["test"][0]["gold"] == str(sum(map(int, a["test"][0]["problem"][:-1].split("+"))))


def test_data_order_is_one_permutation_per_epoch_and_ranks_take_disjoint_slices():
    # 10 problems, 4 prompts per step: steps 0, 1 and half of step 2 are epoch 0, a permutation of 0..9
    first = [i for s in range(3) for i in prompts_for_step(s, 10, 4, seed=0)]
    assert sorted(first[:10]) == list(range(10))
    assert prompts_for_step(1, 10, 4, seed=0) == prompts_for_step(1, 10, 4, seed=0)   # no state: resumable
    # two ranks of the same step take the two halves of what one process would take
    both = prompts_for_step(3, 10, 4, seed=0, rank=0, world=2) + prompts_for_step(3, 10, 4, seed=0, rank=1, world=2)
    assert both == prompts_for_step(3, 10, 4, seed=0)


# --- bad input to the command line, answered with one line --------------------------------------
def test_data_without_a_model_stops_before_training(tmp_path):
    data = write_jsonl(tmp_path / "gsm8k.jsonl", [json.dumps({"question": "How many?", "answer": "#### 3"})])
    with pytest.raises(SystemExit) as e:
        train.main(["--data", data, "--out-dir", str(tmp_path / "run")])
    message = str(e.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert "--model" in message and "built-in" in message
    assert not (tmp_path / "run").exists()


def test_a_missing_model_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        load_model_config("some_missing_dir")
    message = str(e.value)
    assert "\n" not in message and "some_missing_dir" in message
    assert "neither a local model directory nor in the local Hugging Face cache" in message
    assert "nothing can be downloaded" in message
    with pytest.raises(SystemExit) as e:                       # through the command line: one line, exit
        train.main(["--model", "some_missing_dir", "--out-dir", str(tmp_path / "run"), "--no-progress"])
    assert str(e.value.code).startswith("error: --model some_missing_dir: neither")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="without config.json"):
        load_model_and_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(DataError, match="unknown architecture"):
        load_model_config(str(tmp_path / "odd"))


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


def test_a_gold_the_checker_cannot_read_is_said_at_load_time(tmp_path):
    """2|x| does not parse (our parser has no implicit product with |x|): nothing but the text "2|x|" can be
    paid for it, which one line says when the file is loaded, naming its line; readable golds say nothing."""
    rows = [json.dumps({"problem": "a", "answer": "x^2 + 1"}), json.dumps({"problem": "b", "answer": "2|x|"}),
            json.dumps({"problem": "c", "answer": "\\text{Evelyn}"}), json.dumps({"problem": "d", "answer": "(1, 2)"})]
    said = []
    load_problems(write_jsonl(tmp_path / "test.jsonl", rows), log=said.append)
    assert said == [f"{tmp_path / 'test.jsonl'}: 1 gold answer(s) the checker cannot read as math, for which only "
                    f"the same text is paid (e.g. line 2: '2|x|', unexpected '|')"]


def test_the_shipped_data_files_are_the_ones_data_readme_names():
    """data/README.md's table lists every file with its sha256: the files on disk are those, byte for byte."""
    import hashlib
    import re
    table = re.findall(r"^\| `([\w.]+\.jsonl)` \| [\d,]+ \| .* \| `([0-9a-f]{64})` \|$",
                       open(os.path.join(DATA_DIR, "README.md")).read(), re.M)
    on_disk = sorted(f for f in os.listdir(DATA_DIR) if f.endswith(".jsonl"))
    assert sorted(name for name, _ in table) == on_disk and len(on_disk) == 9
    for name, digest in table:
        assert hashlib.sha256(open(os.path.join(DATA_DIR, name), "rb").read()).hexdigest() == digest, name


def test_the_real_files_load(capsys):
    counts = {"math500_test.jsonl": 500, "amc23_test.jsonl": 40, "minerva_math_test.jsonl": 272,
              "aime25_test.jsonl": 30, "olympiadbench_test.jsonl": 675, "gsm8k_test.jsonl": 1319,
              "aime24_test.jsonl": 30, "gsm8k_train.jsonl": 7473}
    for name, n in counts.items():
        assert len(load_problems(os.path.join(DATA_DIR, name))) == n, name
    said = []
    train = load_problems(os.path.join(DATA_DIR, "math_train.jsonl"), log=said.append)
    assert len(train) == 7498 and said[0].endswith("skipped 2 row(s) with an empty gold answer (line 5530, 5532)")
