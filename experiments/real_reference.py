"""Does FCVAE's same-time-of-day reference help on real KPIs? Judged on VALIDATION only.

    python experiments/real_reference.py [--data-root ../shared/realdata] [--epochs 5]

For each KPI series of ``<data-root>/kpi`` (5-minute steps): the `train` part's first three
quarters train, its last quarter validates (the protocol of ``make evaluate-real``). FCVAE
is trained through ``app.train`` twice, label-free (``--label-col none``): with
``--daily-reference`` (a 7-day same-time-of-day reference for this much history) and
without (the default: no reference). Each model is scored causally by ``app.score`` and
judged on the **validation** part only: with its real labels (event F1 at the model's own
threshold, AUPRC; the validation parts hold 0–2 events each, so these are noisy), and
label-free (the threshold choice's objective on the injected validation copies, and the
median absolute error of the expected value on unlabelled validation steps). The test part
is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.evaluation import auprc, event_metrics, events_from_labels, flags_from_scores  # noqa: E402
from app.score import main as score_main  # noqa: E402
from app.train import main as train_main  # noqa: E402


def validation_csv(source: Path, out: Path) -> Path:
    raw = pd.read_csv(source)
    train = raw[raw["split"] == "train"].reset_index(drop=True)
    cut = int(len(train) * 0.75)
    train["split"] = np.where(np.arange(len(train)) < cut, "train", "val")
    train = train.rename(columns={"value": "count"})
    train[["timestamp", "count", "label", "split"]].to_csv(out, index=False)
    return out


def judge(csv: Path, models: Path, out: Path) -> dict[str, object]:
    args = ["--data-path", str(csv), "--key-col", "none", "--values", "real"]
    assert (
        score_main(
            [
                "--model-dir",
                str(models / "fcvae"),
                *args,
                "--label-col",
                "none",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    scores = pd.read_csv(out)
    truth = pd.read_csv(csv)
    merged = truth.merge(
        scores[["timestamp", "score", "threshold", "status", "expected"]], on="timestamp"
    )
    val = merged[merged["split"] == "val"].reset_index(drop=True)
    valid = (val["status"] == "scored").to_numpy()
    labels = val["label"].to_numpy().astype(bool)
    s = val["score"].to_numpy(float)
    threshold = float(val.loc[valid, "threshold"].iloc[0])
    flags = flags_from_scores(s, threshold)
    em = event_metrics(flags, events_from_labels(labels), labels, valid)
    meta = json.loads(next((models / "fcvae").glob("*/meta.json")).read_text())
    clean = valid & ~labels
    return {
        "injected_val_f1": meta["decision"]["choice"]["value"],
        "val_abs_error": float(np.median(np.abs(val["count"] - val["expected"])[clean])),
        "event_f1": em["f1"],
        "precision": em["precision"],
        "recall": em["recall"],
        "false_alarms": em["false_alarms"],
        "n_events": em["n_events"],
        "detected": em["detected"],
        "auprc": auprc(s, labels, valid),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "realdata")
    parser.add_argument("--work", type=Path, default=ROOT / ".run" / "exp_reference")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--series", nargs="*", default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for source in sorted((args.data_root / "kpi").glob("*.csv.gz")):
        name = source.name.split(".")[0][:8]
        if args.series and name not in args.series:
            continue
        csv = validation_csv(source, args.work / f"{name}.csv")
        for label, extra in (
            ("day reference", ["--daily-reference"]),
            ("no reference (default)", []),
        ):
            models = args.work / f"{name}-{'day' if extra else 'none'}"
            code = train_main(
                [
                    *("--detector", "fcvae", "--data-path", str(csv), "--key-col", "none"),
                    *("--label-col", "none", "--values", "real", "--no-progress"),
                    *("--threads", "1", "--epochs", str(args.epochs), "--kl-warmup-epochs", "2"),
                    *("--output-dir", str(models)),
                    *extra,
                ]
            )
            if code:
                rows.append({"series": name, "setting": label, "status": f"exit {code}"})
                continue
            rows.append({"series": name, "setting": label, **judge(csv, models, models / "s.csv")})
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string())
    pooled = table.groupby("setting")[["detected", "false_alarms", "n_events"]].sum()
    pooled["event_f1"] = (
        2 * pooled["detected"] / (pooled["detected"] + pooled["false_alarms"] + pooled["n_events"])
    )
    pooled["mean_auprc"] = table.groupby("setting")["auprc"].mean()
    print(pooled.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
