//! The process's reader of the spend topic (`[spend]`,
//! `tollgate_telemetry::spend`): one thread that reads every partition of
//! the topic from the beginning, keeps the latest record per key, and
//! publishes the view to the gate at most every [`BUILD_EVERY`]. The gate
//! denies (503) until the reader has read up to where the topic ended when
//! it started; after an error the reader starts over and the gate answers
//! from the last view, whose freshness says how old it is.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tollgate_config::Config;
use tollgate_telemetry::spend::{SpendRecord, SpendView};
use tollgate_telemetry::Telemetry;
use tracing::{debug, info, warn};

/// The view is rebuilt at most this often.
const BUILD_EVERY: Duration = Duration::from_millis(100);

/// Start the reader; the gate answers from its view from now on.
pub(crate) fn spawn(cfg: &Config, telemetry: &Arc<Telemetry>) -> Result<()> {
    telemetry.spend.enable();
    let (cfg, telemetry) = (cfg.clone(), telemetry.clone());
    std::thread::Builder::new()
        .name("tollgate-spend".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(500);
            loop {
                if let Err(e) = read(&cfg, &telemetry) {
                    warn!(error = %format!("{e:#}"), topic = %cfg.topics.spend, retry_in_ms = backoff.as_millis() as u64, "spend reader stopped; starting over");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        })
        .context("start the spend reader")?;
    Ok(())
}

fn read(cfg: &Config, telemetry: &Telemetry) -> Result<()> {
    let topic = &cfg.topics.spend;
    // Partitions are assigned, not subscribed: the group id is never
    // joined nor committed to.
    let consumer: BaseConsumer =
        tollgate_kafka::consumer_config(cfg, &format!("{}-spend-reader", cfg.kafka.group_id))
            .create()
            .context("create the spend reader")?;
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .context("spend topic metadata")?;
    let ids: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if ids.is_empty() {
        return Err(anyhow!("the spend topic {topic} has no partitions (yet)"));
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for &p in &ids {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .context("spend topic watermarks")?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .context("assign the spend topic")?;
    }
    consumer.assign(&tpl).context("assign the spend topic")?;
    let mut records: BTreeMap<String, Arc<SpendRecord>> = BTreeMap::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let (mut dirty, mut bad) = (true, 0u64);
    let mut built = Instant::now() - BUILD_EVERY;
    let mut loaded = telemetry.spend.loaded();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                dirty = true;
                let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
                match (key, m.payload()) {
                    (Some(key), None) => {
                        records.remove(key);
                    }
                    (Some(key), Some(body)) => match serde_json::from_slice::<SpendRecord>(body) {
                        Ok(r) if r.key() == key => {
                            records.insert(key.to_string(), Arc::new(r));
                        }
                        // Not Tollgate's: left out, and said once.
                        other => {
                            bad += 1;
                            let why = match other {
                                Ok(_) => "its key does not match its record".to_string(),
                                Err(e) => e.to_string(),
                            };
                            if bad == 1 {
                                warn!(partition = m.partition(), offset = m.offset(), error = %why, "a spend record that is not Tollgate's is ignored (more at DEBUG)");
                            } else {
                                debug!(partition = m.partition(), offset = m.offset(), error = %why, "spend record ignored");
                            }
                        }
                    },
                    (None, _) => bad += 1,
                }
            }
            Some(Err(e)) => return Err(e).context("read the spend topic"),
            None => {}
        }
        if dirty && built.elapsed() >= BUILD_EVERY {
            let now_ms = chrono::Utc::now().timestamp_millis();
            telemetry
                .spend
                .publish(SpendView::new(now_ms, records.clone()));
            dirty = false;
            built = Instant::now();
        }
        if !loaded && caught_up(&consumer, topic, &ends, &next) {
            let now_ms = chrono::Utc::now().timestamp_millis();
            telemetry
                .spend
                .publish(SpendView::new(now_ms, records.clone()));
            telemetry.spend.set_loaded();
            loaded = true;
            info!(topic = %topic, records = records.len(), "spend of every instance loaded; the gate answers from it");
        }
    }
}

/// Every partition read up to where it ended at the start (a compacted
/// partition's last offsets may be gone: the consumer's position counts).
fn caught_up(
    consumer: &BaseConsumer,
    topic: &str,
    ends: &HashMap<i32, i64>,
    next: &HashMap<i32, i64>,
) -> bool {
    let positions = consumer.position().ok();
    ends.iter().all(|(&p, &end)| {
        let pos = positions
            .as_ref()
            .and_then(|l| l.find_partition(topic, p))
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(0);
        end == 0 || pos.max(next.get(&p).copied().unwrap_or(0)) >= end
    })
}
