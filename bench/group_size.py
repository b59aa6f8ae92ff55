"""Reproduce "It Takes Two" (arXiv 2510.00977) at toy scale: 2-GRPO vs 16-GRPO on the built-in task.

    python bench/group_size.py --quick        # under 5 minutes on 2 CPU cores
    python bench/group_size.py --no-map       # the full run of the arms, about 35 minutes
    python bench/group_size.py                # with the lr x epochs map and the aggregation arms, ~70 minutes

The paper's protocol, scaled to the built-in task (2-digit addition, the tiny warm-started model):
  * 16-GRPO: P prompts x 16 rollouts per step, learning rate lr.
  * 2-GRPO:  8P prompts x 2 rollouts per step, learning rate 8 lr (8x the lr for 8x fewer steps).
  * both: the same training prompts for the same number of epochs, so the same rollouts per step
    (16P) and 1/8 of the rollouts in total for 2-GRPO; constant lr, clip 0.2 / 0.28, rollout
    temperature 1; evaluation Mean@k and Pass@k at temperature 0.7, top-p 0.8, top-k 20.
  * the ablation G = 4 and 8 (P * 16 / G prompts, lr * 16 / G, same epochs), and online DPO on the
    2-rollout pairs (--loss dpo, frozen warm-start reference, beta 0.1) with the 2-GRPO settings.
  * beyond the rule: 2-GRPO with 16-GRPO's lr and number of steps (8P x 2 per step, so the same
    rollouts and 8x the epochs), which compares group sizes at an equal rollout budget.
  * the paper's 2-GRPO+RS (--resample fresh: tied pairs are replaced by pairs of the data stream's next
    prompts, up to 16-GRPO's rollouts per step), with the 2-GRPO settings, and with 16-GRPO's lr.
  * where the rule holds (--map-seeds): 2-GRPO with 1/8 of 16-GRPO's rollouts, lr x {1, 2, 4, 8},
    for several epoch counts, each relative to 16-GRPO at the same epochs (a table and a heat map);
  * which normalisation (--map-seeds): the three loss aggregations at G = 2 (equal rollouts) and
    G = 16, with the mean completion length of the last training steps.
P and lr were tuned once, for the 16-GRPO arm only (see BASE_LR); every other arm follows the rule.
Every arm starts from the same warm-start model and runs with each of --seeds seeds.

Beyond the paper, the variance argument: at the warm-start model, the GRPO gradient is estimated
many times with G = 2 (128 prompts) and G = 16 (16 prompts), 256 rollouts each, and compared with a
reference gradient (the mean of independent G = 16 estimates): relative squared distance and cosine.

Writes to --out (default runs/group_size): results.md (the table), results.json, curves.png (if
matplotlib is installed: accuracy vs rollouts and vs training seconds, mean and min-max band over
seeds), and each arm's run directory.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import train  # noqa: E402
import update  # noqa: E402
from config import Config  # noqa: E402
from data import build_prompts, tiny_task_problems  # noqa: E402
from eval import evaluate  # noqa: E402
from tiny_model import builtin_model_dir  # noqa: E402
from rollout import Sampling, sample  # noqa: E402
from grpo import group_advantages  # noqa: E402
from reward import rewards  # noqa: E402

BASE_P = 16          # prompts per step of the 16-GRPO arm: 16 x 16 = 256 rollouts per step
BASE_LR = 5e-5       # lr of the 16-GRPO arm, tuned once (docs/reproduce.md: 2.5e-5 to 2e-4 were within noise for it)
PAPER = {"acc": 0.976, "rollouts": 0.125, "time": 0.21}


RS = {"resample": "fresh"}         # the paper's: refills from the data stream, up to 16-GRPO's rollouts


def arms(include_dpo=True):
    """(name, G, loss, lr multiplier, epochs multiplier, other settings). The paper's rule: P * 16 / G
    prompts per step, lr * 16 / G, the same epochs. "2-GRPO, equal rollouts" keeps 16-GRPO's lr and
    step count instead (so 8x the epochs): the same rollouts and compute, only the group size differs.
    2-GRPO+RS spends up to 8x 2-GRPO's rollouts per step (16-GRPO's), so its arm with 16-GRPO's lr keeps
    the rule's steps: about 16-GRPO's rollouts."""
    out = [("16-GRPO", 16, "grpo", 1, 1, {}), ("8-GRPO", 8, "grpo", 2, 1, {}), ("4-GRPO", 4, "grpo", 4, 1, {}),
           ("2-GRPO", 2, "grpo", 8, 1, {})]
    if include_dpo:
        out.append(("2-DPO", 2, "dpo", 8, 1, {}))
    out += [("2-GRPO, equal rollouts", 2, "grpo", 1, 8, {}), ("2-GRPO+RS", 2, "grpo", 8, 1, RS),
            ("2-GRPO+RS, lr x1", 2, "grpo", 1, 1, RS)]
    return out


def run_arm(name, G, loss, seed, args, model_dir, held_out, tok, lr_mult=None, epoch_mult=1, **over):
    P = BASE_P * 16 // G
    steps = math.ceil(epoch_mult * args.epochs * args.prompts / P)
    eval_every = max(1, steps // args.curve_points)
    lr = args.base_lr * (16 / G if lr_mult is None else lr_mult)
    cfg = Config(model=model_dir, group_size=G, prompts_per_step=P, lr=lr, loss=loss,
                       steps=steps, train_problems=args.prompts, eval_every=eval_every,
                       eval_problems=args.eval_problems, save_every=10 ** 9, progress=False, seed=seed,
                       max_new_tokens=8, dpo_beta=0.1, dpo_ref="initial", **over,
                       out_dir=os.path.join(args.out, f"{name.replace(', ', '-').replace(' ', '-')}-seed{seed}"))
    summary = train.train(cfg)
    with open(os.path.join(cfg.out_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train_s = sum(r["step_s"] for r in rows)
    curve = [(0, 0.0, summary["held_out_before"])]
    elapsed = 0.0
    for r in rows:
        elapsed += r["step_s"]
        if "held_out_acc" in r:
            curve.append((r["rollouts"], elapsed, r["held_out_acc"]))
    curve.append((summary["rollouts"], train_s, summary["held_out_after"]))
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(os.path.join(cfg.out_dir, "model")).eval()
    res = evaluate(model, tok, held_out, Sampling(max_new_tokens=8, temperature=0.7, top_p=0.8, top_k=20, max_rows=512),
                   samples=args.k, seed=seed, progress=False)
    return {"arm": name, "G": G, "seed": seed, "steps": steps, "lr": cfg.lr, "prompts_per_step": P,
            "mean@k": res[f"mean@{args.k}"], "pass@k": res[f"pass@{args.k}"], "rollouts": summary["rollouts"],
            "train_s": train_s, "greedy_after": summary["held_out_after"],
            "discard_rate": statistics.mean(r["tie_frac"] for r in rows), "curve": curve,
            "informative_share": statistics.mean(r["informative_share"] for r in rows),
            "response_len": statistics.mean(r["response_len"] for r in rows[-max(1, len(rows) // 10):])}


def gradient_estimates(model, tok, problems, G, n_estimates, seed0, budget=256):
    """n_estimates flattened GRPO gradients, each from budget rollouts (budget / G prompts x G)."""
    cfg = Config(group_size=G, micro_batch_size=budget, grad_clip=0.0, max_new_tokens=8, skip_ties=False)
    P = budget // G
    g = torch.Generator().manual_seed(seed0)
    out = []
    for i in range(n_estimates):
        idx = torch.randperm(len(problems), generator=g)[:P].tolist()
        probs = [problems[j] for j in idx]
        ro = sample(model, [p["prompt_ids"] for p in probs], n=G, sampling=Sampling(max_new_tokens=8),
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, seed=seed0 * 100_000 + i,
                    tokenizer=tok)
        r = torch.tensor(rewards(ro.texts, [p["gold"] for p in probs for _ in range(G)]))
        batch = update.make_batch(probs, ro, r, group_advantages(r, G), cfg, pad_token_id=tok.pad_token_id)
        model.train()
        model.zero_grad(set_to_none=True)
        update.accumulate_gradients(model, batch, cfg)           # the gradient, in p.grad (no step)
        out.append(torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
                              for p in model.parameters()]))
    model.eval()
    return torch.stack(out)


def variance_study(model_dir, n, tok, problems):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = gradient_estimates(model, tok, problems, 16, n, seed0=999).mean(0)
    out = {}
    for G in (2, 16):
        est = gradient_estimates(model, tok, problems, G, n, seed0=G)
        rel = ((est - ref) ** 2).sum(1) / (ref ** 2).sum()
        cos = torch.nn.functional.cosine_similarity(est, ref[None], dim=1)
        out[G] = {"rel_sq_dist": rel.mean().item(), "rel_sq_dist_std": rel.std().item(),
                  "cosine": cos.mean().item(), "cosine_std": cos.std().item(), "estimates": n}
    return out


def fmt(xs, pct=True):
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.1f} ± {s:.1f}"


def write_table(results, var, args, path, rule=(), aggs=()):
    by_arm = {}
    for r in results:
        by_arm.setdefault(r["arm"], []).append(r)
    base = by_arm["16-GRPO"]
    base_acc = statistics.mean(r["mean@k"] for r in base)
    base_roll = statistics.mean(r["rollouts"] for r in base)
    base_time = statistics.mean(r["train_s"] for r in base)
    k = args.k
    lines = [f"Built-in task, {args.prompts} training prompts x {args.epochs} epochs, {len(args.seeds)} seeds "
             f"(mean ± std); held-out {args.eval_problems} problems; Mean@{k} / Pass@{k} at T 0.7, top-p 0.8, top-k 20.",
             "",
             f"| arm | prompts x G per step | lr | steps | Mean@{k} % | Pass@{k} % | greedy % | rollouts | train s "
             f"| discard rate | informative share trained | acc vs 16-GRPO | rollouts vs 16 | time vs 16 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, rs in by_arm.items():
        r0 = rs[0]
        acc = statistics.mean(r["mean@k"] for r in rs) / max(base_acc, 1e-9)
        roll = statistics.mean(r["rollouts"] for r in rs) / base_roll
        tim = statistics.mean(r["train_s"] for r in rs) / base_time
        lines.append(f"| {arm} | {r0['prompts_per_step']} x {r0['G']} | {r0['lr']:.1e} | {r0['steps']} "
                     f"| {fmt([r['mean@k'] for r in rs])} | {fmt([r['pass@k'] for r in rs])} "
                     f"| {fmt([r['greedy_after'] for r in rs])} | {r0['rollouts']} "
                     f"| {fmt([r['train_s'] for r in rs], pct=False)} | {fmt([r['discard_rate'] for r in rs])} "
                     f"| {fmt([r.get('informative_share', float('nan')) for r in rs])} "
                     f"| {100 * acc:.1f}% | {100 * roll:.1f}% | {100 * tim:.1f}% |")
    lines += ["", f"Paper (Qwen-Math, MATH-500 / AMC / AIME): 2-GRPO keeps {100 * PAPER['acc']:.1f}% of 16-GRPO's "
              f"Mean@32 with {100 * PAPER['rollouts']:.1f}% of the rollouts and {100 * PAPER['time']:.0f}% of the time."]
    if var:
        lines += ["", "Gradient estimates at the warm-start model, 256 rollouts each, against a reference gradient "
                  f"(mean of {var[16]['estimates']} independent 16-GRPO estimates):", "",
                  "| estimator | relative squared distance to reference | cosine to reference |", "|---|---|---|"]
        for G in (2, 16):
            v = var[G]
            lines.append(f"| G = {G} ({256 // G} prompts x {G}) | {v['rel_sq_dist']:.2f} ± {v['rel_sq_dist_std']:.2f} "
                         f"| {v['cosine']:.3f} ± {v['cosine_std']:.3f} |")
    if rule:
        epochs = sorted({r["epochs"] for r in rule})
        lines += ["", f"Where the rule holds: 2-GRPO with 1/8 of 16-GRPO's rollouts (128 x 2 per step, the same epochs), "
                  f"Mean@{k} relative to 16-GRPO at the same epochs; seeds {sorted({r['seed'] for r in rule})}:", "",
                  "| lr multiplier | " + " | ".join(f"{E} epochs" for E in epochs) + " |",
                  "|---|" + "---|" * len(epochs)]
        for m in (1, 2, 4, 8):
            cells = []
            for E in epochs:
                rs = [r for r in rule if r["epochs"] == E and r["lr_mult"] == m]
                cells.append(f"{100 * statistics.mean(r['mean@k'] / max(r['base'], 1e-9) for r in rs):.0f}%"
                             f" ({100 * statistics.mean(r['mean@k'] for r in rs):.1f} vs "
                             f"{100 * statistics.mean(r['base'] for r in rs):.1f})")
            lines.append(f"| x{m} | " + " | ".join(cells) + " |")
    if aggs:
        lines += ["", f"Which normalisation: the loss aggregations at an equal rollout budget (2-GRPO: 128 x 2 at "
                  f"16-GRPO's lr and steps); Mean@{k} and the mean completion length (tokens) of the last 10% of "
                  f"training steps; seeds {sorted({r['seed'] for r in aggs})}:", "",
                  f"| aggregation | G = 2 Mean@{k} % | G = 2 length | G = 16 Mean@{k} % | G = 16 length |",
                  "|---|---|---|---|---|"]
        for agg in ("seq_mean", "token_mean", "seq_sum"):
            cells = []
            for G in (2, 16):
                rs = [r for r in aggs if r["G"] == G and r["aggregation"] == agg]
                cells += [fmt([r["mean@k"] for r in rs]), f"{statistics.mean(r['response_len'] for r in rs):.2f}"]
            lines.append(f"| {agg} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    by_arm = {}
    for r in results:
        by_arm.setdefault(r["arm"], []).append(r)
    for arm, rs in by_arm.items():
        n = min(len(r["curve"]) for r in rs)
        for ax, col in ((axes[0], 0), (axes[1], 1)):
            xs = [statistics.mean(r["curve"][i][col] for r in rs) for i in range(n)]
            ys = [[r["curve"][i][2] for r in rs] for i in range(n)]
            mean = [statistics.mean(y) for y in ys]
            line, = ax.plot(xs, mean, marker="o", ms=3, label=arm)
            ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(), alpha=0.15)
    axes[0].set_xlabel("rollouts used")
    axes[1].set_xlabel("training seconds")
    for ax in axes:
        ax.set_ylabel("held-out accuracy (greedy)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Group size on the built-in task: mean and min-max over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def heat_map(rule, args, path):
    """Mean@k of 2-GRPO (1/8 of the rollouts) relative to 16-GRPO at the same epochs: lr x epochs."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs, mults = sorted({r["epochs"] for r in rule}), [1, 2, 4, 8]
    grid = [[statistics.mean(r["mean@k"] / max(r["base"], 1e-9) for r in rule if r["epochs"] == E and r["lr_mult"] == m)
             for E in epochs] for m in mults]
    fig, ax = plt.subplots(figsize=(1.6 * len(epochs) + 2, 4))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(1.1, max(max(row) for row in grid)), origin="lower")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{100 * v:.0f}%", ha="center", va="center", color="w" if v < 0.7 else "k")
    ax.set_xticks(range(len(epochs)), [f"{E} epochs" for E in epochs])
    ax.set_yticks(range(len(mults)), [f"lr x{m}" for m in mults])
    ax.set_title(f"2-GRPO (1/8 rollouts) Mean@{args.k} / 16-GRPO's")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run: about 5 minutes on 2 CPU cores")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of the main arms (quick 0 1, full 0 1 2)")
    ap.add_argument("--prompts", type=int, default=None, help="training prompts (quick 1024, full 4096)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs over them (quick 2, full 4)")
    ap.add_argument("--base-lr", type=float, default=BASE_LR, help="lr of the 16-GRPO arm")
    ap.add_argument("--k", type=int, default=None, help="samples per problem for Mean@k / Pass@k (quick 4, full 16)")
    ap.add_argument("--eval-problems", type=int, default=None, help="held-out problems (quick 200, full 500)")
    ap.add_argument("--curve-points", type=int, default=4)
    ap.add_argument("--variance-estimates", type=int, default=None, help="gradient estimates per G (quick 8, full 32)")
    ap.add_argument("--no-dpo", action="store_true")
    ap.add_argument("--no-map", action="store_true", help="skip the lr x epochs map and the aggregation arms")
    ap.add_argument("--arms", nargs="+", default=None, help="run only these arms (names as in the table; 16-GRPO, "
                                                            "the baseline, always runs), no map and no variance study")
    ap.add_argument("--map-seeds", type=int, nargs="+", default=[0], help="seeds of the map and aggregation arms")
    ap.add_argument("--map-epochs", type=int, nargs="+", default=None, help="epochs of the map (quick 1 2, full 2 4 8)")
    ap.add_argument("--out", default="runs/group_size")
    ap.add_argument("--replot", action="store_true", help="redo the table and plots from --out's results.json")
    args = ap.parse_args()
    if args.replot:
        saved = json.load(open(os.path.join(args.out, "results.json")))
        args = argparse.Namespace(**{**saved["args"], "out": args.out})
        variance = {int(G): v for G, v in saved["variance"].items()}            # JSON keys are strings
        print(write_table(saved["results"], variance, args, os.path.join(args.out, "results.md"),
                          saved["rule"], saved["aggregations"]))
        plot(saved["results"], os.path.join(args.out, "curves.png"))
        if saved["rule"]:
            heat_map(saved["rule"], args, os.path.join(args.out, "rule_map.png"))
        return
    q = args.quick
    args.prompts = args.prompts or (1024 if q else 4096)
    args.epochs = args.epochs or (2 if q else 4)
    args.k = args.k or (4 if q else 16)
    args.eval_problems = args.eval_problems or (200 if q else 500)
    args.variance_estimates = args.variance_estimates or (8 if q else 32)
    args.map_epochs = args.map_epochs or ([1, 2] if q else [2, 4, 8])
    args.seeds = args.seeds or ([0, 1] if q else [0, 1, 2])
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    import transformers
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()

    # one warm-start model for every arm (the one `python train.py` uses, cached in .cache/)
    model_dir = builtin_model_dir(Config().cache_dir)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    split = tiny_task_problems()
    held_out = build_prompts(split["test"][:args.eval_problems], tok, "raw", builtin=True)
    results = []
    done = {}                                   # an arm with the same settings runs once

    def run(name, G, loss, lr_mult, epoch_mult, over, seed):
        key = json.dumps([G, loss, float(lr_mult), float(epoch_mult), over, seed], sort_keys=True)
        if key in done:
            return done[key]
        r = done[key] = run_arm(name, G, loss, seed, args, model_dir, held_out, tok, lr_mult, epoch_mult, **over)
        print(f"{name:8s} seed {seed}: Mean@{args.k} {100 * r['mean@k']:.1f}%  Pass@{args.k} {100 * r['pass@k']:.1f}%  "
              f"greedy {100 * r['greedy_after']:.1f}%  rollouts {r['rollouts']}  train {r['train_s']:.0f} s  "
              f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
        return r
    for name, G, loss, lr_mult, epoch_mult, over in arms(not args.no_dpo):
        if args.arms and name not in args.arms + ["16-GRPO"]:
            continue
        for seed in args.seeds:
            results.append(run(name, G, loss, lr_mult, epoch_mult, over, seed))
    # where does the paper's rule hold, and which normalisation: 2-GRPO with 1/8 of the rollouts at
    # lr x m for E epochs against 16-GRPO at E epochs; the aggregations at G = 2 and 16
    rule, aggs = [], []
    for seed in [] if args.no_map or args.arms else args.map_seeds:
        for E in args.map_epochs:
            base = run(f"16-GRPO, {E} epochs", 16, "grpo", 1, E / args.epochs, {}, seed)
            for m in (1, 2, 4, 8):
                r = run(f"2-GRPO, lr x{m}, {E} epochs", 2, "grpo", m, E / args.epochs, {}, seed)
                rule.append({"epochs": E, "lr_mult": m, "seed": seed, "mean@k": r["mean@k"], "base": base["mean@k"]})
        for G, epoch_mult in ((2, 8), (16, 1)):
            for agg in ("seq_mean", "token_mean", "seq_sum"):
                over = {"aggregation": agg} if agg != "seq_mean" else {}       # seq_mean: the arms above
                r = run(f"{G}-GRPO, {agg}", G, "grpo", 1, epoch_mult, over, seed)
                aggs.append({"G": G, "aggregation": agg, "seed": seed, "mean@k": r["mean@k"],
                             "response_len": r["response_len"], "rollouts": r["rollouts"]})
    train_problems = build_prompts(split["train"][:args.prompts], tok, "raw", builtin=True)
    var = None if args.arms else variance_study(model_dir, args.variance_estimates, tok, train_problems)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "results": results, "variance": var, "rule": rule, "aggregations": aggs},
                  f, indent=1)
    print(write_table(results, var, args, os.path.join(args.out, "results.md"), rule, aggs))
    if plot(results, os.path.join(args.out, "curves.png")):
        print(f"plot: {os.path.join(args.out, 'curves.png')}")
    if rule and heat_map(rule, args, os.path.join(args.out, "rule_map.png")):
        print(f"heat map: {os.path.join(args.out, 'rule_map.png')}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
