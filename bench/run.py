"""Run the benchmarks and write ``bench/results/<name>.json`` and ``<name>.md``.

    python bench/run.py                     # everything (make bench; ~10-15 min on 2 cores)
    python bench/run.py --quick             # smoke run (~3 min) → bench/results/quick.*
    python bench/run.py --only scoring      # one part (repeatable: --only scoring --only training)

Each benchmark records its status, elapsed time, load average and the CPU that other
processes used meanwhile (flagged "under load" from 0.25 cores on); a failing benchmark
does not stop the others. Benchmarks are not tests: nothing here asserts a target, the
report says which targets were met.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, loadavg, log, machine_info, run_part, utc_now
from bench.report import markdown

PARTS = ("scoring", "training", "streaming")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmarks: scoring throughput/latency, streaming throughput/latency and "
        "memory, training time. Results: bench/results/<name>.json and .md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small sizes, few repetitions"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this benchmark (repeat for several; default: all)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=REPO_ROOT / "bench" / "results",
        help="where the results go (default: bench/results)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: rewrite <name>.md from <name>.json (after a report change)",
    )
    parser.add_argument(
        "--name",
        help="file name stem of the results (default: latest, or quick with --quick)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    parts = [p for p in PARTS if not args.only or p in args.only]
    name = args.name or ("quick" if args.quick else "latest")
    if args.render_only:
        stored = json.loads((args.output_dir / f"{name}.json").read_text())
        _, md_path = _write(stored, args.output_dir, name)
        print(md_path.read_text())
        return 0
    command = "python bench/run.py" + (" --quick" if args.quick else "")
    command += "".join(f" --only {p}" for p in args.only or [])

    started = time.perf_counter()
    result: dict = {
        "command": command,
        "quick": args.quick,
        "machine": machine_info(),
        "started_at": utc_now(),
        "load_before": loadavg(),
        "benchmarks": {},
    }
    log(f"machine: {result['machine']['cores']} cores, {result['machine']['cpu_model']}")
    for part in parts:
        module = __import__(f"bench.{part}", fromlist=["run"])
        result["benchmarks"][part] = run_part(part, lambda m=module: m.run(quick=args.quick))
        _write(result, args.output_dir, name)  # partial results survive a crash later on
    result["load_after"] = loadavg()
    result["finished_at"] = utc_now()
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    json_path, md_path = _write(result, args.output_dir, name)
    log(f"wrote {json_path} and {md_path} in {result['elapsed_s']} s")
    print(md_path.read_text())
    failed = [p for p, r in result["benchmarks"].items() if r["status"] == "failed"]
    return 1 if failed else 0


def _write(result: dict, out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path


if __name__ == "__main__":
    sys.exit(main())
