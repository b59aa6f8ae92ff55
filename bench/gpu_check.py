"""One command that measures a GPU: run it whenever one is at hand, and copy its numbers into the docs.

    python bench/gpu_check.py                  # one GPU, one deadline (8 minutes); writes bench/results/gpu.md
    python bench/gpu_check.py --dry-run        # every part on tiny shapes, on the CPU, in about two minutes

It installs nothing and runs on the torch and transformers it finds (torch 2.11 / transformers 5.17
included; it prints their versions). Parts come in the order of how much each decides; each runs in a
process group of its own, killed whole when its time is up, all within one deadline; the report
(--out) is appended to after every part, so a run cut short keeps what it measured. Models are random
weights built from the real config.json shapes of Qwen2.5-0.5B and Qwen2.5(-Math)-1.5B (no weights
exist on these machines), each written once, in bf16, and deleted after its parts; the training runs
write no checkpoint and no final model (--no-save) and read a problem file the check writes, whose
prompts are about 500 tokens (the character tokenizer, raw template: the paper's prompt length), with a
held-out evaluation after the first step at the run's own batch (one rollout micro-batch of problems).
Parts:
  1. environment: the GPU, torch / transformers / triton versions, a C compiler, free memory and disk;
  2. the 1.5B shape at the paper's lengths (64 prompts x 2, 1024 new tokens), two steps: per-phase peaks
     (allocated and reserved) against the plan, seconds per step, the first update's ratio and the
     sampler gap;
  3. the 1.5B shape with --cpu-offload, one step (256 new tokens): does it run; per-phase peaks;
  4. the 0.5B shape at batch 64: compiled vs eager vs generate tokens/s (bench/rollout_speed.py), each
     method printed the moment it is measured, the part's time (the compile is in it), whether CUDA graphs
     ran (torch's "skipping cudagraphs" hints) and how many recompiles torch logged;
  5. batch-1 decode of the 1.5B shape, compiled and eager, against the card's memory-bandwidth limit;
  6. two steps of `train.py --compile` on the 0.5B shape beside the same two steps eager: recompiles,
     "skipping cudagraphs" hints, step 2's sampling seconds (the compile is in step 1's);
  7. what else fits in the time left: the one-GPU recipes of docs/gpu.md that fit this card, two steps
     each under a memory cap equal to the recipe's card less the CUDA context (plan.CONTEXT_GIB).
The compile parts come after the parts that decide the plan, each with a budget a cold compile fits.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, ROOT)
sys.path.append(HERE)                       # bench/recipes.py, after the project's own modules

# memory bandwidth in GB/s of common cards (vendor data sheets), matched on the device name
BANDWIDTH = {"H200": 4800, "H100 SXM": 3350, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039,
             "A100 80GB PCIe": 1935, "A100": 1555, "L40S": 864, "L4": 300, "A10": 600, "RTX 4090": 1008,
             "RTX 3090": 936, "V100": 900, "T4": 320}
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1000, tie_word_embeddings=True)

# a short training run in a child process: its metrics rows and the plan of the same flags, per phase
RUN = r"""
import json, os, sys, torch
sys.path.insert(0, {root!r})
a = json.loads(sys.argv[1])
import plan, train
if a["cap_gib"] and torch.cuda.is_available():      # the card's memory less the context, for tensors
    tensors = (a["cap_gib"] - plan.CONTEXT_GIB) * 2**30
    torch.cuda.set_per_process_memory_fraction(min(1.0, tensors / torch.cuda.mem_get_info()[1]))
from config import parse_args
cfg = parse_args(a["argv"])
phases, total = plan.plan(cfg, plan.model_shape(cfg.model), "cuda" if torch.cuda.is_available() else "cpu")
kept = sum(x for _, x in phases["kept"])
planned = {{p: round((kept + sum(x for _, x in phases[p])) / plan.GiB, 2) for p in plan.PHASES}}
try:
    train.main(a["argv"])
    oom = False
except torch.OutOfMemoryError:
    oom = True
rows = [json.loads(l) for l in open(os.path.join(cfg.out_dir, "metrics.jsonl"))] if not oom else []
print(json.dumps({{"oom": oom, "rows": rows, "planned": planned, "needed_gib": round(plan.needed_gib(total), 2)}}))
"""


def write_model(path, shape, dtype="bfloat16"):
    """A random-weight Qwen2 of `shape`, saved once in `dtype` with the built-in character tokenizer (the
    model samples ids the tokenizer cannot spell, which decode to nothing). bench/memory.py uses it too."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from tiny_model import build_tiny_tokenizer
    cfg = Qwen2Config(**shape, max_position_embeddings=4096, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).to(getattr(torch, dtype)).save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return path


