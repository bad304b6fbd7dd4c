use super::*;
use arrow::array::Array;
use tollgate_window::{DimsRef, Measures, RowSet, Totals};

/// Write one closed window as the writer thread does: encode, then temp
/// file, fsync, rename, fsync the directory.
fn write_local(
    root: &Path,
    src: Source<'_>,
    w: &ClosedWindow,
) -> Result<(PathBuf, u64), RollupError> {
    write_window(&Tree::local(root), src, w)
}

/// `path`'s key in the tree at `root`.
fn key_of(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .expect("under root")
        .to_string_lossy()
        .into_owned()
}

fn window(start: i64, first: i64, close: i64) -> ClosedWindow {
    let mut m = Measures {
        events: 3,
        input_tokens: 30,
        output_tokens: 6,
        cost_usd: 1.5,
        carbon_g: 0.25,
        ..Measures::default()
    };
    for d in [10.0, 20.0, 30.0] {
        m.duration.add(d);
    }
    let untagged = Measures {
        events: 1,
        cost_usd: 0.5,
        ..Measures::default()
    };
    ClosedWindow {
        start_ms: start,
        end_ms: start + 60_000,
        first_offset: first,
        close_offset: close,
        watermark_ms: start + 60_000,
        duplicates: 0,
        rows: RowSet::from_rows([
            (
                DimsRef {
                    tenant: "t",
                    team: Some("ai"),
                    environment: None,
                    project: None,
                    model: None,
                    region: None,
                    node_id: None,
                },
                m,
            ),
            (
                DimsRef {
                    tenant: "t",
                    team: None,
                    environment: None,
                    project: None,
                    model: None,
                    region: None,
                    node_id: None,
                },
                untagged,
            ),
        ]),
    }
}

const SRC: Source<'static> = Source {
    kind: "inference",
    topic: "tollgate.inference",
    partition: 2,
};

#[test]
fn writes_hive_layout_with_deterministic_name_and_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 2023-11-14T22:13:00Z
    let w = window(1_699_999_980_000, 42, 57);
    let (path, size) = write_local(dir.path(), SRC, &w).expect("write");
    assert!(size > 0);
    let rel = path.strip_prefix(dir.path()).expect("under root");
    assert_eq!(
        rel,
        Path::new("kind=inference/date=2023-11-14/hour=22/tollgate.inference-2-42.parquet")
    );
    let bytes = fs::read(&path).expect("read");
    // A replay rewrites an identical file.
    write_local(dir.path(), SRC, &w).expect("rewrite");
    assert_eq!(fs::read(&path).expect("read"), bytes);

    let found = scan_written(&Tree::local(dir.path()), SRC, None).expect("scan");
    assert_eq!(
        found,
        vec![WrittenWindow {
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            first_offset: 42,
            close_offset: 57,
            path: path.clone()
        }]
    );
    // Another partition's files are not ours.
    assert!(scan_written(
        &Tree::local(dir.path()),
        Source {
            partition: 3,
            ..SRC
        },
        None
    )
    .expect("scan")
    .is_empty());
    // Hours before `since` are pruned.
    assert!(
        scan_written(&Tree::local(dir.path()), SRC, Some(1_700_003_600_000))
            .expect("scan")
            .is_empty()
    );
    assert_eq!(
        scan_written(&Tree::local(dir.path()), SRC, Some(1_699_999_000_000))
            .expect("scan")
            .len(),
        1
    );
}

#[test]
fn columns_are_zstd_with_dictionaries_for_dimensions_only() {
    use parquet::basic::Encoding;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, size) =
        write_local(dir.path(), SRC, &window(1_699_999_980_000, 1, 2)).expect("write");
    assert_eq!(size, fs::metadata(&path).expect("stat").len());
    let reader = SerializedFileReader::new(File::open(&path).expect("open")).expect("parquet");
    let group = reader.metadata().row_group(0);
    for col in group.columns() {
        let name = col.column_path().string();
        assert!(
            matches!(col.compression(), Compression::ZSTD(_)),
            "{name}: {:?}",
            col.compression()
        );
        let dictionary = col.encodings().any(|e| e == Encoding::RLE_DICTIONARY);
        assert_eq!(
            dictionary,
            DICTIONARY_COLUMNS.contains(&name.as_str()),
            "{name}: {:?}",
            col.encodings().collect::<Vec<_>>()
        );
    }
    assert_eq!(group.num_columns(), schema().fields().len());
}

