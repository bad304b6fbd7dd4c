"""Several instances, one gate answer (`[spend]`): two instances of one
consumer group own different partitions of the same topic; one team's
events are on all of them. Each worker publishes its partitions' team spend
to the compacted spend topic; each instance reads the whole topic, so the
gate on either answers from the total, and a budget that neither
instance's own share exceeds denies on whichever instance is asked."""

import calendar
import json
import random
import re
import time

from confluent_kafka import Consumer, TopicPartition

from tollgate_testlib import TOKEN_ACME, TOKEN_GLOBEX, free_port


def spend_records(pipeline, topic):
    """The spend topic as compaction leaves it: the latest record per key."""
    c = Consumer({"bootstrap.servers": pipeline.brokers, "group.id": f"spend-{time.time_ns()}",
                  "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p, 0) for p in md.partitions]
    ends = {p.partition: c.get_watermark_offsets(p, timeout=10)[1] for p in parts}
    c.assign(parts)
    latest, pos = {}, {p: 0 for p in ends}
    deadline = time.time() + 30
    while any(pos[p] < e for p, e in ends.items()) and time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        pos[m.partition()] = m.offset() + 1
        latest[m.key().decode()] = json.loads(m.value()) if m.value() else None
    c.close()
    return latest


def test_two_instances_answer_the_gate_from_the_total_and_deny_on_either(pipeline):
    text = pipeline.config.read_text()
    text, n = re.subn(r"(?m)^per_instance = false", "per_instance = true", text)
    assert n == 1
    # Static membership, the default: `tollgate-a` and `tollgate-b` (from
    # HOSTNAME). A killed instance restarted within its session takes its
    # partitions back without a rebalance, as KIP-345 intends; with dynamic
    # membership tansu 0.6 leaves the dead member's share assigned to it
    # (docs/broker-notes.md).
    pipeline.config.write_text(text)
    spend_topic = f"t{pipeline.uid}.spend"
    assert f'spend = "{spend_topic}"' in text

    # One team's events on every partition, in the current month, the last
    # minute still open.
    now = int(time.time() * 1000)
    month_start = calendar.timegm(time.strptime(time.strftime("%Y-%m-01", time.gmtime()), "%Y-%m-%d")) * 1000
    start_ms = max(month_start, now - 180_000)
    rng = random.Random(5)
    messages, by_partition = [], {0: 0.0, 1: 0.0, 2: 0.0}
    n = 600
    for i in range(n):
        p = i % 3
        e = {"event_id": f"s-{i}", "ts": start_ms + (now - 5_000 - start_ms) * i // n, "tenant": "acme",
             "tags": {"team": "shared", "environment": "prod"}, "model": "gpt-4o-mini",
             "input_tokens": rng.randrange(100, 4000), "output_tokens": rng.randrange(0, 1000),
             "duration_ms": 10.0, "region": "eu-north-1"}
        messages.append(("inference", p, f"shared-{p}", json.dumps(e)))
        by_partition[p] += pipeline.book.enrich("inference", e)[0]
    # Another tenant's team of the same name is never in acme's sum.
    messages.append(("inference", 0, "globex", json.dumps({
        "event_id": "g-1", "ts": now - 5_000, "tenant": "globex", "tags": {"team": "shared", "environment": "prod"},
        "model": "gpt-4o-mini", "input_tokens": 10_000, "output_tokens": 10_000, "duration_ms": 1.0})))
    total = sum(by_partition.values())
    # A monthly budget under the total and over any two partitions' share,
    # so over what either instance owns (one of them owns at most two).
    assert max(by_partition.values()) < 0.4 * total, by_partition
    budget = 0.9 * total
    text, n = re.subn(r"(?m)^budget_usd = .*$", f"budget_usd = {budget!r}", text)
    assert n == 1
    pipeline.config.write_text(text)

    http_b = free_port()
    ports = {"a": pipeline.http_port, "b": http_b}

    def start(name):
        # Open windows stay open: the answer sums closed and open ones.
        return pipeline.start("--workers", "1", "--idle-timeout-secs", "600", "--http-listen",
                              f"127.0.0.1:{ports[name]}", log_name=f"run-{name}.log", env={"HOSTNAME": name})

    def gate(name, token=TOKEN_ACME):
        saved = pipeline.http_port
        pipeline.http_port = ports[name]
        try:
            return pipeline.api_json("POST", "/v1/gates/policy-check", token, json.dumps(
                {"unit_cost_usd": 0.01, "cost_tags": {"team": "shared", "environment": "prod"}}))
        finally:
            pipeline.http_port = saved

    def tails():
        return "\n".join(f"--- {k}\n" + "\n".join((pipeline.tmp / f"run-{k}.log").read_text(errors="replace")
                                                 .splitlines()[-30:]) for k in ports)

    procs = {name: start(name) for name in ports}
    # Nothing spent yet: allowed on both, once each has read the spend topic.
    deadline, first = time.time() + 120, {}
    while len(first) < len(ports):
        for name in set(ports) - set(first):
            try:
                first[name] = gate(name)
            except (AssertionError, OSError) as e:
                assert time.time() < deadline, f"{e}\n{tails()}"
                time.sleep(0.5)
    assert all(a["allow"] for a in first.values()), first

    pipeline.produce(messages)

    # Both instances converge on the total, and own different partitions.
    deadline = time.time() + 120
    answers, owners = {}, {}
    while time.time() < deadline:
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited:\n{tails()}"
        try:
            answers = {name: gate(name) for name in ports}
        except (AssertionError, OSError):  # 503 until the spend topic is read
            time.sleep(0.5)
            continue
        records = spend_records(pipeline, spend_topic)
        owners = {r["partition"]: r["owner"] for k, r in records.items()
                  if r and r["type"] == "partition" and r["topic"] == pipeline.topics["inference"]}
        # A partition record follows its team records: until it is read the
        # answer leaves the watermark out (unknown, never too fresh).
        if (all(abs(a["context"]["month"]["spend_usd"] - total) < 1e-6 * total
                and "watermark" in a["context"]["freshness"] for a in answers.values())
                and len(owners) == 3 and len(set(owners.values())) == 2):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no common answer: total {total}, answers {answers}, owners {owners}\n{tails()}")

    for name, a in answers.items():
        f = a["context"]["freshness"]
        assert f["partitions"] == 3 and f["watermark"] and f["published"], (name, a["context"])
        assert a["context"]["window"]["events"] > 0, "the open window counts"
    # globex's team of the same name: its own event only.
    g = gate("a", TOKEN_GLOBEX)["context"]
    assert g["month"]["events"] == 1 and g["freshness"]["partitions"] == 1, g

    # Over budget on the total: denied on whichever instance is asked,
    # though neither instance's own partitions are over it.
    share = {o: sum(by_partition[p] for p, own in owners.items() if own == o) for o in set(owners.values())}
    assert max(share.values()) < budget < total, (share, budget, total)
    for name in ports:
        deny = answers[name]
        assert deny["allow"] is False, (name, deny)
        assert [v["rule"] for v in deny["violations"]] == ["team-monthly-budget"], deny

    # `b` is SIGKILLed and restarted: its partitions' month to date comes
    # back from their rollup files, their open windows from the replay, and
    # the answer on either instance is the same total again (no window
    # counted twice, none lost).
    pipeline.kill_hard(procs["b"])
    more, later = [], int(time.time() * 1000) - 2_000
    for i in range(150):
        p = i % 3
        e = {"event_id": f"t-{i}", "ts": later + i, "tenant": "acme",
             "tags": {"team": "shared", "environment": "prod"}, "model": "gpt-4o-mini",
             "input_tokens": 500, "output_tokens": 50, "duration_ms": 10.0, "region": "eu-north-1"}
        more.append(("inference", p, f"shared-{p}", json.dumps(e)))
        total += pipeline.book.enrich("inference", e)[0]
    pipeline.produce(more)
    procs["b"] = start("b")
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            answers = {name: gate(name) for name in ports}
            if all(abs(a["context"]["month"]["spend_usd"] - total) < 1e-6 * total
                   and a["context"]["freshness"]["partitions"] == 3 for a in answers.values()):
                break
        except (AssertionError, OSError):
            pass
        time.sleep(0.5)
    else:
        raise AssertionError(f"after the restart: total {total}, answers {answers}\n{tails()}")
    assert all(a["allow"] is False for a in answers.values()), answers
    for proc in procs.values():
        proc.terminate()
        assert proc.wait(60) == 0, tails()
