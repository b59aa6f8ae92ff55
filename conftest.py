"""Shared test fixtures. (Being at the repository root, this file also puts the project's modules,
grpo.py, rollout.py, reward.py, train.py and eval.py, on the import path of the tests.)"""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The built-in tiny model after a (short) warm start, built once per test session in a temp dir."""
    from train import Config, builtin_model_dir
    torch.set_num_threads(2)
    cfg = Config(cache_dir=str(tmp_path_factory.mktemp("cache")), warm_start_target=0.02)
    return builtin_model_dir(cfg, torch.device("cpu"), log=lambda m: None, is_main=True)
