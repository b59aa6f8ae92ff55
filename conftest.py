"""Shared test fixtures. (Being at the repository root, this file also puts the project's modules on
the import path of the tests.)"""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The built-in tiny model after a (short) warm start, built once per test session in a temp dir."""
    from tiny_model import builtin_model_dir
    torch.set_num_threads(2)
    return builtin_model_dir(str(tmp_path_factory.mktemp("cache")), seed=0, target=0.02, log=lambda m: None)
