use super::*;
use serde_json::json;

fn modules() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/gates");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rego") {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read_to_string(&p).unwrap()));
        }
    }
    out
}

fn data() -> Value {
    json!({
        "params": {
            "unit-cost-cap": {"cap_usd": 0.5},
            "team-window-spend": {"limit_usd": 100.0},
            "team-monthly-budget": {"budget_usd": 10000.0},
            "carbon-intensity": {"max_g_per_kwh": 400.0},
            "gates": {
                "required_tags": ["team", "environment"],
                "allowed_regions": [],
                "min_test_pass_rate": 0.95,
                "max_security_findings": {"critical": 0, "high": 0}
            }
        },
        "regions": {"eu-north-1": 30.0, "us-east-1": 380.0, "ap-south-1": 700.0}
    })
}

fn engine() -> GateEngine {
    GateEngine::compile(modules(), data()).unwrap()
}

fn ctx() -> GateContext {
    GateContext {
        tenant: "acme".into(),
        team: Some("ai".into()),
        window: None,
        month: MonthSpend {
            start: "2026-11-01".into(),
            spend_usd: 0.0,
            events: 0,
        },
        as_of: "2026-11-22T10:00:00.000Z".into(),
        freshness: None,
    }
}

fn judge(e: &GateEngine, body: Value, ctx: &GateContext) -> Outcome {
    let req: GateRequest = serde_json::from_value(body).unwrap();
    req.validate().unwrap();
    e.evaluate(&gate_input(&req, ctx))
}

fn rules(o: &Outcome) -> Vec<&str> {
    o.violations.iter().map(|v| v.rule.as_str()).collect()
}

#[test]
fn seed_examples_hold() {
    let e = engine();
    let ok = judge(
        &e,
        json!({"unit_cost_usd": 0.3, "cost_tags": {"team": "ai", "environment": "dev"}}),
        &ctx(),
    );
    assert!(ok.allow, "{ok:?}");
    assert!(ok.violations.is_empty());

    let mut no_team = ctx();
    no_team.team = None;
    let denied = judge(&e, json!({"unit_cost_usd": 0.6}), &no_team);
    assert!(!denied.allow);
    assert_eq!(rules(&denied), ["required-cost-tags", "unit-cost-cap"]);
    assert_eq!(
        denied.violations[0].message,
        "missing required cost tags: team, environment"
    );
    assert_eq!(
        denied.violations[1].message,
        "unit cost 0.6 USD exceeds the cap of 0.5 USD"
    );
}

#[test]
fn blank_tag_counts_as_missing() {
    let o = judge(
        &engine(),
        json!({"unit_cost_usd": 0.1, "cost_tags": {"team": "ai", "environment": "  "}}),
        &ctx(),
    );
    assert_eq!(rules(&o), ["required-cost-tags"]);
    assert!(o.violations[0].message.ends_with(": environment"));
}

#[test]
fn carbon_from_request_or_price_book_and_suggests_cleanest() {
    let e = engine();
    let tags = json!({"team": "ai", "environment": "prod"});
    let o = judge(
        &e,
        json!({"unit_cost_usd": 0.1, "cost_tags": tags, "deployment_region": "ap-south-1"}),
        &ctx(),
    );
    assert_eq!(rules(&o), ["carbon-intensity"]);
    assert!(
        o.violations[0].message.contains("ap-south-1 runs at 700")
            && o.violations[0]
                .message
                .contains("cleanest allowed region: eu-north-1"),
        "{o:?}"
    );
    // The request's own figure wins over the price book.
    let o = judge(
        &e,
        json!({"unit_cost_usd": 0.1, "cost_tags": tags, "deployment_region": "ap-south-1",
               "carbon_intensity_g_per_kwh": 100.0}),
        &ctx(),
    );
    assert!(o.allow, "{o:?}");
    // Unknown region and no figure: nothing to judge on carbon.
    let o = judge(
        &e,
        json!({"unit_cost_usd": 0.1, "cost_tags": tags, "deployment_region": "mars-1"}),
        &ctx(),
    );
    assert!(o.allow, "{o:?}");
}

