"""data.py: problems, prompts, the order they are trained in, and the model that reads them.

Chapter 4 of the tutorial.

  * load_problems: a JSONL problem set -> [{"problem", "gold"}], failing on a bad row with its file
    and line (MATH / MATH-500, GSM8K's "#### N", or any field names);
  * build_prompts: problems -> token ids, through the chat template, a plain template or as they are;
  * problem_sets, DATA_DIR: a run's training and held-out problems; the shipped files (data/README.md);
  * prompt_sets: both sets as prompts, the over-long ones left out with a count;
  * tiny_task_problems: the built-in task, 2-digit addition (its model is in tiny_model.py);
  * completion_tokens: new tokens per completion when --max-new-tokens is 0 (8 built-in, 1024 files);
  * prompts_for_step, stream_prompts, upcoming_prompts: which prompts a step trains on (a seeded
    stream, epoch by epoch) and which ones --resample takes next;
  * load_model_config: a model's config.json alone (for --plan), from a directory or the local cache;
  * load_model_and_tokenizer: a Hugging Face model directory or hub id, with one clear line when it
    is neither on disk nor in the local cache.
"""

import json
import logging
import os
import random
import sys

from precision import DTYPES, precision
from reward import gold_answer, last_boxed, unreadable_gold


# The paper's training set and benchmarks, shipped with the repository (data/README.md: sources, licenses)
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


class DataError(ValueError):
    """A problem file (or model) that cannot be used; the message names the file and line."""


# ---------------------------------------------------------------------------------------------------
# Problem files
# ---------------------------------------------------------------------------------------------------
def load_problems(path, problem_field="", answer_field="answer", log=None):
    """JSONL rows -> [{"problem": str, "gold": str, "line": int}] (and the row's "id" if it has one).

    The problem is `problem_field`, else "problem", else "question". The gold answer is
    `answer_field` ("answer": MATH, MATH-500, AMC, AIME; GSM8K's "... #### N" keeps N), else, in the
    benchmarks' original files, OlympiadBench's "final_answer" list (its items joined by ", ", "$"
    removed) or the last \\boxed{} of the reference "solution" (Minerva). A number written as a float
    with nothing after the point (AMC's 27.0) is the integer. A malformed row stops with its file and
    line; rows whose gold answer is empty (two MATH training rows with an empty \\boxed{}) are skipped,
    with one line (to `log`, default stderr) that counts them and names their lines; gold answers the
    checker cannot read as math (reward.unreadable_gold: only the same text can match them) get one
    line too.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    say = log or (lambda m: print(m, file=sys.stderr))
    out, empty = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            pf = problem_field or ("problem" if "problem" in row else "question")
            if pf not in row:
                raise DataError(f"{path}:{lineno}: missing field {pf!r} (fields: {', '.join(row)})")
            if not isinstance(row[pf], str) or not row[pf].strip():
                raise DataError(f"{path}:{lineno}: field {pf!r} is empty or not text")
            gold = _gold_of_row(row, answer_field)
            if gold is None:
                raise DataError(f"{path}:{lineno}: missing field {answer_field!r} (fields: {', '.join(row)})")
            if gold is False:
                raise DataError(f"{path}:{lineno}: field {answer_field!r} is not text or a number")
            if not gold.strip():
                empty.append(lineno)
                continue
            out.append({"problem": row[pf], "gold": gold, "line": lineno,
                        **({"id": str(row["id"])} if "id" in row else {})})
    if empty:
        say(f"{path}: skipped {len(empty)} row(s) with an empty gold answer "
            f"(line {', '.join(map(str, empty))})")
    if not out:
        raise DataError(f"{path}: no problems in file")
    unreadable = [(p["line"], p["gold"], why) for p in out for why in [unreadable_gold(p["gold"])] if why]
    if unreadable:                      # nothing but the same text can match these: say so, once
        say(f"{path}: {len(unreadable)} gold answer(s) the checker cannot read as math, for which only the "
            f"same text is paid (e.g. "
            + "; ".join(f"line {n}: {g[:40]!r}, {why}" for n, g, why in unreadable[:3]) + ")")
    return out


def _gold_of_row(row, answer_field):
    """The gold answer of one row as text ("" when empty); None when the row has none, False when it is
    neither text nor a number."""
    value = row.get(answer_field)
    if value is None and answer_field == "answer":      # the benchmarks' original field names
        if isinstance(row.get("final_answer"), list):      # OlympiadBench: ["$69$", "$84$"]
            value = ", ".join(str(a).replace("$", "").strip() for a in row["final_answer"])
        elif isinstance(row.get("solution"), str):         # Minerva: the reference solution's last box
            value = last_boxed(row["solution"]) or ""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False
    if isinstance(value, float) and value.is_integer():
        value = int(value)                                  # AMC's 27.0
    return gold_answer(str(value))


def tiny_task_problems(seed=1234):
    """The built-in task. 2-digit addition "a+b=" -> gold "a+b", all 10,000 pairs a, b in 0..99, in a
    fixed split: 500 held-out test problems, 200 validation problems (for the warm start), 9,300 for
    training."""
    pairs = [(a, b) for a in range(100) for b in range(100)]
    random.Random(seed).shuffle(pairs)
    probs = [{"problem": f"{a}+{b}=", "gold": str(a + b)} for a, b in pairs]
    return {"test": probs[:500], "val": probs[500:700], "train": probs[700:]}


def completion_tokens(max_new_tokens, data=""):
    """New tokens per completion: max_new_tokens, or when it is 0 the default of the task: 1024 for a
    problem file, 8 for the built-in task ("\\boxed{" 3 digits "}" EOS)."""
    return max_new_tokens or (1024 if data else 8)


def problem_sets(data="", eval_data="", problem_field="", answer_field="answer"):
    """(training problems, held-out problems): from JSONL files (no eval_data: no held-out problems),
    or with no data the built-in task's train and test splits."""
    if not data:
        split = tiny_task_problems()
        return split["train"], split["test"]
    held_out = load_problems(eval_data, problem_field, answer_field) if eval_data else []
    return load_problems(data, problem_field, answer_field), held_out


