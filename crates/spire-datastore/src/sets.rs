//! SQL for set filters (selectors, federated trust domains) with the four match modes.

use crate::sql::{Arg, Sql};
use crate::types::MatchMode;

/// Where an owner's set elements live.
pub(crate) struct SetColumns<'a> {
    /// Child table, e.g. `entry_selectors`.
    pub(crate) table: &'static str,
    /// Its column referencing the owner, e.g. `entry_id`.
    pub(crate) fk: &'static str,
    /// The owner's key expression in the outer query, e.g. `e.id`.
    pub(crate) owner: &'static str,
    /// The element's columns, e.g. `["type", "value"]`.
    pub(crate) cols: &'a [&'static str],
}

/// Appends ` AND <condition>` so that the owner's set matches `elems` under `mode`:
/// - Exact: the sets are equal;
/// - Subset: the owner has at least one element and all of them are in `elems`;
/// - Superset: the owner has every element of `elems`;
/// - Any: the owner has at least one element of `elems`.
pub(crate) fn push_set_match(
    sql: &mut Sql,
    c: &SetColumns<'_>,
    elems: &[Vec<Arg>],
    mode: MatchMode,
) {
    match mode {
        MatchMode::Any => {
            sql.push(" AND ");
            exists(sql, c, Some(elems), false);
        }
        MatchMode::Superset => superset(sql, c, elems),
        MatchMode::Subset => subset(sql, c, elems),
        MatchMode::Exact => {
            subset(sql, c, elems);
            superset(sql, c, elems);
        }
    }
}

fn superset(sql: &mut Sql, c: &SetColumns<'_>, elems: &[Vec<Arg>]) {
    for e in elems {
        sql.push(" AND ");
        exists(sql, c, Some(std::slice::from_ref(e)), false);
    }
}

fn subset(sql: &mut Sql, c: &SetColumns<'_>, elems: &[Vec<Arg>]) {
    sql.push(" AND ");
    exists(sql, c, None, false);
    sql.push(" AND NOT ");
    exists(sql, c, Some(elems), true);
}

/// `EXISTS (SELECT 1 FROM t x WHERE x.fk = owner [AND [NOT] (elem OR elem …)])`.
fn exists(sql: &mut Sql, c: &SetColumns<'_>, elems: Option<&[Vec<Arg>]>, negate: bool) {
    sql.push("EXISTS (SELECT 1 FROM ")
        .push(c.table)
        .push(" x WHERE x.")
        .push(c.fk)
        .push(" = ")
        .push(c.owner);
    if let Some(elems) = elems {
        sql.push(if negate { " AND NOT (" } else { " AND (" });
        if elems.is_empty() {
            sql.push("1 = 0");
        }
        for (i, e) in elems.iter().enumerate() {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push("(");
            for (j, (col, v)) in c.cols.iter().zip(e).enumerate() {
                if j > 0 {
                    sql.push(" AND ");
                }
                sql.push("x.").push(col).push(" = ").bind(v.clone());
            }
            sql.push(")");
        }
        sql.push(")");
    }
    sql.push(")");
}
