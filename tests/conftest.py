"""Fixtures for the integration tests: a real tansu broker on loopback and the
tollgate binary. Every test gets its own topics, group and output directories."""

import os
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def brokers():
    port = os.environ.get("TOLLGATE_TEST_BROKER_PORT", "19092")
    subprocess.run([str(ROOT / "scripts" / "broker.sh"), "start", port, "--fresh"], check=True)
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def tollgate_bin():
    path = Path(os.environ.get("TOLLGATE_BIN", ROOT / "target" / "debug" / "tollgate"))
    if "TOLLGATE_BIN" not in os.environ:
        # Same feature set as `cargo test --workspace` (see scripts/test.sh).
        subprocess.run(["cargo", "build", "-q", "--workspace", "--all-targets"], cwd=ROOT, check=True)
    assert path.exists(), f"{path} was not built"
    return path


@pytest.fixture
def pipeline(tmp_path, brokers, tollgate_bin):
    from tollgate_testlib import Pipeline

    p = Pipeline(ROOT, tmp_path, brokers, tollgate_bin, uuid.uuid4().hex[:10])
    yield p
    p.cleanup()