def write_problems(path, prompt_tokens, n=256):
    """n problems whose prompts are prompt_tokens characters (the character tokenizer: one token each),
    read with --template raw."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"problem": str(10 ** (prompt_tokens - 1) + i), "answer": "1"}) + "\n")
    return path


class Check:
    """The deadline and the report: every part's text is appended to the file as soon as it ends."""

    def __init__(self, out, deadline_s):
        self.out, self.end = out, time.perf_counter() + deadline_s
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        open(out, "w").close()

    def left(self, cap):
        return max(1, int(min(cap, self.end - time.perf_counter())))

    def report(self, text):
        print(text, flush=True)
        with open(self.out, "a") as f:
            f.write(text + "\n\n")

    def run(self, cmd, cap, env=None):
        """cmd in its own process group, killed whole at its time limit: (ok, stdout, stderr, seconds)."""
        t0, limit = time.perf_counter(), self.left(cap)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, **(env or {})})
        try:
            out, err = proc.communicate(timeout=limit)
            ok = proc.returncode == 0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)                  # the part and every process it started
            out, err = proc.communicate()
            ok, err = False, err + f"\n(killed: ran past its {limit} s)"
        return ok, out, err, time.perf_counter() - t0

    def train(self, model_dir, flags, out_dir, cap, cap_gib=0, env=None):
        """A short training run: (result dict with metrics rows, the plan and the run's stderr, seconds)."""
        argv = ["--model", model_dir, "--out-dir", out_dir, "--no-progress", "--no-save", "--eval-every", "1",
                "--no-skip-ties", *flags]
        ok, out, err, dt = self.run([sys.executable, "-c", RUN.format(root=ROOT),
                                     json.dumps({"argv": argv, "cap_gib": cap_gib})], cap, env)
        last = [line for line in out.splitlines() if line.startswith("{")]
        res = json.loads(last[-1]) if last else {"error": (err.strip().splitlines() or ["no output"])[-1]}
        return {**res, "stderr": err}, dt


def phase_table(res):
    """Planned (kept + phase) against the measured peaks, allocated and reserved, per phase (GiB)."""
    rows = res.get("rows") or []
    planned = res.get("planned", {})
    lines = ["| phase | planned | peak allocated | peak reserved |", "|---|---|---|---|"]
    for phase, plan_key in (("sampling", ["sampling"]), ("update", ["training micro-batch", "optimizer step"]),
                            ("evaluation", ["held-out evaluation"])):
        peaks = [r.get(f"peak_{phase}_gib") for r in rows if r.get(f"peak_{phase}_gib") is not None]
        reserved = [r.get(f"reserved_{phase}_gib") for r in rows if r.get(f"reserved_{phase}_gib") is not None]
        lines.append(f"| {phase} | {max(planned.get(k, 0) for k in plan_key):.2f} | "
                     f"{max(peaks) if peaks else '-'} | {max(reserved) if reserved else '-'} |")
    return "\n".join(lines)


def summary(res):
    rows = res.get("rows") or []
    if res.get("oom"):
        return "OUT OF MEMORY"
    if not rows:
        return f"no result: {res.get('error')}"
    return (f"seconds per step: {[r['step_s'] for r in rows]}; ratio_mean {[r.get('ratio_mean') for r in rows]}; "
            f"sampler_gap_mean {[r.get('sampler_gap_mean') for r in rows]}, sampler_gap_max "
            f"{[r.get('sampler_gap_max') for r in rows]}; the plan's total on the card: {res.get('needed_gib')} GiB")


