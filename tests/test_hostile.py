"""Hostile input against the real broker: a corpus of malformed, oversize,
far-future, badly named and header-forging messages among valid ones. Every
bad one ends on the DLQ with a reason, the valid ones' totals are exact, and
the pipeline drains without a restart."""

import json
import random
import time

from tollgate_testlib import actual_rollup, assert_rollups_equal, expected_rollup

BASE = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def valid(i, tenant, rng):
    return {
        "event_id": f"ok-{i}",
        "ts": BASE + i * 200,
        "tenant": tenant,
        "tags": {"team": rng.choice(["search", "ads"]), "environment": "prod"},
        "model": "gpt-4o",
        "input_tokens": rng.randrange(1, 5000),
        "output_tokens": rng.randrange(0, 2000),
        "duration_ms": 10,
    }


def test_hostile_corpus_is_dead_lettered_with_reasons_and_nothing_else_moves(pipeline):
    rng = random.Random(15)
    tenants = ["acme", "globex"]
    messages, counted = [], []
    for i in range(900):
        tenant = tenants[i % 2]
        e = valid(i, tenant, rng)
        messages.append(("inference", i % 3, tenant, json.dumps(e)))
        counted.append(("inference", e))

    def ev(**over):
        e = valid(0, "acme", rng)
        e["event_id"] = f"bad-{len(bad)}"
        e.update(over)
        return json.dumps(e).encode()

    now_us = int(time.time() * 1_000_000)
    bad = []
    # (payload, headers, the reason the DLQ must carry)
    bad.append((ev(ts="9999-12-31T00:00:00Z"), None, "ahead of the clock"))
    bad.append((ev(ts=now_us), None, "ahead of the clock"))
    bad.append((ev(tenant="acme/eu"), None, "field `tenant`"))
    bad.append((ev(tenant="acme eu"), None, "field `tenant`"))
    bad.append((ev(tags={"team": "ads/model=x"}), None, "field `tags.team`"))
    bad.append((ev(input_tokens=None), None, "input_tokens"))
    bad.append((b"\xff\xfe not utf8", None, "not valid JSON"))
    bad.append((b"", None, "empty message"))
    bad.append((b"[]", None, "not valid JSON"))
    bad.append((ev(input_tokens=1e300), None, "input_tokens"))
    forged = [("tollgate.error", b"forged"), ("tollgate.source.offset", b"999999"), ("trace-id", b"abc")]
    bad.append((b"{forged", forged, "not valid JSON"))
    # Just under the broker's 1 MB: rejected as too large, and its DLQ copy
    # (payload + headers) must still fit the producer's limit.
    bad.append((b"x" * 990_000, [("big", b"y" * 5000)], "larger than the limit"))
    for n, (raw, headers, _) in enumerate(bad):
        msg = ("inference", n % 3, "acme", raw, headers) if headers else ("inference", n % 3, "acme", raw)
        messages.insert(20 + 60 * n, msg)
    pipeline.produce(messages)

    pipeline.run_to_end()

    # The valid events are all counted, none late: the far-future ones never
    # moved a watermark.
    expected = expected_rollup(pipeline.book, counted)
    actual, _ = actual_rollup(pipeline.rollups)
    assert_rollups_equal(expected, actual)
    assert not list(pipeline.late.glob("*.ndjson")), "no valid event became late"

    dlq = pipeline.read_topic("dlq", len(bad))
    assert len(dlq) == len(bad), f"{len(dlq)} of {len(bad)} on the DLQ"
    by_offset = {}
    for m in dlq:
        h = {}
        for k, v in m.headers():
            assert k not in h, f"header {k} twice: {m.headers()}"
            h[k] = v
        by_offset[(int(h["tollgate.source.partition"]), int(h["tollgate.source.offset"]))] = (m, h)
    errors = "\n".join(h["tollgate.error"].decode() for _, h in by_offset.values())
    for _, _, reason in bad:
        assert reason in errors, f"{reason!r} not in DLQ errors:\n{errors}"
    # The forged headers come back renamed, never as Tollgate's own.
    forged_copies = [h for m, h in by_offset.values() if m.value() == b"{forged"]
    assert len(forged_copies) == 1
    h = forged_copies[0]
    assert h["tollgate.error"] != b"forged"
    assert h["producer.tollgate.error"] == b"forged"
    assert h["producer.tollgate.source.offset"] == b"999999"
    assert h["trace-id"] == b"abc"
    assert int(h["tollgate.source.offset"]) != 999999
    # The oversize copy is truncated, and says from what.
    big = [(m, h) for m, h in by_offset.values() if "tollgate.payload.truncated_from" in h]
    assert len(big) == 1
    m, h = big[0]
    assert int(h["tollgate.payload.truncated_from"]) == 990_000
    assert 0 < len(m.value()) < 990_000

    # One run, no restart loop.
    log = (pipeline.tmp / "run.log").read_text(errors="replace")
    assert "restarting from the committed offsets" not in log, pipeline.log_tail()
