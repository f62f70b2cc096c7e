"""The dashboard end to end: real Kafka broker → ``python -m app.dashboard.server`` (gunicorn,
a real subprocess) → headless Chromium driven by Playwright.

Two combos of 48 scored hours each (warm-up hours, a missing hour, flagged hours, and one
hour sent twice with a different score) go to a fresh scored topic, a heartbeat to a fresh
status topic; the page must show exactly the deduplicated hours, the red flagged markers,
the ground-truth overlay, the ``COMBO`` default, and follow a combo switch.  A screenshot
lands in ``.run/screenshots/dashboard.png`` (``docs/dashboard.png`` with ``UPDATE_SCREENSHOT=1``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app import PROJECT_ROOT
from app.config import KafkaSettings
from app.contracts import ScoredHour, dumps, format_hour, utc_now_iso
from app.kafka_io import ensure_topics
from app.kafka_local import free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The screenshot goes to the git-ignored .run/ so `make test` leaves the tree clean;
# UPDATE_SCREENSHOT=1 refreshes the one README shows (docs/dashboard.png).
SCREENSHOT = PROJECT_ROOT / (
    "docs/dashboard.png"
    if os.environ.get("UPDATE_SCREENSHOT") == "1"
    else ".run/screenshots/dashboard.png"
)
START = datetime(2025, 3, 1, tzinfo=UTC)
HOURS = 48
FIRST, SECOND = "Accel_CMP", "Star_nopin"  # SECOND is COMBO: not the alphabetical default
WARMUP = range(6)  # hours 0..5 are warming up (no score)
MISSING_HOUR = 20
FLAGGED = {FIRST: {14: "spike", 33: "dip"}, SECOND: {9: "spike", 27: "dip", 38: "spike"}}
DUPLICATE_HOUR = 44  # SECOND's hour 44 is sent twice: first calm, then flagged (newest wins)
LEVEL = {FIRST: 1800.0, SECOND: 420.0}


def _record(
    combo: str, h: int, *, flagged: str | None = None, score: float | None = None
) -> ScoredHour:
    hour = format_hour(START + timedelta(hours=h))
    level = LEVEL[combo]
    expected = level * (1 + 0.35 * math.sin(2 * math.pi * (h - 6) / 24))
    common = {"combo": combo, "hour": hour, "scored_at": utc_now_iso(), "model_version": "test"}
    if h == MISSING_HOUR:
        return ScoredHour(status="missing", **common)
    noise = 0.04 * expected * math.sin(h * 1.7 + len(combo))
    count = expected + noise
    if flagged == "spike":
        count = expected * 1.8
    elif flagged == "dip":
        count = expected * 0.35
    if h in WARMUP:
        return ScoredHour(status="warming_up", count=round(count), **common)
    if score is None:
        score = 6.0 if flagged else 0.8 + 0.6 * abs(math.sin(h))
    return ScoredHour(
        status="scored",
        count=round(count),
        score=score,
        threshold=3.0,
        is_anomaly=score > 3.0,
        direction=flagged,
        expected=expected,
        expected_low=expected * 0.85,
        expected_high=expected * 1.15,
        detector="ensemble",
        **common,
    )


def _records() -> list[ScoredHour]:
    out = []
    for combo in (FIRST, SECOND):
        for h in range(HOURS):
            flagged = FLAGGED[combo].get(h)
            if combo == SECOND and h == DUPLICATE_HOUR:
                out.append(_record(combo, h, score=0.5))  # superseded below
                continue
            out.append(_record(combo, h, flagged=flagged))
    out.append(_record(SECOND, DUPLICATE_HOUR, flagged="spike", score=7.5))  # the newest wins
    return out


def _produce(settings: KafkaSettings, scored_topic: str, status_topic: str) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(**settings.client_options(), linger_ms=5)
    try:
        records = _records()
        for record in records:
            producer.send(scored_topic, key=record.combo.encode(), value=dumps(record.model_dump()))
        heartbeat = {
            "kind": "job_heartbeat",
            "state": "running",
            "sent_at": utc_now_iso(),
            "batch_id": 7,
            "num_input_rows": len(records),
            "combos": [FIRST, SECOND],
        }
        producer.send(status_topic, key=b"job", value=json.dumps(heartbeat).encode())
        producer.flush(timeout=30)
        return len(records)
    finally:
        producer.close(timeout=5)


def _write_models(root: Path) -> None:
    for family, combos in (("fcvae", [FIRST, SECOND]), ("vaegan", [FIRST])):
        for combo in combos:
            folder = root / family / combo
            folder.mkdir(parents=True)
            (folder / "meta.json").write_text(json.dumps({"detector": family, "combo": combo}))


def _write_ground_truth(path: Path) -> dict[str, int]:
    """Labels for SECOND's spike hours and FIRST's dip (plus an unlabelled row)."""
    lines = ["timestamp,combo,network,count,is_anomaly,event_id,anomaly_type"]
    labelled = {FIRST: [33], SECOND: [9, 38]}
    for combo, hours in labelled.items():
        for h in hours:
            stamp = (START + timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{stamp},{combo},x,1,True,ev{h},spike")
    lines.append(f"{START:%Y-%m-%d %H:%M:%S},{FIRST},x,1,False,,")
    path.write_text("\n".join(lines) + "\n")
    return {combo: len(hours) for combo, hours in labelled.items()}


def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@contextlib.contextmanager
def _dashboard(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.dashboard.server"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def _wait_healthy(
    base: str, proc: subprocess.Popen[bytes], expected_hours: int, log_path: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dashboard exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError, ValueError):
            code, body = _get_json(f"{base}/health")
            if (
                code == 200
                and body["counters"]["hours"] == expected_hours
                and body["freshness"]["last_heartbeat_age_s"] is not None
            ):
                return body
        time.sleep(0.3)
    pytest.fail(f"dashboard never became healthy: {body}\n{log_path.read_text()[-3000:]}")


_TRACES_JS = """() => {
  const div = document.querySelector('#series-graph .js-plotly-plot');
  if (!div || !div.data) return null;
  return {
    title: (div.layout && div.layout.title && div.layout.title.text) || '',
    traces: div.data.map(t => ({name: t.name, x: t.x || [], y: t.y || [],
                                color: t.marker && t.marker.color, mode: t.mode})),
  };
}"""

_SCORE_JS = """() => {
  const div = document.querySelector('#score-graph .js-plotly-plot');
  return div && div.data ? div.data.map(t => ({name: t.name, y: t.y || []})) : null;
}"""


def _showing(combo: str) -> str:
    """JS predicate: the series graph shows ``combo``."""
    wanted = json.dumps(combo)
    return f"() => {{ const s = ({_TRACES_JS})(); return !!s && s.title.startsWith({wanted}); }}"


def _trace(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    found = [t for t in snapshot["traces"] if t["name"] == name]
    assert found, f"no trace {name!r} in {[t['name'] for t in snapshot['traces']]}"
    return found[0]


def test_dashboard_in_a_browser(
    kafka_settings: KafkaSettings, topic_name: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    scored_topic, status_topic = f"{topic_name}-scored", f"{topic_name}-status"
    ensure_topics(kafka_settings, [scored_topic], 3)
    ensure_topics(kafka_settings, [status_topic], 1)
    sent = _produce(kafka_settings, scored_topic, status_topic)
    assert sent == 2 * HOURS + 1
    _write_models(tmp_path / "models")
    truth_counts = _write_ground_truth(tmp_path / "truth.csv")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "KAFKA_SCORED_TOPIC": scored_topic,
        "KAFKA_STATUS_TOPIC": status_topic,
        "DASHBOARD_HOST": "127.0.0.1",
        "DASHBOARD_PORT": str(port),
        "DASHBOARD_REFRESH_MS": "500",
        "COMBO": SECOND,
        "MODEL_PATH": str(tmp_path / "models"),
        "GROUND_TRUTH_PATH": str(tmp_path / "truth.csv"),
        "LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "dashboard.log"
    with _dashboard(env, log_path) as proc:
        health = _wait_healthy(base, proc, 2 * HOURS, log_path)
        assert health["status"] == "ok", health["reasons"]
        assert health["kafka"]["connected"] is True
        assert health["kafka"]["partitions"] == 3
        assert health["models"] == {"fcvae": [FIRST, SECOND], "vaegan": [FIRST]}
        assert health["job"]["state"] == "running" and health["job"]["batch_id"] == 7
        assert health["counters"]["messages_received"] == sent
        assert health["counters"]["duplicates"] == 1
        flagged_total = sum(len(v) for v in FLAGGED.values()) + 1  # + the duplicate, now flagged
        assert health["counters"]["flagged"] == flagged_total
        assert health["counters"]["missing"] == 2
        assert health["counters"]["warming_up"] == 2 * len(WARMUP)
        assert health["freshness"]["last_message_age_s"] < 60

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(base, wait_until="domcontentloaded")

                # The selector starts on COMBO, and the graph shows that combo's hours.
                page.wait_for_function(
                    _showing(SECOND),
                    timeout=15_000,
                )
                assert page.inner_text("#combo-select").strip() == SECOND
                shown = page.evaluate(_TRACES_JS)
                count = _trace(shown, "count")
                assert len(count["x"]) == HOURS  # 49 records, one duplicated hour
                assert sum(v is None for v in count["y"]) == 1  # the missing hour
                flagged = _trace(shown, "flagged")
                assert flagged["mode"] == "markers"
                assert flagged["color"] == "#dc2626"  # red
                assert len(flagged["x"]) == len(FLAGGED[SECOND]) + 1
                dup_hour = (START + timedelta(hours=DUPLICATE_HOUR)).strftime("%Y-%m-%dT%H:%M")
                assert any(str(x).replace(" ", "T").startswith(dup_hour) for x in flagged["x"])
                truth = _trace(shown, "ground truth (from dataset file)")
                assert len(truth["x"]) == truth_counts[SECOND]
                assert _trace(shown, "expected range")
                scores = {t["name"]: t for t in page.evaluate(_SCORE_JS)}
                assert {"score", "threshold"} <= set(scores)
                assert max(v for v in scores["score"]["y"] if v is not None) == 7.5  # dedup: newest
                page.wait_for_selector("#flagged-table td", timeout=5_000)
                assert page.locator("#overview-table").inner_text().count("Star_nopin") == 1

                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.wait_for_timeout(300)
                page.screenshot(path=str(SCREENSHOT), full_page=True)

                # Switching the combo switches the series.
                page.click("#combo-select")
                page.get_by_role("option", name=FIRST).click()
                page.wait_for_function(
                    _showing(FIRST),
                    timeout=10_000,
                )
                other = page.evaluate(_TRACES_JS)
                other_count = _trace(other, "count")
                assert len(other_count["x"]) == HOURS
                assert other_count["y"] != count["y"]
                assert len(_trace(other, "flagged")["x"]) == len(FLAGGED[FIRST])
                assert (
                    len(_trace(other, "ground truth (from dataset file)")["x"])
                    == truth_counts[FIRST]
                )
                assert page.inner_text("#combo-select").strip() == FIRST

                # Clicking a combo in the overview opens it too.
                page.locator("#overview-table tr", has_text=SECOND).click()
                page.wait_for_function(_showing(SECOND), timeout=10_000)
                assert page.inner_text("#combo-select").strip() == SECOND

                response = page.request.get(f"{base}/health")
                assert response.status == 200
                assert response.json()["status"] == "ok"
                assert not errors, errors
            finally:
                browser.close()

    assert SCREENSHOT.exists() and SCREENSHOT.stat().st_size > 30_000
    assert time.monotonic() - started < 60
