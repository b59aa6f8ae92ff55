"""One command that measures a GPU: run it whenever one is at hand, and copy its numbers into the README.

    python bench/gpu_check.py               # on one GPU, at most 8 minutes; writes bench/results/gpu.md
    python bench/gpu_check.py --dry-run     # every part on tiny shapes, on the CPU, in about 2 minutes

It installs nothing and runs on the torch and transformers it finds (it prints their versions).
Each part runs in its own process with a time limit, all within one deadline (8 minutes); a part that
fails or runs out of time is reported as such and the others go on; parts come in order of importance.
Models are random weights built from the real config.json shapes of Qwen2.5-0.5B and
Qwen2.5(-Math)-1.5B (no weights exist on these machines). Parts:
  1. the test suite (python -m pytest -q tests);
  1b. precision (bench/sampler_gap.py): the sampler-vs-training log-prob gap under float32, mixed and
     bfloat16, the first update's ratio with the sampler's and the training forward's pi_old, and the
     KV cache's bytes per token, for the 1.5B shape cut to 8 layers;
  2. sampling speed (bench/rollout_speed.py): rollout.sample, eager and compiled (compile=True), vs
     model.generate and generate with a static cache, for the 0.5B and 1.5B shapes at batch
     512 / 256 / 64, 512 new tokens, EOS workload;
  3. decode tokens/s at batch 1 for the 1.5B shape, compiled and eager, as a fraction of the card's
     memory-bandwidth limit (parameters x 2 bytes read per token);
  4. the step-time goals: 2 steps of 2-GRPO with --compile, 512 rollouts x 512 new tokens (256 prompts
     x 2), for the 0.5B and 1.5B shapes (the first step compiles; the second is the one to read;
     random weights rarely sample EOS, so every rollout runs the full 512 tokens: the worst case);
  5. training memory (bench/memory.py): measured torch.cuda.max_memory_allocated vs plan.py's plan;
  6. a 2-GRPO run of the 1.5B shape (64 prompts x 2, 1024 new tokens), 3 steps: seconds per step and
     peak memory against the plan;
  7. the README's one-GPU recipes (bench/recipes.py) that fit this card, 2 steps each under a memory
     cap equal to the recipe's card (torch.cuda.set_per_process_memory_fraction): peak vs plan, and
     whether it ran out of memory (with 256 new tokens, to fit the time: the plan is for the same flags).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

# memory bandwidth in GB/s of common cards (vendor data sheets), matched on the device name
BANDWIDTH = {"H200": 4800, "H100 SXM": 3350, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039,
             "A100 80GB PCIe": 1935, "A100": 1555, "L40S": 864, "L4": 300, "A10": 600, "RTX 4090": 1008,
             "RTX 3090": 936, "V100": 900, "T4": 320}

RUN = r"""
import json, os, sys, time, torch
sys.path.insert(0, {root!r})
a = json.loads(sys.argv[1])
if a["cap_gib"] and torch.cuda.is_available():
    torch.cuda.set_per_process_memory_fraction(min(1.0, a["cap_gib"] * 2**30 / torch.cuda.mem_get_info()[1]))
import train
try:
    summary = train.main(a["argv"])
    oom = False
except torch.OutOfMemoryError:
    summary, oom = None, True
rows = [json.loads(l) for l in open(os.path.join(a["out"], "metrics.jsonl"))] if not oom else []
peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
print(json.dumps({{"oom": oom, "step_s": [r["step_s"] for r in rows], "peak_gib": peak}}))
"""


def write_model(path, shape, vocab=None):
    """A random-weight Qwen2 of `shape` (bench/recipes.SHAPES or a dict), saved with the built-in
    character tokenizer: the model samples ids the tokenizer cannot spell, which decode to nothing."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from tiny_model import build_tiny_tokenizer
    cfg = Qwen2Config(**{**shape, **({"vocab_size": vocab} if vocab else {})}, max_position_embeddings=4096,
                      pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return path


DEADLINE = [float("inf")]      # perf_counter() time by which every part must end (set by main)


def left(cap):
    """A part's time limit: its own cap, or what is left before the deadline if that is less."""
    return max(1, int(min(cap, DEADLINE[0] - time.perf_counter())))


def part(name, cmd, timeout, log, env=None):
    """Run one part in a subprocess; (ok, stdout, seconds)."""
    t0 = time.perf_counter()
    timeout = left(timeout)
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **(env or {})})
        ok = out.returncode == 0
        text = out.stdout + ("" if ok else "\n" + out.stderr[-2000:])
    except subprocess.TimeoutExpired as e:
        ok, text = False, (e.stdout or b"").decode(errors="replace") + f"\n(ran past {timeout} s)"
    dt = time.perf_counter() - t0
    log(f"## {name} ({'ok' if ok else 'FAILED'}, {dt:.0f} s)\n\n```\n{text.strip()}\n```\n")
    return ok, text, dt