#[test]
fn allowed_regions_are_enforced_when_listed() {
    let mut d = data();
    d["params"]["gates"]["allowed_regions"] = json!(["eu-north-1"]);
    let e = GateEngine::compile(modules(), d).unwrap();
    let tags = json!({"team": "ai", "environment": "prod"});
    let o = judge(
        &e,
        json!({"unit_cost_usd": 0.1, "cost_tags": tags, "deployment_region": "us-east-1"}),
        &ctx(),
    );
    assert_eq!(rules(&o), ["region-not-allowed"]);
    let o = judge(
        &e,
        json!({"unit_cost_usd": 0.1, "cost_tags": tags, "deployment_region": "eu-north-1"}),
        &ctx(),
    );
    assert!(o.allow, "{o:?}");
}

#[test]
fn promotion_gates() {
    let e = engine();
    let tags = json!({"team": "ai", "environment": "prod"});
    let o = judge(
        &e,
        json!({"unit_cost_usd": 0.1, "cost_tags": tags, "test_pass_rate": 0.9,
               "security_scan": {"critical": 1, "high": 0, "medium": 7}}),
        &ctx(),
    );
    assert_eq!(rules(&o), ["security-scan", "test-pass-rate"]);
    assert_eq!(
        o.violations[0].message,
        "1 critical security finding(s), at most 0 allowed"
    );
    let o = judge(
        &e,
        json!({"unit_cost_usd": 0.1, "cost_tags": tags, "test_pass_rate": 0.99,
               "security_scan": {"medium": 7, "low": 3}}),
        &ctx(),
    );
    assert!(o.allow, "{o:?}");
}

#[test]
fn live_spend_and_projection_against_limits() {
    let e = engine();
    let tags = json!({"team": "ai", "environment": "prod"});
    let mut c = ctx();
    c.window = Some(WindowSpend {
        start: "2026-11-22T09:59:00.000Z".into(),
        end: "2026-11-22T10:00:00.000Z".into(),
        spend_usd: 90.0,
        events: 1000,
    });
    c.month.spend_usd = 9_995.0;
    let under = judge(&e, json!({"unit_cost_usd": 0.1, "cost_tags": tags}), &c);
    assert!(under.allow, "{under:?}");
    let over = judge(
        &e,
        json!({"unit_cost_usd": 0.1, "cost_tags": tags, "projected_spend_usd": 20.0}),
        &c,
    );
    assert_eq!(rules(&over), ["team-monthly-budget", "team-window-spend"]);
    assert_eq!(
        over.violations[1].message,
        "team ai: 90.00 USD spent in the current window plus 20.00 USD projected exceeds the window limit of 100.00 USD"
    );
}

#[test]
fn a_missing_threshold_denies() {
    let mut d = data();
    d["params"]["unit-cost-cap"] = json!({});
    let e = GateEngine::compile(modules(), d).unwrap();
    let o = judge(
        &e,
        json!({"unit_cost_usd": 0.3, "cost_tags": {"team": "ai", "environment": "dev"}}),
        &ctx(),
    );
    assert!(!o.allow);
    assert_eq!(rules(&o), ["configuration"]);
    assert!(o.violations[0]
        .message
        .contains("\"unit-cost-cap\"].cap_usd"));
    // Found once, at load.
    assert_eq!(e.misconfigured().len(), 1);
    assert!(engine().misconfigured().is_empty());
}

#[test]
fn misconfigured_is_optional_and_checked_at_load() {
    // Rules without a `misconfigured` set load and judge as before.
    let only_cost: Vec<_> = modules()
        .into_iter()
        .filter(|(n, _)| n == "cost.rego")
        .collect();
    let e = GateEngine::compile(only_cost, data()).unwrap();
    assert!(e.misconfigured().is_empty());
    let o = judge(&e, json!({"unit_cost_usd": 0.6}), &ctx());
    assert_eq!(rules(&o), ["unit-cost-cap"]);
    // A malformed member stops the load instead of being ignored.
    let err = load_error_with(
        "odd.rego",
        "package tollgate.gate\nimport rego.v1\nmisconfigured contains \"just text\"",
    );
    assert!(err.contains("misconfigured"), "{err}");
}

/// The error of loading the shipped modules plus `name` with `source`.
fn load_error_with(name: &str, source: &str) -> String {
    let mut m = modules();
    m.push((name.into(), source.into()));
    GateEngine::compile(m, data()).unwrap_err().to_string()
}

#[test]
fn a_broken_module_is_named() {
    let err = load_error_with(
        "broken.rego",
        "package tollgate.gate\nviolations contains {",
    );
    assert!(err.starts_with("gate module broken.rego:"), "{err}");
    assert!(matches!(
        GateEngine::compile(Vec::new(), data()),
        Err(GateError::NoModules)
    ));
}

