"""Golden scores: the shipped models on the demo CSV's test split, fixed before refactors.

Every score, calibrated score, expected band, threshold and flag that the shipped models
give the demo data's test split (``make evaluate``'s records) is stored in
``tests/golden/demo_test_scores.csv.gz``; a restructuring of the detectors, the decision or
the model layout must leave them unchanged. Flags, statuses and thresholds must match
exactly; float scores to 1e-6 relative — the networks run in float32, and another CPU's
kernels (AVX2 against AVX-512) may round the last bits differently. On the machine that
wrote the file they are identical; ``test_golden_is_bit_identical_here`` says whether this
machine reproduces them bit for bit (it skips, rather than fails, where the CPU differs).

Rewrite the file, only when a change of scores is intended and explained in its commit:
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/contract/test_golden_scores.py``.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data import load_counts
from app.evaluate import score_test
from app.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "demo_test_scores.csv.gz"
FLOATS = [
    "score",
    "threshold",
    "fcvae_score",
    "fcvae_calibrated",
    "vaegan_score",
    "vaegan_calibrated",
    "expected",
    "expected_low",
    "expected_high",
]
EXACT = ["combo", "hour", "status", "is_anomaly", "direction"]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _scores(detector: str) -> pd.DataFrame:
    frame = load_counts(ROOT / "data" / "synthetic_transactions.csv")
    registry = ModelRegistry(ROOT / "models", detector=detector)
    scored = score_test(frame, registry, registry.window(), max_gap=6)
    floats = FLOATS if detector == "ensemble" else FLOATS[:2]  # FCVAE's are the ensemble's
    out = scored[EXACT + floats].copy()
    out.insert(0, "detector", detector)
    return out.reset_index(drop=True)


@pytest.fixture(scope="module")
def current() -> pd.DataFrame:
    return pd.concat([_scores(d) for d in ("ensemble", "fcvae")], ignore_index=True)


def _digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(frame.to_csv(index=False, float_format="%.17g").encode()).hexdigest()


def test_shipped_models_give_the_golden_scores(current: pd.DataFrame) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        current.to_csv(GOLDEN, index=False, float_format="%.9g")  # digest: all 17 digits
        (GOLDEN.with_suffix("").with_suffix(".sha256")).write_text(
            f"{_digest(current)}  written on: {_cpu()}\n"
        )
    golden = pd.read_csv(GOLDEN, keep_default_na=False, na_values=[""])
    assert len(current) == len(golden) > 2000
    for column in ["detector", *EXACT]:
        got = current[column].astype(str).replace({"None": "", "nan": ""}).to_numpy()
        want = golden[column].astype(str).replace({"nan": ""}).to_numpy()
        assert (got == want).all(), (column, np.flatnonzero(got != want)[:5])
    for column in FLOATS:
        if column not in golden.columns:
            continue
        got = current[column].to_numpy(dtype=np.float64)
        want = golden[column].to_numpy(dtype=np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=column)


def test_golden_is_bit_identical_here(current: pd.DataFrame) -> None:
    recorded, _, machine = (
        GOLDEN.with_suffix("").with_suffix(".sha256").read_text().partition("  written on: ")
    )
    if machine.strip() != _cpu():
        pytest.skip(f"golden written on {machine.strip()!r}, this is {_cpu()!r}")
    assert _digest(current) == recorded.strip()
