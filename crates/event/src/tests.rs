use super::*;

fn inf(json: &str) -> Result<Event<'_>, DecodeError> {
    decode(json.as_bytes(), Kind::Inference, &Limits::default())
}

const OK: &str = r#"{"event_id":"e1","ts":1700000000000,"tenant":"acme","tags":{"team":"ai","environment":"prod","other":"x"},"model":"gpt-4o","input_tokens":1200,"output_tokens":300,"cached_input_tokens":200,"duration_ms":812.5,"region":"eu-west-1"}"#;

#[test]
fn decodes_a_valid_inference_event_borrowing_its_strings() {
    let e = inf(OK).expect("valid");
    assert_eq!(e.kind(), Kind::Inference);
    assert_eq!(e.ts_ms, 1_700_000_000_000);
    assert_eq!(e.tags.team.as_deref(), Some("ai"));
    assert!(matches!(e.event_id, Cow::Borrowed(_)));
    assert!(matches!(e.tags.team, Some(Cow::Borrowed(_))));
    match e.body {
        Body::Inference {
            input_tokens,
            output_tokens,
            cached_input_tokens,
            duration_ms,
            ..
        } => {
            assert_eq!(
                (input_tokens, output_tokens, cached_input_tokens),
                (1200, 300, 200)
            );
            assert_eq!(duration_ms, 812.5);
        }
        other => panic!("wrong body {other:?}"),
    }
}

#[test]
fn accepts_rfc3339_and_epoch_millis() {
    let text = OK.replace("1700000000000", "\"2023-11-14T22:13:20Z\"");
    let a = inf(&text).expect("rfc3339");
    assert_eq!(a.ts_ms, 1_700_000_000_000);
    let text = OK.replace("1700000000000", "\"2023-11-14T23:13:20.250+01:00\"");
    let b = inf(&text).expect("offset");
    assert_eq!(b.ts_ms, 1_700_000_000_250);
    let bad = inf(&OK.replace("1700000000000", "\"yesterday\"")).unwrap_err();
    assert!(bad.to_string().contains("`ts`"), "{bad}");
    assert!(inf(&OK.replace("1700000000000", "-5")).is_err());
    assert!(inf(&OK.replace("1700000000000", "true")).is_err());
}

#[test]
fn accepts_otel_genai_aliases() {
    let j = r#"{"event_id":"e2","ts":1,"tenant":"t","gen_ai.request.model":"claude","gen_ai.usage.input_tokens":10,"gen_ai.usage.output_tokens":5,"duration_ms":3}"#;
    let e = inf(j).expect("aliases");
    assert_eq!(e.model(), Some("claude"));
}

#[test]
fn both_name_and_alias_is_a_duplicate() {
    let j = r#"{"event_id":"e2","ts":1,"tenant":"t","model":"a","gen_ai.request.model":"b","input_tokens":1,"output_tokens":1,"duration_ms":3}"#;
    assert!(matches!(inf(j), Err(DecodeError::Json(m)) if m.contains("duplicate")));
}

#[test]
fn rejects_negative_and_fractional_token_counts() {
    let neg = inf(&OK.replace("\"input_tokens\":1200", "\"input_tokens\":-1")).unwrap_err();
    assert_eq!(
        neg.to_string(),
        "field `input_tokens` is -1, expected a non-negative integer"
    );
    let frac = inf(&OK.replace("\"output_tokens\":300", "\"output_tokens\":1.5")).unwrap_err();
    assert!(frac.to_string().contains("output_tokens"), "{frac}");
    // An integral float is still an integer.
    assert!(inf(&OK.replace("\"output_tokens\":300", "\"output_tokens\":300.0")).is_ok());
    let text = inf(&OK.replace("\"output_tokens\":300", "\"output_tokens\":\"300\"")).unwrap_err();
    assert!(matches!(text, DecodeError::Json(_)), "{text}");
}

#[test]
fn rejects_cached_tokens_above_input() {
    let e = inf(&OK.replace(
        "\"cached_input_tokens\":200",
        "\"cached_input_tokens\":5000",
    ))
    .unwrap_err();
    assert!(e.to_string().contains("cached_input_tokens"), "{e}");
}

