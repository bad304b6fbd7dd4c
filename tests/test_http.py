"""The HTTP API of a running pipeline, over real sockets: events POSTed over
HTTP come out in the Parquet rollups with exact totals; the gate answers with
signed decisions that land in the log; reads are tenant-scoped; /metrics
passes promtool."""

import json
import random
import shutil
import signal
import subprocess
import time

import pytest

from test_pipeline import heartbeat, inference, training
from tollgate_testlib import (
    TOKEN_ACME,
    TOKEN_ADMIN,
    TOKEN_GLOBEX,
    actual_rollup,
    assert_rollups_equal,
    check_decision_log,
    decision_lines,
    expected_rollup,
)


def ndjson(events):
    return "\n".join(json.dumps(e) for e in events) + "\n"


def wait_for_events(pipeline, n, timeout=120):
    deadline = time.time() + timeout
    got = 0
    while time.time() < deadline:
        if pipeline.files():
            actual, _ = actual_rollup(pipeline.rollups)
            got = sum(v[0] for v in actual.values())
            if got >= n:
                return actual
        time.sleep(0.5)
    raise AssertionError(f"{got} of {n} events in the rollups after {timeout}s; log:\n{pipeline.log_tail()}")


def test_http_ingest_gate_reads_and_metrics(pipeline):
    rng = random.Random(7)
    now = int(time.time() * 1000)
    base = now - 10 * 60_000
    events = []
    for i in range(150):
        events.append(("inference", inference(i, base + i * 2000, "acme", rng.choice(["ai", "web"]), rng)))
    for i in range(30):
        events.append(("training", training(i, base + i * 10_000, "acme", "ai", rng)))
    for i in range(40):
        events.append(("heartbeat", heartbeat(i, base + i * 7000, "acme", rng)))
    events.sort(key=lambda ke: ke[1]["ts"])
    typed = [dict(e, kind=k) for k, e in events]

    proc = pipeline.start("--idle-timeout-secs", "2")
    pipeline.wait_api("/healthz")

    # Refusals first: nothing of these may reach the rollups.
    status, headers, raw = pipeline.api("POST", "/v1/events", None, ndjson(typed[:2]))
    assert status == 401 and headers["content-type"] == "application/problem+json", raw
    bad = dict(typed[0], event_id="bad-1", input_tokens=-5, kind="inference")
    status, _, raw = pipeline.api("POST", "/v1/events", TOKEN_ACME, ndjson([typed[1], bad]))
    assert status == 422, raw
    problem = json.loads(raw)
    assert problem["errors"][0]["index"] == 1 and "input_tokens" in problem["errors"][0]["error"], problem
    status, _, raw = pipeline.api("POST", "/v1/events", TOKEN_GLOBEX, ndjson(typed[:3]))
    assert status == 403, raw

    # The events: most as NDJSON and JSON arrays, some on the seeds' paths.
    singles = {"inference": "/v1/metrics/inference", "training": "/v1/metrics/training", "heartbeat": "/v1/nodes/heartbeat"}
    # In event-time order, so that no event is late.
    batch = []

    def flush(as_ndjson):
        if batch:
            body = ndjson(batch) if as_ndjson else json.dumps(batch)
            assert pipeline.api_json("POST", "/v1/events", TOKEN_ACME, body, expect=202) == {"accepted": len(batch)}
            batch.clear()

    for i, (kind, e) in enumerate(events):
        if i % 20 == 0:
            flush(i % 40 == 0)
            pipeline.api_json("POST", singles[kind], TOKEN_ACME, json.dumps(e), expect=202)
        else:
            batch.append(typed[i])
    flush(True)

    ready = pipeline.wait_api("/readyz", timeout=120)
    assert ready["checks"]["partitions_assigned"] and ready["checks"]["broker_reachable"], ready

    actual = wait_for_events(pipeline, len(events))
    assert_rollups_equal(expected_rollup(pipeline.book, events), actual)
    cost = sum(pipeline.book.enrich(k, e)[0] for k, e in events)

    # Reads, scoped to the caller's tenant.
    since = f"from={base - 60_000}&to={now + 60_000}"
    usage = pipeline.api_json("GET", f"/v1/usage?{since}", TOKEN_ACME)
    assert usage["tenant"] == "acme"
    assert usage["total"]["events"] == len(events), usage["total"]
    assert abs(usage["total"]["cost_usd"] - cost) < 1e-6 * max(1, cost)
    summary = pipeline.api_json("GET", f"/v1/metrics?{since}", TOKEN_ACME)
    assert {r["kind"] for r in summary["by_kind"]} == {"inference", "training", "heartbeat"}
    assert abs(summary["total"]["cost_usd"] - cost) < 1e-6 * max(1, cost)
    assert pipeline.api_json("GET", f"/v1/usage?{since}", TOKEN_GLOBEX)["total"].get("events", 0) == 0
    status, _, _ = pipeline.api("GET", f"/v1/usage?{since}&tenant=acme", TOKEN_GLOBEX)
    assert status == 403
    q = pipeline.api_json("POST", "/v1/query", TOKEN_ACME, json.dumps({"sql": "SELECT tenant, sum(events) AS n FROM rollups GROUP BY tenant"}))
    assert q["rows"] == [{"tenant": "acme", "n": len(events)}], q
    assert pipeline.api_json("POST", "/v1/query", TOKEN_GLOBEX, json.dumps({"sql": "SELECT count(*) AS n FROM rollups"}))["rows"] == [{"n": 0}]

    # The live snapshot is published every second: let it see the last close.
    time.sleep(2.5)
    # The gate: the seed's two documented examples.
    ok = pipeline.api_json("POST", "/v1/gates/policy-check", TOKEN_ACME,
                           json.dumps({"unit_cost_usd": 0.3, "cost_tags": {"team": "ai", "environment": "dev"}}))
    assert ok["allow"] is True and ok["violations"] == [], ok
    deny = pipeline.api_json("POST", "/v1/gates/policy-check", TOKEN_ACME, json.dumps({"unit_cost_usd": 0.6}))
    assert deny["allow"] is False
    assert [v["rule"] for v in deny["violations"]] == ["required-cost-tags", "unit-cost-cap"], deny
    # The team's month so far is the spend just ingested.
    team_ai = sum(pipeline.book.enrich(k, e)[0] for k, e in events if e.get("tags", {}).get("team") == "ai")
    assert abs(ok["context"]["month"]["spend_usd"] - team_ai) < 1e-6 * max(1, team_ai), ok["context"]

    page = pipeline.api_json("GET", "/v1/decisions?policy=gate", TOKEN_ACME)
    assert [d["decision_id"] for d in page["decisions"]] == [ok["decision_id"], deny["decision_id"]]
    assert pipeline.api_json("GET", "/v1/decisions?policy=gate", TOKEN_GLOBEX)["decisions"] == []

    # /metrics: admin only, valid exposition format, counts that match.
    status, _, _ = pipeline.api("GET", "/metrics", TOKEN_ACME)
    assert status == 403
    status, _, text = pipeline.api("GET", "/metrics", TOKEN_ADMIN)
    assert status == 200
    text = text.decode()
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/setup.sh (Debian package prometheus)"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, f"promtool check metrics failed:\n{check.stdout}\n{check.stderr}"
    accepted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tollgate_events_total{") and 'outcome="accepted"' in line
    )
    assert accepted == len(events), accepted
    assert 'tollgate_decisions_total{policy="gate",verdict="deny"} 1' in text
    assert 'tollgate_http_requests_total{method="POST",route="/v1/gates/policy-check",status="200"} 2' in text
    spend = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("tollgate_cost_usd_total{"))
    assert abs(spend - cost) < 1e-6 * max(1, cost), (spend, cost)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, pipeline.log_tail()
    records = check_decision_log(decision_lines(pipeline.decisions))
    gate = {r["decision_id"]: r for r in records if r["policy"] == "gate"}
    assert gate[deny["decision_id"]]["signature"] == deny["signature"]
    assert gate[ok["decision_id"]]["verdict"] == "allow"
    # Copied to the decisions topic like the window decisions, byte for byte.
    lines = {l for l in decision_lines(pipeline.decisions)}
    published = pipeline.read_topic("decisions", expect=len(records))
    by_key = {m.key().decode(): m.value().decode() for m in published}
    for d in (ok, deny):
        assert by_key.get(d["decision_id"]) in lines, f"gate decision {d['decision_id']} not on the topic"