# ---------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PLAIN_TEMPLATE = "Problem: {problem}\n" + INSTRUCTION + "\n\nSolution:"


def build_prompts(problems, tok, template="auto", builtin=False, max_tokens=None):
    """Add "prompt_ids" to each problem.

    raw:   the problem text as it is (the built-in task: "12+34=")
    plain: PLAIN_TEMPLATE, "Problem: ...\\nPlease reason step by step, and put your final answer
           within \\boxed{}.\\n\\nSolution:"
    chat:  the tokenizer's chat template, one user turn: problem + " " + INSTRUCTION
    auto:  raw for the built-in task, chat where the tokenizer has a chat template, else plain
    Problems whose prompt is longer than max_tokens are left out.
    """
    if template == "auto":
        template = "raw" if builtin else ("chat" if getattr(tok, "chat_template", None) else "plain")
    out = []
    for p in problems:
        if template == "raw":
            ids = tok(p["problem"])["input_ids"]
        elif template == "plain":
            ids = tok(PLAIN_TEMPLATE.replace("{problem}", p["problem"]))["input_ids"]
        elif template == "chat":
            text = tok.apply_chat_template([{"role": "user", "content": p["problem"] + " " + INSTRUCTION}],
                                           add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            raise ValueError(f"unknown template {template!r}")
        if max_tokens and len(ids) > max_tokens:
            continue
        out.append({**p, "prompt_ids": ids})
    return out


def prompt_sets(train_set, held_out, tok, template, builtin, max_tokens, log=print):
    """build_prompts for the training and held-out problems, saying how many were left out as too long."""
    train_p = build_prompts(train_set, tok, template, builtin, max_tokens)
    held_p = build_prompts(held_out, tok, template, builtin, max_tokens)
    if len(train_p) < len(train_set) or len(held_p) < len(held_out):
        log(f"left out {len(train_set) - len(train_p)} training and {len(held_out) - len(held_p)} held-out "
            f"problems whose prompts are longer than --max-prompt-tokens {max_tokens}")
    if not train_p:
        raise DataError(f"no training prompt fits in --max-prompt-tokens {max_tokens}")
    return train_p, held_p


# ---------------------------------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------------------------------
def prompts_for_step(step, n_train, prompts_per_step, seed, rank=0, world=1, start=None):
    """Indices of this rank's prompts at `step`: its slice of the P prompts at positions start ..
    start + P - 1 of the data stream (stream_prompts). start defaults to step * P, every step taking
    P prompts; --resample fresh also takes the stream's next prompts for its refills, so train.py keeps
    the position (in the checkpoint). A function of (seed, start, rank)."""
    per_rank = prompts_per_step // world
    first = (step * per_rank * world if start is None else start) + rank * per_rank
    return stream_prompts(range(first, first + per_rank), n_train, seed)


def stream_prompts(positions, n_train, seed):
    """The training problems at these positions of the data stream: position g is problem
    permutation_e[g mod n_train] of epoch e = g // n_train, a fresh seeded permutation per epoch."""
    return [_permutation(seed, g // n_train, n_train)[g % n_train] for g in positions]


def upcoming_prompts(after, n_train, seed, rank=0, world=1):
    """--resample fresh's refills for this rank: take(n) -> the indices of the data stream's next n
    prompts after position `after` (the end of the step's own), the ranks taking turns (rank r reads
    after + r, after + r + world, ...), and the list of those taken so far."""
    taken = []

    def take(n):
        first = after + len(taken) * world + rank
        taken.extend(stream_prompts(range(first, first + n * world, world), n_train, seed))
        return taken[len(taken) - n:]
    return take, taken


_perm_cache = {}


def _permutation(seed, epoch, n):
    key = (seed, epoch, n)
    if key not in _perm_cache:
        order = list(range(n))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        if len(_perm_cache) > 1:                 # keep two epochs: a step may straddle their border
            _perm_cache.pop(next(iter(_perm_cache)))
        _perm_cache[key] = order
    return _perm_cache[key]


# ---------------------------------------------------------------------------------------------------
# The model that reads them
# ---------------------------------------------------------------------------------------------------
def _offline():
    import huggingface_hub.constants
    return huggingface_hub.constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")


def load_model_config(name):
    """The transformers config of a model directory or hub id (config.json only: no weights).
    A name that is neither a model directory nor in the local hub cache, nor downloadable, and a
    config of an unknown architecture, each raise DataError with one line."""
    from transformers import AutoConfig
    if os.path.isdir(name) and not os.path.isfile(os.path.join(name, "config.json")):
        raise DataError(f"--model {name}: a directory without config.json, "
                        f"not a Hugging Face model directory")
    if not os.path.isdir(name):
        from huggingface_hub import try_to_load_from_cache
        try:
            cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
        except ValueError:                                      # not even a valid hub id
            cached = False
        if not cached and _offline():
            raise DataError(f"--model {name}: neither a local model directory nor in the local Hugging Face "
                            f"cache, and the hub is offline (HF_HUB_OFFLINE), so nothing can be downloaded")
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)                             # no retry chatter: one line if it fails
    try:
        return AutoConfig.from_pretrained(name)
    except OSError as e:
        raise DataError(f"--model {name}: neither a local model directory nor in the local Hugging Face "
                        f"cache, and it could not be downloaded ({str(e).splitlines()[0]})") from None
    except (ValueError, KeyError) as e:
        raise DataError(f"--model {name}: unknown architecture ({str(e).splitlines()[0]})") from None
    finally:
        hub_log.setLevel(level)


def load_model_and_tokenizer(name, device="cpu", dtype="auto", gradient_checkpointing=False):
    """(model, tokenizer) from a model directory or hub id; the tokenizer gets a pad token if it has none.
    dtype: --dtype (PRECISIONS), fp32 weights except for "bfloat16". gradient_checkpointing: the decoder
    layers recompute activations in the backward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    load_model_config(name)                                     # a clear error before any weights
    model = AutoModelForCausalLM.from_pretrained(name, dtype=DTYPES[precision(dtype, device)]).to(device)
    if gradient_checkpointing:   # transformers 5 calls it activation_checkpointing_enable; 4.x the old name
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    tok = AutoTokenizer.from_pretrained(name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok

