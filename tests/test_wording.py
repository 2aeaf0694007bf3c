"""The product speaks to its readers, not about how it was made: none of the words of the
machinery that moved runs onto rented GPUs, nor "here" for the machines it was built on."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BANNED = [
    r"\bborrow(ed|ing)?\b",
    r"\bcarr(y|ied|ying)\b",
    r"\brehears(al|e|ed|es)\b",
    r"\brunbooks?\b",
    r"\b64 MiB\b",
    r"\bcourse machines?\b",
    r"\b(these|the project's|this project's) machines\b",
    r"\b(gpu|device|next|this|each|every|fresh|later|one|a) sessions?\b",
    r"\bsession[-_ ](left|queue|start|end)\b",
    r"\bdevice minutes\b",
    r"\b(downloaded|downloadable|installed|reached|measured|trained) here\b",
]
PATTERN = re.compile("|".join(f"(?:{b})" for b in BANNED), re.IGNORECASE)


def product_files():
    globs = ["README.md", "LICENSE", "CITATION.cff", "Makefile", "requirements.txt",
             "environment.yml", "pyproject.toml", "docs/**/*.md", "weights/**/*.md",
             "benchmarks/**/*.py", "benchmarks/**/*.md", "scripts/**/*", "diffnb/**/*.py",
             "notebooks/*.ipynb"]
    return sorted({p for g in globs for p in ROOT.glob(g) if p.is_file()})


def test_the_product_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in product_files()}
    assert {"README.md", "Makefile", "diffnb/config.py", "notebooks/01_noising.ipynb"} <= names


@pytest.mark.parametrize("path", product_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_words_about_how_it_was_made(path):
    hits = [f"line {n}: {m.group(0)!r}" for n, line in
            enumerate(path.read_text(errors="replace").splitlines(), 1)
            for m in PATTERN.finditer(line)]
    assert not hits, "; ".join(hits)


@pytest.mark.parametrize("text", ["on a borrowed GPU", "the runbook", "carry the data",
                                  "64 MiB in", "cannot be downloaded here", "in the next session",
                                  "the course machines", "a GPU session"])
def test_the_pattern_catches_each_listed_phrase(text):
    assert PATTERN.search(text)


@pytest.mark.parametrize("text", ["a process session", "the training carries on from",
                                  "Jupyter session", "here is the grid", "on this machine"])
def test_the_pattern_leaves_ordinary_words(text):
    assert not PATTERN.search(text)
