#!/usr/bin/env python3
"""A Python pipeline of Tollgate's rollup, the baseline `benches/src/bin/e2e.rs
--python` measures beside the Rust pipeline on the same topics in the same run:
confluent-kafka reads every event topic, `json` decodes, the price book of the
integration tests (`tests/tollgate_testlib.py`, written apart from the Rust
code) enriches, events are de-duplicated by (tenant, event_id) and summed in
60 s tumbling event-time windows per partition by (tenant, team, model,
region), a window closes when the partition's watermark (its newest event
time minus 5 s) passes its end, and each closed window is one zstd Parquet file
written by pyarrow. No policies, no signed decisions, no commits: less work
than Tollgate's pipeline does.

Prints one line: `events_per_second cpu_seconds events rollup_events files`,
CPU being this process's user + system time (librdkafka's threads included).
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from tollgate_testlib import PriceBook  # noqa: E402

WINDOW_MS = 60_000
LATENESS_MS = 5_000


class Partition:
    def __init__(self):
        self.watermark = None
        self.open = {}  # window start -> {dims: [events, in, out, cost, energy, carbon, hours]}
        self.seen = {}  # window start -> {(tenant, event_id)}


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_window(out, kind, topic, partition, start, rows):
    cols = {k: [] for k in ("tenant", "team", "model", "region", "events", "input_tokens", "output_tokens",
                            "cost_usd", "energy_wh", "carbon_g", "gpu_hours")}
    for (tenant, team, model, region), v in rows.items():
        cols["tenant"].append(tenant)
        cols["team"].append(team)
        cols["model"].append(model)
        cols["region"].append(region)
        for name, x in zip(("events", "input_tokens", "output_tokens", "cost_usd", "energy_wh", "carbon_g",
                            "gpu_hours"), v):
            cols[name].append(x)
    cols["window_start"] = pa.array([start] * len(cols["tenant"]), pa.timestamp("ms", tz="UTC"))
    day = time.strftime("date=%Y-%m-%d/hour=%H", time.gmtime(start / 1000))
    d = out / f"kind={kind}" / day
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), d / f"{topic}-{partition}-{start}.parquet", compression="zstd")
    return sum(v[0] for v in rows.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topics", required=True, help="inference,training,heartbeat topic names")
    ap.add_argument("--config", default="pipelines/default.toml")
    ap.add_argument("--expect", type=int, required=True, help="messages to read")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    book = PriceBook(a.config, os.environ)
    names = a.topics.split(",")
    kinds = dict(zip(names, ("inference", "training", "heartbeat")))
    out = Path(a.out)
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": f"python-rollup-{os.getpid()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(names)
    parts, read, written, files = {}, 0, 0, 0
    first = None
    cpu0 = cpu_seconds()
    while read < a.expect:
        batch = c.consume(num_messages=10_000, timeout=1.0)
        if first is None and batch:
            first = time.perf_counter()
        for m in batch:
            if m.error():
                continue
            read += 1
            topic, partition = m.topic(), m.partition()
            kind = kinds[topic]
            e = json.loads(m.value())
            p = parts.setdefault((topic, partition), Partition())
            ts = e["ts"]
            start = ts - ts % WINDOW_MS
            if p.watermark is not None and start + WINDOW_MS <= p.watermark:
                continue  # late (none in the benchmark's events)
            seen = p.seen.setdefault(start, set())
            key = (e["tenant"], e["event_id"])
            if key in seen:
                continue
            seen.add(key)
            cost, energy, carbon, hours, tin, tout = book.enrich(kind, e)
            dims = (e["tenant"], e.get("tags", {}).get("team"), e.get("model"), e.get("region"))
            row = p.open.setdefault(start, {}).setdefault(dims, [0, 0, 0, 0.0, 0.0, 0.0, 0.0])
            row[0] += 1
            row[1] += tin
            row[2] += tout
            row[3] += cost
            row[4] += energy
            row[5] += carbon
            row[6] += hours
            wm = ts - LATENESS_MS
            if p.watermark is None or wm > p.watermark:
                p.watermark = wm
                for s in sorted(s for s in p.open if s + WINDOW_MS <= wm):
                    written += write_window(out, kind, topic, partition, s, p.open.pop(s))
                    p.seen.pop(s, None)
                    files += 1
    for (topic, partition), p in parts.items():
        for s in sorted(p.open):
            written += write_window(out, kinds[topic], topic, partition, s, p.open.pop(s))
            files += 1
    wall = time.perf_counter() - first
    c.close()
    print(f"{read / wall:.0f} {cpu_seconds() - cpu0:.2f} {read} {written} {files}")


if __name__ == "__main__":
    main()
