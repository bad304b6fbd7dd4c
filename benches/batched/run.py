#!/usr/bin/env python3
"""Tollgate on a topic written by batching producers, against three
baselines measured in the same run on the same events (issue 21's table):

1. produce: `produce.py` (confluent-kafka keyed by team, linger.ms and
   batch.num.messages, event-time order with jitter), also as JSONL;
2. `count.py`: a confluent-kafka consumer that only counts;
3. `tollgate run --exit-when-idle` (every shipped policy, signed decisions);
4. `benches/python_pipeline/rollup.py`: the same rollup in Python;
5. `duckdb_rollup.py`: DuckDB's batch rollup of the JSONL.

Wall and CPU (user + system, every thread) of each as a child process.
Tollgate's wall is also split: up to its last rollup file vs the idle wait
before it exits (`--idle-timeout-secs`). Run by `scripts/bench-batched.sh`.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOPICS = ["tollgate.inference", "tollgate.training", "tollgate.heartbeat"]


def child(cmd, env=None, cwd=None):
    """Run `cmd`; its stdout, wall seconds and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-4000:])
        raise SystemExit(f"{cmd[0:3]} failed: {r.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return r.stdout, r.stderr, wall, cpu


def phase_times(log):
    """From `tollgate run`'s log (INFO): seconds from the first `consuming`
    to the last `partitions assigned` (joining the group), from there to the
    last window closed by watermark (reading), and the rest to the end."""
    import re
    from datetime import datetime

    def at(line):
        return datetime.fromisoformat(line.split()[0].rstrip("Z")).timestamp()

    lines = [ln for ln in log.splitlines() if re.match(r"^\d{4}-", ln)]
    consuming = min(at(ln) for ln in lines if "consuming topics=" in ln)
    assigned = max(at(ln) for ln in lines if "partitions assigned" in ln)
    windows = sorted(at(ln) for ln in lines if "window written" in ln)
    end = max(at(ln) for ln in lines if "pipeline finished" in ln)
    # The idle close writes the last window of each partition together, after a gap.
    gaps = [(b - a, a) for a, b in zip(windows, windows[1:])]
    last_read = max(gaps)[1] if gaps else (windows[-1] if windows else assigned)
    return {"join": assigned - consuming, "work": last_read - assigned, "tail": end - last_read}


def create_topics(brokers, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": brokers})
    fs = admin.create_topics([NewTopic(t, partitions, 1) for t in TOPICS])
    for t, f in fs.items():
        try:
            f.result()
        except Exception as e:  # an existing topic from an earlier run
            raise SystemExit(f"create {t}: {e} (start from a fresh broker)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--tollgate", default=str(ROOT / "target/release/tollgate"))
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--teams", type=int, default=12)
    ap.add_argument("--jitter-ms", type=int, default=2000)
    ap.add_argument("--linger-ms", type=int, default=20)
    ap.add_argument("--batch-messages", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--idle-timeout-secs", type=float, default=2.0)
    ap.add_argument("--skip", default="", help="comma-separated: python,duckdb")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="tollgate-batched-"))
    jsonl = work / "events.jsonl"
    create_topics(a.brokers, a.partitions)
    import pyarrow.parquet as pq
    py = sys.executable
    out, _, wall, _ = child([py, str(HERE / "produce.py"), "--brokers", a.brokers, "--count", str(a.count),
                             "--teams", str(a.teams), "--jitter-ms", str(a.jitter_ms), "--linger-ms",
                             str(a.linger_ms), "--batch-messages", str(a.batch_messages), "--jsonl", str(jsonl)])
    sent = int(out.split()[0])
    rows = [("produce (confluent-kafka, keyed by team)", wall, None, f"{sent} events")]

    out, _, wall, cpu = child([py, str(HERE / "count.py"), "--brokers", a.brokers, "--expect", str(sent)])
    n, first_to_last, _ = out.split()
    rows.append(("count-only consumer (Python), librdkafka's defaults", wall, cpu,
                 f"{first_to_last} s first to last message"))
    # tansu holds every fetch for the whole fetch.wait.max.ms (500 ms by
    # default) even with data to return; Tollgate's default is 10 ms.
    out, _, wall, cpu = child([py, str(HERE / "count.py"), "--brokers", a.brokers, "--expect", str(sent),
                               "--fetch-wait-max-ms", "10"])
    n, first_to_last, _ = out.split()
    rows.append(("count-only consumer (Python), fetch.wait.max.ms=10 as Tollgate", wall, cpu,
                 f"{first_to_last} s first to last message"))

    env = dict(os.environ, KAFKA_BROKERS=a.brokers, SAVE_HMAC_SECRET="a-benchmark-secret-0123456789",
               TOLLGATE_POLICIES_DIR=str(ROOT / "pipelines/policies"), TOLLGATE_GATES_DIR=str(ROOT / "pipelines/gates"),
               RUST_LOG="info", MALLOC_ARENA_MAX="2")
    # As deployed (static group membership, one worker per core), then with
    # dynamic membership (`TOLLGATE_INSTANCE_ID=""`), each alone and with
    # one worker: tansu 0.6 holds a static member's JoinGroup and SyncGroup
    # 3 s each (PAUSE_MS in its group coordinator), and a second member
    # joins a rebalance later.
    # (Not dynamic with two workers: the second joins a rebalance after the
    # first has committed, and tansu's memory engine then reports a high
    # watermark below the log's end, which Tollgate refuses as a lost log;
    # docs/broker-notes.md.)
    for label, extra in [("as shipped: static membership, a worker per core", {}),
                         ("static membership, 1 worker", {"TOLLGATE_WORKERS": "1"}),
                         ("dynamic membership (TOLLGATE_INSTANCE_ID=\"\"), 1 worker",
                          {"TOLLGATE_INSTANCE_ID": "", "TOLLGATE_WORKERS": "1"})]:
        run = work / f"tollgate-{len(rows)}"
        _, err, wall, cpu = child([a.tollgate, "run", "--config", str(ROOT / "pipelines/default.toml"),
                                   "--exit-when-idle", "--idle-timeout-secs", str(a.idle_timeout_secs),
                                   "--http-listen", "", "--group", f"bench-batched-{os.getpid()}-{len(rows)}",
                                   "--rollup-dir", str(run / "rollups"), "--late-dir", str(run / "late"),
                                   "--decision-log-dir", str(run / "decisions")], env=dict(env, **extra), cwd=work)
        events = sum(sum(pq.read_table(f, columns=["events"]).column("events").to_pylist())
                     for f in (run / "rollups").rglob("*.parquet"))
        phases = phase_times(err)
        rows.append((f"tollgate run --exit-when-idle, {label}", wall, cpu,
                     f"{events} events; joining the group {phases['join']:.2f} s, reading and writing "
                     f"{phases['work']:.2f} s, the idle close ({a.idle_timeout_secs:g} s) and exit {phases['tail']:.2f} s"))

    if "python" not in skip:
        out, _, wall, cpu = child([py, str(ROOT / "benches/python_pipeline/rollup.py"), "--brokers", a.brokers,
                                   "--topics", ",".join(TOPICS), "--config", str(ROOT / "pipelines/default.toml"),
                                   "--expect", str(sent), "--out", str(work / "python")])
        rate, _, read, counted, pfiles = out.split()
        rows.append(("Python pipeline (confluent-kafka + json + pyarrow)", wall, cpu, f"{counted} events, {pfiles} files"))
    if "duckdb" not in skip:
        out, _, wall, cpu = child([py, str(HERE / "duckdb_rollup.py"), "--jsonl", str(jsonl),
                                   "--out", str(work / "duckdb.parquet"), "--threads", "2"])
        devents, drows, _ = out.split()
        rows.append(("DuckDB batch rollup of the JSONL (2 threads)", wall, cpu, f"{devents} events, {drows} rows"))

    m = sent / 1e6
    print(f"{sent} events, {a.teams} teams, {a.partitions} partitions, jitter +-{a.jitter_ms} ms, "
          f"linger.ms={a.linger_ms}, batch.num.messages={a.batch_messages}")
    print("| on that topic | wall | CPU | CPU-s per 1 M events | |")
    print("| --- | --- | --- | --- | --- |")
    for name, wall, cpu, note in rows:
        c = "" if cpu is None else f"{cpu:.2f} s"
        per = "" if cpu is None else f"{cpu / m:.2f}"
        print(f"| {name} | {wall:.2f} s | {c} | {per} | {note} |")
    print(json.dumps({"work": str(work)}))


if __name__ == "__main__":
    main()
