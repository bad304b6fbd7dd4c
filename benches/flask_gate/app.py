"""Baseline for scripts/bench-gate.sh: the release gate as a Flask control
plane serves it, with the rules of pipelines/gates/*.rego written in Python
and evaluated in the request handler (no OPA round trip), thresholds read
from pipelines/default.toml as Tollgate reads them.

    FLASK_GATE_CONFIG=pipelines/default.toml FLASK_GATE_TOKEN=... \\
      gunicorn -w 2 -k gthread --threads 8 -b 127.0.0.1:8081 'app:app'

With FLASK_GATE_LOG=DIR each answer is also HMAC-SHA256-signed and appended
to DIR/decisions-<pid>.jsonl with an fsync before it is returned, the
durability Tollgate gives every gate answer (Tollgate groups the fsyncs of
concurrent requests; this baseline syncs each).
"""

import hashlib
import hmac
import json
import os
import threading
import time
import tomllib
import uuid

from flask import Flask, Response, request

CONFIG = tomllib.load(open(os.environ.get("FLASK_GATE_CONFIG", "pipelines/default.toml"), "rb"))
TOKEN = os.environ.get("FLASK_GATE_TOKEN", "").encode()
PARAMS = {**CONFIG["policies"]["params"], "gates": CONFIG["gates"]["params"]}
REGIONS = {r["region"]: r["carbon_intensity_g_per_kwh"] for r in CONFIG["pricing"]["regions"]}
LOG_DIR = os.environ.get("FLASK_GATE_LOG")
SECRET = os.environ.get("FLASK_GATE_SECRET", "bench-secret-0123456789abcdef").encode()

app = Flask(__name__)
_log_lock = threading.Lock()
_log = None


def v(x):
    """Rego's %v of a number."""
    return repr(x) if isinstance(x, float) else str(x)


def region_allowed(r):
    allowed = PARAMS["gates"]["allowed_regions"]
    return not allowed or r in allowed


def violations(inp):
    out = []
    cap = PARAMS["unit-cost-cap"]["cap_usd"]
    cost = inp.get("unit_cost_usd")
    if isinstance(cost, (int, float)) and cost > cap:
        out.append(("unit-cost-cap", f"unit cost {v(cost)} USD exceeds the cap of {v(cap)} USD"))
    tags = inp.get("cost_tags") or {}
    missing = [t for t in PARAMS["gates"]["required_tags"] if not (isinstance(tags.get(t), str) and tags[t].strip())]
    if missing:
        out.append(("required-cost-tags", f"missing required cost tags: {', '.join(missing)}"))
    limit = PARAMS["carbon-intensity"]["max_g_per_kwh"]
    region = inp.get("deployment_region")
    intensity = inp.get("carbon_intensity_g_per_kwh", REGIONS.get(region))
    if isinstance(intensity, (int, float)) and intensity > limit:
        ok = sorted((g, n) for n, g in REGIONS.items() if g <= limit and region_allowed(n))
        cleanest = ok[0][1] if ok else "none"
        out.append(("carbon-intensity", f"{region or '(unnamed region)'} runs at {v(intensity)} g CO2e/kWh, above the limit of {v(limit)} g/kWh (cleanest allowed region: {cleanest})"))
    if "deployment_region" in inp and not region_allowed(region):
        out.append(("region-not-allowed", f"deployment region {region} is not in the allowed regions {PARAMS['gates']['allowed_regions']}"))
    ctx = inp["context"]
    projected = inp.get("projected_spend_usd", 0)
    if ctx.get("team"):
        spent = ctx["window"]["spend_usd"] + projected
        if spent > PARAMS["team-window-spend"]["limit_usd"]:
            out.append(("team-window-spend", f"team {ctx['team']}: {ctx['window']['spend_usd']:.2f} USD spent in the current window plus {projected:.2f} USD projected exceeds the window limit of {PARAMS['team-window-spend']['limit_usd']:.2f} USD"))
        budget = PARAMS["team-monthly-budget"]["budget_usd"]
        if ctx["month"]["spend_usd"] + projected > budget:
            out.append(("team-monthly-budget", f"team {ctx['team']}: {ctx['month']['spend_usd']:.2f} USD spent since {ctx['month']['start']} plus {projected:.2f} USD projected exceeds the monthly budget of {budget:.2f} USD"))
    rate = inp.get("test_pass_rate")
    if isinstance(rate, (int, float)) and rate < PARAMS["gates"]["min_test_pass_rate"]:
        out.append(("test-pass-rate", f"test pass rate {v(rate)} is below the required {v(PARAMS['gates']['min_test_pass_rate'])}"))
    scan = inp.get("security_scan") or {}
    for severity, allowed in PARAMS["gates"]["max_security_findings"].items():
        found = scan.get(severity, 0)
        if found > allowed:
            out.append(("security-scan", f"{v(found)} {severity} security finding(s), at most {v(allowed)} allowed"))
    return [{"rule": r, "message": m} for r, m in sorted(out)]


def record(answer):
    global _log
    line = json.dumps(answer, sort_keys=True, separators=(",", ":"))
    sig = hmac.new(SECRET, line.encode(), hashlib.sha256).hexdigest()
    with _log_lock:
        if _log is None:
            os.makedirs(LOG_DIR, exist_ok=True)
            _log = open(os.path.join(LOG_DIR, f"decisions-{os.getpid()}.jsonl"), "ab")
        _log.write(f'{{"decision":{line},"signature":"{sig}"}}\n'.encode())
        _log.flush()
        os.fdatasync(_log.fileno())


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/v1/gates/policy-check")
def policy_check():
    auth = request.headers.get("Authorization", "").encode()
    if not TOKEN or not hmac.compare_digest(auth, b"Bearer " + TOKEN):
        return Response('{"detail":"unauthorized"}', status=401, content_type="application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return Response('{"detail":"body must be a JSON object"}', status=400, content_type="application/json")
    team = (body.get("cost_tags") or {}).get("team")
    now = time.gmtime()
    ctx = {"tenant": "acme", "team": team, "window": {"spend_usd": 0.0},
           "month": {"spend_usd": 0.0, "start": time.strftime("%Y-%m-01T00:00:00Z", now)}}
    found = violations({**body, "context": ctx})
    answer = {"decision_id": str(uuid.uuid4()), "allow": not found, "violations": found, "context": ctx}
    if LOG_DIR:
        record(answer)
    return answer
