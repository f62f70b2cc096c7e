"""Shared helpers: machine description, load/CPU accounting, process memory, statistics.

Nothing here imports torch, Spark or Kafka, so ``bench/run.py`` can describe the machine even
when a benchmark's dependencies are broken.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: A measurement is flagged "under load" when processes outside the benchmark's own process
#: tree used at least this many cores on average while it ran.
OTHERS_LOAD_FLAG_CORES = 0.25


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# --- the machine ------------------------------------------------------------------------------


def _first_line(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def _command_output(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip()
    return text or None


def git_sha() -> dict[str, Any]:
    sha = _command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    status = _command_output(["git", "-C", str(REPO_ROOT), "status", "--porcelain"])
    return {"sha": sha, "dirty": bool(status)}


def machine_info() -> dict[str, Any]:
    """Cores, RAM, CPU model, OS, Python/Java/torch/PySpark versions, torch threads, git SHA."""
    mem_kb = _first_line("/proc/meminfo", "MemTotal")
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "cpu_model": _first_line("/proc/cpuinfo", "model name"),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "java": (_command_output(["java", "-version"]) or "").splitlines()[0:1],
        "git": git_sha(),
        "date": utc_now(),
    }
    info["java"] = info["java"][0] if info["java"] else None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_default_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        info["cuda_available"] = bool(torch.cuda.is_available())
    except Exception as exc:  # the description must not fail with the benchmarks
        info["torch"] = f"unavailable: {exc}"
    try:
        import pyspark

        info["pyspark"] = pyspark.__version__
    except Exception as exc:
        info["pyspark"] = f"unavailable: {exc}"
    return info


def machine_line(info: dict[str, Any]) -> str:
    git = info.get("git") or {}
    sha = (git.get("sha") or "?")[:10] + ("+dirty" if git.get("dirty") else "")
    return (
        f"{info.get('cores')} cores ({info.get('cpu_model')}), {info.get('ram_gib')} GiB RAM, "
        f"{info.get('os')}, Python {info.get('python')}, torch {info.get('torch')}, "
        f"PySpark {info.get('pyspark')}, {info.get('java')}; git {sha}; {info.get('date')}"
    )


# --- processes ----------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            continue
        ppid = int(text[text.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """``root`` and all its live descendants (from ``children`` when given: one snapshot)."""
    children = _children_map() if children is None else children
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def proc_jiffies(pid: int) -> int:
    """utime + stime + cutime + cstime of ``pid`` (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return 0
    fields = text[text.rfind(")") + 2 :].split()
    return sum(int(v) for v in fields[11:15])


def proc_memory_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of ``pid`` in kB ({} when it is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def proc_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _own_jiffies_by_pid() -> dict[int, int]:
    """utime + stime of every live process."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        out[int(entry)] = int(fields[11]) + int(fields[12])
    return out


def _short(cmdline: str, width: int = 90) -> str:
    """A command line cut to its program and first arguments (paths shortened)."""
    kept = [
        w
        for w in cmdline.split()
        if not w.startswith(("-X", "-D", "--add-", "-cp")) and ":" not in w
    ]
    text = " ".join(w.rsplit("/", 1)[-1] if w.startswith(("/", ".")) else w for w in kept)
    return text[:width]


def _busy_jiffies() -> int:
    with open("/proc/stat", encoding="utf-8") as fh:
        parts = fh.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in parts[:8])
    return user + nice + system + irq + softirq + steal


@dataclass
class CpuWindow:
    """CPU used by this process tree and by everything else between ``start`` and ``stop``."""

    root: int = field(default_factory=os.getpid)
    started: float = 0.0
    load_before: list[float] = field(default_factory=list)
    _busy0: int = 0
    _ours0: int = 0
    _tree0: set[int] = field(default_factory=set)
    _all0: dict[int, int] = field(default_factory=dict)

    def start(self) -> CpuWindow:
        self.load_before = loadavg()
        self.started = time.monotonic()
        self._busy0 = _busy_jiffies()
        tree = process_tree(self.root)
        self._tree0 = set(tree)
        self._ours0 = sum(proc_jiffies(p) for p in tree)
        self._all0 = _own_jiffies_by_pid()
        return self

    def stop(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.started, 1e-9)
        busy = _busy_jiffies() - self._busy0
        tree = process_tree(self.root)
        ours = sum(proc_jiffies(p) for p in tree) - self._ours0
        others = max(busy - ours, 0) / CLK_TCK / wall
        # The busiest processes outside this tree (those alive at the end), for the record.
        mine = self._tree0 | set(tree)
        deltas = {
            pid: jiffies - self._all0.get(pid, 0)
            for pid, jiffies in _own_jiffies_by_pid().items()
            if pid not in mine
        }
        top = sorted(deltas.items(), key=lambda kv: kv[1], reverse=True)[:3]
        return {
            "wall_s": round(wall, 3),
            "load_before": self.load_before,
            "load_after": loadavg(),
            "ours_cores": round(ours / CLK_TCK / wall, 2),
            "others_cores": round(others, 2),
            "under_load": others >= OTHERS_LOAD_FLAG_CORES,
            "others_top": [
                {"cores": round(d / CLK_TCK / wall, 2), "command": _short(proc_cmdline(pid))}
                for pid, d in top
                if d / CLK_TCK / wall >= 0.05
            ],
        }


@contextlib.contextmanager
def cpu_window(record: dict[str, Any]) -> Iterator[None]:
    """Put the CPU accounting of the ``with`` block into ``record["cpu"]``."""
    window = CpuWindow().start()
    try:
        yield
    finally:
        record["cpu"] = window.stop()


class RssSampler:
    """Samples VmHWM/VmRSS of the processes in this process tree, grouped by role.

    ``classify(pid, cmdline, ancestors)`` names a process's role (or None to skip it).
    Per role it keeps the largest VmHWM of any one process and the largest sum of VmRSS
    at one instant (forked processes share pages, so the sum over-counts).
    """

    def __init__(
        self, classify: Callable[[int, str, list[int]], str | None], period_s: float = 0.5
    ) -> None:
        self.classify = classify
        self.period_s = period_s
        self.peak_hwm_kb: dict[str, int] = {}
        self.peak_sum_rss_kb: dict[str, int] = {}
        self.processes: dict[str, set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            with contextlib.suppress(Exception):
                self.sample()

    def sample(self) -> None:
        children = _children_map()
        parents = {c: p for p, cs in children.items() for c in cs}
        sums: dict[str, int] = {}
        for pid in process_tree(os.getpid(), children):
            ancestors, cur = [], pid
            while cur in parents and cur != os.getpid():
                cur = parents[cur]
                ancestors.append(cur)
            role = self.classify(pid, proc_cmdline(pid), ancestors)
            if role is None:
                continue
            mem = proc_memory_kb(pid)
            if not mem:
                continue
            with self._lock:
                self.processes.setdefault(role, set()).add(pid)
                hwm = mem.get("VmHWM", 0)
                self.peak_hwm_kb[role] = max(self.peak_hwm_kb.get(role, 0), hwm)
            sums[role] = sums.get(role, 0) + mem.get("VmRSS", 0)
        with self._lock:
            for role, total in sums.items():
                self.peak_sum_rss_kb[role] = max(self.peak_sum_rss_kb.get(role, 0), total)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        self.sample()
        with self._lock:
            return {
                role: {
                    "peak_vmhwm_mib": round(self.peak_hwm_kb.get(role, 0) / 1024, 1),
                    "peak_sum_vmrss_mib": round(self.peak_sum_rss_kb.get(role, 0) / 1024, 1),
                    "processes_seen": len(self.processes.get(role, ())),
                }
                for role in sorted(self.processes)
            }


# --- statistics and timing ----------------------------------------------------------------------


def summarise(values_s: list[float], scale: float = 1e3, digits: int = 2) -> dict[str, Any]:
    """median / p95 / p99 / min / max / mean of durations (seconds → ms by default)."""
    if not values_s:
        return {"n": 0}
    arr = np.asarray(values_s, dtype=np.float64) * scale
    return {
        "n": int(arr.size),
        "median": round(float(np.median(arr)), digits),
        "p95": round(float(np.percentile(arr, 95)), digits),
        "p99": round(float(np.percentile(arr, 99)), digits),
        "min": round(float(arr.min()), digits),
        "max": round(float(arr.max()), digits),
        "mean": round(float(arr.mean()), digits),
    }


def repeat_timed(fn: Callable[[], object], *, min_time_s: float, min_reps: int) -> list[float]:
    """Call ``fn`` until both ``min_reps`` calls and ``min_time_s`` seconds are done."""
    durations: list[float] = []
    started = time.perf_counter()
    while len(durations) < min_reps or time.perf_counter() - started < min_time_s:
        t0 = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - t0)
    return durations


def run_part(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one benchmark; record status, elapsed time, CPU/load and the error (never raise)."""
    record: dict[str, Any] = {"name": name, "started_at": utc_now()}
    started = time.perf_counter()
    print(f"[bench] {name}: started (load {loadavg()})", file=sys.stderr, flush=True)
    with cpu_window(record):
        try:
            record["results"] = fn()
            errors = record["results"].get("errors") if isinstance(record["results"], dict) else 0
            record["status"] = "partial" if errors else "ok"
        except Exception as exc:  # one benchmark's failure must not stop the others
            record["status"] = "failed"
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc(limit=20)
            print(record["traceback"], file=sys.stderr, flush=True)
    own = record.get("results", {}).get("cpu") if isinstance(record.get("results"), dict) else None
    if own:  # the benchmark measured its own window (see streaming.run)
        record["cpu"] = own
    record["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(
        f"[bench] {name}: {record['status']} in {record['elapsed_s']} s "
        f"(others used {record['cpu']['others_cores']} cores)",
        file=sys.stderr,
        flush=True,
    )
    return record


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
