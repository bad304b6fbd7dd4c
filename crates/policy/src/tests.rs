#![allow(clippy::unwrap_used)]

use super::*;
use std::fs;
use std::path::Path;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/policies")
}

fn regions() -> Vec<(String, f64)> {
    vec![("eu-north-1".into(), 30.0), ("us-east-1".into(), 380.0)]
}

fn opts(dir: &Path) -> EngineOptions {
    EngineOptions {
        dir: dir.to_owned(),
        params: BTreeMap::new(),
        disabled: vec![],
        file_schema: tollgate_rollup::schema(),
        history: None,
        regions: regions(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = r#"
verdict = "deny"
subject = "team={team}"
message = "team {team} spent {spend:.2}"
sql = "SELECT team, sum(cost_usd) AS spend FROM rollups WHERE team IS NOT NULL GROUP BY team HAVING sum(cost_usd) > $limit"
[params]
limit = 1.0
"#;

#[tokio::test]
async fn shipped_policies_pass_their_fixtures() {
    let results = fixture::run_dir(&shipped(), tollgate_rollup::schema(), regions())
        .await
        .unwrap();
    let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let policies: HashSet<&str> = results.iter().map(|r| r.policy.as_str()).collect();
    assert!(policies.len() >= 6, "{policies:?}");
}

#[tokio::test]
async fn invalid_sql_fails_at_load_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ok.toml", GOOD);
    let bad = write(
        dir.path(),
        "broken.toml",
        &GOOD.replace("SELECT team,", "SELEC team,"),
    );
    let err = PolicyEngine::load(opts(dir.path()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("SQL"), "{err}");
}

#[tokio::test]
async fn unknown_column_table_param_and_template_field_fail_at_load() {
    let cases = [
        (GOOD.replace("sum(cost_usd)", "sum(cost_usdd)"), "cost_usdd"),
        (GOOD.replace("FROM rollups", "FROM rollup"), "rollup"),
        (
            GOOD.replace("> $limit", "> $limt"),
            "unknown parameter `$limt`",
        ),
        (GOOD.replace("{spend:.2}", "{spent}"), "`{spent}`"),
        (GOOD.replace("\"deny\"", "\"allow\""), "deny` or `warn"),
        (
            GOOD.replace("sql = \"SELECT", "sql = \"INSERT INTO rollups SELECT"),
            "SQL",
        ),
    ];
    for (text, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "p.toml", &text);
        let err = PolicyEngine::load(opts(dir.path()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(needle) && err.contains(&path.display().to_string()),
            "{needle}: {err}"
        );
    }
}

#[tokio::test]
async fn config_overrides_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.toml", GOOD);
    let with = |policy: &str, key: &str, v: toml::Value| {
        let mut o = opts(dir.path());
        o.params
            .insert(policy.into(), [(key.to_owned(), v)].into_iter().collect());
        o
    };
    let e = PolicyEngine::load(with("p", "limt", 2.into()))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("does not declare"), "{e}");
    let e = PolicyEngine::load(with("nope", "limit", 2.into()))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("policy `nope`"), "{e}");
    let e = PolicyEngine::load(with("p", "limit", "x".into()))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("another type"), "{e}");
    // An integer for a float parameter is fine, and changes the revision.
    let a = PolicyEngine::load(opts(dir.path())).await.unwrap();
    let b = PolicyEngine::load(with("p", "limit", 2.into()))
        .await
        .unwrap();
    assert_ne!(a.policies()[0].revision, b.policies()[0].revision);
}

fn window_rows(rows: &[toml::Table]) -> RecordBatch {
    fixture::rows_to_batch(&tollgate_rollup::schema(), rows, 0, 60_000, "inference").unwrap()
}

