"""Scoring throughput and single-window latency of the shipped FCVAE and ensemble bundle.

What is measured, per torch thread count (1 and 2):

* scored hours per second for batch sizes 1, 16, 256, 1024, 4096 through
  ``FCVAEDetector.score_details`` (W=168, N_SAMPLES=16, 10 MCMC rounds) and through the
  ensemble bundle (``ModelRegistry("models").bundle(combo).score``: FCVAE + VAE+GAN +
  calibration + decision);
* two naive loops that score one window per call: through ``score_details`` (our code: every
  call pads its one window to a full chunk of ``SCORE_CHUNK`` rows) and through the network
  directly without padding (what reference implementations do); the batched throughput is
  reported as a ratio to both;
* single-window latency (median, p99 over >= 50 calls) padded and unpadded.

Plus a profile of one FCVAE chunk (torch.profiler operator table, cProfile functions and a
coarse split into draws / condition / MCMC + sampling / numpy).
"""

from __future__ import annotations

import cProfile
import pstats
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bench.common import CpuWindow, log, repeat_timed, summarise

BATCH_SIZES = (1, 16, 256, 1024, 4096)
COMBO = "Accel_CMP"
FCVAE_TARGET_HOURS_PER_S = 50_000
LATENCY_TARGET_MS = 2.0