def compile_hints(err):
    """What torch logged about the compiled path: CUDA graphs skipped, recompiles (TORCH_LOGS=recompiles)."""
    return (f"CUDA graphs: {err.count('skipping cudagraphs')} 'skipping cudagraphs' hints; "
            f"{err.count('Recompiling function')} recompiles logged")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks that every part runs")
    ap.add_argument("--out", default=None, help="the report (default bench/results/gpu.md; a dry run: a temporary "
                                                "folder)")
    ap.add_argument("--deadline", type=float, default=None, help="seconds for everything (default 480; dry run 200)")
    args = ap.parse_args(argv)
    import torch
    import transformers
    dry = args.dry_run
    cuda = torch.cuda.is_available() and not dry
    if not cuda and not dry:
        raise SystemExit("no GPU here: run with --dry-run to check the parts on the CPU")
    tmp = tempfile.mkdtemp(prefix="gpu_check_")
    check = Check(args.out or (os.path.join(tmp, "gpu.md") if dry else os.path.join(HERE, "results", "gpu.md")),
                  args.deadline or (200 if dry else 480))
    py = sys.executable
    # 1. environment
    name = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
    free, total = torch.cuda.mem_get_info() if cuda else (0, 0)
    bandwidth = next((bw for key, bw in BANDWIDTH.items() if key in name), None)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    compiler = shutil.which("cc") or shutil.which("gcc") or "none (torch.compile's default backend needs one)"
    check.report(f"# GPU check: {name}\n\n## 1. environment\n\ntorch {torch.__version__} (CUDA {torch.version.cuda}), "
                 f"transformers {transformers.__version__}, triton {triton_version}; C compiler: {compiler}; "
                 f"memory {free / 2**30:.1f} of {total / 2**30:.1f} GiB free; disk {shutil.disk_usage(tmp).free / 2**30:.0f} "
                 f"GiB free; memory bandwidth for the limit: {f'{bandwidth} GB/s' if bandwidth else 'unknown'}; "
                 f"`python bench/gpu_check.py{' --dry-run' if dry else ''}`, {time.strftime('%Y-%m-%d')}")
    import recipes
    shape_15 = TINY if dry else recipes.SHAPES["Qwen2.5-Math-1.5B"]
    model_15 = write_model(os.path.join(tmp, "model-1.5B"), shape_15)
    problems = write_problems(os.path.join(tmp, "problems.jsonl"), 16 if dry else 500)
    rows = 16 if dry else 64                                   # the rollout micro-batch, and evaluation's

    def base(new_tokens, prompts):
        """The paper's run scaled to one GPU (docs/gpu.md's base run), on the check's problems."""
        return ["--data", problems, "--eval-data", problems, "--template", "raw", "--max-prompt-tokens", "512",
                "--group-size", "2", "--prompts-per-step", str(prompts), "--max-new-tokens", str(new_tokens),
                "--micro-batch-size", "8", "--rollout-batch-size", str(rows), "--eval-problems", str(rows),
                "--lr", "1e-6"]
    memory = ["--gradient-checkpointing", "--logprob-chunk", "256"]
    # 2. the 1.5B shape at the paper's lengths, two steps
    res, dt = check.train(model_15, base(16 if dry else 1024, 8 if dry else 64) + memory + ["--steps", "2"],
                          os.path.join(tmp, "run-1.5B"), 170)
    check.report(f"## 2. {'tiny' if dry else '1.5B'} shape at the paper's lengths, two steps ({dt:.0f} s)\n\n"
                 f"{summary(res)}\n\n" + phase_table(res))
    # 3. the 1.5B shape offloaded, one step
    res, dt = check.train(model_15, base(16 if dry else 256, 8 if dry else 32) + memory
                          + ["--cpu-offload", "--steps", "1"], os.path.join(tmp, "run-offload"), 100)
    check.report(f"## 3. {'tiny' if dry else '1.5B'} shape, --cpu-offload, one step ({dt:.0f} s)\n\n{summary(res)}\n\n"
                 + phase_table(res))
    # 4. the 0.5B shape at batch 64: compiled vs eager vs generate
    compiled = ["--compiled"] + (["--compile-backend", "eager"] if dry else [])        # dry run: traced only
    speed = [py, "bench/rollout_speed.py", "--workloads", "eos", "--repeats", "1", "--static", *compiled,
             "--models", "tiny" if dry else "0.5B", "--batches", "8" if dry else "64", "--new-tokens",
             "16" if dry else "256", "--json", os.path.join(tmp, "speed.json")]
    ok, out, err, dt = check.run(speed, 150, env={"TORCH_LOGS": "recompiles"})
    check.report(f"## 4. sampling at batch 64, compiled vs eager vs generate ({'ok' if ok else 'FAILED'}, {dt:.0f} s, "
                 f"compile included)\n\n```\n{out.strip()}\n```\n\n{compile_hints(err)}"
                 + ("" if ok else f"\n\n```\n{err.strip()[-1500:]}\n```"))
    # 5. batch-1 decode against the memory-bandwidth limit
    ok, out, err, dt = check.run([py, "bench/rollout_speed.py", "--workloads", "fixed", "--repeats", "1", *compiled,
                                  "--models", "tiny" if dry else "1.5B", "--batches", "1", "--new-tokens",
                                  "16" if dry else "256", "--json", os.path.join(tmp, "b1.json")], 90)
    text = f"## 5. decode at batch 1 ({'ok' if ok else 'FAILED'}, {dt:.0f} s)\n\n"
    try:
        b1 = json.load(open(os.path.join(tmp, "b1.json")))[0]
        limit = bandwidth * 1e9 / (2 * b1["params"]) if bandwidth else None
        for label, tps in (("compiled", b1["compiled_tps"]), ("eager", b1["ours_tps"])):
            text += f"batch-1 decode, {label}: {tps:.0f} tokens/s" + (
                f", {100 * tps / limit:.0f}% of the bandwidth limit of {limit:.0f} tokens/s\n" if limit else
                " (no bandwidth figure for this card)\n")
    except (OSError, IndexError, KeyError, ValueError) as e:
        text += f"no result ({type(e).__name__}): {out.strip()[-500:]} {err.strip()[-500:]}"
    check.report(text)
    shutil.rmtree(model_15, ignore_errors=True)
    # 6. train.py --compile against the same run eager, two steps each (the 0.5B shape)
    model_05 = write_model(os.path.join(tmp, "model-0.5B"), TINY if dry else recipes.SHAPES["Qwen2.5-0.5B-Instruct"])
    text = "## 6. train.py --compile, two steps, against the same two steps eager\n\n"
    flags = base(16 if dry else 256, 8 if dry else 32) + ["--steps", "2"]
    eager, dt_eager = check.train(model_05, flags, os.path.join(tmp, "run-eager"), 60)
    text += f"eager ({dt_eager:.0f} s): {summary(eager)}\n\n"
    check.report(text)                  # kept even if the compiled run is cut short
    comp, dt_comp = check.train(model_05, flags + ["--compile"], os.path.join(tmp, "run-compile"), 200,
                                env={"TORCH_LOGS": "recompiles"})
    sampling = [[r.get("sampling_s") for r in res.get("rows") or []] for res in (eager, comp)]
    ratio = (f"{sampling[0][1] / sampling[1][1]:.2f}x" if all(len(x) > 1 and x[1] for x in sampling) else "-")
    check.report(f"--compile ({dt_comp:.0f} s): {summary(comp)}\n\nsampling seconds per step, eager "
                 f"{sampling[0]}, compiled {sampling[1]}; step 2 compiled vs eager: {ratio} faster; "
                 f"{compile_hints(comp.get('stderr', ''))}")
    shutil.rmtree(model_05, ignore_errors=True)
    # 7. the recipes that fit this card, each under a cap equal to its card, while time is left
    table = ["| card (GiB) | model | flags | planned (GiB) | peak allocated (GiB) | result | s |", "|---|---|---|---|---|---|---|"]
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    done = set()
    for card in recipes.CARDS:
        for model_name in recipes.SHAPES:
            r = recipes.recipe(model_name, card)
            offload = r is not None and "--cpu-offload" in r[0]
            if r is None or r[1] != 1 or (cuda and card > total / 2**30) or (dry and offload in done):
                continue
            done.add(offload)
            host_gib = 0 if dry else r[3]                       # a dry run offloads a tiny model
            if check.end - time.perf_counter() < 30 or host_gib > 0.8 * ram_gib:
                why = "out of time" if host_gib <= 0.8 * ram_gib else f"needs {host_gib:.0f} GiB of host RAM"
                table.append(f"| {card} | {model_name} | `{r[0]}` | {r[2]:.1f} | - | skipped: {why} | - |")
                continue
            rdir = write_model(os.path.join(tmp, model_name), TINY if dry else recipes.SHAPES[model_name])
            flags = [*base(16 if dry else 256, 8 if dry else 32), *r[0].split(), "--steps", "2"]
            res, dt = check.train(rdir, flags, os.path.join(tmp, f"run-{card}-{model_name}"), 120, 0 if dry else card)
            shutil.rmtree(rdir, ignore_errors=True)
            peaks = [v for row in res.get("rows") or [] for k, v in row.items() if k.startswith("peak_")]
            table.append(f"| {card} | {model_name} | `{r[0] or '(none)'}` | {res.get('needed_gib', '-')} | "
                         f"{max(peaks) if peaks else '-'} | {'OUT OF MEMORY' if res.get('oom') else res.get('error') or 'ran'}"
                         f" | {dt:.0f} |")
    check.report("## 7. recipes under a memory cap equal to their card less the CUDA context\n\n"
                 + "\n".join(table))
    if not dry or args.out:                                     # the report is elsewhere: nothing is kept
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"written: {check.out}")
    return check.out


if __name__ == "__main__":
    main()
