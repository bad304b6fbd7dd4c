//! Release gates: the request CI/CD sends before a promotion, the live spend
//! context it is judged with, and the Rego rules (OPA-compatible, evaluated
//! in-process by `regorus`) that judge it. Pure: modules and data come in as
//! strings and JSON, the verdict goes out as a decision [`Draft`]; loading
//! files, signing and logging belong to the adapters.
//!
//! The contract with the Rego modules: every module is in package
//! `tollgate.gate` and adds objects `{"rule": ..., "message": ...}` to the
//! set `violations`. The request is allowed when that set is empty. The
//! thresholds are `data.tollgate.params` (the `[policies.params]` and
//! `[gates.params]` tables of the config).
//!
//! Checks that depend on the thresholds alone (a threshold that is not
//! configured) go to the set `misconfigured` instead, with the same
//! `{rule, message}` shape. It is evaluated once per load, without `input`,
//! and its members are added to every answer (so each answer denies) until
//! the configuration is fixed and reloaded: a check that is the same for
//! every request is not repeated for every request.
//!
//! Modules written for OPA in the usual FinOps style are gates too, when
//! their package is configured (`[gates] packages`): `deny` is a set of
//! messages (strings, or objects with `msg`), each a violation whose rule is
//! the package name; if the package declares `allow`, an answer with no
//! `deny` still needs `allow == true`. All configured packages are judged
//! in one evaluation (a generated entry rule, [`ANSWER`]).
//!
//! Fail closed: a module that does not compile stops the load, and so does
//! a configured package no module declares; an evaluation error, or a
//! violation that is not `{rule, message}` (or a message), is a deny whose
//! reason names the problem.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tollgate_decision::{Draft, Verdict};

/// The rule path every gate module contributes to.
pub const ENTRYPOINT: &str = "data.tollgate.gate.violations";
/// Input-independent violations (missing thresholds), evaluated once per load.
pub const MISCONFIGURED: &str = "data.tollgate.gate.misconfigured";
/// The generated rule that gathers every configured gate package.
pub const ANSWER: &str = "data.tollgate.internal.answer";
/// The package of the shipped gate modules (`violations`, `misconfigured`).
pub const TOLLGATE_PACKAGE: &str = "tollgate.gate";
/// `policy` of gate decisions in the decision log.
pub const POLICY: &str = "gate";
/// Prepared Data API engines kept per [`GateEngine`] (at most one per
/// request in flight is ever made).
const IDLE_ENGINES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("no gate modules (*.rego) given")]
    NoModules,
    #[error("gate module {module}: {message}")]
    Module { module: String, message: String },
    #[error("gate rules do not define `{ENTRYPOINT}` (package tollgate.gate, rule `violations contains ...`): {0}")]
    Compile(String),
    #[error("gate data: {0}")]
    Data(String),
    #[error("gate rules: `{MISCONFIGURED}` could not be evaluated: {0}")]
    Misconfigured(String),
    #[error("gate package {0:?} is configured ([gates] packages) but no module declares it")]
    MissingPackage(String),
    #[error("gate package {0:?} is not a package name (dot-separated identifiers)")]
    BadPackage(String),
}

/// Counts of security findings by severity (from the release's scan).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityScan {
    #[serde(default, deserialize_with = "tollgate_event::whole::one")]
    pub critical: u64,
    #[serde(default, deserialize_with = "tollgate_event::whole::one")]
    pub high: u64,
    #[serde(default, deserialize_with = "tollgate_event::whole::one")]
    pub medium: u64,
    #[serde(default, deserialize_with = "tollgate_event::whole::one")]
    pub low: u64,
}

/// The body of `POST /v1/gates/policy-check`. Unknown fields are refused,
/// so that a misspelt field cannot silently skip a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateRequest {
    /// Projected cost of one request of the release, USD.
    pub unit_cost_usd: f64,
    #[serde(default)]
    pub cost_tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carbon_intensity_g_per_kwh: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Fraction of tests that passed, 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_pass_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_scan: Option<SecurityScan>,
    /// Spend the release is expected to add in the current window, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_spend_usd: Option<f64>,
}

