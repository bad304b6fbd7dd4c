"""The FinOps surface against the real broker: billing periods and projects
(`/v1/usage?period=&group_by=`, `/v1/usage/{project}`), and the FOCUS export
(`tollgate export focus`, `GET /v1/export/focus`) read back by DuckDB and
pyarrow as a finance tool would, each read by two tenants."""

import io
import json
import random
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tollgate_testlib import TOKEN_ACME, TOKEN_GLOBEX

# Two hours ago, on the hour: in the current month (or the one before, on
# the 1st), never in the future.
BASE = (int(time.time()) // 3600 - 2) * 3_600_000
PERIOD = time.strftime("%Y-%m", time.gmtime(BASE / 1000))
TENANTS = {"acme": TOKEN_ACME, "globex": TOKEN_GLOBEX}
PROJECTS = ["search", "ads", None]
MODELS = ["gpt-4o", "gpt-4o-mini"]

# FOCUS 1.2 columns the export must carry (the mandatory ones, and the
# conditional ones Tollgate can fill), with the DuckDB type of each.
FOCUS = {
    "BilledCost": "DOUBLE", "EffectiveCost": "DOUBLE", "ListCost": "DOUBLE", "ContractedCost": "DOUBLE",
    "BillingCurrency": "VARCHAR", "BillingPeriodStart": "TIMESTAMP WITH TIME ZONE",
    "BillingPeriodEnd": "TIMESTAMP WITH TIME ZONE", "ChargePeriodStart": "TIMESTAMP WITH TIME ZONE",
    "ChargePeriodEnd": "TIMESTAMP WITH TIME ZONE", "ChargeCategory": "VARCHAR", "ChargeClass": "VARCHAR",
    "ChargeDescription": "VARCHAR", "PricingQuantity": "DOUBLE", "PricingUnit": "VARCHAR",
    "ServiceName": "VARCHAR", "ServiceCategory": "VARCHAR", "ProviderName": "VARCHAR",
    "PublisherName": "VARCHAR", "InvoiceIssuerName": "VARCHAR", "BillingAccountId": "VARCHAR",
    "BillingAccountName": "VARCHAR", "ConsumedQuantity": "DOUBLE", "ConsumedUnit": "VARCHAR",
    "ResourceId": "VARCHAR", "Tags": "VARCHAR", "x_EnergyWh": "DOUBLE", "x_CarbonGrams": "DOUBLE",
    "x_InputTokens": "BIGINT", "x_OutputTokens": "BIGINT",
}


def events(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tenant = list(TENANTS)[i % 2]
        ts = BASE + i * (1_800_000 // n)
        tags = {"team": f"team-{rng.randrange(3)}", "environment": "prod"}
        project = PROJECTS[i % 3]
        if project:
            tags["project"] = project
        if i % 10 == 9:
            kind, e = "training", {"event_id": f"t-{i}", "ts": ts, "tenant": tenant, "tags": tags,
                                   "model": "llama-3.1-70b", "gpu_type": "h100", "gpu_count": 1 + i % 4,
                                   "duration_hours": 0.25, "region": "us-east-1"}
        else:
            kind, e = "inference", {"event_id": f"i-{i}", "ts": ts, "tenant": tenant, "tags": tags,
                                    "model": MODELS[rng.randrange(2)], "input_tokens": rng.randrange(1, 4000),
                                    "output_tokens": rng.randrange(0, 1500), "duration_ms": 20.0,
                                    "region": "eu-north-1"}
        out.append((kind, e))
    # Heartbeats: no cost, and no charge in the export.
    out += [("heartbeat", {"event_id": f"h-{i}", "ts": BASE + i * 60_000, "tenant": "acme", "node_id": "n1",
                           "region": "eu-west-1", "latency_ms": 5.0}) for i in range(5)]
    return out


def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def test_billing_periods_projects_and_the_focus_export(pipeline, tmp_path):
    counted = events(600, seed=19)
    pipeline.produce([(k, i % 3, e["tenant"], json.dumps(e)) for i, (k, e) in enumerate(counted)])
    pipeline.run_to_end()

    cost = defaultdict(float)  # (tenant, dimension, value) -> USD
    sci = defaultdict(lambda: [0.0, 0.0, 0])  # tenant -> operational g, embodied g, requests
    for kind, e in counted:
        c = pipeline.book.enrich(kind, e)[0]
        if kind == "inference":
            sci[e["tenant"]][0] += pipeline.book.enrich(kind, e)[2]
            sci[e["tenant"]][1] += pipeline.book.embodied(kind, e)
            sci[e["tenant"]][2] += 1
        tags = e.get("tags", {})
        cost[(e["tenant"], "total", None)] += c
        cost[(e["tenant"], "project", tags.get("project"))] += c
        cost[(e["tenant"], "model", e.get("model"))] += c if kind != "heartbeat" else 0.0
    assert cost[("acme", "total", None)] > 0 and cost[("globex", "total", None)] > 0

    pipeline.start()
    pipeline.wait_api("/readyz", timeout=120)

    for tenant, token in TENANTS.items():
        # By project: every project's cost, the untagged under null.
        u = pipeline.api_json("GET", f"/v1/usage?period={PERIOD}&group_by=project", token)
        assert u["tenant"] == tenant and u["period"] == PERIOD and u["group_by"] == "project", u
        got = {g["project"]: g["cost_usd"] for g in u["groups"]}
        assert set(got) == {"search", "ads", None}, got
        for p, c in got.items():
            assert close(c, cost[(tenant, "project", p)]), (tenant, p, c)
        assert close(u["total"]["cost_usd"], cost[(tenant, "total", None)]), u["total"]
        est = u["estimate"]
        assert close(est["to_date_cost_usd"], cost[(tenant, "total", None)]), est
        assert 0 < est["elapsed_ratio"] <= 1 and est["projected_cost_usd"] >= est["to_date_cost_usd"], est
        assert u["open"]["windows"] == 0, "every window is closed"
        # SCI per inference request: ((E × I) + M) / R, embodied from the book's figure.
        metrics = pipeline.api_json("GET", f"/v1/metrics?period={PERIOD}", token)
        op, emb, requests = sci[tenant]
        got = metrics["sci"]
        assert got["requests"] == requests and close(got["operational_g"], op) and close(got["embodied_g"], emb), got
        assert emb > 0 and close(got["g_per_request"], (op + emb) / requests), got
        # By model, heartbeats under null with no cost.
        m = pipeline.api_json("GET", f"/v1/usage?period={PERIOD}&group_by=model", token)
        for g in m["groups"]:
            assert close(g["cost_usd"], cost[(tenant, "model", g["model"])]), g
        # One project, under the path the Flask control planes use.
        one = pipeline.api_json("GET", f"/v1/usage/search?period={PERIOD}&group_by=team", token)
        assert one["project"] == "search"
        assert close(one["total"]["cost_usd"], cost[(tenant, "project", "search")]), one["total"]
        assert close(sum(g["cost_usd"] for g in one["groups"]), cost[(tenant, "project", "search")])
        # The same through the query parameter.
        q = pipeline.api_json("GET", f"/v1/usage?period={PERIOD}&project=search", token)
        assert close(q["total"]["cost_usd"], cost[(tenant, "project", "search")])
        assert all(w["tenant"] == tenant for w in q["windows"])

        # The tenant's FOCUS export over HTTP: its charges only, all of them.
        status, headers, raw = pipeline.api("GET", f"/v1/export/focus?period={PERIOD}", token)
        assert status == 200 and headers["content-type"] == "application/vnd.apache.parquet", raw[:300]
        t = pq.read_table(io.BytesIO(raw))
        assert set(t.column("BillingAccountId").to_pylist()) == {tenant}
        assert close(sum(t.column("BilledCost").to_pylist()), cost[(tenant, "total", None)])
        status, headers, raw = pipeline.api("GET", f"/v1/export/focus?period={PERIOD}&format=csv&granularity=day",
                                            token)
        assert status == 200 and headers["content-type"].startswith("text/csv"), raw[:300]
        lines = raw.decode().splitlines()
        assert lines[0].startswith("BilledCost,BillingAccountId,") and len(lines) > 1, lines[:2]
        assert {line.split(",")[1] for line in lines[1:]} == {tenant}

    # Refusals name what is wrong.
    for q in ["period=2026-13", f"period={PERIOD}&from=", "period=2026-11&group_by=region"]:
        status, _, raw = pipeline.api("GET", f"/v1/usage?{q}", TOKEN_ACME)
        assert status == 400 and json.loads(raw)["detail"], (q, raw)
    status, _, raw = pipeline.api("GET", "/v1/export/focus", TOKEN_ACME)
    assert status == 400 and "period" in json.loads(raw)["detail"], raw
    status, _, _ = pipeline.api("GET", f"/v1/export/focus?period={PERIOD}&tenant=acme", TOKEN_GLOBEX)
    assert status == 403

    # The operator's export of every tenant, as a file, read by DuckDB and pyarrow.
    rollup_cost = rollups_cost(pipeline.rollups)
    for name in ["focus.parquet", "focus.csv"]:
        out = tmp_path / name
        r = subprocess.run([str(pipeline.binary), "export", "focus", "--period", PERIOD, "--out", str(out),
                            "--rollup-dir", str(pipeline.rollups)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        con = duckdb.connect()
        reader = f"read_parquet('{out}')" if name.endswith(".parquet") else f"read_csv('{out}', header=true)"
        if name.endswith(".parquet"):
            types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
            missing = {c: want for c, want in FOCUS.items() if types.get(c) != want}
            assert not missing, (missing, types)
            schema = pq.read_schema(out)
            assert schema.field("BilledCost").type == pa.float64()
            assert schema.field("ChargePeriodStart").type == pa.timestamp("ms", tz="UTC")
        nulls = con.execute(f"SELECT count(*) FROM {reader} WHERE BilledCost IS NULL OR EffectiveCost IS NULL "
                            "OR ListCost IS NULL OR ContractedCost IS NULL OR BillingCurrency IS NULL").fetchone()[0]
        assert nulls == 0
        billed, rows, kinds, accounts = con.execute(
            f"SELECT sum(BilledCost), count(*), list(DISTINCT x_Kind ORDER BY x_Kind), "
            f"list(DISTINCT BillingAccountId ORDER BY BillingAccountId) FROM {reader}").fetchone()
        assert close(billed, rollup_cost), (billed, rollup_cost)
        assert close(billed, cost[("acme", "total", None)] + cost[("globex", "total", None)])
        assert kinds == ["inference", "training"] and accounts == ["acme", "globex"], (kinds, accounts)
        # Charge periods are whole hours inside the billing period.
        bad = con.execute(
            f"SELECT count(*) FROM {reader} WHERE ChargePeriodStart < BillingPeriodStart "
            "OR ChargePeriodEnd > BillingPeriodEnd OR ChargePeriodEnd - ChargePeriodStart <> INTERVAL 1 HOUR"
        ).fetchone()[0]
        assert bad == 0 and rows > 0
        tags = con.execute(f"SELECT DISTINCT json_extract_string(Tags, '$.project') FROM {reader}").fetchall()
        assert {t[0] for t in tags} == {"search", "ads", None}


def rollups_cost(root):
    """The rollups' cost of PERIOD's charges, as an analyst reads the tree."""
    t = pq.read_table(root).to_pylist()
    return sum(r["cost_usd"] for r in t if str(r["kind"]) in ("inference", "training")
               and r["window_start"].strftime("%Y-%m") == PERIOD)


def test_sighup_reloads_the_price_book_for_what_is_read_after_it(pipeline):
    """A SIGHUP with a new price book prices every event read after it (by
    the workers and by the API's ingest answer) at the new price, and
    leaves what was read before at the old one. A broken book is refused
    and the one in force stays."""
    import signal

    def inference(i, ts):
        return {"event_id": f"p-{i}", "ts": ts, "tenant": "acme", "tags": {"team": "ai", "environment": "prod"},
                "model": "gpt-4o-mini", "input_tokens": 1000, "output_tokens": 0, "duration_ms": 5.0}

    old_book = pipeline.book
    before = [inference(i, BASE + i * 1000) for i in range(30)]
    pipeline.produce([("inference", 0, "acme", json.dumps(e)) for e in before])
    proc = pipeline.start("--workers", "1")
    pipeline.wait_api("/readyz", timeout=120)
    since = f"from={BASE - 60_000}&to={BASE + 3_600_000}"
    deadline = time.time() + 60
    while pipeline.api_json("GET", f"/v1/usage?{since}", TOKEN_ACME)["total"].get("events", 0) < len(before):
        assert time.time() < deadline and proc.poll() is None, pipeline.log_tail()
        time.sleep(0.5)

    text = pipeline.config.read_text()
    broken = text.replace("input_per_1k = 0.00015", "input_per_1k = -1.0")
    assert broken != text
    pipeline.config.write_text(broken)
    log = pipeline.tmp / "run.log"

    def hup_until(needle):
        """SIGHUP, then the first line logged after it that holds `needle`."""
        mark = len(log.read_text(errors="replace"))
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 30
        while True:
            found = [x for x in log.read_text(errors="replace")[mark:].splitlines() if needle in x]
            if found:
                return found[0]
            assert time.time() < deadline and proc.poll() is None, pipeline.log_tail()
            time.sleep(0.2)

    line = hup_until("reload failed")
    assert "gpt-4o-mini*" in line and "input_per_1k" in line, line
    # Ten times the input price.
    pipeline.config.write_text(text.replace("input_per_1k = 0.00015", "input_per_1k = 0.0015"))
    hup_until("price book reloaded")
    new_book = type(old_book)(pipeline.config)

    # The API's answer is priced by the new book.
    one = inference(100, BASE + 200_000)
    answer = pipeline.api_json("POST", "/v1/metrics/inference", TOKEN_ACME, json.dumps(one), expect=202)
    assert close(answer["cost_usd"], new_book.enrich("inference", one)[0]), answer
    assert not close(answer["cost_usd"], old_book.enrich("inference", one)[0])
    after = [inference(200 + i, BASE + 240_000 + i * 1000) for i in range(30)]
    pipeline.produce([("inference", 0, "acme", json.dumps(e)) for e in after])

    expected = (sum(old_book.enrich("inference", e)[0] for e in before)
                + sum(new_book.enrich("inference", e)[0] for e in [one] + after))
    deadline = time.time() + 90
    while True:
        total = pipeline.api_json("GET", f"/v1/usage?{since}", TOKEN_ACME)["total"]
        if total.get("events", 0) == len(before) + 1 + len(after) and close(total["cost_usd"], expected):
            break
        assert time.time() < deadline and proc.poll() is None, (total, expected, pipeline.log_tail())
        time.sleep(0.5)


def test_the_node_registry_from_heartbeats_on_the_broker(pipeline):
    """Heartbeats through the pipeline, the registry read back per tenant:
    a node that stops is behind its fleet and ranked riskiest, a node with
    an uptime dip next, and another tenant's nodes are never listed."""
    beats = []
    for k in range(18):  # three minutes, every 10 s
        for tenant, node in [("acme", "a-ok"), ("acme", "a-stops"), ("acme", "a-dip"), ("acme", "a-proof"),
                             ("globex", "g-ok")]:
            if node == "a-stops" and k >= 6:
                continue  # silent after the first minute
            uptime = 0.95 if node == "a-dip" and k == 10 else 0.999
            beats.append({"event_id": f"hb-{node}-{k}", "ts": BASE + k * 10_000 + 500, "tenant": tenant,
                          "node_id": node, "region": "eu-west-1", "latency_ms": 20.0, "uptime_ratio": uptime,
                          "proof_ok": not (node == "a-proof" and k == 4)})
    partition = {"a-ok": 0, "a-stops": 0, "a-dip": 1, "a-proof": 1, "g-ok": 2}
    pipeline.produce([("heartbeat", partition[e["node_id"]], e["node_id"], json.dumps(e)) for e in beats])
    pipeline.run_to_end()
    pipeline.start()
    pipeline.wait_api("/readyz", timeout=120)
    since = f"from={BASE - 60_000}&to={BASE + 3_600_000}"

    acme = pipeline.api_json("GET", f"/v1/nodes?{since}", TOKEN_ACME)
    by = {n["node_id"]: n for n in acme["nodes"]}
    assert set(by) == {"a-ok", "a-stops", "a-dip", "a-proof"}, by
    assert by["a-ok"]["heartbeats"] == 18 and by["a-ok"]["reliability_score"] == 100, by["a-ok"]
    assert by["a-ok"]["failed_proofs"] == 0 and by["a-ok"]["penalties"]["proof"] == 0, by["a-ok"]
    assert by["a-stops"]["stale"] and by["a-stops"]["seconds_silent"] == 120.0, by["a-stops"]
    assert by["a-dip"]["penalties"]["uptime"] > 0 and not by["a-dip"]["stale"], by["a-dip"]
    # A failed proof (`proof_ok: false`) is counted in the rollups and costs the node points.
    assert by["a-proof"]["failed_proofs"] == 1 and by["a-proof"]["penalties"]["proof"] == 40, by["a-proof"]
    assert by["a-proof"]["reliability_score"] == 60 and not by["a-proof"]["healthy"], by["a-proof"]
    risk = pipeline.api_json("GET", f"/v1/nodes/risk?{since}&limit=3", TOKEN_ACME)
    assert [n["node_id"] for n in risk["nodes"]] == ["a-stops", "a-proof", "a-dip"], risk
    one = pipeline.api_json("GET", f"/v1/nodes/a-dip?{since}", TOKEN_ACME)
    assert len(one["trend"]) == 3 and [w["healthy"] for w in one["trend"]] == [True, False, True], one["trend"]

    globex = pipeline.api_json("GET", f"/v1/nodes?{since}", TOKEN_GLOBEX)
    assert [n["node_id"] for n in globex["nodes"]] == ["g-ok"], globex
    status, _, raw = pipeline.api("GET", f"/v1/nodes/a-ok?{since}", TOKEN_GLOBEX)
    assert status == 404 and b"acme" not in raw, raw
    status, _, _ = pipeline.api("GET", f"/v1/nodes?{since}&tenant=acme", TOKEN_GLOBEX)
    assert status == 403

    # A quote is what the pipeline would count for the event; a placement
    # ranks the book's regions, with the caller's nodes' health.
    job = {"event_id": "q", "ts": int(time.time() * 1000), "tenant": "acme", "model": "llama-3.1-70b",
           "gpu_type": "h100", "gpu_count": 2, "duration_hours": 3.0, "region": "eu-north-1"}
    q = pipeline.api_json("GET", "/v1/pricing/quote?gpu_type=h100&gpu_count=2&hours=3&region=eu-north-1", TOKEN_GLOBEX)
    cost, energy, carbon, hours, _, _ = pipeline.book.enrich("training", job)
    assert close(q["cost_usd"], cost) and close(q["carbon_g"], carbon) and close(q["gpu_hours"], hours), q
    assert q["embodied_g"] > 0 and close(q["embodied_g"], pipeline.book.embodied("training", job)), q
    # A long request is priced at its tier, and the quote names it.
    long = {"event_id": "l", "ts": int(time.time() * 1000), "tenant": "acme", "model": "gemini-1.5-pro",
            "input_tokens": 200_000, "cache_write_tokens": 50_000, "output_tokens": 4_000, "reasoning_tokens": 1_000,
            "duration_ms": 9000.0}
    q = pipeline.api_json("GET", "/v1/pricing/quote?model=gemini-1.5-pro&input_tokens=200000&cache_write_tokens=50000"
                          "&output_tokens=4000&reasoning_tokens=1000&duration_ms=9000", TOKEN_ACME)
    assert close(q["cost_usd"], pipeline.book.enrich("inference", long)[0]), q
    assert q["priced_by"]["tier"] == {"above_input_tokens": 128000}, q
    assert close(q["embodied_g"], pipeline.book.embodied("inference", long)), q
    for token, nodes in [(TOKEN_ACME, 4), (TOKEN_GLOBEX, 1)]:
        p = pipeline.api_json("POST", "/v1/placement/suggest", token,
                              json.dumps({"gpu_type": "h100", "gpu_count": 2, "hours": 3, "objective": "carbon"}))
        ranked = p["suggestions"]
        carbons = [s["carbon_g"] for s in ranked]
        assert carbons == sorted(carbons) and ranked[0]["region"] == "eu-north-1", ranked
        west = next(s for s in ranked if s["region"] == "eu-west-1")
        assert west["nodes"] == nodes and west["healthy_nodes"] >= 1, west


def test_a_silent_node_is_flagged_once_when_stale_and_once_when_back(pipeline):
    """A node that stops entirely gets one `node-silence` warn when its
    silence passes stale_after (by its partition's clock, the other nodes'
    heartbeats), none while it stays silent, one allow when it reports again
    — across a restart of the pipeline and a replay; and a partition whose
    heartbeats all stop is judged by its idle clock."""
    from tollgate_testlib import check_decision_log, decision_lines

    stale_after = 20
    text = pipeline.config.read_text().replace("stale_after_secs = 30", f"stale_after_secs = {stale_after}")
    pipeline.config.write_text(text)

    def beats(ks, nodes):
        return [("heartbeat", partition, node, json.dumps({
            "event_id": f"hb-{node}-{k}", "ts": BASE + k * 5_000 + 200, "tenant": tenant, "node_id": node,
            "region": "eu-west-1", "latency_ms": 10.0, "uptime_ratio": 1.0, "proof_ok": True}))
            for k in ks for tenant, node, partition in nodes
            if not (node == "a-quiet" and 12 <= k < 40)]  # silent from 55 s to 200 s

    fleet = [("acme", "a-ok", 0), ("acme", "a-quiet", 0), ("globex", "g-ok", 1)]

    def silence():
        out = defaultdict(lambda: {"warn": set(), "allow": set()})
        for r in check_decision_log(decision_lines(pipeline.decisions)):
            if r["policy"] == "node-silence":
                out[r["observed"]["node_id"]][r["verdict"]].add(r["observed"]["last_heartbeat"])
                assert r["subject"] == f"tenant={r['observed']['tenant']}/node={r['observed']['node_id']}", r
        return out

    # Two minutes and a half: a-quiet stops after 55 s while a-ok goes on.
    pipeline.produce(beats(range(0, 30), fleet))
    pipeline.run_to_end()
    s = silence()
    assert len(s["a-quiet"]["warn"]) == 1 and not s["a-quiet"]["allow"], dict(s)
    assert not s["a-ok"]["warn"] and not s["g-ok"]["warn"], dict(s)
    quiet = next(iter(s["a-quiet"]["warn"]))
    assert quiet.startswith(time.strftime("%Y-%m-%dT%H:%M:5", time.gmtime((BASE + 55_200) / 1000))), quiet

    # A new process, restored from the rollups: a-quiet comes back at 200 s.
    pipeline.produce(beats(range(30, 60), fleet))
    pipeline.run_to_end()
    s = silence()
    assert s["a-quiet"]["warn"] == {quiet} and len(s["a-quiet"]["allow"]) == 1, dict(s)
    assert not s["a-ok"]["warn"] and not s["g-ok"]["warn"], dict(s)

    # Everything stops: the idle clock (the watermark moved on by the time
    # nothing arrived) makes every node stale, each once.
    proc = pipeline.start("--idle-timeout-secs", "1", "--http-listen", "")
    deadline = time.time() + 90
    while time.time() < deadline and not silence()["g-ok"]["warn"]:
        assert proc.poll() is None, pipeline.log_tail()
        time.sleep(1)
    time.sleep(3)  # more ticks: nothing more
    proc.terminate()
    proc.wait(30)
    s = silence()
    for node in ["a-ok", "g-ok", "a-quiet"]:
        assert len([w for w in s[node]["warn"] if w > quiet]) == 1, (node, dict(s))

    # A replay of the same group adds nothing.
    before = decision_lines(pipeline.decisions)
    pipeline.run_to_end()
    assert decision_lines(pipeline.decisions) == before


def test_pricing_check_validates_a_book_and_names_the_entry_and_tier(tollgate_bin, tmp_path):
    root = Path(__file__).resolve().parent.parent
    config = root / "pipelines" / "default.toml"

    def check(*args, cfg=config):
        return subprocess.run([str(tollgate_bin), "pricing", "check", "--config", str(cfg), *args],
                              capture_output=True, text=True, cwd=root, timeout=60)

    ok = check()
    assert ok.returncode == 0 and ok.stdout.startswith("price book OK"), ok.stderr
    assert "embodied 10 g CO2e per GPU-hour" in ok.stdout, ok.stdout
    old = check("--model", "gpt-4o", "--date", "2024-06-01")
    assert 'pattern "gpt-4o*" (effective from 2024-05-13' in old.stdout and "input 0.005 USD/1K" in old.stdout, old.stdout
    tiered = check("--model", "gemini-1.5-pro-002")
    assert "above 128000 input tokens, the whole request: input 0.0025 USD/1K" in tiered.stdout, tiered.stdout
    sonnet = check("--model", "claude-3-5-sonnet")
    assert "cache write 0.00375 USD/1K" in sonnet.stdout, sonnet.stdout
    unknown = check("--model", "no-such-model")
    assert "no entry in force; the defaults price it" in unknown.stdout, unknown.stdout
    # A broken book is refused, naming the entry and the field.
    broken = tmp_path / "broken.toml"
    broken.write_text(config.read_text().replace("above_input_tokens = 128000", "above_input_tokens = 0"))
    bad = check(cfg=broken)
    assert bad.returncode != 0 and "gemini-1.5-pro*" in bad.stderr and "above_input_tokens" in bad.stderr, bad.stderr
