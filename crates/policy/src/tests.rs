#![allow(clippy::unwrap_used)]

use super::*;
use std::fs;

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
async fn policies_read_the_parquet_history() {
    use tollgate_window::{ClosedWindow, DimsRef, Measures, RowSet};
    let root = tempfile::tempdir().unwrap();
    let history = tollgate_rollup::history_table(root.path()).unwrap();
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
    tollgate_rollup::write_window(root.path(), src, &w).unwrap();

    let mut o = opts(&shipped());
    o.history = Some(history);
    let engine = PolicyEngine::load(o).await.unwrap();
    let now = start + 3_600_000;
    let rows = fixture::rows_to_batch(
        &tollgate_rollup::schema(),
        &[toml::toml! { tenant = "acme" team = "ml" environment = "prod" cost_usd = 20.0 }],
        now,
        now + 60_000,
        "inference",
    )
    .unwrap();
    let eval = engine
        .evaluate(&WindowInput {
            kind: "inference",
            source: "tollgate.inference/0",
            start_ms: now,
            end_ms: now + 60_000,
            rows: &rows,
        })
        .await;
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    let budget: Vec<_> = eval
        .drafts
        .iter()
        .filter(|d| d.policy == "team-monthly-budget")
        .collect();
    assert_eq!(budget.len(), 1, "{:?}", eval.drafts);
    assert_eq!(
        budget[0].observed["month_to_date_usd"],
        serde_json::json!(10_010.0)
    );
}
