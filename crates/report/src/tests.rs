use super::*;
use datafusion::prelude::{col, lit};
use tollgate_rollup::{Source, Tree};
use tollgate_window::{ClosedWindow, DimsRef, Measures};

// 2026-01-10T00:00:00Z.
const JAN_10: i64 = 1_768_003_200_000;
const DAY: i64 = 86_400_000;

fn dims<'a>(tenant: &'a str, team: Option<&'a str>, model: Option<&'a str>) -> DimsRef<'a> {
    DimsRef {
        tenant,
        team,
        environment: Some("prod"),
        project: None,
        model,
        region: Some("eu-north-1"),
        node_id: None,
    }
}

fn usage(events: u64, cost: f64) -> Measures {
    Measures {
        events,
        input_tokens: events * 100,
        output_tokens: events * 50,
        cost_usd: cost,
        energy_wh: cost,
        carbon_g: cost * 10.0,
        embodied_g: cost,
        ..Measures::default()
    }
}

fn window(root: &std::path::Path, kind: &str, start_ms: i64, rows: Vec<(DimsRef<'_>, Measures)>) {
    let w = ClosedWindow::of_rows(start_ms, 60_000, start_ms / 1000, rows);
    let src = Source {
        kind,
        topic: kind,
        partition: 0,
    };
    tollgate_rollup::write_window(&Tree::local(root), src, &w).expect("write");
}

fn heartbeat<'a>(
    tenant: &'a str,
    node: &'a str,
    last_ms: i64,
    failed: u64,
) -> (DimsRef<'a>, Measures) {
    (
        DimsRef {
            tenant,
            team: None,
            environment: None,
            project: None,
            model: None,
            region: Some("eu-west-1"),
            node_id: Some(node),
        },
        Measures {
            events: 6,
            duration_ms_sum: 60.0,
            duration_ms_max: 20.0,
            uptime_ratio_min: Some(1.0),
            failed_proofs: failed,
            last_event_ms: last_ms,
            ..Measures::default()
        },
    )
}

/// Two tenants over January, and one window in February.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    window(
        root,
        "inference",
        JAN_10,
        vec![
            (
                dims("acme", Some("search"), Some("gpt-4o")),
                usage(10, 40.0),
            ),
            (
                dims("acme", Some("ads"), Some("<b>evil</b>|model")),
                usage(5, 5.0),
            ),
            (dims("acme", None, Some("gpt-4o")), usage(1, 1.0)),
            (
                dims("globex", Some("search"), Some("gpt-4o")),
                usage(7, 70.0),
            ),
        ],
    );
    window(
        root,
        "inference",
        JAN_10 + DAY,
        vec![(
            dims("acme", Some("search"), Some("gpt-4o")),
            usage(10, 80.0),
        )],
    );
    let mut training = usage(1, 30.0);
    training.gpu_hours = 3.0;
    window(
        root,
        "training",
        JAN_10 + DAY,
        vec![(dims("acme", Some("search"), Some("llama")), training)],
    );
    window(
        root,
        "heartbeat",
        JAN_10,
        vec![
            heartbeat("acme", "n-ok", JAN_10 + 58_000, 0),
            heartbeat("acme", "n-proof", JAN_10 + 58_000, 2),
            heartbeat("acme", "n-quiet", JAN_10 + 5_000, 0),
            heartbeat("globex", "g-1", JAN_10 + 58_000, 0),
        ],
    );
    // February: not January's.
    window(
        root,
        "inference",
        JAN_10 + 30 * DAY,
        vec![(
            dims("acme", Some("search"), Some("gpt-4o")),
            usage(99, 999.0),
        )],
    );
    dir
}

fn params() -> Map<String, Value> {
    let v = json!({
        "team-monthly-budget": {"budget_usd": 100.0},
        "node-reliability": {"stale_after_secs": 30, "latency_spike_ms": 1000, "uptime_target": 0.99,
            "stale_penalty": 50, "latency_penalty": 20, "uptime_penalty": 30, "proof_penalty": 40, "min_score": 80},
    });
    v.as_object().cloned().expect("object")
}

fn decision(
    policy: &str,
    verdict: &str,
    subject: &str,
    window_start: Option<&str>,
    ts: &str,
) -> Value {
    json!({
        "decision_id": format!("{policy}-{subject}-{ts}"),
        "policy": policy,
        "verdict": verdict,
        "subject": subject,
        "window": window_start.map(|s| json!({"start": s, "end": s, "source": "t"})),
        "reasons": [format!("{policy} said {verdict}")],
        "ts": ts,
    })
}

