#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::Map;
use tollgate_decision::{rfc3339_ms, DecisionWindow, Verdict};

fn key(id: &str) -> Key {
    Key::new(id, format!("{id}-a-secret-long-enough")).unwrap()
}

fn draft(i: usize) -> Draft {
    let mut observed = Map::new();
    observed.insert("spend_usd".into(), json!(i as f64 * 1.25));
    Draft {
        policy: "team-window-spend".into(),
        policy_revision: "r1".into(),
        subject: format!("team=t{i}"),
        window: Some(DecisionWindow::from_millis(
            0,
            60_000,
            "tollgate.inference/0",
        )),
        observed,
        verdict: Verdict::Deny,
        reasons: vec![format!("over by {i}")],
    }
}

fn write_log(dir: &Path, n: usize, opts: LogOptions) -> DecisionLog {
    let mut log = DecisionLog::open(dir, key("k1"), opts).unwrap();
    for i in 0..n {
        assert!(log.append(draft(i), rfc3339_ms(i as i64)).unwrap().is_new());
    }
    log.sync().unwrap();
    log
}

fn ring() -> KeyRing {
    KeyRing::new(None, vec![key("k1")]).unwrap()
}

fn all_lines(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| {
            let text = fs::read_to_string(&p).unwrap();
            (p, text.lines().map(str::to_owned).collect())
        })
        .collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

#[test]
fn appends_survive_reopen_and_replays_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), 3, LogOptions::default());
    assert_eq!(log.records(), 3);
    drop(log);

    let mut log = DecisionLog::open(dir.path(), key("k1"), LogOptions::default()).unwrap();
    assert_eq!(log.records(), 3);
    let stored = all_lines(dir.path())[0].1[1].clone();
    // The replayed draft gets the stored record back, byte for byte, even
    // though it would be sealed with a different ts now.
    match log.append(draft(1), rfc3339_ms(999)).unwrap() {
        Appended::Existing { line, .. } => assert_eq!(line, stored),
        other => panic!("expected Existing, got {other:?}"),
    }
    assert!(log.append(draft(3), rfc3339_ms(3)).unwrap().is_new());
    log.sync().unwrap();
    assert_eq!(log.records(), 4);

    let report = verify_dir(dir.path(), &ring()).unwrap();
    assert_eq!(report.first_bad, None);
    assert_eq!(report.records, 4);
}

#[test]
fn segments_rotate_and_the_chain_spans_them() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        max_segment_bytes: 1_000,
        ..LogOptions::default()
    };
    write_log(dir.path(), 12, opts.clone());
    let segs = all_lines(dir.path());
    assert!(segs.len() >= 3, "{} segments", segs.len());
    let mut log = DecisionLog::open(dir.path(), key("k1"), opts).unwrap();
    assert!(log.append(draft(12), rfc3339_ms(12)).unwrap().is_new());
    log.sync().unwrap();
    let report = verify_dir(dir.path(), &ring()).unwrap();
    assert_eq!((report.records, report.first_bad), (13, None));
}

#[test]
fn a_torn_last_record_is_cut_off_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_log(dir.path(), 2, LogOptions::default()));
    let (path, _) = all_lines(dir.path()).remove(0);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"decision_id\":\"abc").unwrap();
    drop(f);

    let bad = verify_dir(dir.path(), &ring()).unwrap().first_bad.unwrap();
    assert_eq!((bad.record, bad.line), (3, 3));
    assert!(bad.reason.contains("torn"), "{}", bad.reason);

    let mut log = DecisionLog::open(dir.path(), key("k1"), LogOptions::default()).unwrap();
    assert_eq!(log.records(), 2);
    assert!(log.append(draft(2), rfc3339_ms(2)).unwrap().is_new());
    log.sync().unwrap();
    assert_eq!(verify_dir(dir.path(), &ring()).unwrap().first_bad, None);
}

/// Apply `tamper` to the lines of a 5-record log in one segment and return
/// what verify reports.
fn tampered(tamper: impl FnOnce(&mut Vec<String>)) -> BadRecord {
    let dir = tempfile::tempdir().unwrap();
    drop(write_log(dir.path(), 5, LogOptions::default()));
    let (path, mut lines) = all_lines(dir.path()).remove(0);
    tamper(&mut lines);
    rewrite(&path, &lines);
    verify_dir(dir.path(), &ring())
        .unwrap()
        .first_bad
        .expect("tampering went unnoticed")
}

