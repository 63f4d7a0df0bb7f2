//! Selectors (`type:value`) and sorted selector sets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// No `:` separates type and value.
    #[error("selector has no ':' (expected \"type:value\")")]
    MissingSeparator,
    /// The part before the first `:` is empty.
    #[error("selector type is empty (expected \"type:value\" with a non-empty type)")]
    EmptyType,
    /// The part after the first `:` is empty.
    #[error("selector value is empty (expected \"type:value\" with a non-empty value)")]
    EmptyValue,
    /// A type given separately contains `:`, which the `type:value` form cannot express.
    #[error("selector type contains ':' (the type must not contain ':')")]
    TypeContainsColon,
}

/// A selector such as `unix:uid:1000` (type `unix`, value `uid:1000`).
///
/// Invariant: the type is non-empty and has no `:`; the value is non-empty (and may contain `:`).
/// Ordered by type, then value.
///
/// Held as one exact-size allocation of `type:value` plus the length of the type: agents and
/// the server's index hold millions of these, so one heap block each instead of two matters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector {
    /// `type:value`.
    text: Box<str>,
    /// The length of the type (the index of the first `:` in `text`).
    kind_len: usize,
}

impl Selector {
    /// Builds a selector from a type and a value (as carried separately by the SPIRE APIs).
    pub fn new(kind: impl AsRef<str>, value: impl AsRef<str>) -> Result<Self, SelectorError> {
        let (kind, value) = (kind.as_ref(), value.as_ref());
        if kind.is_empty() {
            return Err(SelectorError::EmptyType);
        }
        if kind.contains(':') {
            return Err(SelectorError::TypeContainsColon);
        }
        if value.is_empty() {
            return Err(SelectorError::EmptyValue);
        }
        let mut text = String::with_capacity(kind.len() + 1 + value.len());
        text.push_str(kind);
        text.push(':');
        text.push_str(value);
        Ok(Selector {
            text: text.into_boxed_str(),
            kind_len: kind.len(),
        })
    }

    /// The selector type (the `type` field on the wire), e.g. `unix`.
    pub fn kind(&self) -> &str {
        &self.text[..self.kind_len]
    }

    /// The selector value, e.g. `uid:1000`.
    pub fn value(&self) -> &str {
        &self.text[self.kind_len + 1..]
    }

    /// The selector as `type:value`, without allocating.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Splits into `(type, value)`.
    pub fn into_parts(self) -> (String, String) {
        (self.kind().to_owned(), self.value().to_owned())
    }
}

impl Ord for Selector {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // By type, then value: not the order of the `type:value` strings, since a type may
        // hold characters that sort before ':' (`a-` against `a`).
        (self.kind(), self.value()).cmp(&(other.kind(), other.value()))
    }
}

impl PartialOrd for Selector {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    /// Parses `type:value`, splitting at the first `:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, value) = s.split_once(':').ok_or(SelectorError::MissingSeparator)?;
        Selector::new(kind, value)
    }
}

impl TryFrom<&str> for Selector {
    type Error = SelectorError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for Selector {
    type Error = SelectorError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> String {
        s.text.into()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({:?})", &*self.text)
    }
}

/// A sorted set of selectors without duplicates.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "Vec<Selector>", into = "Vec<Selector>")]
pub struct Selectors {
    items: Vec<Selector>,
}

impl Selectors {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of distinct selectors.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether `s` is in the set.
    pub fn contains(&self, s: &Selector) -> bool {
        self.items.binary_search(s).is_ok()
    }

    /// Adds `s`; returns false if it was already present.
    pub fn insert(&mut self, s: Selector) -> bool {
        match self.items.binary_search(&s) {
            Ok(_) => false,
            Err(i) => {
                self.items.insert(i, s);
                true
            }
        }
    }

