"""checkpoint.py: nothing is lost. The run directory: atomic checkpoints, resume, Ctrl-C, metrics, the
final model.

Chapter 7 of the tutorial. A checkpoint holds everything a resumed run needs (weights, optimizer,
step, RNG states, the config; the learning rate is a function of the step); it is written to a
temporary file and renamed into place, so an interrupted write leaves the previous checkpoint whole.
A resumed run ends with the same weights as a run never interrupted (tests/test_train.py checks it
bit for bit).
"""

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import sys

import torch

from parallel import barrier, full_state_dicts, is_main, is_sharded, load_full_state_dicts, unwrap


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


def save_checkpoint(path, model, optimizer, step, cfg, progress=None):
    """Everything a resumed run needs, written by rank 0 to a temporary file and renamed into place
    (atomic). Every rank calls it (under FSDP the state is gathered from all of them). progress: the
    loop's counters (rollouts sampled, the data stream's position)."""
    model_state, optimizer_state = full_state_dicts(model, optimizer)
    if not is_main():
        return
    state = {"model": model_state, "optimizer": optimizer_state, "step": step, "progress": progress or {},
             "config": dataclasses.asdict(cfg), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "python_rng": random.getstate()}
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path, model, optimizer):
    """Restore a checkpoint of save_checkpoint into the (possibly sharded) model and its optimizer;
    returns (step, the loop's counters (save_checkpoint's progress), the config it was written with). A
    file that cannot be read (truncated, damaged, not a checkpoint) is one line naming it and what to do."""
    def unreadable(why):
        return SystemExit(f"error: {path} cannot be resumed from ({why}): the file is damaged or not a "
                          f"checkpoint of train.py (saves go to a temporary file and are renamed, so an "
                          f"interrupted save leaves the previous one whole). Start over without --resume, or "
                          f"with another --out-dir")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:     # torch.load raises RuntimeError, EOFError, UnpicklingError, ... by damage
        raise unreadable(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}") from None
    missing = {"model", "optimizer", "step", "config"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise unreadable(f"missing {', '.join(sorted(missing))}")
    sharded = is_sharded(model)
    if (state["config"].get("fsdp", False) or state["config"].get("cpu_offload", False)) != sharded:
        raise SystemExit(f"error: {path} was written {'with' if not sharded else 'without'} --fsdp / "
                         f"--cpu-offload; resume it the same way (the optimizer state is laid out "
                         f"differently)")
    load_full_state_dicts(model, optimizer, state["model"], state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    return state["step"], state.get("progress", {"rollouts": state.get("rollouts", 0)}), state["config"]


def start_or_resume(cfg, model, optimizer, log):
    """Prepare the run directory cfg.out_dir and return (step to start from, the loop's counters): the
    checkpoint's with --resume (saying which settings changed since it was written), else (0, {}). The
    metrics log is cut back to match the weights, and config.json records the settings of this run."""
    path = os.path.join(cfg.out_dir, "checkpoint.pt")
    start, progress = 0, {}
    if cfg.resume and os.path.exists(path):
        start, progress, old = load_checkpoint(path, model, optimizer)
        changed = {k: (old.get(k), v) for k, v in dataclasses.asdict(cfg).items()
                   if k not in ("resume", "steps", "progress") and old.get(k) != v}
        log(f"resumed from {path} at step {start}" + (f" (changed settings: {changed})" if changed else ""))
    elif cfg.resume:
        log(f"--resume: no checkpoint at {path}, starting from step 0")
    if is_main():
        os.makedirs(cfg.out_dir, exist_ok=True)
        _truncate_metrics(os.path.join(cfg.out_dir, "metrics.jsonl"), start)
        with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
    return start, progress


def append_metrics(out_dir, row):
    """One line of metrics.jsonl per step (rank 0)."""
    if is_main():
        with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")


def save_final(out_dir, model, tok, summary, save_model=True):
    """The trained model as an ordinary Hugging Face directory (out_dir/model, atomically; not with
    save_model=False) and summary.json. Every rank calls it: under FSDP the weights are gathered from
    the shards."""
    weights = full_state_dicts(model, None)[0] if save_model else None
    if is_main() and save_model:
        def save(directory):
            unwrap(model).save_pretrained(directory, state_dict=weights)
            tok.save_pretrained(directory)
        save_dir_atomic(os.path.join(out_dir, "model"), save)
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
