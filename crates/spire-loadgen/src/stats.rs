//! Counters and latency samples shared by the simulated agents, the churn driver and the
//! progress printer.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// A set of latency samples (microseconds), summarized by sorting at the end.
#[derive(Debug, Default)]
pub struct Samples(Mutex<Vec<u64>>);

impl Samples {
    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(us);
    }

    /// How many samples were recorded.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latency (ms) at each percentile 0, 1, ..., 100 of the samples so far (empty when
    /// there are none): the empirical CDF, for plots.
    pub fn cdf_ms(&self) -> Vec<f64> {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        v.sort_unstable();
        if v.is_empty() {
            return Vec::new();
        }
        let last = (v.len() - 1) as f64;
        (0..=100)
            .map(|q| ms(v[((f64::from(q) / 100.0) * last).round() as usize]))
            .collect()
    }

    /// Percentiles of the samples so far.
    pub fn summary(&self) -> Percentiles {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Percentiles::of(&mut v)
    }
}

/// Latency percentiles in milliseconds (nearest-rank).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Percentiles {
    /// Summarizes `samples` (microseconds; sorted in place).
    pub fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = (q * n as f64).ceil() as usize;
            let idx = rank.clamp(1, n) - 1;
            ms(samples[idx])
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Percentiles {
            count: n,
            min_ms: ms(samples[0]),
            mean_ms: (sum as f64 / n as f64) / 1000.0,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(samples[n - 1]),
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything the run counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Agents that finished attestation.
    pub attested: Counter,
    /// Attestations that failed.
    pub attest_failed: Counter,
    /// AttestAgent latency (connect + stream until the result).
    pub attest_latency: Samples,
    /// Agents whose first sync and signing round completed.
    pub agents_ready: Counter,
    /// Agents whose first sync after attestation returned no workload entry.
    pub first_sync_empty: Counter,
    /// Completed entry syncs.
    pub syncs: Counter,
    /// Failed entry syncs.
    pub sync_failed: Counter,
    /// Response bytes (protobuf encoded) of all SyncAuthorizedEntries calls.
    pub sync_bytes: Counter,
    /// Entries fetched in full by syncs.
    pub sync_entries_fetched: Counter,
    /// SyncAuthorizedEntries latency.
    pub sync_latency: Samples,
    /// GetBundle calls and their response bytes.
    pub bundle_calls: Counter,
    /// GetBundle response bytes.
    pub bundle_bytes: Counter,
    /// CSRs sent in BatchNewX509SVID.
    pub x509_requested: Counter,
    /// X509-SVIDs received.
    pub x509_issued: Counter,
    /// Per-item or per-call failures.
    pub x509_failed: Counter,
    /// SVIDs issued for the initial entries (set up before the agents started).
    pub x509_initial: Counter,
    /// SVIDs issued for entries created by churn.
    pub x509_churn: Counter,
    /// SVIDs issued in the re-issuance rounds (`-issueRounds`).
    pub x509_reissued: Counter,
    /// BatchNewX509SVID calls.
    pub x509_batches: Counter,
    /// BatchNewX509SVID latency per call.
    pub x509_batch_latency: Samples,
    /// NewJWTSVID calls.
    pub jwt_requested: Counter,
    /// JWT-SVIDs received.
    pub jwt_issued: Counter,
    /// NewJWTSVID failures.
    pub jwt_failed: Counter,
    /// NewJWTSVID latency.
    pub jwt_latency: Samples,
    /// Watch streams opened.
    pub watch_opened: Counter,
    /// Watch responses received (after the first one of each stream).
    pub watch_notifications: Counter,
    /// Watch streams that failed or ended.
    pub watch_errors: Counter,
    /// Entries created by churn.
    pub churn_created: Counter,
    /// Entries deleted by churn.
    pub churn_deleted: Counter,
    /// Failed churn calls or items.
    pub churn_failed: Counter,
    /// BatchCreateEntry latency for churn entries.
    pub churn_create_latency: Samples,
    /// Entry created → the owning agent's Watch notification.
    pub prop_watch: Samples,
    /// Entry created → the owning agent holds the entry's signed X509-SVID.
    pub prop_svid: Samples,
    /// Churn entries first seen by a timer-driven sync (no Watch notification after creation).
    pub prop_by_poll: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(p.count, 100);
        assert_eq!(p.min_ms, 1.0);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p90_ms, 90.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert!((p.mean_ms - 50.5).abs() < 1e-9);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
        let p = Percentiles::of(&mut [2500]);
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (2.5, 2.5, 2.5));
    }

    #[test]
    fn samples_and_counters() {
        let s = Samples::default();
        s.record(Duration::from_millis(3));
        s.record(Duration::from_millis(1));
        assert_eq!(s.len(), 2);
        assert_eq!(s.summary().max_ms, 3.0);
        let c = Counter::default();
        c.inc();
        c.add(4);
        assert_eq!(c.get(), 5);
    }
}
