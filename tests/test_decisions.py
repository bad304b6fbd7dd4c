"""Policies and signed decisions against the real broker.

One team goes over its per-window spend limit, another stays under it: exactly
one deny decision for the first, none for the second; it verifies (with an
independent HMAC/JCS implementation here and with `tollgate verify`); a hard
kill right after the decision is logged and a restart leave it in the log once;
every decision is on the decisions topic; tampering and key rotation behave.
"""

import json
import re
import shutil
import subprocess
import time
import urllib.request

from tollgate_testlib import (
    TEST_KEY_ID,
    TEST_SECRET,
    check_decision_log,
    decision_lines,
)

LIMIT = 1.0


def event(i, team, ts_ms, out_tokens):
    return json.dumps({
        "event_id": f"{team}-{i}", "ts": ts_ms, "tenant": "acme", "model": "gpt-4o",
        "input_tokens": 1000, "output_tokens": out_tokens, "duration_ms": 120, "region": "eu-north-1",
        "tags": {"team": team, "environment": "prod"},
    })


def spend_decisions(records):
    return [r for r in records if r["policy"] == "team-window-spend"]


def run_cli(pipeline, *args, env=None):
    return subprocess.run([str(pipeline.binary), *args], cwd=pipeline.root, capture_output=True, text=True,
                          env=env if env is not None else pipeline.env, timeout=120)


def test_window_limit_deny_is_signed_published_and_survives_a_hard_kill(pipeline):
    text = pipeline.config.read_text()
    text, n = re.subn(r"(?m)^limit_usd = .*$", f"limit_usd = {LIMIT}", text)
    assert n == 1
    pipeline.config.write_text(text)

    now = int(time.time() * 1000)
    w0 = (now - 600_000) // 60_000 * 60_000
    over = [event(i, "over", w0 + 1000 + i * 100, 20_000) for i in range(10)]
    under = [event(i, "under", w0 + 2000 + i * 100, 20_000) for i in range(2)]
    # A later event in the same partition moves the watermark past the window.
    closer = [event(99, "under", w0 + 180_000, 10)]
    pipeline.produce([("inference", 0, b"k", v) for v in over + under + closer])

    book = pipeline.book
    spend = sum(book.enrich("inference", json.loads(v))[0] for v in over)
    assert spend > LIMIT and sum(book.enrich("inference", json.loads(v))[0] for v in under) < LIMIT

    # Kill as soon as the decision is in the log: the offsets that produced it
    # are committed only after the window's file, so the restart usually
    # replays the window and must find the decision already there.
    proc = pipeline.start("--idle-timeout-secs", "2")
    deadline = time.time() + 120
    while time.time() < deadline:
        if any('"team-window-spend"' in line for line in decision_lines(pipeline.decisions)):
            break
        assert proc.poll() is None, pipeline.log_tail()
        time.sleep(0.02)
    else:
        raise AssertionError("no decision within 120 s:\n" + pipeline.log_tail())
    pipeline.kill_hard(proc)

    pipeline.run_to_end(idle=2)
    records = check_decision_log(decision_lines(pipeline.decisions))
    deny = spend_decisions(records)
    assert len(deny) == 1, deny
    d = deny[0]
    assert d["subject"] == "tenant=acme/team=over"
    assert d["verdict"] == "deny" and d["key_id"] == TEST_KEY_ID
    assert abs(d["observed"]["spend_usd"] - spend) < 1e-9 * spend
    assert d["window"]["source"] == f"{pipeline.topics['inference']}/0"
    assert "above its 1 USD limit" in d["reasons"][0], d["reasons"]
    replayed = re.findall(r"pipeline finished .*decisions_replayed=(\d+)", pipeline.log_tail(400))
    print(f"decisions replayed after the kill: {replayed}")

    ok = run_cli(pipeline, "verify", str(pipeline.decisions))
    assert ok.returncode == 0, ok.stderr
    assert f"OK: {len(records)} decision(s)" in ok.stdout

    # Every logged decision is on the topic, byte for byte, keyed by its id.
    lines = set(decision_lines(pipeline.decisions))
    msgs = pipeline.read_topic("decisions", expect=len(records), timeout=60)
    published = {m.key().decode(): m.value().decode() for m in msgs}
    assert set(published) == {r["decision_id"] for r in records}
    assert set(published.values()) <= lines

    # Tampering: one changed byte, then two swapped records.
    seg = sorted(pipeline.decisions.glob("segment-*.ndjson"))[0]
    tampered = pipeline.tmp / "tampered"
    shutil.copytree(pipeline.decisions, tampered)
    tseg = tampered / seg.name
    raw = bytearray(tseg.read_bytes())
    all_lines = decision_lines(pipeline.decisions)
    target = next(i for i, line in enumerate(all_lines) if '"team-window-spend"' in line)
    offset = sum(len(x.encode()) + 1 for x in all_lines[:target])
    pos = raw.index(b'"subject":"', offset) + len(b'"subject":"')
    raw[pos] = ord("X") if raw[pos] != ord("X") else ord("Y")
    tseg.write_bytes(bytes(raw))
    bad = run_cli(pipeline, "verify", str(tampered))
    assert bad.returncode != 0
    assert f"record {target + 1} " in bad.stderr, bad.stderr

    if len(records) >= 2:
        shutil.rmtree(tampered)
        shutil.copytree(pipeline.decisions, tampered)
        ls = decision_lines(pipeline.decisions)
        ls[0], ls[1] = ls[1], ls[0]
        tseg.write_text("\n".join(ls) + "\n")
        bad = run_cli(pipeline, "verify", str(tampered))
        assert bad.returncode != 0 and "record 1 " in bad.stderr, bad.stderr

    # Rotation: a new signing key, the old one kept for verification.
    keys = pipeline.tmp / "retired.json"
    keys.write_text(json.dumps({TEST_KEY_ID: TEST_SECRET}))
    rotated = {**pipeline.env, "SAVE_HMAC_SECRET": "the-next-secret-0123456789", "SAVE_HMAC_KEY_ID": "k-next"}
    gone = run_cli(pipeline, "verify", str(pipeline.decisions), env=rotated)
    assert gone.returncode != 0 and TEST_KEY_ID in gone.stderr, gone.stderr
    kept = run_cli(pipeline, "verify", str(pipeline.decisions), env={**rotated, "TOLLGATE_VERIFY_KEYS_FILE": str(keys)})
    assert kept.returncode == 0, kept.stderr


