"""train.py: the default run end to end, resume, gradient accumulation, real-model loading, the README recipe."""

import json
import os

import pytest
import torch
from helpers import benchmark_files, small_run_args, tiny_chat_model, write_jsonl
from transformers import AutoModelForCausalLM

import train
from config import Config, parse_args
from rollout import Sampling


def test_cli_defaults_are_the_config_defaults():
    assert parse_args([]) == Config()
    assert parse_args(["--group-size", "4", "--no-skip-ties", "--lr", "3e-5"]) == Config(group_size=4, skip_ties=False, lr=3e-5)
    with pytest.raises(SystemExit):
        parse_args(["--loss", "dpo", "--group-size", "4"])


def test_smoke_few_steps_write_metrics_checkpoint_and_model(tmp_path, tiny_model_dir):
    summary = train.main(small_run_args(tmp_path, tiny_model_dir))
    run = tmp_path / "run"
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for key in ("reward_mean", "accuracy", "adv_mean", "adv_std", "tie_frac", "response_len", "sampling_s",
                "update_s", "tokens_per_s", "lr", "rollouts"):
        assert key in rows[0]
    for key in ("loss", "clip_frac", "ratio_mean", "kl", "grad_norm"):            # rows with an update
        assert all(key in r for r in rows if "grad_norm" in r)
    assert rows[-1]["rollouts"] == 4 * 8 * 2 == summary["rollouts"]
    assert json.load(open(run / "config.json"))["group_size"] == 2
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 4
    assert not os.path.exists(run / "checkpoint.pt.tmp")
    final = AutoModelForCausalLM.from_pretrained(run / "model")    # the final model loads like any other
    # the accuracies reported are those of the models: the start model's and the saved final model's
    assert summary["held_out_before"] == greedy_accuracy(tiny_model_dir, 16, 12)
    assert summary["held_out_after"] == greedy_accuracy(final, 16, 12, tok=tiny_model_dir)


def greedy_accuracy(model, problems, max_new_tokens, tok=None):
    """Greedy held-out accuracy of a model (a directory or a loaded model) on the first built-in
    held-out problems, as eval.evaluate gives it."""
    from transformers import AutoTokenizer

    from data import build_prompts, tiny_task_problems
    from eval import evaluate
    tok = AutoTokenizer.from_pretrained(tok or model)
    model = AutoModelForCausalLM.from_pretrained(model) if isinstance(model, str) else model
    held_out = build_prompts(tiny_task_problems()["test"][:problems], tok, "auto", builtin=True)
    return evaluate(model, tok, held_out, Sampling(max_new_tokens=max_new_tokens, temperature=0.0, max_rows=64), progress=False)["mean@1"]


def test_dpo_loss_and_kl_paths_run(tmp_path, tiny_model_dir):
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=3, loss="dpo", prompts_per_step=16,
                              out_dir=str(tmp_path / "dpo")))
    rows = [json.loads(line) for line in open(tmp_path / "dpo" / "metrics.jsonl")]
    updated = [r for r in rows if "loss" in r]
    assert updated and all("pair_accuracy" in r and r["loss"] > 0 for r in updated)   # -log sigmoid > 0
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=3, beta=0.05, num_iterations=2, lr=1e-3,
                              prompts_per_step=16, out_dir=str(tmp_path / "kl")))
    rows = [json.loads(line) for line in open(tmp_path / "kl" / "metrics.jsonl")]
    updated = [r for r in rows if "loss" in r]
    assert updated and all(r["kl"] >= 0 for r in updated)
    # the stats are the second update's: after one step the policy moved, so ratio != 1 and KL > 0
    assert any(r["ratio_mean"] != 1.0 and r["kl"] > 0 for r in updated)


