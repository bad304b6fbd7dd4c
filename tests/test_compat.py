"""The interfaces people bring from a Flask control plane and an OPA server,
used as they wrote them, against a running `tollgate run` on the real broker:
the short ingest bodies (priced answer, Idempotency-Key counts once), an
RBAC-shaped token file, `GET /health`, and an OPA-style `package finops`
module judged by the gate and served through OPA's Data API."""

import json
import re
import shutil
import time
from pathlib import Path

from test_http import wait_for_events
from tollgate_testlib import actual_rollup, check_decision_log, decision_lines

ROOT = Path(__file__).resolve().parent.parent
FINOPS = ROOT / "tests" / "rego" / "finops.rego"

# The control plane's token file, as it was: tenant_id, scopes, subject.
RBAC = {
    "acme-ci-token-0000000001": {"tenant_id": "acme", "scopes": ["ingest.write", "gates.check", "usage.read"], "subject": "acme-ci"},
    "globex-ci-token-00000001": {"tenant_id": "globex", "scopes": ["ingest.write", "gates.check"], "subject": "globex-ci"},
}
ACME, GLOBEX = list(RBAC)


def configure(pipeline):
    """RBAC token file; the shipped gates plus finops.rego, both packages gates."""
    tokens = pipeline.tmp / "tokens.json"
    tokens.write_text(json.dumps(RBAC))
    pipeline.env.pop("AUTH_TOKENS_JSON", None)
    pipeline.env["AUTH_TOKENS_FILE"] = str(tokens)
    gates = pipeline.tmp / "gates"
    shutil.copytree(ROOT / "pipelines" / "gates", gates)
    shutil.copy(FINOPS, gates / "finops.rego")
    text = pipeline.config.read_text()
    text = re.sub(r'(?m)^dir = "pipelines/gates"$', f'dir = "{gates}"', text)
    text = re.sub(r"(?m)^\[gates\]$", '[gates]\\npackages = ["tollgate.gate", "finops"]', text, count=1)
    assert '"finops"' in text
    pipeline.config.write_text(text)


def post(pipeline, path, token, body, key=None):
    headers = {"Idempotency-Key": key} if key else None
    status, _, raw = pipeline.api("POST", path, token=token, body=json.dumps(body), headers=headers)
    return status, json.loads(raw or b"{}")


def test_short_bodies_rbac_tokens_and_an_opa_module_work_unchanged(pipeline):
    configure(pipeline)
    proc = pipeline.start("--idle-timeout-secs", "2")
    pipeline.wait_api("/health")
    try:
        # Ingest as the control plane's clients did.
        body = {"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 300, "duration_ms": 850,
                "cost_tags": {"team": "search", "environment": "prod"}, "metadata": {"request": "r-1"}}
        st, first = post(pipeline, "/v1/metrics/inference", ACME, body, key="req-0001")
        assert st == 202, first
        assert first["tenant"] == "acme" and first["event_id"] == "req-0001" and first["replayed"] is False
        priced = pipeline.book.enrich("inference", {**body, "ts": int(time.time() * 1000)})
        assert abs(first["cost_usd"] - priced[0]) < 1e-12, (first, priced)
        assert abs(first["unit_cost_usd"] - priced[0]) < 1e-12 and first["unit"] == "request"
        assert abs(first["energy_wh"] - priced[1]) < 1e-12 and abs(first["carbon_g"] - priced[2]) < 1e-12
        # The retry counts once, and gets the same answer.
        st, again = post(pipeline, "/v1/metrics/inference", ACME, body, key="req-0001")
        assert st == 202 and again["replayed"] is True and again["ts"] == first["ts"], again
        # The same key with another body is refused.
        st, conflict = post(pipeline, "/v1/metrics/inference", ACME, {**body, "output_tokens": 1}, key="req-0001")
        assert st == 409, conflict
        # The same key is another tenant's own.
        st, other = post(pipeline, "/v1/metrics/inference", GLOBEX, body, key="req-0001")
        assert st == 202 and other["tenant"] == "globex" and other["replayed"] is False, other
        train = {"model": "llama-3-70b", "duration_hours": 2.0, "gpu_count": 4, "cost_tags": {"team": "research"}}
        st, t = post(pipeline, "/v1/metrics/training", ACME, train)
        assert st == 202 and t["unit"] == "gpu_hour", t
        expected_train = pipeline.book.enrich("training", {**train, "gpu_type": "default", "ts": 0})
        assert abs(t["cost_usd"] - expected_train[0]) < 1e-9, (t, expected_train)
        # A token file entry may not write another tenant.
        st, p = post(pipeline, "/v1/metrics/inference", GLOBEX, {**body, "tenant": "acme"})
        assert st == 403, p

        actual = wait_for_events(pipeline, 3)
        by = {(k[0], k[1], k[2]): v for k, v in actual.items()}
        assert by[("inference", "acme", "search")][0] == 1, actual
        assert by[("inference", "globex", "search")][0] == 1, actual
        assert by[("training", "acme", "research")][0] == 1, actual
        assert abs(by[("inference", "acme", "search")][3] - first["cost_usd"]) < 1e-12

        # The OPA module judges a release beside the shipped rules.
        release = {"unit_cost_usd": 0.08, "cost_tags": {"team": "search", "environment": "prod"},
                   "deployment_region": "ap-south-1"}
        st, g = post(pipeline, "/v1/gates/policy-check", ACME, release)
        assert st == 200 and g["allow"] is False, g
        finops = sorted(v["message"] for v in g["violations"] if v["rule"] == "finops")
        assert finops == ["region ap-south-1 is not allowed", "unit cost 0.08 USD is above the 0.05 USD cap"], g

        # OPA's Data API, as a client with OPA_URL pointed here calls it.
        st, d = post(pipeline, "/v1/data/finops/allow", ACME, {"input": release})
        assert st == 200 and d["result"] is False and d["decision_id"], d
        st, d = post(pipeline, "/v1/data/finops/deny", ACME, {"input": release})
        assert st == 200 and sorted(d["result"]) == finops, d
        ok = {"unit_cost_usd": 0.01, "cost_tags": {"team": "search", "environment": "prod"}}
        st, d = post(pipeline, "/v1/data/finops/allow", ACME, {"input": ok})
        assert st == 200 and d["result"] is True, d
        st, d = post(pipeline, "/v1/data/finops", ACME, {"input": ok})
        assert st == 200 and d["result"]["allow"] is True and d["result"]["deny"] == [], d
        status, _, raw = pipeline.api("GET", "/v1/data/finops/max_unit_cost_usd", token=ACME)
        assert status == 200 and json.loads(raw) == {"result": 0.05}
        status, _, raw = pipeline.api("GET", "/v1/data/finops/allow", token=ACME)
        assert status == 400, raw
        status, _, raw = pipeline.api("POST", "/v1/data/tollgate/params", token=ACME, body="{}")
        assert status == 404, raw
        # Another tenant's input is refused, naming no data of it.
        st, p = post(pipeline, "/v1/data/finops/allow", GLOBEX, {"input": {**ok, "tenant": "acme"}})
        assert st == 403, p
    finally:
        proc.terminate()
        proc.wait(30)

    # Every Data API decision is in the signed log, beside the gate's.
    lines = decision_lines(pipeline.decisions)
    check_decision_log(lines)
    paths = [json.loads(l)["observed"].get("data_path") for l in lines]
    assert paths.count("finops/allow") == 2 and paths.count("finops/deny") == 1 and paths.count("finops") == 1, paths
