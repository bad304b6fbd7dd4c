"""The API contract tells the truth: `openapi-spec-validator` on the spec,
and schemathesis (property-based tests generated from the served spec, every
check) against a running `tollgate run` on the real broker, with an
operator's token holding every scope and with a tenant's token."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tollgate_testlib import TOKEN_ACME, TOKEN_ROOT

ROOT = Path(__file__).resolve().parent.parent
# Bounded for the test command; more (and another seed) on demand.
EXAMPLES = int(os.environ.get("TOLLGATE_SCHEMATHESIS_EXAMPLES", "25"))
SEED = os.environ.get("TOLLGATE_SCHEMATHESIS_SEED", "19")


def test_the_spec_is_valid_openapi(pipeline, tmp_path):
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    spec, base = read_from_filename(str(ROOT / "schemas" / "openapi.yaml"))
    validate(spec, base_uri=base)
    pipeline.start()
    pipeline.wait_api("/readyz", timeout=120)
    _, _, raw = pipeline.api("GET", "/openapi.yaml")
    served = tmp_path / "served.yaml"
    served.write_bytes(raw)
    spec, base = read_from_filename(str(served))
    validate(spec, base_uri=base)
    assert b"./" not in raw.replace(b"../", b""), "the served spec refers to nothing outside it"


def test_every_operation_lists_what_every_route_can_answer():
    """The layers around every route answer 408 (deadline), 503 (shed, with
    Retry-After) and 500; a protected route 401 and 403; a body 400, 413
    and 422; query parameters 400. Each is in the spec, as a problem."""
    import yaml

    spec = yaml.safe_load((ROOT / "schemas" / "openapi.yaml").read_text())
    missing = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post"):
                continue
            want = {"408", "500", "503"}
            if op.get("security", spec["security"]) != []:
                want |= {"401", "403"}
            if "requestBody" in op:
                want |= {"400", "413", "422"}
            if any(p.get("in", "query") == "query" for p in op.get("parameters", []) if "$ref" not in p) \
                    or any(p.get("$ref", "").rsplit("/", 1)[-1] not in ("IdempotencyKey",) for p in op.get("parameters", [])
                           if "$ref" in p):
                want.add("400")
            have = {str(k) for k in op["responses"]}
            if want - have:
                missing.append(f"{method.upper()} {path}: {sorted(want - have)}")
            for status, r in op["responses"].items():
                if str(status).startswith(("4", "5")) and "$ref" not in r:
                    media = r.get("content", {})
                    assert "application/problem+json" in media or path == "/readyz", (path, status)
    assert not missing, "\n".join(missing)


def schemathesis(pipeline, token, tmp_path, name):
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
           "run", f"http://127.0.0.1:{pipeline.http_port}/openapi.yaml",
           "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", SEED, "--workers", "1",
           "-H", f"Authorization: Bearer {token}", "--suppress-health-check", "all",
           "--report", "junit", "--report-dir", str(tmp_path / name)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    return r


def test_schemathesis_finds_nothing_with_every_scope_or_a_tenants_token(pipeline, tmp_path):
    pipeline.start()
    pipeline.wait_api("/readyz", timeout=120)
    failed = []
    for name, token in [("operator", TOKEN_ROOT), ("tenant", TOKEN_ACME)]:
        r = schemathesis(pipeline, token, tmp_path, name)
        if r.returncode != 0:
            failed.append(f"--- {name} (exit {r.returncode}):\n{r.stdout[-20000:]}\n{r.stderr[-3000:]}")
    assert not failed, "\n".join(failed)