impl GateRequest {
    /// Range checks serde cannot express. The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let non_negative = |name: &str, v: f64| {
            if !v.is_finite() || v < 0.0 {
                Err(format!("{name} must be a finite number >= 0, got {v}"))
            } else {
                Ok(())
            }
        };
        non_negative("unit_cost_usd", self.unit_cost_usd)?;
        if let Some(v) = self.carbon_intensity_g_per_kwh {
            non_negative("carbon_intensity_g_per_kwh", v)?;
        }
        if let Some(v) = self.projected_spend_usd {
            non_negative("projected_spend_usd", v)?;
        }
        if let Some(v) = self.test_pass_rate {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("test_pass_rate must be within 0..=1, got {v}"));
            }
        }
        // The names the decision's subject and the live spend are keyed by:
        // the events' rule (no `/` that could pass for another tenant's
        // subject).
        // An empty team tag is a missing one: the tags rule judges it.
        let tag_team = self.cost_tags.get("team").filter(|t| !t.is_empty());
        for (field, v) in [
            ("tenant", self.tenant.as_ref()),
            ("team", self.team.as_ref()),
            ("cost_tags.team", tag_team),
        ] {
            if let Some(v) = v {
                tollgate_event::check_name(v).map_err(|why| format!("{field} {why}"))?;
            }
        }
        Ok(())
    }

    /// The team the request is for: `team`, else the `team` cost tag.
    pub fn team(&self) -> Option<&str> {
        self.team
            .as_deref()
            .or_else(|| self.cost_tags.get("team").map(String::as_str))
    }
}

/// Spend totals of one team.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spend {
    pub spend_usd: f64,
    pub events: u64,
}

/// The live context a gate request is judged with.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GateContext {
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The team's newest open window (all source partitions), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpend>,
    /// The team's spend in the current UTC month: written rollups plus open windows.
    pub month: MonthSpend,
    /// When the live state was taken (RFC 3339).
    pub as_of: String,
    /// How fresh a spend summed across instances is (`[spend]`); absent
    /// when the gate answers from its own process's spend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
}

/// The freshness of a team's spend summed over its partitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Freshness {
    /// Partitions with usage of the team.
    pub partitions: usize,
    /// The oldest of their watermarks (RFC 3339): every event of the team
    /// up to it is counted. Absent while a partition has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// The oldest of their owners' last publishes (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowSpend {
    pub start: String,
    pub end: String,
    pub spend_usd: f64,
    pub events: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MonthSpend {
    /// First day of the month, `YYYY-MM-DD`.
    pub start: String,
    pub spend_usd: f64,
    pub events: u64,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub rule: String,
    pub message: String,
}

/// The verdict of the rules on one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub allow: bool,
    /// Sorted by rule, then message.
    pub violations: Vec<Violation>,
    /// The rules could not be evaluated (the one violation says why).
    pub failed: bool,
}

/// Compiled gate rules. Cheap to share between threads; evaluation does
/// not lock.
#[derive(Clone)]
pub struct GateEngine {
    policy: regorus::CompiledPolicy,
    /// The configured packages, in the order of [`ANSWER`]'s members.
    packages: Arc<[GatePackage]>,
    /// Modules and data, for the Data API (any rule of a gate package).
    template: regorus::Engine,
    /// Engines cloned from `template` and prepared by a first query, kept
    /// for the next Data API call (a clone per call costs about four
    /// evaluations: `benches/benches/decisions.rs`, `gate_regorus`).
    idle: Arc<std::sync::Mutex<Vec<regorus::Engine>>>,
    /// Members of [`MISCONFIGURED`], found at load.
    misconfigured: Arc<[Violation]>,
    revision: Arc<str>,
    modules: Arc<[String]>,
}

impl std::fmt::Debug for GateEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateEngine")
            .field("revision", &self.revision)
            .field("modules", &self.modules)
            .finish_non_exhaustive()
    }
}

/// A configured gate package and what its modules declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatePackage {
    /// `finops`, `tollgate.gate`.
    pub name: String,
    /// The package declares `allow` (OPA style): it must be true.
    pub has_allow: bool,
}

impl GatePackage {
    fn is_tollgate(&self) -> bool {
        self.name == TOLLGATE_PACKAGE
    }
}

/// Is `name` a package name the generated entry rule can refer to?
fn valid_package(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|seg| {
            let mut c = seg.chars();
            c.next()
                .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        })
}

/// The entry module: one member per package, undefined ones as empty sets.
fn entry_module(packages: &[GatePackage]) -> String {
    let mut src = String::from("package tollgate.internal\n\nimport rego.v1\n\n");
    let mut members = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let set = if p.is_tollgate() {
            "violations"
        } else {
            "deny"
        };
        src.push_str(&format!(
            "default p{i}_deny := set()\np{i}_deny := data.{}.{set}\n",
            p.name
        ));
        if p.has_allow {
            src.push_str(&format!(
                "default p{i}_allow := \"undefined\"\np{i}_allow := data.{}.allow\n",
                p.name
            ));
            members.push(format!("[p{i}_deny, p{i}_allow]"));
        } else {
            members.push(format!("[p{i}_deny]"));
        }
    }
    src.push_str(&format!("\nanswer := [{}]\n", members.join(", ")));
    src
}

