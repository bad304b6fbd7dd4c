use super::*;
use tollgate_event::{decode, Kind, Limits};

fn book() -> PriceBook {
    toml::from_str(
        r#"
pue = 1.5
default_gpu_watts = 300
[[models]]
pattern = "gpt-4o*"
input_per_1k = 0.0025
output_per_1k = 0.01
cached_input_per_1k = 0.00125
energy_wh_per_1k = 0.4
[[models]]
pattern = "gpt-4o*"
effective_from = "2024-06-01"
input_per_1k = 0.002
output_per_1k = 0.008
[[gpus]]
gpu_type = "H100"
price_per_hour = 4.0
watts = 700
[[regions]]
region = "eu-north-1"
carbon_intensity_g_per_kwh = 30
"#,
    )
    .expect("book")
}

fn event(kind: Kind, json: &str) -> tollgate_event::Event<'_> {
    decode(json.as_bytes(), kind, &Limits::default()).expect("valid event")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn inference_cost_uses_cached_price_and_effective_dates() {
    let mut en = Enricher::new(book(), Defaults::default()).expect("enricher");
    // 2024-01-01: before the newer entry takes effect.
    let old = event(
        Kind::Inference,
        r#"{"event_id":"a","ts":"2024-01-01T00:00:00Z","tenant":"t","model":"gpt-4o-mini","input_tokens":2000,"cached_input_tokens":1000,"output_tokens":500,"duration_ms":10,"region":"eu-north-1"}"#,
    );
    let r = en.enrich(&old);
    let cost = 1.0 * 0.0025 + 1.0 * 0.00125 + 0.5 * 0.01;
    assert!(close(r.cost_usd, cost), "{r:?}");
    assert!(close(r.unit_cost_usd, cost));
    assert!(close(r.energy_wh, 2.5 * 0.4));
    assert!(close(r.carbon_g, 2.5 * 0.4 / 1000.0 * 30.0));
    assert_eq!(r.duration_ms, Some(10.0));
    // After 2024-06-01 the newer entry applies; its cached price defaults to its input price.
    let new = event(
        Kind::Inference,
        r#"{"event_id":"b","ts":"2024-07-01T00:00:00Z","tenant":"t","model":"gpt-4o","input_tokens":2000,"cached_input_tokens":1000,"output_tokens":500,"duration_ms":10}"#,
    );
    let r = en.enrich(&new);
    assert!(close(r.cost_usd, 2.0 * 0.002 + 0.5 * 0.008), "{r:?}");
    // Energy falls back to the default, intensity to the default region value.
    assert!(close(r.carbon_g, 2.5 * 0.3 / 1000.0 * 400.0));
}

#[test]
fn unknown_model_uses_env_defaults() {
    let env = |k: &str| match k {
        "COST_PER_1K_INPUT_TOKENS" => Some("0.01".to_string()),
        "COST_PER_1K_OUTPUT_TOKENS" => Some("0.02".to_string()),
        "CARBON_INTENSITY_G_PER_KWH" => Some("100".to_string()),
        _ => None,
    };
    let d = Defaults::from_lookup(env).expect("defaults");
    let mut en = Enricher::new(book(), d).expect("enricher");
    let e = event(
        Kind::Inference,
        r#"{"event_id":"a","ts":1,"tenant":"t","model":"mystery","input_tokens":1000,"output_tokens":1000,"duration_ms":1}"#,
    );
    let r = en.enrich(&e);
    assert!(close(r.cost_usd, 0.03), "{r:?}");
    assert!(close(r.carbon_g, 2.0 * 0.3 / 1000.0 * 100.0));
}

#[test]
fn seed_defaults_match_the_issue() {
    let d = Defaults::from_lookup(|_| None).expect("defaults");
    assert_eq!(
        (
            d.cost_per_1k_input_tokens,
            d.cost_per_1k_output_tokens,
            d.compute_cost_per_hour
        ),
        (0.001, 0.002, 1.0)
    );
}

#[test]
fn malformed_env_is_an_error() {
    let e = Defaults::from_lookup(|k| (k == "COMPUTE_COST_PER_HOUR").then(|| "cheap".to_string()))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "environment variable COMPUTE_COST_PER_HOUR=\"cheap\" is not a non-negative number"
    );
    assert!(
        Defaults::from_lookup(|k| (k == "COMPUTE_COST_PER_HOUR").then(|| "-1".to_string()))
            .is_err()
    );
}

