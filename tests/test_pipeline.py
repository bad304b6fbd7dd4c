"""End-to-end tests against a real broker: known events in, Parquet rollups
out, compared with totals computed here from the raw events."""

import json
import os
from collections import Counter
import random
import re
import subprocess
import time

import duckdb
import pyarrow.parquet as pq
import pytest

from tollgate_testlib import actual_rollup, assert_rollups_equal, check_decision_log, decision_lines, expected_rollup

BASE = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3.1-70b", "gemini-1.5-pro", "no-such-model"]
REGIONS = ["us-east-1", "eu-north-1", "ap-southeast-1", None]


def inference(i, ts, tenant, team, rng, env="prod"):
    e = {
        "event_id": f"inf-{i}",
        "ts": ts,
        "tenant": tenant,
        "tags": {"team": team, "environment": env} if team else {"environment": env},
        "model": rng.choice(MODELS),
        "input_tokens": rng.randrange(1, 5000),
        "output_tokens": rng.randrange(0, 2000),
        "duration_ms": round(rng.uniform(5, 4000), 1),
    }
    if i % 3 == 0:  # a project on some: kept as its own rollup dimension
        e["tags"]["project"] = f"project-{i % 2}"
    if i % 7 == 0:  # a provider's bill on some: kept instead of the book's price
        e["cost_usd"] = round(0.001 * (i % 11), 6)
    if rng.random() < 0.3:
        e["cached_input_tokens"] = rng.randrange(0, e["input_tokens"] + 1)
    if rng.random() < 0.2:  # cache writes and reasoning: parts of input and output, priced apart
        e["cache_write_tokens"] = rng.randrange(0, e["input_tokens"] - e.get("cached_input_tokens", 0) + 1)
        e["reasoning_tokens"] = rng.randrange(0, e["output_tokens"] + 1)
    if i % 50 == 0:  # a long request: above the tiered models' size, all of it at the tier's rates
        e["input_tokens"] += 150_000
    region = rng.choice(REGIONS)
    if region:
        e["region"] = region
    return e


def produce_keyed(pipeline, n, seed, step_ms, teams):
    """`n` inference events over the 3 partitions, keyed and tenanted by
    partition, `step_ms` apart (±2 s); returns what the rollups must count."""
    rng = random.Random(seed)
    messages, counted = [], []
    for i in range(n):
        partition = i % 3
        tenant = f"tenant-{partition}"
        e = inference(i, BASE + i * step_ms + rng.randrange(0, 2000), tenant, f"team-{rng.randrange(teams)}", rng)
        messages.append(("inference", partition, tenant, json.dumps(e)))
        counted.append(("inference", e))
    pipeline.produce(messages)
    return counted


def training(i, ts, tenant, team, rng):
    return {
        "event_id": f"trn-{i}",
        "ts": ts,
        "tenant": tenant,
        "tags": {"team": team, "environment": "prod"},
        "model": "llama-3.1-70b",
        "gpu_type": rng.choice(["h100", "A100", "tpu-v5"]),
        "gpu_count": rng.randrange(1, 9),
        "duration_hours": round(rng.uniform(0.1, 3), 3),
        "gpu_utilization": round(rng.uniform(0.2, 1.0), 2),
        "region": rng.choice(["us-east-1", "eu-north-1"]),
    }


def heartbeat(i, ts, tenant, rng):
    return {"event_id": f"hb-{i}", "ts": ts, "tenant": tenant, "node_id": f"n{i % 7}", "region": "eu-west-1", "latency_ms": rng.uniform(1, 90)}