#[test]
fn verify_names_the_first_bad_record() {
    let bad = tampered(|l| l[2] = l[2].replacen("over by", "over bY", 1));
    assert_eq!((bad.record, bad.line), (3, 3));
    assert!(bad.reason.contains("signature"), "{}", bad.reason);
    assert!(bad.decision_id.is_some());

    let bad = tampered(|l| {
        l.remove(1);
    });
    assert_eq!(bad.record, 2);
    assert!(bad.reason.contains("chain broken"), "{}", bad.reason);

    // A copy of record 4 right after it: the copy is the first out of place.
    let bad = tampered(|l| l.insert(4, l[3].clone()));
    assert_eq!(bad.record, 5);

    let bad = tampered(|l| l.swap(3, 4));
    assert_eq!(bad.record, 4);

    let bad = tampered(|l| {
        l.pop();
    });
    assert_eq!(bad.line, 0, "dropping the last record is caught by HEAD");
    assert!(bad.reason.contains("dropped"), "{}", bad.reason);

    let bad = tampered(|l| l[0] = format!("{} ", l[0]));
    assert_eq!(bad.record, 1);
    assert!(bad.reason.contains("canonical"), "{}", bad.reason);
}

#[test]
fn every_single_byte_change_in_a_segment_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_log(dir.path(), 3, LogOptions::default()));
    let (path, _) = all_lines(dir.path()).remove(0);
    let original = fs::read(&path).unwrap();
    for i in (0..original.len()).step_by(7) {
        let mut bytes = original.clone();
        bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
        fs::write(&path, &bytes).unwrap();
        let report = verify_dir(dir.path(), &ring()).unwrap();
        assert!(report.first_bad.is_some(), "byte {i} changed unnoticed");
    }
}

#[test]
fn open_refuses_a_broken_chain_and_a_shortened_log() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_log(dir.path(), 4, LogOptions::default()));
    let (path, lines) = all_lines(dir.path()).remove(0);

    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    rewrite(&path, &swapped);
    let err = DecisionLog::open(dir.path(), key("k1"), LogOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, LogError::Damaged { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("tollgate verify"), "{err}");

    rewrite(&path, &lines[..3]);
    let err = DecisionLog::open(dir.path(), key("k1"), LogOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("HEAD.json counts 4"), "{err}");
}

#[test]
fn head_must_verify() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_log(dir.path(), 2, LogOptions::default()));
    let other = KeyRing::new(None, vec![key("k2")]).unwrap();
    let bad = verify_dir(dir.path(), &other).unwrap().first_bad.unwrap();
    assert_eq!(bad.record, 1, "{bad}");

    let head = dir.path().join(HEAD_FILE);
    let text = fs::read_to_string(&head)
        .unwrap()
        .replace("\"records\":2", "\"records\":1");
    fs::write(&head, text).unwrap();
    let bad = verify_dir(dir.path(), &ring()).unwrap().first_bad.unwrap();
    assert!(bad.reason.contains("HEAD.json signature"), "{bad}");
}

#[test]
fn a_crash_between_append_and_head_is_repaired_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_log(dir.path(), 2, LogOptions::default()));
    // Appended and flushed, but the process died before HEAD.json was written.
    let mut log = DecisionLog::open(dir.path(), key("k1"), LogOptions::default()).unwrap();
    log.append(draft(2), rfc3339_ms(2)).unwrap();
    log.file.flush().unwrap();
    // The process dies: nothing more is written, and the kernel releases
    // its lock.
    let DecisionLog { file, lock, .. } = log;
    std::mem::forget(file);
    drop(lock);
    fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
    assert!(verify_dir(dir.path(), &ring()).unwrap().first_bad.is_some());

    let mut log = DecisionLog::open(dir.path(), key("k1"), LogOptions::default()).unwrap();
    // The replay finds the id already there: nothing new, and HEAD is right.
    assert!(!log.append(draft(2), rfc3339_ms(9)).unwrap().is_new());
    log.sync().unwrap();
    let report = verify_dir(dir.path(), &ring()).unwrap();
    assert_eq!((report.records, report.first_bad), (3, None));
}

/// A big record, for writes that do not fit the buffer (they go straight
/// to the file, so a failure leaves part of the line there).
fn big_draft(i: usize, bytes: usize) -> Draft {
    let mut d = draft(i);
    d.observed.insert("note".into(), json!("x".repeat(bytes)));
    d
}

