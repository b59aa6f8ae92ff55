"""LoRA against full fine-tuning on the built-in task: held-out accuracy at the same steps, wall time and
peak memory, each arm the default run in a fresh process.

    python bench/lora_vs_full.py                          # full fine-tuning, LoRA ranks 1, 8, 32 (and 32 with the
                                                          # embedding and norms trained); 3 seeds (~70 min)
    python bench/lora_vs_full.py --ranks 32               # the ranks' table without ranks 1 and 8
    python bench/lora_vs_full.py --seeds 0 --steps 300    # a quick look
    python bench/lora_vs_full.py --ranks 8 --seeds 0 --lr-multipliers 2.5 5 10 20    # LoRA's learning rate

Every arm is `python train.py --group-size 2` (the tiny model's warm start, 2-GRPO, 128 prompts x 2 per
step, held-out accuracy on 500 problems, greedy) with --seed S, and for LoRA --lora-rank R, at the
learning rate the docs advise (config.LORA_LR x full fine-tuning's 2e-4) or x each --lr-multipliers.
One more arm (unless --no-weights-only-arm) is full fine-tuning of what LoRA adapts alone: the weights of
the Linears named by lora.DEFAULT_TARGETS, the embeddings, norms and biases frozen as LoRA leaves them, so
the table separates what low rank costs from what the frozen parameters cost; and LoRA at each of
--saved-ranks (default 32) with --lora-modules-to-save (default the embedding, which the tiny model ties
to its head, and every norm) trained in full beside the adapters, as PEFT's modules_to_save does.
The warm-start models are built before any arm is timed, so every arm's wall time is training and
evaluation alone. Peak memory is the arm process's high-water mark (VmHWM). The table gives held-out
accuracy after training (mean and range over the seeds), relative to full fine-tuning's at the same
seeds, measured in the same run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from config import LORA_LR  # noqa: E402

ARM = """
import os, runpy, sys
sys.argv = ["train.py"] + sys.argv[1:]
if os.environ.get("WEIGHTS_ONLY"):    # full fine-tuning of the adapted Linears' weights only
    import data
    sys.path.append("bench")
    from lora_vs_full import train_adapted_weights_only
    load = data.load_model_and_tokenizer               # replaced before train.py imports it
    data.load_model_and_tokenizer = lambda *a, **k: train_adapted_weights_only(*load(*a, **k))
try:
    runpy.run_path("train.py", run_name="__main__")
finally:
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print("PEAK_RSS_KB", hwm, file=sys.stderr)
"""


def train_adapted_weights_only(model, tok=None):
    """The weights-only arm's model: every parameter frozen but the weights of the Linears that LoRA adapts
    (lora.DEFAULT_TARGETS); returns (model, tok) as data.load_model_and_tokenizer does."""
    from lora import target_linears
    model.requires_grad_(False)
    for m in target_linears(model).values():
        m.weight.requires_grad_(True)
    return model, tok


SAVED = "embed_tokens,input_layernorm,post_attention_layernorm,norm"   # the embedding (= the head), norms


def run_arm(out_dir, seed, rank, lr, args, weights_only=False, saved=""):
    """One arm in a fresh process: its summary.json, wall seconds, peak RSS in MB. saved: the
    --lora-modules-to-save of a LoRA arm."""
    argv = ["--group-size", "2", "--seed", str(seed), "--steps", str(args.steps), "--out-dir", out_dir,
            "--cache-dir", args.cache_dir, "--warm-start-target", str(args.warm_start_target),
            "--eval-problems", str(args.eval_problems), "--no-progress", "--no-save", "--overwrite", "--lr", str(lr)]
    if rank:
        argv += ["--lora-rank", str(rank), "--lora-modules-to-save", saved]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", ARM, *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "WEIGHTS_ONLY": "1" if weights_only else ""})
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    peak = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) / 1024
    return json.load(open(os.path.join(out_dir, "summary.json"))), wall, peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr-multipliers", type=float, nargs="+", default=[LORA_LR],
                    help="LoRA's learning rate as multiples of full fine-tuning's 2e-4 (default: config.LORA_LR)")
    ap.add_argument("--cache-dir", default=os.path.join(ROOT, ".cache"))
    ap.add_argument("--warm-start-target", type=float, default=0.2)
    ap.add_argument("--eval-problems", type=int, default=500)
    ap.add_argument("--saved-ranks", type=int, nargs="*", default=[32],
                    help="ranks with one more arm each, --modules-to-save trained beside the adapters (none: no such arm)")
    ap.add_argument("--modules-to-save", default=SAVED, help="those arms' --lora-modules-to-save")
    ap.add_argument("--no-weights-only-arm", action="store_true",
                    help="leave out full fine-tuning of the adapted Linears' weights alone")
    args = ap.parse_args(argv)
    from tiny_model import builtin_model_dir
    for seed in args.seeds:                    # the warm starts first: no arm's time includes one
        builtin_model_dir(args.cache_dir, seed, args.warm_start_target, "cpu", log=lambda m: None)
    arms = [("full fine-tuning", 0, 2e-4, False, "")]
    arms += [] if args.no_weights_only_arm else [("full fine-tuning, adapted weights only", 0, 2e-4, True, "")]
    arms += [(f"LoRA r {r}", r, 2e-4 * m, False, "") for r in args.ranks for m in args.lr_multipliers]
    arms += [(f"LoRA r {r}, {args.modules_to_save} trained", r, 2e-4 * m, False, args.modules_to_save)
             for r in args.saved_ranks for m in args.lr_multipliers]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, rank, lr, weights_only, saved) in enumerate(arms):
            for seed in args.seeds:
                summary, wall, peak = run_arm(os.path.join(tmp, f"{i}-{seed}"), seed, rank, lr, args,
                                              weights_only, saved)
                results.setdefault((name, lr), []).append((summary["held_out_after"], wall, peak))
                print(f"{name}, lr {lr:.0e}, seed {seed}: held-out {summary['held_out_before']:.1%} -> "
                      f"{summary['held_out_after']:.1%}, {wall:.0f} s, peak RSS {peak:.0f} MB", flush=True)
    full = statistics.mean(a for a, _, _ in results[("full fine-tuning", 2e-4)])
    lines = [f"Built-in task, {args.steps} steps of 2-GRPO (128 prompts x 2), seeds {args.seeds}; held-out "
             f"accuracy on {args.eval_problems} problems, greedy", "",
             "| arm | lr | held-out after, mean (range) | vs full fine-tuning | wall s, mean | peak RSS MB, mean |",
             "|---|---|---|---|---|---|"]
    for (name, lr), rows in results.items():
        acc = [a for a, _, _ in rows]
        relative = f"{statistics.mean(acc) / full:.1%}" if full else "n/a"
        lines.append(f"| {name} | {lr:.0e} | {100 * statistics.mean(acc):.1f}% ({100 * min(acc):.1f}-"
                     f"{100 * max(acc):.1f}) | {relative} | "
                     f"{statistics.mean(w for _, w, _ in rows):.0f} | {statistics.mean(p for _, _, p in rows):.0f} |")
    print("\n".join(lines))
    return results, lines


if __name__ == "__main__":
    main()
