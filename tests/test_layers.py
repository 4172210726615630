"""The code's layers, read from its imports (AST, nothing imported): the engine (`pipeline/`) at
the bottom, the scheduler (`schedules/`) on it, the Django project (`web/`) on top; no import
loops anywhere; `web/` and `schedules/` come in through `pipeline`'s one door.

Every import counts, at module level or inside a function, so a loop cannot hide in a function;
only those under `if TYPE_CHECKING:` are left out (they never run)."""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

# Pure logic (no run store): run once, in the SQLite pass of `make test`.
pytestmark = pytest.mark.store_independent

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "schedules", "web")
# Importing across layers upwards: the engine knows nothing of the scheduler or the project,
# the scheduler nothing of the project.
FORBIDDEN = {"pipeline": ("schedules", "web"), "schedules": ("web",)}
# The engine's modules a user names: the door, Django's conventions (apps, models, admin), what
# settings name (middleware, broker, request context, logging config, the pytest plugin) and
# what the README shows imported (conf, project, errors, flow, testing, metrics' package).
PUBLIC_ENGINE_MODULES = {
    "pipeline", "pipeline.admin", "pipeline.apps", "pipeline.conf", "pipeline.errors", "pipeline.flow",
    "pipeline.flow.models", "pipeline.logging", "pipeline.metrics", "pipeline.middleware", "pipeline.models",
    "pipeline.project", "pipeline.rabbitmq", "pipeline.request_context", "pipeline.testing",
    "pipeline.testing.plugin",
}
INTERNAL = re.compile(r"\bfrom pipeline\.(models|definitions|runtime|states|publisher|metrics|logging)\b")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    return {
        inner
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }


def imports_of(module: str) -> set[str]:
    """The project modules `module` imports: `from a import b` counts as `a.b` when b is a module."""
    path = MODULES[module]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def public_modules() -> set[str]:
    """The engine's submodules `web/` and `schedules/` may import, as `pipeline.__init__`'s
    docstring declares them (the sentence starting `Public submodules:`)."""
    doc = ast.get_docstring(ast.parse((ROOT / "pipeline" / "__init__.py").read_text())) or ""
    paragraph = next((p for p in doc.split("\n\n") if "Public submodules:" in p), "")
    return set(re.findall(r"`(pipeline\.[a-z_.]+)`", paragraph.split("Public submodules:", 1)[-1]))


def test_the_helper_reads_relative_and_absolute_imports():
    assert "pipeline.conf" in GRAPH["pipeline._broker"]  # from . import conf
    assert "pipeline.middleware._drain" in GRAPH["pipeline.middleware"]  # from ._drain import Drain
    assert "pipeline.errors" in GRAPH["pipeline"]


def test_no_import_loops():
    assert _cycles() == []


@pytest.mark.parametrize("lower", sorted(FORBIDDEN))
def test_a_lower_layer_never_imports_a_higher_one(lower):
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items() if module.split(".")[0] == lower
        for target in targets if target.split(".")[0] in FORBIDDEN[lower]
    )
    assert upward == []


def test_web_and_schedules_enter_the_engine_only_through_its_door():
    allowed = {"pipeline"} | public_modules()
    assert all(name in MODULES for name in allowed), allowed - set(MODULES)
    past_the_door = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items() if module.split(".")[0] in ("web", "schedules")
        for target in targets if target.split(".")[0] == "pipeline" and target not in allowed
    )
    assert past_the_door == []


def _private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def test_web_and_schedules_import_no_private_engine_module():
    """The engine's internals are underscored (`pipeline._runtime`, `pipeline.flow._gate`): nothing
    outside `pipeline/` imports one (tests may)."""
    private = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items() if module.split(".")[0] in ("web", "schedules")
        for target in targets if target.split(".")[0] == "pipeline" and _private(target)
    )
    assert private == []