#[test]
fn training_cost_energy_and_carbon() {
    let mut en = Enricher::new(book(), Defaults::default()).expect("enricher");
    let e = event(
        Kind::Training,
        r#"{"event_id":"t","ts":1,"tenant":"t","model":"llama","gpu_type":"h100","gpu_count":8,"duration_hours":2,"gpu_utilization":0.5,"region":"eu-north-1"}"#,
    );
    let r = en.enrich(&e);
    assert!(close(r.gpu_hours, 16.0));
    assert!(close(r.cost_usd, 64.0));
    assert!(close(r.unit_cost_usd, 4.0));
    assert!(close(r.energy_wh, 16.0 * 700.0 * 0.5 * 1.5));
    assert!(close(r.carbon_g, 16.0 * 700.0 * 0.5 * 1.5 / 1000.0 * 30.0));
    // Unknown GPU: COMPUTE_COST_PER_HOUR and the book's default watts; utilization 1.
    let u = event(
        Kind::Training,
        r#"{"event_id":"u","ts":1,"tenant":"t","model":"llama","gpu_type":"tpu","gpu_count":1,"duration_hours":1}"#,
    );
    let r = en.enrich(&u);
    assert!(close(r.cost_usd, 1.0));
    assert!(close(r.energy_wh, 300.0 * 1.5));
}

#[test]
fn heartbeat_carries_latency_and_no_cost() {
    let mut en = Enricher::new(book(), Defaults::default()).expect("enricher");
    let e = event(
        Kind::Heartbeat,
        r#"{"event_id":"h","ts":1,"tenant":"t","node_id":"n","region":"r","latency_ms":42}"#,
    );
    let r = en.enrich(&e);
    assert_eq!(
        r,
        Enriched {
            duration_ms: Some(42.0),
            ..Enriched::default()
        }
    );
}

#[test]
fn glob_patterns() {
    assert!(glob_match("gpt-4o*", "gpt-4o-mini"));
    assert!(glob_match("*", "x"));
    assert!(glob_match("claude-*-sonnet", "claude-3-5-sonnet"));
    assert!(!glob_match("claude-*-sonnet", "claude-3-opus"));
    assert!(glob_match("exact", "exact"));
    assert!(!glob_match("exact", "exactly"));
    assert!(glob_match("a*a", "aa"));
    assert!(!glob_match("a*a", "a"));
}

#[test]
fn invalid_books_are_rejected_with_the_entry_named() {
    let mut b = book();
    b.models[0].input_per_1k = -1.0;
    let e = Enricher::new(b, Defaults::default()).unwrap_err();
    assert!(e.to_string().contains("gpt-4o*"), "{e}");
    let mut b = book();
    b.models[1].effective_from = Some("June".into());
    assert!(Enricher::new(b, Defaults::default()).is_err());
}

#[test]
fn the_most_specific_pattern_wins_over_a_newer_generic_one() {
    let mut b = book();
    b.models.push(ModelPrice {
        pattern: "gpt-4o-mini*".into(),
        effective_from: Some("2023-01-01".into()),
        effective_to: None,
        input_per_1k: 0.0001,
        output_per_1k: 0.0002,
        cached_input_per_1k: None,
        cache_write_per_1k: None,
        reasoning_per_1k: None,
        energy_wh_per_1k: None,
        tiers: vec![],
    });
    let mut en = Enricher::new(b, Defaults::default()).expect("enricher");
    let e = event(
        Kind::Inference,
        r#"{"event_id":"a","ts":"2025-01-01T00:00:00Z","tenant":"t","model":"gpt-4o-mini","input_tokens":1000,"output_tokens":1000,"duration_ms":1}"#,
    );
    assert!(close(en.enrich(&e).cost_usd, 0.0003));
}

