//! Typed query-string values. Each refuses, when the query string is read,
//! what `schemas/openapi.yaml` says the parameter cannot be, so the spec
//! and the server state one rule: `?team=` is a 400 naming `team`, never
//! read as "every team" nor as a team called "".

use std::ops::Deref;

use serde::de::{Deserializer, Error};
use serde::{Deserialize, Serialize};

/// A value that must not be empty (the spec's `minLength: 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct NonEmpty(pub(crate) String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(D::Error::custom("must not be empty"));
        }
        Ok(NonEmpty(s))
    }
}

impl Deref for NonEmpty {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A tenant or team name, by the events' rule
/// ([`tollgate_event::check_name`]; the spec's `Name` pattern). The error
/// does not echo the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct Name(pub(crate) String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        tollgate_event::check_name(&s).map_err(D::Error::custom)?;
        Ok(Name(s))
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A page size from `limit` (default 100): at least 1, and served as at
/// most `max` (`http.max_page`).
pub(crate) fn page(limit: Option<u64>, max: usize) -> Result<usize, crate::problem::Problem> {
    match limit {
        Some(0) => Err(crate::problem::Problem::bad_request(
            "`limit` must be at least 1",
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(max)),
        None => Ok(100.min(max)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Q {
        team: Option<Name>,
        project: Option<NonEmpty>,
    }

    /// As the handlers read it (axum's `Query`), the text a caller gets.
    fn read(q: &str) -> Result<Q, String> {
        let uri: axum::http::Uri = format!("/?{q}").parse().unwrap();
        axum::extract::Query::<Q>::try_from_uri(&uri)
            .map(|q| q.0)
            .map_err(|e| e.body_text())
    }

    #[test]
    fn empty_and_ill_formed_values_are_refused_by_name() {
        assert_eq!(
            read("team=").unwrap_err(),
            "Failed to deserialize query string: team: must not be empty"
        );
        assert_eq!(
            read("project=").unwrap_err(),
            "Failed to deserialize query string: project: must not be empty"
        );
        let e = read("team=a%2Fb").unwrap_err();
        assert!(e.contains("team: has a character other than"), "{e}");
        assert!(!e.contains("a/b"), "the value is not echoed: {e}");
        let q = read("team=ml-1&project=x%20y").unwrap();
        assert_eq!(q.team.as_deref(), Some("ml-1"));
        assert_eq!(q.project.as_deref(), Some("x y"));
        assert!(read("").unwrap().team.is_none());
    }
}
