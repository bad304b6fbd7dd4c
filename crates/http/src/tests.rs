//! Router tests: every route through `oneshot`, the auth matrix, the
//! limits, and one pass over a real socket.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tollgate_config::Config;
use tollgate_decision::{Key, KeyRing};
use tollgate_decision_log::{Committer, DecisionLog, LogOptions};
use tollgate_rollup::month_start_ms;
use tollgate_telemetry::live::{Ledger, LiveSnapshot, TeamWindow, Totals};
use tollgate_telemetry::Telemetry;
use tollgate_window::{ClosedWindow, DimsRef, Measures, RowSet};
use tower::ServiceExt;

use super::*;

const ACME: &str = "acme-all-scopes-0001";
const ACME_NONE: &str = "acme-no-scopes-00001";
const ACME_ADMIN: &str = "acme-admin-scope-001";
const GLOBEX: &str = "globex-all-scopes-01";
const OPERATOR: &str = "operator-admin-00001";
const SCRAPER: &str = "prometheus-scrape-01";
const ACME_USAGE: &str = "acme-usage-read-0001";
const SECRET: &[u8] = b"test-secret-0123456789abcdef";

fn tokens() -> Auth {
    let all = [
        "ingest.write",
        "gates.check",
        "usage.read",
        "decisions.read",
        "query.run",
    ];
    Auth::parse_tokens(
        &json!({
            ACME: {"tenant": "acme", "scopes": all, "subject": "acme-ci"},
            ACME_NONE: {"tenant": "acme", "scopes": []},
            ACME_ADMIN: {"tenant": "acme", "scopes": ["admin"]},
            GLOBEX: {"tenant": "globex", "scopes": all},
            OPERATOR: {"operator": true, "scopes": ["admin"]},
            SCRAPER: {"operator": true, "scopes": ["metrics.scrape"], "subject": "prometheus"},
            ACME_USAGE: {"tenant": "acme", "scopes": ["usage.read"]},
        })
        .to_string(),
        "test",
    )
    .unwrap()
}

fn gate_data_params() -> serde_json::Map<String, Value> {
    json!({
        "unit-cost-cap": {"cap_usd": 0.5},
        "team-window-spend": {"limit_usd": 100.0},
        "team-monthly-budget": {"budget_usd": 10000.0},
        "carbon-intensity": {"max_g_per_kwh": 400.0},
        "node-reliability": {"stale_after_secs": 30, "latency_spike_ms": 1000, "uptime_target": 0.99,
                             "stale_penalty": 50, "latency_penalty": 20, "uptime_penalty": 30, "min_score": 80},
    })
    .as_object()
    .unwrap()
    .clone()
}

struct Fx {
    dir: tempfile::TempDir,
    state: Arc<AppState>,
    app: Router,
}

const HOUR_MS: i64 = 3_600_000;

fn write_rollup(
    root: &std::path::Path,
    tenant: &str,
    team: &str,
    cost: f64,
    start_ms: i64,
    offset: i64,
) {
    let m = Measures {
        events: 10,
        input_tokens: 1000,
        output_tokens: 500,
        cost_usd: cost,
        carbon_g: 2.0,
        ..Measures::default()
    };
    let d = DimsRef {
        tenant,
        team: Some(team),
        environment: Some("prod"),
        project: None,
        model: Some("gpt-4o"),
        region: Some("eu-north-1"),
        node_id: None,
    };
    write_window(root, "inference", d, m, start_ms, offset);
}

/// One window of one row, written as the writer thread writes it.
fn write_window(
    root: &std::path::Path,
    kind: &str,
    d: DimsRef<'_>,
    m: Measures,
    start_ms: i64,
    offset: i64,
) {
    let w = ClosedWindow {
        start_ms,
        end_ms: start_ms + 60_000,
        first_offset: offset,
        close_offset: offset + 10,
        watermark_ms: start_ms + 60_000,
        duplicates: 0,
        rows: RowSet::from_rows([(d, m)]),
    };
    let batch = tollgate_rollup::to_batch(&w).unwrap();
    let topic = format!("tollgate.{kind}");
    let src = tollgate_rollup::Source {
        kind,
        topic: &topic,
        partition: 0,
    };
    tollgate_rollup::EncodedWindow::new(&tollgate_rollup::Tree::local(root), src, &w, &batch)
        .and_then(|f| f.write())
        .unwrap();
}

fn fixture_with(auth: Auth, tweak: impl FnOnce(&mut Config)) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.output.rollup_dir = dir.path().join("rollups");
    cfg.decisions.log_dir = dir.path().join("decisions");
    cfg.gates.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/gates");
    cfg.gates.params = toml::from_str(
        r#"
required_tags = ["team", "environment"]
allowed_regions = []
min_test_pass_rate = 0.95
max_security_findings = { critical = 0, high = 0 }
"#,
    )
    .unwrap();
    tweak(&mut cfg);
    let now = chrono::Utc::now().timestamp_millis();
    let start = (now - HOUR_MS) / 60_000 * 60_000;
    write_rollup(&cfg.output.rollup_dir, "acme", "ai", 3.0, start, 0);
    write_rollup(&cfg.output.rollup_dir, "globex", "ml", 7.0, start, 100);
    let log = DecisionLog::open(
        &cfg.decisions.log_dir,
        Key::new("k1", SECRET).unwrap(),
        LogOptions::default(),
    )
    .unwrap();
    let telemetry = Arc::new(Telemetry::default());
    let registry = prometheus::Registry::new();
    telemetry.register(&registry).unwrap();
    let rollups = tollgate_rollup::Tree::local(&cfg.output.rollup_dir);
    // What `tollgate run` does before it serves: the month read from the rollups.
    telemetry
        .live
        .set_seed(Ledger::from_rollups(&rollups).unwrap());
    let engine = cfg.load_gate_engine(gate_data_params()).unwrap();
    let state = AppState::new(
        cfg,
        auth,
        telemetry,
        registry,
        Committer::spawn(log, 64).unwrap(),
        engine,
        gate_data_params(),
        None,
        rollups,
    )
    .unwrap();
    let app = router(state.clone());
    Fx { dir, state, app }
}

fn fixture() -> Fx {
    fixture_with(tokens(), |_| {})
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
    text: String,
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    call_with(app, method, uri, token, body, &[]).await
}

async fn call_with(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
        text,
    }
}

/// `POST /v1/gates/policy-check` as `token`.
async fn gate(app: &Router, token: &str, body: &str) -> Answer {
    call(
        app,
        "post",
        "/v1/gates/policy-check",
        Some(token),
        Some(body),
    )
    .await
}

/// `POST /v1/gates/policy-check` as `token`, with extra headers.
async fn gate_with(app: &Router, token: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    call_with(
        app,
        "post",
        "/v1/gates/policy-check",
        Some(token),
        Some(body),
        headers,
    )
    .await
}

/// The `rule` of each violation in a gate answer.
fn rule_names(a: &Answer) -> Vec<&str> {
    a.body["violations"]
        .as_array()
        .map(|v| v.iter().filter_map(|x| x["rule"].as_str()).collect())
        .unwrap_or_default()
}

fn assert_problem(a: &Answer, status: StatusCode) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.content_type, problem::PROBLEM_JSON, "{}", a.text);
    assert_eq!(a.body["status"], json!(status.as_u16()));
    assert!(
        !a.body["detail"].as_str().unwrap_or_default().is_empty(),
        "{}",
        a.text
    );
}

const SEED_OK: &str =
    r#"{"unit_cost_usd": 0.3, "cost_tags": {"team": "ai", "environment": "dev"}}"#;
const SEED_DENY: &str = r#"{"unit_cost_usd": 0.6}"#;

fn inference_event(tenant: &str) -> String {
    json!({
        "event_id": "e-1", "ts": "2026-11-22T10:00:00Z", "tenant": tenant, "kind": "inference",
        "tags": {"team": "ai", "environment": "prod"},
        "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5, "duration_ms": 12
    })
    .to_string()
}

