//! `tollgate summary`: spend, tokens and carbon by team from the rollups.

use anyhow::{Context, Result};

pub(crate) fn summary(root: &std::path::Path, json: bool) -> Result<()> {
    let tree = tollgate_rollup::Tree::open(root)?;
    let s = tollgate_rollup::read_summary(&tree)
        .with_context(|| format!("reading rollups under {}", root.display()))?;
    if json {
        let teams: serde_json::Map<String, serde_json::Value> = s
            .by_team
            .iter()
            .map(|(team, t)| (team.clone(), serde_json::json!({"events": t.events, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "cost_usd": t.cost_usd, "energy_wh": t.energy_wh, "carbon_g": t.carbon_g, "gpu_hours": t.gpu_hours})))
            .collect();
        let t = &s.total;
        println!(
            "{}",
            serde_json::json!({"files": s.files, "by_team": teams, "total": {"events": t.events, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "cost_usd": t.cost_usd, "energy_wh": t.energy_wh, "carbon_g": t.carbon_g, "gpu_hours": t.gpu_hours}})
        );
        return Ok(());
    }
    if s.files == 0 {
        println!("no rollup files under {} yet", root.display());
        return Ok(());
    }
    println!("{} rollup files under {}\n", s.files, root.display());
    println!(
        "{:<16} {:>10} {:>14} {:>14} {:>12} {:>14}",
        "team", "events", "input tokens", "output tokens", "spend USD", "carbon g CO2e"
    );
    let row = |name: &str, t: &tollgate_rollup::TeamTotals| {
        println!(
            "{:<16} {:>10} {:>14} {:>14} {:>12.4} {:>14.3}",
            name, t.events, t.input_tokens, t.output_tokens, t.cost_usd, t.carbon_g
        );
    };
    for (team, t) in &s.by_team {
        row(team, t);
    }
    row("TOTAL", &s.total);
    Ok(())
}
