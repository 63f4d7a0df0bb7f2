//! Micro-benchmarks of selector matching: `Selectors::is_subset_of` alone, and the agent's
//! Workload API lookup (every cached entry whose selectors are a subset of the workload's
//! attested selectors, a linear scan as in `spire-agent`'s `identity.rs`) over N cached
//! entries. N comes from `SPIRE_BENCH_CACHED` (default 10000).
//!
//! ```sh
//! cargo bench -p spire-spiffe --bench selectors
//! ```

#![allow(clippy::unwrap_used)] // benchmark setup: a failure should abort the run

use std::sync::LazyLock;

use divan::Bencher;
use spire_spiffe::{Selector, Selectors};

fn main() {
    divan::main();
}

fn sels(list: &[String]) -> Selectors {
    list.iter()
        .map(|s| s.parse::<Selector>().unwrap())
        .collect()
}

/// A workload as the unix and k8s attestors describe it (about a dozen selectors).
fn workload(uid: usize) -> Selectors {
    sels(&[
        format!("unix:uid:{uid}"),
        format!("unix:gid:{}", uid % 7),
        "unix:user:app".into(),
        "unix:group:app".into(),
        "unix:path:/usr/bin/app".into(),
        format!("k8s:ns:ns{}", uid % 5),
        format!("k8s:sa:sa{uid}"),
        "k8s:container-name:app".into(),
        "k8s:node-name:node-1".into(),
        format!("k8s:pod-label:app:app{uid}"),
        format!("k8s:pod-uid:{uid:08x}-0000-0000-0000-000000000000"),
    ])
}

/// An entry's selectors (2–4, as in the load tool's shapes).
fn entry(w: usize) -> Selectors {
    let mut s = vec![format!("unix:uid:{w}"), format!("unix:gid:{}", w % 7)];
    if w % 2 == 1 {
        s.push(format!("k8s:ns:ns{}", w % 5));
    }
    if w.is_multiple_of(3) {
        s.push(format!("k8s:sa:sa{w}"));
    }
    sels(&s)
}

static CACHE: LazyLock<Vec<Selectors>> = LazyLock::new(|| {
    let n = std::env::var("SPIRE_BENCH_CACHED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000usize);
    (1..=n).map(entry).collect()
});

#[divan::bench]
fn is_subset_of_match(b: Bencher<'_, '_>) {
    let w = workload(9);
    let e = entry(9);
    b.bench_local(|| divan::black_box(&e).is_subset_of(divan::black_box(&w)));
}

#[divan::bench]
fn is_subset_of_miss(b: Bencher<'_, '_>) {
    let w = workload(9);
    let e = entry(10);
    b.bench_local(|| divan::black_box(&e).is_subset_of(divan::black_box(&w)));
}

/// The entries matching one workload among N cached entries.
#[divan::bench]
fn workload_lookup_scan(b: Bencher<'_, '_>) {
    let cache = &*CACHE;
    let w = workload(cache.len() / 2);
    b.bench_local(|| cache.iter().filter(|e| e.is_subset_of(&w)).count());
}
