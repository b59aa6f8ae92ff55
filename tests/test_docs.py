"""The pages a user reads: every relative link and image in README.md, docs/ and data/README.md
resolves, and every `python <script> --flag ...` command in them names a script that exists and flags
that its --help lists."""

import functools
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(["README.md", "data/README.md"] + [os.path.relpath(p, ROOT) for p in glob.glob(
    os.path.join(ROOT, "docs", "*.md"))])


def read(page):
    return open(os.path.join(ROOT, page), encoding="utf-8").read()


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def links(text):
    """The targets of [text](target) and ![alt](target), code spans left out."""
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)


def broken_links(page):
    """The relative links of a page whose file, or whose #anchor in that file, does not exist."""
    bad = []
    for target in links(read(page)):
        if re.match(r"[a-z]+:", target):                   # https:, mailto: (not checked: no network)
            continue
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(os.path.join(ROOT, file)):
            bad.append(target)
        elif anchor and file.endswith(".md"):
            headings = re.findall(r"^#+ (.*)$", read(file), re.M)
            if anchor not in {slug(h) for h in headings}:
                bad.append(target)
    return bad


def commands(text):
    """Every `python X.py ...` and `torchrun ... X.py ...` command of a page, as its words: the lines
    of fenced blocks (joined at trailing backslashes) and inline code spans."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    lines = [line for b in blocks for line in b.replace("\\\n", " ").splitlines()]
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    out = []
    for line in lines + spans:
        line = line.split("#")[0] if " #" in line else line          # a trailing comment
        for part in re.split(r"&&|;|\|", line):
            part = part.replace("[", " ").replace("]", " ")
            try:
                words = shlex.split(part)
            except ValueError:                               # an apostrophe in prose
                words = part.split()
            scripts = [i for i, w in enumerate(words) if w.endswith(".py")]
            if scripts and any(w in ("python", "python3", "torchrun") for w in words[:scripts[0]]):
                out.append(words[scripts[0]:])
    return out


@functools.lru_cache(maxsize=None)
def flags_of(script):
    """The flags that `python script --help` lists (long ones, with their --no- forms)."""
    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, f"{script} --help failed: {proc.stderr[-500:]}"
    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", proc.stdout))


def bad_commands(page):
    bad = []
    for words in commands(read(page)):
        script = words[0]
        if not os.path.isfile(os.path.join(ROOT, script)):
            bad.append(f"{script}: no such script")
            continue
        unknown = [w for w in words[1:] if w.startswith("--") and w.split("=")[0] not in flags_of(script)]
        bad += [f"{script} {w}: no such flag" for w in unknown]
    return bad


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_and_image_resolves(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES)
def test_every_command_names_an_existing_script_and_its_flags(page):
    assert bad_commands(page) == []


def test_the_checks_fail_on_a_broken_link_a_missing_script_and_an_unknown_flag(tmp_path, monkeypatch):
    page = "docs/_broken.md"
    text = ("[ok](../README.md) [anchor](../README.md#why-2-grpo-is-dpo) ![img](nothere.png) "
            "[bad anchor](training.md#no-such-heading)\n\n```bash\npython train.py --group-size 2 --no-such-flag 1\n"
            "python missing.py --x\n```\nand `python eval.py --model M --samples 4`\n")
    real = read
    monkeypatch.setitem(globals(), "read", lambda p: text if p == page else real(p))
    assert broken_links(page) == ["nothere.png", "training.md#no-such-heading"]
    assert bad_commands(page) == ["train.py --no-such-flag: no such flag", "missing.py: no such script"]
