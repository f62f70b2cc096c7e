"""Static checks of the container deployment: docker-compose.yml, the Dockerfiles, .dockerignore.

No Docker engine is needed: the files are read as YAML and text and checked against the code
(entry points, settings classes and their defaults, pins, the producer's imports).  Where a
Compose binary is installed, ``docker compose config`` validates the file as well.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from pydantic import TypeAdapter
from pydantic_settings import BaseSettings

from app import PROJECT_ROOT
from app.config import BrokerSettings, KafkaSettings, SparkSettings, StreamSettings
from app.dashboard.settings import DashboardSettings
from producer.producer import ProducerSettings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
README = PROJECT_ROOT / "README.md"
APP_DOCKERFILE = PROJECT_ROOT / "app" / "Dockerfile"
PRODUCER_DOCKERFILE = PROJECT_ROOT / "producer" / "Dockerfile"
DOCKERFILES = (APP_DOCKERFILE, PRODUCER_DOCKERFILE)

#: Every settings class a process of the stack builds (the broker's: `make kafka-up`, and the
#: compose file's Kafka port and heap).
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    KafkaSettings,
    SparkSettings,
    StreamSettings,
    DashboardSettings,
    ProducerSettings,
    BrokerSettings,
)

#: Variables the containers may set that are no settings field, and who reads them.
NON_SETTINGS_ENV = {
    "LOG_LEVEL": "app/logs.py (every process)",
    "PYSPARK_PYTHON": "PySpark: the Python of the executors",
    "SPARK_WORKER_CORES": "Spark's standalone worker",
    "SPARK_WORKER_MEMORY": "Spark's standalone worker",
    "SPARK_WORKER_DIR": "Spark's standalone worker",
}

#: Services whose environment configures a third-party image, not our code.
IMAGE_CONFIGURED = {"kafka"}

#: Compose defaults that deliberately differ from the settings class: what `make run` uses.
STACK_DEFAULTS = {
    # app/stack.py sets GROUND_TRUTH_PATH to the demo CSV; in the image it lives here.
    "GROUND_TRUTH_PATH": "/app/data/synthetic_transactions.csv",
}

ENTRY_POINTS = {"app.streaming.job", "app.dashboard.server", "producer.producer"}
IMAGE_VENV_SITE = "/opt/venv/lib/python3.11/site-packages/"
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


# ---------------------------------------------------------------- helpers


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def interpolations() -> set[tuple[str, str]]:
    """Every ``${VAR}`` / ``${VAR:-default}`` in the compose file's values: {(VAR, default)}."""
    found: set[tuple[str, str]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            found.update(INTERPOLATION.findall(node))

    walk(compose())
    return found


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def env_of(service: str) -> dict[str, str | None]:
    env = services()[service].get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", "KEY"]
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: None if v is None else str(v) for k, v in env.items()}


def field_map() -> dict[str, list[tuple[type[BaseSettings], str]]]:
    """ENV_NAME -> [(settings class, field name)] (a name can be read by several processes)."""
    names: dict[str, list[tuple[type[BaseSettings], str]]] = {}
    for cls in SETTINGS_CLASSES:
        for field in cls.model_fields:
            names.setdefault(field.upper(), []).append((cls, field))
    return names


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def pinned(name: str) -> str:
    deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(dep.split("==", 1) for dep in deps)
    return pins[name]


