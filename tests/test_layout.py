"""The layout the README promises: one concept per file, imports that point one way."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ["grpo", "rollout", "reward", "data", "train", "eval", "checkpoint", "parallel", "config", "tiny_model"]


def imports(name):
    """Every module name imported anywhere in ROOT/name.py (top level or inside functions)."""
    tree = ast.parse(open(os.path.join(ROOT, name + ".py")).read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_project_imports_have_no_cycle():
    graph = {m: {i for i in imports(m) if i in MODULES} for m in MODULES}
    done, visiting = set(), []

    def visit(m):
        assert m not in visiting, "import cycle: " + " -> ".join(visiting[visiting.index(m):] + [m])
        if m in done:
            return
        visiting.append(m)
        for n in graph[m]:
            visit(n)
        visiting.pop()
        done.add(m)
    for m in MODULES:
        visit(m)
    assert "train" not in set().union(*(graph[m] for m in MODULES if m != "train"))   # nothing imports train
    assert graph["eval"].isdisjoint({"train", "tiny_model", "config"})


def test_the_sampling_chapter_knows_nothing_of_torch_distributed():
    names = imports("rollout")
    assert not any(n.startswith("torch.distributed") or n == "parallel" for n in names), names
    assert "torch.distributed" not in open(os.path.join(ROOT, "rollout.py")).read()