impl GateEngine {
    /// [`GateEngine::compile_packages`] with the shipped package alone.
    pub fn compile(modules: Vec<(String, String)>, data: Value) -> Result<Self, GateError> {
        Self::compile_packages(modules, data, &[TOLLGATE_PACKAGE.to_string()], true)
    }

    /// Compile `(name, source)` modules with `data` as `data.tollgate`
    /// (`{"params": {...}, "regions": {region: g/kWh}}`), judging with the
    /// gate `packages`. The revision is a hash of all three, so every
    /// decision names exactly the rules and thresholds that made it.
    ///
    /// `strict_builtin_errors`: a built-in given the wrong type
    /// (`trim_space(null)`, `1 / 0`) aborts the evaluation, so the gate
    /// denies with the reason (fail closed; regorus's default, and OPA's
    /// `--strict-builtin-errors`). `false` is OPA's default: the expression
    /// is undefined and the rule simply does not fire.
    pub fn compile_packages(
        mut modules: Vec<(String, String)>,
        data: Value,
        packages: &[String],
        strict_builtin_errors: bool,
    ) -> Result<Self, GateError> {
        if modules.is_empty() {
            return Err(GateError::NoModules);
        }
        if let Some(bad) = packages.iter().find(|p| !valid_package(p)) {
            return Err(GateError::BadPackage(bad.clone()));
        }
        modules.sort();
        let mut engine = regorus::Engine::new();
        engine.set_strict_builtin_errors(strict_builtin_errors);
        let mut hash = Sha256::new();
        for (name, source) in &modules {
            engine
                .add_policy(name.clone(), source.clone())
                .map_err(|e| GateError::Module {
                    module: name.clone(),
                    message: e.to_string(),
                })?;
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(source.as_bytes());
            hash.update([0]);
        }
        let data = serde_json::json!({ "tollgate": data });
        let canonical = tollgate_decision::canonical::to_string(&data);
        hash.update(canonical.as_bytes());
        engine
            .add_data(regorus::Value::from(data))
            .map_err(|e| GateError::Data(e.to_string()))?;
        let mut gate_packages = Vec::new();
        let declared = engine
            .get_packages()
            .map_err(|e| GateError::Compile(e.to_string()))?;
        for name in packages {
            hash.update(name.as_bytes());
            hash.update([0]);
            let pkg = format!("data.{name}");
            let sources: Vec<&String> = modules
                .iter()
                .zip(&declared)
                .filter(|(_, d)| **d == pkg)
                .map(|((n, _), _)| n)
                .collect();
            if sources.is_empty() {
                return Err(GateError::MissingPackage(name.clone()));
            }
            let mut has_allow = false;
            for src in sources {
                has_allow |= engine
                    .has_declared_rule_rooted_at(src, "allow")
                    .map_err(|e| GateError::Compile(e.to_string()))?;
            }
            gate_packages.push(GatePackage {
                name: name.clone(),
                has_allow: has_allow && name != TOLLGATE_PACKAGE,
            });
        }
        let template = engine.clone();
        engine
            .add_policy("<tollgate entry>".into(), entry_module(&gate_packages))
            .map_err(|e| GateError::Compile(e.to_string()))?;
        // A query, not `eval_rule`: rules that define no such set are fine
        // (the query has no result).
        let found = engine
            .eval_query(MISCONFIGURED.into(), false)
            .map_err(|e| GateError::Misconfigured(e.to_string()))?;
        let value = found
            .result
            .into_iter()
            .next()
            .and_then(|q| q.expressions.into_iter().next())
            .map_or(regorus::Value::Undefined, |e| e.value);
        let misconfigured = violation_list(value, None).map_err(GateError::Misconfigured)?;
        let entry: regorus::Rc<str> = ANSWER.into();
        let policy = engine
            .compile_with_entrypoint(&entry)
            .map_err(|e| GateError::Compile(e.to_string()))?;
        let revision = format!("sha256:{}", &tollgate_decision::hex(&hash.finalize())[..16]);
        Ok(GateEngine {
            policy,
            packages: gate_packages.into(),
            template,
            idle: Arc::default(),
            misconfigured: misconfigured.into(),
            revision: revision.into(),
            modules: modules.into_iter().map(|(n, _)| n).collect(),
        })
    }

