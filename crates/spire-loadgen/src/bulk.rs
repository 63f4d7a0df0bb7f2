//! Bulk data for the cold-start figure (P3): SQL that makes PostgreSQL generate `agents`
//! attested nodes and `entries` registration entries server-side (`generate_series`), in the
//! same realistic shape as the load run (node aliases covering groups of agents, workloads
//! parented to each agent and to each alias, 2–4 selectors per workload), written straight
//! into the spire-rs PostgreSQL schema in one transaction. Creating a million entries through
//! the API would take longer than the measurement it prepares.

/// The shape of a bulk data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Attested nodes.
    pub agents: u64,
    /// Node aliases (each covers `agents / aliases` agents through a node selector).
    pub aliases: u64,
    /// Workload entries per alias.
    pub per_alias: u64,
    /// Workload entries per agent.
    pub per_agent: u64,
}

impl Shape {
    /// A shape with at least `entries` entries (rounded up to whole workloads per agent)
    /// over `agents` agents: one alias per 300 agents with 100 workloads each, the rest
    /// parented to agents.
    pub fn for_totals(entries: u64, agents: u64) -> Self {
        let agents = agents.max(1);
        let aliases = agents.div_ceil(300);
        let per_alias = 100;
        let alias_entries = aliases * (per_alias + 1);
        let per_agent = entries.saturating_sub(alias_entries).div_ceil(agents);
        Shape {
            agents,
            aliases,
            per_alias,
            per_agent,
        }
    }

    /// Registration entries this shape creates (aliases included).
    pub fn entries(&self) -> u64 {
        self.aliases * (1 + self.per_alias) + self.agents * self.per_agent
    }
}

/// The SQL (PostgreSQL) that creates `shape` in trust domain `td`, timestamps `now` (Unix s).
pub fn postgres_sql(td: &str, shape: &Shape, now: i64) -> String {
    let Shape {
        agents,
        aliases,
        per_alias,
        per_agent,
    } = *shape;
    let not_after = now + 30 * 86_400;
    let agent = format!("'spiffe://{td}/spire/agent/bulk/' || a");
    let alias = format!("'spiffe://{td}/bulk/alias/' || g");
    // Workload selectors: unix:uid always, unix:gid always, k8s:ns on odd, k8s:sa every third.
    let selectors = |id: &str, w: &str| {
        format!(
            "INSERT INTO entry_selectors (entry_id, type, value)\n\
             SELECT id, 'unix', 'uid:' || {w} FROM {id}\n\
             UNION ALL SELECT id, 'unix', 'gid:' || ({w} % 7) FROM {id}\n\
             UNION ALL SELECT id, 'k8s', 'ns:ns' || ({w} % 5) FROM {id} WHERE {w} % 2 = 1\n\
             UNION ALL SELECT id, 'k8s', 'sa:sa' || {w} FROM {id} WHERE {w} % 3 = 0;\n"
        )
    };
    let mut s = String::new();
    s.push_str("BEGIN;\n");
    s.push_str(&format!(
        "INSERT INTO attested_nodes (spiffe_id, attestation_type, cert_serial_number, cert_not_after, can_reattest, created_at, updated_at)\n\
         SELECT {agent}, 'join_token', (1000000 + a)::text, {not_after}, 0, {now}, {now} FROM generate_series(1, {agents}) a;\n\
         INSERT INTO node_selectors (spiffe_id, type, value)\n\
         SELECT {agent}, 'bulk', 'group:' || (a % {aliases}) FROM generate_series(1, {agents}) a;\n"
    ));
    s.push_str(&format!(
        "INSERT INTO registered_entries (id, spiffe_id, parent_id, identity_key, created_at)\n\
         SELECT 'bulk-alias-' || g, {alias}, 'spiffe://{td}/spire/server', 'bulk-alias-' || g, {now} FROM generate_series(0, {last_alias}) g;\n\
         INSERT INTO entry_selectors (entry_id, type, value)\n\
         SELECT 'bulk-alias-' || g, 'bulk', 'group:' || g FROM generate_series(0, {last_alias}) g;\n",
        last_alias = aliases.saturating_sub(1)
    ));
    if per_alias > 0 {
        s.push_str(&format!(
            "CREATE TEMP TABLE bulk_aw AS SELECT 'bulk-aw-' || g || '-' || w AS id, g, w FROM generate_series(0, {last_alias}) g, generate_series(1, {per_alias}) w;\n\
             INSERT INTO registered_entries (id, spiffe_id, parent_id, identity_key, created_at)\n\
             SELECT id, {alias} || '/w/' || w, {alias}, id, {now} FROM bulk_aw;\n",
            last_alias = aliases.saturating_sub(1)
        ));
        s.push_str(&selectors("bulk_aw", "w"));
    }
    if per_agent > 0 {
        s.push_str(&format!(
            "CREATE TEMP TABLE bulk_w AS SELECT 'bulk-w-' || a || '-' || w AS id, a, w FROM generate_series(1, {agents}) a, generate_series(1, {per_agent}) w;\n\
             INSERT INTO registered_entries (id, spiffe_id, parent_id, identity_key, created_at)\n\
             SELECT id, 'spiffe://{td}/bulk/agent/' || a || '/w/' || w, {agent}, id, {now} FROM bulk_w;\n"
        ));
        s.push_str(&selectors("bulk_w", "w"));
    }
    s.push_str("COMMIT;\nANALYZE;\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_adds_up_to_the_requested_totals() {
        let s = Shape::for_totals(1_000_000, 300_000);
        assert_eq!(s.aliases, 1000);
        assert_eq!(s.per_agent, 3);
        assert_eq!(s.entries(), 1000 * 101 + 300_000 * 3);
        let s = Shape::for_totals(10_000, 1_000);
        assert_eq!(s.aliases, 4);
        assert_eq!(s.entries(), 4 * 101 + 1000 * 10);
    }

    #[test]
    fn sql_names_every_table_and_count() {
        let shape = Shape::for_totals(10_000, 1_000);
        let sql = postgres_sql("example.org", &shape, 1_700_000_000);
        assert!(sql.starts_with("BEGIN;"));
        assert!(sql.contains("generate_series(1, 1000) a"));
        assert!(sql.contains("generate_series(1, 10) w"));
        assert!(sql.contains("generate_series(0, 3) g"));
        assert!(sql.contains("spiffe://example.org/spire/server"));
        for t in [
            "attested_nodes",
            "node_selectors",
            "registered_entries",
            "entry_selectors",
        ] {
            assert!(sql.contains(&format!("INSERT INTO {t} ")), "{t}");
        }
        assert!(sql.trim_end().ends_with("ANALYZE;"));
    }
}