def dockerfile_stages(path: Path) -> list[dict[str, Any]]:
    """[{"from": image, "name": alias, "instructions": [(KEYWORD, args)]}] in file order."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if not pending and raw.lstrip().startswith("#"):
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    stages: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        keyword, _, args = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"from": parts[0], "name": alias, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, args.strip()))
    return stages


def dockerfile_args(path: Path) -> dict[str, str]:
    """ARG defaults anywhere in the file (global and per stage)."""
    found = re.findall(r"^ARG\s+([A-Z_]+)=(\S+)", path.read_text(), flags=re.M)
    return dict(found)


def resolve_from(image: str, path: Path) -> str:
    args = dockerfile_args(path)
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)


def final_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in dockerfile_stages(path)[-1]["instructions"]:
        if keyword == "ENV":
            for key, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", args):
                env[key] = value
    return env


def dockerignore_patterns() -> list[str]:
    path = PROJECT_ROOT / ".dockerignore"
    lines = path.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def ignored(relpath: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``relpath`` (or a folder above it) out of the build context."""
    parts = relpath.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        if pattern.startswith("**/"):  # at any depth
            tail = pattern.removeprefix("**/")
            hit = any(fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], tail) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)
        if hit:
            result = not negate
    return result


def norm_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- the compose file


def test_compose_file_parses_and_has_the_stack() -> None:
    data = compose()
    assert data["name"] == "txn-anomaly"
    assert {"kafka", "app", "dashboard", "producer", "spark-master", "spark-worker"} <= set(
        services()
    )
    assert services()["kafka"]["image"] == "apache/kafka:4.1.1"
    kafka_env = env_of("kafka")
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, no ZooKeeper"
    for name in ("spark-master", "spark-worker"):
        assert services()[name].get("profiles") == ["cluster"], f"{name} is optional"
    for name in ("kafka", "app", "dashboard", "producer"):
        assert not services()[name].get("profiles"), f"{name} runs by default"


def test_build_contexts_and_dockerfiles_exist() -> None:
    builds: dict[str, dict[str, Any]] = {}
    for name, service in services().items():
        build = service.get("build")
        if build is None:
            assert "image" in service, f"{name}: neither build nor image"
            continue
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {context} is missing"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        assert dockerfile in DOCKERFILES, f"{name}: unexpected Dockerfile {dockerfile}"
        image = service.get("image")
        assert image, f"{name}: a built image needs a name, so the services can share it"
        # Compose builds every `build:` in parallel: two builds of one tag collide.
        assert image not in builds, f"{image} is built by two services"
        builds[image] = build
    assert {b["dockerfile"] for b in builds.values()} == {"app/Dockerfile", "producer/Dockerfile"}
    app_image = services()["app"]["image"]
    assert "build" in services()["app"], "the always-on app service builds the shared image"
    for name in ("dashboard", "spark-master", "spark-worker"):
        assert services()[name]["image"] == app_image, f"{name} runs the app image"
    for name, service in services().items():
        image = service.get("image", "")
        if image.startswith("txn-anomaly-"):
            assert image in builds, f"{name}: nothing in this file builds {image}"


def _python_modules() -> dict[str, str]:
    """service -> module, for the services that run `python -m MODULE`."""
    modules = {}
    for name, service in services().items():
        command = service.get("command")
        if isinstance(command, list) and command[:2] == ["python", "-m"]:
            modules[name] = command[2]
    return modules


def test_commands_resolve_to_modules_and_scripts() -> None:
    modules = _python_modules()
    assert modules == {
        "app": "app.streaming.job",
        "dashboard": "app.dashboard.server",
        "producer": "producer.producer",
    }
    for module in modules.values():
        path = PROJECT_ROOT / Path(*module.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module

    # The Spark services run PySpark's launcher from the image's venv: the same relative path
    # must exist in this venv (same pinned pyspark), and the classes in its jars.
    site = Path(sysconfig.get_paths()["purelib"])
    jars = sorted((site / "pyspark" / "jars").glob("spark-core_*.jar"))
    assert jars, "pyspark's spark-core jar not found"
    with zipfile.ZipFile(jars[0]) as core:
        classes = set(core.namelist())
    for name in ("spark-master", "spark-worker"):
        command = services()[name]["command"]
        assert command[0].startswith(IMAGE_VENV_SITE), command[0]
        local = site / command[0].removeprefix(IMAGE_VENV_SITE)
        assert local.is_file() and os.access(local, os.X_OK), f"{local} (from {command[0]})"
        main_class = command[1]
        assert main_class.replace(".", "/") + ".class" in classes, main_class
    assert services()["spark-worker"]["command"][2] == "spark://spark-master:7077"
    master = services()["spark-master"]["command"]
    assert master[master.index("--host") + 1] == "spark-master"
    assert master[master.index("--port") + 1] == "7077"
    # the image's venv is where the compose file looks for it
    assert "python -m venv /opt/venv" in APP_DOCKERFILE.read_text()
    assert resolve_from(dockerfile_stages(APP_DOCKERFILE)[-1]["from"], APP_DOCKERFILE).startswith(
        "python:3.11"
    )


def test_service_commands_answer_help() -> None:
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-m", module, "--help"],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for module in sorted(ENTRY_POINTS)
    }
    for module, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"python -m {module} --help did not answer within 60 s")
        assert proc.returncode == 0, f"python -m {module} --help failed:\n{out}"
        assert "usage:" in out, out


