#!/usr/bin/env python3
"""The batch baseline: DuckDB rolls the same events (JSONL) up as Tollgate
does - 60 s windows by tenant, team, model and region; events, tokens and the
cost of the price book (`pipelines/default.toml`, by exact model, defaults
otherwise) - into one zstd Parquet file. Prints `events rows wall_seconds`.
"""

import argparse
import time
import tomllib

import duckdb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jsonl", required=True)
    ap.add_argument("--config", default="pipelines/default.toml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    book = tomllib.load(open(a.config, "rb")).get("pricing", {})
    prices = [(m["pattern"], m.get("input_per_1k", 0.001), m.get("output_per_1k", 0.002))
              for m in book.get("models", []) if "*" not in m["pattern"] and "effective_from" not in m]
    started = time.perf_counter()
    db = duckdb.connect()
    db.execute(f"SET threads = {a.threads}")
    db.execute("CREATE TABLE prices (model VARCHAR, input_per_1k DOUBLE, output_per_1k DOUBLE)")
    if prices:
        db.executemany("INSERT INTO prices VALUES (?, ?, ?)", prices)
    db.execute(f"""
        COPY (
          SELECT e.tenant, e.tags.team AS team, e.model, e.region,
                 to_timestamp((e.ts - e.ts % 60000) / 1000) AS window_start,
                 count(*) AS events,
                 sum(e.input_tokens) AS input_tokens, sum(e.output_tokens) AS output_tokens,
                 sum((e.input_tokens * coalesce(p.input_per_1k, 0.001)
                      + e.output_tokens * coalesce(p.output_per_1k, 0.002)) / 1000) AS cost_usd
          FROM read_json('{a.jsonl}', format = 'newline_delimited',
                         columns = {{event_id: 'VARCHAR', ts: 'BIGINT', tenant: 'VARCHAR',
                                     tags: 'STRUCT(team VARCHAR, environment VARCHAR, project VARCHAR)',
                                     region: 'VARCHAR', model: 'VARCHAR', input_tokens: 'BIGINT',
                                     cached_input_tokens: 'BIGINT', output_tokens: 'BIGINT',
                                     duration_ms: 'DOUBLE'}}) e
          LEFT JOIN prices p USING (model)
          GROUP BY ALL
        ) TO '{a.out}' (FORMAT parquet, COMPRESSION zstd)""")
    events, rows = db.execute(f"SELECT sum(events), count(*) FROM '{a.out}'").fetchone()
    print(f"{events} {rows} {time.perf_counter() - started:.2f}")


if __name__ == "__main__":
    main()
