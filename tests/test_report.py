"""Reports against the real broker: `GET /v1/reports/summary` (JSON,
Markdown, HTML), `GET /v1/dashboard/summary` and `tollgate report`, read by
two tenants; the HTML form rendered by headless Chromium (Debian package
`chromium`, installed by scripts/setup.sh) and judged by what its layout
engine drew."""

import json
import random
import re
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from tollgate_testlib import TOKEN_ACME, TOKEN_GLOBEX

BASE = (int(time.time()) // 3600 - 2) * 3_600_000
PERIOD = time.strftime("%Y-%m", time.gmtime(BASE / 1000))
TENANTS = {"acme": TOKEN_ACME, "globex": TOKEN_GLOBEX}
TEAMS = {"acme": ["search", "ads", "infra"], "globex": ["globex-research"]}


def events(rng):
    out = []
    for i in range(400):
        tenant = "acme" if i % 4 else "globex"
        team = rng.choice(TEAMS[tenant])
        e = {"event_id": f"r-{i}", "ts": BASE + i * 3000, "tenant": tenant,
             "tags": {"team": team, "environment": "prod"}, "model": rng.choice(["gpt-4o", "claude-3-5-sonnet"]),
             "input_tokens": rng.randrange(100, 6000), "output_tokens": rng.randrange(10, 2000),
             "duration_ms": round(rng.uniform(50, 3000), 1), "region": "eu-north-1"}
        if i == 7:  # a provider's bill above the unit-cost cap: one deny decision, acme's
            e["cost_usd"] = 2.5
        out.append(("inference", e))
    for i in range(6):
        out.append(("training", {"event_id": f"t-{i}", "ts": BASE + i * 60_000, "tenant": "acme",
                                 "tags": {"team": "infra", "environment": "prod"}, "model": "llama-3.1-70b",
                                 "gpu_type": "h100", "gpu_count": 2, "duration_hours": 0.5, "region": "us-east-1"}))
    for k in range(12):
        for tenant, node in [("acme", "a-1"), ("acme", "a-2"), ("globex", "g-1")]:
            out.append(("heartbeat", {"event_id": f"h-{node}-{k}", "ts": BASE + k * 10_000, "tenant": tenant,
                                      "node_id": node, "region": "eu-west-1", "latency_ms": 15.0,
                                      "uptime_ratio": 0.999, "proof_ok": not (node == "a-2" and k == 3)}))
    return out


def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def same(a, b):
    """Equal, floats to 1e-9 relative (sums over parallel scans may add in
    another order), but for the projection: it moves with the clock."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a if k != "projected_cost_usd")
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and close(a, b)
    return a == b


def layout(html, tmp_path, name):
    """Render `html` in headless Chromium and return what its layout engine
    measured: a script appended for the test (the page itself has none)
    writes the boxes it drew into the DOM, and Chromium prints the DOM."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed (scripts/setup.sh installs the Debian package `chromium`)"
    probe = """<script>
addEventListener('load', () => {
  const box = e => { const b = e.getBoundingClientRect(); return {w: b.width, h: b.height, x: b.x, y: b.y}; };
  const out = {
    viewport: innerWidth, scroll_width: document.documentElement.scrollWidth,
    charts: [...document.querySelectorAll('svg.chart')].map(s => ({id: s.id, ...box(s)})),
    team_bars: [...document.querySelectorAll('#chart-teams rect.bar')].map(b => ({label: b.dataset.label, value: +b.dataset.value, cls: b.getAttribute('class'), fill: getComputedStyle(b).fill, ...box(b)})),
    day_columns: [...document.querySelectorAll('#chart-days rect.col')].length,
    cards: [...document.querySelectorAll('.card')].map(c => ({metric: c.dataset.metric, text: c.innerText, ...box(c)})),
    headings: [...document.querySelectorAll('h2')].map(h => h.innerText),
    clipped: [...document.querySelectorAll('.card .value, th, td')].filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText),
    status: [...document.querySelectorAll('.status')].map(s => [s.innerText, getComputedStyle(s).color]),
  };
  const pre = document.createElement('pre'); pre.id = 'layout'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body>"""
    assert "<script" not in html, "the report carries no script of its own"
    page = tmp_path / f"{name}.html"
    page.write_text(html.replace("</body>", probe, 1))
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--no-first-run", "--window-size=1100,900", "--virtual-time-budget=5000",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'<pre id="layout">(.*?)</pre>', r.stdout, re.S)
    assert m, f"Chromium ran no layout probe; stderr:\n{r.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))


def test_reports_in_every_form_for_two_tenants_and_rendered_in_chromium(pipeline, tmp_path):
    counted = events(random.Random(8))
    pipeline.produce([(k, i % 3, e["tenant"], json.dumps(e)) for i, (k, e) in enumerate(counted)])
    pipeline.run_to_end()

    cost = defaultdict(float)  # (tenant, team) -> USD; (tenant, None) the total
    for kind, e in counted:
        c = pipeline.book.enrich(kind, e)[0]
        cost[(e["tenant"], e.get("tags", {}).get("team"))] += c
        cost[(e["tenant"], None)] += c

    pipeline.start()
    pipeline.wait_api("/readyz", timeout=120)
    for tenant, token in TENANTS.items():
        other = "globex" if tenant == "acme" else "acme"
        r = pipeline.api_json("GET", f"/v1/reports/summary?period={PERIOD}", token)
        assert r["tenant"] == tenant and r["period"] == PERIOD, r
        assert close(r["total"]["cost_usd"], cost[(tenant, None)]), (r["total"], cost[(tenant, None)])
        teams = {t["team"]: t for t in r["teams"] if t["team"] is not None}
        assert set(teams) == set(TEAMS[tenant]), teams
        for team, t in teams.items():
            assert close(t["cost_usd"], cost[(tenant, team)]), (team, t)
            assert t["budget"]["status"] in ("ok", "at_risk", "over"), t
        assert [t["cost_usd"] for t in r["teams"]] == sorted((t["cost_usd"] for t in r["teams"]), reverse=True)
        assert r["sci"]["requests"] == r["total"]["requests"] > 0 and r["sci"]["g_per_request"] > 0, r["sci"]
        assert r["nodes"]["nodes"] == (2 if tenant == "acme" else 1), r["nodes"]
        # The dashboard's numbers are the report's.
        d = pipeline.api_json("GET", f"/v1/dashboard/summary?period={PERIOD}", token)
        assert same(d["total"], r["total"]), (d["total"], r["total"])
        assert same(d["teams"], r["teams"]), (d["teams"], r["teams"])
        # Decisions: the windows' own, the deny on acme's billed request.
        decisions = r["decisions"]
        if tenant == "acme":
            assert any(x["policy"] == "unit-cost-cap" and x["verdict"] == "deny" for x in decisions["top"]), decisions
            assert r["nodes"]["riskiest"][0]["node_id"] == "a-2", r["nodes"]  # its failed proof
        assert all(x["subject"].startswith(f"tenant={tenant}/") for x in decisions["top"]), decisions
        for form in ["md", "html"]:
            status, headers, raw = pipeline.api("GET", f"/v1/reports/summary?period={PERIOD}&format={form}", token)
            assert status == 200, raw[:500]
            text = raw.decode()
            assert other not in text, f"{tenant}'s {form} report names {other}"
            if form == "md":
                assert headers["content-type"].startswith("text/markdown") and text.startswith("# Tollgate report")
                for team in TEAMS[tenant]:
                    assert f"| {team} |" in text, text
                continue
            assert headers["content-type"].startswith("text/html"), headers
            drawn = layout(text, tmp_path, tenant)
            # Three charts, drawn at a readable size, nothing wider than the window.
            assert [c["id"] for c in drawn["charts"]] == ["chart-teams", "chart-models", "chart-days"], drawn["charts"]
            assert all(c["w"] >= 600 and c["h"] >= 50 for c in drawn["charts"]), drawn["charts"]
            assert drawn["scroll_width"] <= drawn["viewport"], drawn
            assert drawn["clipped"] == [], drawn["clipped"]
            assert drawn["headings"][:2] == ["Spend by team", "Spend by model"], drawn["headings"]
            # One bar per team, painted, its length proportional to its cost.
            bars = drawn["team_bars"]
            assert {b["label"] for b in bars} == set(TEAMS[tenant]), bars
            top = max(bars, key=lambda b: b["value"])
            for b in bars:
                assert b["fill"] not in ("none", "rgba(0, 0, 0, 0)") and b["h"] > 5, b
                assert abs(b["w"] / top["w"] - b["value"] / top["value"]) < 0.02, (b, top)
                assert close(b["value"], cost[(tenant, b["label"])]), b
            assert drawn["day_columns"] >= 1
            cards = {c["metric"]: c for c in drawn["cards"]}
            assert cards["cost_usd"]["text"].startswith("Spend\n$") and cards["cost_usd"]["h"] > 30, cards
            assert "SCI per request" in cards["sci_g_per_request"]["text"], cards

    # Refusals: another tenant's report, a bad period or format.
    for path, token, status in [(f"/v1/reports/summary?period={PERIOD}&tenant=acme", TOKEN_GLOBEX, 403),
                                ("/v1/reports/summary?period=2026-13", TOKEN_ACME, 400),
                                ("/v1/reports/summary?format=pdf", TOKEN_ACME, 400)]:
        got, _, raw = pipeline.api("GET", path, token)
        assert got == status and json.loads(raw)["detail"], (path, raw)

    # `tollgate report`: the same report from the tree and the log, offline.
    out = tmp_path / "acme.json"
    r = subprocess.run([str(pipeline.binary), "report", "--config", str(pipeline.config), "--period", PERIOD,
                        "--tenant", "acme", "--rollup-dir", str(pipeline.rollups), "--log-dir", str(pipeline.decisions),
                        "--out", str(out)], capture_output=True, text=True, cwd=pipeline.root, env=pipeline.env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    offline = json.loads(out.read_text())
    api = pipeline.api_json("GET", f"/v1/reports/summary?period={PERIOD}", TOKEN_ACME)
    assert same(offline["total"], api["total"]) and same(offline["teams"], api["teams"]), (offline["total"], api["total"])
    assert offline["decisions"]["total"] == api["decisions"]["total"] > 0, (offline["decisions"], api["decisions"])
    md = subprocess.run([str(pipeline.binary), "report", "--config", str(pipeline.config), "--period", PERIOD,
                         "--rollup-dir", str(pipeline.rollups), "--log-dir", str(pipeline.decisions)],
                        capture_output=True, text=True, cwd=pipeline.root, env=pipeline.env, timeout=120)
    assert md.returncode == 0 and md.stdout.startswith("# Tollgate report") and "all tenants" in md.stdout, md.stderr
    assert "acme" in md.stdout and "globex" in md.stdout, "an operator's report has every tenant"
    html = tmp_path / "all.html"
    r = subprocess.run([str(pipeline.binary), "report", "--config", str(pipeline.config), "--period", PERIOD,
                        "--rollup-dir", str(pipeline.rollups), "--log-dir", str(pipeline.decisions), "--out", str(html)],
                       capture_output=True, text=True, cwd=pipeline.root, env=pipeline.env, timeout=120)
    assert r.returncode == 0 and Path(html).read_text().startswith("<!doctype html>"), r.stderr
