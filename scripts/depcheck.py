#!/usr/bin/env python3
"""Fail when a forbidden dependency edge appears between the workspace's
crates (the architecture invariants of ARCHITECTURE.md). Reads
`cargo metadata`; follows normal and build dependencies transitively
(dev-dependencies may cross: tests use what they like).

    scripts/depcheck.py        # run by scripts/test.sh
"""

import json
import pathlib
import re
import subprocess
import sys

# The pure core: no I/O, so none of these below it.
CORE = ["tollgate-event", "tollgate-enrich", "tollgate-window", "tollgate-decision", "tollgate-gate"]
IO = ["rdkafka", "tokio", "axum", "hyper", "datafusion", "parquet", "object_store", "tollgate-rollup", "tollgate-decision-log",
      "tollgate-kafka", "tollgate-telemetry", "tollgate-pipeline", "tollgate-http", "tollgate-loadgen"]

# crate -> crates it must never reach.
FORBIDDEN = {c: IO for c in CORE}
FORBIDDEN.update({
    # The API reads the running pipeline through telemetry only.
    "tollgate-http": ["tollgate-pipeline", "tollgate-loadgen"],
    # What the pipeline and the API share knows neither of them.
    "tollgate-telemetry": ["tollgate-pipeline", "tollgate-http", "tollgate-kafka", "rdkafka"],
    "tollgate-kafka": ["tollgate-pipeline", "tollgate-http", "tollgate-telemetry"],
    "tollgate-loadgen": ["tollgate-pipeline", "tollgate-http"],
    "tollgate-pipeline": ["tollgate-http", "tollgate-loadgen"],
    "tollgate-decision-log": ["tollgate-pipeline", "tollgate-http", "rdkafka"],
    "tollgate-rollup": ["tollgate-pipeline", "tollgate-http", "rdkafka"],
    # The export reads the table it is handed; where it lives is the caller's.
    "tollgate-export": ["tollgate-pipeline", "tollgate-http", "tollgate-rollup", "tollgate-kafka",
                        "tollgate-telemetry", "rdkafka"],
    # Reports read the table and the decisions they are handed.
    "tollgate-report": ["tollgate-pipeline", "tollgate-http", "tollgate-rollup", "tollgate-decision-log",
                        "tollgate-kafka", "tollgate-telemetry", "rdkafka"],
})

# One writer owns the decision log: outside its own crate, a log is opened
# only where it is handed to its `Committer` (benches and tests aside).
LOG_OPENERS = {"crates/pipeline/src/decide.rs"}


def log_openers(root):
    """Source files of the crates that open a DecisionLog themselves."""
    found = set()
    for f in (root / "crates").rglob("*.rs"):
        rel = f.relative_to(root).as_posix()
        if rel.startswith("crates/decision-log/") or f.name == "tests.rs":
            continue
        if re.search(r"DecisionLog::open\(", f.read_text()):
            found.add(rel)
    return found


def main():
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked"],
                                     check=True, capture_output=True, text=True).stdout)
    name = {p["id"]: p["name"] for p in meta["packages"]}
    deps = {}
    for node in meta["resolve"]["nodes"]:
        deps[node["id"]] = [d["pkg"] for d in node["deps"]
                            if any(k["kind"] in (None, "build") for k in d["dep_kinds"])]
    by_name = {}
    for pid in deps:
        by_name.setdefault(name[pid], []).append(pid)

    def path_to(start, target):
        """A dependency path from start to a package named target, or None."""
        seen, stack = {start}, [(start, [name[start]])]
        while stack:
            pid, path = stack.pop()
            for d in deps[pid]:
                if d in seen:
                    continue
                seen.add(d)
                if name[d] == target:
                    return path + [target]
                stack.append((d, path + [name[d]]))
        return None

    errors = []
    for crate, banned in FORBIDDEN.items():
        assert crate in by_name, f"depcheck: no crate {crate} in the workspace (update scripts/depcheck.py)"
        for pid in by_name[crate]:
            for b in banned:
                p = path_to(pid, b)
                if p:
                    errors.append(f"{crate} must not depend on {b}: {' -> '.join(p)}")
    root = pathlib.Path(__file__).resolve().parent.parent
    for f in sorted(log_openers(root) - LOG_OPENERS):
        errors.append(f"{f} opens a DecisionLog: hand the log to its one writer (decision_log::Committer) instead")
    for e in errors:
        print(f"depcheck: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"depcheck: {sum(len(v) for v in FORBIDDEN.values())} forbidden edges absent; "
          f"the decision log is opened only by {', '.join(sorted(LOG_OPENERS))}")


if __name__ == "__main__":
    main()
