//! Message and subject templates: text with `{column}` or `{column:.N}`
//! (N decimals) filled from a violation row; `{{` and `}}` are literal braces.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field {
        name: String,
        decimals: Option<usize>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => field.push(c),
                            None => return Err(format!("unclosed `{{` in {text:?}")),
                        }
                    }
                    let (name, decimals) = match field.split_once(':') {
                        None => (field.as_str(), None),
                        Some((name, spec)) => {
                            let n = spec
                                .strip_prefix('.')
                                .and_then(|d| d.parse::<usize>().ok())
                                .filter(|d| *d <= 12)
                                .ok_or_else(|| {
                                    format!("bad format `{spec}` in `{{{field}}}`: use `:.N` for N decimals (0-12)")
                                })?;
                            (name, Some(n))
                        }
                    };
                    let name = name.trim();
                    if name.is_empty() {
                        return Err(format!("empty `{{}}` in {text:?}"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field {
                        name: name.to_owned(),
                        decimals,
                    });
                }
                '}' => return Err(format!("unmatched `}}` in {text:?} (write `}}}}`)")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// Column names the template reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field { name, .. } => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    pub fn render(&self, row: &Map<String, Value>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { name, decimals } => {
                    render_value(row.get(name).unwrap_or(&Value::Null), *decimals, &mut out)
                }
            }
        }
        out
    }
}

fn render_value(v: &Value, decimals: Option<usize>, out: &mut String) {
    match (v, decimals) {
        (Value::String(s), _) => out.push_str(s),
        (Value::Number(n), Some(d)) => match n.as_f64() {
            Some(f) => out.push_str(&format!("{f:.d$}")),
            None => out.push_str(&n.to_string()),
        },
        (Value::Number(n), None) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (None, None, Some(f)) => tollgate_decision::canonical::es_number(f, out),
            _ => out.push_str(&n.to_string()),
        },
        (Value::Null, _) => out.push_str("null"),
        (other, _) => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_decimals_and_braces() {
        let t =
            Template::parse("team {team} spent {spend:.2} USD {{not a field}} of {limit}").unwrap();
        let row = json!({"team": "ml", "spend": 150.456, "limit": 100.0});
        assert_eq!(
            t.render(row.as_object().unwrap()),
            "team ml spent 150.46 USD {not a field} of 100"
        );
        assert_eq!(t.fields().collect::<Vec<_>>(), ["team", "spend", "limit"]);
        let t = Template::parse("{x}/{y}").unwrap();
        assert_eq!(t.render(json!({"x": 0.1}).as_object().unwrap()), "0.1/null");
    }

    #[test]
    fn rejects_malformed_templates() {
        for bad in ["{team", "a } b", "{}", "{x:2}", "{x:.99}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
