"""Test helpers: an independent implementation of the cost and carbon model
(read from the same pipeline config), a Kafka producer and consumer that are
not tollgate's, and a handle on one pipeline instance."""

import fnmatch
import json
import os
import re
import signal
import socket
import urllib.error
import urllib.request
import subprocess
import time
import tomllib
import hashlib
import hmac
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TEST_SECRET = "integration-test-secret-0123456789"
TEST_KEY_ID = "k-test"
GENESIS = "0" * 64


def es_number(x):
    """ECMAScript Number::toString, written independently of the Rust one."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    r = repr(abs(x))
    m, _, e = r.partition("e")
    ip, _, fp = m.partition(".")
    alld = ip + fp
    lead = len(alld) - len(alld.lstrip("0"))
    n = int(e or 0) + len(ip) - lead
    digits = alld.strip("0")
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if n >= 1 else "-") + str(abs(n - 1))
    return sign + out


def canonical(v):
    """RFC 8785 (JCS) serialization."""
    if v is None:
        return "null"
    if isinstance(v, (bool, int, float)):
        return es_number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(canonical(i) for i in v) + "]"
    items = sorted(v.items(), key=lambda kv: kv[0].encode("utf-16-be"))
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + canonical(x) for k, x in items) + "}"


def decision_lines(log_dir):
    """Every record line of a decision log, in order."""
    lines = []
    for seg in sorted(Path(log_dir).glob("segment-*.ndjson")):
        lines += seg.read_text().splitlines()
    return lines


def check_decision_log(lines, secret=TEST_SECRET):
    """Verify signatures and the chain in Python; returns the records."""
    prev, records = GENESIS, []
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert canonical(rec) == line, f"record {i + 1} is not canonical JSON"
        unsigned = {k: v for k, v in rec.items() if k != "signature"}
        mac = hmac.new(secret.encode(), canonical(unsigned).encode(), hashlib.sha256).hexdigest()
        assert hmac.compare_digest(mac, rec["signature"]), f"record {i + 1}: bad signature"
        assert rec["prev_hash"] == prev, f"record {i + 1}: chain broken"
        prev = hashlib.sha256(line.encode()).hexdigest()
        records.append(rec)
    ids = [r["decision_id"] for r in records]
    assert len(ids) == len(set(ids)), "a decision_id appears twice"
    return records



class PriceBook:
    """The enrichment formulas of DESIGN.md, written independently of the Rust code."""

    def __init__(self, config_path, env=None):
        cfg = tomllib.loads(Path(config_path).read_text())
        env = env or {}
        self.pricing = cfg.get("pricing", {})
        self.d_in = float(env.get("COST_PER_1K_INPUT_TOKENS", 0.001))
        self.d_out = float(env.get("COST_PER_1K_OUTPUT_TOKENS", 0.002))
        self.d_hour = float(env.get("COMPUTE_COST_PER_HOUR", 1.0))
        self.d_energy = float(env.get("ENERGY_WH_PER_1K_TOKENS", 0.3))
        self.d_intensity = float(env.get("CARBON_INTENSITY_G_PER_KWH", 400))
        self.pue = self.pricing.get("pue", 1.2)
        self.default_watts = self.pricing.get("default_gpu_watts", 400)
        self.embodied_per_gpu_hour = self.pricing.get("embodied_g_per_gpu_hour", 0.0)

    def model_entry(self, model, ts_ms):
        matches = [m for m in self.pricing.get("models", []) if fnmatch.fnmatchcase(model, m["pattern"])]
        if not matches:
            return None
        best = max(len(m["pattern"].replace("*", "")) for m in matches)
        owner = next(m["pattern"] for m in matches if len(m["pattern"].replace("*", "")) == best)
        day = datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d")
        dated = [m for m in matches if m["pattern"] == owner and m.get("effective_from", "0000-00-00") <= day
                 and day < m.get("effective_to", "9999-99-99")]
        if not dated:
            return None
        return max(dated, key=lambda m: m.get("effective_from", "0000-00-00"))

    def intensity(self, region):
        for r in self.pricing.get("regions", []):
            if r["region"] == region:
                return r["carbon_intensity_g_per_kwh"]
        return self.d_intensity

    def gpu(self, e):
        same = [g for g in self.pricing.get("gpus", []) if g["gpu_type"].lower() == e["gpu_type"].lower()]
        return (next((g for g in same if "region" in g and g["region"] == e.get("region")), None)
                or next((g for g in same if "region" not in g), None))

    def enrich(self, kind, e):
        """(cost_usd, energy_wh, carbon_g, gpu_hours, input_tokens, output_tokens)"""
        ts = e["ts"]
        if kind == "inference":
            m = self.model_entry(e["model"], ts)
            if m:
                # A request above a tier's size: all of it at the highest such tier.
                tiers = [t for t in m.get("tiers", []) if e["input_tokens"] > t["above_input_tokens"]]
                rates = max(tiers, key=lambda t: t["above_input_tokens"]) if tiers else m
                p_in, p_out = rates["input_per_1k"], rates["output_per_1k"]
                p_cached = rates.get("cached_input_per_1k", p_in)
                p_write = rates.get("cache_write_per_1k", p_in)
                p_reason = rates.get("reasoning_per_1k", p_out)
            else:
                p_in, p_out = self.d_in, self.d_out
                p_cached = p_write = p_in
                p_reason = p_out
            energy_k = m.get("energy_wh_per_1k", self.d_energy) if m else self.d_energy
            cached = e.get("cached_input_tokens", 0)
            written = e.get("cache_write_tokens", 0)
            reasoning = e.get("reasoning_tokens", 0)
            cost = ((e["input_tokens"] - cached - written) * p_in + cached * p_cached + written * p_write
                    + (e["output_tokens"] - reasoning) * p_out + reasoning * p_reason) / 1000
            energy = (e["input_tokens"] + e["output_tokens"]) / 1000 * energy_k
            cost = e.get("cost_usd", cost)  # a provider's bill wins over the book
            return cost, energy, energy / 1000 * self.intensity(e.get("region")), 0.0, e["input_tokens"], e["output_tokens"]
        if kind == "training":
            gpu = self.gpu(e)
            price, watts = (gpu["price_per_hour"], gpu["watts"]) if gpu else (self.d_hour, self.default_watts)
            hours = e["gpu_count"] * e["duration_hours"]
            energy = hours * watts * e.get("gpu_utilization", 1.0) * self.pue
            return e.get("cost_usd", hours * price), energy, energy / 1000 * self.intensity(e.get("region")), hours, 0, 0
        return 0.0, 0.0, 0.0, 0.0, 0, 0

    def embodied(self, kind, e):
        """SCI's M, g CO2e: GPU-hours × the embodied figure (an inference
        request is one GPU for its duration)."""
        if kind == "inference":
            return e["duration_ms"] / 3_600_000 * self.embodied_per_gpu_hour
        if kind == "training":
            gpu = self.gpu(e) or {}
            return e["gpu_count"] * e["duration_hours"] * gpu.get("embodied_g_per_hour", self.embodied_per_gpu_hour)
        return 0.0


def expected_rollup(book, events):
    """Totals per (kind, tenant, team, project, model, region) over `events`:
    [(kind, event dict)], already free of late events; duplicates (same tenant
    and event_id) count once."""
    seen = set()
    out = defaultdict(lambda: [0, 0, 0, 0.0, 0.0, 0.0, 0.0])
    for kind, e in events:
        key = (e["tenant"], e["event_id"])
        if key in seen:
            continue
        seen.add(key)
        cost, _energy, carbon, hours, tin, tout = book.enrich(kind, e)
        tags = e.get("tags", {})
        dims = (kind, e["tenant"], tags.get("team"), tags.get("project"), e.get("model"), e.get("region"))
        row = out[dims]
        row[0] += 1
        row[1] += tin
        row[2] += tout
        row[3] += cost
        row[4] += carbon
        row[5] += hours
        row[6] += book.embodied(kind, e)
    return dict(out)


def actual_rollup(root, filesystem=None):
    """Totals as an analyst reads the tree: pyarrow, hive partitions, `_` and
    `.` entries skipped (a local path, or a bucket path on `filesystem`)."""
    import pyarrow.parquet as pq

    table = pq.read_table(root, filesystem=filesystem)
    out = defaultdict(lambda: [0, 0, 0, 0.0, 0.0, 0.0, 0.0])
    for r in table.to_pylist():
        dims = (str(r["kind"]), r["tenant"], r["team"], r.get("project"), r["model"], r["region"])
        row = out[dims]
        row[0] += r["events"]
        row[1] += r["input_tokens"]
        row[2] += r["output_tokens"]
        row[3] += r["cost_usd"]
        row[4] += r["carbon_g"]
        row[5] += r["gpu_hours"]
        row[6] += r.get("embodied_g") or 0.0
    return dict(out), table


def assert_rollups_equal(expected, actual):
    assert set(expected) == set(actual), f"missing {set(expected) - set(actual)}, extra {set(actual) - set(expected)}"
    for k, e in expected.items():
        a = actual[k]
        assert a[:3] == e[:3], f"{k}: events/tokens {a[:3]} != {e[:3]}"
        for i, name in [(3, "cost"), (4, "carbon"), (5, "gpu_hours"), (6, "embodied")]:
            assert abs(a[i] - e[i]) <= 1e-9 * max(1.0, abs(e[i])), f"{k}: {name} {a[i]} != {e[i]}"


# Static API tokens of the tests (AUTH_TOKENS_JSON).
TOKEN_ACME = "acme-writer-reader-0001"
# The deployment's scrape-only token (an operator's: no tenant).
TOKEN_ADMIN = "prometheus-scrape-0001"
TOKEN_GLOBEX = "globex-writer-reader-01"
# An operator's token with every scope (no tenant).
TOKEN_ROOT = "operator-every-scope-01"
_ALL = ["ingest.write", "gates.check", "usage.read", "decisions.read", "query.run"]
TEST_TOKENS = {
    TOKEN_ROOT: {"operator": True, "scopes": [*_ALL, "metrics.scrape"], "subject": "root"},
    TOKEN_ACME: {"tenant": "acme", "scopes": _ALL, "subject": "acme-ci"},
    TOKEN_ADMIN: {"operator": True, "scopes": ["metrics.scrape"], "subject": "prometheus"},
    TOKEN_GLOBEX: {"tenant": "globex", "scopes": _ALL, "subject": "globex-ci"},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pipeline:
    """One isolated tollgate setup: its own topics, group and directories."""

    def __init__(self, root, tmp, brokers, binary, uid):
        self.root, self.tmp, self.brokers, self.binary, self.uid = root, Path(tmp), brokers, binary, uid
        text = (root / "pipelines" / "default.toml").read_text()
        text = text.replace('"tollgate.', f'"t{uid}.')
        text = re.sub(r'(?m)^brokers = .*$', f'brokers = "{brokers}"', text)
        text = re.sub(r'(?m)^group_id = .*$', f'group_id = "g{uid}"', text)
        # Every pipeline serves its API on its own free port.
        self.http_port = free_port()
        text = re.sub(r'(?m)^listen = .*$', f'listen = "127.0.0.1:{self.http_port}"', text)
        text = re.sub(r'(?m)^\[kafka\]$', "[kafka]\nstatistics_interval_ms = 1000", text)
        self.config = self.tmp / "pipeline.toml"
        self.config.write_text(text)
        self.rollups = self.tmp / "rollups"
        self.late = self.tmp / "late"
        self.decisions = self.tmp / "decisions"
        # Decisions are signed; tollgate refuses to run without a secret.
        self.env = {**os.environ, "SAVE_HMAC_SECRET": TEST_SECRET, "SAVE_HMAC_KEY_ID": TEST_KEY_ID,
                    "AUTH_MODE": "static", "AUTH_TOKENS_JSON": json.dumps(TEST_TOKENS)}
        self.book = PriceBook(self.config)
        self.topics = {k: f"t{uid}.{k}" for k in ("inference", "training", "heartbeat", "dlq", "decisions")}
        self.partitions = 3
        self.procs = []
        admin = AdminClient({"bootstrap.servers": brokers})
        futures = admin.create_topics([NewTopic(t, num_partitions=self.partitions, replication_factor=1) for t in self.topics.values()])
        for f in futures.values():
            f.result(30)

    def producer(self):
        return Producer({"bootstrap.servers": self.brokers, "enable.idempotence": True, "linger.ms": 10, "queue.buffering.max.messages": 1000000})

    def produce(self, messages):
        """messages: [(kind, partition, key, value bytes/str[, headers])]"""
        p = self.producer()
        for kind, partition, key, value, *headers in messages:
            while True:
                try:
                    p.produce(self.topics[kind], value=value, key=key, partition=partition,
                              headers=headers[0] if headers else None)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        assert p.flush(60) == 0, "producer did not deliver everything"

    def args(self, *extra):
        return [str(self.binary), "run", "--config", str(self.config), "--rollup-dir", str(self.rollups),
                "--late-dir", str(self.late), "--decision-log-dir", str(self.decisions), *extra]

    def start(self, *extra, log_name="run.log", env=None):
        log = open(self.tmp / log_name, "ab")
        proc = subprocess.Popen(self.args(*extra), cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                env={**self.env, **(env or {})})
        self.procs.append(proc)
        return proc

    def run_to_end(self, idle=3, timeout=300):
        proc = self.start("--exit-when-idle", "--idle-timeout-secs", str(idle))
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"pipeline did not drain in {timeout}s; log:\n{self.log_tail()}")
        assert rc == 0, f"pipeline exited {rc}; log:\n{self.log_tail()}"

    def api(self, method, path, token=None, body=None, headers=None, timeout=30):
        """(status, headers, body bytes) of one request to the pipeline's API."""
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def api_json(self, method, path, token=None, body=None, expect=200, **kw):
        status, _, raw = self.api(method, path, token, body, **kw)
        assert status == expect, f"{method} {path}: {status} {raw[:500]!r}"
        return json.loads(raw)

    def wait_api(self, path="/healthz", expect=200, timeout=90):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = self.api("GET", path, timeout=5)
                if last[0] == expect:
                    return json.loads(last[2])
            except OSError as e:
                last = e
            time.sleep(0.5)
        raise AssertionError(f"{path} did not answer {expect} in {timeout}s: {last}; log:\n{self.log_tail()}")

    def log_tail(self, n=60):
        p = self.tmp / "run.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""

    def files(self):
        return sorted(self.rollups.rglob("*.parquet"))

    def kill_at_files(self, counts, timeout=120, extra=()):
        """Start the pipeline and SIGKILL it once `count` rollup files exist,
        for each count in turn (while windows are being written)."""
        for want_files in counts:
            proc = self.start("--idle-timeout-secs", "30", *extra)
            deadline = time.time() + timeout
            while len(self.files()) < want_files and time.time() < deadline and proc.poll() is None:
                time.sleep(0.02)
            assert proc.poll() is None, f"pipeline exited early:\n{self.log_tail()}"
            self.kill_hard(proc)

    def kill_hard(self, proc):
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def read_topic(self, kind, expect, timeout=60):
        c = Consumer({"bootstrap.servers": self.brokers, "group.id": f"reader-{self.uid}-{time.time_ns()}", "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
        c.subscribe([self.topics[kind]])
        out, deadline = [], time.time() + timeout
        while len(out) < expect and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append(m)
        c.close()
        return out

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


ROOT_CONFIG = str(Path(__file__).resolve().parent.parent / "pipelines" / "default.toml")
