//! The report as one self-contained HTML page: inline CSS and SVG charts,
//! no script, no external asset, so it reads the same in a browser, a mail
//! client or an attachment viewer. Every text from the data is escaped.

use std::fmt::Write;

use serde_json::Value;

use crate::markdown::{count, grams, name, opt, percent, usd};
use crate::{node_cells, Report, NODE_COLUMNS, TABLE_ROWS};

/// Bars drawn per chart; the rest are summed into one "others" bar.
const CHART_BARS: usize = 12;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// At most `n` characters, with an ellipsis when cut.
fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

const STYLE: &str = "
body{font-family:'DejaVu Sans',system-ui,sans-serif;color:#111827;background:#fff;margin:0 auto;max-width:980px;padding:24px;line-height:1.4}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.meta{color:#4b5563;font-size:13px;margin:0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;margin-top:16px}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:10px 12px}
.card .label{font-size:12px;color:#6b7280}.card .value{font-size:20px;font-weight:600}.card .sub{font-size:12px;color:#6b7280}
table{border-collapse:collapse;width:100%;font-size:13px;margin-top:8px}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 6px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.status{font-weight:600}.status.over{color:#b91c1c}.status.at_risk{color:#b45309}.status.ok{color:#15803d}
svg.chart{display:block;max-width:100%;height:auto;margin-top:8px}
svg text{font-family:'DejaVu Sans',system-ui,sans-serif;font-size:12px;fill:#374151}
.bar{fill:#3b82f6}.bar.over{fill:#dc2626}.bar.at_risk{fill:#f59e0b}.bar.ok{fill:#16a34a}.bar.model{fill:#6366f1}.bar.others{fill:#9ca3af}
.col{fill:#0ea5e9}.line{fill:none;stroke:#15803d;stroke-width:2}.dot{fill:#15803d}.marker{stroke:#111827;stroke-dasharray:4 3;stroke-width:1.5}
.legend{font-size:12px;color:#4b5563}.swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
.note{font-size:12px;color:#6b7280}
";

struct Bar {
    label: String,
    value: f64,
    class: &'static str,
    text: String,
}

/// A horizontal bar chart, one bar per item (`CHART_BARS` at most), with an
/// optional dashed marker (a budget). A marker far beyond the longest bar
/// would squash every bar into a sliver: then it is named, not drawn.
fn bars(id: &str, title: &str, items: Vec<Bar>, marker: Option<(f64, String)>) -> String {
    let mut items = items;
    if items.len() > CHART_BARS {
        let rest = items.split_off(CHART_BARS - 1);
        let sum: f64 = rest.iter().map(|b| b.value).sum();
        items.push(Bar {
            label: format!("{} others", rest.len()),
            value: sum,
            class: "others",
            text: usd(sum),
        });
    }
    let (width, left, right, row) = (760.0, 190.0, 110.0, 26.0);
    let area = width - left - right;
    let longest = items.iter().map(|b| b.value).fold(0.0_f64, f64::max);
    let (drawn, named) = match marker {
        Some(m) if m.0 <= 1.5 * longest => (Some(m), None),
        Some(m) => (None, Some(m)),
        None => (None, None),
    };
    let max = longest.max(drawn.as_ref().map_or(0.0, |m| m.0));
    let scale = if max > 0.0 { area / max } else { 0.0 };
    let height = row * items.len().max(1) as f64 + 24.0;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="chart" id="{id}" role="img" aria-label="{t}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    if items.is_empty() {
        let _ = write!(o, r#"<text x="0" y="18">No usage in the period.</text>"#);
    }
    for (i, b) in items.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let w = (b.value.max(0.0) * scale).max(if b.value > 0.0 { 1.0 } else { 0.0 });
        let _ = write!(
            o,
            r#"<text x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect class="bar {class}" x="{left}" y="{y}" width="{w:.2}" height="{h}" data-label="{full}" data-value="{v}"><title>{full}: {text}</title></rect><text x="{vx:.2}" y="{ty}">{text}</text>"#,
            lx = left - 8.0,
            ty = y + 14.0,
            label = esc(&short(&b.label, 26)),
            class = b.class,
            h = row - 8.0,
            full = esc(&b.label),
            v = b.value,
            text = esc(&b.text),
            vx = left + w + 6.0,
        );
    }
    if let Some((v, label)) = named {
        let _ = write!(
            o,
            r#"<text class="off-scale" x="{x}" y="{ty}" text-anchor="end">{label}: off the scale, the longest bar is {share} of it</text>"#,
            x = width - 4.0,
            ty = height - 4.0,
            label = esc(&label),
            share = percent(if v > 0.0 { longest / v } else { 0.0 }),
        );
    }
    if let Some((v, label)) = drawn {
        let x = left + v * scale;
        let _ = write!(
            o,
            r#"<line class="marker" x1="{x:.2}" x2="{x:.2}" y1="0" y2="{y2}"/><text x="{x:.2}" y="{ty}" text-anchor="middle">{label}</text>"#,
            y2 = height - 16.0,
            ty = height - 4.0,
            label = esc(&label)
        );
    }
    o.push_str("</svg>");
    o
}

/// Daily spend as columns, carbon (operational + embodied) as a line on its
/// own scale.
fn days_chart(r: &Report) -> String {
    let (width, height, left, bottom, top) = (760.0, 240.0, 80.0, 36.0, 16.0);
    let plot_h = height - bottom - top;
    let n = r.days.len().max(1) as f64;
    let step = (width - left - 56.0) / n;
    let max_cost = r.days.iter().map(|d| d.cost_usd).fold(0.0_f64, f64::max);
    let max_carbon = r
        .days
        .iter()
        .map(|d| d.carbon_g + d.embodied_g)
        .fold(0.0_f64, f64::max);
    let y_of = |v: f64, max: f64| {
        if max > 0.0 {
            top + plot_h - v / max * plot_h
        } else {
            top + plot_h
        }
    };
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="chart" id="chart-days" role="img" aria-label="Daily spend and carbon" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title>Daily spend and carbon</title>"#
    );
    let base = top + plot_h;
    let _ = write!(
        o,
        r##"<line x1="{left}" x2="{x2}" y1="{base}" y2="{base}" stroke="#9ca3af"/><text x="{lx}" y="{ty}" text-anchor="end">{max}</text><text x="{lx}" y="{base}" text-anchor="end">$0</text><text x="{rx}" y="{ty}">{cmax}</text>"##,
        x2 = width - 56.0,
        lx = left - 6.0,
        ty = top + 4.0,
        max = esc(&usd(max_cost)),
        rx = width - 52.0,
        cmax = esc(&grams(max_carbon)),
    );
    if r.days.is_empty() {
        let _ = write!(
            o,
            r#"<text x="{left}" y="40">No usage in the period.</text>"#
        );
    }
    let mut points = Vec::new();
    for (i, d) in r.days.iter().enumerate() {
        let x = left + step * i as f64;
        let y = y_of(d.cost_usd, max_cost);
        let w = (step * 0.7).clamp(1.0, 24.0);
        let _ = write!(
            o,
            r#"<rect class="col" x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" data-date="{date}" data-value="{v}"><title>{date}: {text}</title></rect>"#,
            h = base - y,
            date = esc(&d.date),
            v = d.cost_usd,
            text = esc(&usd(d.cost_usd)),
        );
        let cx = x + w / 2.0;
        let cy = y_of(d.carbon_g + d.embodied_g, max_carbon);
        points.push(format!("{cx:.2},{cy:.2}"));
        let _ = write!(
            o,
            r#"<circle class="dot" cx="{cx:.2}" cy="{cy:.2}" r="2.5" data-date="{date}" data-carbon="{c}"><title>{date}: {text}</title></circle>"#,
            date = esc(&d.date),
            c = d.carbon_g + d.embodied_g,
            text = esc(&grams(d.carbon_g + d.embodied_g)),
        );
        // A date label under every column that has room for one.
        let every = (50.0 / step).ceil().max(1.0) as usize;
        if i % every == 0 {
            let _ = write!(
                o,
                r#"<text x="{cx:.2}" y="{ly}" text-anchor="middle">{day}</text>"#,
                ly = base + 16.0,
                day = esc(d.date.get(5..).unwrap_or(&d.date)),
            );
        }
    }
    if points.len() > 1 {
        let _ = write!(
            o,
            r#"<polyline class="line" points="{}"/>"#,
            points.join(" ")
        );
    }
    o.push_str("</svg>");
    o.push_str(r##"<div class="legend"><span class="swatch" style="background:#0ea5e9"></span>spend (left scale)<span class="swatch" style="background:#15803d"></span>carbon, operational + embodied (right scale)</div>"##);
    o
}

fn card(o: &mut String, metric: &str, label: &str, value: &str, sub: &str) {
    let _ = write!(
        o,
        r#"<div class="card" data-metric="{metric}"><div class="label">{}</div><div class="value">{}</div><div class="sub">{}</div></div>"#,
        esc(label),
        esc(value),
        esc(sub)
    );
}

fn more(o: &mut String, shown: usize, all: usize) {
    if all > shown {
        let _ = write!(
            o,
            r#"<p class="note">The first {shown} of {all}; the JSON form has them all.</p>"#
        );
    }
}

pub(crate) fn render(r: &Report) -> String {
    let t = &r.total;
    let title = format!("Tollgate report: {}, {}", r.period, r.whose());
    let mut o = String::with_capacity(32 << 10);
    let _ = write!(
        o,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{t}</title><style>{STYLE}</style></head><body><header><h1>{t}</h1><p class="meta">From {} to {} · {} of the period passed · data until {} · generated {}</p></header>"#,
        esc(&r.from),
        esc(&r.to),
        percent(r.elapsed_ratio),
        esc(r.data_until.as_deref().unwrap_or("—")),
        esc(&r.generated_at),
        t = esc(&title),
    );

    o.push_str(r#"<section id="summary" class="cards">"#);
    card(
        &mut o,
        "cost_usd",
        "Spend",
        &usd(t.cost_usd),
        &format!("projected {}", usd(r.projected_cost_usd)),
    );
    card(
        &mut o,
        "requests",
        "Inference requests",
        &count(t.requests),
        &format!("{} training jobs", count(t.training_jobs)),
    );
    card(
        &mut o,
        "tokens",
        "Tokens",
        &count(t.input_tokens + t.output_tokens),
        &format!(
            "{} in, {} out",
            count(t.input_tokens),
            count(t.output_tokens)
        ),
    );
    card(
        &mut o,
        "cost_per_request",
        "Cost per request",
        &opt(t.cost_per_request, usd),
        &format!("{} per 1k tokens", opt(t.cost_per_1k_tokens, usd)),
    );
    card(
        &mut o,
        "carbon_g",
        "Carbon",
        &grams(t.carbon_g + t.embodied_g),
        &format!(
            "{} operational, {} embodied",
            grams(t.carbon_g),
            grams(t.embodied_g)
        ),
    );
    card(
        &mut o,
        "sci_g_per_request",
        "SCI per request",
        &opt(r.sci.per_request(), grams),
        "((E × I) + M) / R",
    );
    o.push_str("</section>");

    // Teams: bars coloured by budget status, the budget as a marker.
    let team_label = |l: &crate::TeamLine| {
        let team = name(l.team.as_deref());
        if r.tenant.is_some() {
            team
        } else {
            format!("{}/{team}", l.tenant)
        }
    };
    o.push_str(r#"<section id="teams"><h2>Spend by team</h2>"#);
    let items = r
        .teams
        .iter()
        .map(|l| Bar {
            label: team_label(l),
            value: l.usage.cost_usd,
            class: l.budget.as_ref().map_or("", |b| b.status),
            text: usd(l.usage.cost_usd),
        })
        .collect();
    o.push_str(&bars(
        "chart-teams",
        "Spend by team",
        items,
        r.budget_usd.map(|b| (b, format!("budget {}", usd(b)))),
    ));
    o.push_str(r#"<table><thead><tr><th>team</th><th class="n">spend</th><th class="n">projected</th><th>budget</th><th class="n">requests</th><th class="n">tokens</th><th class="n">cost / request</th><th class="n">carbon</th><th class="n">SCI / request</th></tr></thead><tbody>"#);
    for l in r.teams.iter().take(TABLE_ROWS) {
        let u = &l.usage;
        let budget = l.budget.as_ref().map_or_else(
            || "—".to_string(),
            |b| {
                format!(
                    r#"<span class="status {s}">{s}</span> {} of {}"#,
                    percent(b.used_ratio),
                    esc(&usd(b.budget_usd)),
                    s = b.status
                )
            },
        );
        let _ = write!(
            o,
            r#"<tr data-team="{}"><td>{}</td><td class="n">{}</td><td class="n">{}</td><td>{budget}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            esc(l.team.as_deref().unwrap_or("")),
            esc(&team_label(l)),
            esc(&usd(u.cost_usd)),
            esc(&usd(l.projected_cost_usd)),
            count(u.requests),
            count(u.input_tokens + u.output_tokens),
            esc(&opt(u.cost_per_request, usd)),
            esc(&grams(u.carbon_g + u.embodied_g)),
            esc(&opt(u.sci_g_per_request, grams)),
        );
    }
    o.push_str("</tbody></table>");
    more(&mut o, TABLE_ROWS.min(r.teams.len()), r.teams.len());
    o.push_str("</section>");

    o.push_str(r#"<section id="models"><h2>Spend by model</h2>"#);
    let items = r
        .models
        .iter()
        .map(|l| Bar {
            label: match l.kind.as_str() {
                "inference" => l.model.as_deref().unwrap_or("—").to_string(),
                kind => format!("{} ({kind})", l.model.as_deref().unwrap_or("—")),
            },
            value: l.usage.cost_usd,
            class: "model",
            text: usd(l.usage.cost_usd),
        })
        .collect();
    o.push_str(&bars("chart-models", "Spend by model", items, None));
    o.push_str(r#"<table><thead><tr><th>model</th><th>kind</th><th class="n">spend</th><th class="n">requests</th><th class="n">tokens</th><th class="n">cost / 1k tokens</th><th class="n">carbon</th><th class="n">SCI / request</th></tr></thead><tbody>"#);
    for l in r.models.iter().take(TABLE_ROWS) {
        let u = &l.usage;
        let _ = write!(
            o,
            r#"<tr><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            esc(l.model.as_deref().unwrap_or("—")),
            esc(&l.kind),
            esc(&usd(u.cost_usd)),
            count(u.requests),
            count(u.input_tokens + u.output_tokens),
            esc(&opt(u.cost_per_1k_tokens, usd)),
            esc(&grams(u.carbon_g + u.embodied_g)),
            esc(&opt(u.sci_g_per_request, grams)),
        );
    }
    o.push_str("</tbody></table>");
    more(&mut o, TABLE_ROWS.min(r.models.len()), r.models.len());
    o.push_str("</section>");

    o.push_str(r#"<section id="days"><h2>Daily spend and carbon</h2>"#);
    o.push_str(&days_chart(r));
    o.push_str("</section>");

    o.push_str(r#"<section id="decisions"><h2>Decisions</h2>"#);
    match &r.decisions {
        None => o.push_str(
            "<p>Not shown: reading decisions needs the <code>decisions.read</code> scope.</p>",
        ),
        Some(d) => decisions(&mut o, d),
    }
    o.push_str("</section>");

    let n = &r.nodes;
    let _ = write!(
        o,
        r#"<section id="nodes"><h2>Riskiest nodes</h2><p>{}.</p>"#,
        esc(&n.headline())
    );
    if !n.riskiest.is_empty() {
        o.push_str("<table><thead><tr>");
        for (heading, _, number) in NODE_COLUMNS {
            let class = if number { r#" class="n""# } else { "" };
            let _ = write!(o, "<th{class}>{}</th>", esc(heading));
        }
        o.push_str("</tr></thead><tbody>");
        for v in &n.riskiest {
            let healthy = v.get("healthy").and_then(Value::as_bool) != Some(false);
            let cells = node_cells(v);
            let _ = write!(
                o,
                r#"<tr data-node="{}" class="{}">"#,
                esc(&cells[0]),
                if healthy { "healthy" } else { "unhealthy" }
            );
            for (c, (_, _, number)) in cells.iter().zip(NODE_COLUMNS) {
                let class = if number { r#" class="n""# } else { "" };
                let _ = write!(o, "<td{class}>{}</td>", esc(c));
            }
            o.push_str("</tr>");
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section></body></html>\n");
    o
}

fn decisions(o: &mut String, d: &crate::DecisionSummary) {
    let _ = write!(o, r#"<p>{} decisions in the period.</p>"#, d.total);
    if !d.by_policy.is_empty() {
        o.push_str(r#"<table><thead><tr><th>policy</th><th class="n">deny</th><th class="n">warn</th><th class="n">allow</th></tr></thead><tbody>"#);
        for p in &d.by_policy {
            let _ = write!(
                o,
                r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
                esc(&p.policy),
                p.deny,
                p.warn,
                p.allow
            );
        }
        o.push_str("</tbody></table>");
    }
    if !d.top.is_empty() {
        o.push_str(r#"<h3>Most severe, newest first</h3><table class="top"><thead><tr><th>verdict</th><th>policy</th><th>subject</th><th>reason</th></tr></thead><tbody>"#);
        let s = |v: &Value, k: &str| esc(v.get(k).and_then(Value::as_str).unwrap_or(""));
        for v in &d.top {
            let _ = write!(
                o,
                r#"<tr><td><span class="status {c}">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                s(v, "verdict"),
                s(v, "policy"),
                s(v, "subject"),
                s(v, "reason"),
                c = if s(v, "verdict") == "deny" {
                    "over"
                } else {
                    "at_risk"
                },
            );
        }
        o.push_str("</tbody></table>");
    }
}
