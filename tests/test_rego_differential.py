"""Rego semantics checked against a second implementation: the shipped gate
modules and an OPA-style `finops` module judge a generated corpus of inputs
(missing fields, wrong types, nulls, boundary values) through the gate's own
engine (`tollgate gate eval`, regorus, in OPA's default non-strict built-in
mode: `[gates] strict_builtin_errors = false`) and through rego-cpp (`regopy`), and
every answer must agree: `data.tollgate.gate.violations`, `data.finops.deny`,
`data.finops.allow`.

rego-cpp (regopy 1.5.2) deviates from OPA in ways this corpus hits. One is
worked around in the shipped module (carbon.rego: rego-cpp rejects
`some k, v in coll` inside a comprehension, "Invalid collection", so the rule
says `v := coll[k]`); the others are worked around here, for rego-cpp only,
and each workaround is checked to still be needed:
  1. numbers are printed with 17 significant digits (`sprintf("%v", [0.07])`
     is "0.07000000000000001", OPA and regorus print "0.07"): messages are
     compared with every number in them parsed and re-printed;
  2. `sprintf` has no `%q` verb (it is left in the text and its argument is
     given to the next verb);
  3. `sprintf("%s", [s])` wraps the string in quotes (OPA prints it as is);
  4. a result string holding `"` makes its output invalid JSON (the quote is
     not escaped), which regopy cannot read.
  For 2 and 3, rego-cpp gets `%q` and `%s` as `%v`, and messages are
  compared without `"` characters (all `%q` adds). For 4 (rego-cpp's
  `concat` results print with quotes), an answer regopy cannot read is
  compared by its shape instead: the rules of the violations, the number of
  deny messages. The test reports how many answers were compared that way.
  5. on some inputs rego-cpp aborts the process (`std::out_of_range`,
     "Index out of range"): the reference runs in a child process, an input
     that kills it is recorded as a reference crash (reported, at most a few
     percent of the corpus) and the child restarts after it. A bare query of
     `data.finops.allow` (`default allow := false`, `allow if count(deny) ==
     0`) aborts it every time; `x = data.finops.allow` does not, so every
     rule is asked as `x = <rule>`.
"""

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

regopy = pytest.importorskip("regopy")

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def canonical_message(m):
    m = m.replace('"', "")
    return NUMBER.sub(lambda x: repr(float(x.group())) if "." in x.group() or "e" in x.group().lower() else x.group(), m)


def canonical(v):
    """A rule's value, order-free and with numbers in messages re-printed."""
    if isinstance(v, str):
        return canonical_message(v)
    if isinstance(v, list):
        return sorted((canonical(x) for x in v), key=lambda x: json.dumps(x, sort_keys=True))
    if isinstance(v, dict):
        return {k: canonical(x) for k, x in v.items()}
    if isinstance(v, float) and v == int(v):
        return int(v)
    return v


