use super::*;
use std::collections::BTreeMap;
use tollgate_event::{decode, Limits};

const SPEC: WindowSpec = WindowSpec {
    size_ms: 60_000,
    lateness_ms: 5_000,
};

fn json(id: &str, ts: i64, team: &str, tokens: u64) -> String {
    format!(
        r#"{{"event_id":"{id}","ts":{ts},"tenant":"t","tags":{{"team":"{team}"}},"model":"m","input_tokens":{tokens},"output_tokens":1,"duration_ms":10}}"#
    )
}

fn offer(s: &mut PartitionState, offset: i64, text: &str) -> Offer {
    let e = decode(text.as_bytes(), Kind::Inference, &Limits::default()).expect("valid");
    let x = Enriched {
        cost_usd: e_tokens(&e) as f64,
        duration_ms: Some(10.0),
        ..Enriched::default()
    };
    s.offer(offset, &e, &x)
}

fn e_tokens(e: &Event<'_>) -> u64 {
    match e.body {
        Body::Inference { input_tokens, .. } => input_tokens,
        _ => 0,
    }
}

#[test]
fn assigns_tumbling_windows_including_negative_times() {
    assert_eq!(SPEC.start_of(0), 0);
    assert_eq!(SPEC.start_of(59_999), 0);
    assert_eq!(SPEC.start_of(60_000), 60_000);
    assert_eq!(SPEC.start_of(-1), -60_000);
}

#[test]
fn window_closes_when_watermark_passes_its_end() {
    let mut s = PartitionState::new(SPEC, Kind::Inference);
    assert_eq!(offer(&mut s, 0, &json("a", 1_000, "x", 5)), Offer::Accepted);
    assert_eq!(
        offer(&mut s, 1, &json("b", 64_999, "x", 5)),
        Offer::Accepted
    );
    assert!(
        s.drain_closed().is_empty(),
        "watermark 59_999 is before the end 60_000"
    );
    assert_eq!(s.watermark(), Some(59_999));
    assert_eq!(
        offer(&mut s, 2, &json("c", 65_000, "y", 5)),
        Offer::Accepted
    );
    let closed = s.drain_closed();
    assert_eq!(closed.len(), 1);
    let w = &closed[0];
    assert_eq!(
        (w.start_ms, w.end_ms, w.first_offset, w.close_offset),
        (0, 60_000, 0, 3)
    );
    assert_eq!(w.events(), 1);
    assert_eq!(w.rows.iter().next().map(|(d, _)| d.team), Some(Some("x")));
}

#[test]
fn late_events_are_reported_not_counted() {
    let mut s = PartitionState::new(SPEC, Kind::Inference);
    offer(&mut s, 0, &json("a", 1_000, "x", 5));
    offer(&mut s, 1, &json("b", 130_000, "x", 5));
    assert_eq!(s.drain_closed().len(), 1);
    assert_eq!(
        offer(&mut s, 2, &json("c", 2_000, "x", 5)),
        Offer::Late { window_start: 0 }
    );
    // A window that never opened but is already below the watermark is late too.
    assert_eq!(
        offer(&mut s, 3, &json("d", 61_000, "x", 5)),
        Offer::Late {
            window_start: 60_000
        }
    );
    // The closed window holds the commit point until it is written.
    assert_eq!(s.checkpoint().map(|c| c.offset), Some(0));
    s.written(0);
    assert_eq!(
        s.checkpoint().map(|c| c.offset),
        Some(1),
        "window 120000 open from offset 1"
    );
    let key = s.late_submitted().expect("late events pending");
    assert_eq!(key, 2, "keyed by the first late offset");
    assert_eq!(s.late_submitted(), None);
    s.written(key);
    assert_eq!(s.pending_writes(), 0);
}

#[test]
fn pending_late_events_hold_the_commit_point() {
    let mut s = PartitionState::new(SPEC, Kind::Inference);
    offer(&mut s, 0, &json("a", 1_000, "x", 5));
    offer(&mut s, 1, &json("b", 200_000, "x", 5));
    for w in s.flush_idle() {
        s.written(w.first_offset);
    }
    assert_eq!(s.checkpoint().map(|c| c.offset), Some(2));
    assert!(matches!(
        offer(&mut s, 2, &json("c", 2_000, "x", 5)),
        Offer::Late { .. }
    ));
    offer(&mut s, 3, &json("d", 300_000, "x", 5));
    for w in s.drain_closed() {
        s.written(w.first_offset);
    }
    // Window 300000 opened at 3, but the late event at 2 is not written yet.
    assert_eq!(s.checkpoint().map(|c| c.offset), Some(2));
    let key = s.late_submitted().expect("late");
    assert_eq!(
        s.checkpoint().map(|c| c.offset),
        Some(2),
        "submitted is not written"
    );
    s.written(key);
    assert_eq!(s.checkpoint().map(|c| c.offset), Some(3));
}

