//! `GET /v1/decisions`: search the decision log, newest records last,
//! bounded and paginated. The cursor is the position of the last record
//! returned; a page never repeats or skips a record, because the log is
//! append-only. A decision belongs to the tenant its subject's first
//! segment names (`tenant=<t>`, up to the first `/`): a tenant token sees
//! exactly those, matched whole (tenant and team names hold no `/`,
//! `tollgate_event::check_name`), so `acme` never sees `acme-eu`'s. A
//! subject that names no tenant is visible to operator tokens only.

use std::io::BufRead;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_decision::{rfc3339_ms, Verdict};

use crate::auth::Scope;
use crate::problem::Problem;
use crate::query::{parse_instant, read_tenant};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    since: Option<String>,
    policy: Option<String>,
    verdict: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    tenant: Option<String>,
}

pub async fn search(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let r = async {
        let who = s.principal(&headers, Scope::DecisionsRead)?;
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
                    Problem::bad_request(format!(
                        "`verdict` must be allow, warn or deny, got {v:?}"
                    ))
                })
            })
            .transpose()?;
        let max = s.cfg.http.max_page;
        let limit = q.limit.unwrap_or(100);
        if limit == 0 || limit > max {
            return Err(Problem::bad_request(format!(
                "`limit` must be within 1..={max}"
            )));
        }
        let after = match q.cursor.as_deref() {
            None => 0,
            Some(c) => c
                .strip_prefix("r")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::bad_request(format!("`cursor` {c:?} is not one this API returned"))
                })?,
        };
        let filter = Filter {
            tenant,
            since,
            policy: q.policy,
            verdict,
        };
        let dir = s.decisions_dir.clone();
        let (found, next) = tokio::task::spawn_blocking(move || scan(&dir, after, limit, &filter))
            .await
            .map_err(|e| Problem::internal(e.to_string()))??;
        Ok::<_, Problem>(
            Json(json!({
                "decisions": found,
                "next_cursor": next.map(|n| format!("r{n}")),
            }))
            .into_response(),
        )
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

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

/// The tenant a decision's subject names: its first segment, `tenant=<t>`.
pub(crate) fn subject_tenant(subject: &str) -> Option<&str> {
    let first = subject.split('/').next()?;
    first.strip_prefix("tenant=")
}

/// Records after position `after` (1-based positions in log order) that
/// match, at most `limit`; the cursor of the last one when more may follow.
fn scan(
    dir: &std::path::Path,
    after: u64,
    limit: usize,
    f: &Filter,
) -> Result<(Vec<Value>, Option<u64>), Problem> {
    let mut segments: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("segment-") && n.ends_with(".ndjson"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(Problem::internal(format!(
                "cannot read the decision log: {e}"
            )))
        }
    };
    segments.sort();
    let mut pos = 0u64;
    let mut out = Vec::new();
    for path in segments {
        let file = std::fs::File::open(&path)
            .map_err(|e| Problem::internal(format!("cannot read {}: {e}", path.display())))?;
        for line in std::io::BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            // A line being written right now is not complete yet: stop there.
            let Ok(d) = serde_json::from_str::<Value>(&line) else {
                break;
            };
            pos += 1;
            if pos <= after || !f.matches(&d) {
                continue;
            }
            out.push(d);
            if out.len() == limit {
                return Ok((out, Some(pos)));
            }
        }
    }
    Ok((out, None))
}
