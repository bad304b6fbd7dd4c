//! One policy file → a planned [`Policy`]: the TOML, the parameters the
//! pipeline config overrides, the SQL planned and type-checked against the
//! engine's tables, the templates checked against the SQL's columns, and
//! the revision.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use datafusion::common::ParamValues;
use datafusion::execution::context::{SQLOptions, SessionContext};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_decision::Verdict;

use crate::plan_cache::{tables_read, PlanCache};
use crate::template::Template;
use crate::{params, Policy, MONTH_TO_DATE};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    description: String,
    verdict: String,
    #[serde(default)]
    kinds: Vec<String>,
    subject: String,
    message: String,
    sql: String,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

const KINDS: [&str; 3] = ["inference", "training", "heartbeat"];

pub(crate) async fn load_one(
    ctx: &SessionContext,
    path: &Path,
    name: &str,
    overrides: Option<&BTreeMap<String, toml::Value>>,
) -> Result<Policy, String> {
    if !valid_name(name) {
        return Err(format!(
            "file name `{name}` is not a valid policy name (lowercase letters, digits, `-`, `_`)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file: PolicyFile = toml::from_str(&text).map_err(|e| e.to_string())?;
    let verdict: Verdict = file.verdict.parse()?;
    if verdict == Verdict::Allow {
        return Err(
            "verdict must be `deny` or `warn`: every row a policy returns is a violation".into(),
        );
    }
    for k in &file.kinds {
        if !KINDS.contains(&k.as_str()) {
            return Err(format!(
                "unknown kind `{k}` in `kinds` (expected {})",
                KINDS.join(", ")
            ));
        }
    }
    let mut params = file.params.clone();
    for (k, v) in overrides.into_iter().flatten() {
        let Some(slot) = params.get_mut(k) else {
            return Err(format!(
                "the pipeline config sets parameter `{k}`, which the policy does not declare under [params]"
            ));
        };
        if std::mem::discriminant(slot) != std::mem::discriminant(v)
            && !matches!(
                (&*slot, v),
                (toml::Value::Float(_), toml::Value::Integer(_))
            )
        {
            return Err(format!(
                "the pipeline config sets parameter `{k}` to {v}, but its default {slot} has another type"
            ));
        }
        *slot = match (&*slot, v) {
            (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
            _ => v.clone(),
        };
    }
    let sql = params::substitute(&file.sql, &params)?;
    let subject = Template::parse(&file.subject).map_err(|e| format!("subject: {e}"))?;
    let message = Template::parse(&file.message).map_err(|e| format!("message: {e}"))?;

    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let plan = ctx
        .sql_with_options(&sql, options)
        .await
        .map_err(|e| format!("SQL: {e}"))?
        .into_unoptimized_plan();
    let columns: HashSet<&str> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    for (what, t) in [("subject", &subject), ("message", &message)] {
        for f in t.fields() {
            if !columns.contains(f) {
                let mut have: Vec<&str> = columns.iter().copied().collect();
                have.sort();
                return Err(format!(
                    "{what} uses `{{{f}}}`, which the SQL does not return (it returns {})",
                    have.join(", ")
                ));
            }
        }
    }
    if subject.fields().next().is_none() {
        return Err("subject must name at least one column, e.g. \"team={team}\"".into());
    }
    // Bind sample window values and optimize: type errors surface now, not
    // on the first window.
    let sample: ParamValues = params::window_values("inference", "check/0", 0, 60_000).into();
    let bound = plan
        .clone()
        .with_param_values(sample)
        .map_err(|e| format!("SQL: {e}"))?;
    ctx.state()
        .optimize(&bound)
        .map_err(|e| format!("SQL: {e}"))?;

    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update([0]);
    h.update(toml::to_string(&params).unwrap_or_default().as_bytes());
    let revision = format!("sha256:{}", &tollgate_decision::hex(&h.finalize())[..16]);
    let tables = tables_read(&plan).map_err(|e| format!("SQL: {e}"))?;
    Ok(Policy {
        name: name.to_owned(),
        path: path.to_owned(),
        revision,
        verdict,
        kinds: file.kinds,
        description: file.description,
        params,
        subject,
        message,
        cache: PlanCache::for_plan(&plan, &tables).map_err(|e| format!("SQL: {e}"))?,
        reads_month_to_date: tables.contains(MONTH_TO_DATE),
        plan,
    })
}
