//! A tiny dynamic-SQL builder that numbers `$N` placeholders and row-decoding helpers.
//!
//! Queries are written once with PostgreSQL-style `$N` placeholders, which SQLite and
//! PostgreSQL understand through the `Any` driver. MySQL/MariaDB only knows positional `?`:
//! for it [`rewrite_placeholders`] turns every `$N` (outside quoted text) into `?` and lays the
//! arguments out in placeholder order (a `$N` used twice binds its value twice).

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe, Row};

use crate::error::{Error, Result};
use crate::store::Backend;

/// A bound value.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
    /// SQL NULL (only produced by a placeholder without an argument).
    Null,
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Arg::Int(i64::from(v))
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Int(i64::from(v))
    }
}

impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}

/// SQL text plus its arguments, in placeholder order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends literal SQL (never user input).
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `arg`.
    pub(crate) fn bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// The query for `backend`, arguments bound.
    pub(crate) fn query(&self, backend: Backend) -> Query<'static, Any, AnyArguments> {
        if backend == Backend::Mysql {
            let (text, args) = rewrite_placeholders(&self.text, &self.args);
            return bind_all(sqlx::query(AssertSqlSafe(text)), &args);
        }
        bind_all(sqlx::query(AssertSqlSafe(self.text.clone())), &self.args)
    }
}

/// Binds `args` (for `$1`, `$2`, …) to a query with static text, for `backend`.
pub(crate) fn q(
    backend: Backend,
    text: &'static str,
    args: &[Arg],
) -> Query<'static, Any, AnyArguments> {
    if backend == Backend::Mysql {
        let (text, args) = rewrite_placeholders(text, args);
        return bind_all(sqlx::query(AssertSqlSafe(text)), &args);
    }
    bind_all(sqlx::query(text), args)
}

/// Rewrites `$N` placeholders into MySQL's positional `?`, returning the arguments in the order
/// the `?` appear. Text inside single quotes, double quotes and backticks is left alone. A
/// placeholder naming a missing argument binds NULL (the database then reports the error).
pub(crate) fn rewrite_placeholders(text: &str, args: &[Arg]) -> (String, Vec<Arg>) {
    let mut out = String::with_capacity(text.len());
    let mut ordered = Vec::with_capacity(args.len());
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' | '`' => {
                quote = Some(c);
                out.push(c);
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = 0usize;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n.saturating_mul(10).saturating_add(d as usize);
                    chars.next();
                }
                out.push('?');
                ordered.push(
                    n.checked_sub(1)
                        .and_then(|i| args.get(i))
                        .cloned()
                        .unwrap_or(Arg::Null),
                );
            }
            c => out.push(c),
        }
    }
    (out, ordered)
}

/// Binds `args` to `query` in order.
pub(crate) fn bind_all(
    mut query: Query<'static, Any, AnyArguments>,
    args: &[Arg],
) -> Query<'static, Any, AnyArguments> {
    for a in args {
        query = match a {
            Arg::Text(s) => query.bind(s.clone()),
            Arg::Int(i) => query.bind(*i),
            Arg::Bytes(b) => query.bind(b.clone()),
            Arg::Null => query.bind(Option::<i64>::None),
        };
    }
    query
}

/// Reads a text column. Binary columns (MySQL stores keys as `VARBINARY` so that comparisons
/// are byte-wise) are decoded as UTF-8.
pub(crate) fn text(row: &AnyRow, col: &str) -> Result<String> {
    match row.try_get::<String, _>(col) {
        Ok(s) => Ok(s),
        Err(e) => match row.try_get::<Vec<u8>, _>(col) {
            Ok(b) => String::from_utf8(b).map_err(|e| Error::corrupt("text column", e)),
            Err(_) => Err(e.into()),
        },
    }
}

/// Reads an integer column.
pub(crate) fn int(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

/// Reads a 0/1 integer column as a bool.
pub(crate) fn flag(row: &AnyRow, col: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

/// Reads a blob column.
pub(crate) fn bytes(row: &AnyRow, col: &str) -> Result<Vec<u8>> {
    Ok(row.try_get::<Vec<u8>, _>(col)?)
}

/// Parses a stored value, reporting a corrupt row on failure.
pub(crate) fn parse<T>(what: &'static str, s: &str) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| Error::corrupt(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(args: &[Arg]) -> Vec<i64> {
        args.iter()
            .map(|a| match a {
                Arg::Int(i) => *i,
                _ => -1,
            })
            .collect()
    }

    #[test]
    fn placeholders_become_positional_in_order() {
        let args = [Arg::Int(10), Arg::Int(20), Arg::Int(30)];
        let (t, a) = rewrite_placeholders("INSERT INTO t VALUES ($1, $2, $3, $3)", &args);
        assert_eq!(t, "INSERT INTO t VALUES (?, ?, ?, ?)");
        assert_eq!(ints(&a), vec![10, 20, 30, 30]);
        let (t, a) = rewrite_placeholders("SELECT $2 + $1 + $10", &args);
        assert_eq!(t, "SELECT ? + ? + ?");
        assert_eq!(ints(&a), vec![20, 10, -1]);
    }

    #[test]
    fn quoted_text_is_left_alone() {
        let args = [Arg::Int(1)];
        let (t, a) = rewrite_placeholders("SELECT '$1', \"$1\", `$1`, 'it''s $1', $1, $x", &args);
        assert_eq!(t, "SELECT '$1', \"$1\", `$1`, 'it''s $1', ?, $x");
        assert_eq!(ints(&a), vec![1]);
    }
}