def test_the_engine_modules_without_an_underscore_are_its_public_ones():
    """A module is private unless users name it (Django's conventions, settings, imports the README
    shows): a new internal module takes an underscore."""
    public = sorted(module for module in MODULES
                    if module.split(".")[0] == "pipeline" and not _private(module)
                    and ".management" not in module)
    assert public == sorted(PUBLIC_ENGINE_MODULES)


def test_no_engine_internals_named_in_web_or_schedules():
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in ("web", "schedules")
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if INTERNAL.search(line)
    ]
    assert hits == []


def _explained(lines: list[str], lineno: int) -> bool:
    """An import's reason: a comment on its line, on another line of its group of imports (blank
    lines between them allowed), or on the line just above the group."""
    index = lineno - 1
    while index >= 0 and (not lines[index].strip() or lines[index].strip().startswith(("import ", "from "))):
        if "#" in lines[index]:
            return True
        index -= 1
    return index >= 0 and lines[index].strip().startswith("#")


@functools.cache
def function_level_imports() -> list[tuple[str, bool]]:
    """(`path:line: statement`, explained) of every import inside a function (each module read
    once, each node visited once: nested functions are not walked again)."""
    found = {}
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), str(path))
        inside = [(child, False) for child in ast.iter_child_nodes(tree)]
        while inside:
            node, in_function = inside.pop()
            if in_function and isinstance(node, (ast.Import, ast.ImportFrom)):
                where = f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}"
                found[where] = _explained(lines, node.lineno)
            in_function = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            inside.extend((child, in_function) for child in ast.iter_child_nodes(node))
    return sorted(found.items())


def test_the_import_check_sees_function_level_imports_and_their_reasons():
    imports = dict(function_level_imports())
    assert any(where.startswith("pipeline/apps.py:") for where in imports)  # ready(): Django's app loading
    assert _explained(["def f():", "    # why", "    import a", "    import b"], 4)
    assert not _explained(["def f():", "    x = 1", "    import a"], 3)


def test_every_import_inside_a_function_says_why_it_is_not_at_the_top():
    """Imports belong at a module's top. The few that cannot be (Django's app loading: an
    AppConfig's ready(), django-dramatiq's middleware; an optional dependency; a function shown
    whole in the README) say so in a comment, so a new one cannot hide an import loop or a
    layering mistake."""
    assert [where for where, explained in function_level_imports() if not explained] == []


def test_every_engine_error_is_a_pipeline_error_defined_in_errors_py():
    import pipeline
    from pipeline import errors

    raised = {name for name in pipeline.__all__ if name.endswith(("Error", "Refused", "NotFound", "Unavailable",
                                                                  "Invalid", "TooLarge", "Name", "Type"))
              and isinstance(getattr(pipeline, name), type) and issubclass(getattr(pipeline, name), Exception)}
    assert {"OperationRefused", "RunNotFound", "BrokerUnavailable", "TraceUsageError"} <= raised
    for name in raised:
        kind = getattr(pipeline, name)
        assert issubclass(kind, pipeline.PipelineError), name
        assert kind.__module__ == "pipeline.errors", name
        assert (kind.__doc__ or "").startswith("Raised when") or kind is pipeline.PipelineError, name
    assert not hasattr(errors, "TransitionRefused")  # declared, never raised


def test_the_engine_names_no_http_status():
    hits = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "pipeline").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bstatus_code\b|\bHTTP_?STATUS\b", line)
    ]
    assert hits == []


def test_no_engine_module_is_over_300_lines():
    long = sorted(
        f"{path.relative_to(ROOT)}: {count} lines"
        for path in (ROOT / "pipeline").rglob("*.py")
        if "migrations" not in path.parts
        for count in [len(path.read_text().splitlines())]
        if count > 300
    )
    assert long == []


def test_nothing_outside_the_demo_shop_imports_it():
    """The shop is a demo: deleting web/shop must break nothing else (tests/web/test_web_apps.py runs the
    API and dashboard tests without it)."""
    users = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items() if not module.startswith("web.shop")
        for target in targets if target.startswith("web.shop")
    )
    assert users == []