#[test]
fn an_entry_ends_at_its_effective_to_and_the_one_in_force_is_named() {
    let mut b = book();
    // The newer price ends on 2025-01-01; the older one has no end, so it
    // is in force again after that (a promotion that ran out).
    b.models[1].effective_to = Some("2025-01-01".into());
    let mut en = Enricher::new(b.clone(), Defaults::default()).expect("enricher");
    let at = |d: &str| parse_date_ms(d).expect("date");
    assert_eq!(
        en.model_entry("gpt-4o", at("2024-05-31")),
        Some(&b.models[0])
    );
    assert_eq!(
        en.model_entry("gpt-4o", at("2024-06-01")),
        Some(&b.models[1])
    );
    assert_eq!(
        en.model_entry("gpt-4o", at("2024-12-31")),
        Some(&b.models[1])
    );
    assert_eq!(
        en.model_entry("gpt-4o", at("2025-01-01")),
        Some(&b.models[0])
    );
    assert_eq!(
        en.model_entry("claude-x", at("2025-01-01")),
        None,
        "the defaults"
    );
    // With an end on the only entry, the defaults price what follows it.
    let mut only = book();
    only.models.truncate(1);
    only.models[0].effective_to = Some("2024-03-01".into());
    let mut en = Enricher::new(only, Defaults::default()).expect("enricher");
    assert!(en.model_entry("gpt-4o", at("2024-02-29")).is_some());
    assert_eq!(en.model_entry("gpt-4o", at("2024-03-01")), None);
    let e = event(
        Kind::Inference,
        r#"{"event_id":"a","ts":"2024-03-02T00:00:00Z","tenant":"t","model":"gpt-4o","input_tokens":1000,"output_tokens":1000,"duration_ms":1}"#,
    );
    let d = Defaults::default();
    assert!(close(
        en.enrich(&e).cost_usd,
        d.cost_per_1k_input_tokens + d.cost_per_1k_output_tokens
    ));

    let mut bad = book();
    bad.models[1].effective_to = Some("2024-06-01".into());
    let err = Enricher::new(bad, Defaults::default()).expect_err("an empty range");
    assert!(
        err.to_string()
            .contains("effective_to must be after effective_from"),
        "{err}"
    );
}

#[test]
fn a_replaced_shared_book_is_taken_up_at_the_next_refresh() {
    let shared = SharedBook::default();
    let mut en = Enricher::new(book(), Defaults::default()).expect("enricher");
    let e = event(
        Kind::Inference,
        r#"{"event_id":"a","ts":"2025-01-01T00:00:00Z","tenant":"t","model":"gpt-4o","input_tokens":1000,"output_tokens":0,"duration_ms":1}"#,
    );
    en.refresh(&shared);
    assert!(close(en.enrich(&e).cost_usd, 0.002), "nothing replaced yet");
    let mut dearer = book();
    dearer.models[1].input_per_1k = 0.02;
    assert_eq!(shared.replace(dearer), 1);
    assert!(
        close(en.enrich(&e).cost_usd, 0.002),
        "not before the refresh"
    );
    en.refresh(&shared);
    assert!(close(en.enrich(&e).cost_usd, 0.02));
    en.refresh(&shared);
    assert!(
        close(en.enrich(&e).cost_usd, 0.02),
        "a second refresh changes nothing"
    );
}