#[test]
fn rejects_missing_required_fields() {
    for field in [
        "event_id",
        "tenant",
        "model",
        "input_tokens",
        "output_tokens",
        "duration_ms",
        "ts",
    ] {
        let mut v: serde_json::Value = serde_json::from_str(OK).expect("json");
        v.as_object_mut().expect("object").remove(field);
        let text = v.to_string();
        assert_eq!(
            inf(&text).unwrap_err(),
            DecodeError::Missing(field),
            "{field}"
        );
    }
    let hb = r#"{"event_id":"h","ts":1,"tenant":"t","node_id":"n1"}"#;
    assert_eq!(
        decode(hb.as_bytes(), Kind::Heartbeat, &Limits::default()).unwrap_err(),
        DecodeError::Missing("region")
    );
}

#[test]
fn rejects_empty_identifiers() {
    let e = inf(&OK.replace("\"tenant\":\"acme\"", "\"tenant\":\"\"")).unwrap_err();
    assert_eq!(e.to_string(), "field `tenant` must not be empty");
}

#[test]
fn rejects_non_finite_and_out_of_range_numbers() {
    assert!(inf(&OK.replace("812.5", "1e999")).is_err());
    assert!(inf(&OK.replace("812.5", "NaN")).is_err());
    assert!(inf(&OK.replace("812.5", "-3")).is_err());
}

