"""Rules of the code base, checked on the source: import boundaries and safe loading."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app import PROJECT_ROOT

SOURCES = sorted(
    p
    for folder in ("app", "producer", "data", "bench")
    if (PROJECT_ROOT / folder).exists()
    for p in (PROJECT_ROOT / folder).rglob("*.py")
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


PURE = [
    *sorted((PROJECT_ROOT / "app" / "detectors").rglob("*.py")),
    *sorted((PROJECT_ROOT / "app" / "postprocess").rglob("*.py")),
    PROJECT_ROOT / "app" / "data.py",
    PROJECT_ROOT / "app" / "artifacts.py",
    PROJECT_ROOT / "app" / "catalog.py",
    PROJECT_ROOT / "app" / "evaluation.py",
    PROJECT_ROOT / "app" / "baselines.py",
    PROJECT_ROOT / "app" / "streaming" / "state.py",
    PROJECT_ROOT / "app" / "streaming" / "scorer.py",
]


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_pure_modules_never_import_spark_dash_or_kafka(path: Path) -> None:
    assert not _imports(path) & {"pyspark", "dash", "kafka", "flask"}


@pytest.mark.parametrize(
    "path",
    [
        *sorted((PROJECT_ROOT / "app" / "dashboard").rglob("*.py")),
        PROJECT_ROOT / "app" / "streaming" / "job.py",
    ],
    ids=lambda p: str(p.relative_to(PROJECT_ROOT)),
)
def test_job_and_dashboard_never_handle_tensors(path: Path) -> None:
    assert "torch" not in _imports(path)


def test_no_pickle_anywhere() -> None:
    offenders = [
        str(p)
        for p in SOURCES
        if _imports(p) & {"pickle", "dill", "joblib", "cloudpickle", "shelve"}
    ]
    assert offenders == []


def _unsafe_torch_loads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
        ):
            safe = any(
                k.arg == "weights_only"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                found.append(f"{path}:{node.lineno}")
    return found


def test_every_torch_load_is_weights_only() -> None:
    assert [hit for path in SOURCES for hit in _unsafe_torch_loads(path)] == []


def test_the_checks_catch_unsafe_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch\nimport pickle\ntorch.load('x.pt')\n"
        "torch.load('y.pt', weights_only=False)\ntorch.load('z.pt', weights_only=True)\n"
    )
    assert "pickle" in _imports(bad)
    assert [h.rsplit(":", 1)[1] for h in _unsafe_torch_loads(bad)] == ["3", "4"]


def _app_import_graph() -> dict[str, set[str]]:
    """Module -> the ``app`` modules it imports, at module level or inside functions
    (lazy imports count: they only hide a cycle), ``if TYPE_CHECKING:`` blocks excepted."""
    modules: dict[str, Path] = {}
    for path in (PROJECT_ROOT / "app").rglob("*.py"):
        parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in ast.walk(node)
        }
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_app_has_no_import_cycle() -> None:
    """registry -> scoring -> streaming.scorer -> registry was kept alive by lazy imports."""
    graph = _app_import_graph()
    assert "app.registry" in graph and graph["app.data"]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)
