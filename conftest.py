# Lets the tests import the project's top-level modules (grpo.py, rollout.py, ...) from any directory.