@pytest.mark.parametrize("aggregation", ["seq_mean", "token_mean"])
def test_runs_with_and_without_skipping_ties_log_the_same_first_step(tmp_path, tiny_model_dir, aggregation):
    rows = []
    for skip in (True, False):
        out = tmp_path / f"skip-{skip}"
        train.main(small_run_args(tmp_path, tiny_model_dir, steps=1, prompts_per_step=16, group_size=8,
                                  aggregation=aggregation,
                                  skip_ties=skip, micro_batch_size=16, out_dir=str(out)))
        rows.append(json.loads(open(out / "metrics.jsonl").readline()))
    skip, full = rows
    assert 0 < skip["tie_frac"] < 1                        # some pairs tie, some do not
    assert skip["grad_norm"] == pytest.approx(full["grad_norm"], rel=1e-4)
    # on-policy, sequence-mean GRPO's loss is -mean(A) = 0 up to rounding; token-mean's is not
    assert skip["loss"] == pytest.approx(full["loss"], rel=1e-4, abs=1e-7)
    assert aggregation == "seq_mean" or abs(full["loss"]) > 1e-4


def test_compiled_sampling_trains_exactly_like_the_eager_loop(tmp_path, tiny_model_dir, monkeypatch):
    """--compile samples the same tokens, so two steps log the same rewards, lengths and losses.
    (torch.compile's tracer without code generation here, for speed; tests/test_rollout.py runs the
    real compiler.)"""
    import compiled
    calls = []
    monkeypatch.setattr(compiled, "compile_options", lambda device: calls.append(device) or {"backend": "eager"})
    rows, summaries = [], []
    for compile in (False, True):
        out = tmp_path / f"compile-{compile}"
        train.main(small_run_args(tmp_path, tiny_model_dir, steps=2, prompts_per_step=16, group_size=8,
                                  micro_batch_size=16, compile=compile, out_dir=str(out)))
        rows.append([json.loads(line) for line in open(out / "metrics.jsonl")])
        summaries.append(json.load(open(out / "summary.json")))
    assert len(calls) == 1                                        # one compiled decoder, made for the run
    # the held-out evaluation decodes with it too, to the same accuracies
    assert [s["held_out_before"] for s in summaries] == [summaries[0]["held_out_before"]] * 2
    assert summaries[1]["held_out_after"] == summaries[0]["held_out_after"]
    assert len(rows[0]) == len(rows[1]) == 2 and "grad_norm" in rows[0][0]
    assert all("logprobs_s" in r for r in rows[1])                   # every phase timed
    for eager, with_compile in zip(*rows):
        for key in ("reward_mean", "response_len", "tie_frac", "informative_pairs", "loss", "grad_norm"):
            assert with_compile.get(key) == pytest.approx(eager.get(key), rel=1e-4, abs=1e-7), key


def test_compile_with_fsdp_is_refused():
    with pytest.raises(SystemExit, match="--compile does not go with --fsdp"):
        parse_args(["--compile", "--fsdp"])


def test_real_model_directory_and_jsonl_data(tmp_path, tiny_model_dir):
    """--model DIR --data FILE: the path a Hugging Face model and MATH/GSM8K files take."""
    rows = [json.dumps({"question": f"{a}+{b}=", "answer": f"work\n#### {a + b}"}) for a in range(5) for b in range(4)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    held = write_jsonl(tmp_path / "test.jsonl", rows[:6])
    summary = train.main(small_run_args(tmp_path, tiny_model_dir, data=data, eval_data=held, template="raw",
                                        steps=2, out_dir=str(tmp_path / "real")))
    assert summary["rollouts"] == 2 * 8 * 2 and summary["held_out_after"] is not None


def test_a_run_without_held_out_set_says_so(tmp_path, tiny_model_dir, capsys):
    rows = [json.dumps({"question": f"{a}+{a}=", "answer": f"#### {2 * a}"}) for a in range(8)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    summary = train.main(small_run_args(tmp_path, tiny_model_dir, data=data, template="raw", steps=1))
    assert summary["held_out_before"] is None and summary["held_out_after"] is None
    out = capsys.readouterr().out
    assert "no held-out set" in out and "--eval-data" in out and "n/a" not in out
    last = [line for line in out.splitlines() if line.startswith("held-out accuracy:")]
    assert last == [last[0]] and "not measured (no held-out set: pass one with --eval-data FILE.jsonl)" in last[0]


# --- the one-GPU recipe of the README, on a tiny model of the same architecture -------------------
def readme_command(script):
    """The README's `python <script> ...` command of the one-GPU recipe, as an argument list."""
    import shlex
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "README.md")).read()
    section = text.split("## A real model, and the paper's table", 1)[1].split("\n## ", 1)[0]
    joined = section.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if ln.strip().startswith(f"python {script}"))
    return shlex.split(line)[2:]


