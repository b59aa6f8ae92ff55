"""config.py: every knob of a training run, its default and its meaning; the command line.

Reference page of the tutorial (train.py reads these fields). The command line is generated from
the one dataclass below: every field is a --flag with the same name (underscores as dashes) and the
same default, booleans also take --no-...; the flag table of docs/training.md is this file, and a
test keeps them equal.
"""

import argparse
import dataclasses
from dataclasses import dataclass, field

from grpo import ADVANTAGE_MODES, AGGREGATIONS
from lora import DEFAULT_TARGETS
from precision import PRECISIONS


def flag(default, help):
    """A field of Config: its default and the help line --help and the flags table print."""
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # model and data
    model: str = flag("", "model directory or hub id; empty: the built-in tiny model")
    data: str = flag("", "training JSONL; empty: the built-in addition task")
    train_problems: int = flag(0, "use only the first N training problems; 0: all")
    eval_data: str = flag("", "held-out JSONL; default: built-in held-out split")
    problem_field: str = flag("", "problem field; empty: 'problem', else 'question'")
    answer_field: str = flag("answer", "answer field (GSM8K's '#### N' is understood)")
    template: str = flag("auto", "auto|chat|plain|raw (see build_prompts)")
    max_prompt_tokens: int = flag(1024, "longer prompts are left out, with a count")
    out_dir: str = flag("runs/default", "metrics, config, checkpoint, final model")
    cache_dir: str = flag(".cache", "where the tiny model and its warm start live")
    # algorithm
    loss: str = flag("grpo", "grpo, or dpo: online DPO on 2-rollout pairs")
    group_size: int = flag(2, "G, rollouts per prompt")
    prompts_per_step: int = flag(128, "P, prompts per step (over all ranks)")
    steps: int = flag(1200, "optimizer steps (each on P * G fresh rollouts)")
    num_iterations: int = flag(1, "policy updates per rollout batch (mu)")
    advantage: str = flag("group", "group | center | batch (grpo.group_advantages)")
    aggregation: str = flag("seq_mean", "seq_mean | token_mean | seq_sum (grpo.grpo_loss)")
    eps_low: float = flag(0.2, "clip range below 1")
    eps_high: float = flag(0.28, "clip range above 1 (0.28: the paper's)")
    beta: float = flag(0.0, "KL weight; a reference model is loaded only if > 0")
    dpo_beta: float = flag(0.1, "beta of the DPO loss")
    dpo_ref: str = flag("initial", "DPO reference: initial (a frozen copy of the start model) or old "
                        "(pi_old: the update's own log-probs before it)")
    skip_ties: bool = flag(True, "do not run zero-advantage rollouts through the backward (a pure speed-up: "
                           "same loss and gradient)")
    filter_ties: bool = flag(False, "DAPO's filter: average the loss over informative groups only (scales "
                             "the step by 1/(1 - ties))")
    resample: str = flag("off", "2-GRPO+RS: where pairs tie, draw more groups: off | fresh (the data "
                         "stream's next prompts) | same (the tied prompts again)")
    resample_budget: float = flag(7.0, "--resample's extra rollouts per step at most, as a multiple of P * G "
                                  "(7: 16-GRPO's at G = 2, the paper's cap)")
    # sampling
    max_new_tokens: int = flag(0, "completion length cap; 0: 8 built-in, 1024 with --data")
    temperature: float = flag(1.0, "rollout temperature")
    top_p: float = flag(1.0, "rollout nucleus sampling; 1: off")
    top_k: int = flag(0, "rollout top-k sampling; 0: off")
    compile: bool = flag(False, "sample with the compiled decode path (compiled.py; CUDA graphs on CUDA): "
                         "same sampling, the first steps compile")
    # optimization
    lr: float = flag(0.0, "AdamW learning rate; 0: 2e-4 (the tiny model's; ~1e-6 for 1B+), x LORA_LR with "
                     "--lora-rank (config.learning_rate_of)")
    weight_decay: float = flag(0.0, "AdamW weight decay")
    warmup_steps: int = flag(0, "linear warm-up steps")
    schedule: str = flag("constant", "constant | cosine | linear after warm-up")
    grad_clip: float = flag(1.0, "max gradient norm; 0 disables")
    micro_batch_size: int = flag(256, "sequences per forward/backward")
    rollout_batch_size: int = flag(0, "max sequences sampled together; 0: all")
    gradient_checkpointing: bool = flag(False, "recompute activations in the backward")
    lora_rank: int = flag(0, "LoRA: train rank-R adapters beside the frozen model (lora.py); 0: full "
                          "fine-tuning")
    lora_alpha: float = flag(32.0, "LoRA's alpha: the adapters' output is scaled by alpha / rank")
    lora_targets: str = flag(",".join(DEFAULT_TARGETS), "LoRA: the Linear layers adapted, by name, "
                             "comma-separated (default: every Linear of attention and the MLP)")
    lora_modules_to_save: str = flag("", "LoRA: modules trained in full beside the adapters, by name, comma-"
                                     "separated (PEFT's modules_to_save), e.g. embed_tokens,input_layernorm,"
                                     "post_attention_layernorm,norm; empty: only the adapters train")
    fsdp: bool = flag(False, "under torchrun: shard weights, gradients and optimizer state across ranks "
                      "(FSDP2) instead of DDP")
    cpu_offload: bool = flag(False, "FSDP2's CPU offload: weights, gradients and AdamW state in host memory, "
                             "a layer at a time on the GPU (one GPU needs no torchrun)")
    logprob_chunk: int = flag(0, "positions per log-softmax chunk; 0: all at once")
    dtype: str = flag("auto", "auto (mixed on CUDA, else float32) | float32 | mixed (fp32 weights, bf16 "
                      "autocast) | bfloat16 (precision.py)")
    seed: int = flag(0, "seeds the warm start, data order and sampling")
    device: str = flag("auto", "auto | cpu | cuda | cuda:N")
    # evaluation, logging, checkpoints
    eval_every: int = flag(200, "held-out evaluation every N steps; 0: start and end only")
    eval_problems: int = flag(500, "held-out problems evaluated (first N)")
    eval_samples: int = flag(1, "k; 1 with eval_temperature 0 is greedy accuracy")
    eval_temperature: float = flag(0.0, "held-out sampling temperature; 0: greedy")
    eval_top_p: float = flag(1.0, "held-out nucleus sampling (the paper: 0.8)")
    eval_top_k: int = flag(0, "held-out top-k sampling (the paper: 20)")
    save_every: int = flag(200, "checkpoint every N steps (and at the end)")
    save: bool = flag(True, "write checkpoints and the final model (--no-save: a throwaway run, as the GPU "
                      "check's)")
    resume: bool = flag(False, "continue from out_dir/checkpoint.pt (the settings that define the run must "
                        "be the same)")
    overwrite: bool = flag(False, "start over in an out_dir that holds a run, deleting it (without: an "
                           "unfinished run is refused, a finished one moved aside to out_dir.1)")
    warm_start_target: float = flag(0.2, "built-in task: supervised warm start until validation accuracy "
                                    "passes this")
    progress: bool = flag(True, "show progress bars")
    # memory planning (plan.py)
    plan: bool = flag(False, "print the memory the run needs at its peak (config.json only, no weights) and "
                      "exit")
    gpu_memory: float = field(default=0.0, metadata={"type": "positive", "help": "GiB of the card: --plan "
                                                     "says whether the run fits and which flags make it fit"})