def train_run(model_dir, flags, out, cap_gib, timeout, world=1):
    """A short training run in its own process, under a memory cap: (result dict or None, seconds)."""
    argv = ["--model", model_dir, "--out-dir", out, "--no-progress", "--eval-every", "0", "--eval-problems", "8",
            "--save-every", "1000", "--no-skip-ties", *flags]
    code = RUN.format(root=ROOT)
    t0 = time.perf_counter()
    try:
        timeout = left(timeout)
        res = subprocess.run([sys.executable, "-c", code, json.dumps({"argv": argv, "out": out, "cap_gib": cap_gib})],
                             cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        last = [line for line in res.stdout.splitlines() if line.startswith("{")]
        return (json.loads(last[-1]) if last else {"error": res.stderr.strip().splitlines()[-1:]}), \
            time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        return {"error": f"ran past {timeout} s"}, time.perf_counter() - t0


def planned_gib(model_dir, flags, world=1):
    import plan
    from config import parse_args
    cfg = parse_args(["--model", model_dir, *flags])
    return plan.plan(cfg, plan.model_shape(model_dir), "cuda", world)[1] / plan.GiB


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks that every part runs")
    ap.add_argument("--out", default=None, help="default bench/results/gpu.md (a dry run: a temporary folder)")
    args = ap.parse_args()
    import torch
    import transformers
    dry = args.dry_run
    cuda = torch.cuda.is_available() and not dry
    if not cuda and not dry:
        raise SystemExit("no GPU here: run with --dry-run to check the parts on the CPU")
    name = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
    total_gib = torch.cuda.mem_get_info()[1] / 2 ** 30 if cuda else 0.0
    bandwidth = next((bw for key, bw in BANDWIDTH.items() if key in name), None)
    lines, t_start = [], time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="gpu_check_")
    out_path = args.out or (os.path.join(tmp, "gpu.md") if dry else os.path.join(HERE, "results", "gpu.md"))

    def log(text):
        lines.append(text)
        print(text, flush=True)
    log(f"# GPU check: {name}\n\ntorch {torch.__version__} (CUDA {torch.version.cuda}), transformers "
        f"{transformers.__version__}, {total_gib:.0f} GiB, memory bandwidth used for the limit: "
        f"{f'{bandwidth} GB/s' if bandwidth else 'unknown for this card'}; `python bench/gpu_check.py"
        f"{' --dry-run' if dry else ''}`, {time.strftime('%Y-%m-%d')}\n")
    py = sys.executable
    DEADLINE[0] = t_start + (170 if dry else 470)
    # 1. the test suite
    suite = [py, "-m", "pytest", "-q", "-x", "tests"] + (["-k", "layout"] if dry else [])
    part("1. test suite" + (" (its layout tests, dry run)" if dry else ""), suite, 60 if dry else 100, log)
    # 1b. precision: the sampler gap, the first update's ratio, the KV cache's bytes per token
    prec = [py, "bench/sampler_gap.py"] + (["--shapes", "tiny", "--rows", "8", "--new-tokens", "8"] if dry else
                                         ["--device", "cuda", "--shapes", "1.5B", "--layers", "8", "--rows", "64",
                                          "--new-tokens", "128"])
    part("1b. precision: sampler vs training log-probs, first ratio, KV bytes/token", prec, 30 if dry else 90, log)
    # 2. sampling speed: ours eager and compiled, generate, generate with a static cache
    compiled = ["--compiled"] + (["--compile-backend", "eager"] if dry else [])   # dry run: traced, not compiled
    speed = [py, "bench/rollout_speed.py", "--workloads", "eos", "--repeats", "1" if dry else "2", "--static",
             *compiled]
    speed += (["--models", "tiny", "--batches", "8", "--new-tokens", "16"] if dry else
              ["--models", "0.5B", "1.5B", "--batches", "512", "256", "64", "--new-tokens", "512"])
    speed += ["--json", os.path.join(tmp, "speed.json")]
    part("2. sampling: rollout.sample eager and compiled vs generate vs generate with a static cache", speed,
         60 if dry else 150, log)
    goal_lines = ["## Goals (issue #14)", ""]
    try:                                  # the 0.5B shape at batch 64 (dry run: the tiny model at batch 8)
        row = next(r for r in json.load(open(os.path.join(tmp, "speed.json")))
                   if (r["model"], r["batch"]) == (("tiny", 8) if dry else ("0.5B", 64)))
        goal_lines += [f"- compiled sampler >= 3x generate ({row['model']}, batch {row['batch']}): "
                       f"{row['compiled_vs_generate']:.2f}x, {'met' if row['compiled_vs_generate'] >= 3 else 'NOT met'}",
                       f"- compiled sampler ahead of generate with a static cache: {row['compiled_vs_static']:.2f}x, "
                       f"{'met' if row['compiled_vs_static'] > 1 else 'NOT met'}"]
    except (OSError, StopIteration, KeyError, ValueError) as e:
        goal_lines.append(f"- sampling goals: no result ({type(e).__name__})")
    # 3. decode at batch 1 against the memory-bandwidth limit
    part("3. decode at batch 1", [py, "bench/rollout_speed.py", "--workloads", "fixed", "--repeats", "1", *compiled,
                                  "--models", "tiny" if dry else "1.5B", "--batches", "1",
                                  "--new-tokens", "16" if dry else "256", "--json", os.path.join(tmp, "b1.json")],
         60 if dry else 60, log)
    try:
        b1 = json.load(open(os.path.join(tmp, "b1.json")))[0]
        limit = bandwidth * 1e9 / (2 * b1["params"]) if bandwidth else None
        for label, tps in (("compiled", b1["compiled_tps"]), ("eager", b1["ours_tps"])):
            log(f"batch-1 decode, {label}: {tps:.0f} tokens/s" + (
                f", {100 * tps / limit:.0f}% of the bandwidth limit of {limit:.0f} tokens/s ({bandwidth} GB/s / "
                f"(2 bytes x {b1['params'] / 1e9:.2f}B))" if limit else " (no bandwidth figure for this card)") + "\n")
        share = b1["compiled_tps"] / limit if limit else None
        goal_lines.append(f"- batch-1 decode >= 50% of the bandwidth limit ({b1['model']}): " +
                          (f"{100 * share:.0f}%, {'met' if share >= 0.5 else 'NOT met'}" if limit else "no figure"))
    except (OSError, IndexError, KeyError, ValueError) as e:
        log(f"batch-1 decode: no result ({type(e).__name__})\n")
        goal_lines.append(f"- batch-1 decode: no result ({type(e).__name__})")
    # 4. the step-time goals: 512 rollouts x 512 tokens, compiled sampling
    import recipes
    tiny_shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True)
    goals = ["| shape | flags | seconds per step (1st compiles) | goal for the 2nd | peak allocated (GiB) | result |",
             "|---|---|---|---|---|---|"]
    for shape_name, goal, extra in (("0.5B", 8, []), ("1.5B", 20, ["--gradient-checkpointing"])):
        gdir = write_model(os.path.join(tmp, f"goal-{shape_name}"), tiny_shape if dry else
                           recipes.SHAPES["Qwen2.5-0.5B-Instruct" if shape_name == "0.5B" else "Qwen2.5-Math-1.5B"])
        gflags = ["--group-size", "2", "--prompts-per-step", "8" if dry else "256", "--max-new-tokens",
                  "16" if dry else "512", "--micro-batch-size", "32", "--logprob-chunk", "256", "--steps", "2",
                  "--lr", "1e-6", *extra] + ([] if dry else ["--compile"])     # dry run: eager sampling
        res, dt = train_run(gdir, gflags, os.path.join(tmp, f"goal-run-{shape_name}"), 0, 60 if dry else 130)
        steps = res.get("step_s") or []
        goal_lines.append(f"- a 2-GRPO step of {'16 x 16 (dry run)' if dry else '512 rollouts x 512 tokens'}, "
                          f"{shape_name} shape, under {goal} s: " + (f"{steps[-1]:.1f} s (2nd step), "
                          f"{'met' if steps[-1] < goal else 'NOT met'}" if len(steps) > 1 else "no result"))
        goals.append(f"| {shape_name} | `{' '.join(gflags)}` | {steps} | {goal} s: "
                     f"{('met' if steps[-1] < goal else 'NOT met') if len(steps) > 1 else '-'} | "
                     f"{res.get('peak_gib')} | {'out of memory' if res.get('oom') else res.get('error') or 'ran'} |")
    log(f"## 4. step-time goals: 2-GRPO, {'8 prompts x 2 x 16 tokens (dry run, eager)' if dry else '512 rollouts x 512 tokens, --compile'}"
        f"\n\n" + "\n".join(goals) + "\n")
    # 5. training memory, planned vs measured
    mem = [py, "bench/memory.py", "--seqs", "2" if dry else "8"] + (["--configs", "small (h 256)", "--completion", "32",
                                                                     "--options", "plain", "chunk"] if dry else [])
    part("5. training memory: measured vs plan.py", mem, 60 if dry else 50, log)
    # 6. a 2-GRPO run of the 1.5B shape
    shape = tiny_shape if dry else recipes.SHAPES["Qwen2.5-Math-1.5B"]
    model_dir = write_model(os.path.join(tmp, "model-1.5B"), shape)
    flags = ["--group-size", "2", "--prompts-per-step", "8" if dry else "64", "--max-new-tokens", "16" if dry else "1024",
             "--max-prompt-tokens", "512", "--micro-batch-size", "8", "--rollout-batch-size", "64",
             "--gradient-checkpointing", "--logprob-chunk", "256", "--steps", "2" if dry else "3", "--lr", "1e-6"]
    res, dt = train_run(model_dir, flags, os.path.join(tmp, "run-1.5B"), 0, 60 if dry else 80)
    plan_gib = planned_gib(model_dir, flags)
    log(f"## 6. 2-GRPO, {'tiny' if dry else '1.5B'} shape, {'8' if dry else '64'} prompts x 2 ({dt:.0f} s)\n\n"
        f"seconds per step: {res.get('step_s')}; peak allocated: {res.get('peak_gib')} GiB; planned: {plan_gib:.2f} "
        f"GiB; {'out of memory' if res.get('oom') else res.get('error') or 'ran'}\n")
    # 7. the recipes that fit this card, each under a cap equal to its card
    rows = []
    for card in recipes.CARDS:
        for model_name in recipes.SHAPES:
            r = recipes.recipe(model_name, card)
            offload = r is not None and "--cpu-offload" in r[0]
            if r is None or r[1] != 1 or (cuda and card > total_gib) or \
                    (dry and any(("--cpu-offload" in row[2]) == offload for row in rows)):  # dry: one of each kind
                continue
            rows.append((card, model_name, r[0], r[2], 0 if dry else r[3]))   # dry run: tiny shapes, no host need
    table = ["| card (GiB) | model | flags | planned (GiB) | peak allocated (GiB) | result | s |", "|---|---|---|---|---|---|---|"]
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    for card, model_name, extra, planned, host_gib in rows:
        if DEADLINE[0] - time.perf_counter() < 20 or host_gib > 0.8 * ram_gib:
            why = "out of time" if host_gib <= 0.8 * ram_gib else f"needs {host_gib:.0f} GiB of host RAM of {ram_gib:.0f}"
            table.append(f"| {card} | {model_name} | `{extra}` | {planned:.1f} | - | skipped: {why} | - |")
            continue
        rdir = write_model(os.path.join(tmp, model_name), shape if dry else recipes.SHAPES[model_name])
        rflags = [*flags[:-4], *extra.split(), "--max-new-tokens", "16" if dry else "256", "--steps", "2"]
        res, dt = train_run(rdir, rflags, os.path.join(tmp, f"run-{card}-{model_name}"), 0 if dry else card, 120)
        planned = planned_gib(rdir, rflags) + 0.75
        table.append(f"| {card} | {model_name} | `{extra or '(none)'}` | {planned:.1f} | {res.get('peak_gib')} | "
                     f"{'OUT OF MEMORY' if res.get('oom') else res.get('error') or 'ran'} | {dt:.0f} |")
    log("## 7. recipes under a memory cap equal to their card\n\n" + "\n".join(table) + "\n")
    log("\n".join(goal_lines) + "\n")
    log(f"total {time.perf_counter() - t_start:.0f} s")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"written: {out_path}")
    return out_path


if __name__ == "__main__":
    main()
