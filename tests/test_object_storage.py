"""Object storage: the rollups, the late files and the checkpoints in an
S3-compatible bucket (a real moto server on loopback, no mock in the process),
written by `tollgate run`, read back through Tollgate's own readers (`tollgate
summary`, `/v1/usage`, `/v1/query`, the gate's month to date) and by pyarrow's
S3 filesystem as an analyst would."""

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter

import pyarrow.fs as pafs
import pytest

from tollgate_testlib import (TOKEN_ACME, TOKEN_GLOBEX, actual_rollup, assert_rollups_equal, expected_rollup,
                              free_port)

# Two hours ago, on the hour: recent enough for the gate's month to date
# (which is the current month's), old enough that no event is in the future.
BASE = (int(time.time()) // 3600 - 2) * 3_600_000
TENANTS = ["acme", "globex", "initech"]
BUCKET = "tollgate-test"


@pytest.fixture
def s3(tmp_path):
    """A moto S3 server on a free port, with one empty bucket."""
    import boto3

    port = free_port()
    log = open(tmp_path / "moto.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "moto.log").read_text()
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "tollgate-test", "AWS_SECRET_ACCESS_KEY": "tollgate-test-secret",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=BUCKET)
    fs = pafs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_override=endpoint, scheme="http", region="us-east-1")

    class S3:
        pass

    s = S3()
    s.endpoint, s.env, s.client, s.fs = endpoint, env, client, fs

    def keys(prefix):
        out, token = [], None
        while True:
            kw = {"Bucket": BUCKET, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            r = client.list_objects_v2(**kw)
            out += [o["Key"] for o in r.get("Contents", [])]
            if not r.get("IsTruncated"):
                return out
            token = r["NextContinuationToken"]

    s.keys = keys
    yield s
    proc.terminate()
    proc.wait(10)


def hour_dir(ms):
    return time.strftime("date=%Y-%m-%d/hour=%H", time.gmtime(ms / 1000))


def on_s3(pipeline, s3, prefix):
    """Point the pipeline's outputs at the bucket."""
    pipeline.rollups = f"s3://{BUCKET}/{prefix}/rollups"
    pipeline.late = f"s3://{BUCKET}/{prefix}/late"
    pipeline.env.update(s3.env)


def events(n, seed):
    """`n` inference events, tenant = partition, in event-time order (±2 s) a
    second apart, then late ones: what the rollups must count, and all."""
    rng = random.Random(seed)
    messages, counted = [], []
    for i in range(n):
        p = i % 3
        e = {"event_id": f"inf-{i}", "ts": BASE + i * 1000 + rng.randrange(0, 2000), "tenant": TENANTS[p],
             "tags": {"team": f"team-{rng.randrange(4)}", "environment": "prod"}, "model": "gpt-4o-mini",
             "input_tokens": rng.randrange(1, 4000), "output_tokens": rng.randrange(0, 1000),
             "duration_ms": 12.5, "region": "eu-north-1"}
        messages.append(("inference", p, TENANTS[p], json.dumps(e)))
        counted.append(("inference", e))
    # Far behind each partition's watermark: late, to the late files.
    late = []
    for p in range(3):
        e = {"event_id": f"late-{p}", "ts": BASE, "tenant": TENANTS[p], "tags": {"team": "team-0"},
             "model": "gpt-4o-mini", "input_tokens": 1, "output_tokens": 1, "duration_ms": 1.0}
        late.append(("inference", p, TENANTS[p], json.dumps(e)))
    return messages, late, counted


def read_bucket_rollups(s3, prefix):
    """The rollups as pyarrow reads them from the bucket (hive partitions;
    `_tollgate/` and dot files are not data, as pyarrow skips them)."""
    return actual_rollup(f"{BUCKET}/{prefix}/rollups", filesystem=s3.fs)


def test_rollups_late_files_and_checkpoints_on_object_storage_survive_kills(pipeline, s3):
    on_s3(pipeline, s3, "a")
    messages, late, counted = events(1800, seed=7)
    pipeline.produce(messages[:1200])
    # SIGKILLs while windows are being written: every restart restores from
    # the checkpoints and files in the bucket.
    for want in (3, 9):
        proc = pipeline.start("--idle-timeout-secs", "30")
        deadline = time.time() + 120
        while (len([k for k in s3.keys("a/rollups/kind=") if k.endswith(".parquet")]) < want
               and time.time() < deadline and proc.poll() is None):
            time.sleep(0.05)
        assert proc.poll() is None, f"pipeline exited early:\n{pipeline.log_tail()}"
        pipeline.kill_hard(proc)
    pipeline.produce(messages[1200:] + late)
    pipeline.run_to_end()

    files = s3.keys("a/")
    parquet = [k for k in files if k.startswith(f"a/rollups/kind=inference/{hour_dir(BASE)}/")]
    assert parquet and all(k.endswith(".parquet") for k in parquet), files
    assert {f"a/rollups/_tollgate/checkpoints/{pipeline.topics['inference']}-{p}.json" for p in range(3)} <= set(files)
    assert not [k for k in files if k.rsplit("/", 1)[-1].startswith(".")], "no temp objects"

    # Exact totals, read by an analyst's tool straight from the bucket.
    expected = expected_rollup(pipeline.book, counted)
    actual, table = read_bucket_rollups(s3, "a")
    assert_rollups_equal(expected, actual)
    assert set(table.column_names) >= {"tenant", "team", "cost_usd", "kind", "date", "hour"}

    # The late events are in the bucket, one line each, once.
    late_keys = [k for k in files if k.startswith("a/late/")]
    assert late_keys and all(k.endswith(".ndjson") for k in late_keys), late_keys
    lines = [json.loads(line) for k in late_keys
             for line in s3.client.get_object(Bucket=BUCKET, Key=k)["Body"].read().decode().splitlines()]
    assert sorted(r["event"]["event_id"] for r in lines) == ["late-0", "late-1", "late-2"], lines

    # `tollgate summary` reads the bucket.
    out = subprocess.run([str(pipeline.binary), "summary", "--rollup-dir", pipeline.rollups, "--json"],
                         env=pipeline.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["total"]["events"] == len(counted)
    by_team = Counter()
    for _, e in counted:
        by_team[e["tags"]["team"]] += 1
    assert {t: v["events"] for t, v in summary["by_team"].items()} == dict(by_team)

    # The API reads the bucket, each tenant its own rows only.
    pipeline.start()
    pipeline.wait_api("/readyz", timeout=120)
    since = f"from={BASE - 60_000}&to={BASE + 3_600_000}"
    for token, tenant in [(TOKEN_ACME, "acme"), (TOKEN_GLOBEX, "globex")]:
        mine = [e for _, e in counted if e["tenant"] == tenant]
        cost = sum(pipeline.book.enrich("inference", e)[0] for e in mine)
        usage = pipeline.api_json("GET", f"/v1/usage?{since}", token)
        assert usage["tenant"] == tenant and usage["total"]["events"] == len(mine), usage
        assert abs(usage["total"]["cost_usd"] - cost) < 1e-6 * max(1, cost), usage
        q = pipeline.api_json("POST", "/v1/query", token,
                              json.dumps({"sql": "SELECT tenant, sum(events) AS n FROM rollups GROUP BY tenant"}))
        assert q["rows"] == [{"tenant": tenant, "n": len(mine)}], q
        # The gate's month to date is the bucket's month.
        gate = pipeline.api_json("POST", "/v1/gates/policy-check", token, json.dumps(
            {"unit_cost_usd": 0.01, "cost_tags": {"team": "team-1", "environment": "prod"}}))
        this_month = time.strftime("%Y-%m", time.gmtime())
        team = sum(pipeline.book.enrich("inference", e)[0] for e in mine
                   if e["tags"]["team"] == "team-1" and time.strftime("%Y-%m", time.gmtime(e["ts"] / 1000)) == this_month)
        spend = gate["context"]["month"]["spend_usd"]
        assert abs(spend - team) < 1e-6 * max(1, team), gate["context"]
    status, _, _ = pipeline.api("GET", f"/v1/usage?{since}&tenant=acme", TOKEN_GLOBEX)
    assert status == 403


def test_a_foreign_object_at_a_windows_key_is_never_replaced(pipeline, s3):
    """An object already at a window's key that is not that window's file
    (another writer's, a damaged upload) is never overwritten: the partition
    stops with an error naming the key, and the object stays as it is. (The
    create-only PUT itself, `If-None-Match: *` refused on a taken key, is
    tested against the same server by `cargo test -p tollgate-rollup --
    --ignored`.)"""
    on_s3(pipeline, s3, "b")
    messages, _, _ = events(300, seed=8)
    key = f"b/rollups/kind=inference/{hour_dir(BASE)}/{pipeline.topics['inference']}-0-0.parquet"
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=b"not this window's file")
    pipeline.produce(messages)
    proc = pipeline.start("--idle-timeout-secs", "3")
    deadline = time.time() + 120
    needle = f"s3://{BUCKET}/{key}"
    while needle not in pipeline.log_tail(400) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert needle in pipeline.log_tail(400), pipeline.log_tail()
    proc.terminate()
    proc.wait(60)
    assert s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"not this window's file"


def test_an_unsupported_output_scheme_is_refused(pipeline):
    pipeline.rollups = "gs://bucket/rollups"
    proc = pipeline.start("--exit-when-idle", "--idle-timeout-secs", "1")
    assert proc.wait(60) != 0
    assert "unsupported scheme `gs://`" in pipeline.log_tail(), pipeline.log_tail()
