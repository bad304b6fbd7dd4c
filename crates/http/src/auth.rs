//! Bearer-token authentication with scopes and a tenant per token.
//!
//! `AUTH_MODE=static` (the default): tokens from `AUTH_TOKENS_JSON` or the
//! file named by `AUTH_TOKENS_FILE`, a JSON object
//! `{"<token>": {"tenant": "...", "scopes": ["..."], "subject": "..."}}`
//! (`tenant_id` is accepted for `tenant`). A token belongs to exactly one
//! tenant, or is an operator's (`"operator": true`, no tenant): the
//! deployment's own identity, which reads every tenant and alone may hold
//! `metrics.scrape` (`/metrics` carries every tenant's series). A tenant's
//! `admin` is every scope *of that tenant*, never `/metrics`.
//! Only SHA-256 digests of the tokens are kept; a presented token is hashed
//! and compared with every digest in constant time. No tokens configured:
//! every protected route answers 401 (fail closed).
//!
//! `AUTH_MODE=none`: no checks, every scope, every tenant. For a local,
//! single-user API only.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    IngestWrite,
    GatesCheck,
    UsageRead,
    DecisionsRead,
    QueryRun,
    /// `GET /metrics` and nothing else; operator tokens only.
    MetricsScrape,
    /// Every other scope of the token's tenant; for an operator token,
    /// every scope.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::IngestWrite,
        Scope::GatesCheck,
        Scope::UsageRead,
        Scope::DecisionsRead,
        Scope::QueryRun,
        Scope::MetricsScrape,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::IngestWrite => "ingest.write",
            Scope::GatesCheck => "gates.check",
            Scope::UsageRead => "usage.read",
            Scope::DecisionsRead => "decisions.read",
            Scope::QueryRun => "query.run",
            Scope::MetricsScrape => "metrics.scrape",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `None`: any tenant (an operator token, or AUTH_MODE=none).
    pub tenant: Option<String>,
    pub subject: String,
    scopes: Vec<Scope>,
}