    /// A regorus engine with the modules, the data and the entry rule
    /// ([`ANSWER`]), for measuring the other ways regorus evaluates
    /// (`benches/benches/decisions.rs`, group `gate_regorus`).
    pub fn regorus_engine(&self) -> Result<regorus::Engine, GateError> {
        let mut engine = self.template.clone();
        engine
            .add_policy("<tollgate entry>".into(), entry_module(&self.packages))
            .map_err(|e| GateError::Compile(e.to_string()))?;
        Ok(engine)
    }

    /// The configured gate packages.
    pub fn packages(&self) -> &[GatePackage] {
        &self.packages
    }

    pub fn revision(&self) -> &str {
        &self.revision
    }

    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// What the load found wrong with the configuration (each answer denies
    /// with these while it lasts).
    pub fn misconfigured(&self) -> &[Violation] {
        &self.misconfigured
    }

    /// Judge `input` (see [`gate_input`]) by every configured package.
    /// Never fails: a rule that cannot be evaluated denies, with the reason.
    pub fn evaluate(&self, input: &Value) -> Outcome {
        self.outcome(input, None)
    }

    /// Judge `input` by one configured package (the Data API's answer for
    /// that package), or by all of them (`None`).
    pub fn outcome(&self, input: &Value, package: Option<&str>) -> Outcome {
        let wanted = |p: &GatePackage| package.is_none_or(|name| name == p.name);
        match self.violations(input) {
            Ok(found) => {
                let mut violations: Vec<Violation> = found
                    .into_iter()
                    .filter(|(i, _)| wanted(&self.packages[*i]))
                    .map(|(_, v)| v)
                    .collect();
                // The thresholds the shipped rules read.
                if package.is_none_or(|p| p == TOLLGATE_PACKAGE) {
                    violations.extend(self.misconfigured.iter().cloned());
                }
                violations.sort_by(|a, b| (&a.rule, &a.message).cmp(&(&b.rule, &b.message)));
                violations.dedup();
                Outcome {
                    allow: violations.is_empty(),
                    violations,
                    failed: false,
                }
            }
            Err(message) => Outcome {
                allow: false,
                violations: vec![Violation {
                    rule: "evaluation".into(),
                    message: format!("gate rules could not be evaluated, denying: {message}"),
                }],
                failed: true,
            },
        }
    }

    /// Every violation, with the index of its package.
    fn violations(&self, input: &Value) -> Result<Vec<(usize, Violation)>, String> {
        let answer = self
            .policy
            .eval_with_input(regorus::Value::from(input.clone()))
            .map_err(|e| e.to_string())?;
        let json = serde_json::to_value(&answer).map_err(|e| e.to_string())?;
        let Value::Array(members) = json else {
            return Err(format!("the gate entry rule gave {json}, not a list"));
        };
        if members.len() != self.packages.len() {
            return Err(format!(
                "the gate entry rule gave {} answers for {} packages",
                members.len(),
                self.packages.len()
            ));
        }
        let mut out = Vec::new();
        for (i, (p, member)) in self.packages.iter().zip(members).enumerate() {
            let (deny, allow) = match member {
                Value::Array(mut v) if !v.is_empty() => {
                    let allow = (v.len() > 1).then(|| v.remove(1));
                    (v.remove(0), allow)
                }
                other => return Err(format!("package {}: unexpected answer {other}", p.name)),
            };
            let package = (!p.is_tollgate()).then_some(p.name.as_str());
            let mut found = violation_list(json_to_regorus(deny), package)
                .map_err(|e| format!("package {}: {e}", p.name))?;
            if found.is_empty() {
                if let Some(a) = allow.filter(|a| *a != Value::Bool(true)) {
                    let shown = match &a {
                        Value::String(s) if s == "undefined" => "undefined".to_string(),
                        other => other.to_string(),
                    };
                    found.push(Violation {
                        rule: p.name.clone(),
                        message: format!("data.{}.allow is {shown}, not true", p.name),
                    });
                }
            }
            out.extend(found.into_iter().map(|v| (i, v)));
        }
        Ok(out)
    }

