"""The shipped dashboard and alert rules against real data: a real Prometheus
(Debian package `prometheus`), on deploy/prometheus/prometheus.yml with
deploy/prometheus/alerts.yaml, scrapes a real `tollgate run` that is fed
events (some invalid, some late), evaluates window policies that deny and
answers gate requests. Every PromQL expression of deploy/grafana/tollgate.json
and of the alert rules must parse and return series through Prometheus's
HTTP API; every rule must be loaded and evaluate without error."""

import json
import random
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from test_http import wait_for_events
from test_pipeline import heartbeat, inference, training
from tollgate_testlib import TOKEN_ACME, TOKEN_ADMIN, free_port

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "tollgate.json"

# What Grafana would put in place of its variables.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "10m", "$tenant": ".*", "$team": ".*"}


def dashboard_exprs():
    """(where, PromQL) of every panel target and every query variable."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            # label_values(selector, label): the selector must have series with the label.
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", v["definition"])
            assert m, f"variable {v['name']}: {v['definition']}"
            out.append((f"variable {v['name']}", f"count by ({m[2]}) ({m[1]})"))
    return out


def alert_rules():
    rules = yaml.safe_load((PROM_DIR / "alerts.yaml").read_text())
    return [r for g in rules["groups"] for r in g["rules"]]


def signal_of(expr):
    """The left side of an alert's top-level comparison (`A > 0.01` → `A`):
    the series the alert watches, present whether or not it fires."""
    depth, quote, i = 0, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and (c in "<>" or expr.startswith("==", i) or expr.startswith("!=", i)):
            return expr[:i].strip()
        i += 1
    return expr.strip()


def test_signal_of_splits_only_at_the_top_level():
    assert signal_of('up{job="x"} == 0') == 'up{job="x"}'
    assert signal_of('sum(rate(a{s=~"5..", r!="x"}[5m])) / sum(b) > 0.01') == 'sum(rate(a{s=~"5..", r!="x"}[5m])) / sum(b)'
    assert signal_of('histogram_quantile(0.99, x) >= 5') == "histogram_quantile(0.99, x)"
    assert signal_of("rate(a[5m])") == "rate(a[5m])"


def substitute(expr):
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


class Prometheus:
    def __init__(self, tmp, target, token):
        tmp.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("prometheus")
        assert binary, "prometheus missing: run scripts/setup.sh (Debian package prometheus)"
        token_file = tmp / "scrape-token"
        token_file.write_text(token + "\n")
        # The shipped config, pointed at this pipeline and scraping every second.
        cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
        cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
        cfg["rule_files"] = [str(PROM_DIR / f) for f in cfg["rule_files"]]
        (job,) = cfg["scrape_configs"]
        job["authorization"]["credentials_file"] = str(token_file)
        job["static_configs"] = [{"targets": [target]}]
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump(cfg))
        self.port = free_port()
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.tmp = tmp

    def get(self, path, **params):
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def query(self, expr):
        """Prometheus's answer; a PromQL error is an HTTP 400 with its reason."""
        try:
            return self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"prometheus not ready in {timeout}s:\n{self.log_text()}")

    def log_text(self):
        return (self.tmp / "prometheus.log").read_text(errors="replace")[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def events(rng, base, start, n, tenants=("acme", "globex")):
    """Inference of two tenants, one every 1.5 s of event time from `base`,
    with training and heartbeats beside them; keyed by tenant."""
    msgs = []
    for i in range(start, start + n):
        tenant = tenants[i % len(tenants)]
        msgs.append(("inference", i % 3, tenant, inference(i, base + i * 1500, tenant, rng.choice(["ai", "web"]), rng)))
        if i % 20 == 0:
            msgs.append(("training", i % 3, "acme", training(i, base + i * 1500, "acme", "ai", rng)))
            msgs.append(("heartbeat", i % 3, "acme", heartbeat(i, base + i * 1500, "acme", rng)))
    return msgs


def produce(pipeline, msgs):
    pipeline.produce([(k, p, key, json.dumps(e)) for k, p, key, e in msgs])


def test_dashboard_and_alert_queries_return_series_from_a_real_prometheus(pipeline, tmp_path):
    # A monthly budget of 1 cent: the budget policy denies on every window.
    text = pipeline.config.read_text()
    text, n = re.subn(r"(?m)^budget_usd = .*$", "budget_usd = 0.01", text)
    assert n == 1
    pipeline.config.write_text(text)
    proc = pipeline.start("--idle-timeout-secs", "2")
    prom = Prometheus(tmp_path / "prom", f"127.0.0.1:{pipeline.http_port}", TOKEN_ADMIN)
    try:
        pipeline.wait_api("/healthz")
        prom.wait_ready()
        rng = random.Random(11)
        base = int(time.time() * 1000) - 9 * 60_000
        # Counters are only seen to rise once Prometheus has their first
        # sample: windows close in two rounds, with scrapes between.
        first = events(rng, base, 0, 160)
        produce(pipeline, first)
        wait_for_events(pipeline, len(first))
        deny = 'tollgate_decisions_total{policy="team-monthly-budget", verdict="deny"}'
        wait_for(prom, deny)
        second = events(rng, base, 200, 120)
        produce(pipeline, second)
        pipeline.produce([("inference", 0, "acme", b"{not json"), ("inference", 1, "acme", json.dumps({"event_id": "x"}))])
        wait_for_events(pipeline, len(first) + len(second))
        # Late: the windows of `base` have closed.
        produce(pipeline, [("inference", 2, "acme", inference(9000 + i, base + i, "acme", "ai", rng)) for i in range(5)])
        time.sleep(2.5)  # the live view sees the last close
        for body in ({"unit_cost_usd": 0.1, "cost_tags": {"team": "ai", "environment": "dev"}}, {"unit_cost_usd": 0.9}):
            st, _, raw = pipeline.api("POST", "/v1/gates/policy-check", token=TOKEN_ACME, body=json.dumps(body))
            assert st == 200, raw
        wait_for(prom, 'up{job="tollgate"} == 1')

        # Every metric the rules and panels read is exported.
        names = set(prom.get("/api/v1/label/__name__/values")["data"])
        # (where, PromQL, must it return series now?)
        checks = [(w, substitute(e), True) for w, e in dashboard_exprs()]
        for r in alert_rules():
            # The full expression is empty while the alert does not fire.
            checks.append((f"alert {r['alert']}", r["expr"], False))
            checks.append((f"alert {r['alert']}, its signal", signal_of(r["expr"]), True))
        read = {m for _, e, _ in checks for m in re.findall(r"\b(tollgate_\w+|up)\b(?=\s*[{\[)\s])", e)}
        missing = sorted(read - names)
        assert not missing, f"not exported by tollgate run: {missing}"

        # Each expression parses, and returns series where it must. Rates
        # need two scrapes after a series appears.
        pending = {(w, e) for w, e, _ in checks}
        deadline = time.time() + 90
        while pending and time.time() < deadline:
            for where, expr, series in checks:
                if (where, expr) not in pending:
                    continue
                ans = prom.query(expr)
                assert ans["status"] == "success", f"{where}: {expr}\n{ans}"
                if ans["data"]["result"] or not series:
                    pending.discard((where, expr))
            time.sleep(1)
        assert not pending, "no series:\n" + "\n".join(f"{w}: {e}" for w, e in sorted(pending))

        # Prometheus loaded and evaluated every rule without error.
        deadline = time.time() + 30
        while True:
            groups = prom.get("/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if len(rules) == len(alert_rules()) and all(r["health"] == "ok" for r in rules):
                break
            assert time.time() < deadline, json.dumps(rules, indent=1)[:3000]
            time.sleep(1)

        # What the data should have set off, did.
        for expr in ("sum(tollgate_dlq_messages_total) >= 2", "sum(tollgate_late_events_total) >= 5",
                     'sum(tollgate_decisions_total{policy="gate"}) >= 2'):
            assert prom.query(expr)["data"]["result"], expr
        wait_for(prom, 'ALERTS{alertname="TollgateBudgetDenies", alertstate="firing"}')
        assert proc.poll() is None, pipeline.log_tail()
    finally:
        prom.stop()


def wait_for(prom, expr, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ans = prom.query(expr)
        assert ans["status"] == "success", f"{expr}: {ans}"
        if ans["data"]["result"]:
            return ans["data"]["result"]
        time.sleep(0.5)
    raise AssertionError(f"{expr}: no series in {timeout}s; targets: {prom.get('/api/v1/targets')}\n{prom.log_text()}")
