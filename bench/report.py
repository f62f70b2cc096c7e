"""The Markdown report of a results dict (``bench/results/<name>.md``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.common import machine_line


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:,.{digits}f}"
        return f"{value:.{digits + 1 if abs(value) >= 1 else digits + 2}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _results(result: dict[str, Any], part: str) -> dict[str, Any] | None:
    record = result.get("benchmarks", {}).get(part)
    if not record or record.get("status") not in ("ok", "partial"):
        return None
    return record.get("results")


def _load_note(cpu: dict[str, Any] | None) -> str:
    if not cpu:
        return ""
    flag = " — **under load**" if cpu.get("under_load") else ""
    return (
        f"load avg {cpu.get('load_before')} → {cpu.get('load_after')}, other processes used "
        f"{cpu.get('others_cores')} cores{flag}"
    )


def _summary(result: dict[str, Any]) -> list[str]:
    rows = []
    for part, rec in result.get("benchmarks", {}).items():
        cpu = rec.get("cpu", {})
        rows.append(
            [
                part,
                rec.get("status"),
                f"{rec.get('elapsed_s')} s",
                f"{cpu.get('load_before')} → {cpu.get('load_after')}",
                cpu.get("ours_cores"),
                cpu.get("others_cores"),
                "**yes**" if cpu.get("under_load") else "no",
            ]
        )
    lines = _table(
        [
            "benchmark",
            "status",
            "elapsed",
            "load avg before → after",
            "our cores",
            "others' cores",
            "under load",
        ],
        rows,
    )
    for part, rec in result.get("benchmarks", {}).items():
        top = (rec.get("cpu") or {}).get("others_top") or []
        if top:
            busiest = "; ".join(f"`{t['command']}` {t['cores']} cores" for t in top)
            lines.append(f"\nBusiest other processes during `{part}`: {busiest}.")
        if rec.get("error"):
            lines.append(f"\n`{part}` failed: {rec['error']}")
        for err in (rec.get("results") or {}).get("errors", []) or []:
            lines.append(f"\n`{part}`: {err}")
    return lines


def _targets(result: dict[str, Any]) -> list[str]:
    sc = _results(result, "scoring")
    if not sc:
        return []
    v = sc["verdict"]
    by = sc["by_threads"]

    def best(key: str, what: str) -> tuple[str, dict[str, Any]]:
        """The thread count with the lowest median latency for ``key``, and its figures."""
        t = min(by, key=lambda k: by[k][what][key]["median"] if what == "latency_ms" else 0)
        return t, by[t][what][key]

    tp, padded = best("fcvae_padded", "latency_ms")
    tu, unpadded = best("fcvae_unpadded", "latency_ms")
    fastest = max(((t, r) for t in by for r in by[t]["fcvae"]), key=lambda tr: tr[1]["hours_per_s"])
    return _table(
        ["target", "measured", "met"],
        [
            [
                "FCVAE ≥ 50,000 scored hours/s",
                f"{_fmt(v['fcvae_best_hours_per_s'])} hours/s (best: batch "
                f"{fastest[1]['batch']}, {fastest[0]} thread(s))",
                v["fcvae_throughput_target_met"],
            ],
            [
                "single-window latency ≤ 2 ms",
                f"`score_details`: {_fmt(padded['median'], 2)} ms median, "
                f"{_fmt(padded['p99'], 2)} ms p99 ({tp} thread(s)); network alone, unpadded: "
                f"{_fmt(unpadded['median'], 2)} ms median, {_fmt(unpadded['p99'], 2)} ms p99 "
                f"({tu} thread(s))",
                v["latency_target_met"],
            ],
        ],
    )


def _rate(cell: dict[str, Any]) -> str:
    """``median (slowest–fastest)`` hours/s of a throughput cell (older results: the one rate)."""
    spread = cell.get("hours_per_s_range")
    if not spread:
        return _fmt(cell["hours_per_s"])
    return f"{_fmt(cell['hours_per_s'])} ({_fmt(spread[0])}–{_fmt(spread[1])})"


def _scoring(result: dict[str, Any]) -> list[str]:
    sc = _results(result, "scoring")
    if not sc:
        return []
    f = sc["fcvae"]
    lines = [
        f"Shipped models of `{sc['combo']}`, real windows from the demo CSV. "
        f"FCVAE: W={f['window']} + {f.get('reference_weeks', 0)} reference weeks (windows of "
        f"{f.get('scored_window', f['window'])} hours), N_SAMPLES={f['n_samples']}, "
        f"{f['mcmc_rounds']} MCMC rounds, chunks of "
        f"{f['score_chunk']} rows; ensemble = `ModelRegistry('models').bundle(combo).score` "
        f"(FCVAE + VAE+GAN W={sc['vaegan_window']} + calibration + decision). "
        "Scored hours per second: batch size ÷ the median call (≥ 5 calls over ≥ 1.5 s; fewer with "
        "`--quick`), with the "
        "slowest and fastest call's rate in brackets (the JSON also has the mean):",
        "",
    ]
    threads = sorted(sc["by_threads"])
    header = ["batch size"] + [f"{d} ({t} thr)" for d in ("FCVAE", "ensemble") for t in threads]
    rows = []
    for i, batch in enumerate(sc["by_threads"][threads[0]]["fcvae"]):
        row: list[Any] = [batch["batch"]]
        for d in ("fcvae", "ensemble"):
            row += [_rate(sc["by_threads"][t][d][i]) for t in threads]
        rows.append(row)
    naive = {t: sc["by_threads"][t]["naive_loop"] for t in threads}
    rows.append(
        ["naive loop, 1 window per `score_details` call"]
        + [naive[t]["fcvae_padded"]["hours_per_s"] for t in threads]
        + [naive[t]["ensemble_padded"]["hours_per_s"] for t in threads]
    )
    rows.append(
        ["naive loop, 1 window, unpadded (reference style)"]
        + [naive[t]["fcvae_unpadded"]["hours_per_s"] for t in threads]
        + [None for _ in threads]
    )
    ratio = {t: sc["by_threads"][t]["ratio_batched_vs_naive"] for t in threads}
    rows.append(
        ["best batch ÷ unpadded naive loop"]
        + [f"{ratio[t]['fcvae_vs_unpadded_loop']}×" for t in threads]
        + [None for _ in threads]
    )
    rows.append(
        ["best batch ÷ padded naive loop"]
        + [f"{ratio[t]['fcvae_vs_padded_loop']}×" for t in threads]
        + [f"{ratio[t]['ensemble_vs_padded_loop']}×" for t in threads]
    )
    lines += _table(header, rows)
    lines.append("")
    for t in threads:
        lines.append(f"- {t} thread(s): {_load_note(sc['by_threads'][t].get('cpu'))}")
    lines += ["", "Single-window latency, ms (median / p99, n calls):", ""]
    lat_rows = []
    for key, label in (
        (
            "fcvae_padded",
            "FCVAE `score_details` (1 window padded to a "
            f"{sc.get('fcvae', {}).get('score_chunk', 512)}-row chunk)",
        ),
        ("fcvae_unpadded", "FCVAE network on a 1-row batch (no padding)"),
        ("ensemble_padded", "ensemble bundle `score` (1 window)"),
    ):
        row = [label]
        for t in threads:
            s = sc["by_threads"][t]["latency_ms"][key]
            row.append(f"{s['median']:.2f} / {s['p99']:.2f} (n={s['n']})")
        lat_rows.append(row)
    lines += _table(["path"] + [f"{t} thread(s)" for t in threads], lat_rows)
    lines.append(
        f"\nUnpadded vs padded score of the same windows: max |Δ| = "
        f"{sc['unpadded_max_abs_diff']:.1e} (same computation; the padding buys bit-exact "
        "batch independence)."
    )
    return lines


def _profile(result: dict[str, Any]) -> list[str]:
    sc = _results(result, "scoring")
    if not sc or "profile" not in sc:
        return []
    prof = sc["profile"]
    split = prof["split"]
    total = split["score_details_ms"] or 1.0
    rows = [
        [k.removesuffix("_ms").replace("_", " "), v, f"{100 * v / total:.0f}%"]
        for k, v in split.items()
        if k != "score_details_ms"
    ]
    rows.append(["total `score_details`", total, "100%"])
    lines = [
        f"One FCVAE chunk ({prof['chunk_rows']} windows, 1 thread), fastest of 7 calls, ms "
        "(draws, condition and the whole network timed on their own; numpy = the rest):",
        "",
    ]
    lines += _table(["part", "ms", "share"], rows)
    lines += ["", "Top torch operators (torch.profiler, self CPU):", ""]
    lines += _table(
        ["op", "calls", "self CPU ms", "share"],
        [
            [o["op"], o["calls"], o["self_cpu_ms"], f"{100 * o['share']:.0f}%"]
            for o in prof["torch_ops"][:8]
        ],
    )
    return lines


def _streaming(result: dict[str, Any]) -> list[str]:
    st = _results(result, "streaming")
    if not st:
        return []
    spark = st["spark"]
    lines = [
        f"Spark `{spark['master']}`, {spark['shuffle_partitions']} shuffle partitions, "
        f"{spark['kafka_partitions']} Kafka partitions, torch threads per Python worker "
        f"{spark['torch_threads_per_python_worker']}; throughput runs: trigger "
        f"{spark['throughput_trigger']}; broker start {st.get('broker_start_s')} s, "
        f"SparkSession start {st.get('spark_session_start_s')} s.",
        "",
    ]
    for key, m in (st.get("model_sets") or {}).items():
        lines.append(
            f"- `{key}`: {m['description']} (bundle load {m['bundle_load_ms']} ms per combo)"
        )
    lines.append("")
    rows = []
    for s in st.get("scenarios", []):
        warm = next((p for p in s["phases"] if p["phase"] == "warm-up"), None)
        for p in s["phases"]:
            if p["phase"] == "warm-up":
                continue
            b = p["batches"][0] if p["batches"] else {}
            d = b.get("durationMs") or {}
            rows.append(
                [
                    s["scenario"],
                    s["models"],
                    s["combos"],
                    p["phase"],
                    p["hours_per_combo"],
                    p["rows"],
                    p["wall_s"],
                    p["rows_per_s_wall"],
                    p["rows_per_s_progress"],
                    d.get("addBatch"),
                    d.get("addBatch") and round(d["addBatch"] / s["combos"], 1),
                    warm and f"{warm['rows']:,} in {warm['wall_s']} s",
                    p["cpu"]["others_cores"],
                ]
            )
    lines += _table(
        [
            "scenario",
            "models",
            "combos",
            "run",
            "h/combo",
            "scored hours",
            "wall s",
            "hours/s (wall)",
            "hours/s (progress)",
            "addBatch ms",
            "addBatch ms per combo",
            "warm-up rows (state only)",
            "others' cores",
        ],
        rows,
    )
    lat = st.get("latency")
    if lat:
        a = lat["scored_at_minus_produced_at_ms"]
        k = lat["kafka_timestamp_minus_produced_at_ms"]
        b = lat["batch_trigger_execution_ms"]
        lines += [
            "",
            f"Latency: {lat['models']}, combos {', '.join(lat['combos'])}, "
            f"{lat['achieved_rate_msgs_per_s']} msgs/s for {lat['send_s']} s, trigger "
            f"{lat['trigger']}, dashboard running:",
            "",
        ]
        lines += _table(
            ["latency (ms)", "median", "p95", "p99", "max", "n"],
            [
                ["`scored_at − produced_at`", a["median"], a["p95"], a["p99"], a["max"], a["n"]],
                [
                    "scored record's Kafka timestamp − `produced_at`",
                    k["median"],
                    k["p95"],
                    k["p99"],
                    k["max"],
                    k["n"],
                ],
                [
                    "micro-batch `triggerExecution`",
                    b["median"],
                    b["p95"],
                    b["p99"],
                    b["max"],
                    b["n"],
                ],
            ],
        )
        lines.append(
            f"\nMedian latency first half {lat['median_latency_first_half_ms']} ms, second half "
            f"{lat['median_latency_second_half_ms']} ms (no growing backlog when these agree); "
            f"{_fmt(lat['batch_messages_median'])} messages per micro-batch; all sent hours "
            f"scored {lat['drain_after_send_s']} s after the last send; "
            f"{_load_note(lat.get('cpu'))}."
        )
        mb = lat.get("median_batch")
        if mb:
            lines.append(
                "Median micro-batch `durationMs`: "
                + ", ".join(f"{k} {v}" for k, v in mb["durationMs"].items())
                + "."
            )
    split = st.get("python_side_split") or []
    if split:
        lines += [
            "",
            "The job's Python functions on one steady micro-batch outside Spark (1 core):",
            "",
        ]
        lines += _table(
            [
                "models",
                "combos × hours",
                "state fn s",
                "score fn s (cached)",
                "score ms per combo",
                "first call s (loads models)",
                "rows/s on 1 core",
            ],
            [
                [
                    p["models"],
                    f"{p['combos']} × {p['hours_per_combo']}",
                    p["state_function_s"],
                    p["score_function_cached_s"],
                    p["score_ms_per_combo_cached"],
                    p["score_function_first_call_s"],
                    p["single_core_rows_per_s"],
                ]
                for p in split
            ],
        )
    return lines


def _memory(result: dict[str, Any]) -> list[str]:
    st = _results(result, "streaming")
    if not st or "memory_all_runs" not in st:
        return []
    product = st.get("memory_product_run") or {}
    every = st["memory_all_runs"]
    rows = []
    for role in sorted(set(product) | set(every)):
        p, e = product.get(role, {}), every.get(role, {})
        rows.append(
            [
                role,
                p.get("peak_vmhwm_mib"),
                p.get("peak_sum_vmrss_mib"),
                e.get("peak_vmhwm_mib"),
                e.get("peak_sum_vmrss_mib"),
                e.get("processes_seen"),
            ]
        )
    lines = [
        "Peak resident memory, MiB (VmHWM of the largest process of each kind; Σ VmRSS = "
        "the largest sum at one instant, over-counting pages shared after fork):",
        "",
    ]
    lines += _table(
        [
            "process",
            "latency run: max VmHWM",
            "latency run: Σ VmRSS",
            "all runs: max VmHWM",
            "all runs: Σ VmRSS",
            "processes",
        ],
        rows,
    )
    return lines


def _training(result: dict[str, Any]) -> list[str]:
    tr = _results(result, "training")
    if not tr:
        return []
    lines = [
        f"One combo (`{tr['combo']}`), `--epochs {tr['epochs']}`, real CLI in a subprocess; "
        "s/epoch from the artifact's training record; per combo = the whole CLI run (data, "
        "training, validation, calibration, saving):",
        "",
    ]
    rows = [
        [
            r["detector"],
            r.get("window"),
            r["torch_threads"],
            r.get("epochs_run"),
            r.get("s_per_epoch_median"),
            r.get("fit_s"),
            r["wall_s_per_combo"],
            r["peak_rss_mib"],
            r["cpu"]["others_cores"],
        ]
        for r in tr["runs"]
    ]
    lines += _table(
        [
            "detector",
            "W",
            "threads",
            "epochs",
            "s/epoch",
            "fit s",
            "per combo s",
            "peak RSS MiB",
            "others' cores",
        ],
        rows,
    )
    return lines


def _chunks(result: dict[str, Any]) -> list[str]:
    sc = _results(result, "scoring")
    if not sc or not sc.get("chunk_what_if"):
        return []
    shipped = sc.get("fcvae", {}).get("score_chunk", 512)
    lines = [
        "FCVAE with another `SCORE_CHUNK` (module constant patched for the measurement; "
        f"1 thread; shipped: {shipped}):",
        "",
    ]
    lines += _table(
        [
            "chunk rows",
            "single window ms (median / p99)",
            "hours/s on 4096 windows",
            f"max score change vs {shipped}",
            "alone = in batch, bitwise",
        ],
        [
            [
                r["chunk"],
                f"{r['latency_ms']['median']:.2f} / {r['latency_ms']['p99']:.2f}",
                r["hours_per_s_4096"],
                f"{r.get('max_abs_diff_vs_shipped', r.get('max_abs_diff_vs_512')):.1e}",
                r["alone_equals_batch_bitwise"],
            ]
            for r in sc["chunk_what_if"]
        ],
    )
    lfm = sc.get("lfm_all_tokens_comparison")
    if lfm:
        lines.append(
            "\nThe shipped FCVAE scorer runs the LFM's Transformer layer for the last token only "
            f"(1 thread, 4096 windows): {_fmt(lfm['hours_per_s_4096_shipped'])} hours/s against "
            f"{_fmt(lfm['hours_per_s_4096_all_tokens'])} with every token ({lfm['speedup']}×); "
            f"scores differ by at most {lfm['max_abs_score_diff']:.1e} (relative "
            f"{lfm['max_rel_score_diff']:.1e}): float rounding, the same function."
        )
    lfm = sc.get("lfm_last_token_what_if")  # results from before the change shipped
    if lfm:
        lines.append(
            "\nFCVAE whose LFM runs its Transformer layer for the last token only (the only "
            "token it outputs; bench-only patch, 1 thread, 4096 windows): "
            f"{_fmt(lfm['hours_per_s_4096_last_token_lfm'])} hours/s against "
            f"{_fmt(lfm['hours_per_s_4096_shipped'])} ({lfm['speedup']}×); scores change by at "
            f"most {lfm['max_abs_score_diff']:.1e} (relative {lfm['max_rel_score_diff']:.1e}): "
            "float rounding, the same function. With 128-row chunks as well: "
            f"{_fmt(lfm.get('hours_per_s_4096_last_token_lfm_chunk_128'))} hours/s."
        )
    return lines


SECTIONS: list[tuple[str, Callable[[dict[str, Any]], list[str]]]] = [
    ("Targets", _targets),
    ("Scoring throughput and latency", _scoring),
    ("Where one FCVAE chunk spends its time", _profile),
    ("Chunk size: latency against throughput", _chunks),
    ("Streaming", _streaming),
    ("Memory during the streaming runs", _memory),
    ("Training", _training),
]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results" + (" (quick smoke run)" if result.get("quick") else ""),
        "",
        f"Machine: {machine_line(result.get('machine', {}))}",
        "",
        f"Command: `{result.get('command')}`; load average before {result.get('load_before')}, "
        f"after {result.get('load_after', '—')}; total {result.get('elapsed_s', '—')} s.",
        "",
    ]
    lines += _summary(result)
    for title, section in SECTIONS:
        try:
            body = section(result)
        except Exception as exc:  # a report must come out even from odd results
            body = [f"(section failed: {type(exc).__name__}: {exc})"]
        if body:
            lines += ["", f"## {title}", "", *body]
    return "\n".join(lines) + "\n"
