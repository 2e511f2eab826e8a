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
    assert {"model/models.py", "model/generation.py", "tasks/prompts.py", "cli.py", "ui/__init__.py"} <= names


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
    # 'auto' becomes a device where a model is loaded (models) and where a run is queued, whatever its kind (the
    # store's create: no submit path picks one), for pages in loaders.device, for the CLI's job process, and for
    # the job processes that wait warm while a challenge is open (runners)
    resolving = sorted(rel(p) for p in APP_SOURCES if _calls(p, "pick_device"))
    assert resolving == [
        "ftvpe_core/cli.py",
        "ftvpe_core/jobs/runners.py",
        "ftvpe_core/model/models.py",
        "ftvpe_core/store/runs.py",
        "ftvpe_core/ui/loaders.py",
    ]
    # cached models live in ui/loaders.py (run_views caches the store, learn_view a measurement)
    cached = sorted(rel(p) for p in APP_SOURCES if "cache_resource" in p.read_text() and "models.load" in p.read_text())
    assert cached == ["ftvpe_core/ui/loaders.py"]
    # one techniques list, one preset table
    defines = [rel(p) for p in APP_SOURCES if re.search(r"^TECHNIQUES\b.*=", p.read_text(), re.M)]
    assert defines == ["ftvpe_core/tasks/prompts.py", "ftvpe_core/teaching/lessons.py"]  # lessons: their words, by key
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


# The wings of the core and the direction of their imports (the package docstring's numbered list)

ROOT = "ftvpe_core"


def wing_order(package_doc: str) -> list[str]:
    """The wings named by the package docstring's numbered list, lowest first (``2. ``store/``: ...``)."""
    return re.findall(r"^\d+\. ``(\w+)/?``", package_doc, re.M)


def core_modules(core: Path) -> dict[str, Path]:
    """Every module of the package under ``core``, by dotted name (a package by its own name)."""
    out = {}
    for path in python_files(core):
        parts = list(path.relative_to(core.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def core_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The core modules ``path`` imports anywhere in it (top level or inside a function), resolved to modules:
    ``from pkg import name`` is the module ``pkg.name`` where there is one, else ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == ROOT:
            for a in node.names:
                found.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add(f"<relative import at line {node.lineno}>")
    return found


def wing_of(module: str) -> str:
    """``ftvpe_core.store.runs`` -> 'store'; root modules are their own wing ('settings', 'cli'); '__main__' is
    the CLI's; the package itself is ''."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    return "cli" if parts[1] == "__main__" else parts[1]


def layering_problems(core: Path) -> list[str]:
    """Every import that goes up the wings or out of them, and every import circle among modules."""
    modules = core_modules(core)
    order = wing_order(ast.get_docstring(ast.parse((core / "__init__.py").read_text(encoding="utf-8"))) or "")
    rank = {wing: i for i, wing in enumerate(order)}
    problems = [f"{m} is in no wing of the package docstring" for m in modules if wing_of(m) and wing_of(m) not in rank]
    graph = {}
    for module, path in modules.items():
        graph[module] = {t for t in core_imports(path, modules) if t != module}
        for target in sorted(graph[module]):
            if target not in modules:
                problems.append(f"{module} imports {target}, which is no module of the core")
            elif wing_of(module) == "":
                problems.append(f"{module} (the package itself) imports {target}")
            elif wing_of(target) and rank.get(wing_of(target), -1) > rank.get(wing_of(module), -1):
                problems.append(f"{module} ({wing_of(module)}) imports {target} of a later wing ({wing_of(target)})")
    problems += [" -> ".join(c) + " -> ..." for c in circles(graph)]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_docstring_orders_the_wings_from_settings_to_the_ui():
    order = wing_order(ast.get_docstring(ast.parse((CORE / "__init__.py").read_text(encoding="utf-8"))))
    assert order[0] == "settings" and order[-1] == "ui" and len(order) == len(set(order)) >= 8
    on_disk = {p.parent.name for p in CORE.glob("*/__init__.py")} | {p.stem for p in CORE.glob("*.py")} - {
        "__init__",
        "__main__",
    }
    assert set(order) == on_disk


def test_no_wing_imports_a_later_one_and_no_modules_import_each_other_in_a_circle():
    assert layering_problems(CORE) == []


def test_the_layering_check_finds_an_upward_import_and_a_circle_inside_functions(tmp_path):
    core = tmp_path / ROOT
    for folder in ("store", "model", "jobs"):
        (core / folder).mkdir(parents=True)
        (core / folder / "__init__.py").write_text("")
    doc = '"""Wings:\n\n1. ``settings``: a.\n2. ``store/``: b.\n3. ``model/``: c.\n4. ``jobs/``: d.\n"""\n'
    (core / "__init__.py").write_text(doc)
    (core / "settings.py").write_text("")
    (core / "store" / "runs.py").write_text("def f():\n    from ftvpe_core.model import engine\n")  # up a wing
    (core / "model" / "engine.py").write_text("from ftvpe_core.store import runs\n")
    (core / "jobs" / "worker.py").write_text("def f():\n    from ftvpe_core.jobs import runners\n")  # a circle
    (core / "jobs" / "runners.py").write_text("from ftvpe_core.jobs import worker\nfrom ftvpe_core import settings\n")
    (core / "extra.py").write_text("")
    problems = layering_problems(core)
    assert "ftvpe_core.store.runs (store) imports ftvpe_core.model.engine of a later wing (model)" in problems
    assert "ftvpe_core.jobs.runners -> ftvpe_core.jobs.worker -> ..." in problems
    assert "ftvpe_core.model.engine -> ftvpe_core.store.runs -> ..." in problems
    assert "ftvpe_core.extra is in no wing of the package docstring" in problems
    assert len(problems) == 4, problems


LONG_LINES = 620
"""A module past this length ("about 600 lines") says why in its docstring ("Over 600 lines because ...")."""


def test_every_long_core_module_says_why_in_its_docstring():
    unexplained = []
    for path in python_files(CORE):
        source = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(source)) or ""
        if source.count("\n") > LONG_LINES and "Over 600 lines because" not in doc:
            unexplained.append(f"{path.relative_to(REPO)} ({source.count(chr(10))} lines)")
    assert unexplained == []


def test_only_the_store_writes_sql():
    """SQL on the store's tables (the runs' and the challenges') lives in ftvpe_core/store: a feature module calls
    the store's methods (``RunStore.challenge_tables`` for a challenge's rows)."""
    sql = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\b.*\b(runs|metrics|samples|challenge\w*)\b", re.S)
    outside = sorted(
        str(p.relative_to(REPO))
        for p in APP_SOURCES
        if "store" not in p.relative_to(REPO).parts[1:2] and any(sql.search(c) for c in _string_constants(p))
    )
    assert outside == []