CHOICES = {"loss": ("grpo", "dpo"), "advantage": ADVANTAGE_MODES, "aggregation": AGGREGATIONS,
           "schedule": ("constant", "cosine", "linear"), "template": ("auto", "chat", "plain", "raw"),
           "dpo_ref": ("initial", "old"), "resample": ("off", "fresh", "same"), "dtype": PRECISIONS}


def parse_args(argv=None, description=None):
    """argparse over Config: every field is a --flag with its default; booleans take --x / --no-x."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "") + f" (default: {f.default!r})"
        if f.type is bool or f.type == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=helptext)
        else:
            kind = positive if f.metadata.get("type") == "positive" else type(f.default)
            ap.add_argument(flag, type=kind, default=f.default, help=helptext)   # values: check_config
    cfg = Config(**vars(ap.parse_args(argv)))
    check_config(cfg)
    return cfg


def positive(text):
    """argparse type of a positive number (--gpu-memory): anything else is one clear line."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give the card's memory in GiB, a positive number")
    return value


# the range of every number: (test, what the error says)
AT_LEAST_0 = (lambda x: x >= 0, ">= 0")
AT_LEAST_1 = (lambda x: x >= 1, ">= 1")
ABOVE_0 = (lambda x: x > 0, "> 0")
IN_0_1 = (lambda x: 0 < x <= 1, "in (0, 1]")
RANGES = {"train_problems": AT_LEAST_0, "max_prompt_tokens": AT_LEAST_1,
          "prompts_per_step": AT_LEAST_1, "steps": AT_LEAST_1, "num_iterations": AT_LEAST_1,
          "lora_rank": AT_LEAST_0, "lora_alpha": ABOVE_0,
          "eps_low": (lambda x: 0 <= x < 1, "in [0, 1)"), "eps_high": AT_LEAST_0, "beta": AT_LEAST_0,
          "dpo_beta": ABOVE_0, "resample_budget": AT_LEAST_0, "max_new_tokens": AT_LEAST_0,
          "top_p": IN_0_1, "top_k": AT_LEAST_0, "weight_decay": AT_LEAST_0,
          "warmup_steps": AT_LEAST_0, "lr": AT_LEAST_0,
          "grad_clip": AT_LEAST_0, "micro_batch_size": AT_LEAST_1, "rollout_batch_size": AT_LEAST_0,
          "logprob_chunk": AT_LEAST_0, "eval_every": AT_LEAST_0, "eval_problems": AT_LEAST_0,
          "eval_samples": AT_LEAST_1, "eval_temperature": AT_LEAST_0, "eval_top_p": IN_0_1,
          "eval_top_k": AT_LEAST_0,
          "save_every": AT_LEAST_1, "warm_start_target": (lambda x: 0 <= x < 1, "in [0, 1)")}