#[test]
fn a_malformed_violation_fails_closed() {
    let m = vec![(
        "odd.rego".into(),
        "package tollgate.gate\nimport rego.v1\nviolations contains 42 if true\n".into(),
    )];
    let e = GateEngine::compile(m, data()).unwrap();
    let o = judge(&e, json!({"unit_cost_usd": 0.1}), &ctx());
    assert!(!o.allow);
    assert_eq!(rules(&o), ["evaluation"]);
    assert!(o.violations[0].message.contains("got 42"), "{o:?}");
}

#[test]
fn a_runtime_error_fails_closed() {
    let m = vec![(
        "div.rego".into(),
        "package tollgate.gate\nimport rego.v1\nviolations contains {\"rule\": \"x\", \"message\": m} if { m := sprintf(\"%v\", [1 / input.zero]) }\n".into(),
    )];
    let e = GateEngine::compile(m, data()).unwrap();
    let input = json!({"unit_cost_usd": 0.1, "zero": 0});
    let o = e.evaluate(&input);
    assert!(!o.allow, "{o:?}");
}

#[test]
fn revision_follows_rules_and_thresholds() {
    let a = engine();
    let b = engine();
    assert_eq!(a.revision(), b.revision());
    let mut d = data();
    d["params"]["unit-cost-cap"]["cap_usd"] = json!(0.4);
    let c = GateEngine::compile(modules(), d).unwrap();
    assert_ne!(a.revision(), c.revision());
}

#[test]
fn request_validation_and_strictness() {
    let bad: Result<GateRequest, _> =
        serde_json::from_value(json!({"unit_cost_usd": 0.1, "unit_cost": 0.1}));
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("unknown field `unit_cost`"));
    let missing: Result<GateRequest, _> = serde_json::from_value(json!({"cost_tags": {}}));
    assert!(missing.unwrap_err().to_string().contains("unit_cost_usd"));
    let neg: GateRequest = serde_json::from_value(json!({"unit_cost_usd": -1.0})).unwrap();
    assert!(neg.validate().unwrap_err().contains("unit_cost_usd"));
    let rate: GateRequest =
        serde_json::from_value(json!({"unit_cost_usd": 0.0, "test_pass_rate": 1.5})).unwrap();
    assert!(rate.validate().unwrap_err().contains("test_pass_rate"));
}

#[test]
fn draft_is_a_decision_with_a_stable_id_per_request_key() {
    let e = engine();
    let req: GateRequest = serde_json::from_value(json!({"unit_cost_usd": 0.6})).unwrap();
    let input = gate_input(&req, &ctx());
    let o = e.evaluate(&input);
    let d1 = draft(&e, input.clone(), &o, "k1");
    let d2 = draft(&e, input.clone(), &o, "k1");
    let d3 = draft(&e, input, &o, "k2");
    assert_eq!(d1.decision_id(), d2.decision_id());
    assert_ne!(d1.decision_id(), d3.decision_id());
    assert_eq!(d1.policy, "gate");
    assert_eq!(d1.subject, "tenant=acme/request=k1");
    assert_eq!(d1.verdict, Verdict::Deny);
    assert_eq!(d1.reasons.len(), 2);
    assert_eq!(d1.observed["unit_cost_usd"], json!(0.6));
}

const FINOPS: &str = include_str!("../../../tests/rego/finops.rego");

fn with_finops() -> GateEngine {
    let mut m = modules();
    m.push(("finops.rego".into(), FINOPS.into()));
    GateEngine::compile_packages(
        m,
        data(),
        &["tollgate.gate".to_string(), "finops".to_string()],
        true,
    )
    .unwrap()
}

#[test]
fn an_opa_style_package_denies_with_its_messages_beside_the_shipped_rules() {
    let e = with_finops();
    assert_eq!(
        e.packages(),
        &[
            GatePackage {
                name: "tollgate.gate".into(),
                has_allow: false
            },
            GatePackage {
                name: "finops".into(),
                has_allow: true
            }
        ]
    );
    let ok = json!({"unit_cost_usd": 0.01, "cost_tags": {"team": "ai", "environment": "prod"},
                    "deployment_region": "eu-north-1"});
    let o = judge(&e, ok, &ctx());
    assert!(o.allow, "{o:?}");
    let bad = json!({"unit_cost_usd": 0.07, "cost_tags": {"team": "ai"},
                     "deployment_region": "ap-south-1"});
    let o = judge(&e, bad, &ctx());
    assert!(!o.allow);
    let finops: Vec<&str> = o
        .violations
        .iter()
        .filter(|v| v.rule == "finops")
        .map(|v| v.message.as_str())
        .collect();
    assert_eq!(
        finops,
        vec![
            "missing cost tag \"environment\"",
            "region ap-south-1 is not allowed",
            "unit cost 0.07 USD is above the 0.05 USD cap",
        ]
    );
    // The shipped rules still judge the same request.
    assert!(rules(&o).contains(&"required-cost-tags"), "{o:?}");
}

