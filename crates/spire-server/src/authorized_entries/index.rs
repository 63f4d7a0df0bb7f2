//! The in-memory index itself: pure data, no I/O, so every rule is unit-tested.
//!
//! Its maps hash with foldhash (randomly seeded per process) instead of SipHash: the keys are
//! entry IDs, SPIFFE IDs and selectors of registered entries and attested agents, i.e. values
//! written by administrators and by successful attestations, never raw input of an
//! unauthenticated caller, and a per-process seed keeps colliding keys from being precomputed.
//! SipHash was 7.8 % of the cold start with a million entries (BENCHMARKS.md, P3).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

type Hasher = foldhash::fast::RandomState;
type Map<K, V> = HashMap<K, V, Hasher>;
type Set<T> = HashSet<T, Hasher>;

use spire_datastore::{AttestedNode, Entry};
use spire_spiffe::{Selector, Selectors};

/// Registration entries and attested agents, indexed for authorized-entry lookups.
#[derive(Debug, Default)]
pub struct Index {
    /// `spiffe://<td>/spire/server`: entries parented to it are node aliases.
    server_id: String,
    entries: Map<String, Arc<Entry>>,
    /// Parent SPIFFE ID → IDs of the entries parented to it.
    by_parent: Map<String, BTreeSet<String>>,
    /// SPIFFE ID → IDs of the entries describing it.
    by_spiffe_id: Map<String, BTreeSet<String>>,
    /// Selector → IDs of the node-alias entries that carry it.
    aliases_by_selector: Map<Selector, Set<String>>,
    /// Agent SPIFFE ID → its attested node (with node selectors).
    agents: Map<String, Arc<AttestedNode>>,
    /// Selector → agents whose node selectors carry it.
    agents_by_selector: Map<Selector, Set<String>>,
    /// SPIFFE ID → number of `admin = true` entries with that ID.
    admins: Map<String, usize>,
    /// SPIFFE ID → number of `downstream = true` entries with that ID.
    downstreams: Map<String, usize>,
}

impl Index {
    /// An empty index for the trust domain whose server ID is `server_id`.
    pub fn new(server_id: &str) -> Self {
        Index {
            server_id: server_id.to_string(),
            ..Index::default()
        }
    }

    /// Number of entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Number of agents.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// The entry with this ID.
    pub fn entry(&self, id: &str) -> Option<&Arc<Entry>> {
        self.entries.get(id)
    }

    /// The agent with this SPIFFE ID.
    pub fn agent(&self, id: &str) -> Option<&Arc<AttestedNode>> {
        self.agents.get(id)
    }

    /// Whether an `admin = true` entry names `id`.
    pub fn is_admin(&self, id: &str) -> bool {
        self.admins.contains_key(id)
    }

    /// Whether a `downstream = true` entry names `id`.
    pub fn is_downstream(&self, id: &str) -> bool {
        self.downstreams.contains_key(id)
    }

    fn is_alias(&self, e: &Entry) -> bool {
        e.parent_id.as_str() == self.server_id
    }

    /// Inserts or replaces an entry; returns the previous version.
    pub fn upsert_entry(&mut self, entry: Entry) -> Option<Arc<Entry>> {
        let old = self.remove_entry(&entry.id);
        let e = Arc::new(entry);
        self.by_parent
            .entry(e.parent_id.as_str().to_string())
            .or_default()
            .insert(e.id.clone());
        self.by_spiffe_id
            .entry(e.spiffe_id.as_str().to_string())
            .or_default()
            .insert(e.id.clone());
        if self.is_alias(&e) {
            for s in e.selectors.iter() {
                self.aliases_by_selector
                    .entry(s.clone())
                    .or_default()
                    .insert(e.id.clone());
            }
        }
        if e.admin {
            *self
                .admins
                .entry(e.spiffe_id.as_str().to_string())
                .or_default() += 1;
        }
        if e.downstream {
            *self
                .downstreams
                .entry(e.spiffe_id.as_str().to_string())
                .or_default() += 1;
        }
        self.entries.insert(e.id.clone(), e);
        old
    }

