#!/usr/bin/env python3
"""The floor: a confluent-kafka consumer (new group, from the start) that only
counts the messages of the given topics. Prints `messages wall_seconds
cpu_seconds`, wall from the first message to the last."""

import argparse
import os
import resource
import time

from confluent_kafka import Consumer


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topics", default="tollgate.inference,tollgate.training,tollgate.heartbeat")
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--fetch-wait-max-ms", type=int, help="librdkafka's fetch.wait.max.ms (default 500)")
    a = ap.parse_args()
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": f"count-{os.getpid()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  **({"fetch.wait.max.ms": a.fetch_wait_max_ms} if a.fetch_wait_max_ms is not None else {})})
    c.subscribe(a.topics.split(","))
    n, first, cpu0 = 0, None, cpu_seconds()
    deadline = time.monotonic() + 600
    while n < a.expect and time.monotonic() < deadline:
        batch = c.consume(num_messages=10_000, timeout=1.0)
        if batch and first is None:
            first = time.perf_counter()
        n += sum(1 for m in batch if not m.error())
    wall = time.perf_counter() - (first or time.perf_counter())
    c.close()
    print(f"{n} {wall:.2f} {cpu_seconds() - cpu0:.2f}")


if __name__ == "__main__":
    main()