#[tokio::test]
async fn a_failing_policy_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a-good.toml", GOOD);
    // Fails only at run time, on a team name that is not a number.
    write(
        dir.path(),
        "b-fails.toml",
        r#"
verdict = "warn"
subject = "team={team}"
message = "{n}"
sql = "SELECT team, CAST(team AS INT) AS n FROM rollups WHERE team IS NOT NULL"
"#,
    );
    let engine = PolicyEngine::load(opts(dir.path())).await.unwrap();
    let rows = window_rows(&[toml::toml! { tenant = "t" team = "ml" cost_usd = 5.0 }]);
    let eval = engine
        .evaluate(&WindowInput {
            kind: "inference",
            source: "tollgate.inference/0",
            start_ms: 0,
            end_ms: 60_000,
            rows: &rows,
            month_to_date: Ok(tables::no_month_to_date()),
        })
        .await;
    assert_eq!(eval.drafts.len(), 1, "{:?}", eval.errors);
    assert_eq!(eval.drafts[0].reasons, ["team ml spent 5.00"]);
    assert_eq!(eval.errors.len(), 1);
    assert!(
        eval.errors[0].to_string().contains("b-fails"),
        "{}",
        eval.errors[0]
    );
    assert_eq!(eval.timings.len(), 2);
}

#[tokio::test]
async fn the_same_window_yields_the_same_decision_ids() {
    let engine = PolicyEngine::load(opts(&shipped())).await.unwrap();
    let rows = window_rows(&[
        toml::toml! { tenant = "t" team = "ml" environment = "dev" cost_usd = 500.0 max_unit_cost_usd = 0.9 model = "m" },
    ]);
    let input = WindowInput {
        kind: "inference",
        source: "tollgate.inference/1",
        start_ms: 0,
        end_ms: 60_000,
        rows: &rows,
        month_to_date: Ok(tables::no_month_to_date()),
    };
    let ids = |e: Evaluation| {
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        e.drafts.iter().map(|d| d.decision_id()).collect::<Vec<_>>()
    };
    let first = ids(engine.evaluate(&input).await);
    let again = ids(engine.evaluate(&input).await);
    assert_eq!(first, again);
    let policies: HashSet<String> = engine
        .evaluate(&input)
        .await
        .drafts
        .into_iter()
        .map(|d| d.policy)
        .collect();
    assert!(
        policies.contains("team-window-spend") && policies.contains("unit-cost-cap"),
        "{policies:?}"
    );
}

#[tokio::test]
async fn a_wrong_fixture_fails() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.toml", GOOD);
    fs::create_dir(dir.path().join("tests")).unwrap();
    write(
        &dir.path().join("tests"),
        "p.toml",
        r#"
policy = "p"
[[case]]
name = "expects a decision that does not come"
rollups = [{ tenant = "t", team = "ml", cost_usd = 0.5 }]
[[case.expect]]
subject = "team=ml"
[[case]]
name = "does not expect the decision that comes"
rollups = [{ tenant = "t", team = "ml", cost_usd = 5.0 }]
"#,
    );
    let results = fixture::run_dir(dir.path(), tollgate_rollup::schema(), regions())
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert!(
        results[0].failures[0].contains("expected a decision"),
        "{results:?}"
    );
    assert!(
        results[1].failures[0].contains("unexpected decision"),
        "{results:?}"
    );
}