async fn report_of(root: &std::path::Path, tenant: Option<&str>, now_ms: i64) -> Report {
    let table = tollgate_rollup::history_table(&Tree::local(root)).expect("table");
    let table: std::sync::Arc<dyn datafusion::catalog::TableProvider> = match tenant {
        Some(t) => std::sync::Arc::new(tollgate_rollup::ScopedTable::new(
            table,
            col("tenant").eq(lit(t)),
        )),
        None => table,
    };
    let ctx = SessionContext::new();
    ctx.register_table("rollups", table).expect("register");
    let period = Period::parse("2026-01").expect("period");
    let settings = Settings::from_params(tenant.map(str::to_string), &params(), now_ms);
    let mut d = Decisions::new(&period, tenant, 3);
    for v in [
        decision(
            "team-window-spend",
            "deny",
            "tenant=acme/team=search",
            Some("2026-01-10T00:00:00.000Z"),
            "2026-12-01T00:00:00.000Z",
        ),
        decision(
            "unit-cost-cap",
            "warn",
            "tenant=acme/team=ads",
            Some("2026-01-10T00:00:00.000Z"),
            "2026-12-01T00:00:01.000Z",
        ),
        decision(
            "unit-cost-cap",
            "allow",
            "tenant=acme/team=ads",
            Some("2026-01-11T00:00:00.000Z"),
            "2026-12-01T00:00:02.000Z",
        ),
        // A gate's decision: counted by when it was made.
        decision(
            "release-gate",
            "deny",
            "tenant=acme/service=api",
            None,
            "2026-01-20T10:00:00.000Z",
        ),
        // Windows of other months are not January's.
        decision(
            "team-window-spend",
            "deny",
            "tenant=acme/team=x",
            Some("2026-02-09T00:00:00.000Z"),
            "2026-12-01T00:00:03.000Z",
        ),
        decision(
            "release-gate",
            "deny",
            "tenant=acme/service=api",
            None,
            "2025-12-31T23:59:59.000Z",
        ),
        // Another tenant's: in globex's report, never in acme's.
        decision(
            "team-window-spend",
            "warn",
            "tenant=globex/team=search",
            Some("2026-01-10T00:00:00.000Z"),
            "2026-12-01T00:00:04.000Z",
        ),
        // A prefix is not a tenant.
        decision(
            "team-window-spend",
            "deny",
            "tenant=acme-eu/team=search",
            Some("2026-01-10T00:00:00.000Z"),
            "2026-12-01T00:00:05.000Z",
        ),
    ] {
        d.add(&v);
    }
    gather(&ctx, &period, &settings, Some(d))
        .await
        .expect("report")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[tokio::test]
async fn a_tenants_report_is_its_period_by_team_and_model_with_budgets_nodes_and_decisions() {
    let dir = tree();
    // Halfway through January: projections double what is spent.
    let now = Period::parse("2026-01").expect("p").start_ms + 31 * DAY / 2;
    let r = report_of(dir.path(), Some("acme"), now).await;
    assert_eq!(r.period, "2026-01");
    assert!(close(r.elapsed_ratio, 0.5), "{}", r.elapsed_ratio);
    // acme's January only: February's window and globex's rows are out.
    assert!(
        close(r.total.cost_usd, 40.0 + 5.0 + 1.0 + 80.0 + 30.0),
        "{:?}",
        r.total
    );
    assert_eq!((r.total.requests, r.total.training_jobs), (26, 1));
    assert!(close(r.projected_cost_usd, 2.0 * 156.0));
    // Inference unit cost and SCI leave the training job out.
    assert!(close(
        r.total.cost_per_request.expect("requests"),
        126.0 / 26.0
    ));
    let sci = r.sci.per_request().expect("requests");
    assert!(close(sci, (126.0 * 10.0 + 126.0) / 26.0), "{sci}");
    assert!(close(r.total.gpu_hours, 3.0));

    let team = |name: Option<&str>| {
        r.teams
            .iter()
            .find(|t| t.team.as_deref() == name)
            .unwrap_or_else(|| panic!("team {name:?} in {:?}", r.teams))
    };
    let search = team(Some("search"));
    assert!(close(search.usage.cost_usd, 150.0));
    let budget = search.budget.as_ref().expect("budget");
    assert_eq!(budget.status, "over");
    assert!(close(budget.used_ratio, 1.5));
    // 5 spent, 10 projected: within 100.
    assert_eq!(team(Some("ads")).budget.as_ref().expect("b").status, "ok");
    assert_eq!(
        r.teams[0].team.as_deref(),
        Some("search"),
        "by cost, highest first"
    );
    assert!(r.teams.iter().all(|t| t.tenant == "acme"));

    let gpt = r
        .models
        .iter()
        .find(|m| m.model.as_deref() == Some("gpt-4o"))
        .expect("gpt-4o");
    assert_eq!((gpt.kind.as_str(), gpt.usage.requests), ("inference", 21));
    assert!(close(
        gpt.usage.cost_per_1k_tokens.expect("tokens"),
        121.0 / (21.0 * 150.0) * 1000.0
    ));
    let llama = r
        .models
        .iter()
        .find(|m| m.kind == "training")
        .expect("training");
    assert_eq!(
        (llama.usage.requests, llama.usage.cost_per_request),
        (0, None)
    );

    // Every day up to today, days without usage as zeros.
    assert_eq!(r.days.len(), 16, "January 1st to the 16th");
    let day = |d: &str| r.days.iter().find(|x| x.date == d).expect("day");
    assert!(close(day("2026-01-11").cost_usd, 110.0) && close(day("2026-01-10").cost_usd, 46.0));
    assert_eq!(day("2026-01-01").cost_usd, 0.0);

    // Decisions of January's windows, and the gate's of January.
    assert_eq!(r.decisions.as_ref().expect("decisions").total, 4);
    let top: Vec<&str> = r
        .decisions
        .as_ref()
        .expect("decisions")
        .top
        .iter()
        .filter_map(|d| d["policy"].as_str())
        .collect();
    assert_eq!(
        top,
        ["team-window-spend", "release-gate", "unit-cost-cap"],
        "deny first, newest first"
    );

    // Nodes: acme's only, the silent and the failed-proof ones unhealthy.
    assert_eq!((r.nodes.nodes, r.nodes.unhealthy), (3, 2));
    let ids: Vec<&str> = r
        .nodes
        .riskiest
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert_eq!(ids, ["n-quiet", "n-proof", "n-ok"]);
}

#[tokio::test]
async fn an_operators_report_has_every_tenant_and_a_tenants_never_another_tenants() {
    let dir = tree();
    let now = JAN_10 + 60 * DAY;
    let all = report_of(dir.path(), None, now).await;
    assert!(close(all.total.cost_usd, 226.0), "{:?}", all.total);
    assert!(close(all.elapsed_ratio, 1.0));
    assert!(
        close(all.projected_cost_usd, all.total.cost_usd),
        "a past month projects what it spent"
    );
    assert_eq!(all.days.len(), 31, "a past month: every day");
    assert_eq!(
        all.teams
            .iter()
            .filter(|t| t.team.as_deref() == Some("search"))
            .count(),
        2,
        "teams are per tenant"
    );
    assert_eq!(all.nodes.nodes, 4);
    assert_eq!(
        all.decisions.as_ref().expect("decisions").total,
        6,
        "every tenant's decisions"
    );
    let globex = report_of(dir.path(), Some("globex"), now).await;
    assert!(close(globex.total.cost_usd, 70.0));
    assert_eq!(globex.decisions.as_ref().expect("decisions").total, 1);
    for form in [Format::Json, Format::Markdown, Format::Html] {
        let text = globex.render(form);
        assert!(
            !text.contains("acme") && !text.contains("n-quiet"),
            "{form:?}: {text}"
        );
    }
}

#[tokio::test]
async fn every_form_escapes_what_the_data_says() {
    let dir = tree();
    let r = report_of(dir.path(), Some("acme"), JAN_10 + 60 * DAY).await;
    let html = r.render(Format::Html);
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    assert!(!html.contains("<b>evil</b>") && html.contains("&lt;b&gt;evil&lt;/b&gt;|model"));
    let bare = html.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
    for outside in ["<script", "http:", "https:", "src=", "url(", "@import"] {
        assert!(
            !bare.contains(outside),
            "no script, no external asset: {outside}"
        );
    }
    assert_eq!(html.matches("<svg").count(), 3);
    // A budget of 100 against bars of up to 150: drawn on the scale.
    assert!(html.contains(r#"class="marker""#) && !html.contains("off the scale"));
    assert_eq!(
        html.matches(r#"class="bar "#).count(),
        r.teams.len() + r.models.len()
    );
    let md = r.render(Format::Markdown);
    assert!(
        md.contains(r"&lt;b&gt;evil&lt;/b&gt;\|model"),
        "markup and pipes in a cell are escaped: {md}"
    );
    let json: Value = serde_json::from_str(&r.render(Format::Json)).expect("json");
    assert_eq!(json["sci"]["formula"], "((E × I) + M) / R");
    assert_eq!(json["teams"][0]["budget"]["status"], "over");
    assert!(Format::parse("pdf").is_err());
}

#[test]
fn amounts_read_as_people_write_them() {
    use crate::markdown::{count, usd};
    assert_eq!(count(0), "0");
    assert_eq!(count(1_213_018), "1,213,018");
    assert_eq!(usd(10_000.0), "$10,000.00");
    assert_eq!(usd(1234.567), "$1,234.57");
    assert_eq!(usd(0.02898), "$0.0290");
    assert_eq!(usd(-150.0), "-$150.00");
}
