"""tiny_model.py: the built-in tokenizer survives save / load, and the warm start reaches its target."""

from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from data import build_prompts, tiny_task_problems
from eval import evaluate
from rollout import Sampling
from tiny_model import build_tiny_tokenizer, tiny_model_config


def test_tiny_tokenizer_survives_save_and_load(tmp_path):
    tok = build_tiny_tokenizer()
    Qwen2ForCausalLM(tiny_model_config()).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["12+34=", "12+34=\\boxed{46}", "99+99=\\boxed{198}}}"]:
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
        assert loaded.decode(loaded(text)["input_ids"]) == text
    assert (loaded.eos_token_id, loaded.pad_token_id) == (1, 0)


def test_warm_start_passes_its_validation_target(tiny_model_dir):
    """The test session's warm start (target 2%) ends above its target on the validation split."""
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    val = build_prompts(tiny_task_problems()["val"], tok, "raw", builtin=True)
    assert evaluate(model, tok, val, Sampling(max_new_tokens=8, temperature=0.0, max_rows=64), progress=False)["mean@1"] > 0.02
