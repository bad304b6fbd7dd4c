//! `GET /v1/decisions`: search the decision log, newest records last,
//! bounded and paginated. The cursor is where the next page starts (a
//! segment and a byte offset in it), so a page reads from there, never from
//! the log's start; `since` skips every segment that ends before it (a
//! segment's records are older than the next segment's first). A page never
//! repeats or skips a record, because the log is append-only. A request that
//! times out or goes away stops reading. A decision belongs to the tenant its subject's first
//! segment names (`tenant=<t>`, up to the first `/`): a tenant token sees
//! exactly those, matched whole (tenant and team names hold no `/`,
//! `tollgate_event::check_name`), so `acme` never sees `acme-eu`'s. A
//! subject that names no tenant is visible to operator tokens only.

use std::io::BufRead;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_decision::{rfc3339_ms, subject_tenant, Verdict};

use crate::param::{Name, NonEmpty};
use crate::problem::Problem;
use crate::query::{parse_instant, read_tenant};
use crate::AppState;
use crate::{scope, Caller};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    since: Option<NonEmpty>,
    policy: Option<NonEmpty>,
    verdict: Option<String>,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt_text")]
    limit: Option<u64>,
    cursor: Option<NonEmpty>,
    tenant: Option<Name>,
}

pub async fn search(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::DecisionsRead>,
    q: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let tenant = read_tenant(&who, q.tenant.as_deref())?;
    let since = q
        .since
        .as_deref()
        .map(|v| parse_instant("since", v).map(rfc3339_ms))
        .transpose()?;
    let verdict = q
        .verdict
        .as_deref()
        .map(|v| {
            v.parse::<Verdict>().map_err(|_| {
                Problem::bad_request(format!("`verdict` must be allow, warn or deny, got {v:?}"))
            })
        })
        .transpose()?;
    let max = s.cfg.http.max_page;
    let limit = crate::param::page(q.limit, max)?;
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(Cursor::parse(c).ok_or_else(|| {
            Problem::bad_request(format!("`cursor` {c:?} is not one this API returned"))
        })?),
    };
    let filter = Filter {
        tenant,
        since,
        policy: q.policy.map(|p| p.0),
        verdict,
    };
    let dir = s.decisions_dir.clone();
    // Set when this request is dropped (timed out, client gone): the
    // scan stops at its next line.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let (found, next) =
        tokio::task::spawn_blocking(move || scan(&dir, after, limit, &filter, &stop))
            .await
            .map_err(|e| Problem::internal(e.to_string()))??;
    Ok(Json(json!({
        "decisions": found,
        "next_cursor": next.map(|c| c.to_string()),
    }))
    .into_response())
}

/// Set when a request is dropped (timed out, client gone): a scan stops
/// at its next line.
pub(crate) struct StopOnDrop(pub(crate) Arc<std::sync::atomic::AtomicBool>);

struct Filter {
    tenant: Option<String>,
    since: Option<String>,
    policy: Option<String>,
    verdict: Option<Verdict>,
}

impl Filter {
    fn matches(&self, d: &Value) -> bool {
        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default();
        if let Some(t) = &self.tenant {
            if subject_tenant(s("subject")) != Some(t.as_str()) {
                return false;
            }
        }
        if self.since.as_deref().is_some_and(|since| s("ts") < since) {
            return false;
        }
        if self.policy.as_deref().is_some_and(|p| s("policy") != p) {
            return false;
        }
        if self.verdict.is_some_and(|v| s("verdict") != v.as_str()) {
            return false;
        }
        true
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a page starts: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cursor {
    segment: u64,
    offset: u64,
}

impl Cursor {
    /// `s<segment>o<offset>`, each 1 to 19 digits (the spec's pattern).
    fn parse(s: &str) -> Option<Cursor> {
        let (seg, off) = s.strip_prefix('s')?.split_once('o')?;
        let number = |v: &str| {
            (!v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse().ok())
                .flatten()
        };
        Some(Cursor {
            segment: number(seg)?,
            offset: number(off)?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}o{}", self.segment, self.offset)
    }
}

/// The log's segments, in order: (number, path).
fn segments(dir: &std::path::Path) -> Result<Vec<(u64, std::path::PathBuf)>, Problem> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Problem::internal(format!(
                "cannot read the decision log: {e}"
            )))
        }
    };
    let mut out: Vec<_> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let n = name
                .to_str()?
                .strip_prefix("segment-")?
                .strip_suffix(".ndjson")?
                .parse::<u64>()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The `ts` of a segment's first record, if it has one.
fn first_ts(path: &std::path::Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(file).read_line(&mut line).ok()?;
    let d: Value = serde_json::from_str(&line).ok()?;
    d.get("ts").and_then(Value::as_str).map(str::to_owned)
}

/// Records from `after` on (the log's start when `None`) that match, at
/// most `limit`; the cursor after the last one when more may follow.
fn scan(
    dir: &std::path::Path,
    after: Option<Cursor>,
    limit: usize,
    f: &Filter,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(Vec<Value>, Option<Cursor>), Problem> {
    use std::io::{Seek, SeekFrom};
    let segs = segments(dir)?;
    let mut first = match after {
        Some(c) => segs
            .iter()
            .position(|(n, _)| *n >= c.segment)
            .unwrap_or(segs.len()),
        None => 0,
    };
    // `since`: a segment whose successor starts before it holds nothing
    // as new.
    if let Some(since) = f.since.as_deref() {
        while first + 1 < segs.len()
            && first_ts(&segs[first + 1].1).is_some_and(|ts| ts.as_str() < since)
        {
            first += 1;
        }
    }
    let mut out = Vec::new();
    for (n, path) in &segs[first..] {
        let file = std::fs::File::open(path).map_err(|e| {
            Problem::internal(format!("cannot read the decision log segment {n}: {e}"))
        })?;
        let mut reader = std::io::BufReader::new(file);
        let mut offset = match after {
            Some(c) if c.segment == *n => c.offset,
            _ => 0,
        };
        reader.seek(SeekFrom::Start(offset)).map_err(|e| {
            Problem::internal(format!("cannot read the decision log segment {n}: {e}"))
        })?;
        let mut line = String::new();
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Problem::unavailable("the request was abandoned"));
            }
            line.clear();
            let read = reader.read_line(&mut line).unwrap_or(0);
            // A line being written right now is not complete yet: stop there.
            if read == 0 || !line.ends_with('\n') {
                break;
            }
            let Ok(d) = serde_json::from_str::<Value>(&line) else {
                break;
            };
            offset += read as u64;
            if !f.matches(&d) {
                continue;
            }
            out.push(d);
            if out.len() == limit {
                return Ok((
                    out,
                    Some(Cursor {
                        segment: *n,
                        offset,
                    }),
                ));
            }
        }
    }
    Ok((out, None))
}