def corpus(n, seed=20261202):
    rng = random.Random(seed)
    missing = object()

    def pick(*choices):
        return rng.choice(choices)

    numbers = [0, 0.0, 0.01, 0.05, 0.050000001, 0.07, 0.5, 0.5000001, 1, -1, 1e9, "0.07", None, True, [], {}]
    tags = [missing, None, {}, {"team": "ai"}, {"team": "ai", "environment": "prod"}, {"team": "", "environment": "prod"},
            {"team": 7, "environment": "prod"}, {"team": None, "environment": None}, {"environment": "dev"}, "team=ai", []]
    regions = [missing, None, "eu-north-1", "us-east-1", "ap-south-1", "mars-1", "", 5]
    rates = [missing, None, 0.95, 0.9499999, 1.0, 0.5, 0, "0.99", True]
    scans = [missing, None, {}, {"critical": 0, "high": 0}, {"critical": 1}, {"high": 2, "medium": 9}, {"critical": "1"}, {"critical": None}, []]
    spends = [missing, None, 0, 50.0, 99.99, 100.0, 100.01, 9999.0, 10000.0, 20000.0, "5"]
    # `context` is Tollgate's own (the gate and the Data API replace any
    # caller's): well typed, only its values and presence vary.
    ctx_spends = [0, 50.0, 99.99, 100.0, 100.01, 9999.0, 10000.0, 20000.0]
    out = []
    for _ in range(n):
        doc = {
            "unit_cost_usd": rng.choice(numbers + [missing]),
            "cost_tags": rng.choice(tags),
            "deployment_region": rng.choice(regions),
            "carbon_intensity_g_per_kwh": pick(missing, None, 0, 399.9, 400, 400.1, 900, "400"),
            "test_pass_rate": rng.choice(rates),
            "security_scan": rng.choice(scans),
            "projected_spend_usd": rng.choice(spends),
            "team": pick(missing, "ai", None, 3),
        }
        ctx = pick(missing, "ctx", "ctx", {"tenant": "acme", "month": {"start": "2026-12-01", "spend_usd": 0, "events": 0}})
        if ctx == "ctx":
            ctx = {"tenant": "acme", "team": "ai", "as_of": "2026-12-02T10:00:00.000Z",
                   "month": {"start": "2026-12-01", "spend_usd": rng.choice(ctx_spends), "events": 3}}
            w = pick(missing, "w")
            if w == "w":
                ctx["window"] = {"start": "2026-12-02T10:00:00.000Z", "end": "2026-12-02T10:01:00.000Z",
                                 "spend_usd": rng.choice(ctx_spends), "events": 2}
            elif w is not missing:
                ctx["window"] = w
            for k in [k for k, v in ctx["month"].items() if v is missing]:
                del ctx["month"][k]
            if isinstance(ctx.get("window"), dict):
                for k in [k for k, v in ctx["window"].items() if v is missing]:
                    del ctx["window"][k]
        if ctx is not missing:
            doc["context"] = ctx
        out.append({k: v for k, v in doc.items() if v is not missing})
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tollgate_bin):
    tmp = tmp_path_factory.mktemp("rego")
    gates = tmp / "gates"
    shutil.copytree(ROOT / "pipelines" / "gates", gates)
    shutil.copy(ROOT / "tests" / "rego" / "finops.rego", gates / "finops.rego")
    text = (ROOT / "pipelines" / "default.toml").read_text()
    text = re.sub(r'(?m)^dir = "pipelines/gates"$', f'dir = "{gates}"', text)
    text = re.sub(r"(?m)^\[gates\]$", '[gates]\\npackages = ["tollgate.gate", "finops"]\nstrict_builtin_errors = false', text, count=1)
    config = tmp / "pipeline.toml"
    config.write_text(text)
    run = lambda *a, **kw: subprocess.run([str(tollgate_bin), "gate", "eval", "--config", str(config), *a],
                                          cwd=ROOT, capture_output=True, text=True, check=True, **kw)
    data = json.loads(run("--data").stdout)
    return gates, data, run


def reference(gates, data, rewrite_q=True):
    r = regopy.Interpreter()
    for f in sorted(gates.glob("*.rego")):
        src = f.read_text()
        if rewrite_q:
            src = src.replace("%q", "%v").replace("%s", "%v")
        r.add_module(f.stem, src)
    r.add_data_json(json.dumps({"tollgate": data}))
    return r


def ask(r, doc, rule):
    """(how, value): "full" with the rule's value, or "shape" when regopy
    cannot read the value (workaround 4): the violations' rules, or the
    number of deny messages."""
    r.set_input_term(json.dumps(doc))
    try:
        # `x = rule`, not the bare rule: a bare `data.finops.allow` aborts
        # rego-cpp (workaround 5).
        out = r.query(f"x = {rule}")
    except json.JSONDecodeError:
        shape = f"[v.rule | some v in {rule}]" if rule.endswith("violations") else f"count({rule})"
        out = r.query(f"x = {shape}")
        return "shape", json.loads(out.binding("x").json())
    if not out.ok():
        return "full", {"error": str(out)}
    try:
        return "full", json.loads(out.binding("x").json())
    except Exception:
        return "full", None  # undefined


def shape(rule, value):
    if rule.endswith("violations"):
        return sorted(v["rule"] for v in value)
    return len(value)


RULES = ["data.tollgate.gate.violations", "data.finops.deny", "data.finops.allow"]


def reference_answers(gates, data, docs):
    """[(how, value) per rule] per input, from rego-cpp in a child process
    (restarted after an input that aborts it: that input gets None)."""
    script = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_rego_differential import reference, ask, RULES
