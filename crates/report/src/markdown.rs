//! The report as Markdown: headings and tables, for a chat message, an
//! issue or a wiki page.

use std::fmt::Write;

use serde_json::Value;

use crate::{node_cells, Report, Usage, NODE_COLUMNS, TABLE_ROWS};

/// `1234567` as `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut o = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            o.push(',');
        }
        o.push(c);
    }
    o
}

/// Dollars: cents from $100 up (with thousands separators), else four
/// decimals (unit costs are fractions of a cent).
pub(crate) fn usd(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "" };
    let a = v.abs();
    if a >= 100.0 {
        let cents = (a * 100.0).round() as u64;
        format!("{sign}${}.{:02}", count(cents / 100), cents % 100)
    } else {
        format!("{sign}${a:.4}")
    }
}

pub(crate) fn grams(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{:.2} kg", v / 1000.0)
    } else {
        format!("{v:.2} g")
    }
}

pub(crate) fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "—".into(), f)
}

pub(crate) fn percent(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

pub(crate) fn name(v: Option<&str>) -> String {
    v.unwrap_or("(untagged)").to_string()
}

/// What the data says, as text: no markup, and in a table cell no pipe or
/// line break of its own.
fn cell(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn tokens(u: &Usage) -> String {
    count(u.input_tokens + u.output_tokens)
}

pub(crate) fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Tollgate report: {}, {}\n", r.period, cell(&r.whose()));
    let _ = writeln!(
        o,
        "From {} to {} ({} of the period passed); data until {}; generated {}.\n",
        r.from,
        r.to,
        percent(r.elapsed_ratio),
        r.data_until.as_deref().unwrap_or("—"),
        r.generated_at
    );
    let t = &r.total;
    let _ = writeln!(o, "## Summary\n");
    let _ = writeln!(o, "| | |\n| --- | --- |");
    for (k, v) in [
        ("Spend", usd(t.cost_usd)),
        ("Projected for the period", usd(r.projected_cost_usd)),
        ("Inference requests", count(t.requests)),
        ("Training jobs", count(t.training_jobs)),
        ("Tokens (input + output)", tokens(t)),
        ("Cost per request", opt(t.cost_per_request, usd)),
        ("Cost per 1k tokens", opt(t.cost_per_1k_tokens, usd)),
        ("Energy", format!("{:.2} Wh", t.energy_wh)),
        ("Carbon, operational", grams(t.carbon_g)),
        ("Carbon, embodied", grams(t.embodied_g)),
        ("SCI per request", opt(r.sci.per_request(), grams)),
        ("GPU hours", format!("{:.2}", t.gpu_hours)),
    ] {
        let _ = writeln!(o, "| {k} | {v} |");
    }

    let _ = writeln!(o, "\n## By team\n");
    let _ = writeln!(
        o,
        "| tenant | team | spend | projected | budget | requests | tokens | cost / request | carbon | SCI / request |\n| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for l in r.teams.iter().take(TABLE_ROWS) {
        let budget = l.budget.as_ref().map_or_else(
            || "—".into(),
            |b| {
                format!(
                    "{} ({} of {})",
                    b.status,
                    percent(b.used_ratio),
                    usd(b.budget_usd)
                )
            },
        );
        let u = &l.usage;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {budget} | {} | {} | {} | {} | {} |",
            cell(&l.tenant),
            cell(&name(l.team.as_deref())),
            usd(u.cost_usd),
            usd(l.projected_cost_usd),
            count(u.requests),
            tokens(u),
            opt(u.cost_per_request, usd),
            grams(u.carbon_g + u.embodied_g),
            opt(u.sci_g_per_request, grams),
        );
    }

    let _ = writeln!(o, "\n## By model\n");
    let _ = writeln!(
        o,
        "| model | kind | spend | requests | tokens | cost / 1k tokens | carbon | SCI / request |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for l in r.models.iter().take(TABLE_ROWS) {
        let u = &l.usage;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(l.model.as_deref().unwrap_or("—")),
            l.kind,
            usd(u.cost_usd),
            count(u.requests),
            tokens(u),
            opt(u.cost_per_1k_tokens, usd),
            grams(u.carbon_g + u.embodied_g),
            opt(u.sci_g_per_request, grams),
        );
    }

    let _ = writeln!(o, "\n## Decisions\n");
    match &r.decisions {
        None => {
            let _ = writeln!(
                o,
                "Not shown: reading decisions needs the `decisions.read` scope."
            );
        }
        Some(d) => decisions(&mut o, d),
    }

    let _ = writeln!(o, "\n## Riskiest nodes\n");
    let n = &r.nodes;
    if n.nodes == 0 {
        let _ = writeln!(o, "No heartbeats in the period.");
    } else {
        let _ = writeln!(o, "{}.\n", n.headline());
        let row = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let headings: Vec<String> = NODE_COLUMNS.iter().map(|c| c.0.to_string()).collect();
        let rule: Vec<String> = NODE_COLUMNS
            .iter()
            .map(|c| if c.2 { "---:" } else { "---" }.to_string())
            .collect();
        let _ = writeln!(o, "{}\n{}", row(&headings), row(&rule));
        for v in &n.riskiest {
            let cells: Vec<String> = node_cells(v).iter().map(|c| cell(c)).collect();
            let _ = writeln!(o, "{}", row(&cells));
        }
    }
    o
}

fn decisions(o: &mut String, d: &crate::DecisionSummary) {
    let _ = writeln!(o, "{} decisions in the period.\n", d.total);

    if !d.by_policy.is_empty() {
        let _ = writeln!(
            o,
            "| policy | deny | warn | allow |\n| --- | ---: | ---: | ---: |"
        );
        for p in &d.by_policy {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                cell(&p.policy),
                p.deny,
                p.warn,
                p.allow
            );
        }
    }
    if !d.top.is_empty() {
        let _ = writeln!(
            o,
            "\nMost severe, newest first:\n\n| verdict | policy | subject | reason |\n| --- | --- | --- | --- |"
        );
        let s = |v: &Value, k: &str| cell(v.get(k).and_then(Value::as_str).unwrap_or(""));
        for v in &d.top {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                s(v, "verdict"),
                s(v, "policy"),
                s(v, "subject"),
                s(v, "reason")
            );
        }
    }
}