#[test]
fn rejects_unknown_and_mismatched_kinds() {
    let unknown = OK.replacen('{', r#"{"kind":"billing","#, 1);
    assert_eq!(
        inf(&unknown).unwrap_err(),
        DecodeError::UnknownKind("billing".into())
    );
    let other = OK.replacen('{', r#"{"kind":"training","#, 1);
    assert_eq!(
        inf(&other).unwrap_err(),
        DecodeError::KindMismatch {
            expected: Kind::Inference,
            found: Kind::Training
        }
    );
    let same = OK.replacen('{', r#"{"kind":"inference","#, 1);
    assert!(inf(&same).is_ok());
    assert_eq!(
        decode_self_described(OK.as_bytes(), &Limits::default()).unwrap_err(),
        DecodeError::Missing("kind")
    );
    assert!(decode_self_described(same.as_bytes(), &Limits::default()).is_ok());
}

#[test]
fn rejects_oversize_messages_before_parsing() {
    let limits = Limits {
        max_message_bytes: 64,
    };
    let e = decode(OK.as_bytes(), Kind::Inference, &limits).unwrap_err();
    assert!(matches!(e, DecodeError::TooLarge { max: 64, .. }));
}

#[test]
fn rejects_garbage_and_non_string_tags() {
    assert!(matches!(inf("not json"), Err(DecodeError::Json(_))));
    assert!(matches!(inf("[1,2]"), Err(DecodeError::Json(_))));
    let e = inf(&OK.replace("\"team\":\"ai\"", "\"team\":7")).unwrap_err();
    assert!(e.to_string().contains("tag `team` must be a string"), "{e}");
}

#[test]
fn decodes_training_and_heartbeat() {
    let t = r#"{"event_id":"t1","ts":5,"tenant":"t","model":"llama","gpu_type":"h100","gpu_count":8,"duration_hours":1.5,"gpu_utilization":0.7}"#;
    let e = decode(t.as_bytes(), Kind::Training, &Limits::default()).expect("training");
    assert!(matches!(e.body, Body::Training { gpu_count: 8, .. }));
    let zero = t.replace("\"gpu_count\":8", "\"gpu_count\":0");
    assert!(decode(zero.as_bytes(), Kind::Training, &Limits::default()).is_err());
    let over = t.replace("0.7", "1.7");
    assert!(decode(over.as_bytes(), Kind::Training, &Limits::default()).is_err());
    let h = r#"{"event_id":"h1","ts":5,"tenant":"t","node_id":"n1","region":"us-east-1","latency_ms":12,"uptime_ratio":0.999,"proof_ok":true}"#;
    let e = decode(h.as_bytes(), Kind::Heartbeat, &Limits::default()).expect("heartbeat");
    assert_eq!(e.kind(), Kind::Heartbeat);
    assert_eq!(e.model(), None);
}

#[test]
fn escaped_strings_are_decoded() {
    let text = OK.replace("\"e1\"", r#""e\u00e91""#);
    let e = inf(&text).expect("escaped");
    assert_eq!(e.event_id, "eé1");
}

const SEEDS: &[&str] = &[
    OK,
    r#"{"event_id":"ev-1-7","ts":1767225600130,"tenant":"tenant-1","tags":{"team":"team-3","environment":"prod"},"region":"eu-west-1","model":"gpt-4o","input_tokens":812,"cached_input_tokens":0,"output_tokens":95,"duration_ms":1203.4}"#,
    r#"{"event_id":"t1","ts":"2026-01-01T00:00:00.5Z","tenant":"t","model":"llama","gpu_type":"h100","gpu_count":8,"duration_hours":1.5e0,"gpu_utilization":0.7,"metadata":null}"#,
    r#" { "event_id" : "h1" , "ts" : 5 , "tenant" : "t" , "node_id" : "n1" , "region" : "us-east-1" , "latency_ms" : 12 , "uptime_ratio" : 0.999 , "proof_ok" : true , "extra" : -3.25E-2 } "#,
    r#"{"kind":"inference","event_id":"e2","ts":1,"tenant":"t","gen_ai.request.model":"claude","gen_ai.usage.input_tokens":10,"gen_ai.usage.output_tokens":5,"duration_ms":3,"status":null,"tags":{}}"#,
    r#"{"event_id":"x","ts":-1,"tenant":"t","tags":{"team":"","other":"v","project":"p"},"model":"m","input_tokens":-7,"output_tokens":1.0,"duration_ms":0,"unknown":false}"#,
    r#"{"event_id":"b1","ts":7,"tenant":"t","model":"gpt-4o","input_tokens":10,"output_tokens":5,"duration_ms":3,"cost_usd":0.0125}"#,
    r#"{"event_id":"r1","ts":7,"tenant":"t","model":"o3","input_tokens":300000,"cached_input_tokens":1000,"cache_write_tokens":2000,"output_tokens":50,"reasoning_tokens":40,"duration_ms":3}"#,
];

/// Mutations that keep most of the message and hit the grammar's corners.
fn mutations(seed: &str, rng: &mut u64) -> Vec<Vec<u8>> {
    let mut next = move || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    const ALPHABET: &[u8] = b"{}[]\",:\\ \t\n0123456789.eE+-ntfrua\x01\xc3\xa9";
    let base = seed.as_bytes();
    let mut out = vec![base.to_vec()];
    for _ in 0..3000 {
        let mut b = base.to_vec();
        for _ in 0..(1 + next() % 3) {
            let at = (next() as usize) % (b.len() + 1);
            match next() % 5 {
                0 if at < b.len() => {
                    b.remove(at);
                }
                1 => b.insert(at, ALPHABET[(next() as usize) % ALPHABET.len()]),
                2 if at < b.len() => b[at] = ALPHABET[(next() as usize) % ALPHABET.len()],
                3 => b.truncate(at),
                _ => {
                    // Repeat a field: `,"<key>":<value>` copied before the closing brace.
                    let find = |hay: &[u8], from: usize, pat: &[u8]| {
                        hay[from..]
                            .windows(pat.len())
                            .position(|w| w == pat)
                            .map(|p| p + from)
                    };
                    if let (Some(start), Some(close)) =
                        (find(&b, 0, b",\""), b.iter().rposition(|&c| c == b'}'))
                    {
                        let end = find(&b, start + 1, b",").unwrap_or(close).min(close);
                        if start < end {
                            let field = b[start..end].to_vec();
                            b.splice(close..close, field);
                        }
                    }
                }
            }
        }
        out.push(b);
    }
    out
}

#[test]
fn fast_reader_agrees_with_serde_json_whenever_it_answers() {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let (mut answered, mut total) = (0, 0);
    for seed in SEEDS {
        assert!(
            fast::parse(seed.as_bytes()).is_some(),
            "the common shape takes the fast path: {seed}"
        );
        for input in mutations(seed, &mut rng) {
            total += 1;
            let slow: Result<Wire<'_>, _> = serde_json::from_slice(&input);
            if let Some(fast) = fast::parse(&input) {
                answered += 1;
                match slow {
                    Ok(slow) => assert_eq!(fast, slow, "{}", String::from_utf8_lossy(&input)),
                    Err(e) => panic!(
                        "fast path accepted what serde_json rejects ({e}): {}",
                        String::from_utf8_lossy(&input)
                    ),
                }
            }
        }
    }
    assert!(
        answered > total / 10,
        "the fast path answered {answered} of {total}"
    );
}

#[test]
fn string_stop_finds_the_first_quote_backslash_or_control_byte() {
    let scalar = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
    // Fillers around the stop: ASCII, the bytes right above each stop, DEL
    // and multi-byte UTF-8 (high bits set).
    let fillers: [&[u8]; 5] = [b"a", b"#]", b" \x7f", "é".as_bytes(), "\u{20ac}".as_bytes()];
    for stop in [b'"', b'\\', 0x00, 0x1f, 0x0a] {
        for filler in fillers {
            for before in 0..20 {
                for after in 0..10 {
                    let mut b: Vec<u8> = filler.iter().copied().cycle().take(before).collect();
                    b.push(stop);
                    b.extend(filler.iter().copied().cycle().take(after));
                    b.push(b'"');
                    assert_eq!(fast::string_stop(&b), scalar(&b), "{b:?}");
                }
            }
            let none: Vec<u8> = filler.iter().copied().cycle().take(23).collect();
            assert_eq!(fast::string_stop(&none), None);
        }
    }
}

#[test]
fn decimals_read_by_the_fast_path_equal_serde_jsons() {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..20_000 {
        let int_digits = next() % 12;
        let frac_digits = 1 + next() % 17;
        let digits = |n: u64, r: u64| -> String {
            (0..n)
                .map(|k| char::from(b'0' + ((r >> (k * 3)) % 10) as u8))
                .collect()
        };
        let int = match digits(int_digits, next()).trim_start_matches('0') {
            "" => "0".to_string(),
            s => s.to_string(),
        };
        let sign = if next() % 4 == 0 { "-" } else { "" };
        let text = format!(
            r#"{{"duration_ms":{sign}{int}.{}}}"#,
            digits(frac_digits, next())
        );
        let slow: Wire<'_> = serde_json::from_str(&text).unwrap();
        let fast = fast::parse(text.as_bytes()).unwrap();
        match (fast.duration_ms, slow.duration_ms) {
            (Some(Num::F(a)), Some(Num::F(b))) => {
                assert_eq!(a.to_bits(), b.to_bits(), "{text}: {a} vs {b}")
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn tenant_and_team_names_hold_no_separator() {
    for ok in ["acme", "tenant-1", "a.b_c-d", "7"] {
        assert_eq!(check_name(ok), Ok(()), "{ok}");
    }
    let long = "a".repeat(MAX_NAME_BYTES + 1);
    for bad in [
        "",
        "acme/eu",
        "a=b",
        "a b",
        "-a",
        ".a",
        "é",
        "a\u{0}",
        long.as_str(),
    ] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    let ev = |tenant: &str, team: &str| {
        format!(
            r#"{{"event_id":"e","ts":0,"tenant":"{tenant}","tags":{{"team":"{team}"}},"model":"m","input_tokens":1,"output_tokens":1,"duration_ms":1}}"#
        )
    };
    let e = decode(
        ev("acme/eu", "ai").as_bytes(),
        Kind::Inference,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("field `tenant`"), "{e}");
    assert!(
        !e.to_string().contains("acme/eu"),
        "the name is not echoed: {e}"
    );
    let e = decode(
        ev("acme", "ai/x").as_bytes(),
        Kind::Inference,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("field `tags.team`"), "{e}");
    assert!(decode(
        ev("acme", "ai").as_bytes(),
        Kind::Inference,
        &Limits::default()
    )
    .is_ok());
}

#[test]
fn events_far_ahead_of_the_clock_are_refused() {
    let now = 1_767_225_600_000;
    assert_eq!(check_not_ahead(now + 300_000, now, 300_000), Ok(()));
    assert_eq!(check_not_ahead(now - 86_400_000, now, 300_000), Ok(()));
    let e = check_not_ahead(now * 1000, now, 300_000).unwrap_err();
    assert!(e.to_string().contains("microseconds"), "{e}");
    assert!(check_not_ahead(253_402_214_400_000, now, 300_000).is_err());
    assert!(check_not_ahead(i64::MAX, i64::MIN, 0).is_err());
}

/// Hostile input, as a property: arbitrary bytes and mutations of valid
/// events never panic; every rejection names a reason; every event that is
/// accepted holds the contract (names by the rule, counts consistent).
#[test]
fn any_input_is_an_event_that_holds_the_contract_or_a_reason() {
    let mut rng = 0x5eed_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for _ in 0..5000 {
        let len = (next() % 300) as usize;
        inputs.push((0..len).map(|_| next() as u8).collect());
    }
    let mut seed_rng = 0x0dd_u64;
    for seed in SEEDS {
        inputs.extend(mutations(seed, &mut seed_rng));
    }
    let limits = Limits::default();
    for input in &inputs {
        for kind in Kind::ALL {
            for result in [
                decode(input, kind, &limits),
                decode_self_described(input, &limits),
            ] {
                match result {
                    Ok(e) => {
                        assert_eq!(check_name(&e.tenant), Ok(()), "{input:?}");
                        if let Some(team) = &e.tags.team {
                            assert_eq!(check_name(team), Ok(()), "{input:?}");
                        }
                        assert!(!e.event_id.is_empty());
                        if let Body::Inference {
                            input_tokens,
                            cached_input_tokens,
                            duration_ms,
                            ..
                        } = e.body
                        {
                            assert!(cached_input_tokens <= input_tokens);
                            assert!(duration_ms.is_finite() && duration_ms >= 0.0);
                        }
                    }
                    Err(err) => assert!(!err.to_string().trim().is_empty(), "{input:?}"),
                }
            }
        }
    }
}

#[test]
fn a_billed_cost_on_the_event_is_kept_and_checked() {
    let billed = r#"{"event_id":"b","ts":1,"tenant":"t","model":"m","input_tokens":10,"output_tokens":5,"duration_ms":3,"cost_usd":0.0125}"#;
    match decode(billed.as_bytes(), Kind::Inference, &Limits::default())
        .expect("valid")
        .body
    {
        Body::Inference { cost_usd, .. } => assert_eq!(cost_usd, Some(0.0125)),
        other => panic!("wrong body {other:?}"),
    }
    let training = r#"{"event_id":"t","ts":1,"tenant":"t","model":"m","gpu_type":"h100","gpu_count":1,"duration_hours":1,"cost_usd":3}"#;
    match decode(training.as_bytes(), Kind::Training, &Limits::default())
        .expect("valid")
        .body
    {
        Body::Training { cost_usd, .. } => assert_eq!(cost_usd, Some(3.0)),
        other => panic!("wrong body {other:?}"),
    }
    let negative = billed.replace("0.0125", "-1");
    let e = decode(negative.as_bytes(), Kind::Inference, &Limits::default()).expect_err("refused");
    assert!(e.to_string().contains("cost_usd"), "{e}");
    let heartbeat =
        r#"{"event_id":"h","ts":1,"tenant":"t","node_id":"n","region":"r","cost_usd":1}"#;
    let e = decode(heartbeat.as_bytes(), Kind::Heartbeat, &Limits::default()).expect_err("refused");
    assert!(e.to_string().contains("heartbeats carry no cost"), "{e}");
}

#[test]
fn reasoning_and_cache_write_tokens_are_parts_of_output_and_input() {
    let text = r#"{"event_id":"r","ts":1,"tenant":"t","model":"m","input_tokens":100,"cached_input_tokens":30,"cache_write_tokens":50,"output_tokens":20,"reasoning_tokens":15,"duration_ms":3}"#;
    match decode(text.as_bytes(), Kind::Inference, &Limits::default())
        .expect("valid")
        .body
    {
        Body::Inference {
            cache_write_tokens,
            reasoning_tokens,
            ..
        } => assert_eq!((cache_write_tokens, reasoning_tokens), (50, 15)),
        other => panic!("wrong body {other:?}"),
    }
    for (from, to, field) in [
        (
            r#""cache_write_tokens":50"#,
            r#""cache_write_tokens":71"#,
            "cache_write_tokens",
        ),
        (
            r#""reasoning_tokens":15"#,
            r#""reasoning_tokens":21"#,
            "reasoning_tokens",
        ),
        (
            r#""reasoning_tokens":15"#,
            r#""reasoning_tokens":-1"#,
            "reasoning_tokens",
        ),
    ] {
        let bad = text.replace(from, to);
        let e = decode(bad.as_bytes(), Kind::Inference, &Limits::default()).expect_err(&bad);
        assert!(e.to_string().contains(field), "{e}");
    }
}

#[test]
fn a_training_event_too_large_to_price_is_refused() {
    let ok = r#"{"event_id":"t","ts":1,"tenant":"t","model":"m","gpu_type":"h100","gpu_count":8,"duration_hours":1000}"#;
    assert!(decode(ok.as_bytes(), Kind::Training, &Limits::default()).is_ok());
    let huge = ok.replace("1000", "1e300");
    let e = decode(huge.as_bytes(), Kind::Training, &Limits::default()).expect_err("refused");
    assert!(e.to_string().contains("GPU-hours"), "{e}");
}

#[test]
fn the_bounds_the_json_schemas_state_are_the_decoders() {
    // Integers up to 2^53, strings up to 256 characters (not bytes), a
    // bounded duration and bill, null for an optional field.
    let with = |field: &str, v: &str| OK.replacen('{', &format!("{{\"{field}\":{v},"), 1);
    let two53 = 1u64 << 53;
    let tokens = |n: u64| OK.replace("\"input_tokens\":1200", &format!("\"input_tokens\":{n}"));
    assert!(inf(&tokens(two53)).is_ok());
    let e = inf(&tokens(two53 + 1)).unwrap_err().to_string();
    assert!(e.contains("2^53"), "{e}");
    let long = "é".repeat(MAX_ID_CHARS);
    let id = OK.replace("\"event_id\":\"e1\"", &format!("\"event_id\":\"{long}\""));
    assert!(inf(&id).is_ok(), "256 characters of two bytes each");
    let id = OK.replace("\"event_id\":\"e1\"", &format!("\"event_id\":\"{long}é\""));
    assert!(inf(&id).unwrap_err().to_string().contains("characters"));
    let slow = OK.replace("812.5", "3.7e15");
    assert!(inf(&slow).unwrap_err().to_string().contains("duration_ms"));
    let billed = with("cost_usd", "2e15");
    assert!(inf(&billed).unwrap_err().to_string().contains("cost_usd"));
    for field in [
        "cost_usd",
        "kind",
        "status",
        "reasoning_tokens",
        "tags",
        "node_id",
    ] {
        let e = OK.replace(
            ",\"tags\":{\"team\":\"ai\",\"environment\":\"prod\",\"other\":\"x\"}",
            "",
        );
        let v = e.replacen('{', &format!("{{\"{field}\":null,"), 1);
        assert!(inf(&v).is_ok(), "{field}: null is as absent");
    }
}

#[test]
fn whole_numbers_read_as_json_schema_integers() {
    #[derive(Deserialize)]
    struct B {
        #[serde(default, deserialize_with = "whole::opt")]
        n: Option<u64>,
    }
    let n = |s: &str| serde_json::from_str::<B>(s).map(|b| b.n);
    assert_eq!(n(r#"{"n":3}"#).unwrap(), Some(3));
    assert_eq!(n(r#"{"n":3.0}"#).unwrap(), Some(3));
    assert_eq!(n(r#"{"n":null}"#).unwrap(), None);
    assert_eq!(n("{}").unwrap(), None);
    assert_eq!(n(r#"{"n":9007199254740992}"#).unwrap(), Some(1 << 53));
    for bad in [
        r#"{"n":-1}"#,
        r#"{"n":3.5}"#,
        r#"{"n":9007199254740993}"#,
        r#"{"n":"3"}"#,
    ] {
        assert!(n(bad).is_err(), "{bad}");
    }
}
