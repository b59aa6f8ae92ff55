"""bench/lora_vs_full.py runs each arm (full fine-tuning, LoRA) as the default run in a fresh process and puts
them in one table, LoRA's accuracy relative to full fine-tuning's measured in the same run."""

import os

from helpers import bench_module


def test_the_lora_table_has_every_arm_with_its_accuracy_time_and_memory(tiny_model_dir, capsys):
    bench = bench_module("lora_vs_full")
    cache = os.path.dirname(os.path.dirname(tiny_model_dir))                    # the fixture's warm start
    results, lines = bench.main(["--ranks", "2", "--seeds", "0", "--steps", "2", "--cache-dir", cache,
                                 "--warm-start-target", "0.02", "--eval-problems", "16", "--saved-ranks", "2",
                                 "--modules-to-save", "norm"])
    assert [name for name, _ in results] == ["full fine-tuning", "full fine-tuning, adapted weights only",
                                             "LoRA r 2", "LoRA r 2, norm trained"]
    assert [lr for _, lr in results] == [2e-4, 2e-4, 2e-4 * bench.LORA_LR, 2e-4 * bench.LORA_LR]
    for rows in results.values():
        (acc, wall, peak), = rows
        assert 0 <= acc <= 1 and wall > 0 and peak > 100           # a whole training process, in MB
    assert lines[-4].startswith("| full fine-tuning | 2e-04 |")
    assert lines[-3].startswith("| full fine-tuning, adapted weights only | 2e-04 |")
    assert lines[-2].startswith("| LoRA r 2 |")
    assert lines[-1].startswith("| LoRA r 2, norm trained |")


def test_the_weights_only_arm_trains_what_lora_adapts_and_nothing_else(tiny_model_dir):
    """Full fine-tuning restricted to the weights LoRA may change: the 7 Linears of each of the tiny
    model's 2 layers; the embedding (tied to the head), the norms and q, k, v's biases stay frozen."""
    from data import load_model_and_tokenizer
    bench = bench_module("lora_vs_full")
    model, _ = bench.train_adapted_weights_only(*load_model_and_tokenizer(tiny_model_dir))
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert len(trained) == 2 * 7
    assert all(name.endswith("_proj.weight") for name in trained)
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trained == 2 * (4 * 128 * 128 + 3 * 128 * 512)      # per layer: q, k, v, o; gate, up, down