#[test]
fn a_failed_write_never_breaks_the_chain() {
    let opts = LogOptions {
        max_record_bytes: 1 << 20,
        ..LogOptions::default()
    };
    // Fail inside a buffered record (seen at the sync) and inside one
    // written straight through (seen at the append).
    for (fail_after, big) in [(100, false), (10_000, true)] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = write_log(dir.path(), 2, opts.clone());
        log.fail_writes_after(fail_after);
        let first = if big {
            log.append(big_draft(2, 300_000), rfc3339_ms(2))
                .map(|_| ())
                .and_then(|()| log.sync())
        } else {
            log.append(draft(2), rfc3339_ms(2))
                .map(|_| ())
                .and_then(|()| log.sync())
        };
        assert!(first.is_err(), "the injected failure is reported");
        // The next appends reopen the log from its files and go on from the
        // last whole record.
        assert!(log.append(draft(3), rfc3339_ms(3)).unwrap().is_new());
        assert!(log.append(draft(4), rfc3339_ms(4)).unwrap().is_new());
        log.sync().unwrap();
        drop(log);
        // A restart opens it, and `tollgate verify` finds nothing wrong.
        let log = DecisionLog::open(dir.path(), key("k1"), opts.clone()).unwrap();
        assert_eq!(log.records(), 4, "fail_after {fail_after}");
        let report = verify_dir(dir.path(), &ring()).unwrap();
        assert_eq!((report.records, report.first_bad), (4, None));
    }
}

#[test]
fn an_oversize_record_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = write_log(dir.path(), 1, LogOptions::default());
    let err = log
        .append(big_draft(1, DEFAULT_MAX_RECORD_BYTES), rfc3339_ms(1))
        .unwrap_err();
    assert!(matches!(err, LogError::TooLarge { .. }), "{err}");
    assert!(log.append(draft(2), rfc3339_ms(2)).unwrap().is_new());
    log.sync().unwrap();
    drop(log);
    let report = verify_dir(dir.path(), &ring()).unwrap();
    assert_eq!((report.records, report.first_bad), (2, None));
}

#[test]
fn a_torn_line_ending_inside_a_utf8_sequence_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_log(dir.path(), 2, LogOptions::default()));
    let (path, _) = all_lines(dir.path()).remove(0);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&"{\"decision_id\":\"é".as_bytes()[..17])
        .unwrap();
    drop(f);
    let log = DecisionLog::open(dir.path(), key("k1"), LogOptions::default()).unwrap();
    assert_eq!(log.records(), 2);
}

fn head_records(dir: &Path) -> u64 {
    read_head(dir).unwrap().map_or(0, |h| h.records)
}

/// Submissions from several threads all reach the log once, each answered
/// with its own records; when the last handle goes the head counts them.
#[test]
fn the_committer_writes_every_submission_once_and_the_head_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), 2, LogOptions::default());
    let c = Committer::spawn(log, 4).unwrap();
    assert_eq!(c.records_at_open(), 2);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let n = 100 + t * 50 + i;
                        let got = c.commit_blocking(vec![draft(n), draft(n + 1000)]).unwrap();
                        assert_eq!(got.len(), 2);
                        assert!(got.iter().all(Appended::is_new));
                        assert_eq!(got[0].decision().subject, format!("team=t{n}"));
                        got[1].decision().decision_id.clone()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: std::collections::HashSet<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 100);
    // A replay answers the stored records, adding nothing.
    let again = c.commit_blocking(vec![draft(0), draft(100)]).unwrap();
    assert!(again.iter().all(|a| !a.is_new()));
    drop(c);
    assert_eq!(head_records(dir.path()), 202);
    let report = verify_dir(dir.path(), &ring()).unwrap();
    assert_eq!((report.records, report.first_bad), (202, None));
}

/// A record too large fails its own submission only; a failed sync fails
/// the submissions it covered, and the next group goes on from the files.
#[test]
fn the_committer_answers_failures_to_the_submissions_they_touch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = write_log(dir.path(), 1, LogOptions::default());
    log.fail_writes_after(100);
    let c = Committer::spawn(log, 4).unwrap();
    let err = c.commit_blocking(vec![draft(1)]).unwrap_err();
    assert!(matches!(err, CommitError::Failed(_)), "{err}");
    let big = c
        .commit_blocking(vec![big_draft(2, DEFAULT_MAX_RECORD_BYTES)])
        .unwrap_err();
    assert!(matches!(big, CommitError::TooLarge(_)), "{big}");
    assert!(c.commit_blocking(vec![draft(3)]).unwrap()[0].is_new());
    drop(c);
    let report = verify_dir(dir.path(), &ring()).unwrap();
    assert_eq!((report.records, report.first_bad), (2, None));
    assert_eq!(head_records(dir.path()), 2);
}

/// One process writes a log: a second open of the same directory is
/// refused while the first is open (flock on `LOCK`), and works after.
#[test]
fn a_log_open_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), 1, LogOptions::default());
    let err = DecisionLog::open(dir.path(), key("k1"), LogOptions::default())
        .err()
        .expect("refused while open");
    assert!(matches!(err, LogError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("open in another process"), "{err}");
    drop(log);
    let log = DecisionLog::open(dir.path(), key("k1"), LogOptions::default()).unwrap();
    assert_eq!(log.records(), 1);
    assert_eq!(verify_dir(dir.path(), &ring()).unwrap().records, 1);
}
