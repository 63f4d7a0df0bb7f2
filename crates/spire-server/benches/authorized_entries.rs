//! Micro-benchmarks of the authorized-entry index (`spire_server::authorized_entries::Index`)
//! at scale: building it from N entries and N/3.3 agents (cold start), computing one agent's
//! authorized entries, and finding the agents that see one entry (the change-log follower's
//! fan-out). The shape is the P3 one (node aliases covering 300 agents each with 100
//! workloads, the rest parented to agents, 2–4 selectors per workload).
//!
//! Sizes come from the environment so the default `cargo bench` stays quick:
//! `SPIRE_BENCH_ENTRIES` (default 100000; BENCHMARKS.md uses 1000000) and
//! `SPIRE_BENCH_AGENTS` (default ENTRIES * 3 / 10).
//!
//! ```sh
//! SPIRE_BENCH_ENTRIES=1000000 cargo bench -p spire-server --bench authorized_entries
//! ```

#![allow(clippy::unwrap_used)] // benchmark setup: a failure should abort the run

use std::sync::LazyLock;

use divan::Bencher;
use spire_datastore::{AttestedNode, Entry};
use spire_server::authorized_entries::Index;
use spire_spiffe::{Selector, Selectors, SpiffeId};

fn main() {
    divan::main();
}

const TD: &str = "example.org";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Data {
    entries: Vec<Entry>,
    agents: Vec<AttestedNode>,
}

fn id(path: &str) -> SpiffeId {
    format!("spiffe://{TD}{path}").parse().unwrap()
}

fn sels(list: &[String]) -> Selectors {
    list.iter()
        .map(|s| s.parse::<Selector>().unwrap())
        .collect()
}

fn workload_selectors(w: usize) -> Selectors {
    let mut s = vec![format!("unix:uid:{w}"), format!("unix:gid:{}", w % 7)];
    if w % 2 == 1 {
        s.push(format!("k8s:ns:ns{}", w % 5));
    }
    if w.is_multiple_of(3) {
        s.push(format!("k8s:sa:sa{w}"));
    }
    sels(&s)
}

static DATA: LazyLock<Data> = LazyLock::new(|| {
    let n_entries = env("SPIRE_BENCH_ENTRIES", 100_000);
    let n_agents = env("SPIRE_BENCH_AGENTS", n_entries * 3 / 10).max(1);
    let aliases = n_agents.div_ceil(300);
    let per_alias = 100;
    let per_agent = n_entries
        .saturating_sub(aliases * (per_alias + 1))
        .div_ceil(n_agents);
    let server = id("/spire/server");
    let mut entries = Vec::with_capacity(n_entries);
    for g in 0..aliases {
        let mut e = Entry::new(
            id(&format!("/bulk/alias/{g}")),
            server.clone(),
            sels(&[format!("bulk:group:{g}")]),
        );
        e.id = format!("bulk-alias-{g}");
        entries.push(e);
        for w in 1..=per_alias {
            let mut e = Entry::new(
                id(&format!("/bulk/alias/{g}/w/{w}")),
                id(&format!("/bulk/alias/{g}")),
                workload_selectors(w),
            );
            e.id = format!("bulk-aw-{g}-{w}");
            entries.push(e);
        }
    }
    let mut agents = Vec::with_capacity(n_agents);
    for a in 1..=n_agents {
        let agent = id(&format!("/spire/agent/bulk/{a}"));
        for w in 1..=per_agent {
            let mut e = Entry::new(
                id(&format!("/bulk/agent/{a}/w/{w}")),
                agent.clone(),
                workload_selectors(w),
            );
            e.id = format!("bulk-w-{a}-{w}");
            entries.push(e);
        }
        agents.push(AttestedNode {
            spiffe_id: agent,
            attestation_type: "join_token".into(),
            cert_serial_number: a.to_string(),
            cert_not_after: 0,
            new_cert_serial_number: String::new(),
            new_cert_not_after: 0,
            can_reattest: false,
            agent_version: String::new(),
            selectors: sels(&[format!("bulk:group:{}", a % aliases)]),
        });
    }
    eprintln!(
        "authorized_entries bench: {} entries, {} agents, {aliases} aliases",
        entries.len(),
        agents.len()
    );
    Data { entries, agents }
});

fn build() -> Index {
    let d = &*DATA;
    let mut ix = Index::new(&format!("spiffe://{TD}/spire/server"));
    for e in &d.entries {
        ix.upsert_entry(e.clone());
    }
    for n in &d.agents {
        ix.upsert_agent(n.clone());
    }
    ix
}

static INDEX: LazyLock<Index> = LazyLock::new(build);

/// Cold start: every entry and agent inserted into an empty index.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn build_index(b: Bencher<'_, '_>) {
    LazyLock::force(&DATA);
    b.bench(build);
}

/// One agent's authorized entries (its own workloads plus its alias group's).
#[divan::bench]
fn authorized_entries_one_agent(b: Bencher<'_, '_>) {
    let ix = &*INDEX;
    let n = DATA.agents.len();
    let mut i = 0usize;
    b.bench_local(|| {
        i = (i + 7919) % n;
        let agent = format!("spiffe://{TD}/spire/agent/bulk/{}", i + 1);
        ix.authorized_entries(&agent).len()
    });
}

/// The agents that see one alias workload entry (the follower's fan-out on a change).
#[divan::bench]
fn agents_seeing_alias_entry(b: Bencher<'_, '_>) {
    let ix = &*INDEX;
    let e = DATA
        .entries
        .iter()
        .find(|e| e.id.starts_with("bulk-aw-"))
        .unwrap()
        .clone();
    b.bench_local(|| ix.agents_seeing(&e).len());
}
