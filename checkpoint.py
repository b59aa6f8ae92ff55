"""checkpoint.py: nothing is lost. The run directory: atomic checkpoints, resume, Ctrl-C, metrics, the
final model.

Chapter 7 of the tutorial. A checkpoint holds everything a resumed run needs (weights, optimizer,
step, RNG states, the config; the learning rate is a function of the step); it is written to a
temporary file and renamed into place, so an interrupted write leaves the previous checkpoint whole.
A resumed run ends with the same weights as a run never interrupted (tests/test_checkpoint.py checks
it bit for bit).
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time

import torch

from config import names
from lora import adapters_off, has_adapters, merged_state_dict, save_adapter, trainable_state
from parallel import all_reduce, barrier, full_state_dicts, is_main, is_sharded, load_full_state_dicts, unwrap


def save_dir_atomic(path, save):
    """save(tmp_dir) then swap tmp_dir into place, so `path` is always either the old or the new one."""
    tmp, old = path + ".tmp", path + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    if os.path.exists(path):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path):
    """Write to path + ".tmp" inside the block, then rename it into place: `path` is always either the
    old file or the whole new one."""
    tmp = path + ".tmp"
    yield tmp
    os.replace(tmp, path)


def write_text(path, text):
    """Write a text file (results, summaries) atomically: never half a file."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def model_fingerprint(model, skip=None):
    """16 hex digits that change with the model's config or any of its weights: a hash of the config and,
    per tensor, its name, shape, dtype, sum and squared norm (reductions on the device, in float64: no
    copy). skip: leave out the entries whose name contains it (".adapter.": the base model of a LoRA run).
    Under FSDP each rank reduces its shards and the sums are added over ranks (every rank must call)."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    names, sums = [], []
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if skip and skip in name:
                continue
            local = t.to_local() if hasattr(t, "to_local") else t          # a DTensor: this rank's shard
            names.append(f"{name}{tuple(t.shape)}{t.dtype}")
            sums.append(torch.stack([local.sum(dtype=torch.float64),
                                     torch.linalg.vector_norm(local, dtype=torch.float64) ** 2]).cpu())
    sums = torch.stack(sums)                                                # (tensors, 2)
    if is_sharded(model):
        sums = all_reduce(sums)
    h.update(f"{names}{sums.tolist()!r}".encode())
    return h.hexdigest()[:16]


def base_fingerprint(model):
    """A LoRA run's base model's fingerprint: adapters left out, modules trained beside them at their base
    values (lora.adapters_off), so it stays the same as they train."""
    with adapters_off(model):
        return model_fingerprint(model, skip=".adapter.")


def save_checkpoint(path, model, optimizer, step, cfg, progress=None):
    """Everything a resumed run needs, written by rank 0 to a temporary file and renamed into place
    (atomic). Every rank calls it (under FSDP the state is gathered from all of them). progress: the
    loop's counters (rollouts sampled, the data stream's position). A LoRA run (lora.py) keeps only the
    adapters and their optimizer state (MBs, not GBs) and names its base by a fingerprint."""
    model_state, optimizer_state = full_state_dicts(model, optimizer)
    lora = has_adapters(unwrap(model))
    base = {"base_fingerprint": base_fingerprint(unwrap(model))} if lora else {}
    if not is_main():
        return
    if lora:
        model_state = trainable_state(model_state, unwrap(model))
    state = {"model": model_state, "optimizer": optimizer_state, "step": step, "progress": progress or {},
             **base,
             "config": dataclasses.asdict(cfg), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "python_rng": random.getstate()}
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path):
    """The state save_checkpoint wrote (memory-mapped: reading the step and config loads no weights).
    A file that cannot be read (truncated, damaged, not a checkpoint) is one line naming it and what to do."""
    def unreadable(why):
        return SystemExit(f"error: {path} cannot be resumed from ({why}): the file is damaged or not a "
                          f"checkpoint of train.py (saves go to a temporary file and are renamed, so an "
                          f"interrupted save leaves the previous one whole). Start over without --resume, or "
                          f"with another --out-dir")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:     # torch.load raises RuntimeError, EOFError, UnpicklingError, ... by damage
        raise unreadable(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}") from None
    keys = set(state) if isinstance(state, dict) else set()
    missing = {"model", "optimizer", "step", "config", "progress"} - keys
    if missing:
        raise unreadable(f"missing {', '.join(sorted(missing))}")
    return state


def load_checkpoint(path, model, optimizer):
    """Restore a checkpoint of save_checkpoint into the (possibly sharded) model and its optimizer;
    returns (step, the loop's counters (save_checkpoint's progress))."""
    state = read_checkpoint(path)
    sharded = is_sharded(model)
    if (state["config"].get("fsdp", False) or state["config"].get("cpu_offload", False)) != sharded:
        raise SystemExit(f"error: {path} was written {'with' if not sharded else 'without'} --fsdp / "
                         f"--cpu-offload; resume it the same way (the optimizer state is laid out "
                         f"differently)")
    model_state = state["model"]
    if "base_fingerprint" in state:          # LoRA: the adapters, on the base the run started from
        if state["base_fingerprint"] != base_fingerprint(unwrap(model)):
            raise SystemExit(f"error: {path} holds LoRA adapters trained on another base model than "
                             f"{state['config'].get('model') or 'the built-in one'} is now: resume with the "
                             f"same --model, --dtype and --seed")
    # LoRA: the adapters alone are loaded, the base stays as loaded
    load_full_state_dicts(model, optimizer, model_state, state["optimizer"],
                          strict="base_fingerprint" not in state)
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    return state["step"], state["progress"]


# Settings a resumed run keeps: they change the model, the algorithm or which prompts each step trains
# on, so a run resumed with others would be two runs in one log. The rest (steps, evaluation, logging,
# memory and speed flags, the learning rate) may change on resume, and are listed in one line.
KEPT_ON_RESUME = ("model", "data", "train_problems", "problem_field", "answer_field", "template",
                  "max_prompt_tokens", "warm_start_target", "loss", "group_size", "prompts_per_step",
                  "num_iterations", "advantage", "aggregation", "eps_low", "eps_high", "beta", "dpo_beta",
                  "dpo_ref", "filter_ties", "resample", "resample_budget", "seed")
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "summary.json", "config.json", "model")


def prepare_out_dir(cfg, log):
    """Before anything loads, make sure that no run is lost or mixed with another, in one line each:
      - --out-dir naming a file is refused;
      - a folder holding an unfinished run's checkpoint is refused unless told what to do: --resume
        continues it, --overwrite starts over (its checkpoint, metrics and model are deleted);
      - --resume refuses settings that differ from the run's in KEPT_ON_RESUME, and lists the others;
      - a folder holding a finished run (summary.json), run again, is moved aside to <out-dir>.1 (.2, ...)."""
    out, path = cfg.out_dir, os.path.join(cfg.out_dir, "checkpoint.pt")
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"error: --out-dir {out} is a file, not a folder: name a folder for the run")
    state = read_checkpoint(path) if os.path.exists(path) and not cfg.overwrite else None
    if cfg.resume and state is not None:
        old, new = state["config"], dataclasses.asdict(cfg)
        changed = {k: (old.get(k), v) for k, v in new.items() if k in old and old[k] != v
                   and k not in ("resume", "overwrite", "progress")}
        refused = [f"--{k.replace('_', '-')} {a!r} -> {b!r}" for k, (a, b) in changed.items()
                   if k in KEPT_ON_RESUME]
        if refused:
            raise SystemExit(f"error: --resume continues the run in {out} as it was set up; these settings "
                             f"differ from it: {'; '.join(refused)}. Use the run's values, or start a new "
                             f"run in another --out-dir")
        if changed:
            log("resuming with changed settings: " + ", ".join(f"--{k.replace('_', '-')} {a!r} -> {b!r}"
                                                               for k, (a, b) in changed.items()))
        return
    if state is not None and not os.path.exists(os.path.join(out, "summary.json")):
        raise SystemExit(f"error: {out} holds an unfinished run (checkpoint at step {state['step']} of "
                         f"{state['config'].get('steps')}): continue it with --resume, start it over with "
                         f"--overwrite, or choose another --out-dir")
    held = [os.path.join(out, f) for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if held and is_main() and cfg.overwrite:
        for f in held:
            if os.path.isdir(f):
                shutil.rmtree(f)
            else:
                os.remove(f)
        log(f"--overwrite: the run in {out} was deleted; starting over")
    elif held and is_main():
        aside = next(f"{out}.{n}" for n in range(1, 10_000) if not os.path.exists(f"{out}.{n}"))
        os.replace(out, aside)
        log(f"{out} held a finished run: moved to {aside}; starting a new run in {out}")
    barrier()             # under torchrun, no rank goes on before the folder is ready


def start_or_resume(cfg, model, optimizer, log):
    """Prepare the run directory cfg.out_dir (prepare_out_dir has checked it) and return (step to start
    from, the loop's counters): the checkpoint's with --resume, else (0, {}). The metrics log is cut
    back to match the weights, and config.json records the settings of this run."""
    path = os.path.join(cfg.out_dir, "checkpoint.pt")
    start, progress = 0, {}
    if cfg.resume and os.path.exists(path):
        start, progress = load_checkpoint(path, model, optimizer)
        log(f"resumed from {path} at step {start}")
    elif cfg.resume:
        log(f"--resume: no checkpoint at {path}, starting from step 0")
    if is_main():
        os.makedirs(cfg.out_dir, exist_ok=True)
        _truncate_metrics(os.path.join(cfg.out_dir, "metrics.jsonl"), start)
        with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
    return start, progress


class PhaseClock:
    """The seconds and, on CUDA, the peak memory of each phase of a step, for its metrics row:
    `with clock("sampling"): ...` records row["sampling_s"], and on CUDA row["peak_sampling_gib"] and
    row["reserved_sampling_gib"], allocated and reserved (bench/gpu_check.py reads them against the
    phases of plan.py); clock.take() hands the row over and starts a new one."""

    def __init__(self, device):
        self.device, self.row = torch.device(device), {}

    @contextlib.contextmanager
    def __call__(self, phase):
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        yield
        self.row[f"{phase}_s"] = round(time.perf_counter() - t0, 4)
        if cuda:
            self.row[f"peak_{phase}_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
            self.row[f"reserved_{phase}_gib"] = round(torch.cuda.max_memory_reserved(self.device) / 2**30, 3)

    def take(self):
        row, self.row = self.row, {}
        return row


def append_metrics(out_dir, row):
    """One line of metrics.jsonl per step (rank 0)."""
    if is_main():
        with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")


def save_final(out_dir, model, tok, summary, cfg, base_path=""):
    """The trained model as an ordinary Hugging Face directory (out_dir/model, atomically; not with
    --no-save) and summary.json. A LoRA run's model/ is the merged model, and adapter/ holds the adapters
    in PEFT's layout (lora.save_adapter), naming base_path as its base. Every rank calls it: under FSDP
    the weights are gathered from the shards."""
    weights = full_state_dicts(model, None)[0] if cfg.save else None
    if is_main() and cfg.save:
        lora = has_adapters(unwrap(model))

        def save(directory):
            merged = merged_state_dict(weights, cfg.lora_rank, cfg.lora_alpha) if lora else weights
            unwrap(model).save_pretrained(directory, state_dict=merged)
            tok.save_pretrained(directory)
        save_dir_atomic(os.path.join(out_dir, "model"), save)
        if lora:
            save_dir_atomic(os.path.join(out_dir, "adapter"), lambda directory: save_adapter(
                directory, weights, cfg.lora_rank, cfg.lora_alpha, names(cfg.lora_targets), base_path,
                names(cfg.lora_modules_to_save), getattr(unwrap(model).config, "tie_word_embeddings", False)))
    if is_main():
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    barrier()      # every rank leaves together: none tears its connections down while a peer uses them


def _truncate_metrics(path, step):
    """On resume, drop logged rows past the checkpoint so the log matches the weights."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] < step]
    with open(path, "w") as f:
        f.writelines(rows)


class StopFlag:
    """First Ctrl-C: finish the current step, save a checkpoint, exit. Second Ctrl-C: abort now."""

    def __init__(self):
        self.stop = False
        self.old = signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)",
              file=sys.stderr)

    def restore(self):
        signal.signal(signal.SIGINT, self.old)
