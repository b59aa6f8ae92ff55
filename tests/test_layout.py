"""The layout the README promises: one concept per file, each with its test file, imports that point one way."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# every module of the project: the chapters, their reference pages and appendices (conftest.py is pytest's)
MODULES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py")) if not p.endswith("conftest.py"))
CHAPTERS = ["grpo", "rollout", "reward", "data", "train", "eval", "checkpoint", "parallel", "config", "plan",
            "resample", "kv_cache", "compiled", "precision", "mathparse", "tiny_model", "suite", "update", "lora"]


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


GRAPH = {m: {i for i in imports(m) if i in MODULES} for m in MODULES}


def test_every_module_is_named_here_in_the_readme_and_has_its_test_file():
    assert MODULES == sorted(CHAPTERS), "a module was added or removed: name it in CHAPTERS and the README"
    readme = open(os.path.join(ROOT, "README.md")).read()
    for m in MODULES:
        assert f"[`{m}.py`]({m}.py)" in readme, f"{m}.py is missing from the README's chapter table"
        assert os.path.exists(os.path.join(ROOT, "tests", f"test_{m}.py")), f"tests/test_{m}.py is missing"


def test_no_benchmark_or_test_file_shadows_a_module_of_the_project():
    # bench/ and tests/ go on sys.path (a script's own folder; torch.multiprocessing's spawned children
    # inherit the parent's path): a bench/lora.py there once made `import lora` load the benchmark
    for folder in ("bench", "tests"):
        names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, folder, "*.py"))}
        assert names.isdisjoint(MODULES), f"{folder}/ has a file named as a module: {names & set(MODULES)}"


def test_project_imports_have_no_cycle():
    done, visiting = set(), []

    def visit(m):
        assert m not in visiting, "import cycle: " + " -> ".join(visiting[visiting.index(m):] + [m])
        if m in done:
            return
        visiting.append(m)
        for n in GRAPH[m]:
            visit(n)
        visiting.pop()
        done.add(m)
    for m in MODULES:
        visit(m)


def test_nothing_imports_train_and_evaluation_needs_no_training_code():
    assert [m for m in MODULES if "train" in GRAPH[m]] == []
    assert GRAPH["eval"].isdisjoint({"train", "tiny_model", "config", "plan", "resample"})
    assert GRAPH["suite"].isdisjoint({"train", "tiny_model", "config", "plan", "resample"})


def test_the_sampling_chapter_knows_nothing_of_torch_distributed_or_the_compiled_path():
    for name in ("rollout", "kv_cache"):
        names = imports(name)
        assert not any(n.startswith("torch.distributed") or n == "parallel" for n in names), names
        assert "torch.distributed" not in open(os.path.join(ROOT, name + ".py")).read()
    loop = open(os.path.join(ROOT, "rollout.py")).read()
    loop = loop[loop.index("def _sample_microbatch"):loop.index("\ndef sample(")]
    assert "compile" not in loop.lower() and "Compiled" not in loop     # one loop, no compiled-path branches
    # the compiled decoder is imported only when asked for (rollout.decoder_for), by nothing at load time
    top_level = {m: {n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
                     for n in ast.parse(open(os.path.join(ROOT, m + ".py")).read()).body
                     if isinstance(n, (ast.Import, ast.ImportFrom))} for m in MODULES}
    assert [m for m in MODULES if "compiled" in top_level[m] and m != "plan"] == []


def lines_of(name):
    return sum(1 for _ in open(os.path.join(ROOT, name + ".py")))


def functions(name):
    return [n for n in ast.walk(ast.parse(open(os.path.join(ROOT, name + ".py")).read()))
            if isinstance(n, ast.FunctionDef)]


def parameters(fn):
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs] + [x.arg for x in (a.vararg, a.kwarg) if x]
    return [n for n in names if n != "self"]


def test_chapters_stay_readable_in_one_sitting():
    assert lines_of("train") <= 350, "train.py, the loop chapter, is over 350 lines"
    assert lines_of("rollout") <= 400, "rollout.py is over 400 lines"
    assert lines_of("eval") <= 240, "eval.py is over 240 lines"
    assert lines_of("grpo") <= 300, "grpo.py is over 300 lines"
    step = next(f for f in functions("train") if f.name == "train_step")
    assert step.end_lineno - step.lineno + 1 <= 35, "train_step is over 35 lines: one named call per step"


def test_no_function_takes_more_than_ten_parameters():
    """Settings travel as one value (config.Config, rollout.Sampling), not as long parameter lists;
    grpo_loss's ten are the objective's own."""
    wide = [f"{m}.{f.name}" for m in MODULES for f in functions(m) if len(parameters(f)) > 10]
    assert wide == []