def test_run_refuses_without_a_secret_and_with_a_broken_policy(tmp_path, tollgate_bin):
    from conftest import ROOT

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SAVE_HMAC")}
    r = subprocess.run([str(tollgate_bin), "run", "--exit-when-idle"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "SAVE_HMAC_SECRET" in r.stderr, r.stderr

    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "pipelines" / "policies", policies)
    broken = policies / "team-window-spend.toml"
    broken.write_text(broken.read_text().replace("sum(cost_usd) AS spend_usd", "sum(no_such_column) AS spend_usd"))
    config = tmp_path / "pipeline.toml"
    config.write_text((ROOT / "pipelines" / "default.toml").read_text()
                      .replace('dir = "pipelines/policies"', f'dir = "{policies}"'))
    env["SAVE_HMAC_SECRET"] = TEST_SECRET
    r = subprocess.run([str(tollgate_bin), "run", "--config", str(config), "--exit-when-idle",
                        "--decision-log-dir", str(tmp_path / "decisions"), "--rollup-dir", str(tmp_path / "r")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stderr
    assert str(broken) in r.stderr and "no_such_column" in r.stderr, r.stderr

    # A gate module that does not compile stops the start too, naming the file.
    gates = tmp_path / "gates"
    shutil.copytree(ROOT / "pipelines" / "gates", gates)
    (gates / "broken.rego").write_text("package tollgate.gate\nviolations contains {\n")
    config.write_text((ROOT / "pipelines" / "default.toml").read_text()
                      .replace('dir = "pipelines/gates"', f'dir = "{gates}"'))
    r = subprocess.run([str(tollgate_bin), "run", "--config", str(config), "--exit-when-idle", "--http-listen", "127.0.0.1:0",
                        "--decision-log-dir", str(tmp_path / "decisions"), "--rollup-dir", str(tmp_path / "r")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stderr
    assert "broken.rego" in r.stderr and "gate" in r.stderr, r.stderr

    t = subprocess.run([str(tollgate_bin), "policy", "test"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert t.returncode == 0, t.stdout + t.stderr
    assert re.search(r"PASS: (\d+)/\1", t.stdout), t.stdout


def test_a_policy_broken_while_running_is_reported_on_reload_and_the_pipeline_keeps_running(tmp_path, tollgate_bin):
    import os
    import signal

    from conftest import ROOT

    from tollgate_testlib import free_port

    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "pipelines" / "policies", policies)
    gates = tmp_path / "gates"
    shutil.copytree(ROOT / "pipelines" / "gates", gates)
    config = tmp_path / "pipeline.toml"
    port = free_port()
    config.write_text((ROOT / "pipelines" / "default.toml").read_text()
                      .replace('dir = "pipelines/policies"', f'dir = "{policies}"')
                      .replace('dir = "pipelines/gates"', f'dir = "{gates}"')
                      .replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{port}"')
                      # No broker, so no spend topic: the gate answers from this
                      # process's spend (shared, it denies until the topic is read).
                      .replace("publish_interval_ms = 1000", "publish_interval_ms = 0"))
    # No broker: the pipeline waits for one, with policies loaded and SIGHUP live.
    env = {**os.environ, "SAVE_HMAC_SECRET": TEST_SECRET, "KAFKA_BROKERS": "127.0.0.1:1", "AUTH_MODE": "none"}

    def gate(body):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/gates/policy-check", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(tollgate_bin), "run", "--config", str(config),
                                 "--decision-log-dir", str(tmp_path / "decisions"), "--rollup-dir", str(tmp_path / "r")],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_for(needle, timeout=60, after=0):
        """The log once `needle` appears in it after byte `after`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = log.read_text(errors="replace")
            if needle in text[after:]:
                return text
            assert proc.poll() is None, text
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not logged:\n{log.read_text(errors='replace')}")

    try:
        wait_for("signing decisions")
        target = policies / "unit-cost-cap.toml"
        good = target.read_text()
        target.write_text(good.replace("FROM rollups", "FROM no_such_table"))
        proc.send_signal(signal.SIGHUP)
        text = wait_for("policy reload failed")
        line = next(x for x in text.splitlines() if "policy reload failed" in x)
        assert str(target) in line and "no_such_table" in line, line
        time.sleep(0.5)
        assert proc.poll() is None, "a broken policy took the pipeline down"

        target.write_text(good)
        proc.send_signal(signal.SIGHUP)
        wait_for("policies reloaded")

        # The gate rules reload with the policies; a broken module keeps the old ones.
        wait_for("HTTP API listening")
        before = gate({"unit_cost_usd": 0.45, "cost_tags": {"team": "ai", "environment": "prod"}})
        assert before["allow"] is True, before
        (gates / "broken.rego").write_text("package tollgate.gate\nviolations contains {\n")
        mark = len(log.read_text(errors="replace"))
        proc.send_signal(signal.SIGHUP)
        text = wait_for("gate reload failed", after=mark)
        assert "broken.rego" in next(x for x in text.splitlines() if "gate reload failed" in x)
        assert gate({"unit_cost_usd": 0.45, "cost_tags": {"team": "ai", "environment": "prod"}})["policy_revision"] == before["policy_revision"]
        (gates / "broken.rego").unlink()
        config.write_text(config.read_text().replace("cap_usd = 0.5", "cap_usd = 0.4"))
        mark = len(log.read_text(errors="replace"))
        proc.send_signal(signal.SIGHUP)
        wait_for("gate rules reloaded", after=mark)
        after = gate({"unit_cost_usd": 0.45, "cost_tags": {"team": "ai", "environment": "prod"}})
        assert after["allow"] is False and after["policy_revision"] != before["policy_revision"], after
        assert after["violations"][-1]["message"] == "unit cost 0.45 USD exceeds the cap of 0.4 USD", after
    finally:
        proc.kill()
        proc.wait()


def test_monthly_budget_counts_the_months_earlier_windows_once(pipeline):
    """Two windows of one team, each under the monthly budget, together over
    it: the second window is denied with both windows' spend (month_to_date
    counts the first window, whether or not the writer made the two durable
    as one group); the first is not."""
    now = int(time.time() * 1000)
    w0 = (now - 600_000) // 60_000 * 60_000
    month = lambda ms: time.strftime("%Y-%m", time.gmtime(ms / 1000))
    if month(w0) != month(w0 + 60_000):
        w0 -= 3_600_000  # both windows in one month, even at midnight on the 1st
    w1 = w0 + 60_000
    first = [event(i, "steady", w0 + 1000 + i * 100, 20_000) for i in range(6)]
    second = [event(10 + i, "steady", w1 + 1000 + i * 100, 20_000) for i in range(6)]
    closer = [event(99, "other", w1 + 180_000, 10)]
    book = pipeline.book
    s0 = sum(book.enrich("inference", json.loads(v))[0] for v in first)
    s1 = sum(book.enrich("inference", json.loads(v))[0] for v in second)
    budget = round((max(s0, s1) + (s0 + s1)) / 2, 6)
    assert s0 < budget and s1 < budget < s0 + s1

    text = pipeline.config.read_text()
    text, n = re.subn(r"(?m)^budget_usd = .*$", f"budget_usd = {budget}", text)
    assert n == 1
    pipeline.config.write_text(text)
    pipeline.produce([("inference", 0, b"k", v) for v in first + second + closer])
    pipeline.run_to_end(idle=2)

    records = check_decision_log(decision_lines(pipeline.decisions))
    budget_denials = [r for r in records if r["policy"] == "team-monthly-budget"]
    assert len(budget_denials) == 1, budget_denials
    d = budget_denials[0]
    assert d["subject"] == "tenant=acme/team=steady" and d["verdict"] == "deny"
    assert d["window"]["start"] == time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(w1 / 1000)), d["window"]
    assert abs(d["observed"]["window_spend_usd"] - s1) < 1e-9 * s1
    assert abs(d["observed"]["month_to_date_usd"] - (s0 + s1)) < 1e-9 * (s0 + s1), d["observed"]
