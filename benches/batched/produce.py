#!/usr/bin/env python3
"""Inference events as a real fleet's producers write them: confluent-kafka
(librdkafka) keyed by team, batching (`linger.ms`, `batch.num.messages`), in
event-time order with jitter. Also writes the same events as JSONL (for the
DuckDB baseline). Prints `events seconds`.

Events follow `schemas/inference.schema.json` (the shape of Tollgate's own
load generator): 10 minutes of event time from 2026-01-01T00:00:00Z, each
event's `ts` moved by up to +-`--jitter-ms`.
"""

import argparse
import json
import random
import time

from confluent_kafka import Producer

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-haiku", "llama-3-70b", "gemini-1.5-pro",
          "mistral-large", "command-r"]
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-north-1", "ap-south-1", "ap-southeast-1"]
ENVS = ["prod", "staging", "dev"]
START_MS = 1_767_225_600_000
SPAN_MS = 600_000


def events(count, teams, tenants, jitter_ms, seed):
    r = random.Random(seed)
    for n in range(count):
        team = r.randrange(teams)
        ts = START_MS + SPAN_MS * n // count + (r.randint(-jitter_ms, jitter_ms) if jitter_ms else 0)
        inp = 50 + r.randrange(4000)
        e = {"event_id": f"b-{seed}-{n}", "ts": max(ts, 0), "tenant": f"tenant-{team % tenants}",
             "tags": {"team": f"team-{team}", "environment": r.choice(ENVS), "project": f"project-{team // 4}"},
             "region": r.choice(REGIONS), "model": r.choice(MODELS), "input_tokens": inp,
             "cached_input_tokens": r.randrange(inp) if r.randrange(4) == 0 else 0,
             "output_tokens": 10 + r.randrange(1500), "duration_ms": round(50 + 3000 * r.random(), 1)}
        yield f"team-{team}", json.dumps(e, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", default="tollgate.inference")
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--teams", type=int, default=12)
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--jitter-ms", type=int, default=2000)
    ap.add_argument("--linger-ms", type=int, default=20)
    ap.add_argument("--batch-messages", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--jsonl", help="also write the events here, one per line")
    a = ap.parse_args()
    p = Producer({"bootstrap.servers": a.brokers, "linger.ms": a.linger_ms,
                  "batch.num.messages": a.batch_messages, "acks": "all", "enable.idempotence": True,
                  "queue.buffering.max.messages": 500_000})
    out = open(a.jsonl, "w") if a.jsonl else None
    started = time.perf_counter()
    sent = 0
    for key, value in events(a.count, a.teams, a.tenants, a.jitter_ms, a.seed):
        while True:
            try:
                p.produce(a.topic, value=value, key=key)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
        if out:
            out.write(value + "\n")
        sent += 1
    left = p.flush(120)
    if out:
        out.close()
    if left:
        raise SystemExit(f"{left} messages not acknowledged")
    print(f"{sent} {time.perf_counter() - started:.2f}")


if __name__ == "__main__":
    main()