    /// Removes an entry; returns it if it was present.
    pub fn remove_entry(&mut self, id: &str) -> Option<Arc<Entry>> {
        let e = self.entries.remove(id)?;
        remove_from(&mut self.by_parent, e.parent_id.as_str(), id);
        remove_from(&mut self.by_spiffe_id, e.spiffe_id.as_str(), id);
        if self.is_alias(&e) {
            for s in e.selectors.iter() {
                remove_from(&mut self.aliases_by_selector, s, id);
            }
        }
        if e.admin {
            decrement(&mut self.admins, e.spiffe_id.as_str());
        }
        if e.downstream {
            decrement(&mut self.downstreams, e.spiffe_id.as_str());
        }
        Some(e)
    }

    /// Inserts or replaces an agent; returns the previous version.
    pub fn upsert_agent(&mut self, node: AttestedNode) -> Option<Arc<AttestedNode>> {
        let id = node.spiffe_id.as_str().to_string();
        let old = self.remove_agent(&id);
        for s in node.selectors.iter() {
            self.agents_by_selector
                .entry(s.clone())
                .or_default()
                .insert(id.clone());
        }
        self.agents.insert(id, Arc::new(node));
        old
    }

    /// Takes over every agent of `other` (an index holding only agents, built at the same time
    /// as this one's entries during a cold start); agents of `other` replace those with the
    /// same ID.
    pub fn absorb_agents(&mut self, other: Index) {
        if self.agents.is_empty() {
            self.agents = other.agents;
            self.agents_by_selector = other.agents_by_selector;
            return;
        }
        for (_, node) in other.agents {
            self.upsert_agent(Arc::unwrap_or_clone(node));
        }
    }

    /// Removes an agent; returns it if it was present.
    pub fn remove_agent(&mut self, id: &str) -> Option<Arc<AttestedNode>> {
        let node = self.agents.remove(id)?;
        for s in node.selectors.iter() {
            remove_from(&mut self.agents_by_selector, s, id);
        }
        Some(node)
    }

    /// The alias entries whose selectors are a subset of `selectors`.
    fn matching_aliases(&self, selectors: &Selectors) -> Vec<&Arc<Entry>> {
        let mut hits: Map<&str, usize> = Map::default();
        for s in selectors.iter() {
            if let Some(ids) = self.aliases_by_selector.get(s) {
                for id in ids {
                    *hits.entry(id.as_str()).or_default() += 1;
                }
            }
        }
        hits.into_iter()
            .filter_map(|(id, n)| {
                let e = self.entries.get(id)?;
                (n == e.selectors.len()).then_some(e)
            })
            .collect()
    }

    /// The agents whose node selectors include every one of `selectors`.
    fn agents_matching(&self, selectors: &Selectors) -> Vec<&str> {
        let Some(first) = selectors.iter().next() else {
            return Vec::new();
        };
        let Some(candidates) = self.agents_by_selector.get(first) else {
            return Vec::new();
        };
        candidates
            .iter()
            .filter(|a| {
                self.agents
                    .get(a.as_str())
                    .is_some_and(|n| selectors.is_subset_of(&n.selectors))
            })
            .map(String::as_str)
            .collect()
    }

