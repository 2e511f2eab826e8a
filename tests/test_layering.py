"""Architecture rules read from the source (AST, not grep): streamlit stays in ftvpe_core/ui, no remote code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

CORE = REPO / "ftvpe_core"


def python_files(*roots: Path) -> list[Path]:
    files = []
    for root in roots:
        files += [root] if root.is_file() else sorted(root.rglob("*.py"))
    return files


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imports_streamlit(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return any(m == "streamlit" or m.startswith("streamlit.") for m in imported_modules(tree))


def trusts_remote_code(path: Path) -> list[int]:
    """Line numbers where ``trust_remote_code`` is set to anything but a literal False (keyword argument or
    dict entry): a variable could be True at run time, so only a visible False passes."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                lines.append(node.value.lineno)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                    if not (isinstance(value, ast.Constant) and value.value is False):
                        lines.append(key.lineno)
    return sorted(lines)


def test_the_scan_sees_the_core_modules():
    names = {p.relative_to(CORE).as_posix() for p in python_files(CORE)}
    assert {"models.py", "generation.py", "prompts.py", "cli.py", "ui/__init__.py"} <= names


def test_the_streamlit_detector_finds_every_import_form(tmp_path):
    for i, source in enumerate(
        ["import streamlit as st", "from streamlit import session_state", "import streamlit.components.v1"]
    ):
        f = tmp_path / f"m{i}.py"
        f.write_text(f"def page():\n    {source}\n")
        assert imports_streamlit(f), source
    clean = tmp_path / "clean.py"
    clean.write_text('NAME = "streamlit"\nimport streamlit_like_name_but_not  # noqa\n')
    assert not imports_streamlit(clean)


def test_only_the_ui_package_imports_streamlit():
    offenders = [
        str(p.relative_to(REPO))
        for p in python_files(CORE)
        if "ui" not in p.relative_to(CORE).parts[:1] and imports_streamlit(p)
    ]
    assert offenders == []


def test_the_remote_code_detector_flags_all_but_a_literal_false(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "a(x, trust_remote_code=False)\n"
        "b(x, trust_remote_code=True)\n"
        "kw = dict(trust_remote_code=flag)\n"
        "c = {'trust_remote_code': True}\n"
    )
    assert trusts_remote_code(f) == [2, 3, 4]


@pytest.mark.parametrize(
    "path",
    python_files(CORE, REPO / "pages", REPO / "app.py", REPO / "home.py"),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_no_file_trusts_remote_code(path):
    assert trusts_remote_code(path) == []


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _calls(path: Path, name: str) -> int:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return sum(
        1
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) == name
    )


APP_SOURCES = [REPO / "app.py", REPO / "home.py", *sorted((REPO / "pages").glob("*.py")), *python_files(CORE)]


def test_each_decision_is_made_in_one_place():
    rel = lambda p: str(p.relative_to(REPO))  # noqa: E731
    # the adapter's file names and the weights it runs on: ftvpe_core/model/adapters.py
    for constant in ("adapter_model.safetensors", "adapter_config.json"):
        assert [rel(p) for p in APP_SOURCES if constant in _string_constants(p)] == ["ftvpe_core/model/adapters.py"]
    # 'auto' becomes a device when a model is loaded or a job is queued, for pages in loaders.device, and for the
    # job processes that wait warm while a challenge is open (runners)
    resolving = sorted(rel(p) for p in APP_SOURCES if _calls(p, "pick_device"))
    assert resolving == [
        "ftvpe_core/teaching/challenges.py",
        "ftvpe_core/cli.py",
        "ftvpe_core/studies/compare.py",
        "ftvpe_core/training/tuning.py",
        "ftvpe_core/model/models.py",
        "ftvpe_core/jobs/runners.py",
        "ftvpe_core/ui/loaders.py",
    ]
    # cached models live in ui/loaders.py (run_views caches the store, learn_view a measurement)
    cached = sorted(rel(p) for p in APP_SOURCES if "cache_resource" in p.read_text() and "models.load" in p.read_text())
    assert cached == ["ftvpe_core/ui/loaders.py"]
    # one techniques list, one preset table
    defines = [rel(p) for p in APP_SOURCES if re.search(r"^TECHNIQUES\b.*=", p.read_text(), re.M)]
    assert defines == ["ftvpe_core/teaching/lessons.py", "ftvpe_core/tasks/prompts.py"]  # lessons: their words, by key
    assert not [rel(p) for p in APP_SOURCES if "TRAIN_PRESETS" in p.read_text()]


def test_only_the_engine_decodes_tokens():
    """transformers' generate is not called anywhere in the app: every answer goes through ftvpe_core/model/engine.py."""
    callers = []
    for path in APP_SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "generate":
                owner = n.func.value
                name = getattr(owner, "attr", getattr(owner, "id", ""))
                if "model" in name:  # model.generate / peft_model.generate / loaded.model.generate
                    callers.append(f"{path.relative_to(REPO)}:{n.lineno}")
    assert callers == []
