//! The decision verifier and canonical JSON on arbitrary lines: never a
//! panic; a line the verifier accepts is canonical (re-encoding it gives the
//! same bytes) and signed by the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_decision::{canonical, Key, KeyRing, Verifier};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = Key::new("k1", "fuzz-secret-0123456789").expect("key");
    let ring = KeyRing::new(Some(key), Vec::new()).expect("ring");
    let mut v = Verifier::new(&ring);
    for line in text.lines() {
        if let Ok(d) = v.check_line(line) {
            assert_eq!(d.to_line(), line);
        }
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let once = canonical::to_string(&value);
        let again: serde_json::Value = serde_json::from_str(&once).expect("canonical JSON parses");
        assert_eq!(
            canonical::to_string(&again),
            once,
            "canonical form is stable"
        );
    }
});
