//! `tollgate pricing check`: validate the price book and say which entry
//! prices a model on a date.

use std::path::Path;

use anyhow::{Context, Result};
use tollgate_config::Config;
use tollgate_enrich::Enricher;

pub(crate) fn pricing_check(config: &Path, model: Option<&str>, date: Option<&str>) -> Result<()> {
    let cfg = Config::load(config)?;
    let book = &cfg.pricing;
    let mut enricher = Enricher::new(book.clone(), cfg.defaults.clone())
        .with_context(|| format!("the price book in {}", config.display()))?;
    println!(
        "price book OK ({}): {} model entries, {} GPU types, {} regions, PUE {}, embodied {} g CO2e per GPU-hour",
        config.display(),
        book.models.len(),
        book.gpus.len(),
        book.regions.len(),
        book.pue,
        book.embodied_g_per_gpu_hour
    );
    let Some(model) = model else {
        return Ok(());
    };
    let day = match date {
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .with_context(|| format!("--date must be YYYY-MM-DD, got {d:?}"))?,
        None => chrono::Utc::now().date_naive(),
    };
    let ts_ms = day
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis();
    match enricher.model_entry(model, ts_ms) {
        Some(m) => {
            println!(
                "{model} on {day}: pattern {:?} (effective from {} to {}): input {} USD/1K, cached input {} USD/1K, cache write {} USD/1K, output {} USD/1K, reasoning {} USD/1K, energy {} Wh/1K",
                m.pattern,
                m.effective_from.as_deref().unwrap_or("the beginning"),
                m.effective_to.as_deref().unwrap_or("no end"),
                m.input_per_1k,
                m.cached_input_per_1k.unwrap_or(m.input_per_1k),
                m.cache_write_per_1k.unwrap_or(m.input_per_1k),
                m.output_per_1k,
                m.reasoning_per_1k.unwrap_or(m.output_per_1k),
                m.energy_wh_per_1k.unwrap_or(cfg.defaults.energy_wh_per_1k_tokens),
            );
            for t in &m.tiers {
                println!(
                    "  above {} input tokens, the whole request: input {} USD/1K, output {} USD/1K",
                    t.above_input_tokens, t.input_per_1k, t.output_per_1k
                );
            }
        }
        None => {
            let d = &cfg.defaults;
            println!(
                "{model} on {day}: no entry in force; the defaults price it: input {} USD/1K, output {} USD/1K, energy {} Wh/1K (COST_PER_1K_INPUT_TOKENS, COST_PER_1K_OUTPUT_TOKENS, ENERGY_WH_PER_1K_TOKENS)",
                d.cost_per_1k_input_tokens, d.cost_per_1k_output_tokens, d.energy_wh_per_1k_tokens
            );
        }
    }
    Ok(())
}