from pathlib import Path
r = reference(Path({str(gates)!r}), json.loads(sys.argv[1]))
for line in sys.stdin:
    doc = json.loads(line)
    print(json.dumps([ask(r, doc, rule) for rule in RULES]), flush=True)
"""
    out, i = [], 0
    while i < len(docs):
        rest = "".join(json.dumps(d) + "\n" for d in docs[i:])
        p = subprocess.run([sys.executable, "-c", script, json.dumps(data)], input=rest,
                           capture_output=True, text=True)
        got = [json.loads(l) for l in p.stdout.splitlines()]
        out.extend(got)
        i += len(got)
        if p.returncode != 0 and i < len(docs):
            out.append(None)  # this input aborted rego-cpp
            i += 1
    return out


@pytest.mark.xfail(strict=True, reason="open (issue 16): ~500 of 1,200 answers disagree. Most are rego-cpp "
                   "comparing across types unlike OPA's total order (`true > 0.05` is true in rego-cpp, false in "
                   "OPA and regorus); 40 are regorus aborting `x + null` where OPA leaves it undefined. "
                   "Set TOLLGATE_REGO_REPORT=<file> for the list.")
def test_gate_rules_agree_with_rego_cpp_on_a_generated_corpus(setup):
    gates, data, run = setup
    docs = corpus(400)
    ours = [json.loads(l) for l in run(input="\n".join(json.dumps(d) for d in docs)).stdout.splitlines()]
    assert len(ours) == len(docs)
    refs = reference_answers(gates, data, docs)
    assert len(refs) == len(docs)
    disagreements = []
    checked = by_shape = crashed = 0
    for doc, mine, ref in zip(docs, ours, refs):
        # The gate's verdict follows from the rules.
        assert mine["allow"] == (not mine["violations"])
        if ref is None:
            crashed += 1
            continue
        pk = mine["packages"]
        # An evaluation error of ours is a disagreement too (the gate would
        # deny with "could not be evaluated" where the rules have an answer).
        tg = pk["tollgate.gate"] if isinstance(pk["tollgate.gate"], dict) else {}
        fo = pk["finops"] if isinstance(pk["finops"], dict) else {}
        tg = tg if "error" not in tg else {"violations": tg, "deny": tg}
        fo = fo if "error" not in fo else {"deny": fo, "allow": fo}
        for rule, got, (how, want) in zip(RULES, [tg.get("violations", []), fo.get("deny", []), fo.get("allow")], ref):
            if want is None and rule.endswith(("violations", "deny")):
                want = []
            checked += 1
            if how == "shape":
                by_shape += 1
                got = shape(rule, got) if isinstance(got, list) else got
            if canonical(got) != canonical(want):
                disagreements.append({"input": doc, "rule": rule, "regorus": got, "rego-cpp": want})
    print(f"{checked} answers compared ({by_shape} by shape), {crashed} inputs aborted rego-cpp, "
          f"{len(disagreements)} disagree")
    out_dir = os.environ.get("TOLLGATE_REGO_REPORT")
    if out_dir:
        Path(out_dir).write_text("\n".join(json.dumps(d) for d in disagreements))
    report = json.dumps(disagreements[:5], indent=1)
    assert not disagreements, f"{len(disagreements)} of {checked} answers disagree; first:\n{report}"
    assert crashed <= len(docs) // 20, f"rego-cpp aborted on {crashed} of {len(docs)} inputs"
    assert by_shape < checked // 2, "most answers are compared in full"
    allows = sum(1 for m in ours if m["allow"])
    assert 0 < allows < len(docs), "the corpus reaches both verdicts"


def test_the_rego_cpp_workarounds_are_still_needed(setup):
    """If rego-cpp is fixed, these fail and the workarounds above go."""
    gates, data, _ = setup
    raw = reference(gates, data, rewrite_q=False)
    doc = {"unit_cost_usd": 0.07, "cost_tags": {"team": "ai"}}
    how, deny = ask(raw, doc, "data.finops.deny")
    assert how == "full"
    assert "missing cost tag %q" in deny, deny
    assert any("0.07000000000000001" in m for m in deny), deny
    assert ask(raw, {"cost_tags": {}}, "data.tollgate.gate.violations")[0] == "shape"
