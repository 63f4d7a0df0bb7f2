//! Why a caller does or does not get an identity (spire-rs addition; SPIRE has none).
//!
//! For a caller's selectors the explanation lists the entries it matches and, when there are
//! none, the nearest entries: those lacking the fewest of their selectors (ties broken by entry
//! ID), each with the selectors it lacks. Entries with no selector of a type the caller has
//! (such as node alias entries with `spiffe_id:` selectors) are not near misses. The agent logs this on `PermissionDenied`; the
//! workload itself is only told "no identity issued".

use std::fmt;

use spire_spiffe::{Selector, Selectors};

use crate::identity::IdentitySnapshot;

/// How many near-miss entries are reported by default.
pub const DEFAULT_NEAREST: usize = 3;

/// One entry in an explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainedEntry {
    /// The entry ID.
    pub entry_id: String,
    /// The entry's SPIFFE ID.
    pub spiffe_id: String,
    /// The entry selectors the caller lacks (empty for a match).
    pub missing: Vec<Selector>,
    /// Whether the agent holds a signed X509-SVID for the entry.
    pub svid_signed: bool,
}

/// The explanation for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The caller's pid.
    pub pid: i32,
    /// The caller's selectors.
    pub selectors: Selectors,
    /// Entries the caller matches (after hint de-duplication).
    pub matched: Vec<ExplainedEntry>,
    /// When nothing matches: the nearest entries.
    pub nearest: Vec<ExplainedEntry>,
    /// The snapshot revision used.
    pub revision: u64,
}

/// Explains `selectors` against `snapshot`, reporting at most `max_nearest` near misses.
pub fn explain(
    snapshot: &IdentitySnapshot,
    pid: i32,
    selectors: &Selectors,
    max_nearest: usize,
) -> Explanation {
    let matched: Vec<ExplainedEntry> = snapshot
        .entries_for(selectors)
        .into_iter()
        .map(|id| ExplainedEntry {
            entry_id: id.entry.entry_id.to_string(),
            spiffe_id: id.entry.spiffe_id.to_string(),
            missing: Vec::new(),
            svid_signed: id.svid.is_some(),
        })
        .collect();
    let mut nearest = Vec::new();
    if matched.is_empty() {
        // Only entries that speak about the same kinds of selectors as the caller's are near
        // misses: a node alias entry (`spiffe_id:` selectors) is never one for a workload.
        let kinds: Vec<&str> = selectors.iter().map(|s| s.kind()).collect();
        let mut all: Vec<ExplainedEntry> = snapshot
            .identities
            .values()
            .filter(|id| id.entry.selectors.iter().any(|s| kinds.contains(&s.kind())))
            .map(|id| ExplainedEntry {
                entry_id: id.entry.entry_id.to_string(),
                spiffe_id: id.entry.spiffe_id.to_string(),
                missing: id
                    .entry
                    .selectors
                    .iter()
                    .filter(|s| !selectors.contains(s))
                    .cloned()
                    .collect(),
                svid_signed: id.svid.is_some(),
            })
            .collect();
        all.sort_by(|a, b| {
            a.missing
                .len()
                .cmp(&b.missing.len())
                .then_with(|| a.entry_id.cmp(&b.entry_id))
        });
        all.truncate(max_nearest);
        nearest = all;
    }
    Explanation {
        pid,
        selectors: selectors.clone(),
        matched,
        nearest,
        revision: snapshot.revision,
    }
}

fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Explanation {
    /// The caller's selectors, comma-separated.
    pub fn selectors_text(&self) -> String {
        join(self.selectors.iter())
    }

    /// The near misses in one line: `<entry id> <spiffe id> lacks [<selectors>]; ...`.
    pub fn nearest_text(&self) -> String {
        if self.nearest.is_empty() {
            return "no entries".to_owned();
        }
        self.nearest
            .iter()
            .map(|e| {
                format!(
                    "{} {} lacks [{}]",
                    e.entry_id,
                    e.spiffe_id,
                    join(e.missing.iter())
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "PID: {}", self.pid)?;
        writeln!(f, "Selectors:")?;
        for s in &self.selectors {
            writeln!(f, "  {s}")?;
        }
        if self.matched.is_empty() {
            writeln!(
                f,
                "Matched entries: none (the workload is told \"no identity issued\")"
            )?;
            if self.nearest.is_empty() {
                writeln!(f, "Nearest entries: none (the agent has no entries)")?;
            } else {
                writeln!(f, "Nearest entries:")?;
                for e in &self.nearest {
                    writeln!(f, "  Entry ID  : {}", e.entry_id)?;
                    writeln!(f, "  SPIFFE ID : {}", e.spiffe_id)?;
                    writeln!(f, "  Missing   : {}", join(e.missing.iter()))?;
                }
            }
        } else {
            writeln!(f, "Matched entries:")?;
            for e in &self.matched {
                let state = if e.svid_signed {
                    "SVID signed"
                } else {
                    "SVID not signed yet"
                };
                writeln!(f, "  {} {} ({state})", e.entry_id, e.spiffe_id)?;
            }
        }
        write!(f, "Snapshot revision: {}", self.revision)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::identity::{EntryView, Identity};

    pub(crate) fn entry(id: &str, spiffe: &str, sels: &[&str]) -> EntryView {
        EntryView {
            entry_id: id.into(),
            spiffe_id: spiffe.parse().unwrap(),
            parent_id: "spiffe://example.org/agent".parse().unwrap(),
            selectors: sels.iter().map(|s| s.parse().unwrap()).collect(),
            federates_with: vec![],
            hint: String::new(),
            created_at: 0,
            revision_number: 0,
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            jwt_svid_include_jti: false,
            disable_x509_svid_prefetch: false,
            admin: false,
            downstream: false,
        }
    }

    fn snapshot(entries: Vec<EntryView>) -> IdentitySnapshot {
        let mut identities = BTreeMap::new();
        for e in entries {
            identities.insert(
                e.entry_id.clone(),
                Identity {
                    entry: Arc::new(e),
                    svid: None,
                },
            );
        }
        IdentitySnapshot {
            revision: 7,
            trust_domain: "example.org".parse().unwrap(),
            bundle: None,
            federated_bundles: BTreeMap::new(),
            identities,
        }
    }

    fn sels(s: &[&str]) -> Selectors {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn nearest_entries_are_those_missing_fewest_selectors() {
        let snap = snapshot(vec![
            entry(
                "a",
                "spiffe://example.org/a",
                &["unix:uid:1", "unix:gid:1", "unix:user:x"],
            ),
            entry("b", "spiffe://example.org/b", &["unix:uid:2"]),
            entry(
                "c",
                "spiffe://example.org/c",
                &["unix:uid:1000", "unix:gid:5"],
            ),
            entry(
                "d",
                "spiffe://example.org/d",
                &["unix:uid:1000", "unix:sha256:ab"],
            ),
            entry(
                "alias",
                "spiffe://example.org/node",
                &["spiffe_id:spiffe://example.org/x"],
            ),
        ]);
        let ex = explain(&snap, 42, &sels(&["unix:uid:1000", "unix:gid:1000"]), 3);
        assert!(ex.matched.is_empty());
        let ids: Vec<&str> = ex.nearest.iter().map(|e| e.entry_id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "d"]);
        assert_eq!(ex.nearest[1].missing, vec!["unix:gid:5".parse().unwrap()]);
        let line = ex.nearest_text();
        assert!(
            line.contains("c spiffe://example.org/c lacks [unix:gid:5]"),
            "{line}"
        );
        assert_eq!(ex.revision, 7);
        assert!(ex.to_string().contains("Missing   : unix:sha256:ab"));
    }

    #[test]
    fn a_match_lists_matched_entries_and_no_near_misses() {
        let snap = snapshot(vec![
            entry("a", "spiffe://example.org/a", &["unix:uid:1000"]),
            entry("b", "spiffe://example.org/b", &["unix:uid:2"]),
        ]);
        let ex = explain(&snap, 1, &sels(&["unix:uid:1000", "unix:gid:1"]), 3);
        assert_eq!(ex.matched.len(), 1);
        assert!(ex.nearest.is_empty());
        assert!(ex.to_string().contains("SVID not signed yet"));
        let empty = explain(&snapshot(vec![]), 1, &sels(&["unix:uid:1"]), 3);
        assert_eq!(empty.nearest_text(), "no entries");
    }
}