# LoRA's default learning rate, as a multiple of full fine-tuning's: "LoRA Without Regret" finds about
# 10x for pretrained models; on the built-in task rank 32 does best at 3x (`python bench/lora_vs_full.py --ranks 32
# --seeds 0 --lr-multipliers 2 3 5 10`: 74.2%, 75.6%, 66.4% held-out, collapsed at 10x; docs/training.md)
LORA_LR = 3.0


def names(flag):
    """The names a comma-separated flag gives (--lora-targets, --lora-modules-to-save): "a, b," -> [a, b]."""
    return [n.strip() for n in flag.split(",") if n.strip()]


def learning_rate_of(cfg):
    """--lr, or when it is 0 the default: 2e-4 (the built-in tiny model's), times LORA_LR with --lora-rank."""
    return cfg.lr or 2e-4 * (LORA_LR if cfg.lora_rank else 1.0)


def check_config(cfg, world=1):
    """Refuse settings that cannot work, before anything is loaded: one line naming every problem."""
    problems = [f"--{k.replace('_', '-')} must be one of {', '.join(v)}" for k, v in CHOICES.items()
                if getattr(cfg, k) not in v]
    problems += [f"--{k.replace('_', '-')} {getattr(cfg, k)} must be {what}"
                 for k, (ok, what) in RANGES.items() if not ok(getattr(cfg, k))]
    if cfg.temperature < 0:
        problems.append(f"--temperature {cfg.temperature} must be > 0")
    if cfg.temperature == 0:
        problems.append("--temperature 0 samples greedily: both rollouts of a prompt are the same, every "
                        "pair ties and nothing is learned (use 1.0, the paper's; --eval-temperature 0 is "
                        "greedy evaluation)")
    if cfg.loss == "dpo" and cfg.group_size != 2:
        problems.append("--loss dpo trains on 2-rollout pairs: use --group-size 2")
    if cfg.group_size < 2:
        problems.append(f"--group-size {cfg.group_size} must be at least 2 (advantages are relative to the "
                        f"group)")
    if cfg.eval_samples > 1 and cfg.eval_temperature == 0:
        problems.append("--eval-samples > 1 needs --eval-temperature > 0 (greedy samples are identical)")
    if (cfg.data or cfg.eval_data) and not cfg.model:
        problems.append("--data / --eval-data need --model: the built-in tiny model knows only the built-in "
                        "addition task (an 18-token character vocabulary); pass a model directory or hub id")
    if cfg.compile and (cfg.fsdp or cfg.cpu_offload):
        problems.append("--compile does not go with --fsdp or --cpu-offload (FSDP's hooks run inside the "
                        "forward it would compile)")
    if cfg.prompts_per_step % world:
        problems.append(f"--prompts-per-step {cfg.prompts_per_step} must divide by the {world} ranks")
    if cfg.lora_rank and cfg.cpu_offload:
        problems.append("--lora-rank does not go with --cpu-offload: LoRA's frozen bf16 base and small "
                        "adapters fit a card without streaming the model (--plan says which fits)")
    if cfg.lora_rank and not names(cfg.lora_targets):
        problems.append("--lora-targets names no layer")
    if names(cfg.lora_modules_to_save) and not cfg.lora_rank:
        problems.append("--lora-modules-to-save trains modules beside LoRA's adapters: it needs --lora-rank "
                        "(without it every module trains)")
    if names(cfg.lora_modules_to_save) and cfg.fsdp:
        problems.append("--lora-modules-to-save does not go with --fsdp (the modules' base values, which the "
                        "reference reads, are not sharded): use DDP, or LoRA alone under --fsdp")
    if cfg.resume and cfg.overwrite:
        problems.append("--resume continues the run in --out-dir and --overwrite deletes it: give one")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))