#[test]
fn allow_must_be_true_when_the_package_declares_it() {
    let strict = r#"package strict
import rego.v1
default allow := false
allow if input.approved == true
deny contains "never" if false
"#;
    let mut m = modules();
    m.push(("strict.rego".into(), strict.into()));
    let e = GateEngine::compile_packages(m, data(), &["strict".to_string()], true).unwrap();
    let o = e.evaluate(&json!({"approved": false}));
    assert!(!o.allow);
    assert_eq!(
        o.violations[0].message,
        "data.strict.allow is false, not true"
    );
    assert!(e.evaluate(&json!({"approved": true})).allow);
}

#[test]
fn a_configured_package_no_module_declares_stops_the_load() {
    let err = GateEngine::compile_packages(modules(), data(), &["finops".to_string()], true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"finops\" is configured"), "{err}");
    let err = GateEngine::compile_packages(modules(), data(), &["fin-ops".to_string()], true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a package name"), "{err}");
}

#[test]
fn a_deny_member_that_is_not_a_message_denies_with_the_reason() {
    let odd = "package odd\nimport rego.v1\ndeny contains 42 if true\n";
    let mut m = modules();
    m.push(("odd.rego".into(), odd.into()));
    let e = GateEngine::compile_packages(m, data(), &["odd".to_string()], true).unwrap();
    let o = e.evaluate(&json!({}));
    assert!(!o.allow);
    assert_eq!(o.violations[0].rule, "evaluation");
    assert!(o.violations[0].message.contains("got 42"), "{o:?}");
}

#[test]
fn the_data_api_answers_inside_gate_packages_only() {
    let e = with_finops();
    let input = json!({"unit_cost_usd": 0.07, "cost_tags": {"team": "ai", "environment": "prod"}});
    assert_eq!(
        e.data(&["finops", "allow"], Some(&input)).unwrap(),
        Some(json!(false))
    );
    assert_eq!(
        e.data(&["finops", "deny"], Some(&input)).unwrap(),
        Some(json!(["unit cost 0.07 USD is above the 0.05 USD cap"]))
    );
    assert_eq!(
        e.data(&["finops", "max_unit_cost_usd"], None).unwrap(),
        Some(json!(0.05))
    );
    let whole = e.data(&["finops"], Some(&input)).unwrap().unwrap();
    assert_eq!(whole["allow"], json!(false));
    assert_eq!(e.data(&["finops", "nothing_here"], None).unwrap(), None);
    for outside in [&["tollgate", "params"][..], &["fin"], &["finopsx", "allow"]] {
        assert!(
            matches!(e.data(outside, None), Err(DataError::NotAGate(_))),
            "{outside:?}"
        );
    }
}

#[test]
fn a_kept_data_api_engine_carries_nothing_from_one_call_to_the_next() {
    let e = with_finops();
    let over = json!({"unit_cost_usd": 0.07, "cost_tags": {"team": "ai", "environment": "prod"}});
    let under = json!({"unit_cost_usd": 0.01, "cost_tags": {"team": "ai", "environment": "prod"}});
    for _ in 0..3 {
        assert_eq!(
            e.data(&["finops", "allow"], Some(&over)).unwrap(),
            Some(json!(false))
        );
        assert_eq!(
            e.data(&["finops", "allow"], Some(&under)).unwrap(),
            Some(json!(true))
        );
        // No input after an input: the rules see none (OPA's GET).
        let none = e.data(&["finops", "deny"], None).unwrap();
        assert_eq!(none, with_finops().data(&["finops", "deny"], None).unwrap());
        assert_ne!(none, e.data(&["finops", "deny"], Some(&over)).unwrap());
    }
    // A failed evaluation leaves no state behind either.
    let bad = json!({"unit_cost_usd": "not a number"});
    let _ = e.data(&["finops", "allow"], Some(&bad));
    assert_eq!(
        e.data(&["finops", "allow"], Some(&under)).unwrap(),
        Some(json!(true))
    );
}
