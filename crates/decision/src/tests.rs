#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

fn key(id: &str) -> Key {
    Key::new(id, format!("{id}-secret-of-enough-length")).unwrap()
}

fn draft(subject: &str, spend: f64) -> Draft {
    let mut observed = Map::new();
    observed.insert("spend_usd".into(), json!(spend));
    observed.insert("events".into(), json!(42));
    Draft {
        policy: "team-window-spend".into(),
        policy_revision: "r1".into(),
        subject: subject.into(),
        window: Some(DecisionWindow::from_millis(
            1_700_000_000_000,
            1_700_000_060_000,
            "tollgate.inference/0",
        )),
        observed,
        verdict: Verdict::Deny,
        reasons: vec![format!("team {subject} spent {spend} USD")],
    }
}

fn log(n: usize, k: &Key) -> Vec<String> {
    let mut chain = Chain::after(GENESIS_HASH);
    (0..n)
        .map(|i| {
            chain
                .seal(
                    draft(&format!("team=t{i}"), i as f64 * 0.1),
                    rfc3339_ms(1_700_000_000_000 + i as i64),
                    k,
                )
                .1
        })
        .collect()
}

/// Index of the first line the verifier rejects, if any.
fn first_bad(ring: &KeyRing, lines: &[String]) -> Option<usize> {
    let mut v = Verifier::new(ring);
    lines.iter().position(|l| v.check_line(l).is_err())
}

#[test]
fn id_depends_on_policy_revision_window_subject_only() {
    let a = draft("team=a", 1.0);
    let mut b = a.clone();
    b.observed.insert("spend_usd".into(), json!(2.0));
    b.reasons.clear();
    b.verdict = Verdict::Warn;
    assert_eq!(a.decision_id(), b.decision_id());
    for change in [
        |d: &mut Draft| d.policy.push('x'),
        |d: &mut Draft| d.policy_revision.push('x'),
        |d: &mut Draft| d.subject.push('x'),
        |d: &mut Draft| d.window = None,
    ] {
        let mut c = a.clone();
        change(&mut c);
        assert_ne!(a.decision_id(), c.decision_id());
    }
    assert_eq!(a.decision_id().len(), 32);
}

#[test]
fn sealed_records_verify_and_chain() {
    let k = key("k1");
    let ring = KeyRing::new(Some(k.clone()), vec![]).unwrap();
    let lines = log(5, &k);
    let mut v = Verifier::new(&ring);
    let mut prev = GENESIS_HASH.to_owned();
    for l in &lines {
        let d = v.check_line(l).unwrap();
        assert_eq!(d.prev_hash, prev);
        assert_eq!(d.key_id, "k1");
        prev = line_hash(l);
    }
    assert_eq!(v.last_hash(), prev);
}

#[test]
fn any_single_byte_change_is_caught_at_that_record() {
    let k = key("k1");
    let ring = KeyRing::new(Some(k.clone()), vec![]).unwrap();
    let lines = log(3, &k);
    let target = 1;
    let bytes = lines[target].as_bytes().to_vec();
    for i in 0..bytes.len() {
        for replacement in [b' ', b'0', b'a', b'"', b'}', bytes[i] ^ 1] {
            if replacement == bytes[i] {
                continue;
            }
            let mut changed = bytes.clone();
            changed[i] = replacement;
            let mut tampered = lines.clone();
            tampered[target] = String::from_utf8_lossy(&changed).into_owned();
            assert_eq!(
                first_bad(&ring, &tampered),
                Some(target),
                "byte {i} -> {:?} went unnoticed",
                replacement as char
            );
        }
    }
}

#[test]
fn dropped_duplicated_inserted_and_swapped_records_are_caught() {
    let k = key("k1");
    let ring = KeyRing::new(Some(k.clone()), vec![]).unwrap();
    let lines = log(4, &k);

    let mut dropped = lines.clone();
    dropped.remove(1);
    assert_eq!(first_bad(&ring, &dropped), Some(1));

    let mut duplicated = lines.clone();
    duplicated.insert(2, lines[1].clone());
    assert_eq!(first_bad(&ring, &duplicated), Some(2));

    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    assert_eq!(first_bad(&ring, &swapped), Some(1));

    // A record validly signed in another chain is still out of place here.
    let other = {
        let mut c = Chain::after(GENESIS_HASH);
        c.seal(draft("team=x", 9.0), rfc3339_ms(0), &k).1
    };
    let mut inserted = lines.clone();
    inserted.insert(3, other);
    assert_eq!(first_bad(&ring, &inserted), Some(3));
}

