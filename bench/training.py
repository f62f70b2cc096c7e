"""Training time: seconds per epoch and per combo for FCVAE (W=168) and VAE+GAN, 1 and 2 threads.

Each run is the real CLI in a subprocess (``python -m app.train --detector D --epochs E
--combos Accel_CMP --threads T``), so data loading, validation and calibration are included
in the per-combo time; seconds per epoch come from the artifact's own training record
(``meta.json`` → ``fit.history.epoch_seconds``). The subprocess's peak RSS comes from
``wait4``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT, CpuWindow, log

COMBO = "Accel_CMP"


def train_once(detector: str, threads: int, epochs: int, out_dir: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "app.train",
        "--detector",
        detector,
        "--epochs",
        str(epochs),
        "--combos",
        COMBO,
        "--threads",
        str(threads),
        "--device",
        "cpu",
        "--output-dir",
        str(out_dir),
        "--no-progress",
    ]
    window = CpuWindow().start()
    started = time.perf_counter()
    log_path = out_dir / "train.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    cpu = window.stop()
    record: dict[str, Any] = {
        "detector": detector,
        "torch_threads": threads,
        "epochs_asked": epochs,
        "command": " ".join(["python", *cmd[1:-3]]),
        "exit_code": proc.returncode,
        "wall_s_per_combo": round(wall, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "cpu": cpu,
    }
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n" + "\n".join(tail))
    meta = json.loads((out_dir / detector / COMBO / "meta.json").read_text())
    fit = meta["fit"]
    epoch_s = fit["history"]["epoch_seconds"]
    record.update(
        {
            "window": meta["params"]["window"],
            "epochs_run": fit["epochs_run"],
            "fit_s": round(fit["seconds"], 2),
            "s_per_epoch_median": round(float(np.median(epoch_s)), 3),
            "s_per_epoch_all": [round(v, 3) for v in epoch_s],
            "n_train_windows": fit["n_train_windows"],
            "n_val_windows": fit["n_val_windows"],
        }
    )
    return record


def run(quick: bool = False) -> dict[str, Any]:
    epochs = 2 if quick else 5
    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for detector in ("fcvae", "vaegan"):
            for threads in (1, 2):
                log(f"training: {detector}, {threads} thread(s), {epochs} epochs")
                try:
                    runs.append(
                        train_once(detector, threads, epochs, Path(tmp) / f"{detector}-{threads}")
                    )
                except Exception as exc:  # the other runs go on
                    errors.append(f"{detector}/{threads} threads: {type(exc).__name__}: {exc}")
    if errors and not runs:
        raise RuntimeError("; ".join(errors))
    return {"combo": COMBO, "epochs": epochs, "runs": runs, "errors": errors}
