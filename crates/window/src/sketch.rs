//! A small log-bucket quantile sketch (DDSketch style) with 1% relative error.
//! Bucket counts are additive, so sketches of the same row merge exactly.

const GAMMA: f64 = 1.02;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    /// Values <= 0 (and below the first bucket's range).
    zeros: u64,
    /// Index of `counts[0]`.
    base: i32,
    counts: Vec<u64>,
    /// While every value fell in one bucket: (bucket, count), no allocation.
    single: Option<(i32, u64)>,
    total: u64,
}

fn bucket(v: f64) -> i32 {
    (v.ln() / GAMMA.ln()).ceil() as i32
}

fn representative(i: i32) -> f64 {
    // Midpoint (in relative terms) of (gamma^(i-1), gamma^i].
    let compute = |i: i32| 2.0 * GAMMA.powi(i) / (1.0 + GAMMA);
    // Buckets of 1e-9 to about 1e9 (in milliseconds: 11 days) come from a
    // table of the same values, computed once; a rollup asks for one per row.
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (TABLE_FIRST..TABLE_FIRST + TABLE_LEN)
            .map(compute)
            .collect()
    });
    i.checked_sub(TABLE_FIRST)
        .and_then(|k| table.get(usize::try_from(k).ok()?))
        .copied()
        .unwrap_or_else(|| compute(i))
}

const TABLE_FIRST: i32 = -1100;
const TABLE_LEN: i32 = 2148;

impl Sketch {
    pub fn add(&mut self, v: f64) {
        self.total += 1;
        if v.is_nan() || v <= 1e-9 {
            self.zeros += 1;
            return;
        }
        let i = bucket(v);
        if self.counts.is_empty() {
            match self.single {
                None => {
                    self.single = Some((i, 1));
                    return;
                }
                Some((j, c)) if j == i => {
                    self.single = Some((j, c + 1));
                    return;
                }
                Some((j, c)) => {
                    self.single = None;
                    self.dense_add(j, c);
                }
            }
        }
        self.dense_add(i, 1);
    }

    fn dense_add(&mut self, i: i32, n: u64) {
        if self.counts.is_empty() {
            self.base = i;
            self.counts.push(0);
        } else if i < self.base {
            let grow = (self.base - i) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.base = i;
        } else if (i - self.base) as usize >= self.counts.len() {
            self.counts.resize((i - self.base) as usize + 1, 0);
        }
        self.counts[(i - self.base) as usize] += n;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The q-quantile (0 < q <= 1), or None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank <= self.zeros {
            return Some(0.0);
        }
        if let Some((i, _)) = self.single {
            return Some(representative(i));
        }
        let mut seen = self.zeros;
        for (k, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(representative(self.base + k as i32));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_within_one_percent() {
        let mut s = Sketch::default();
        for v in 1..=1000 {
            s.add(v as f64);
        }
        let p95 = s.quantile(0.95).expect("non-empty");
        assert!((p95 - 950.0).abs() / 950.0 < 0.01, "{p95}");
        let p50 = s.quantile(0.5).expect("non-empty");
        assert!((p50 - 500.0).abs() / 500.0 < 0.01, "{p50}");
    }

    #[test]
    fn tabled_representatives_are_the_computed_ones() {
        for i in TABLE_FIRST - 100..TABLE_FIRST + TABLE_LEN + 100 {
            let computed = 2.0 * GAMMA.powi(i) / (1.0 + GAMMA);
            assert_eq!(
                representative(i).to_bits(),
                computed.to_bits(),
                "bucket {i}"
            );
        }
        assert_eq!(representative(i32::MIN), 0.0);
    }

    #[test]
    fn zeros_and_descending_inserts() {
        let mut s = Sketch::default();
        assert_eq!(s.quantile(0.95), None);
        for v in [0.0, 0.0, 100.0, 10.0, 1.0] {
            s.add(v);
        }
        assert_eq!(s.quantile(0.2), Some(0.0));
        let top = s.quantile(1.0).expect("non-empty");
        assert!((top - 100.0).abs() < 1.0, "{top}");
        assert_eq!(s.count(), 5);
    }
}