#[test]
fn scan_removes_stale_temp_files_of_its_partition_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = write_local(dir.path(), SRC, &window(0, 0, 5)).expect("write");
    let hour = path.parent().expect("dir");
    // Leftovers: of a process that is gone (pid 0x7fffffff on this machine),
    // and of an old name format, last written two hours ago.
    let gone = format!(
        ".tollgate.inference-2-98.parquet.{:016x}-7fffffff-0.tmp",
        machine()
    );
    fs::write(hour.join(&gone), b"partial").expect("tmp");
    let old = hour.join(".tollgate.inference-2-99.parquet.tmp");
    fs::write(&old, b"partial").expect("tmp");
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(two_hours_ago))
        .expect("mtime");
    // In flight: this process's own writer, another machine's, and another
    // partition's. None of them is touched.
    let mine = temp_name("tollgate.inference-2-100.parquet");
    assert_ne!(
        mine,
        temp_name("tollgate.inference-2-100.parquet"),
        "unique per write"
    );
    let elsewhere = ".tollgate.inference-2-101.parquet.00000000deadbeef-1-0.tmp";
    for name in [mine.as_str(), elsewhere] {
        fs::write(hour.join(name), b"partial").expect("tmp");
    }
    fs::write(
        hour.join(".tollgate.inference-3-99.parquet.tmp"),
        b"partial",
    )
    .expect("tmp");
    scan_written(&Tree::local(dir.path()), SRC, None).expect("scan");
    assert!(!hour.join(&gone).exists());
    assert!(!old.exists());
    assert!(hour.join(&mine).exists());
    assert!(hour.join(elsewhere).exists());
    assert!(hour.join(".tollgate.inference-3-99.parquet.tmp").exists());
    assert_eq!(
        list_files(&Tree::local(dir.path())).expect("list"),
        vec![key_of(dir.path(), &path)]
    );
}

#[test]
fn summary_totals_by_team() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_local(dir.path(), SRC, &window(0, 0, 5)).expect("write");
    write_local(dir.path(), SRC, &window(60_000, 5, 9)).expect("write");
    let s = read_summary(&Tree::local(dir.path())).expect("summary");
    assert_eq!(s.files, 2);
    assert_eq!(s.by_team["ai"].events, 6);
    assert_eq!(s.by_team["ai"].input_tokens, 60);
    assert_eq!(s.by_team["(untagged)"].events, 2);
    assert_eq!(s.total.events, 8);
    assert!((s.total.cost_usd - 4.0).abs() < 1e-12);
}

#[test]
fn batch_has_the_documented_schema_and_p95() {
    let b = to_batch(&window(0, 0, 1)).expect("batch");
    assert_eq!(b.schema(), schema());
    let p95 = b
        .column_by_name("duration_ms_p95")
        .expect("p95")
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("f64");
    assert!((p95.value(0) - 30.0).abs() < 0.5);
    assert!(p95.is_null(1), "a row without durations has no percentile");
}

fn late_record(offset: i64) -> LateRecord {
    LateRecord {
        offset,
        window_start_ms: 0,
        watermark_ms: Some(9),
        event: serde_json::json!({"event_id": offset}),
    }
}

/// A late batch that started before the restored offset and ran past it:
/// a replay from that offset writes its later events again, so the restore
/// cuts it back and every late event is on disk once.
#[test]
fn a_late_file_running_past_the_restored_offset_is_cut_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = late_record;
    write_late(&Tree::local(dir.path()), "t", 0, &[rec(1), rec(2)]).expect("write");
    let p = write_late(
        &Tree::local(dir.path()),
        "t",
        0,
        &[rec(5), rec(8), rec(12), rec(15)],
    )
    .expect("write")
    .expect("path");
    // The crash: restored at 10, the replay writes 12 and 15 again.
    remove_late_from(&Tree::local(dir.path()), "t", 0, 10).expect("remove");
    write_late(&Tree::local(dir.path()), "t", 0, &[rec(12), rec(15)]).expect("write");
    let mut offsets = Vec::new();
    for f in fs::read_dir(dir.path()).expect("list") {
        let f = f.expect("entry").path();
        for line in fs::read_to_string(&f).expect("read").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            offsets.push(v["offset"].as_i64().expect("offset"));
        }
    }
    offsets.sort();
    assert_eq!(offsets, [1, 2, 5, 8, 12, 15]);
    assert!(p.exists(), "the cut-back file keeps its name");
}