    /// Every entry the agent `agent_id` is authorized for: the descendants of the agent ID and
    /// of every node alias whose selectors are a subset of the agent's node selectors, where a
    /// descendant is an entry parented to the ID or (recursively) to a descendant's SPIFFE ID.
    /// Alias entries themselves are not included. Sorted by entry ID.
    pub fn authorized_entries(&self, agent_id: &str) -> Vec<Arc<Entry>> {
        let mut roots: Vec<&str> = vec![agent_id];
        if let Some(node) = self.agents.get(agent_id) {
            roots.extend(
                self.matching_aliases(&node.selectors)
                    .iter()
                    .map(|e| e.spiffe_id.as_str()),
            );
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<&str> = roots.into_iter().collect();
        let mut out: Vec<Arc<Entry>> = Vec::new();
        let mut taken: HashSet<&str> = HashSet::new();
        while let Some(parent) = queue.pop_front() {
            if !seen.insert(parent) {
                continue;
            }
            let Some(children) = self.by_parent.get(parent) else {
                continue;
            };
            for id in children {
                let Some(e) = self.entries.get(id) else {
                    continue;
                };
                if taken.insert(e.id.as_str()) {
                    out.push(Arc::clone(e));
                }
                queue.push_back(e.spiffe_id.as_str());
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The agents that can see `entry` (computed from the entry's parent, walking up through
    /// the entries whose SPIFFE ID is that parent, until agent IDs and node aliases).
    pub fn agents_seeing(&self, entry: &Entry) -> HashSet<String> {
        let mut out = HashSet::new();
        if self.is_alias(entry) {
            out.extend(
                self.agents_matching(&entry.selectors)
                    .into_iter()
                    .map(str::to_string),
            );
            return out;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = vec![entry.parent_id.as_str()];
        while let Some(p) = stack.pop() {
            if !seen.insert(p) {
                continue;
            }
            if self.agents.contains_key(p) || p.contains("/spire/agent/") {
                out.insert(p.to_string());
            }
            if let Some(ids) = self.by_spiffe_id.get(p) {
                for id in ids {
                    let Some(e) = self.entries.get(id) else {
                        continue;
                    };
                    if self.is_alias(e) {
                        out.extend(
                            self.agents_matching(&e.selectors)
                                .into_iter()
                                .map(str::to_string),
                        );
                    } else {
                        stack.push(e.parent_id.as_str());
                    }
                }
            }
        }
        out
    }
}

fn remove_from<K, Q, S: BuildHasher>(map: &mut HashMap<K, impl SetLike, S>, key: &Q, id: &str)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(set) = map.get_mut(key) {
        set.remove_id(id);
        if set.is_empty_set() {
            map.remove(key);
        }
    }
}

fn decrement(map: &mut Map<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

trait SetLike {
    fn remove_id(&mut self, id: &str);
    fn is_empty_set(&self) -> bool;
}

impl SetLike for BTreeSet<String> {
    fn remove_id(&mut self, id: &str) {
        self.remove(id);
    }
    fn is_empty_set(&self) -> bool {
        self.is_empty()
    }
}

impl SetLike for Set<String> {
    fn remove_id(&mut self, id: &str) {
        self.remove(id);
    }
    fn is_empty_set(&self) -> bool {
        self.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spire_spiffe::SpiffeId;

    const SERVER: &str = "spiffe://td/spire/server";

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn sels(list: &[&str]) -> Selectors {
        list.iter()
            .map(|s| s.parse::<Selector>().unwrap())
            .collect()
    }

    fn entry(eid: &str, spiffe: &str, parent: &str, s: &[&str]) -> Entry {
        let mut e = Entry::new(id(spiffe), id(parent), sels(s));
        e.id = eid.to_string();
        e
    }

    fn agent(a: &str, s: &[&str]) -> AttestedNode {
        AttestedNode {
            spiffe_id: id(a),
            attestation_type: "x509pop".into(),
            cert_serial_number: "1".into(),
            cert_not_after: 0,
            new_cert_serial_number: String::new(),
            new_cert_not_after: 0,
            can_reattest: true,
            agent_version: String::new(),
            selectors: sels(s),
        }
    }

    fn ids(v: &[Arc<Entry>]) -> Vec<&str> {
        v.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn direct_children_aliases_and_recursion() {
        let mut ix = Index::new(SERVER);
        ix.upsert_agent(agent("spiffe://td/spire/agent/a", &["x:1", "x:2"]));
        ix.upsert_agent(agent("spiffe://td/spire/agent/b", &["x:1"]));
        ix.upsert_entry(entry(
            "e1",
            "spiffe://td/w1",
            "spiffe://td/spire/agent/a",
            &["unix:uid:1"],
        ));
        ix.upsert_entry(entry(
            "e2",
            "spiffe://td/w2",
            "spiffe://td/spire/agent/b",
            &["unix:uid:1"],
        ));
        // Alias needing both selectors: only agent a matches.
        ix.upsert_entry(entry(
            "alias",
            "spiffe://td/node/both",
            SERVER,
            &["x:1", "x:2"],
        ));
        ix.upsert_entry(entry(
            "e3",
            "spiffe://td/w3",
            "spiffe://td/node/both",
            &["unix:uid:2"],
        ));
        // Nested: child of w3.
        ix.upsert_entry(entry(
            "e4",
            "spiffe://td/w4",
            "spiffe://td/w3",
            &["unix:uid:3"],
        ));
        assert_eq!(
            ids(&ix.authorized_entries("spiffe://td/spire/agent/a")),
            ["e1", "e3", "e4"]
        );
        assert_eq!(
            ids(&ix.authorized_entries("spiffe://td/spire/agent/b")),
            ["e2"]
        );
        // Who sees e4: agent a only.
        let seeing = ix.agents_seeing(ix.entry("e4").unwrap());
        assert_eq!(
            seeing,
            HashSet::from(["spiffe://td/spire/agent/a".to_string()])
        );
        // Agent b gains x:2 → now matches the alias.
        ix.upsert_agent(agent("spiffe://td/spire/agent/b", &["x:1", "x:2"]));
        assert_eq!(
            ids(&ix.authorized_entries("spiffe://td/spire/agent/b")),
            ["e2", "e3", "e4"]
        );
        // Alias removed → nobody sees e3.
        ix.remove_entry("alias");
        assert_eq!(
            ids(&ix.authorized_entries("spiffe://td/spire/agent/a")),
            ["e1"]
        );
        assert!(ix.agents_seeing(ix.entry("e3").unwrap()).is_empty());
    }

    #[test]
    fn agents_indexed_apart_and_absorbed_match_one_index() {
        let entries = || {
            [
                entry("alias", "spiffe://td/node", SERVER, &["x:1"]),
                entry("e1", "spiffe://td/w1", "spiffe://td/node", &["u:1"]),
                entry(
                    "e2",
                    "spiffe://td/w2",
                    "spiffe://td/spire/agent/b",
                    &["u:2"],
                ),
            ]
        };
        let agents = || {
            [
                agent("spiffe://td/spire/agent/a", &["x:1"]),
                agent("spiffe://td/spire/agent/b", &["x:2"]),
            ]
        };
        let mut one = Index::new(SERVER);
        entries()
            .into_iter()
            .for_each(|e| drop(one.upsert_entry(e)));
        agents().into_iter().for_each(|a| drop(one.upsert_agent(a)));

        let mut split = Index::new(SERVER);
        entries()
            .into_iter()
            .for_each(|e| drop(split.upsert_entry(e)));
        let mut apart = Index::new(SERVER);
        agents()
            .into_iter()
            .for_each(|a| drop(apart.upsert_agent(a)));
        split.absorb_agents(apart);
        assert_eq!(split.agent_count(), 2);
        for a in ["spiffe://td/spire/agent/a", "spiffe://td/spire/agent/b"] {
            assert_eq!(
                ids(&split.authorized_entries(a)),
                ids(&one.authorized_entries(a))
            );
        }
        assert_eq!(
            ids(&split.authorized_entries("spiffe://td/spire/agent/a")),
            ["e1"]
        );
        assert_eq!(
            split.agents_seeing(split.entry("e1").unwrap()),
            HashSet::from(["spiffe://td/spire/agent/a".to_string()])
        );

        // Into an index that has agents: same IDs are replaced, selectors re-indexed.
        let mut more = Index::new(SERVER);
        more.upsert_agent(agent("spiffe://td/spire/agent/b", &["x:1"]));
        split.absorb_agents(more);
        assert_eq!(split.agent_count(), 2);
        assert_eq!(
            ids(&split.authorized_entries("spiffe://td/spire/agent/b")),
            ["e1", "e2"]
        );
        assert_eq!(split.agents_seeing(split.entry("e1").unwrap()).len(), 2);
    }

    #[test]
    fn cycles_terminate_and_admin_counts() {
        let mut ix = Index::new(SERVER);
        let mut e1 = entry("e1", "spiffe://td/x", "spiffe://td/y", &["a:1"]);
        e1.admin = true;
        ix.upsert_entry(e1);
        ix.upsert_entry(entry("e2", "spiffe://td/y", "spiffe://td/x", &["a:1"]));
        assert!(
            ix.authorized_entries("spiffe://td/spire/agent/z")
                .is_empty()
        );
        assert!(ix.agents_seeing(ix.entry("e1").unwrap()).is_empty());
        assert!(ix.is_admin("spiffe://td/x"));
        ix.remove_entry("e1");
        assert!(!ix.is_admin("spiffe://td/x"));
        assert_eq!(ix.entry_count(), 1);
    }
}