#[test]
fn duplicates_count_once_per_window() {
    let mut s = PartitionState::new(SPEC, Kind::Inference);
    assert_eq!(offer(&mut s, 0, &json("a", 1_000, "x", 5)), Offer::Accepted);
    assert_eq!(
        offer(&mut s, 1, &json("a", 1_000, "x", 5)),
        Offer::Duplicate
    );
    let w = s.flush_idle();
    assert_eq!(w[0].events(), 1);
    assert_eq!(w[0].duplicates, 1);
    assert_eq!(
        w[0].rows.iter().next().map(|(_, m)| m.input_tokens),
        Some(5)
    );
}

#[test]
fn checkpoint_is_the_oldest_open_window_with_its_watermark() {
    let mut s = PartitionState::new(SPEC, Kind::Inference);
    assert_eq!(s.checkpoint(), None);
    offer(&mut s, 10, &json("a", 30_000, "x", 5));
    offer(&mut s, 11, &json("b", 70_000, "x", 5));
    assert_eq!(
        s.checkpoint(),
        Some(Checkpoint {
            offset: 10,
            watermark_ms: None
        })
    );
    offer(&mut s, 12, &json("c", 70_000, "x", 5));
    s.skip(13);
    let closed = s.drain_closed();
    assert_eq!(closed.len(), 1);
    // Until its file is written, the closed window holds the commit point.
    assert_eq!(s.checkpoint().map(|c| c.offset), Some(10));
    assert_eq!(s.pending_writes(), 1);
    s.written(closed[0].first_offset);
    // Window 60000 opened at offset 11 when the watermark was 25_000.
    assert_eq!(
        s.checkpoint(),
        Some(Checkpoint {
            offset: 11,
            watermark_ms: Some(25_000)
        })
    );
    for w in s.flush_idle() {
        s.written(w.first_offset);
    }
    assert_eq!(
        s.checkpoint(),
        Some(Checkpoint {
            offset: 14,
            watermark_ms: Some(120_000)
        })
    );
}

#[test]
fn checkpoint_metadata_round_trips() {
    let c = Checkpoint {
        offset: 5,
        watermark_ms: Some(-3),
    };
    assert_eq!(Checkpoint::parse_watermark(&c.metadata()), Ok(Some(-3)));
    let n = Checkpoint {
        offset: 5,
        watermark_ms: None,
    };
    assert_eq!(Checkpoint::parse_watermark(&n.metadata()), Ok(None));
    assert!(Checkpoint::parse_watermark("").is_err());
    assert!(Checkpoint::parse_watermark("tollgate/1 wm=x").is_err());
}

/// A small deterministic PRNG for the simulation.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn stream(seed: u64, n: usize) -> Vec<String> {
    let mut r = Rng(seed);
    let mut out = Vec::new();
    for i in 0..n {
        let jitter = (r.next() % 20_000) as i64;
        // Mostly in order, some far behind (late), some duplicates of recent ids.
        let ts = if r.next().is_multiple_of(25) {
            i as i64 * 1_000 - 90_000
        } else {
            i as i64 * 1_000 + jitter
        };
        let id = if i > 3 && r.next().is_multiple_of(10) {
            format!("e{}", i - 1 - (r.next() % 3) as usize)
        } else {
            format!("e{i}")
        };
        let team = format!("team{}", r.next() % 4);
        out.push(json(&id, ts.max(0), &team, r.next() % 100));
    }
    out
}

type Files = BTreeMap<i64, ClosedWindow>;

/// Run from `state` over `events[from..to]`, committing every `commit_every`
/// offsets; returns the last committed checkpoint.
fn run(
    s: &mut PartitionState,
    events: &[String],
    from: usize,
    to: usize,
    commit_every: usize,
    files: &mut Files,
    late: &mut BTreeMap<i64, ()>,
) -> Option<Checkpoint> {
    let mut committed = None;
    for (i, text) in events.iter().enumerate().take(to).skip(from) {
        if let Offer::Late { .. } = offer(s, i as i64, text) {
            late.insert(i as i64, ());
        }
        for w in s.drain_closed() {
            s.written(w.first_offset);
            files.insert(w.first_offset, w);
            if let Some(key) = s.late_submitted() {
                s.written(key);
            }
        }
        if (i + 1) % commit_every == 0 {
            committed = s.checkpoint();
        }
    }
    committed
}