#[test]
fn a_region_can_have_its_own_gpu_price() {
    let mut b = book();
    b.gpus.push(GpuPrice {
        gpu_type: "h100".into(),
        region: Some("eu-north-1".into()),
        price_per_hour: 3.0,
        watts: 700.0,
        embodied_g_per_hour: None,
    });
    let mut en = Enricher::new(b, Defaults::default()).expect("enricher");
    let run = |region: &str| {
        format!(
            r#"{{"event_id":"t","ts":"2025-01-01T00:00:00Z","tenant":"t","model":"m","gpu_type":"H100","gpu_count":2,"duration_hours":1.5{region}}}"#
        )
    };
    let north = run(r#","region":"eu-north-1""#);
    let east = run(r#","region":"us-east-1""#);
    let nowhere = run("");
    assert!(close(
        en.enrich(&event(Kind::Training, &north)).cost_usd,
        3.0 * 3.0
    ));
    assert!(close(
        en.enrich(&event(Kind::Training, &east)).cost_usd,
        3.0 * 4.0
    ));
    assert!(close(
        en.enrich(&event(Kind::Training, &nowhere)).cost_usd,
        3.0 * 4.0
    ));
    // The entry named is the one that priced it.
    assert_eq!(
        en.gpu_entry("H100", Some("eu-north-1"))
            .map(|g| g.price_per_hour),
        Some(3.0)
    );
    assert_eq!(
        en.gpu_entry("h100", Some("us-east-1"))
            .map(|g| g.price_per_hour),
        Some(4.0)
    );
    assert_eq!(en.gpu_entry("tpu", None), None);
}

#[test]
fn a_billed_cost_on_the_event_wins_over_the_book() {
    let mut en = Enricher::new(book(), Defaults::default()).expect("enricher");
    let e = event(
        Kind::Inference,
        r#"{"event_id":"a","ts":"2025-01-01T00:00:00Z","tenant":"t","model":"gpt-4o","input_tokens":1000,"output_tokens":1000,"duration_ms":1,"cost_usd":0.5,"region":"eu-north-1"}"#,
    );
    let r = en.enrich(&e);
    assert!(
        close(r.cost_usd, 0.5) && close(r.unit_cost_usd, 0.5),
        "{r:?}"
    );
    // Energy and carbon still come from the book (the 2024-06-01 entry has
    // no energy figure: the default's).
    assert!(close(
        r.energy_wh,
        2.0 * Defaults::default().energy_wh_per_1k_tokens
    ));
    let t = event(
        Kind::Training,
        r#"{"event_id":"t","ts":"2025-01-01T00:00:00Z","tenant":"t","model":"m","gpu_type":"h100","gpu_count":2,"duration_hours":1,"cost_usd":5}"#,
    );
    let r = en.enrich(&t);
    assert!(
        close(r.cost_usd, 5.0) && close(r.unit_cost_usd, 2.5),
        "{r:?}"
    );
}

fn tiered_book() -> PriceBook {
    toml::from_str(
        r#"
embodied_g_per_gpu_hour = 20
[[models]]
pattern = "gemini-*"
input_per_1k = 0.00125
output_per_1k = 0.01
cached_input_per_1k = 0.0003
cache_write_per_1k = 0.0045
reasoning_per_1k = 0.012
[[models.tiers]]
above_input_tokens = 200000
input_per_1k = 0.0025
output_per_1k = 0.015
[[models.tiers]]
above_input_tokens = 1000000
input_per_1k = 0.005
output_per_1k = 0.03
reasoning_per_1k = 0.04
[[gpus]]
gpu_type = "H100"
price_per_hour = 4.0
watts = 700
embodied_g_per_hour = 35
[[gpus]]
gpu_type = "A100"
price_per_hour = 2.0
watts = 400
"#,
    )
    .expect("book")
}

fn request(input: u64, cached: u64, write: u64, output: u64, reasoning: u64) -> String {
    format!(
        r#"{{"event_id":"r","ts":1,"tenant":"t","model":"gemini-pro","input_tokens":{input},"cached_input_tokens":{cached},"cache_write_tokens":{write},"output_tokens":{output},"reasoning_tokens":{reasoning},"duration_ms":7200}}"#
    )
}

#[test]
fn reasoning_and_cache_write_tokens_have_their_own_prices() {
    let mut en = Enricher::new(tiered_book(), Defaults::default()).expect("enricher");
    let text = request(10_000, 2_000, 3_000, 4_000, 1_000);
    let r = en.enrich(&event(Kind::Inference, &text));
    // 5k plain input, 2k cached, 3k written, 3k plain output, 1k reasoning.
    let cost = 5.0 * 0.00125 + 2.0 * 0.0003 + 3.0 * 0.0045 + 3.0 * 0.01 + 1.0 * 0.012;
    assert!(close(r.cost_usd, cost), "{r:?} vs {cost}");
    // Without their own prices they cost what input and output tokens do.
    let mut plain = Enricher::new(book(), Defaults::default()).expect("enricher");
    let text = r#"{"event_id":"p","ts":"2024-01-01T00:00:00Z","tenant":"t","model":"gpt-4o","input_tokens":2000,"cache_write_tokens":1000,"output_tokens":1000,"reasoning_tokens":600,"duration_ms":1}"#;
    let r = plain.enrich(&event(Kind::Inference, text));
    assert!(close(r.cost_usd, 2.0 * 0.0025 + 1.0 * 0.01), "{r:?}");
}

#[test]
fn a_request_above_a_tier_is_priced_all_at_the_highest_tier_it_passes() {
    let mut en = Enricher::new(tiered_book(), Defaults::default()).expect("enricher");
    let cost = |en: &mut Enricher, input: u64| {
        en.enrich(&event(Kind::Inference, &request(input, 0, 0, 1_000, 0)))
            .cost_usd
    };
    // At the threshold: the base rates.
    assert!(close(cost(&mut en, 200_000), 200.0 * 0.00125 + 0.01));
    // Above it: every token at the tier's rates.
    assert!(close(cost(&mut en, 200_001), 200.001 * 0.0025 + 0.015));
    assert!(close(cost(&mut en, 1_500_000), 1500.0 * 0.005 + 0.03));
    // A tier's absent prices follow its own input and output prices.
    let r = en.enrich(&event(
        Kind::Inference,
        &request(300_000, 100_000, 50_000, 2_000, 1_000),
    ));
    let expect = (150.0 + 100.0 + 50.0) * 0.0025 + 1.0 * 0.015 + 1.0 * 0.015;
    assert!(close(r.cost_usd, expect), "{r:?} vs {expect}");
    let entry = en.model_entry("gemini-pro", 1).expect("entry").clone();
    assert_eq!(Enricher::tier(&entry, 200_000), None);
    assert_eq!(Enricher::tier(&entry, 1_000_001), Some(1));
}

#[test]
fn embodied_emissions_follow_gpu_hours() {
    let mut en = Enricher::new(tiered_book(), Defaults::default()).expect("enricher");
    // Inference: one GPU for the request's 7.2 s, at the book's figure.
    let r = en.enrich(&event(Kind::Inference, &request(10, 0, 0, 10, 0)));
    assert!(close(r.embodied_g, 0.002 * 20.0), "{r:?}");
    // Training: the GPU type's own figure, else the book's.
    for (gpu, per_hour) in [("H100", 35.0), ("A100", 20.0)] {
        let text = format!(
            r#"{{"event_id":"t","ts":1,"tenant":"t","model":"m","gpu_type":"{gpu}","gpu_count":8,"duration_hours":0.5}}"#
        );
        let r = en.enrich(&event(Kind::Training, &text));
        assert!(close(r.embodied_g, 4.0 * per_hour), "{gpu}: {r:?}");
    }
    // Not configured: not counted.
    let mut none = Enricher::new(book(), Defaults::default()).expect("enricher");
    let r = none.enrich(&event(Kind::Inference, &request(10, 0, 0, 10, 0)));
    assert_eq!(r.embodied_g, 0.0);
}

#[test]
fn bad_tiers_and_embodied_figures_are_refused() {
    let base = "[[models]]\npattern = \"m\"\ninput_per_1k = 1\noutput_per_1k = 1\n";
    for (extra, want) in [
        (
            "[[models.tiers]]\nabove_input_tokens = 0\ninput_per_1k = 1\noutput_per_1k = 1\n",
            "at least 1",
        ),
        (
            "[[models.tiers]]\nabove_input_tokens = 5\ninput_per_1k = 1\noutput_per_1k = 1\n[[models.tiers]]\nabove_input_tokens = 5\ninput_per_1k = 2\noutput_per_1k = 2\n",
            "its own above_input_tokens",
        ),
        (
            "[[models.tiers]]\nabove_input_tokens = 5\ninput_per_1k = -1\noutput_per_1k = 1\n",
            "tiers.input_per_1k",
        ),
    ] {
        let book: PriceBook = toml::from_str(&format!("{base}{extra}")).expect("parses");
        let e = Enricher::new(book, Defaults::default()).expect_err(extra);
        assert!(e.to_string().contains(want), "{e}");
    }
    let book: PriceBook = toml::from_str("embodied_g_per_gpu_hour = -2").expect("parses");
    let e = Enricher::new(book, Defaults::default()).expect_err("negative");
    assert!(e.to_string().contains("embodied_g_per_gpu_hour"), "{e}");
}