#[tokio::test]
async fn policies_read_the_parquet_tree_through_history_and_month_to_date() {
    use tollgate_window::{ClosedWindow, DimsRef, Measures, RowSet};
    let root = tempfile::tempdir().unwrap();
    let history =
        tollgate_rollup::history_table(&tollgate_rollup::Tree::local(root.path())).unwrap();
    assert_eq!(
        history.schema(),
        tables::history_schema(&tollgate_rollup::schema()),
        "the policy engine's idea of `history` matches the Parquet tree"
    );
    // 2026-11-22T09:00Z: an earlier window of the month, 9,990 USD for ml.
    let start = 1_795_338_000_000;
    let w = ClosedWindow {
        start_ms: start,
        end_ms: start + 60_000,
        first_offset: 0,
        close_offset: 5,
        watermark_ms: start + 60_000,
        duplicates: 0,
        rows: RowSet::from_rows([(
            DimsRef {
                tenant: "acme",
                team: Some("ml"),
                environment: Some("prod"),
                project: None,
                model: Some("m"),
                region: None,
                node_id: None,
            },
            Measures {
                events: 5,
                cost_usd: 9_990.0,
                ..Measures::default()
            },
        )]),
    };
    let src = tollgate_rollup::Source {
        kind: "training",
        topic: "tollgate.training",
        partition: 0,
    };
    let batch = tollgate_rollup::to_batch(&w).unwrap();
    tollgate_rollup::EncodedWindow::new(
        &tollgate_rollup::Tree::local(root.path()),
        src,
        &w,
        &batch,
    )
    .and_then(|f| f.write())
    .unwrap();
    let mut month = tollgate_rollup::MonthToDate::new(&tollgate_rollup::Tree::local(root.path()));
    assert_eq!(month.refresh("2026-11").unwrap(), 1);
    let month = tables::month_to_date_batch(month.teams("2026-11")).unwrap();

    // The shipped budget policy, and one of ours over `history`.
    let dir = tempfile::tempdir().unwrap();
    for f in ["team-monthly-budget.toml", "team-window-spend.toml"] {
        fs::copy(shipped().join(f), dir.path().join(f)).unwrap();
    }
    write_warn(
        dir.path(),
        "history-spend",
        "tenant={tenant}/team={team}",
        "{spend}",
        "SELECT tenant, team, sum(cost_usd) AS spend FROM history GROUP BY tenant, team",
    );
    let mut o = opts(dir.path());
    o.history = Some(history);
    let engine = PolicyEngine::load(o).await.unwrap();
    assert!(engine.reads_month_to_date("training"));
    assert!(
        !engine.reads_month_to_date("heartbeat"),
        "the budget is for inference and training"
    );
    let now = start + 3_600_000;
    let rows = fixture::rows_to_batch(
        &tollgate_rollup::schema(),
        &[toml::toml! { tenant = "acme" team = "ml" environment = "prod" cost_usd = 20.0 }],
        now,
        now + 60_000,
        "inference",
    )
    .unwrap();
    let input = |month_to_date| WindowInput {
        kind: "inference",
        source: "tollgate.inference/0",
        start_ms: now,
        end_ms: now + 60_000,
        rows: &rows,
        month_to_date,
    };
    let eval = engine.evaluate(&input(Ok(&month))).await;
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    let observed = |eval: &Evaluation, policy: &str, column: &str| -> Vec<serde_json::Value> {
        eval.drafts
            .iter()
            .filter(|d| d.policy == policy)
            .map(|d| d.observed[column].clone())
            .collect()
    };
    assert_eq!(
        observed(&eval, "team-monthly-budget", "month_to_date_usd"),
        [serde_json::json!(10_010.0)]
    );
    assert_eq!(
        observed(&eval, "history-spend", "spend"),
        [serde_json::json!(9_990.0)]
    );

    // No month_to_date: the budget fails on this window (never judged on
    // a short table); the others still run.
    let eval = engine.evaluate(&input(Err("disk on fire"))).await;
    let errors: Vec<String> = eval.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("team-monthly-budget") && errors[0].contains("disk on fire"),
        "{errors:?}"
    );
    assert!(observed(&eval, "team-monthly-budget", "month_to_date_usd").is_empty());
    assert_eq!(observed(&eval, "history-spend", "spend").len(), 1);
}

/// Write `<name>.toml`: a `warn` policy with these templates and SQL.
fn write_warn(dir: &Path, name: &str, subject: &str, message: &str, sql: &str) {
    let mut t = toml::Table::new();
    for (k, v) in [
        ("verdict", "warn"),
        ("subject", subject),
        ("message", message),
        ("sql", sql),
    ] {
        t.insert(k.into(), v.into());
    }
    write(dir, &format!("{name}.toml"), &toml::to_string(&t).unwrap());
}