#[test]
fn rotated_out_key_verifies_while_configured_and_not_after() {
    let old = key("k-old");
    let new = key("k-new");
    let mut lines = log(2, &old);
    let old_ring = KeyRing::new(Some(old.clone()), vec![]).unwrap();
    let mut v = Verifier::new(&old_ring);
    for l in &lines {
        v.check_line(l).unwrap();
    }
    // Continue the same chain with the new key.
    let mut chain = Chain::after(v.last_hash());
    lines.push(chain.seal(draft("team=z", 3.0), rfc3339_ms(5), &new).1);

    let rotated = KeyRing::new(Some(new.clone()), vec![old]).unwrap();
    assert_eq!(first_bad(&rotated, &lines), None);

    let forgotten = KeyRing::new(Some(new), vec![]).unwrap();
    let mut v = Verifier::new(&forgotten);
    assert_eq!(
        v.check_line(&lines[0]),
        Err(VerifyError::UnknownKey("k-old".into()))
    );
}

#[test]
fn a_record_signed_with_another_secret_under_the_same_id_fails() {
    let real = key("k1");
    let forged = Key::new("k1", "not-the-real-secret-at-all").unwrap();
    let lines = log(1, &forged);
    let ring = KeyRing::new(Some(real), vec![]).unwrap();
    let mut v = Verifier::new(&ring);
    assert_eq!(v.check_line(&lines[0]), Err(VerifyError::BadSignature));
}

#[test]
fn keys_are_validated_and_never_printed() {
    assert!(matches!(
        Key::new("k1", "short"),
        Err(KeyError::TooShort { len: 5, .. })
    ));
    assert!(matches!(
        Key::new("bad id", "x".repeat(32)),
        Err(KeyError::BadId(_))
    ));
    let k = Key::with_derived_id("s".repeat(32)).unwrap();
    assert!(k.id().starts_with("k-") && k.id().len() == 14, "{}", k.id());
    assert!(!format!("{k:?}").contains("sss"));
    let a = Key::new("k1", "a".repeat(32)).unwrap();
    let b = Key::new("k1", "b".repeat(32)).unwrap();
    assert_eq!(
        KeyRing::new(Some(a), vec![b]).unwrap_err(),
        KeyError::Conflict("k1".into())
    );
}

#[test]
fn signing_input_excludes_only_the_signature() {
    let k = key("k1");
    let mut chain = Chain::after(GENESIS_HASH);
    let (d, line) = chain.seal(draft("team=a", 1.5), rfc3339_ms(0), &k);
    let input = d.signing_input();
    assert!(!input.contains("\"signature\""));
    assert!(input.contains("\"prev_hash\"") && input.contains("\"key_id\":\"k1\""));
    assert!(line.contains(&format!("\"signature\":\"{}\"", d.signature)));
    assert_eq!(serde_json::from_str::<Decision>(&line).unwrap(), d);
}

#[test]
fn hand_written_canonical_form_equals_the_generic_one() {
    let k = key("k1");
    let mut chain = Chain::after(GENESIS_HASH);
    let mut d = draft("team=\"quoted\"\n€😀", 0.1 + 0.2);
    d.observed
        .insert("ünïcode".into(), json!({"z": [1, null, true], "a": -0.0}));
    let (decision, line) = chain.seal(d.clone(), rfc3339_ms(0), &k);
    let generic = canonical::to_string(&serde_json::to_value(&decision).unwrap());
    assert_eq!(line, generic);
    let mut unsigned = serde_json::to_value(&decision).unwrap();
    unsigned.as_object_mut().unwrap().remove("signature");
    assert_eq!(decision.signing_input(), canonical::to_string(&unsigned));
    let id_key = json!([d.policy, d.policy_revision, d.window, d.subject]);
    let id = hex(&Sha256::digest(canonical::to_string(&id_key).as_bytes())[..16]);
    assert_eq!(d.decision_id(), id);
    let mut none = d.clone();
    none.window = None;
    let id_key = json!([none.policy, none.policy_revision, null, none.subject]);
    assert_eq!(
        none.decision_id(),
        hex(&Sha256::digest(canonical::to_string(&id_key).as_bytes())[..16])
    );
}