def real_windows(
    combo: str, window: int, n: int, data_path: Path | None = None
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """``n`` windows of the demo CSV's ``combo`` series (tiled when too short) and their seeds.

    Missing hours are interpolated so every window is scoreable; the cost does not depend on
    the values.
    """
    from app.data import load_counts
    from app.timebase import window_seed
    from producer.producer import ProducerSettings

    frame = load_counts(data_path or ProducerSettings().data_path)
    series = frame.loc[frame["combo"] == combo, "value"]
    values = pd.Series(series.to_numpy()).interpolate(limit_direction="both").to_numpy()
    need = n + window - 1
    values = np.tile(values, need // len(values) + 1)[:need]
    windows = np.lib.stride_tricks.sliding_window_view(values, window).astype(np.float64)
    base_step = 480_000
    seeds = np.array([window_seed(combo, base_step + i) for i in range(n)], dtype=np.int64)
    return np.ascontiguousarray(windows[:n]), seeds


def score_unpadded(detector: Any, window: NDArray[np.float64], seed: int) -> float:
    """FCVAE's score of one window computed on a 1-row batch (no padding to a chunk).

    The same computation as ``FCVAEDetector.score_details`` for one row, minus the padding
    that makes scores batch-independent bit for bit: the "one window at a time" loop of a
    reference implementation.
    """
    import torch

    from app.detectors.draws import window_normals
    from app.detectors.fcvae.loss import LOG_2PI

    p = detector.params
    units, _ = detector._window_units(window[None, :])  # cleaning and reference included
    x = np.where(np.isnan(units), 0.0, units).astype(np.float32)
    rounds = p.mcmc_rounds
    draws = (rounds + p.n_samples) * p.latent_dim
    with torch.inference_mode():
        eps = torch.from_numpy(window_normals(np.array([seed], dtype=np.int64), draws)).view(
            1, rounds + p.n_samples, p.latent_dim
        )
        mu_t, var_t = detector.network.last_point_samples(
            torch.from_numpy(x), eps[:, :rounds], eps[:, rounds:], mcmc_sample=p.mcmc_sample
        )
    mu, var = mu_t.numpy().astype(np.float64), var_t.numpy().astype(np.float64)
    last = x[:, -1:].astype(np.float64)
    return float(-(-0.5 * (LOG_2PI + np.log(var) + (last - mu) ** 2 / var)).mean())


def _throughput(
    score: Any, windows: NDArray[np.float64], seeds: NDArray[np.int64], batch: int, quick: bool
) -> dict[str, Any]:
    w, s = windows[:batch], seeds[:batch]
    score(w, s)  # warm-up (first-call allocations)
    durations = repeat_timed(
        lambda: score(w, s), min_time_s=0.3 if quick else 1.5, min_reps=1 if quick else 5
    )
    total = float(np.sum(durations))
    return {
        "batch": batch,
        "calls": len(durations),
        "ms_per_call_min": round(float(np.min(durations)) * 1e3, 2),
        "ms_per_call_median": round(float(np.median(durations)) * 1e3, 2),
        # The median call (what a user sees), and the spread from the slowest to the fastest.
        "hours_per_s": round(batch / float(np.median(durations)), 1),
        "hours_per_s_range": [
            round(batch / float(np.max(durations)), 1),
            round(batch / float(np.min(durations)), 1),
        ],
        "hours_per_s_mean": round(batch * len(durations) / total, 1),
    }


def _naive_loop(score_one: Any, windows: NDArray[np.float64], seeds: NDArray[np.int64], n: int):
    started = time.perf_counter()
    for i in range(n):
        score_one(windows[i], int(seeds[i]))
    elapsed = time.perf_counter() - started
    return {"windows": n, "seconds": round(elapsed, 3), "hours_per_s": round(n / elapsed, 2)}


def _latency(score_one: Any, windows: NDArray[np.float64], seeds: NDArray[np.int64], reps: int):
    durations = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        score_one(windows[i % len(windows)], int(seeds[i % len(seeds)]))
        durations.append(time.perf_counter() - t0)
    return summarise(durations[1:])  # the first call is a warm-up


def profile_chunk(detector: Any, windows: NDArray[np.float64], seeds: NDArray[np.int64]):
    """Where one full FCVAE chunk (512 windows, 1 thread) spends its time."""
    import torch

    from app.detectors.draws import window_normals
    from app.detectors.fcvae.detector import SCORE_CHUNK

    p = detector.params
    w, s = windows[:SCORE_CHUNK], seeds[:SCORE_CHUNK]
    detector.score_details(w, s)
    reps = 7
    x = torch.from_numpy(
        np.nan_to_num(detector._window_units(w)[0]).astype(np.float32)
    ).contiguous()
    draws = (p.mcmc_rounds + p.n_samples) * p.latent_dim
    eps = torch.from_numpy(window_normals(s, draws)).view(
        SCORE_CHUNK, p.mcmc_rounds + p.n_samples, p.latent_dim
    )
    net = detector.network

    def med(fn: Any) -> float:  # the fastest of a few calls: least disturbed by other load
        return float(np.min(repeat_timed(fn, min_time_s=0.0, min_reps=reps))) * 1e3

    with torch.inference_mode():
        t_total = med(lambda: detector.score_details(w, s))
        t_draws = med(lambda: window_normals(s, draws))
        t_condition = med(lambda: net.condition(x, last_only=True))  # as scoring runs it
        t_network = med(
            lambda: net.last_point_samples(
                x, eps[:, : p.mcmc_rounds], eps[:, p.mcmc_rounds :], mcmc_sample=p.mcmc_sample
            )
        )
    split = {
        "score_details_ms": round(t_total, 2),
        "counter_based_draws_ms": round(t_draws, 2),
        "condition_gfm_lfm_ms": round(t_condition, 2),
        "mcmc_rounds_and_sampling_ms": round(t_network - t_condition, 2),
        "numpy_normalise_and_density_ms": round(t_total - t_network - t_draws, 2),
    }

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        detector.score_details(w, s)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    op_total = sum(e.self_cpu_time_total for e in ops) or 1.0
    top_ops = [
        {
            "op": e.key,
            "calls": e.count,
            "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2),
            "share": round(e.self_cpu_time_total / op_total, 3),
        }
        for e in ops[:12]
    ]

    profiler = cProfile.Profile()
    profiler.enable()
    detector.score_details(w, s)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    root = Path(__file__).resolve().parents[1]
    funcs = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.items():
        if str(root / "app") in filename:
            rel = Path(filename).relative_to(root)
            funcs.append(
                {
                    "function": f"{rel}:{line}:{name}",
                    "calls": ncalls,
                    "cum_ms": round(cumtime * 1e3, 2),
                    "own_ms": round(tottime * 1e3, 2),
                }
            )
    funcs.sort(key=lambda f: f["cum_ms"], reverse=True)
    return {"chunk_rows": SCORE_CHUNK, "split": split, "torch_ops": top_ops, "cprofile": funcs[:12]}


def chunk_what_if(
    detector: Any, windows: NDArray[np.float64], seeds: NDArray[np.int64], quick: bool
) -> list[dict[str, Any]]:
    """What another ``SCORE_CHUNK`` would cost and give (1 thread; against the shipped value).

    Patches the module constant for the measurement only. Reports single-window latency,
    throughput on 4096 windows, the largest score change against 512-row chunks, and
    whether a window alone still scores bit for bit as inside a batch of 256.
    """
    import app.detectors.fcvae.detector as fcvae_module

    original = fcvae_module.SCORE_CHUNK
    w, s = windows[:256], seeds[:256]
    reference = detector.score_details(w, s).score

    def one(x: Any, seed: int) -> Any:
        return detector.score_details(x[None, :], np.array([seed], dtype=np.int64))

    chunks = (512, 16, 64, 128)
    best: dict[int, dict[str, Any]] = {}
    try:
        # Two passes in opposite orders; each chunk keeps its best figures (less load drift).
        for chunk in (*chunks, *reversed(chunks)):
            fcvae_module.SCORE_CHUNK = chunk
            batch = detector.score_details(w, s).score
            alone = np.array(
                [detector.score_details(w[i : i + 1], s[i : i + 1]).score[0] for i in range(8)]
            )
            latency = _latency(one, windows, seeds, 10 if quick else 30)
            rate = _throughput(detector.score_details, windows, seeds, 4096, quick)
            row = best.setdefault(
                chunk,
                {
                    "chunk": chunk,
                    "latency_ms": latency,
                    "hours_per_s_4096": 0.0,
                    "max_abs_diff_vs_shipped": 0.0,
                    "alone_equals_batch_bitwise": True,
                },
            )
            if latency["median"] < row["latency_ms"]["median"]:
                row["latency_ms"] = latency
            row["hours_per_s_4096"] = max(row["hours_per_s_4096"], rate["hours_per_s"])
            row["max_abs_diff_vs_shipped"] = max(
                row["max_abs_diff_vs_shipped"], float(np.max(np.abs(batch - reference)))
            )
            row["alone_equals_batch_bitwise"] &= bool(np.array_equal(alone, batch[:8]))
    finally:
        fcvae_module.SCORE_CHUNK = original
    return [best[c] for c in sorted(best)]


def lfm_all_tokens_comparison(
    detector: Any, windows: NDArray[np.float64], seeds: NDArray[np.int64], quick: bool
) -> dict[str, Any]:
    """Throughput (1 thread, 4096 windows) of the shipped scorer, whose LFM runs its
    Transformer layer for the last token only, against the same model running it for every
    token (as training and the reference do), and the score change between the two."""
    lfm = detector.network.lfm
    shipped = _throughput(detector.score_details, windows, seeds, 4096, quick)["hours_per_s"]
    reference = detector.score_details(windows[:512], seeds[:512]).score
    every_token = type(lfm).forward
    lfm.forward = lambda x, **_: every_token(lfm, x, last_only=False)
    try:
        full = _throughput(detector.score_details, windows, seeds, 4096, quick)["hours_per_s"]
        changed = detector.score_details(windows[:512], seeds[:512]).score
    finally:
        del lfm.forward  # back to the class's method
    return {
        "hours_per_s_4096_shipped": shipped,
        "hours_per_s_4096_all_tokens": full,
        "speedup": round(shipped / full, 2),
        "max_abs_score_diff": float(np.max(np.abs(changed - reference))),
        "max_rel_score_diff": float(np.max(np.abs(changed - reference) / np.abs(reference))),
    }


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    from app.detectors.fcvae.detector import SCORE_CHUNK
    from app.registry import ModelRegistry

    registry = ModelRegistry("models")
    bundle = registry.bundle(COMBO)
    fcvae = bundle.primary
    p = fcvae.params
    windows, seeds = real_windows(COMBO, bundle.window, max(BATCH_SIZES))
    out: dict[str, Any] = {
        "combo": COMBO,
        "fcvae": {
            "window": p.window,
            "reference_weeks": p.reference_weeks,
            "scored_window": fcvae.window,
            "n_samples": p.n_samples,
            "mcmc_rounds": p.mcmc_rounds,
            "score_chunk": SCORE_CHUNK,
        },
        "bundle_detector": bundle.detector,
        "vaegan_window": bundle.models["vaegan"].window if "vaegan" in bundle.models else None,
        "targets": {
            "fcvae_hours_per_s": FCVAE_TARGET_HOURS_PER_S,
            "single_window_latency_ms": LATENCY_TARGET_MS,
        },
        "by_threads": {},
    }
    reps = 10 if quick else 60
    naive_n = 3 if quick else 12
    original_threads = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            log(f"scoring: {threads} torch thread(s)")
            res: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
            window = CpuWindow().start()
            res["fcvae"] = [
                _throughput(fcvae.score_details, windows, seeds, b, quick) for b in BATCH_SIZES
            ]
            res["ensemble"] = [
                _throughput(bundle.score, windows, seeds, b, quick) for b in BATCH_SIZES
            ]

            def fcvae_one(w: Any, s: int) -> Any:
                return fcvae.score_details(w[None, :], np.array([s], dtype=np.int64))

            def bundle_one(w: Any, s: int) -> Any:
                return bundle.score(w[None, :], np.array([s], dtype=np.int64))

            def unpadded_one(w: Any, s: int) -> float:
                return score_unpadded(fcvae, w, s)

            res["naive_loop"] = {
                "fcvae_padded": _naive_loop(fcvae_one, windows, seeds, naive_n),
                "fcvae_unpadded": _naive_loop(unpadded_one, windows, seeds, naive_n * 20),
                "ensemble_padded": _naive_loop(bundle_one, windows, seeds, naive_n),
            }
            best_fcvae = max(r["hours_per_s"] for r in res["fcvae"])
            best_bundle = max(r["hours_per_s"] for r in res["ensemble"])
            naive = res["naive_loop"]
            res["ratio_batched_vs_naive"] = {
                "fcvae_vs_unpadded_loop": round(
                    best_fcvae / naive["fcvae_unpadded"]["hours_per_s"], 1
                ),
                "fcvae_vs_padded_loop": round(best_fcvae / naive["fcvae_padded"]["hours_per_s"], 1),
                "ensemble_vs_padded_loop": round(
                    best_bundle / naive["ensemble_padded"]["hours_per_s"], 1
                ),
            }
            res["latency_ms"] = {
                "fcvae_padded": _latency(fcvae_one, windows, seeds, reps),
                "fcvae_unpadded": _latency(unpadded_one, windows, seeds, reps),
                "ensemble_padded": _latency(bundle_one, windows, seeds, reps),
            }
            res["cpu"] = window.stop()
            out["by_threads"][str(threads)] = res
        # The unpadded path is the same computation: its score must agree with the batch's.
        torch.set_num_threads(1)
        padded = fcvae.score_details(windows[:8], seeds[:8]).score
        unpadded = np.array([score_unpadded(fcvae, windows[i], int(seeds[i])) for i in range(8)])
        out["unpadded_max_abs_diff"] = float(np.max(np.abs(padded - unpadded)))
        log("scoring: other chunk sizes (what-if)")
        out["chunk_what_if"] = chunk_what_if(fcvae, windows, seeds, quick)
        log("scoring: last-token LFM against every token")
        out["lfm_all_tokens_comparison"] = lfm_all_tokens_comparison(fcvae, windows, seeds, quick)
        log("scoring: profiling one chunk")
        out["profile"] = profile_chunk(fcvae, windows, seeds)
    finally:
        torch.set_num_threads(original_threads)
    best = max(r["hours_per_s"] for t in out["by_threads"].values() for r in t["fcvae"])
    lat = min(t["latency_ms"]["fcvae_padded"]["median"] for t in out["by_threads"].values())
    out["verdict"] = {
        "fcvae_best_hours_per_s": best,
        "fcvae_throughput_target_met": best >= FCVAE_TARGET_HOURS_PER_S,
        "fcvae_single_window_median_ms": lat,
        "latency_target_met": lat <= LATENCY_TARGET_MS,
    }
    return out