#[test]
fn late_files_are_named_by_first_offset_and_removed_on_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = late_record;
    let p = write_late(
        &Tree::local(dir.path()),
        "tollgate.inference",
        2,
        &[rec(7), rec(8)],
    )
    .expect("write")
    .expect("path");
    assert_eq!(
        p.file_name().and_then(|n| n.to_str()),
        Some("tollgate.inference-2-7.ndjson")
    );
    let text = fs::read_to_string(&p).expect("read");
    assert_eq!(text.lines().count(), 2);
    assert!(text.contains(r#""offset":8"#));
    write_late(
        &Tree::local(dir.path()),
        "tollgate.inference",
        2,
        &[rec(20)],
    )
    .expect("write");
    assert_eq!(
        remove_late_from(&Tree::local(dir.path()), "tollgate.inference", 2, 10).expect("remove"),
        1
    );
    assert!(p.exists());
    assert_eq!(
        remove_late_from(&Tree::local(dir.path()), "tollgate.inference", 2, 7).expect("remove"),
        1
    );
    assert!(!p.exists());
}

#[test]
fn checkpoints_keep_recent_history_and_find_the_committed_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    for o in 0..100 {
        save_checkpoint(
            &Tree::local(dir.path()),
            "t.inference",
            1,
            CheckpointEntry {
                offset: o,
                watermark_ms: Some(o * 10),
            },
        )
        .expect("save");
    }
    assert_eq!(
        load_checkpoint(&Tree::local(dir.path()), "t.inference", 1, 99).expect("load"),
        Some(CheckpointEntry {
            offset: 99,
            watermark_ms: Some(990)
        })
    );
    assert_eq!(
        load_checkpoint(&Tree::local(dir.path()), "t.inference", 1, 40).expect("load"),
        Some(CheckpointEntry {
            offset: 40,
            watermark_ms: Some(400)
        })
    );
    assert_eq!(
        load_checkpoint(&Tree::local(dir.path()), "t.inference", 1, 10).expect("load"),
        None,
        "older than the kept history"
    );
    assert_eq!(
        load_checkpoint(&Tree::local(dir.path()), "t.inference", 2, 99).expect("load"),
        None
    );
    // Readers of the rollup tree do not see checkpoints.
    assert!(list_files(&Tree::local(dir.path()))
        .expect("list")
        .is_empty());
}

#[test]
fn a_partitions_stale_checkpoint_temp_files_are_removed_and_no_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = CheckpointEntry {
        offset: 5,
        watermark_ms: Some(50),
    };
    save_checkpoint(&Tree::local(dir.path()), "t.inference", 0, entry).expect("save");
    let cp = dir.path().join("_tollgate").join("checkpoints");
    // A writer killed between create and rename (its process is gone), this
    // process's own write in flight, and another partition's leftover.
    let gone = format!(".t.inference-0.json.{:016x}-7fffffff-0.tmp", machine());
    let mine = temp_name("t.inference-0.json");
    let other = format!(".t.inference-1.json.{:016x}-7fffffff-0.tmp", machine());
    for name in [&gone, &mine, &other] {
        fs::write(cp.join(name), b"{").expect("tmp");
    }
    assert_eq!(
        remove_stale_checkpoint_temps(&Tree::local(dir.path()), "t.inference", 0).expect("sweep"),
        1
    );
    assert_eq!(
        load_checkpoint(&Tree::local(dir.path()), "t.inference", 0, 5).expect("load"),
        Some(entry)
    );
    assert!(!cp.join(&gone).exists());
    assert!(cp.join(&mine).exists());
    assert!(cp.join(&other).exists());
}