#[test]
fn crash_and_replay_from_the_checkpoint_writes_exactly_the_same_windows() {
    let events = stream(7, 600);
    let mut reference = Files::new();
    let mut ref_late = BTreeMap::new();
    let mut s = PartitionState::new(SPEC, Kind::Inference);
    run(
        &mut s,
        &events,
        0,
        events.len(),
        1,
        &mut reference,
        &mut ref_late,
    );
    let total: u64 = reference.values().map(|w| w.events()).sum();
    assert!(
        total > 400 && !ref_late.is_empty(),
        "the stream exercises windows and lateness ({total})"
    );

    for crash_at in [1usize, 37, 150, 299, 421, 599] {
        for commit_every in [1usize, 7, 50] {
            let mut files = Files::new();
            let mut late = BTreeMap::new();
            let mut s = PartitionState::new(SPEC, Kind::Inference);
            let cp = run(
                &mut s,
                &events,
                0,
                crash_at,
                commit_every,
                &mut files,
                &mut late,
            )
            .unwrap_or(Checkpoint {
                offset: 0,
                watermark_ms: None,
            });
            // Restart: only the files and the committed checkpoint survive.
            let written = files.values().map(|w| (w.start_ms, w.close_offset));
            let mut s = PartitionState::restore(SPEC, Kind::Inference, cp, written);
            run(
                &mut s,
                &events,
                cp.offset as usize,
                events.len(),
                commit_every,
                &mut files,
                &mut late,
            );
            assert_eq!(
                files, reference,
                "crash at {crash_at}, commit every {commit_every}"
            );
            assert_eq!(
                late, ref_late,
                "late output differs: crash at {crash_at}, commit every {commit_every}"
            );
        }
    }
}

#[test]
fn only_the_newest_window_is_allocated_at_the_last_windows_size() {
    let spec = WindowSpec {
        size_ms: 60_000,
        lateness_ms: 300_000,
    };
    let mut s = PartitionState::new(spec, Kind::Inference);
    let capacity = |s: &PartitionState, start: i64| s.open[&start].rows.capacity();
    // A first window of 300 rows, closed by an event past its end + lateness.
    for i in 0..300 {
        offer(
            &mut s,
            i,
            &json(&format!("a{i}"), 1_000, &format!("team-{i}"), 1),
        );
    }
    offer(&mut s, 300, &json("b", 360_000 + 60_000, "x", 1));
    assert_eq!(s.drain_closed().len(), 1);
    // The next window opened after it (the newest) is presized ...
    offer(&mut s, 301, &json("c", 480_000, "x", 1));
    assert!(capacity(&s, 480_000) >= 300, "{}", capacity(&s, 480_000));
    // ... a straggler window behind the newest is not.
    assert_eq!(
        offer(&mut s, 302, &json("d", 250_000, "x", 1)),
        Offer::Accepted
    );
    assert!(capacity(&s, 240_000) < 300, "{}", capacity(&s, 240_000));
    // A burst is carried over only up to the cap, scaled alike.
    let big = Sizes {
        rows: 1 << 20,
        key_bytes: 64 << 20,
        events: 1 << 21,
    }
    .capped();
    assert_eq!(
        (big.rows, big.key_bytes, big.events),
        (1 << 17, 8 << 20, 1 << 18)
    );
}

#[test]
fn row_keys_round_trip_any_text() {
    let long = "é".repeat(200); // 400 bytes: a three-digit length prefix
    let dims = [
        DimsRef {
            tenant: "acme",
            team: None,
            environment: Some(""),
            project: None,
            model: Some("gpt-4o"),
            region: Some("日本"),
            node_id: None,
        },
        // Text that looks like a prefix or a none marker is only text.
        DimsRef {
            tenant: "\u{0}\u{0}\u{0}\u{0}\u{0}",
            team: Some("\u{1}\u{0}\u{0}\u{0}\u{0}x"),
            environment: None,
            project: None,
            model: Some(&long),
            region: None,
            node_id: Some("n-1"),
        },
        DimsRef {
            tenant: "\u{0}\u{0}\u{0}\u{0}",
            team: Some("\u{0}"),
            environment: None,
            project: None,
            model: Some(&long),
            region: None,
            node_id: Some("n-1"),
        },
    ];
    let set = RowSet::from_rows(dims.iter().map(|d| (*d, Measures::default())));
    let back: Vec<DimsRef<'_>> = set.iter().map(|(d, _)| d).collect();
    assert_eq!(back, dims);
}

#[test]
fn a_project_is_a_dimension_of_its_own() {
    let mut s = PartitionState::new(SPEC, Kind::Inference);
    let with = |id: &str, project: Option<&str>| {
        let tags = match project {
            Some(p) => format!(r#"{{"team":"x","project":"{p}"}}"#),
            None => r#"{"team":"x"}"#.to_string(),
        };
        format!(
            r#"{{"event_id":"{id}","ts":1000,"tenant":"t","tags":{tags},"model":"m","input_tokens":3,"output_tokens":1,"duration_ms":10}}"#
        )
    };
    for (i, (id, p)) in [
        ("a", Some("search")),
        ("b", Some("ads")),
        ("c", None),
        ("d", Some("search")),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(offer(&mut s, i as i64, &with(id, p)), Offer::Accepted);
    }
    assert_eq!(
        offer(&mut s, 4, &json("e", 70_000, "x", 1)),
        Offer::Accepted
    );
    let closed = s.drain_closed();
    let rows: BTreeMap<Option<&str>, u64> = closed[0]
        .rows
        .iter()
        .map(|(d, m)| (d.project, m.events))
        .collect();
    assert_eq!(
        rows,
        BTreeMap::from([(None, 1), (Some("ads"), 1), (Some("search"), 2)])
    );
}