def test_every_setting_is_documented_in_readme() -> None:
    table = readme_section("Configuration")
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    missing = sorted(set(field_map()) - documented)
    assert not missing, f"settings missing from README's Configuration table: {missing}"
    assert "LOG_LEVEL" in documented


def test_compose_sets_only_known_variables() -> None:
    known = set(field_map()) | set(NON_SETTINGS_ENV)
    for name in services():
        if name in IMAGE_CONFIGURED:
            continue
        unknown = sorted(set(env_of(name)) - known)
        assert not unknown, f"{name} sets variables no process reads: {unknown}"
    readme = README.read_text()
    for var, _ in sorted(interpolations()):
        assert var in known, f"${{{var}}} is not a setting"
        assert f"`{var}`" in readme, f"${{{var}}} is not documented in README"


def _parsed_default(cls: type[BaseSettings], field: str, text: str) -> Any:
    info = cls.model_fields[field]
    if text == "" and info.default is None:
        return None
    return TypeAdapter(info.annotation).validate_python(text)


def test_compose_defaults_equal_the_settings_defaults() -> None:
    fields = field_map()
    checked = 0
    for var, default in sorted(interpolations()):
        if var not in fields:
            continue
        if var in STACK_DEFAULTS:
            assert default == STACK_DEFAULTS[var], var
            continue
        matches = [
            cls.__name__
            for cls, field in fields[var]
            if _parsed_default(cls, field, default) == cls.model_fields[field].default
        ]
        assert matches, f"${{{var}:-{default}}} differs from the settings' default"
        checked += 1
    assert checked >= 20
    # Passed through without a default: unset in the container unless set on the host, which
    # is the default of at least one process reading it.
    for name in services():
        for var, value in env_of(name).items():
            if value is None:
                assert any(cls.model_fields[f].default is None for cls, f in fields[var]), var
    # Settings the local stack's users switch often are passed through.
    for var in ("DATA_SPLIT", "COMBO", "MESSAGE_DELAY_SECONDS", "LOOP_DATA"):
        assert env_of("producer")[var] == f"${{{var}:-{_text(ProducerSettings, var)}}}", var
    assert env_of("dashboard")["COMBO"] == "${COMBO:-}"
    assert env_of("app")["SPARK_MASTER"] == "${SPARK_MASTER:-local[*]}"


def _text(cls: type[BaseSettings], var: str) -> str:
    default = cls.model_fields[var.lower()].default
    if default is None:
        return ""
    return str(default).lower() if isinstance(default, bool) else str(default)