#[test]
fn month_to_date_reads_each_file_once_and_only_its_month() {
    let dir = tempfile::tempdir().expect("tempdir");
    let training = Source {
        kind: "training",
        topic: "tollgate.training",
        partition: 0,
    };
    // 2023-11-14T22:13:00Z and 2023-11-30T23:59:00Z; 2023-12-01T00:00:00Z.
    write_local(dir.path(), SRC, &window(1_699_999_980_000, 1, 2)).expect("write");
    write_local(dir.path(), training, &window(1_701_388_740_000, 5, 6)).expect("write");
    write_local(dir.path(), SRC, &window(1_701_388_800_000, 3, 4)).expect("write");
    // A crash's leftover temp file is not a rollup.
    let hour = dir.path().join("kind=inference/date=2023-11-14/hour=22");
    fs::write(hour.join(".tollgate.inference-2-9.parquet.tmp"), b"partial").expect("tmp");
    let sorted = |m: &MonthToDate, month: &str| {
        let mut v: Vec<_> = m
            .teams(month)
            .map(|(tenant, team, t)| {
                (
                    tenant.to_owned(),
                    team.map(str::to_owned),
                    t.events,
                    t.cost_usd,
                )
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    };

    let mut m = MonthToDate::new(&Tree::local(dir.path()));
    assert_eq!(m.refresh("2023-11").expect("refresh"), 2);
    // Both kinds; untagged usage under no team.
    let t =
        |team: Option<&str>, events, cost| ("t".to_owned(), team.map(str::to_owned), events, cost);
    assert_eq!(
        sorted(&m, "2023-11"),
        [t(None, 2, 1.0), t(Some("ai"), 6, 3.0)]
    );
    // Nothing new: nothing read again.
    assert_eq!(m.refresh("2023-11").expect("refresh"), 0);
    write_local(dir.path(), SRC, &window(1_700_000_040_000, 7, 8)).expect("write");
    assert_eq!(m.refresh("2023-11").expect("refresh"), 1);
    assert_eq!(sorted(&m, "2023-11")[1], t(Some("ai"), 9, 4.5));
    assert_eq!(m.files("2023-11"), 3);

    // A file this process wrote counts from its rows, once, not read back.
    let w = window(1_700_000_100_000, 9, 10);
    let (path, _) = write_local(dir.path(), SRC, &w).expect("write");
    for _ in 0..2 {
        m.add_written(
            &path,
            "2023-11",
            w.rows
                .iter()
                .map(|(d, x)| (d.tenant, d.team, Totals::of(x))),
        );
    }
    assert_eq!(m.refresh("2023-11").expect("refresh"), 0);
    assert_eq!(sorted(&m, "2023-11")[1], t(Some("ai"), 12, 6.0));

    // Windows either side of the month's end interleave: both months kept.
    assert_eq!(m.refresh("2023-12").expect("refresh"), 1);
    assert_eq!(m.refresh("2023-11").expect("refresh"), 0);
    assert_eq!(
        sorted(&m, "2023-12"),
        [t(None, 1, 0.5), t(Some("ai"), 3, 1.5)]
    );
    // A third month drops the oldest.
    assert_eq!(m.refresh("2024-01").expect("refresh"), 0);
    assert_eq!(m.files("2023-11"), 0);
    assert_eq!(m.files("2023-12"), 1);
    // A month older than those kept (a backfill) is read again, whole: its
    // totals are exact, never an empty table.
    assert_eq!(m.refresh("2023-11").expect("refresh"), 4);
    assert_eq!(sorted(&m, "2023-11")[1], t(Some("ai"), 12, 6.0));
    assert_eq!(m.files("2023-11"), 4);
    assert_eq!(m.files("2024-01"), 0);
    // "2023-1" is not a prefix match for December or November.
    assert_eq!(
        MonthToDate::new(&Tree::local(dir.path()))
            .refresh("2023-1")
            .expect("refresh"),
        0
    );
}

#[test]
fn month_to_date_counts_nothing_of_a_file_it_cannot_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_local(dir.path(), SRC, &window(1_699_999_980_000, 1, 2)).expect("write");
    let bad = dir
        .path()
        .join("kind=inference/date=2023-11-14/hour=22/x-0-0.parquet");
    fs::write(&bad, b"not parquet").expect("write");
    let mut m = MonthToDate::new(&Tree::local(dir.path()));
    let e = m.refresh("2023-11").expect_err("corrupt file");
    assert!(e.to_string().contains("x-0-0.parquet"), "{e}");
    // The good file (listed first) is counted once; the bad one not at all.
    let events = |m: &MonthToDate| m.teams("2023-11").map(|(_, _, t)| t.events).sum::<u64>();
    assert_eq!(events(&m), 4);
    fs::remove_file(&bad).expect("rm");
    assert_eq!(m.refresh("2023-11").expect("refresh"), 0);
    assert_eq!(events(&m), 4);
}

/// Create-only publication: the same window again is a no-op, other bytes
/// for the same file (a revoked owner's view of the window) are refused and
/// leave the published file as it was, and no temp file stays behind.
#[test]
fn a_published_window_is_never_replaced_by_other_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = window(1_699_999_980_000, 42, 57);
    let (path, _) = write_local(dir.path(), SRC, &w).expect("write");
    let first = fs::read(&path).expect("read");
    write_local(dir.path(), SRC, &w).expect("the same window again");
    let mut other = window(1_699_999_980_000, 42, 50);
    other.duplicates = 7;
    let err = write_local(dir.path(), SRC, &other).expect_err("other bytes");
    assert!(matches!(err, RollupError::Taken { .. }), "{err}");
    assert!(err.to_string().contains("already published"), "{err}");
    assert_eq!(
        fs::read(&path).expect("read"),
        first,
        "the first file stays"
    );
    let temps: Vec<_> = fs::read_dir(path.parent().expect("dir"))
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

/// Late files are published create-only too: the same batch again is a
/// no-op, another batch under the same name is refused.
#[test]
fn a_published_late_file_is_never_replaced_by_another_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = late_record;
    let p = write_late(&Tree::local(dir.path()), "t", 0, &[rec(7), rec(8)])
        .expect("write")
        .expect("path");
    let first = fs::read(&p).expect("read");
    write_late(&Tree::local(dir.path()), "t", 0, &[rec(7), rec(8)]).expect("the same batch again");
    let err =
        write_late(&Tree::local(dir.path()), "t", 0, &[rec(7), rec(9)]).expect_err("another batch");
    assert!(matches!(err, RollupError::Taken { .. }), "{err}");
    assert_eq!(fs::read(&p).expect("read"), first);
    let names: Vec<String> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["t-0-7.ndjson"], "no temp file left");
}