def override(argv, **new):
    """Replace the values of some flags (paths, sizes) and keep every other flag as written."""
    out, i = [], 0
    flags = {"--" + k.replace("_", "-"): str(v) for k, v in new.items()}
    while i < len(argv):
        a = argv[i]
        if a in flags:
            out += [a, flags.pop(a)]
            i += 2
            continue
        out.append(a)
        i += 1
    assert not flags, f"the README recipe has no {list(flags)}"
    return out


def test_one_gpu_recipe_from_the_readme_runs_on_a_tiny_qwen2(tmp_path):
    import suite
    model_dir = tiny_chat_model(tmp_path / "tiny-qwen2")
    rows = [json.dumps({"problem": f"What is {a} + {a}?", "answer": str(2 * a), "level": "Level 1"})
            for a in range(6)]
    data = write_jsonl(tmp_path / "math_train.jsonl", rows)
    held = write_jsonl(tmp_path / "math500_test.jsonl", rows[:3])
    argv = override(readme_command("train.py"), model=model_dir, data=data, eval_data=held, out_dir=tmp_path / "run",
                    prompts_per_step=4, steps=3, max_new_tokens=6, micro_batch_size=3, rollout_batch_size=4,
                    logprob_chunk=4, eval_every=2, eval_problems=3, eval_samples=2, save_every=2)
    summary = train.main(argv + ["--no-progress"])
    assert summary["rollouts"] == 3 * 4 * 2
    cfg = json.load(open(tmp_path / "run" / "config.json"))
    assert cfg["gradient_checkpointing"] and cfg["eps_high"] == 0.28 and cfg["template"] == "auto"
    ev = override(readme_command("suite.py"), model=tmp_path / "run" / "model", batch_size=8)
    res = suite.main(ev + ["--data-dir", str(benchmark_files(tmp_path / "benchmarks")), "--samples", "2",
                               "--max-new-tokens", "6", "--out", str(tmp_path / "suite")])
    assert list(res) == ["MATH-500", "AMC 2023", "Minerva", "AIME 2025", "OlympiadBench"]
    assert all(s["problems"] == 3 and "mean@2" in s for s in res.values())


def flags_table():
    """The flag table of docs/training.md, as config.Config defines it."""
    import dataclasses
    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Config):
        default = "(empty)" if f.default == "" else f.default
        helptext = f.metadata.get("help", "").replace("|", "\\|")
        rows.append(f"| `--{f.name.replace('_', '-')}` | `{default}` | {helptext} |")
    return "\n".join(rows)


def test_the_training_page_documents_every_flag_and_its_default():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    page = open(os.path.join(root, "docs", "training.md")).read()
    assert flags_table() in page, "docs/training.md flag table is out of date: paste tests/test_train.py::flags_table()"


def test_the_learning_rate_follows_the_step_also_when_a_step_makes_no_update():
    cfg = Config(lr=1.0, warmup_steps=2, schedule="linear", steps=6)
    assert [train.learning_rate(s, cfg) for s in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]


def test_the_held_out_evaluation_decodes_a_rollout_micro_batch_of_rows(tmp_path, tiny_model_dir, monkeypatch):
    """plan.py prices the in-run evaluation as one rollout micro-batch (--rollout-batch-size, else the
    step's P x G rows): the evaluation decodes that many rows at a time, with the run's decoder."""
    seen = []
    real = train.shared_accuracy

    def spy(model, tok, problems, sampling, **kw):
        seen.append((sampling.max_rows, kw["decoder"]))
        return real(model, tok, problems, sampling, **kw)
    monkeypatch.setattr(train, "shared_accuracy", spy)
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=1, prompts_per_step=8, out_dir=str(tmp_path / "a")))
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=1, rollout_batch_size=6, out_dir=str(tmp_path / "b")))
    assert seen == [(16, None), (16, None), (6, None), (6, None)]          # before and after each run


def test_train_sets_expandable_segments_unless_the_user_chose(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=1, out_dir=str(tmp_path / "a")))
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:64")
    train.main(small_run_args(tmp_path, tiny_model_dir, steps=1, out_dir=str(tmp_path / "b")))
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:64"