/// Physical plans are kept across windows (`PlanCache`): a reused plan must
/// answer for the window it runs on, exactly as a plan made for it would,
/// through a join, a global count (statistics must not be baked in) and the
/// `kind` and `source` parameters that key the cache.
#[tokio::test]
async fn reused_plans_answer_for_each_window() {
    let dir = tempfile::tempdir().unwrap();
    write_warn(
        dir.path(),
        "joined",
        "tenant={tenant}/kind={k}/source={src}",
        "{n} rows, {spend:.2} USD at {g} g/kWh",
        "SELECT r.tenant, count(*) AS n, sum(r.cost_usd) AS spend,
                g.carbon_intensity_g_per_kwh AS g, $kind AS k, $source AS src
         FROM rollups r JOIN regions g ON r.region = g.region
         GROUP BY r.tenant, g.carbon_intensity_g_per_kwh",
    );
    write_warn(
        dir.path(),
        "counted",
        "rows={n}",
        "{n} rows",
        "SELECT count(*) AS n FROM rollups HAVING count(*) > 0",
    );
    let a = window_rows(&[
        toml::toml! { tenant = "a" region = "eu-north-1" cost_usd = 1.0 },
        toml::toml! { tenant = "a" region = "eu-north-1" cost_usd = 2.0 },
    ]);
    let b = window_rows(&[
        toml::toml! { tenant = "b" region = "us-east-1" cost_usd = 4.0 },
        toml::toml! { tenant = "b" region = "us-east-1" cost_usd = 8.0 },
        toml::toml! { tenant = "c" region = "eu-north-1" cost_usd = 16.0 },
    ]);
    // (rows, kind, source, decisions: one per tenant plus the count)
    let windows = [
        (&a, "inference", "s/0", 2),
        (&b, "training", "s/1", 3),
        (&a, "inference", "s/0", 2),
        (&b, "inference", "s/0", 3),
        (&a, "training", "s/1", 2),
    ];
    let engine = PolicyEngine::load(opts(dir.path())).await.unwrap();
    let outcome = |e: Evaluation| {
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        let mut v: Vec<_> = e
            .drafts
            .into_iter()
            .map(|d| (d.decision_id(), d.reasons, d.observed))
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    for (i, (rows, kind, source, decisions)) in windows.into_iter().enumerate() {
        let input = WindowInput {
            kind,
            source,
            start_ms: i as i64 * 60_000,
            end_ms: (i as i64 + 1) * 60_000,
            rows,
            month_to_date: Ok(tables::no_month_to_date()),
        };
        let reused = outcome(engine.evaluate(&input).await);
        let fresh = PolicyEngine::load(opts(dir.path())).await.unwrap();
        assert_eq!(reused, outcome(fresh.evaluate(&input).await), "window {i}");
        assert_eq!(reused.len(), decisions, "window {i}");
    }
    let kept: Vec<(&str, Option<usize>)> = engine
        .policies()
        .iter()
        .map(|p| (p.name.as_str(), p.cached_plans()))
        .collect();
    // One plan for `counted`; one per (kind, source) seen for `joined`.
    assert_eq!(kept, [("counted", Some(1)), ("joined", Some(2))]);
}

#[tokio::test]
async fn plans_reading_history_or_the_window_bounds_are_made_per_window() {
    let engine = PolicyEngine::load(opts(&shipped())).await.unwrap();
    let cached = |name: &str| {
        engine
            .policies()
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .cached_plans()
    };
    // The window's end from its rows (`window_end`), not `$window_end_ms`.
    assert_eq!(cached("node-reliability"), Some(0));
    assert_eq!(cached("team-window-spend"), Some(0));
    assert_eq!(cached("carbon-intensity"), Some(0));
    // month_to_date is set per window like rollups; $month_start_date keys.
    assert_eq!(cached("team-monthly-budget"), Some(0));

    // `history` is a listing table: its file list is fixed by the plan.
    let dir = tempfile::tempdir().unwrap();
    write_warn(
        dir.path(),
        "history",
        "team={team}",
        "{team}",
        "SELECT team FROM history",
    );
    let engine = PolicyEngine::load(opts(dir.path())).await.unwrap();
    assert_eq!(engine.policies()[0].cached_plans(), None);

    // A window parameter inside a subquery counts too.
    let dir = tempfile::tempdir().unwrap();
    write_warn(
        dir.path(),
        "nested",
        "team={team}",
        "{team}",
        "SELECT team FROM rollups
         WHERE team IN (SELECT team FROM rollups WHERE window_start >= $window_start)",
    );
    let engine = PolicyEngine::load(opts(dir.path())).await.unwrap();
    assert_eq!(engine.policies()[0].cached_plans(), None);
}