/// The object-store tree against a real S3-compatible server: moto
/// (`python3 -m moto.server`, installed by `scripts/setup.sh`), started here
/// on a free port and stopped on drop.
mod object_store_tree {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    struct Moto {
        child: Child,
        port: u16,
    }

    impl Moto {
        fn start() -> Moto {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let child = Command::new("python3")
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "python3 -m moto.server (pip install 'moto[server]'; scripts/setup.sh does)",
                );
            let moto = Moto { child, port };
            let deadline = Instant::now() + Duration::from_secs(60);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "moto did not start on {port}");
                std::thread::sleep(Duration::from_millis(100));
            }
            moto
        }

        /// Create a bucket, as an operator would (boto3 comes with moto).
        fn bucket(&self, name: &str) {
            let script = format!(
                "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:{}', \
                 region_name='us-east-1', aws_access_key_id='tollgate-test', \
                 aws_secret_access_key='tollgate-test-secret').create_bucket(Bucket='{name}')",
                self.port
            );
            let out = Command::new("python3")
                .args(["-c", &script])
                .output()
                .expect("python3");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        fn tree(&self, url: &str) -> Tree {
            let s3 = AmazonS3Builder::new()
                .with_endpoint(format!("http://127.0.0.1:{}", self.port))
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("tollgate-test")
                .with_secret_access_key("tollgate-test-secret");
            Tree::open_with(Path::new(url), s3).expect("open")
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn write_to(
        tree: &Tree,
        src: Source<'_>,
        w: &ClosedWindow,
    ) -> Result<(PathBuf, u64), RollupError> {
        EncodedWindow::new(tree, src, w, &to_batch(w)?)?.write()
    }

    #[test]
    #[ignore = "needs python3 -m moto.server; scripts/test.sh runs it"]
    fn an_object_tree_publishes_create_only_and_reads_back() {
        let moto = Moto::start();
        moto.bucket("tollgate-b1");
        let tree = moto.tree("s3://tollgate-b1/pre/fix");
        assert_eq!(tree.display(""), "s3://tollgate-b1/pre/fix");
        assert!(tree.read("nothing").expect("read").is_none());
        assert!(list_files(&tree).expect("list").is_empty());

        // Create-only: the same window again is done; other bytes are
        // refused by the store (`If-None-Match: *`) and the first file stays.
        let w = window(1_699_999_980_000, 42, 57);
        let (path, _) = write_to(&tree, SRC, &w).expect("write");
        let key = "kind=inference/date=2023-11-14/hour=22/tollgate.inference-2-42.parquet";
        assert_eq!(path, Path::new(&format!("s3://tollgate-b1/pre/fix/{key}")));
        let first = tree.read(key).expect("read").expect("there");
        write_to(&tree, SRC, &w).expect("the same window again");
        let mut other = window(1_699_999_980_000, 42, 50);
        other.duplicates = 7;
        let err = write_to(&tree, SRC, &other).expect_err("other bytes");
        assert!(matches!(err, RollupError::Taken { .. }), "{err}");
        assert_eq!(tree.read(key).expect("read").expect("there"), first);

        // Another hour and another kind: listing, restore scan, pruning.
        let training = Source {
            kind: "training",
            topic: "tollgate.training",
            partition: 0,
        };
        write_to(&tree, SRC, &window(1_700_003_600_000, 60, 70)).expect("write");
        write_to(&tree, training, &window(1_699_999_980_000, 1, 2)).expect("write");
        let files = list_files(&tree).expect("list");
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files.windows(2).all(|p| p[0] < p[1]), "sorted: {files:?}");
        let found = scan_written(&tree, SRC, None).expect("scan");
        assert_eq!(
            found.iter().map(|w| w.first_offset).collect::<Vec<_>>(),
            [42, 60]
        );
        assert_eq!(found[0].close_offset, 57);
        let recent = scan_written(&tree, SRC, Some(1_700_003_600_000)).expect("scan");
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].first_offset, 60);

        // Summaries and month to date read the bucket.
        let s = read_summary(&tree).expect("summary");
        assert_eq!((s.files, s.total.events), (3, 12));
        let mut m = MonthToDate::new(&tree);
        assert_eq!(m.refresh("2023-11").expect("refresh"), 3);
        assert_eq!(m.refresh("2023-11").expect("refresh"), 0);

        // DataFusion reads the tree through its object store registry, with
        // the hive columns, in any session.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("h", history_table(&tree).expect("table"))
            .expect("register");
        let sum = |sql: &str| -> i64 {
            let batches = rt
                .block_on(async { ctx.sql(sql).await?.collect().await })
                .expect("query");
            batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("i64")
                .value(0)
        };
        assert_eq!(sum("SELECT CAST(sum(events) AS BIGINT) FROM h"), 12);
        assert_eq!(
            sum("SELECT CAST(sum(events) AS BIGINT) FROM h WHERE kind = 'inference' AND hour = '22'"),
            4
        );

        // A prefix is a directory: a sibling whose name starts the same, or
        // the parent, holds none of the tree's files.
        assert!(list_files(&moto.tree("s3://tollgate-b1/pre/fi"))
            .expect("list")
            .is_empty());
        assert!(list_files(&moto.tree("s3://tollgate-b1/pre"))
            .expect("list")
            .is_empty());

        // Late files: create-only, cut back and removed on replay.
        let late = moto.tree("s3://tollgate-b1/late");
        let rec = late_record;
        write_late(&late, "t", 0, &[rec(1), rec(2)]).expect("write");
        write_late(&late, "t", 0, &[rec(5), rec(8), rec(12)]).expect("write");
        let err = write_late(&late, "t", 0, &[rec(5), rec(9)]).expect_err("another batch");
        assert!(matches!(err, RollupError::Taken { .. }), "{err}");
        assert_eq!(remove_late_from(&late, "t", 0, 10).expect("cut"), 0);
        let kept = late.read("t-0-5.ndjson").expect("read").expect("there");
        assert_eq!(std::str::from_utf8(&kept).expect("utf8").lines().count(), 2);
        assert_eq!(remove_late_from(&late, "t", 0, 2).expect("remove"), 1);
        assert!(late.read("t-0-5.ndjson").expect("read").is_none());

        // Checkpoints beside the rollups, not among them.
        let entry = CheckpointEntry {
            offset: 70,
            watermark_ms: Some(700),
        };
        save_checkpoint(&tree, "tollgate.inference", 2, entry).expect("save");
        assert_eq!(
            load_checkpoint(&tree, "tollgate.inference", 2, 70).expect("load"),
            Some(entry)
        );
        assert_eq!(list_files(&tree).expect("list").len(), 3);
        assert_eq!(
            remove_stale_checkpoint_temps(&tree, "tollgate.inference", 2).expect("sweep"),
            0
        );
    }

    #[test]
    fn only_local_directories_and_s3_are_outputs() {
        for (url, says) in [
            ("gs://b/p", "unsupported scheme `gs://`"),
            ("s3:///p", "no bucket"),
            ("s3://b/a/../c", "`..` are not allowed"),
        ] {
            let err = Tree::open(Path::new(url)).expect_err(url);
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
        assert!(Tree::open(Path::new("data/rollups"))
            .expect("local")
            .local_root()
            .is_some());
    }
}
