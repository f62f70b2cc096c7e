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