def test_containers_reach_kafka_on_the_internal_listener() -> None:
    kafka = env_of("kafka")
    assert "PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert services()["kafka"]["hostname"] == "kafka"
    for name in ("app", "dashboard", "producer"):
        assert env_of(name)["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
    # the broker's data is where the volume is (the image's default is under /tmp)
    mounts = dict(v.split(":", 1)[::-1] for v in services()["kafka"]["volumes"])
    assert mounts[kafka["KAFKA_LOG_DIRS"]] == "kafka-data"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", kafka["CLUSTER_ID"]), "a base64 UUID"


def test_published_ports_bind_to_localhost() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"

    container_port = DashboardSettings.model_fields["dashboard_port"].default
    dashboard = services()["dashboard"]
    assert dashboard["ports"] == [f"127.0.0.1:${{DASHBOARD_PORT:-{container_port}}}:8050"]
    assert container_port == 8050
    assert int(env_of("dashboard")["DASHBOARD_PORT"] or 0) == container_port
    assert env_of("dashboard")["DASHBOARD_HOST"] == "0.0.0.0"
    assert f"127.0.0.1:{container_port}/health" in " ".join(dashboard["healthcheck"]["test"])
    assert "urllib" in " ".join(dashboard["healthcheck"]["test"])

    kafka_port = BrokerSettings.model_fields["kafka_port"].default
    kafka = services()["kafka"]
    host_side = f"${{KAFKA_PORT:-{kafka_port}}}"
    assert kafka["ports"] == [f"127.0.0.1:{host_side}:9094"]
    assert "EXTERNAL://:9094" in env_of("kafka")["KAFKA_LISTENERS"]
    assert f"EXTERNAL://127.0.0.1:{host_side}" in env_of("kafka")["KAFKA_ADVERTISED_LISTENERS"]


def test_named_volumes_are_declared_and_shared_where_needed() -> None:
    declared = set(compose().get("volumes") or {})
    used: dict[str, dict[str, str]] = {}  # volume -> {service: target}
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/", "~", "$")):
                used.setdefault(source, {})[name] = target
    assert set(used) == declared, f"declared {sorted(declared)}, used {sorted(used)}"
    checkpoint = env_of("app")["CHECKPOINT_LOCATION"]
    assert used["checkpoints"]["app"] == checkpoint
    # executors of the cluster profile write the state store under the job's checkpoint
    assert used["checkpoints"]["spark-worker"] == checkpoint


def test_dependencies_health_checks_and_restarts() -> None:
    for name, service in services().items():
        assert service.get("restart") in ("unless-stopped", "on-failure"), name
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, spec in depends.items():
            assert target in services(), f"{name} depends on unknown {target}"
            assert not services()[target].get("profiles") or service.get("profiles"), (
                f"{name} depends on {target}, which only runs with a profile"
            )
            wanted = "service_healthy" if "healthcheck" in services()[target] else "service_started"
            assert spec["condition"] == wanted, f"{name} -> {target}"
    for name in ("kafka", "dashboard", "spark-master"):
        assert "healthcheck" in services()[name], name
    for name in ("app", "dashboard", "producer"):
        assert "kafka" in services()[name]["depends_on"], name
    assert "app" in services()["producer"]["depends_on"]
    # a finished replay exits 0 and must not be started again (it would replay old hours)
    assert services()["producer"]["restart"] == "on-failure"


def test_job_settings_fixed_for_the_container() -> None:
    app_env, image_env = env_of("app"), final_env(APP_DOCKERFILE)
    for var in ("MODEL_PATH", "SPARK_JARS_DIR", "CHECKPOINT_LOCATION"):
        assert app_env[var] == image_env[var], var
    assert env_of("dashboard")["MODEL_PATH"] == image_env["MODEL_PATH"]
    assert env_of("producer")["DATA_PATH"] == final_env(PRODUCER_DOCKERFILE)["DATA_PATH"]
    assert STACK_DEFAULTS["GROUND_TRUTH_PATH"] == image_env["DATA_PATH"]
    # a cluster's executors must reach the driver: it advertises its own hostname
    assert app_env["SPARK_LOCAL_IP"] == services()["app"]["hostname"]


# ---------------------------------------------------------------- the Dockerfiles


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_runs_as_non_root(path: Path) -> None:
    users = [a for k, a in dockerfile_stages(path)[-1]["instructions"] if k == "USER"]
    assert users, f"{path}: the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_basics(path: Path) -> None:
    text = path.read_text()
    for word in ("amd64", "x86_64", "aarch64", "arm64"):
        assert word not in text, f"{path} hard-codes the architecture ({word})"
    stages = dockerfile_stages(path)
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    assert resolve_from(stages[-1]["from"], path).startswith("python:3.11-slim")
    assert final_env(path)["PYTHONUNBUFFERED"] == "1"
    assert "/opt/venv/bin" in final_env(path)["PATH"]
    assert "[dev]" not in text and ".[" not in text, "no dev extras in an image"


def test_app_image_pins_the_cpu_torch_of_pyproject() -> None:
    assert dockerfile_args(APP_DOCKERFILE)["TORCH_VERSION"] == pinned("torch")
    runs = [
        a for s in dockerfile_stages(APP_DOCKERFILE) for k, a in s["instructions"] if k == "RUN"
    ]
    torch_runs = [r for r in runs if 'pip install "torch==${TORCH_VERSION}"' in r]
    assert len(torch_runs) == 1
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_runs[0]
    # the project goes in after torch, without dev extras
    assert any(re.search(r"pip install \.(\s|$)", r) for r in runs)


def test_app_image_fetches_the_spark_jars_in_a_build_stage() -> None:
    stages = dockerfile_stages(APP_DOCKERFILE)
    jar_stages = [
        s
        for s in stages[:-1]
        if s["from"].startswith("maven:")
        and any(
            k == "RUN" and "mvn" in a and "-f infra/spark/pom.xml dependency:copy-dependencies" in a
            for k, a in s["instructions"]
        )
    ]
    assert len(jar_stages) == 1, "a maven stage runs the connector's pom"
    assert jar_stages[0]["from"] == "maven:3-eclipse-temurin-17"
    copies = [
        a
        for k, a in stages[-1]["instructions"]
        if k == "COPY" and a.startswith(f"--from={jar_stages[0]['name']} ")
    ]
    assert len(copies) == 1
    destination = copies[0].split()[-1]
    assert final_env(APP_DOCKERFILE)["SPARK_JARS_DIR"] == destination
    # Java 17 from Debian for Spark; `java` on PATH rather than an architecture's JAVA_HOME
    final_runs = " ".join(a for k, a in stages[-1]["instructions"] if k == "RUN")
    assert "openjdk-17-jre-headless" in final_runs
    assert "JAVA_HOME" not in final_env(APP_DOCKERFILE)


def test_producer_image_installs_enough_and_no_more() -> None:
    text = PRODUCER_DOCKERFILE.read_text()
    match = re.search(r"names = (\([^)]*\))", text)
    assert match, "the producer's package list"
    listed = ast.literal_eval(match.group(1))
    for name in listed:
        assert pinned(name), name  # read from pyproject.toml at build time: must be pinned there
    runs = " ".join(
        a
        for st in dockerfile_stages(PRODUCER_DOCKERFILE)
        for k, a in st["instructions"]
        if k == "RUN"
    )
    for heavy in ("torch", "pyspark", "openjdk", "apt-get"):
        assert heavy not in runs, f"the producer image needs no {heavy}"
    assert "pip install --no-deps ." in text

    # Import everything the producer imports (its module and the app modules it reaches, lazy
    # imports included) with only the image's packages visible: the listed ones and what they
    # depend on.  Any other installed package is refused, as it is absent from the image.
    required = _requirement_closure(listed)
    blocked = sorted(
        top
        for top, dists in md.packages_distributions().items()
        if top not in ("app", "producer") and not {norm_dist(d) for d in dists} & required
    )
    modules = sorted(_imports_reached(PROJECT_ROOT / "producer" / "producer.py"))
    script = (
        "import importlib, sys\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ModuleNotFoundError(f'{name}: not in the producer image')\n"
        "sys.meta_path.insert(0, Absent())\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"producer/Dockerfile misses a package:\n{result.stderr}"
    assert "kafka" in modules and "pandas" in modules
    # What the code imports directly is listed itself, so that it gets pyproject's pin.
    owners = md.packages_distributions()
    direct = {
        norm_dist(dist)
        for m in modules
        if m.split(".")[0] not in (*sys.stdlib_module_names, "app", "producer")
        for dist in owners.get(m.split(".")[0], [m.split(".")[0]])
    }
    unlisted = sorted(direct - {norm_dist(n) for n in listed})
    assert not unlisted, f"the producer imports {unlisted} directly: list them (pinned)"


def _imports_reached(start: Path) -> set[str]:
    """Absolute modules imported anywhere in ``start`` (lazy imports too, type-checking-only
    ones not) and in the ``app`` modules it reaches."""
    seen: set[Path] = set()
    modules: set[str] = set()
    todo = [start]

    def visit(node: ast.AST, path: Path) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, path)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name == "__future__":
                continue
            modules.add(name)
            if name.split(".")[0] in ("app", "producer"):
                local = PROJECT_ROOT / Path(*name.split("."))
                todo.extend(
                    c for c in (local.with_suffix(".py"), local / "__init__.py") if c.is_file()
                )
        for child in ast.iter_child_nodes(node):
            visit(child, path)

    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            visit(ast.parse(path.read_text()), path)
    return modules


def _requirement_closure(names: tuple[str, ...]) -> set[str]:
    """The distributions pip installs for ``names`` (no extras)."""
    required: set[str] = set()
    todo = [norm_dist(n) for n in names]
    while todo:
        name = todo.pop()
        if name in required:
            continue
        required.add(name)
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(norm_dist(req.name))
    return required


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = dockerignore_patterns()
    for excluded in (".git", ".venv", ".run", "infra/spark/jars", "infra/kafka/lib", "plots"):
        assert ignored(excluded, patterns), f".dockerignore should exclude {excluded}"
    sources = []
    for path in DOCKERFILES:
        for stage in dockerfile_stages(path):
            for keyword, args in stage["instructions"]:
                if keyword == "COPY" and not args.startswith("--from"):
                    sources += [a for a in args.split()[:-1] if not a.startswith("--")]
    assert {"pyproject.toml", "README.md", "app", "producer", "models", "data"} <= set(sources)
    for source in sources:
        assert (PROJECT_ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    assert not ignored("models/ensemble.json", patterns)
    assert not ignored("data/synthetic_transactions.csv", patterns)


# ---------------------------------------------------------------- a Compose binary, if any


def _compose_command() -> tuple[list[str], str] | None:
    """(command prefix, flavour) of an installed Compose, or None."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=20
        )
        if probe.returncode == 0:
            return ["docker", "compose"], "v2"
    if shutil.which("docker-compose"):
        return ["docker-compose"], "v1"
    return None


@pytest.mark.parametrize("profile", [None, "cluster"])
def test_compose_config_validates(profile: str | None, tmp_path: Path) -> None:
    found = _compose_command()
    if found is None:
        pytest.skip("no Compose binary here (neither `docker compose` nor `docker-compose`)")
    command, flavour = found
    compose_file = COMPOSE_FILE
    if flavour == "v1":
        # Compose v1 (Debian's docker-compose 1.29) predates the top-level `name:`; validate
        # everything else with it.
        data = yaml.safe_load(COMPOSE_FILE.read_text())
        data.pop("name")
        compose_file = tmp_path / "docker-compose.yml"
        compose_file.write_text(yaml.safe_dump(data, sort_keys=False))
    args = [*command, "--project-directory", str(PROJECT_ROOT), "-f", str(compose_file)]
    if profile:
        args += ["--profile", profile]
    result = subprocess.run(
        [*args, "config", "-q"], capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT
    )
    assert result.returncode == 0, result.stderr or result.stdout
