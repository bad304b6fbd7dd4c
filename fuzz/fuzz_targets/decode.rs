//! The decoder on arbitrary bytes: never a panic; an accepted event holds
//! the contract; a rejection always has a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_event::{check_name, decode, decode_self_described, Kind, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for kind in Kind::ALL {
        for r in [
            decode(data, kind, &limits),
            decode_self_described(data, &limits),
        ] {
            match r {
                Ok(e) => {
                    assert!(check_name(&e.tenant).is_ok());
                    if let Some(team) = &e.tags.team {
                        assert!(check_name(team).is_ok());
                    }
                }
                Err(err) => assert!(!err.to_string().is_empty()),
            }
        }
    }
});