fn event_for(path: &str, tenant: &str) -> String {
    match path {
        "/v1/metrics/training" => json!({
            "event_id": "t-1", "ts": "2026-11-22T10:00:00Z", "tenant": tenant,
            "tags": {"team": "ai", "environment": "prod"},
            "model": "llama", "gpu_type": "H100", "gpu_count": 8, "duration_hours": 1.5
        })
        .to_string(),
        "/v1/nodes/heartbeat" => json!({
            "event_id": "h-1", "ts": "2026-11-22T10:00:00Z", "tenant": tenant,
            "node_id": "n1", "region": "eu-north-1"
        })
        .to_string(),
        _ => inference_event(tenant),
    }
}

/// A valid request for each protected route (method, path), as `tenant`.
fn request_for(method: &str, path: &str, tenant: &str) -> (String, Option<String>) {
    match (method, path) {
        ("post", "/v1/gates/policy-check") => (path.into(), Some(SEED_OK.into())),
        ("post", "/v1/events") => (path.into(), Some(format!("[{}]", inference_event(tenant)))),
        ("post", p) if p.starts_with("/v1/metrics/") || p == "/v1/nodes/heartbeat" => {
            (path.into(), Some(event_for(path, tenant)))
        }
        ("post", "/v1/query") => (path.into(), Some(r#"{"sql": "SELECT 1 AS one"}"#.into())),
        ("post", "/v1/data/{*path}") => (
            "/v1/data/tollgate/gate/violations".into(),
            Some(json!({"input": {"unit_cost_usd": 0.3, "tenant": tenant}}).to_string()),
        ),
        ("get", "/v1/data/{*path}") => ("/v1/data/tollgate/gate/required_params".into(), None),
        ("get", "/v1/export/focus") => (format!("{path}?period=2026-11&format=csv"), None),
        ("get", "/v1/usage/{project}") => ("/v1/usage/search".into(), None),
        ("get", "/v1/nodes/{node_id}") => ("/v1/nodes/n-1".into(), None),
        ("get", "/v1/pricing/quote") => (format!("{path}?model=gpt-4o&input_tokens=1000"), None),
        ("post", "/v1/placement/suggest") => (
            path.into(),
            Some(r#"{"gpu_type": "h100", "gpu_count": 2, "hours": 3, "objective": "carbon", "regions": ["eu-north-1"]}"#.into()),
        ),
        _ => (path.into(), None),
    }
}

const OPEN: [&str; 4] = ["/healthz", "/health", "/readyz", "/openapi.yaml"];

#[tokio::test]
async fn every_route_is_in_the_openapi_spec() {
    // The spec's paths and their methods, read line by line (two-space
    // indented path keys under `paths:`, four-space method keys).
    let mut spec: HashMap<String, Vec<String>> = HashMap::new();
    let mut in_paths = false;
    let mut current = None;
    for line in OPENAPI_YAML.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if in_paths && !line.starts_with(' ') && !line.is_empty() {
            break;
        }
        if let Some(p) = line.strip_prefix("  /") {
            let p = format!("/{}", p.trim_end_matches(':'));
            spec.entry(p.clone()).or_default();
            current = Some(p);
        } else if let Some(m) = line.strip_prefix("    ") {
            let m = m.trim_end_matches(':');
            if ["get", "post", "put", "delete", "patch"].contains(&m) {
                spec.get_mut(current.as_ref().unwrap())
                    .unwrap()
                    .push(m.to_string());
            }
        }
    }
    // axum's catch-all `{*path}` is OpenAPI's `{path}`.
    let routes: Vec<(String, String)> = routes()
        .into_iter()
        .map(|(m, p, _)| (m.to_string(), p.replace("{*", "{")))
        .collect();
    for (m, p) in &routes {
        assert!(
            spec.get(p).is_some_and(|ms| ms.contains(m)),
            "{m} {p} is served but missing from schemas/openapi.yaml"
        );
    }
    for (p, ms) in &spec {
        for m in ms {
            assert!(
                routes.contains(&(m.clone(), p.clone())),
                "{m} {p} is in schemas/openapi.yaml but not served"
            );
        }
    }
    // And the served copy is the file, bundled.
    let fx = fixture();
    let a = call(&fx.app, "get", "/openapi.yaml", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text, crate::bundled_openapi());
    // Self-contained: every schema file it refers to is inlined.
    assert!(!a.text.contains("\"./"), "no reference outside the spec");
    for name in [
        "InferenceEvent",
        "TrainingEvent",
        "HeartbeatEvent",
        "Decision",
        "InferenceRequest",
        "TrainingRequest",
        "HeartbeatRequest",
    ] {
        assert!(
            a.text.contains(&format!("\n    {name}: {{")),
            "{name} inlined"
        );
        assert!(
            a.text.contains(&format!("#/components/schemas/{name}")),
            "{name} referred to"
        );
    }
    // A route's body is its event with what the route fills in optional.
    let line = a
        .text
        .lines()
        .find(|l| l.starts_with("    TrainingRequest: "))
        .unwrap();
    let body: Value = serde_json::from_str(&line["    TrainingRequest: ".len()..]).unwrap();
    assert_eq!(
        body["required"],
        json!(["model", "gpu_count", "duration_hours"])
    );
    assert!(body["properties"]["cost_tags"].is_object(), "{body}");
}

#[tokio::test]
async fn auth_matrix_no_token_wrong_scope_other_tenant() {
    let fx = fixture();
    for (method, path, _) in routes() {
        if OPEN.contains(&path) {
            let a = call(&fx.app, method, path, None, None).await;
            assert_ne!(a.status, StatusCode::UNAUTHORIZED, "{path} must be open");
            continue;
        }
        let (uri, body) = request_for(method, path, "acme");
        let none = call(&fx.app, method, &uri, None, body.as_deref()).await;
        assert_problem(&none, StatusCode::UNAUTHORIZED);
        let unknown = call(
            &fx.app,
            method,
            &uri,
            Some("not-a-known-token-123"),
            body.as_deref(),
        )
        .await;
        assert_problem(&unknown, StatusCode::UNAUTHORIZED);
        let scopeless = call(&fx.app, method, &uri, Some(ACME_NONE), body.as_deref()).await;
        assert_problem(&scopeless, StatusCode::FORBIDDEN);
        // The other tenant: asking for acme's data (or writing it) as globex.
        let other = match (method, path) {
            ("get", "/metrics") => call(&fx.app, method, &uri, Some(ACME), None).await,
            ("post", "/v1/gates/policy-check") => {
                let b = r#"{"unit_cost_usd": 0.1, "tenant": "acme"}"#;
                call(&fx.app, method, &uri, Some(GLOBEX), Some(b)).await
            }
            ("get", "/v1/pricing/quote") => {
                // The price book's prices: no tenant's data in them.
                let a = call(&fx.app, method, &uri, Some(GLOBEX), None).await;
                assert_eq!(a.status, StatusCode::OK, "{}", a.text);
                continue;
            }
            ("post", "/v1/placement/suggest") => {
                // No tenant to ask for: the nodes weighed are the caller's.
                let a = call(&fx.app, method, &uri, Some(GLOBEX), body.as_deref()).await;
                assert_eq!(a.status, StatusCode::OK, "{}", a.text);
                continue;
            }
            ("post", "/v1/query") => {
                // No tenant parameter to abuse: the table is scoped instead.
                let b = r#"{"sql": "SELECT DISTINCT tenant FROM rollups"}"#;
                let a = call(&fx.app, method, &uri, Some(GLOBEX), Some(b)).await;
                assert_eq!(a.status, StatusCode::OK, "{}", a.text);
                assert_eq!(a.body["rows"], json!([{"tenant": "globex"}]));
                continue;
            }
            ("post", _) => call(&fx.app, method, &uri, Some(GLOBEX), body.as_deref()).await,
            ("get", "/v1/data/{*path}") => {
                // The rules' constants: no tenant's data to ask for. A
                // decision path without an input is refused.
                let a = call(&fx.app, method, &uri, Some(GLOBEX), None).await;
                assert_eq!(a.status, StatusCode::OK, "{}", a.text);
                let d = call(
                    &fx.app,
                    method,
                    "/v1/data/tollgate/gate",
                    Some(GLOBEX),
                    None,
                )
                .await;
                assert_problem(&d, StatusCode::BAD_REQUEST);
                continue;
            }
            ("get", _) => {
                let sep = if uri.contains('?') { '&' } else { '?' };
                call(
                    &fx.app,
                    method,
                    &format!("{uri}{sep}tenant=acme"),
                    Some(GLOBEX),
                    None,
                )
                .await
            }
            _ => unreachable!(),
        };
        assert_problem(&other, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn reads_only_ever_show_the_callers_tenant() {
    let fx = fixture();
    // A decision for each tenant.
    let a = gate(&fx.app, ACME, SEED_OK).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let g = gate(&fx.app, GLOBEX, SEED_DENY).await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.text);

    let m = call(&fx.app, "get", "/v1/metrics", Some(GLOBEX), None).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    assert_eq!(m.body["tenant"], json!("globex"));
    assert_eq!(m.body["total"]["cost_usd"], json!(7.0));
    assert_eq!(m.body["by_team"][0]["team"], json!("ml"));
    assert_eq!(m.body["by_team"].as_array().unwrap().len(), 1);

    let u = call(&fx.app, "get", "/v1/usage", Some(ACME), None).await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.text);
    assert_eq!(u.body["total"]["cost_usd"], json!(3.0));
    assert!(u.body["windows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["tenant"] == "acme"));

    // The month, by team and as a FOCUS export: each tenant its own.
    let period = tollgate_rollup::month_name(chrono::Utc::now().timestamp_millis() - HOUR_MS);
    for (token, tenant, cost) in [(ACME, "acme", 3.0), (GLOBEX, "globex", 7.0)] {
        let uri = format!("/v1/usage?period={period}&group_by=team");
        let g = call(&fx.app, "get", &uri, Some(token), None).await;
        assert_eq!(g.status, StatusCode::OK, "{}", g.text);
        assert_eq!(g.body["groups"].as_array().unwrap().len(), 1, "{}", g.text);
        assert_eq!(
            g.body["estimate"]["to_date_cost_usd"],
            json!(cost),
            "{}",
            g.text
        );
        let uri = format!("/v1/export/focus?period={period}&format=csv");
        let e = call(&fx.app, "get", &uri, Some(token), None).await;
        assert_eq!(e.status, StatusCode::OK, "{}", e.text);
        assert!(e.content_type.starts_with("text/csv"), "{}", e.content_type);
        let rows: Vec<&str> = e.text.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "{}", e.text);
        assert!(
            rows[0].starts_with(&format!("{cost:?},{tenant},{tenant},USD,")),
            "{}",
            e.text
        );
    }
    let bad = call(&fx.app, "get", "/v1/usage?period=2026-13", Some(ACME), None).await;
    assert_problem(&bad, StatusCode::BAD_REQUEST);
    // `from`/`to` with a period bound a part of it, without the estimate;
    // a range that ends before it starts holds nothing.
    let start = &format!("{period}-01T00:00:00Z");
    for (q, cost) in [
        (format!("period={period}&from=0"), 3.0),
        (format!("period={period}&to={start}"), 0.0),
        (format!("from={start}&to=0"), 0.0),
    ] {
        let part = call(&fx.app, "get", &format!("/v1/usage?{q}"), Some(ACME), None).await;
        assert_eq!(part.status, StatusCode::OK, "{q}: {}", part.text);
        assert!(part.body.get("estimate").is_none(), "{q}: {}", part.text);
        let spent = part.body["total"]["cost_usd"].as_f64().unwrap_or(0.0);
        assert_eq!(spent, cost, "{q}: {}", part.text);
    }
    for q in [
        "from=",
        "team=",
        "tenant=a%2Fb",
        "from=%2B5",
        "period=2026-1x",
    ] {
        let bad = call(&fx.app, "get", &format!("/v1/usage?{q}"), Some(ACME), None).await;
        assert_problem(&bad, StatusCode::BAD_REQUEST);
    }

    let d = call(&fx.app, "get", "/v1/decisions", Some(GLOBEX), None).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text);
    let ds = d.body["decisions"].as_array().unwrap();
    assert_eq!(ds.len(), 1);
    assert!(ds[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("tenant=globex/"));
}

#[tokio::test]
async fn gate_seed_examples_signed_and_logged() {
    let fx = fixture();
    let ok = gate(&fx.app, ACME, SEED_OK).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["allow"], json!(true));
    assert_eq!(ok.body["violations"], json!([]));
    assert_eq!(ok.body["key_id"], json!("k1"));
    assert_eq!(ok.body["signature"].as_str().unwrap().len(), 64);

    let deny = gate(&fx.app, ACME, SEED_DENY).await;
    assert_eq!(deny.status, StatusCode::OK, "{}", deny.text);
    assert_eq!(deny.body["allow"], json!(false));
    let rules = rule_names(&deny);
    assert_eq!(rules, ["required-cost-tags", "unit-cost-cap"]);

    // Both answers are in the log, durable and verifiable, with the same
    // signature the caller got.
    let ring = KeyRing::new(Some(Key::new("k1", SECRET).unwrap()), Vec::new()).unwrap();
    let report = tollgate_decision_log::verify_dir(&fx.state.decisions_dir, &ring).unwrap();
    assert!(report.first_bad.is_none());
    assert_eq!(report.records, 2);
    let page = call(
        &fx.app,
        "get",
        "/v1/decisions?policy=gate&verdict=deny",
        Some(ACME),
        None,
    )
    .await;
    let logged = &page.body["decisions"][0];
    assert_eq!(logged["decision_id"], deny.body["decision_id"]);
    assert_eq!(logged["signature"], deny.body["signature"]);
    assert_eq!(logged["observed"]["unit_cost_usd"], json!(0.6));
    assert_eq!(logged["observed"]["context"]["tenant"], json!("acme"));
}

#[tokio::test]
async fn gate_idempotency_key_returns_the_recorded_answer() {
    let fx = fixture();
    let key = [("idempotency-key", "release-42")];
    let first = gate_with(&fx.app, ACME, SEED_DENY, &key).await;
    let again = gate_with(&fx.app, ACME, SEED_DENY, &key).await;
    assert_eq!(first.body["decision_id"], again.body["decision_id"]);
    assert_eq!(first.body["signature"], again.body["signature"]);
    assert_eq!(again.body["replayed"], json!(true));
    assert_eq!(first.body["violations"], again.body["violations"]);
    let changed = gate_with(&fx.app, ACME, SEED_OK, &key).await;
    assert_problem(&changed, StatusCode::CONFLICT);
    let bad_key = [("idempotency-key", "has space")];
    let bad = gate_with(&fx.app, ACME, SEED_OK, &bad_key).await;
    assert_problem(&bad, StatusCode::BAD_REQUEST);
    let ring = KeyRing::new(Some(Key::new("k1", SECRET).unwrap()), Vec::new()).unwrap();
    let report = tollgate_decision_log::verify_dir(&fx.state.decisions_dir, &ring).unwrap();
    assert_eq!(report.records, 1);
}

#[tokio::test]
async fn gate_judges_live_team_spend() {
    let fx = fixture();
    let now = chrono::Utc::now().timestamp_millis();
    let month = month_start_ms(now);
    let mut closed = Ledger::default();
    let spent = Totals {
        cost_usd: 9_990.0,
        events: 100,
        ..Totals::default()
    };
    closed.add_month("acme", Some("ai"), month, &spent);
    let start = now / 60_000 * 60_000;
    // The team's open window, split over two source partitions.
    let mut open = Vec::new();
    for (partition, cost_usd) in [(0, 90.0), (1, 5.0)] {
        let mut w = TeamWindow::new(
            ("tollgate.inference".into(), partition),
            start,
            start + 60_000,
        );
        let spend = Totals {
            cost_usd,
            events: 5,
            ..Totals::default()
        };
        w.add("acme", Some("ai"), &spend);
        open.push(w);
    }
    fx.state
        .telemetry
        .live
        .publish(LiveSnapshot::new(now, closed, open));
    let body = r#"{"unit_cost_usd": 0.1, "cost_tags": {"team": "ai", "environment": "prod"}, "projected_spend_usd": 10}"#;
    let a = gate(&fx.app, ACME, body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["allow"], json!(false));
    let rules = rule_names(&a);
    assert_eq!(rules, ["team-monthly-budget", "team-window-spend"]);
    assert_eq!(a.body["context"]["window"]["spend_usd"], json!(95.0));
    assert_eq!(a.body["context"]["month"]["spend_usd"], json!(10_085.0));
    // Another team of the same tenant is not affected.
    let other = r#"{"unit_cost_usd": 0.1, "cost_tags": {"team": "web", "environment": "prod"}, "projected_spend_usd": 10}"#;
    let b = gate(&fx.app, ACME, other).await;
    assert_eq!(b.body["allow"], json!(true), "{}", b.text);
    // The live usage shows the open window.
    let u = call(&fx.app, "get", "/v1/usage?team=ai", Some(ACME), None).await;
    let live: Vec<&Value> = u.body["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["source"] == "live")
        .collect();
    assert_eq!(live.len(), 1, "{}", u.text);
    assert_eq!(u.body["total"]["cost_usd"], json!(98.0));
}

#[tokio::test]
async fn gate_rejects_bad_bodies_with_reasons() {
    let fx = fixture();
    for (body, status, needle) in [
        ("{not json", StatusCode::BAD_REQUEST, "not valid JSON"),
        (
            r#"{"unit_cost": 0.3}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `unit_cost`",
        ),
        (
            r#"{"cost_tags": {}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unit_cost_usd",
        ),
        (
            r#"{"unit_cost_usd": -1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unit_cost_usd",
        ),
        (
            r#"{"unit_cost_usd": "cheap"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid type",
        ),
        // A name that could pass for another tenant's subject.
        (
            r#"{"unit_cost_usd": 0.1, "team": "ai/request=x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "team has a character",
        ),
        (
            r#"{"unit_cost_usd": 0.1, "cost_tags": {"team": "a b"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "cost_tags.team",
        ),
    ] {
        let a = gate(&fx.app, ACME, body).await;
        assert_problem(&a, status);
        assert!(
            a.body["detail"].as_str().unwrap().contains(needle),
            "{}",
            a.text
        );
    }
}

#[tokio::test]
async fn ingest_validates_every_item_before_producing() {
    let fx = fixture();
    let bad = json!({"event_id": "x", "ts": "2026-11-22T10:00:00Z", "tenant": "acme", "kind": "inference",
                     "model": "m", "input_tokens": -1, "output_tokens": 1, "duration_ms": 1});
    let body = format!("{}\n{}\n{{nope\n", inference_event("acme"), bad);
    let a = call(&fx.app, "post", "/v1/events", Some(ACME), Some(&body)).await;
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = a.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{}", a.text);
    assert_eq!(errors[0]["index"], json!(1));
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("input_tokens"));
    assert_eq!(errors[1]["index"], json!(2));
    let single = call(
        &fx.app,
        "post",
        "/v1/metrics/inference",
        Some(ACME),
        Some("{nope"),
    )
    .await;
    assert_problem(&single, StatusCode::BAD_REQUEST);
    let wrong_kind = call(
        &fx.app,
        "post",
        "/v1/nodes/heartbeat",
        Some(ACME),
        Some(&inference_event("acme")),
    )
    .await;
    assert_problem(&wrong_kind, StatusCode::UNPROCESSABLE_ENTITY);
    let empty = call(&fx.app, "post", "/v1/events", Some(ACME), Some("[]")).await;
    assert_problem(&empty, StatusCode::UNPROCESSABLE_ENTITY);
    let not_array = call(&fx.app, "post", "/v1/events", Some(ACME), Some("[1,")).await;
    assert_problem(&not_array, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn query_is_read_only_and_bounded() {
    let fx = fixture_with(tokens(), |c| c.http.max_query_rows = 3);
    let ok = call(
        &fx.app,
        "post",
        "/v1/query",
        Some(ACME),
        Some(r#"{"sql": "SELECT team, sum(cost_usd) AS spend FROM rollups GROUP BY team"}"#),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["rows"], json!([{"team": "ai", "spend": 3.0}]));
    assert_eq!(ok.body["columns"], json!(["team", "spend"]));
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO rollups SELECT * FROM rollups",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * FROM history",
        "SELEC 1",
    ] {
        let body = json!({"sql": sql}).to_string();
        let a = call(&fx.app, "post", "/v1/query", Some(ACME), Some(&body)).await;
        assert_problem(&a, StatusCode::BAD_REQUEST);
    }
    let many = json!({"sql": "SELECT * FROM (VALUES (1), (2), (3), (4), (5)) AS t(x)"}).to_string();
    let a = call(&fx.app, "post", "/v1/query", Some(ACME), Some(&many)).await;
    assert_eq!(a.body["row_count"], json!(3));
    assert_eq!(a.body["truncated"], json!(true));
}

/// SQL a hostile tenant would send, against a tree holding two tenants.
/// Every answer is about acme's rows only: no error, plan or count carries
/// globex's values, row counts or a server path.
#[tokio::test]
async fn hostile_sql_never_sees_another_tenant() {
    let fx = fixture();
    let root = fx.state.cfg.output.rollup_dir.clone();
    let start = (chrono::Utc::now().timestamp_millis() - 2 * HOUR_MS) / 60_000 * 60_000;
    // acme's second team casts to a number; globex's secret team does not.
    write_rollup(&root, "acme", "7", 1.0, start, 200);
    write_rollup(&root, "globex", "globex-secret-team", 900.0, start, 300);
    let secret = ["globex", "secret", "900"];
    let path = root.canonicalize().unwrap().display().to_string();
    let ask = |sql: &str| {
        let body = json!({"sql": sql}).to_string();
        let app = fx.app.clone();
        async move { call(&app, "post", "/v1/query", Some(ACME), Some(&body)).await }
    };
    let clean = |a: &Answer| {
        for s in secret.iter().chain([&path.as_str()]) {
            assert!(!a.text.contains(s), "{s:?} leaked: {}", a.text);
        }
    };
    // A cast that fails on any non-numeric team other than acme's own "ai".
    let cast = ask("SELECT team FROM rollups \
         WHERE CAST(CASE WHEN team = 'ai' THEN '1' ELSE team END AS BIGINT) > 0 ORDER BY team")
    .await;
    assert_eq!(cast.status, StatusCode::OK, "{}", cast.text);
    assert_eq!(cast.body["rows"], json!([{"team": "7"}, {"team": "ai"}]));
    // A division by zero as a yes/no oracle on globex's spend.
    let oracle = ask("SELECT count(*) AS n FROM rollups \
         WHERE 1 / (CASE WHEN tenant = 'globex' AND cost_usd > 500 THEN 0 ELSE 1 END) = 1")
    .await;
    assert_eq!(oracle.status, StatusCode::OK, "{}", oracle.text);
    assert_eq!(oracle.body["rows"], json!([{"n": 2}]));
    // Counting, joining and grouping see acme's two rows only.
    for (sql, want) in [
        ("SELECT count(*) AS n FROM rollups", json!([{"n": 2}])),
        (
            "SELECT count(*) AS n FROM rollups a CROSS JOIN rollups b",
            json!([{"n": 4}]),
        ),
        (
            "SELECT count(DISTINCT tenant) AS n FROM rollups",
            json!([{"n": 1}]),
        ),
        (
            "SELECT max(cost_usd) AS m FROM rollups WHERE tenant <> 'acme'",
            json!([{"m": null}]),
        ),
        (
            "SELECT count(*) AS n FROM rollups LIMIT 1",
            json!([{"n": 2}]),
        ),
    ] {
        let a = ask(sql).await;
        assert_eq!(a.status, StatusCode::OK, "{sql}: {}", a.text);
        assert_eq!(a.body["rows"], want, "{sql}");
        clean(&a);
    }
    // Errors that name a value name acme's.
    let err = ask("SELECT CAST(team AS BIGINT) FROM rollups").await;
    assert_problem(&err, StatusCode::BAD_REQUEST);
    clean(&err);
    // Plans show no file of the tree, and no count above acme's.
    for sql in [
        "EXPLAIN SELECT * FROM rollups WHERE team = 'x'",
        "EXPLAIN VERBOSE SELECT * FROM rollups",
        "EXPLAIN ANALYZE SELECT team, sum(cost_usd) FROM rollups GROUP BY team",
        "EXPLAIN ANALYZE SELECT * FROM rollups",
    ] {
        let a = ask(sql).await;
        assert_eq!(a.status, StatusCode::OK, "{sql}: {}", a.text);
        clean(&a);
        assert!(!a.text.contains(".parquet"), "{sql}: {}", a.text);
        for n in a.text.split("output_rows=").skip(1) {
            let n: String = n.chars().take_while(char::is_ascii_digit).collect();
            assert!(n.parse::<u64>().unwrap() <= 2, "{sql}: {}", a.text);
        }
    }
    // A broken file in the tree is the server's fault: 500, no path.
    let bad = root.join("kind=inference/date=2020-01-01/hour=00");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("broken.parquet"), b"not parquet").unwrap();
    let a = ask("SELECT count(*) FROM rollups").await;
    assert_problem(&a, StatusCode::INTERNAL_SERVER_ERROR);
    clean(&a);
    assert!(!a.text.contains("broken"), "{}", a.text);
}

/// A gate request whose decision is larger than the log takes is refused
/// (413, deny) before anything is written, and the log goes on.
#[tokio::test]
async fn an_oversize_gate_record_is_refused_and_the_log_goes_on() {
    let fx = fixture();
    let big = format!(
        r#"{{"unit_cost_usd": 0.1, "cost_tags": {{"team": "ai", "environment": "dev", "note": "{}"}}}}"#,
        "a".repeat(200_000)
    );
    let a = gate(&fx.app, ACME, &big).await;
    assert_problem(&a, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.body["allow"], json!(false));
    let ok = gate(&fx.app, ACME, SEED_OK).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let ring = KeyRing::new(Some(Key::new("k1", SECRET).unwrap()), Vec::new()).unwrap();
    let report = tollgate_decision_log::verify_dir(&fx.state.decisions_dir, &ring).unwrap();
    assert_eq!((report.records, report.first_bad), (1, None));
}

/// The gate never judges a month it has not read: until the rollups are
/// read it denies with 503, and `/readyz` says why.
#[tokio::test]
async fn the_gate_waits_for_the_month_to_be_read() {
    let fx = fixture();
    let live = &fx.state.telemetry.live;
    live.seed_failed();
    let a = gate(&fx.app, ACME, SEED_OK).await;
    assert_problem(&a, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.body["allow"], json!(false));
    assert!(a.text.contains("could not be read"), "{}", a.text);
    let r = call(&fx.app, "get", "/readyz", None, None).await;
    assert_eq!(r.body["checks"]["gate_context_loaded"], json!(false));
    // Read: the answer carries the month's spend from the files, and when.
    live.set_seed(Ledger::from_rollups(&fx.state.rollups).unwrap());
    let a = gate(&fx.app, ACME, SEED_OK).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let r = call(&fx.app, "get", "/readyz", None, None).await;
    assert_eq!(r.body["checks"]["gate_context_loaded"], json!(true));
}

/// Queries share one budget and their own threads: a tenant flooding
/// `/v1/query` gets 503s, while gates and probes are answered; values no
/// allocator could hold are refused before they are built.
#[tokio::test]
async fn queries_cannot_take_what_gates_need() {
    let fx = fixture_with(tokens(), |c| c.http.max_queries = 1);
    let slow = json!({"sql": SLOW_SQL}).to_string();
    let spawn_busy = || {
        let (app, slow) = (fx.app.clone(), slow.clone());
        tokio::spawn(
            async move { call(&app, "post", "/v1/query", Some(GLOBEX), Some(&slow)).await },
        )
    };
    let mut busy = spawn_busy();
    let mut refused = None;
    for _ in 0..200 {
        // The probe may have taken the slot before the slow query did.
        if busy.is_finished() {
            busy = spawn_busy();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let a = call(
            &fx.app,
            "post",
            "/v1/query",
            Some(ACME),
            Some(r#"{"sql": "SELECT 1 AS x"}"#),
        )
        .await;
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(a);
            break;
        }
    }
    let refused = refused.expect("a query while the only slot is taken is refused");
    assert!(
        refused.text.contains("http.max_queries"),
        "{}",
        refused.text
    );
    // The gate and the probes do not wait for the query.
    let g = gate(&fx.app, ACME, SEED_OK).await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.text);
    assert_eq!(
        call(&fx.app, "get", "/healthz", None, None).await.status,
        StatusCode::OK
    );
    busy.abort();

    let fx = fixture();
    for sql in [
        "SELECT repeat('x', 2000000000) AS s",
        "SELECT length(repeat(team, 100000000)) AS n FROM rollups",
        "SELECT lpad('x', 2000000000) AS s",
        "SELECT rpad(team, 1000000000, 'y') AS s FROM rollups",
    ] {
        let body = json!({"sql": sql}).to_string();
        let a = call(&fx.app, "post", "/v1/query", Some(ACME), Some(&body)).await;
        assert_problem(&a, StatusCode::BAD_REQUEST);
        assert!(
            a.text.contains("http.query_string_bytes"),
            "{sql}: {}",
            a.text
        );
    }
    // Within the bound, the functions work as before.
    let a = call(
        &fx.app,
        "post",
        "/v1/query",
        Some(ACME),
        Some(r#"{"sql": "SELECT repeat('ab', 3) AS r, lpad('7', 3, '0') AS l"}"#),
    )
    .await;
    assert_eq!(
        a.body["rows"],
        json!([{"r": "ababab", "l": "007"}]),
        "{}",
        a.text
    );
}

/// A query that runs far longer than any deadline in these tests.
const SLOW_SQL: &str = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 1000000000) SELECT count(*) FROM t";

#[tokio::test]
async fn limits_answer_413_408_and_503_as_problems() {
    let fx = fixture_with(tokens(), |c| c.http.max_body_bytes = 1000);
    let big = format!(
        r#"{{"unit_cost_usd": 0.1, "cost_tags": {{"x": "{}"}}}}"#,
        "a".repeat(2000)
    );
    let a = gate(&fx.app, ACME, &big).await;
    assert_problem(&a, StatusCode::PAYLOAD_TOO_LARGE);

    let slow = json!({"sql": SLOW_SQL}).to_string();
    // The query's own deadline, then the whole request's.
    type Tweak = fn(&mut Config);
    let deadlines: [(Tweak, &str); 2] = [
        (|c| c.http.query_timeout_ms = 200, "query_timeout_ms"),
        (|c| c.http.request_timeout_ms = 200, "request_timeout_ms"),
    ];
    for (tweak, named) in deadlines {
        let fx = fixture_with(tokens(), tweak);
        let a = call(&fx.app, "post", "/v1/query", Some(ACME), Some(&slow)).await;
        assert_problem(&a, StatusCode::REQUEST_TIMEOUT);
        assert!(
            a.body["detail"].as_str().unwrap().contains(named),
            "{}",
            a.text
        );
    }

    let fx = fixture_with(tokens(), |c| c.http.max_concurrency = 1);
    let app = fx.app.clone();
    let busy =
        tokio::spawn(async move { call(&app, "post", "/v1/query", Some(ACME), Some(&slow)).await });
    // Wait until the slow query holds the only slot.
    let mut shed = None;
    for _ in 0..100 {
        let a = call(&fx.app, "get", "/healthz", None, None).await;
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shed = shed.expect("a second request while one is in flight is shed");
    assert_problem(&shed, StatusCode::SERVICE_UNAVAILABLE);
    busy.abort();
}

#[tokio::test]
async fn not_found_and_wrong_method_are_problems() {
    let fx = fixture();
    for (uri, token, status) in [
        ("/v1/nope", None, StatusCode::NOT_FOUND),
        (
            "/v1/gates/policy-check",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "/v1/usage?from=yesterday",
            Some(ACME),
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/usage?colour=red", Some(ACME), StatusCode::BAD_REQUEST),
        ("/v1/decisions?limit=0", Some(ACME), StatusCode::BAD_REQUEST),
        (
            "/v1/decisions?cursor=zzz",
            Some(ACME),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/decisions?cursor=s%2B1o1",
            Some(ACME),
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/decisions?cursor=s1o1", Some(ACME), StatusCode::OK),
        (
            "/v1/decisions?limit=1e3",
            Some(ACME),
            StatusCode::BAD_REQUEST,
        ),
        // A page larger than http.max_page is served as that.
        (
            "/v1/decisions?limit=9007199254740992",
            Some(ACME),
            StatusCode::OK,
        ),
        ("/v1/decisions?policy=", Some(ACME), StatusCode::BAD_REQUEST),
        (
            "/v1/reports/summary?period=0000-00",
            Some(ACME),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/dashboard/summary?period=0000-01",
            Some(ACME),
            StatusCode::OK,
        ),
        (
            "/v1/pricing/quote?model=",
            Some(ACME),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let a = call(&fx.app, "get", uri, token, None).await;
        if status == StatusCode::OK {
            assert_eq!(a.status, status, "{uri}: {}", a.text);
        } else {
            assert_problem(&a, status);
        }
    }
}

#[tokio::test]
async fn decisions_paginate_without_gaps_or_repeats() {
    let fx = fixture();
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = if i % 2 == 0 { SEED_OK } else { SEED_DENY };
        let a = gate(&fx.app, ACME, body).await;
        ids.push(a.body["decision_id"].clone());
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/decisions?limit=2".to_string();
    loop {
        let p = call(&fx.app, "get", &uri, Some(ACME), None).await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.text);
        for d in p.body["decisions"].as_array().unwrap() {
            seen.push(d["decision_id"].clone());
        }
        match p.body["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/decisions?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let denies = call(
        &fx.app,
        "get",
        "/v1/decisions?verdict=deny",
        Some(ACME),
        None,
    )
    .await;
    assert_eq!(denies.body["decisions"].as_array().unwrap().len(), 2);
    let future = call(
        &fx.app,
        "get",
        "/v1/decisions?since=2999-01-01T00:00:00Z",
        Some(ACME),
        None,
    )
    .await;
    assert_eq!(future.body["decisions"], json!([]));
}

/// A tenant sees the decisions whose subject names it exactly, never
/// those of a tenant whose name starts like its own; an operator sees all.
#[tokio::test]
async fn decisions_match_the_tenant_exactly() {
    let fx = fixture();
    for (tenant, key) in [
        ("acme", "k-acme"),
        ("acme-eu", "k-eu"),
        ("acme.eu", "k-dot"),
    ] {
        let body = json!({"unit_cost_usd": 0.1, "tenant": tenant}).to_string();
        let a = call_with(
            &fx.app,
            "post",
            "/v1/gates/policy-check",
            Some(OPERATOR),
            Some(&body),
            &[("idempotency-key", key)],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
    let subjects = |token| {
        let app = fx.app.clone();
        async move {
            let a = call(&app, "get", "/v1/decisions", Some(token), None).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text);
            let mut v: Vec<String> = a.body["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["subject"].as_str().unwrap().to_string())
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(subjects(ACME).await, ["tenant=acme/request=key:k-acme"]);
    assert_eq!(subjects(OPERATOR).await.len(), 3);
}

#[tokio::test]
async fn metrics_need_an_operator_and_count_requests() {
    let fx = fixture();
    gate(&fx.app, ACME, SEED_DENY).await;
    // A tenant's admin token sees no other tenant's series: no /metrics.
    let tenant_admin = call(&fx.app, "get", "/metrics", Some(ACME_ADMIN), None).await;
    assert_problem(&tenant_admin, StatusCode::FORBIDDEN);
    // The scrape-only token reads /metrics and nothing else.
    for (method, path, _) in routes() {
        if OPEN.contains(&path) || path == "/metrics" {
            continue;
        }
        let (uri, body) = request_for(method, path, "acme");
        let a = call(&fx.app, method, &uri, Some(SCRAPER), body.as_deref()).await;
        assert_problem(&a, StatusCode::FORBIDDEN);
    }
    let op = call(&fx.app, "get", "/metrics", Some(OPERATOR), None).await;
    assert_eq!(op.status, StatusCode::OK, "{}", op.text);
    // A method no one serves is not a label value of its own.
    let odd = call(&fx.app, "frobnicate", "/healthz", None, None).await;
    assert_ne!(odd.status, StatusCode::OK);
    let m = call(&fx.app, "get", "/metrics", Some(SCRAPER), None).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    assert!(
        !m.text.contains("FROBNICATE") && !m.text.contains("frobnicate"),
        "{}",
        m.text
    );
    assert!(m.content_type.starts_with("text/plain"));
    assert!(m.text.contains(r#"tollgate_http_requests_total{method="POST",route="/v1/gates/policy-check",status="200"} 1"#), "{}", m.text);
    assert!(
        m.text
            .contains(r#"tollgate_decisions_total{policy="gate",verdict="deny"} 1"#),
        "{}",
        m.text
    );
    assert!(m
        .text
        .contains("tollgate_events_total{kind=\"inference\",outcome=\"accepted\"} 0"));
    assert!(m
        .text
        .contains("# TYPE tollgate_http_request_duration_seconds histogram"));
}

#[tokio::test]
async fn readyz_reports_each_check() {
    let fx = fixture();
    let a = call(&fx.app, "get", "/readyz", None, None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.body["checks"]["pipeline_running"], json!(false));
    let h = &fx.state.telemetry.live.health;
    // Two workers: ready only once both are in their poll loops (the
    // second may have no partition: one too many for them is no fault).
    h.set_workers(2);
    h.report(0, 3, true);
    h.broker_up
        .store(true, std::sync::atomic::Ordering::Relaxed);
    h.stats_at_ms.store(1, std::sync::atomic::Ordering::Relaxed);
    h.set_lag(0, BTreeMap::from([(("t".to_string(), 0), 5)]));
    let a = call(&fx.app, "get", "/readyz", None, None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert_eq!(a.body["checks"]["pipeline_running"], json!(false));
    h.report(1, 0, true);
    let a = call(&fx.app, "get", "/readyz", None, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["assigned_partitions"], json!(3));
    h.set_lag(1, BTreeMap::from([(("t".to_string(), 1), 1_000_000)]));
    let a = call(&fx.app, "get", "/readyz", None, None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.body["checks"]["lag_under_bound"], json!(false));
}

/// The fixture's router served on a loopback port.
async fn serving(
    fx: &Fx,
    limits: ServeLimits,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(
        listener,
        fx.app.clone(),
        std::future::pending(),
        limits,
    ));
    (addr, server)
}

#[tokio::test]
async fn serves_over_a_real_socket() {
    let fx = fixture();
    let (addr, server) = serving(&fx, ServeLimits::from_config(&fx.state.cfg.http)).await;
    let out = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let req = format!(
            "POST /v1/gates/policy-check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SEED_DENY}",
            SEED_DENY.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body: Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["allow"], json!(false));
    server.abort();
    drop(fx.dir);
}

/// A client that never finishes its headers is cut off, and connections
/// past the limit wait until one closes.
#[tokio::test]
async fn slow_clients_are_cut_off_and_connections_are_bounded() {
    let fx = fixture();
    let limits = ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        max_connections: 1,
    };
    let (addr, server) = serving(&fx, limits).await;
    let out = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        // The slow client holds the only connection, then is cut off.
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        // A second client waits behind it...
        let mut next = std::net::TcpStream::connect(addr).unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = Vec::new();
        let cut = slow.read_to_end(&mut buf);
        // ...and is served once the slow one is gone.
        next.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut answer = String::new();
        next.read_to_string(&mut answer).unwrap();
        (
            cut.is_ok(),
            String::from_utf8_lossy(&buf).to_string(),
            answer,
        )
    })
    .await
    .unwrap();
    let (closed, slow_got, answer) = out;
    assert!(closed, "the server closed the slow connection");
    assert!(!slow_got.contains("200 OK"), "{slow_got}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.abort();
}

#[tokio::test]
async fn the_month_ledger_is_seeded_from_the_rollup_files() {
    let fx = fixture();
    let ledger = Ledger::from_rollups(&fx.state.rollups).unwrap();
    let start = (chrono::Utc::now().timestamp_millis() - HOUR_MS) / 60_000 * 60_000;
    let month = month_start_ms(start);
    assert_eq!(ledger.month("acme", Some("ai"), month).cost_usd, 3.0);
    assert_eq!(ledger.month("acme", Some("ai"), month).events, 10);
    assert_eq!(ledger.month("globex", Some("ml"), month).cost_usd, 7.0);
    assert_eq!(ledger.month("acme", Some("ml"), month), Totals::default());
}

#[tokio::test]
async fn rules_that_cannot_be_evaluated_deny_and_are_counted() {
    let gates = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/gates");
    for f in std::fs::read_dir(&shipped).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, gates.path().join(f.file_name().unwrap())).unwrap();
    }
    // A built-in given a number: with strict built-in errors (the default)
    // the evaluation fails, and the gate must deny.
    std::fs::write(
        gates.path().join("broken.rego"),
        "package tollgate.gate\nimport rego.v1\nviolations contains {\"rule\": \"broken\", \"message\": m} if { m := trim_space(input.unit_cost_usd) }\n",
    )
    .unwrap();
    let dir = gates.path().to_path_buf();
    let fx = fixture_with(tokens(), move |c| c.gates.dir = dir);
    let a = gate(&fx.app, ACME, SEED_OK).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["allow"], false, "{}", a.text);
    assert_eq!(rule_names(&a), ["evaluation"], "{}", a.text);
    let m = call(&fx.app, "get", "/metrics", Some(SCRAPER), None).await;
    assert!(
        m.text.contains("tollgate_gate_evaluation_errors_total 1\n"),
        "{}",
        m.text
    );
    assert!(m.text.contains("tollgate_decision_log_errors_total 0\n"));
    assert!(m.text.contains("tollgate_writer_blocked_seconds_total 0\n"));
}

/// One heartbeat window of one node: `beats` heartbeats, the last at
/// `last_ms`, its worst latency and uptime.
#[allow(clippy::too_many_arguments)]
fn write_heartbeats(
    root: &std::path::Path,
    tenant: &str,
    node: &str,
    start_ms: i64,
    last_ms: i64,
    latency_ms: f64,
    uptime: f64,
    offset: i64,
) {
    let mut m = Measures {
        events: 6,
        duration_ms_sum: 6.0 * latency_ms,
        duration_ms_max: latency_ms,
        uptime_ratio_min: Some(uptime),
        last_event_ms: last_ms,
        ..Measures::default()
    };
    m.duration.add(latency_ms);
    let d = DimsRef {
        tenant,
        team: None,
        environment: None,
        project: None,
        model: None,
        region: Some("eu-west-1"),
        node_id: Some(node),
    };
    write_window(root, "heartbeat", d, m, start_ms, offset);
}

#[tokio::test]
async fn the_node_registry_scores_each_tenants_nodes_and_ranks_the_riskiest() {
    let fx = fixture();
    let root = fx.state.cfg.output.rollup_dir.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let w0 = (now - 2 * HOUR_MS) / 60_000 * 60_000;
    let w1 = w0 + 60_000;
    // acme: n-ok healthy in both windows; n-silent stops after the first
    // (50 s behind the fleet in the second window, which it is absent
    // from: its last heartbeat is in the first); n-dip reports low uptime.
    write_heartbeats(&root, "acme", "n-ok", w0, w0 + 58_000, 40.0, 1.0, 1000);
    write_heartbeats(&root, "acme", "n-ok", w1, w1 + 58_000, 45.0, 1.0, 1010);
    write_heartbeats(&root, "acme", "n-silent", w0, w0 + 50_000, 30.0, 1.0, 1020);
    write_heartbeats(&root, "acme", "n-dip", w1, w1 + 57_000, 50.0, 0.9, 1030);
    // globex: one node, silent for long, never in acme's answers.
    write_heartbeats(&root, "globex", "g-1", w0, w0 + 10_000, 5000.0, 0.5, 1040);

    let nodes = call(&fx.app, "get", "/v1/nodes", Some(ACME), None).await;
    assert_eq!(nodes.status, StatusCode::OK, "{}", nodes.text);
    let list = nodes.body["nodes"].as_array().unwrap();
    let ids: Vec<&str> = list
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n-dip", "n-ok", "n-silent"]);
    assert!(list.iter().all(|n| n["tenant"] == "acme"));
    let by = |id: &str| list.iter().find(|n| n["node_id"] == id).unwrap().clone();
    assert_eq!(by("n-ok")["reliability_score"], json!(100.0));
    assert_eq!(by("n-ok")["heartbeats"], json!(12));
    assert_eq!(by("n-ok")["avg_latency_ms"], json!(42.5));
    let silent = by("n-silent");
    assert_eq!(silent["seconds_silent"], json!(68.0), "{silent}");
    assert_eq!(silent["stale"], json!(true));
    assert_eq!(silent["reliability_score"], json!(50.0));
    assert_eq!(by("n-dip")["penalties"]["uptime"], json!(30.0));

    // Pages.
    let first = call(&fx.app, "get", "/v1/nodes?limit=2", Some(ACME), None).await;
    assert_eq!(first.body["nodes"].as_array().unwrap().len(), 2);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
    let uri = format!("/v1/nodes?limit=2&cursor={}", urlencode(&cursor));
    let second = call(&fx.app, "get", &uri, Some(ACME), None).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.body["nodes"][0]["node_id"], json!("n-silent"));
    assert_eq!(second.body["next_cursor"], Value::Null);

    // The riskiest first, under both paths.
    for path in ["/v1/nodes/risk?limit=2", "/v1/ai/nodes/risk?limit=2"] {
        let risk = call(&fx.app, "get", path, Some(ACME), None).await;
        assert_eq!(risk.status, StatusCode::OK, "{}", risk.text);
        let ids: Vec<&str> = risk.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["n-silent", "n-dip"]);
    }

    // One node, with its trend per window, newest first.
    let one = call(&fx.app, "get", "/v1/nodes/n-ok", Some(ACME), None).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    let trend = one.body["trend"].as_array().unwrap();
    assert_eq!(trend.len(), 2);
    assert_eq!(
        trend[0]["window_start"],
        json!(tollgate_decision::rfc3339_ms(w1))
    );
    assert_eq!(trend[0]["reliability_score"], json!(100.0));
    // In the window it reported in, n-silent was not behind the fleet.
    let s = call(&fx.app, "get", "/v1/nodes/n-silent", Some(ACME), None).await;
    assert_eq!(
        s.body["trend"][0]["seconds_silent"],
        json!(8.0),
        "{}",
        s.text
    );

    // globex sees its own node only; another tenant's node is not found.
    let g = call(&fx.app, "get", "/v1/nodes", Some(GLOBEX), None).await;
    let ids: Vec<&str> = g.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g-1"]);
    let other = call(&fx.app, "get", "/v1/nodes/g-1", Some(ACME), None).await;
    assert_problem(&other, StatusCode::NOT_FOUND);
    assert!(!other.text.contains("globex"), "{}", other.text);
    // A cursor is a place in the (tenant, node_id) order: any text is one.
    assert_eq!(cursor, "acme/n-ok");
    for (c, first) in [("acme", json!("n-dip")), ("zzz", Value::Null)] {
        let uri = format!("/v1/nodes?cursor={c}");
        let page = call(&fx.app, "get", &uri, Some(ACME), None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert_eq!(
            page.body["nodes"][0]["node_id"], first,
            "{c}: {}",
            page.text
        );
    }
    let bad = call(&fx.app, "get", "/v1/nodes?cursor=", Some(ACME), None).await;
    assert_problem(&bad, StatusCode::BAD_REQUEST);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn quotes_and_placements_are_priced_by_the_book_in_force() {
    let fx = fixture_with(tokens(), |cfg| {
        cfg.pricing = toml::from_str(
            r#"
[[models]]
pattern = "gpt-4o*"
input_per_1k = 0.0025
output_per_1k = 0.01
energy_wh_per_1k = 0.4
[[gpus]]
gpu_type = "h100"
price_per_hour = 4.0
watts = 700
[[regions]]
region = "eu-north-1"
carbon_intensity_g_per_kwh = 30
[[regions]]
region = "us-east-1"
carbon_intensity_g_per_kwh = 380
[[regions]]
region = "eu-west-1"
carbon_intensity_g_per_kwh = 290
"#,
        )
        .unwrap();
    });
    let q = call(
        &fx.app,
        "get",
        "/v1/pricing/quote?model=gpt-4o&input_tokens=2000&output_tokens=500&region=eu-north-1",
        Some(ACME),
        None,
    )
    .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text);
    let cost = 2.0 * 0.0025 + 0.5 * 0.01;
    assert!(
        (q.body["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12,
        "{}",
        q.text
    );
    assert!((q.body["energy_wh"].as_f64().unwrap() - 2.5 * 0.4).abs() < 1e-12);
    assert!((q.body["carbon_g"].as_f64().unwrap() - 2.5 * 0.4 / 1000.0 * 30.0).abs() < 1e-12);
    assert_eq!(q.body["priced_by"]["pattern"], json!("gpt-4o*"));
    let unknown = call(
        &fx.app,
        "get",
        "/v1/pricing/quote?model=mystery&input_tokens=1",
        Some(ACME),
        None,
    )
    .await;
    assert_eq!(
        unknown.body["priced_by"],
        json!("defaults"),
        "{}",
        unknown.text
    );
    for bad in [
        "/v1/pricing/quote",
        "/v1/pricing/quote?model=gpt-4o&input_tokens=1&gpu_type=h100&hours=1",
        "/v1/pricing/quote?gpu_type=h100&hours=-1",
        "/v1/pricing/quote?model=gpt-4o&input_tokens=1&date=2026-13-01",
    ] {
        let a = call(&fx.app, "get", bad, Some(ACME), None).await;
        assert_problem(&a, StatusCode::BAD_REQUEST);
    }

    // Eight H100 hours: the same price everywhere, so carbon decides.
    let body = r#"{"gpu_type": "h100", "gpu_count": 2, "hours": 4, "objective": "cost"}"#;
    let p = call(
        &fx.app,
        "post",
        "/v1/placement/suggest",
        Some(ACME),
        Some(body),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    let regions: Vec<&str> = p.body["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["region"].as_str().unwrap())
        .collect();
    assert_eq!(
        regions,
        ["eu-north-1", "eu-west-1", "us-east-1"],
        "{}",
        p.text
    );
    assert_eq!(p.body["suggestions"][0]["cost_usd"], json!(32.0));
    // Balanced: the cleanest region scores 1.0 (best on both).
    let body =
        r#"{"gpu_type": "h100", "hours": 1, "regions": ["us-east-1", "eu-north-1"], "limit": 1}"#;
    let p = call(
        &fx.app,
        "post",
        "/v1/placement/suggest",
        Some(ACME),
        Some(body),
    )
    .await;
    assert_eq!(p.body["objective"], json!("balanced"));
    assert_eq!(p.body["suggestions"].as_array().unwrap().len(), 1);
    assert_eq!(p.body["suggestions"][0]["region"], json!("eu-north-1"));
    assert_eq!(p.body["suggestions"][0]["score"], json!(1.0));

    // A region where all of the caller's nodes are unhealthy goes last,
    // whatever its carbon; another tenant's nodes do not count.
    let root = fx.state.cfg.output.rollup_dir.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let w = (now - HOUR_MS) / 60_000 * 60_000;
    write_heartbeats(&root, "acme", "n-bad", w, w + 58_000, 5000.0, 0.5, 2000);
    let body = r#"{"gpu_type": "h100", "hours": 1, "objective": "carbon", "regions": ["eu-west-1", "us-east-1"]}"#;
    let p = call(
        &fx.app,
        "post",
        "/v1/placement/suggest",
        Some(ACME),
        Some(body),
    )
    .await;
    let first = &p.body["suggestions"][0];
    assert_eq!(first["region"], json!("us-east-1"), "{}", p.text);
    assert_eq!(p.body["suggestions"][1]["healthy_nodes"], json!(0));
    assert_eq!(p.body["suggestions"][1]["nodes"], json!(1));
    let g = call(
        &fx.app,
        "post",
        "/v1/placement/suggest",
        Some(GLOBEX),
        Some(body),
    )
    .await;
    assert_eq!(
        g.body["suggestions"][0]["region"],
        json!("eu-west-1"),
        "{}",
        g.text
    );
    let bad = call(
        &fx.app,
        "post",
        "/v1/placement/suggest",
        Some(ACME),
        Some(r#"{"objective": "speed", "gpu_type": "h100", "hours": 1}"#),
    )
    .await;
    assert!(bad.status.is_client_error(), "{}", bad.text);
}

#[tokio::test]
async fn a_report_is_the_callers_period_in_every_form() {
    let fx = fixture();
    let root = fx.state.cfg.output.rollup_dir.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let w = (now - 2 * HOUR_MS) / 60_000 * 60_000;
    let period = chrono::DateTime::from_timestamp_millis(w)
        .unwrap()
        .format("%Y-%m")
        .to_string();
    write_rollup(&root, "acme", "search", 12.5, w, 100);
    write_rollup(&root, "acme", "ads", 2.5, w, 110);
    write_rollup(&root, "globex", "globex-only-team", 99.0, w, 200);
    for (token, tenant, other) in [(ACME, "acme", "globex"), (GLOBEX, "globex", "acme")] {
        let uri = format!("/v1/reports/summary?period={period}");
        let j = call(&fx.app, "get", &uri, Some(token), None).await;
        assert_eq!(j.status, StatusCode::OK, "{}", j.text);
        assert_eq!(j.body["tenant"], json!(tenant));
        // The same total as the usage summary of the period.
        let m = call(
            &fx.app,
            "get",
            &format!("/v1/metrics?period={period}"),
            Some(token),
            None,
        )
        .await;
        let cost = m.body["total"]["cost_usd"].as_f64().unwrap();
        assert!(cost >= 15.0, "{}", m.text);
        assert_eq!(j.body["total"]["cost_usd"], json!(cost), "{}", j.text);
        assert!(
            j.body["decisions"].is_object(),
            "this token reads decisions"
        );
        assert_eq!(j.body["budget_usd"], json!(10000.0));
        let d = call(
            &fx.app,
            "get",
            &format!("/v1/dashboard/summary?period={period}"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(d.status, StatusCode::OK, "{}", d.text);
        assert_eq!(d.body["total"], j.body["total"]);
        for (format, content_type, start) in [
            ("md", "text/markdown", "# Tollgate report"),
            ("html", "text/html", "<!doctype html>"),
        ] {
            let a = call(
                &fx.app,
                "get",
                &format!("{uri}&format={format}"),
                Some(token),
                None,
            )
            .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text);
            assert!(
                a.content_type.starts_with(content_type),
                "{}",
                a.content_type
            );
            assert!(a.text.starts_with(start), "{}", a.text);
            assert!(
                a.text.contains(tenant) && !a.text.contains(other),
                "{format}: {}",
                a.text
            );
        }
        for text in [&j.text, &d.text] {
            assert!(!text.contains(other), "{text}");
        }
    }
    // Without decisions.read the report says so instead of listing them.
    let a = call(
        &fx.app,
        "get",
        &format!("/v1/reports/summary?period={period}"),
        Some(ACME_USAGE),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["decisions"], Value::Null);
    assert!(a.body["total"]["cost_usd"].as_f64().unwrap() >= 15.0);
    let md = call(
        &fx.app,
        "get",
        &format!("/v1/reports/summary?period={period}&format=md"),
        Some(ACME_USAGE),
        None,
    )
    .await;
    assert!(
        md.text.contains("needs the `decisions.read` scope"),
        "{}",
        md.text
    );
    // Refusals name what is wrong.
    for (uri, status, needle) in [
        (
            "/v1/reports/summary?format=pdf",
            StatusCode::BAD_REQUEST,
            "format",
        ),
        (
            "/v1/reports/summary?period=2026-13",
            StatusCode::BAD_REQUEST,
            "2026-13",
        ),
        (
            "/v1/dashboard/summary?format=md",
            StatusCode::BAD_REQUEST,
            "format",
        ),
        (
            "/v1/reports/summary?colour=red",
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            "/v1/reports/summary?tenant=globex",
            StatusCode::FORBIDDEN,
            "tenant",
        ),
    ] {
        let a = call(&fx.app, "get", uri, Some(ACME), None).await;
        assert_problem(&a, status);
        assert!(a.text.contains(needle), "{uri}: {}", a.text);
    }
}