    /// The OPA Data API: `data.<path>` (segments) with `input`, for a path
    /// inside a configured gate package. `Ok(None)`: undefined (OPA answers
    /// `{}`). `Err`: not a gate path, or the rule could not be evaluated.
    pub fn data(&self, path: &[&str], input: Option<&Value>) -> Result<Option<Value>, DataError> {
        if self.package_of(path).is_none() || !path.iter().all(|s| valid_package(s)) {
            return Err(DataError::NotAGate(path.join("/")));
        }
        let kept = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut engine = kept.unwrap_or_else(|| self.template.clone());
        // Every call sets the input (undefined without one), so nothing of
        // the previous caller's is left; the query resets the rest.
        engine.set_input(input.map_or(regorus::Value::Undefined, |i| {
            regorus::Value::from(i.clone())
        }));
        let query = format!("data.{}", path.join("."));
        let results = engine.eval_query(query, false);
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_ENGINES {
                idle.push(engine);
            }
        }
        let results = results.map_err(|e| DataError::Eval(e.to_string()))?;
        let value = results
            .result
            .into_iter()
            .next()
            .and_then(|q| q.expressions.into_iter().next())
            .map(|e| e.value);
        match value {
            None | Some(regorus::Value::Undefined) => Ok(None),
            Some(v) => serde_json::to_value(&v)
                .map(Some)
                .map_err(|e| DataError::Eval(e.to_string())),
        }
    }

    /// The configured gate package `path` lies in (the longest match).
    pub fn package_of(&self, path: &[&str]) -> Option<&GatePackage> {
        self.packages
            .iter()
            .filter(|p| {
                let segs: Vec<&str> = p.name.split('.').collect();
                path.len() >= segs.len() && path[..segs.len()] == segs[..]
            })
            .max_by_key(|p| p.name.len())
    }
}

/// Why the Data API has no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    #[error("data/{0} is not inside a gate package ([gates] packages)")]
    NotAGate(String),
    #[error("the rule could not be evaluated: {0}")]
    Eval(String),
}

fn json_to_regorus(v: Value) -> regorus::Value {
    regorus::Value::from(v)
}

/// The members of a violation set; undefined (a partial set no rule added
/// to) is empty. For an OPA-style `package`, members are messages (a
/// string, or an object with `msg` or `message`) and the rule is the
/// package name.
fn violation_list(result: regorus::Value, package: Option<&str>) -> Result<Vec<Violation>, String> {
    if result == regorus::Value::Undefined {
        return Ok(Vec::new());
    }
    let json = serde_json::to_value(&result).map_err(|e| e.to_string())?;
    let Value::Array(items) = json else {
        return Err(format!("a violation set must be a set, got {json}"));
    };
    items
        .iter()
        .map(|v| match package {
            None => Violation::deserialize(v).map_err(|_| {
                format!("a violation must be {{\"rule\": string, \"message\": string}}, got {v}")
            }),
            Some(p) => {
                let msg = match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => o
                        .get("msg")
                        .or_else(|| o.get("message"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    _ => None,
                };
                msg.map(|message| Violation {
                    rule: p.to_string(),
                    message,
                })
                .ok_or_else(|| {
                    format!("a deny message must be a string or {{\"msg\": string}}, got {v}")
                })
            }
        })
        .collect()
}

/// Turn off backtrace capture for library errors (`RUST_LIB_BACKTRACE=0`)
/// unless the environment chose otherwise. The Rego interpreter creates and
/// discards `anyhow` errors while it evaluates; with `RUST_BACKTRACE=1` in
/// the environment each of them captures a backtrace, which halves gate
/// throughput (measured: 455 → 246 µs per evaluation). Panics keep their
/// backtraces. Call at the start of `main`, before any thread exists.
pub fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// The Rego `input`: the request's fields plus `context`.
pub fn gate_input(req: &GateRequest, ctx: &GateContext) -> Value {
    let mut input = match serde_json::to_value(req) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    input.insert(
        "context".into(),
        serde_json::to_value(ctx).unwrap_or(Value::Null),
    );
    Value::Object(input)
}

/// The decision a gate answer is logged as. `request_key` makes the id
/// (with the tenant):
/// the caller's idempotency key (a retried request gets the same decision)
/// or a fresh unique value.
pub fn draft(engine: &GateEngine, input: Value, outcome: &Outcome, request_key: &str) -> Draft {
    let tenant = input
        .pointer("/context/tenant")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let observed = match input {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Draft {
        policy: POLICY.into(),
        policy_revision: engine.revision().to_string(),
        // Team and everything else are in `observed`; the subject (and so
        // the id) depends on tenant and request key only, so a key names
        // one request of the tenant whatever its body.
        subject: format!("tenant={tenant}/request={request_key}"),
        window: None,
        observed,
        verdict: if outcome.allow {
            Verdict::Allow
        } else {
            Verdict::Deny
        },
        reasons: outcome
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.rule, v.message))
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