    /// Removes `s`; returns whether it was present.
    pub fn remove(&mut self, s: &Selector) -> bool {
        match self.items.binary_search(s) {
            Ok(i) => {
                self.items.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether every selector of `self` is in `other` (the empty set is a subset of any set).
    pub fn is_subset_of(&self, other: &Selectors) -> bool {
        // Both sorted: a linear merge walk.
        let mut theirs = other.items.iter();
        'outer: for mine in &self.items {
            for t in theirs.by_ref() {
                match t.cmp(mine) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => continue 'outer,
                    std::cmp::Ordering::Greater => return false,
                }
            }
            return false;
        }
        true
    }

    /// Whether `self` and `other` share at least one selector.
    pub fn intersects(&self, other: &Selectors) -> bool {
        let (mut a, mut b) = (self.items.iter().peekable(), other.items.iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            match x.cmp(y) {
                std::cmp::Ordering::Less => {
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    b.next();
                }
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// The selectors in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Selector> {
        self.items.iter()
    }

    /// The selectors in order, as a slice.
    pub fn as_slice(&self) -> &[Selector] {
        &self.items
    }

    /// Consumes the set into its sorted vector.
    pub fn into_vec(self) -> Vec<Selector> {
        self.items
    }
}

impl From<Vec<Selector>> for Selectors {
    fn from(mut items: Vec<Selector>) -> Self {
        items.sort();
        items.dedup();
        items.shrink_to_fit();
        Selectors { items }
    }
}

impl From<Selectors> for Vec<Selector> {
    fn from(s: Selectors) -> Self {
        s.items
    }
}

impl FromIterator<Selector> for Selectors {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        Selectors::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl Extend<Selector> for Selectors {
    fn extend<I: IntoIterator<Item = Selector>>(&mut self, iter: I) {
        self.items.extend(iter);
        self.items.sort();
        self.items.dedup();
    }
}

impl IntoIterator for Selectors {
    type Item = Selector;
    type IntoIter = std::vec::IntoIter<Selector>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a> IntoIterator for &'a Selectors {
    type Item = &'a Selector;
    type IntoIter = std::slice::Iter<'a, Selector>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl fmt::Debug for Selectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.items.iter().map(|s| s.to_string()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        s.parse().unwrap()
    }

    #[test]
    fn parse_splits_at_first_colon() {
        let s = sel("unix:uid:1000");
        assert_eq!(s.kind(), "unix");
        assert_eq!(s.value(), "uid:1000");
        assert_eq!(s.to_string(), "unix:uid:1000");
        let s = sel("k8s:ns:");
        assert_eq!(s.value(), "ns:");
        let s = sel("a::");
        assert_eq!(s.value(), ":");
    }

    #[test]
    fn order_is_by_type_then_value_and_parts_round_trip() {
        // '-' sorts before ':', so the order of the `type:value` strings would put `a-` first.
        assert!(sel("a:z") < sel("a-:b"));
        assert!(sel("unix:gid:1") < sel("unix:uid:0"));
        let s = Selector::new("k8s", "ns:prod").unwrap();
        assert_eq!(s.as_str(), "k8s:ns:prod");
        assert_eq!(s, sel("k8s:ns:prod"));
        assert_eq!(
            s.clone().into_parts(),
            ("k8s".to_owned(), "ns:prod".to_owned())
        );
        assert_eq!(String::from(s), "k8s:ns:prod");
    }

    #[test]
    fn parse_rejections() {
        assert_eq!(
            "unix".parse::<Selector>().unwrap_err(),
            SelectorError::MissingSeparator
        );
        assert_eq!(
            "".parse::<Selector>().unwrap_err(),
            SelectorError::MissingSeparator
        );
        assert_eq!(
            ":uid:1".parse::<Selector>().unwrap_err(),
            SelectorError::EmptyType
        );
        assert_eq!(
            "unix:".parse::<Selector>().unwrap_err(),
            SelectorError::EmptyValue
        );
        assert_eq!(
            Selector::new("a:b", "c").unwrap_err(),
            SelectorError::TypeContainsColon
        );
        assert_eq!(
            Selector::new("", "c").unwrap_err(),
            SelectorError::EmptyType
        );
        assert_eq!(
            Selector::new("a", "").unwrap_err(),
            SelectorError::EmptyValue
        );
        assert!(
            SelectorError::EmptyType
                .to_string()
                .contains("selector type is empty")
        );
    }

    #[test]
    fn serde_and_order() {
        let s = sel("unix:uid:0");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"unix:uid:0\"");
        assert_eq!(
            serde_json::from_str::<Selector>("\"unix:uid:0\"").unwrap(),
            s
        );
        assert!(serde_json::from_str::<Selector>("\"unix\"").is_err());
        assert!(sel("a:z") < sel("b:a"));
        assert!(sel("a:a") < sel("a:b"));
        assert_eq!(Selector::new("a", "b").unwrap(), sel("a:b"));
    }

    #[test]
    fn selectors_set() {
        let a: Selectors = ["b:2", "a:1", "b:2", "c:3"]
            .iter()
            .map(|s| sel(s))
            .collect();
        assert_eq!(a.len(), 3);
        let strs: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        assert_eq!(strs, ["a:1", "b:2", "c:3"]);
        let sub: Selectors = ["c:3", "a:1"].iter().map(|s| sel(s)).collect();
        assert!(sub.is_subset_of(&a));
        assert!(!a.is_subset_of(&sub));
        assert!(Selectors::new().is_subset_of(&a));
        assert!(Selectors::new().is_subset_of(&Selectors::new()));
        assert!(a.is_subset_of(&a));
        let other: Selectors = ["a:1", "d:4"].iter().map(|s| sel(s)).collect();
        assert!(!other.is_subset_of(&a));
        assert!(other.intersects(&a));
        let disjoint: Selectors = ["z:9"].iter().map(|s| sel(s)).collect();
        assert!(!disjoint.intersects(&a));
        assert!(!disjoint.is_subset_of(&a));
        let mut m = a.clone();
        assert!(!m.insert(sel("a:1")));
        assert!(m.insert(sel("0:0")));
        assert_eq!(m.as_slice()[0], sel("0:0"));
        assert!(m.remove(&sel("0:0")));
        assert!(!m.remove(&sel("0:0")));
        assert_eq!(m, a);
        assert!(a.contains(&sel("b:2")));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"["a:1","b:2","c:3"]"#);
        let back: Selectors = serde_json::from_str(r#"["c:3","a:1","b:2","a:1"]"#).unwrap();
        assert_eq!(back, a);
    }
}