impl Principal {
    pub fn anonymous() -> Self {
        Principal {
            tenant: None,
            subject: "anonymous".into(),
            scopes: Scope::ALL.to_vec(),
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        if self.scopes.contains(&scope) {
            return true;
        }
        // A tenant's admin is not the deployment's: `/metrics` shows every
        // tenant.
        let admin = self.scopes.contains(&Scope::Admin);
        match scope {
            Scope::MetricsScrape => admin && self.tenant.is_none(),
            _ => admin,
        }
    }

    /// May this caller see or write `tenant`'s data?
    pub fn may_access(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("AUTH_MODE must be `static` or `none`, got {0:?}")]
    Mode(String),
    #[error("cannot read AUTH_TOKENS_FILE {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("auth tokens ({origin}): {message}")]
    Parse { origin: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    #[serde(default, alias = "tenant_id")]
    tenant: Option<String>,
    #[serde(default)]
    operator: bool,
    scopes: Vec<String>,
    #[serde(default)]
    subject: Option<String>,
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Static(Vec<([u8; 32], Principal)>),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No or unknown token: 401.
    Unauthenticated(&'static str),
    /// Known token without the scope: 403.
    Forbidden(Scope),
}

impl Auth {
    /// From `AUTH_MODE`, `AUTH_TOKENS_JSON`, `AUTH_TOKENS_FILE`.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Auth, AuthConfigError> {
        let mode = env("AUTH_MODE").unwrap_or_else(|| "static".into());
        match mode.trim() {
            "none" => Ok(Auth::None),
            "static" | "" => {
                let (origin, text) = if let Some(j) =
                    env("AUTH_TOKENS_JSON").filter(|j| !j.trim().is_empty())
                {
                    ("AUTH_TOKENS_JSON".to_string(), j)
                } else if let Some(path) = env("AUTH_TOKENS_FILE").filter(|p| !p.trim().is_empty())
                {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| AuthConfigError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    (path, text)
                } else {
                    return Ok(Auth::Static(Vec::new()));
                };
                Auth::parse_tokens(&text, &origin)
            }
            other => Err(AuthConfigError::Mode(other.to_string())),
        }
    }

    pub fn parse_tokens(text: &str, origin: &str) -> Result<Auth, AuthConfigError> {
        let bad = |message: String| AuthConfigError::Parse {
            origin: origin.to_string(),
            message,
        };
        let entries: BTreeMap<String, TokenEntry> =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::with_capacity(entries.len());
        for (i, (token, e)) in entries.into_iter().enumerate() {
            if token.len() < 16 {
                return Err(bad(format!(
                    "token #{} (subject {:?}) is shorter than 16 characters",
                    i + 1,
                    e.subject
                )));
            }
            let tenant = match (e.tenant, e.operator) {
                (Some(t), false) => {
                    tollgate_event::check_name(&t).map_err(|why| {
                        bad(format!("token #{} has an invalid tenant: {why}", i + 1))
                    })?;
                    Some(t)
                }
                (None, true) => None,
                (Some(_), true) => {
                    return Err(bad(format!(
                        "token #{} is an operator's and names a tenant: an operator token belongs to no tenant",
                        i + 1
                    )))
                }
                (None, false) => {
                    return Err(bad(format!(
                        "token #{} has no tenant (give `tenant`, or `\"operator\": true` for a deployment-wide token)",
                        i + 1
                    )))
                }
            };
            let mut scopes = Vec::new();
            for s in &e.scopes {
                let scope = Scope::parse(s).ok_or_else(|| {
                    let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                    bad(format!(
                        "token #{}: unknown scope {s:?} (known: {})",
                        i + 1,
                        known.join(", ")
                    ))
                })?;
                if scope == Scope::MetricsScrape && tenant.is_some() {
                    return Err(bad(format!(
                        "token #{}: `metrics.scrape` is for operator tokens only (`/metrics` shows every tenant)",
                        i + 1
                    )));
                }
                scopes.push(scope);
            }
            let principal = Principal {
                subject: e.subject.unwrap_or_else(|| format!("token-{}", i + 1)),
                tenant,
                scopes,
            };
            out.push((digest(&token), principal));
        }
        Ok(Auth::Static(out))
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Static(_) => "static",
        }
    }

    /// Authenticate `authorization` (the header's value) for `scope`.
    pub fn check(&self, authorization: Option<&str>, scope: Scope) -> Result<Principal, Denied> {
        let tokens = match self {
            Auth::None => return Ok(Principal::anonymous()),
            Auth::Static(t) => t,
        };
        let Some(header) = authorization else {
            return Err(Denied::Unauthenticated("missing bearer token"));
        };
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            return Err(Denied::Unauthenticated(
                "the Authorization header must be `Bearer <token>`",
            ));
        };
        let presented = digest(token.trim());
        // Compare with every token, always: the time taken does not depend
        // on which token matched or how much of it.
        let mut found: Option<&Principal> = None;
        for (d, p) in tokens {
            if bool::from(d.ct_eq(&presented)) {
                found = Some(p);
            }
        }
        let p = found.ok_or(Denied::Unauthenticated("unknown token"))?;
        if p.has(scope) {
            Ok(p.clone())
        } else {
            Err(Denied::Forbidden(scope))
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TOKENS: &str = r#"{
        "acme-reader-0123456789": {"tenant": "acme", "scopes": ["usage.read"], "subject": "dash"},
        "acme-admin-0123456789": {"tenant": "acme", "scopes": ["admin"]}
    }"#;

    #[test]
    fn scopes_tenants_and_refusals() {
        let a = Auth::parse_tokens(TOKENS, "test").unwrap();
        let p = a
            .check(Some("Bearer acme-reader-0123456789"), Scope::UsageRead)
            .unwrap();
        assert_eq!(p.tenant.as_deref(), Some("acme"));
        assert_eq!(p.subject, "dash");
        assert!(p.may_access("acme") && !p.may_access("globex"));
        assert_eq!(
            a.check(Some("Bearer acme-reader-0123456789"), Scope::QueryRun),
            Err(Denied::Forbidden(Scope::QueryRun))
        );
        assert!(a
            .check(Some("Bearer acme-admin-0123456789"), Scope::QueryRun)
            .is_ok());
        assert!(matches!(
            a.check(None, Scope::UsageRead),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            a.check(Some("Bearer acme-reader-012345678"), Scope::UsageRead),
            Err(Denied::Unauthenticated("unknown token"))
        ));
        assert!(matches!(
            a.check(Some("Basic abc"), Scope::UsageRead),
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[test]
    fn no_tokens_means_nothing_is_allowed() {
        let a = Auth::from_env(|_| None).unwrap();
        assert_eq!(a.mode(), "static");
        assert!(a
            .check(Some("Bearer anything-at-all-123"), Scope::UsageRead)
            .is_err());
        let none = Auth::from_env(|k| (k == "AUTH_MODE").then(|| "none".to_string())).unwrap();
        assert!(none.check(None, Scope::Admin).unwrap().may_access("any"));
    }

    #[test]
    fn operators_belong_to_no_tenant_and_alone_scrape() {
        let a = Auth::parse_tokens(
            r#"{
                "operator-admin-0123456789": {"operator": true, "scopes": ["admin"]},
                "prometheus-scrape-012345": {"operator": true, "scopes": ["metrics.scrape"]},
                "acme-admin-0123456789": {"tenant_id": "acme", "scopes": ["admin"]}
            }"#,
            "test",
        )
        .unwrap();
        let op = a
            .check(
                Some("Bearer operator-admin-0123456789"),
                Scope::MetricsScrape,
            )
            .unwrap();
        assert_eq!(op.tenant, None);
        assert!(op.may_access("acme") && op.may_access("globex"));
        let scrape = a
            .check(
                Some("Bearer prometheus-scrape-012345"),
                Scope::MetricsScrape,
            )
            .unwrap();
        for s in Scope::ALL
            .into_iter()
            .filter(|s| *s != Scope::MetricsScrape)
        {
            assert!(!scrape.has(s), "{s:?}");
        }
        // `tenant_id` is `tenant`; a tenant's admin is not the deployment's.
        let tenant_admin = a
            .check(Some("Bearer acme-admin-0123456789"), Scope::QueryRun)
            .unwrap();
        assert_eq!(tenant_admin.tenant.as_deref(), Some("acme"));
        assert!(!tenant_admin.has(Scope::MetricsScrape));
        assert_eq!(
            a.check(Some("Bearer acme-admin-0123456789"), Scope::MetricsScrape),
            Err(Denied::Forbidden(Scope::MetricsScrape))
        );
    }

    #[test]
    fn token_entries_that_cannot_be_scoped_are_refused() {
        for (entry, says) in [
            (
                r#"{"tenant": "acme", "scopes": ["metrics.scrape"]}"#,
                "operator tokens only",
            ),
            (
                r#"{"tenant": "acme", "operator": true, "scopes": []}"#,
                "belongs to no tenant",
            ),
            (r#"{"scopes": ["admin"]}"#, "has no tenant"),
            (r#"{"tenant": "acme/eu", "scopes": []}"#, "invalid tenant"),
            (r#"{"tenant": "", "scopes": []}"#, "invalid tenant"),
            (
                r#"{"tenant": "a", "tenant_id": "b", "scopes": []}"#,
                "duplicate field",
            ),
        ] {
            let text = format!(r#"{{"long-enough-token-1": {entry}}}"#);
            let e = Auth::parse_tokens(&text, "x").unwrap_err().to_string();
            assert!(e.contains(says), "{entry}: {e}");
            assert!(
                !e.contains("long-enough-token-1"),
                "the token is never printed: {e}"
            );
        }
    }

    #[test]
    fn bad_config_is_named() {
        let e = Auth::from_env(|k| (k == "AUTH_MODE").then(|| "open".to_string())).unwrap_err();
        assert!(e.to_string().contains("\"open\""));
        let e = Auth::parse_tokens(r#"{"short": {"tenant": "a", "scopes": []}}"#, "x").unwrap_err();
        assert!(e.to_string().contains("shorter than 16"));
        let e = Auth::parse_tokens(
            r#"{"long-enough-token-1": {"tenant": "a", "scopes": ["read"]}}"#,
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown scope \"read\""));
    }
}