def test_end_to_end_exact_totals_with_duplicates_late_and_malformed(pipeline):
    rng = random.Random(42)
    tenants = ["acme", "globex", "initech"]
    messages, counted, late_ids = [], [], set()
    partition_of = {t: i for i, t in enumerate(tenants)}
    for i in range(3000):
        tenant = tenants[i % 3]
        team = rng.choice(["search", "ads", "infra", None])
        # Event time advances ~6.5 minutes over the stream, small jitter (< lateness).
        ts = BASE + i * 130 + rng.randrange(0, 3000)
        roll = rng.random()
        if roll < 0.05:
            kind, e = "training", training(i, ts, tenant, team or "ml", rng)
        elif roll < 0.10:
            kind, e = "heartbeat", heartbeat(i, ts, tenant, rng)
        else:
            kind, e = "inference", inference(i, ts, tenant, team, rng)
        if rng.random() < 0.5:
            e["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000)) + f".{ts % 1000:03d}Z"
            e["_ts"] = ts
        raw = json.dumps({k: v for k, v in e.items() if k != "_ts"})
        e["ts"] = e.pop("_ts", ts)
        messages.append((kind, partition_of[tenant], tenant, raw))
        counted.append((kind, e))
        if i == 1500:  # OTel GenAI attribute names are accepted as aliases.
            alias = {"event_id": "otel-1", "ts": e["ts"], "tenant": tenant, "tags": {"team": "ads"}, "gen_ai.request.model": "gpt-4o",
                     "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 50, "duration_ms": 20}
            messages.append(("inference", partition_of[tenant], tenant, json.dumps(alias)))
            counted.append(("inference", {**alias, "model": "gpt-4o", "input_tokens": 100, "output_tokens": 50}))
        if rng.random() < 0.03:  # a retried send: same key, same partition, same event
            messages.append((kind, partition_of[tenant], tenant, raw))
            counted.append((kind, e))
    # Late events: far behind the watermark of their partition, sent last.
    for j, tenant in enumerate(tenants):
        e = inference(10_000 + j, BASE + 1_000, tenant, "search", rng)
        messages.append(("inference", partition_of[tenant], tenant, json.dumps(e)))
        late_ids.add(e["event_id"])
    bad = [
        ("inference", b"{not json"),
        ("inference", json.dumps({"event_id": "neg", "ts": BASE, "tenant": "acme", "model": "m", "input_tokens": -5, "output_tokens": 1, "duration_ms": 1}).encode()),
        ("inference", json.dumps({"event_id": "frac", "ts": BASE, "tenant": "acme", "model": "m", "input_tokens": 1.5, "output_tokens": 1, "duration_ms": 1}).encode()),
        ("training", json.dumps({"event_id": "nogpu", "ts": BASE, "tenant": "acme", "model": "m", "gpu_count": 1, "duration_hours": 1}).encode()),
        ("heartbeat", json.dumps({"kind": "inference", "event_id": "x", "ts": BASE, "tenant": "acme", "node_id": "n", "region": "r"}).encode()),
        ("inference", json.dumps({"kind": "billing", "event_id": "y", "ts": BASE, "tenant": "acme"}).encode()),
        ("inference", b"x" * 70_000),
    ]
    for n, (kind, raw) in enumerate(bad):
        messages.insert(100 + 200 * n, (kind, 1, "globex", raw))
    pipeline.produce(messages)

    pipeline.run_to_end()

    expected = expected_rollup(pipeline.book, counted)
    actual, table = actual_rollup(pipeline.rollups)
    assert_rollups_equal(expected, actual)

    # Every file is one window of one partition; names are deterministic.
    names = [f.name for f in pipeline.files()]
    assert len(names) == len(set(names))
    for f in pipeline.files():
        meta = pq.read_metadata(f).metadata
        assert int(meta[b"tollgate.first_offset"]) == int(f.stem.rsplit("-", 1)[1])
        assert f.parent.name.startswith("hour=") and f.parent.parent.name.startswith("date=")

    # DuckDB reads the tree with nothing but the glob, hive columns included.
    con = duckdb.connect()
    row = con.execute(f"SELECT sum(events), sum(input_tokens), count(DISTINCT kind), min(date) FROM read_parquet('{pipeline.rollups}/**/*.parquet')").fetchone()
    unique = {(e["tenant"], e["event_id"]) for _, e in counted}
    assert row[0] == len(unique)
    assert row[1] == sum(v[1] for v in expected.values())
    assert row[2] == 3
    assert str(row[3]) == "2026-01-01"

    # Late events are in the late-data output, not in the rollups.
    late_lines = [json.loads(line) for f in sorted(pipeline.late.glob("*.ndjson")) for line in f.read_text().splitlines()]
    assert {line["event"]["event_id"] for line in late_lines} == late_ids

    # Malformed messages are on the DLQ with their source and error.
    dlq = pipeline.read_topic("dlq", len(bad))
    assert len(dlq) == len(bad)
    errors = []
    for m in dlq:
        h = {k: v.decode() for k, v in m.headers()}
        assert h["tollgate.source.topic"].startswith(f"t{pipeline.uid}.")
        assert int(h["tollgate.source.partition"]) == 1
        assert int(h["tollgate.source.offset"]) >= 0
        errors.append(h["tollgate.error"])
    joined = "\n".join(errors)
    for needle in ["not valid JSON", "input_tokens` is -5", "input_tokens` is 1.5", "missing required field `gpu_type`",
                   "event of kind `inference`", "unknown kind `billing`", "larger than the limit"]:
        assert needle in joined, f"{needle!r} not in DLQ errors:\n{joined}"

    # A second run of the same group finds nothing new and rewrites nothing.
    before = {f: f.stat().st_mtime_ns for f in pipeline.files()}
    pipeline.run_to_end()
    assert {f: f.stat().st_mtime_ns for f in pipeline.files()} == before


def test_hard_kill_and_restart_keeps_totals_exact(pipeline):
    rng = random.Random(7)
    messages, counted = [], []
    n = 60_000
    for i in range(n):
        partition = i % 3
        tenant = f"tenant-{partition}"
        ts = BASE + i * 20 + rng.randrange(0, 2000)  # 20 minutes of event time
        e = inference(i, ts, tenant, f"team-{rng.randrange(40)}", rng)
        raw = json.dumps(e)
        messages.append(("inference", partition, tenant, raw))
        counted.append(("inference", e))
        if rng.random() < 0.02:
            messages.append(("inference", partition, tenant, raw))
    pipeline.produce(messages)

    # Kill -9 at three points while windows are being written, then run to the end.
    pipeline.kill_at_files((2, 10, 25))
    pipeline.run_to_end()

    expected = expected_rollup(pipeline.book, counted)
    actual, _ = actual_rollup(pipeline.rollups)
    assert_rollups_equal(expected, actual)
    assert not list(pipeline.rollups.rglob(".*.tmp")), "no temp files left behind"
    assert not list(pipeline.late.glob("*.ndjson")) if pipeline.late.exists() else True
    log = (pipeline.tmp / "run.log").read_text()
    # At least one restart resumed a partition from a commit in the middle of
    # the stream (not from offset 0), so the replay path was exercised.
    resumed = [int(m) for m in re.findall(r"partition restored offset=(\d+)", log)]
    assert any(o > 0 for o in resumed), resumed


def test_late_events_are_written_once_across_hard_kills(pipeline):
    """Late events interleaved with on-time ones, so late batches start
    before open windows' first offsets: after SIGKILLs and a replay, every
    late event is in the late output exactly once."""
    rng = random.Random(9)
    messages, counted, late_ids = [], [], set()
    for i in range(30_000):
        partition = i % 3
        tenant = f"tenant-{partition}"
        if i % 40 == 39:
            # An hour before the stream: its window closed long ago.
            e = inference(i, BASE - 3_600_000 + i, tenant, "late", rng)
            late_ids.add(e["event_id"])
        else:
            e = inference(i, BASE + i * 40 + rng.randrange(0, 2000), tenant, f"team-{rng.randrange(20)}", rng)
            counted.append(("inference", e))
        messages.append(("inference", partition, tenant, json.dumps(e)))
    pipeline.produce(messages)

    pipeline.kill_at_files((2, 8, 16))
    pipeline.run_to_end()

    actual, _ = actual_rollup(pipeline.rollups)
    assert_rollups_equal(expected_rollup(pipeline.book, counted), actual)
    seen = Counter(json.loads(line)["event"]["event_id"]
                   for f in sorted(pipeline.late.glob("*.ndjson")) for line in f.read_text().splitlines())
    assert set(seen) == late_ids
    twice = {k: v for k, v in seen.items() if v > 1}
    assert not twice, f"{len(twice)} late events written more than once, e.g. {list(twice.items())[:5]}"


def test_unreachable_broker_is_a_clear_error_not_a_panic(tmp_path, tollgate_bin):
    import os

    from tollgate_testlib import ROOT_CONFIG, TEST_SECRET

    proc = subprocess.run(
        [str(tollgate_bin), "run", "--config", ROOT_CONFIG, "--brokers", "127.0.0.1:1", "--exit-when-idle", "--broker-wait-secs", "3", "--http-listen", "",
         "--rollup-dir", str(tmp_path / "r"), "--late-dir", str(tmp_path / "l"), "--decision-log-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SAVE_HMAC_SECRET": TEST_SECRET},
    )
    assert proc.returncode == 1
    assert "broker not reachable at 127.0.0.1:1" in proc.stderr
    assert "panicked" not in proc.stderr
    assert "broker not reachable yet" in proc.stderr, "retries are logged"


def test_a_committed_offset_beyond_the_log_is_refused_not_skipped(pipeline):
    """The group's committed offset is past the end of the partition's log
    (the topic was recreated, or the broker lost data). Resuming would skip
    every message now on the broker as 'already processed'; the pipeline
    refuses, naming the partition, and writes nothing."""
    from confluent_kafka import Consumer, TopicPartition

    rng = random.Random(5)
    pipeline.produce([("inference", i % 3, "acme", json.dumps(inference(i, BASE + i * 1000, "acme", "team-a", rng)))
                      for i in range(90)])
    c = Consumer({"bootstrap.servers": pipeline.brokers, "group.id": f"g{pipeline.uid}", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(pipeline.topics["inference"], 1, 500)], asynchronous=False)
    c.close()
    proc = pipeline.start("--exit-when-idle", "--idle-timeout-secs", "3")
    rc = proc.wait(240)
    log = pipeline.log_tail(200)
    assert rc == 1, log
    assert "restarting" not in log, "a restart changes nothing: it stops for the operator"
    assert f"committed offset 500 of {pipeline.topics['inference']}/1 is beyond the end of its log (30)" in log, log
    assert "panicked" not in log
    assert not pipeline.files(), "nothing is written from a log that is not the one committed against"


def test_broker_restart_mid_stream_loses_nothing(pipeline):
    """The broker goes away while the pipeline runs and comes back (SQLite
    storage keeps the data): the pipeline keeps running, and the totals are exact."""
    import signal

    counted = produce_keyed(pipeline, 30_000, seed=11, step_ms=40, teams=10)
    # Dynamic group membership: a stopped member leaves the group at once.
    # With static membership its session outlives it, and tansu 0.6 wedges
    # the group when that session expires after the next run has joined
    # (seen 23 s after a graceful stop with a 10 s session timeout: the new
    # run was assigned, revoked, and then no member was ever assigned again,
    # whatever its instance id). Static restarts are covered by the hard-kill test.
    pipeline.config.write_text(
        re.sub(r"(?m)^\[kafka\]$", '[kafka]\ninstance_id = ""', pipeline.config.read_text())
    )

    proc = pipeline.start("--idle-timeout-secs", "30")
    deadline = time.time() + 120
    while len(pipeline.files()) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    port = pipeline.brokers.rsplit(":", 1)[1]
    broker = str(pipeline.root / "scripts" / "broker.sh")
    subprocess.run([broker, "stop", port], check=True)
    time.sleep(3)
    assert proc.poll() is None, f"pipeline died with the broker:\n{pipeline.log_tail()}"
    subprocess.run([broker, "start", port], check=True)
    # Let it reconnect and go on, then stop it gracefully and finish the stream.
    time.sleep(5)
    assert proc.poll() is None, f"pipeline died after the broker came back:\n{pipeline.log_tail()}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, pipeline.log_tail()
    pipeline.run_to_end()

    expected = expected_rollup(pipeline.book, counted)
    actual, _ = actual_rollup(pipeline.rollups)
    assert_rollups_equal(expected, actual)
    assert "panicked" not in (pipeline.tmp / "run.log").read_text()


def test_workers_in_one_process_split_the_partitions_and_count_once(pipeline):
    """`--workers 3`: three consumers of the group in one process, each with
    its own partitions and writer, sharing the decision log. Every worker
    writes windows, the totals are exact, every decision is in the log once,
    and a hard kill of the process mid-stream changes nothing."""
    counted = produce_keyed(pipeline, 30_000, seed=23, step_ms=40, teams=12)

    pipeline.kill_at_files((4,), extra=("--workers", "3"))
    proc = pipeline.start("--exit-when-idle", "--idle-timeout-secs", "3", "--workers", "3")
    assert proc.wait(300) == 0, pipeline.log_tail()

    expected = expected_rollup(pipeline.book, counted)
    actual, _ = actual_rollup(pipeline.rollups)
    assert_rollups_equal(expected, actual)
    log = (pipeline.tmp / "run.log").read_text(errors="replace")
    writers = {int(w) for w in re.findall(r"worker\{worker=(\d+)\}.*window written", log)}
    assert writers == {0, 1, 2}, f"windows written by workers {writers}"
    assert "panicked" not in log
    lines = decision_lines(pipeline.decisions)
    ids = [json.loads(line)["decision_id"] for line in lines]
    assert ids and len(ids) == len(set(ids)), "every decision once"
    check_decision_log(lines)


@pytest.mark.skipif(
    not any(k.startswith("TOLLGATE_KILL_TEST") for k in os.environ),
    reason="on demand (TOLLGATE_KILL_TEST_EVENTS=...): tansu 0.6 sometimes leaves partitions "
    "unassigned after a member is killed, and the run then waits for them (docs/broker-notes.md)",
)
def test_two_instances_on_one_volume_a_kill_and_a_stop_count_once(pipeline):
    """Instances `a` and `b` (two workers each) in one group on the same
    rollup directory, with a decision log each (`decisions.per_instance`).
    `a` is SIGKILLed and restarted mid stream, `b` is stopped for good, and
    `a` finishes alone: the totals are exact, each instance's log verifies,
    and `tollgate verify` checks them all. Larger runs (not in the suite):
    TOLLGATE_KILL_TEST_EVENTS, _INSTANCES and _KILLS (kills cycle over every
    instance but the last, which is the one stopped for good)."""
    import signal

    events = int(os.environ.get("TOLLGATE_KILL_TEST_EVENTS", "40000"))
    names = "abcdefgh"[: int(os.environ.get("TOLLGATE_KILL_TEST_INSTANCES", "2"))]
    kills = int(os.environ.get("TOLLGATE_KILL_TEST_KILLS", "1"))
    assert len(names) >= 2
    text = pipeline.config.read_text()
    text, n = re.subn(r"(?m)^per_instance = false", "per_instance = true", text)
    assert n == 1
    # Dynamic membership (as in the broker restart test): tansu 0.6 wedges
    # a group whose static members' sessions expire after a new member has
    # joined (docs/broker-notes.md), which stopped instances here keep doing.
    # Each instance's log is then named after its host.
    text = re.sub(r"(?m)^\[kafka\]$", '[kafka]\ninstance_id = ""', text)
    pipeline.config.write_text(text)
    step_ms = 30
    counted = produce_keyed(pipeline, events, seed=29, step_ms=step_ms, teams=12)
    windows = events * step_ms // 60_000 * 3  # files the run writes, about

    logs = {}

    def start(name, *extra, idle="30"):
        logs[name] = pipeline.tmp / f"run-{name}.log"
        http = [] if name == "a" else ["--http-listen", ""]
        return pipeline.start("--idle-timeout-secs", idle, *http, *extra, log_name=f"run-{name}.log",
                              env={"HOSTNAME": name})

    def wait_files(n, timeout=120):
        deadline = time.time() + timeout
        while len(pipeline.files()) < n and time.time() < deadline:
            for p in procs.values():
                assert p.poll() is None, f"an instance exited early:\n{tail()}"
            time.sleep(0.05)

    def tail():
        return "\n".join(f"--- {k}\n" + "\n".join(v.read_text(errors="replace").splitlines()[-40:]) for k, v in logs.items())

    procs = {name: start(name) for name in names}
    for k in range(kills):
        wait_files(max(3, windows * (k + 1) // (kills + 2)))
        victim = names[k % (len(names) - 1)]
        print(f"kill {k + 1}: SIGKILL {victim} at {len(pipeline.files())} files")
        pipeline.kill_hard(procs[victim])
        procs[victim] = start(victim)
    wait_files(max(8, windows * (kills + 1) // (kills + 2)))
    for name in reversed(names):  # the last instance first: it stays stopped
        procs[name].send_signal(signal.SIGTERM)
        assert procs[name].wait(60) == 0, tail()
    a = start("a", "--exit-when-idle", idle="3")
    assert a.wait(300) == 0, tail()

    expected = expected_rollup(pipeline.book, counted)
    actual, _ = actual_rollup(pipeline.rollups)
    assert_rollups_equal(expected, actual)
    everything = "\n".join(v.read_text(errors="replace") for v in logs.values())
    assert "panicked" not in everything
    assert {p.name for p in pipeline.decisions.iterdir() if p.is_dir()} == {f"tollgate-{n}" for n in names}
    for name in names:
        check_decision_log(decision_lines(pipeline.decisions / f"tollgate-{name}"))
    ok = subprocess.run([str(pipeline.binary), "verify", str(pipeline.decisions)], cwd=pipeline.root,
                        capture_output=True, text=True, env=pipeline.env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    with_records = [d for d in pipeline.decisions.iterdir() if list(d.glob("segment-*.ndjson"))]
    assert with_records, "decisions were made"
    if len(with_records) > 1:
        assert f"OK: {len(with_records)} instance log(s)" in ok.stdout, ok.stdout
