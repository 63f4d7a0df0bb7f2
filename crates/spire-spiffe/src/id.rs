//! SPIFFE IDs and trust domains (SPIFFE-ID standard).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The only accepted scheme prefix. Lowercase only.
const SCHEME_PREFIX: &str = "spiffe://";

/// Maximum length of a trust domain name, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Maximum length of a whole SPIFFE ID (`spiffe://td/path`), in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Why a SPIFFE ID or trust domain was rejected. Each message names the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The input was the empty string.
    #[error("spiffe id cannot be empty")]
    Empty,
    /// The input does not begin with `spiffe://`.
    #[error("scheme is missing or not spiffe (expected the id to begin with \"spiffe://\")")]
    BadScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// Trust domains must be written in lowercase; they are not folded.
    #[error("trust domain contains an uppercase letter {0:?} (trust domains must be lowercase)")]
    TrustDomainUppercase(char),
    /// A character outside `[a-z0-9._-]` in the trust domain.
    #[error(
        "trust domain contains {0:?}: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
    )]
    TrustDomainChar(char),
    /// A `:` in the authority (a port, or an IPv6 literal).
    #[error("trust domain contains a port or ':' (ports are not allowed in a spiffe id)")]
    Port,
    /// A `@` in the authority.
    #[error("trust domain contains userinfo '@' (userinfo is not allowed in a spiffe id)")]
    UserInfo,
    /// A `%` anywhere.
    #[error("spiffe id contains percent-encoding '%' (percent-encoded characters are not allowed)")]
    PercentEncoded,
    /// A `?` anywhere.
    #[error("spiffe id contains a query '?' (queries are not allowed in a spiffe id)")]
    Query,
    /// A `#` anywhere.
    #[error("spiffe id contains a fragment '#' (fragments are not allowed in a spiffe id)")]
    Fragment,
    /// The trust domain exceeds [`MAX_TRUST_DOMAIN_LEN`].
    #[error("trust domain is {0} bytes long (at most 255 bytes are allowed)")]
    TrustDomainTooLong(usize),
    /// The whole ID exceeds [`MAX_SPIFFE_ID_LEN`].
    #[error("spiffe id is {0} bytes long (at most 2048 bytes are allowed)")]
    TooLong(usize),
    /// `//` inside the path.
    #[error("path segment is empty (the path cannot contain empty segments)")]
    EmptySegment,
    /// The path ends in `/`.
    #[error("path has a trailing slash (the path cannot end with '/')")]
    TrailingSlash,
    /// A `.` or `..` segment.
    #[error("path segment is a dot segment (the segments '.' and '..' are not allowed)")]
    DotSegment,
    /// A character outside `[A-Za-z0-9._-]` in a path segment.
    #[error(
        "path segment contains {0:?}: path segment characters are limited to letters, numbers, dots, dashes, and underscores"
    )]
    PathChar(char),
    /// A path passed to [`SpiffeId::new`] that is neither empty nor starts with `/`.
    #[error("path must be empty or begin with '/'")]
    PathNotAbsolute,
}

fn is_td_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-' || c == b'_'
}

fn is_path_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_'
}

/// Maps a character that is not allowed to the most specific error.
fn td_char_error(c: char) -> SpiffeIdError {
    match c {
        'A'..='Z' => SpiffeIdError::TrustDomainUppercase(c),
        ':' => SpiffeIdError::Port,
        '@' => SpiffeIdError::UserInfo,
        '%' => SpiffeIdError::PercentEncoded,
        '?' => SpiffeIdError::Query,
        '#' => SpiffeIdError::Fragment,
        _ => SpiffeIdError::TrustDomainChar(c),
    }
}

fn path_char_error(c: char) -> SpiffeIdError {
    match c {
        '%' => SpiffeIdError::PercentEncoded,
        '?' => SpiffeIdError::Query,
        '#' => SpiffeIdError::Fragment,
        _ => SpiffeIdError::PathChar(c),
    }
}

/// Validates a bare trust domain name (no scheme, no path).
fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    for (i, b) in name.bytes().enumerate() {
        if !is_td_char(b) {
            let c = name[i..]
                .chars()
                .next()
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(td_char_error(c));
        }
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong(name.len()));
    }
    Ok(())
}

/// Validates a path: empty, or `/seg(/seg)*` with valid segments.
fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(SpiffeIdError::PathNotAbsolute);
    };
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            return Err(if last {
                SpiffeIdError::TrailingSlash
            } else {
                SpiffeIdError::EmptySegment
            });
        }
        for (i, b) in seg.bytes().enumerate() {
            if !is_path_char(b) {
                let c = seg[i..]
                    .chars()
                    .next()
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                return Err(path_char_error(c));
            }
        }
        if seg == "." || seg == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
    }
    Ok(())
}

/// A SPIFFE trust domain name such as `example.org`.
///
/// Invariant: non-empty, at most 255 bytes, only `[a-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain {
    /// Exact-size (`Box<str>`, not `String`): IDs are held by the million in the server's index.
    name: Box<str>,
}

impl TrustDomain {
    /// The bare name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The trust domain as a SPIFFE ID string, e.g. `spiffe://example.org`.
    pub fn id_string(&self) -> String {
        format!("{SCHEME_PREFIX}{}", self.name)
    }

    /// The SPIFFE ID of the trust domain itself (no path), e.g. `spiffe://example.org`.
    pub fn to_spiffe_id(&self) -> SpiffeId {
        SpiffeId {
            full: self.id_string().into_boxed_str(),
            td: self.clone(),
        }
    }

    /// Builds the SPIFFE ID `spiffe://<self><path>`; see [`SpiffeId::new`].
    pub fn spiffe_id(&self, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::new(self, path)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    /// Parses `example.org` or a SPIFFE ID such as `spiffe://example.org` (as go-spiffe does,
    /// the trust domain of a full ID with a path is taken; the path must still be valid).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        if s.contains(":/") {
            return SpiffeId::from_str(s).map(|id| id.td);
        }
        validate_trust_domain(s)?;
        Ok(TrustDomain { name: s.into() })
    }
}

impl TryFrom<&str> for TrustDomain {
    type Error = SpiffeIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = SpiffeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if !s.contains(":/") {
            validate_trust_domain(&s)?;
            return Ok(TrustDomain {
                name: s.into_boxed_str(),
            });
        }
        s.parse()
    }
}

impl From<TrustDomain> for String {
    fn from(td: TrustDomain) -> String {
        td.name.into()
    }
}

/// Hash, equality and order agree with those of the name, so maps keyed by `TrustDomain` can be
/// queried with a `&str`.
impl std::borrow::Borrow<str> for TrustDomain {
    fn borrow(&self) -> &str {
        &self.name
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({:?})", self.name)
    }
}

/// A SPIFFE ID such as `spiffe://example.org/ns/prod/sa/web`.
///
/// Invariant: the string is a valid SPIFFE ID per the standard (see [`SpiffeIdError`] for the
/// rules) and at most 2048 bytes. Ordering, equality and hashing are those of the string.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    /// The whole ID, `spiffe://<td><path>` (exact-size, as the trust domain's name).
    full: Box<str>,
    td: TrustDomain,
}

impl SpiffeId {
    /// Builds `spiffe://<td><path>`. `path` is empty or begins with `/` and must be a valid
    /// SPIFFE ID path.
    pub fn new(td: &TrustDomain, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        validate_path(path)?;
        let full = format!("{SCHEME_PREFIX}{}{path}", td.name);
        if full.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong(full.len()));
        }
        Ok(SpiffeId {
            full: full.into_boxed_str(),
            td: td.clone(),
        })
    }

    /// Builds `spiffe://<td>/<seg1>/<seg2>...` from path segments (each validated; a segment
    /// containing `/` is rejected).
    pub fn from_segments<S: AsRef<str>>(
        td: &TrustDomain,
        segments: &[S],
    ) -> Result<SpiffeId, SpiffeIdError> {
        let mut path = String::new();
        for seg in segments {
            let seg = seg.as_ref();
            if seg.is_empty() {
                return Err(SpiffeIdError::EmptySegment);
            }
            if let Some(c) = seg.chars().find(|c| *c == '/') {
                return Err(SpiffeIdError::PathChar(c));
            }
            path.push('/');
            path.push_str(seg);
        }
        SpiffeId::new(td, &path)
    }

    /// The trust domain of this ID.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// The path, empty or beginning with `/` (e.g. `/ns/prod`).
    pub fn path(&self) -> &str {
        &self.full[SCHEME_PREFIX.len() + self.td.name.len()..]
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Whether this ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.td == *td
    }

    /// Whether the ID has no path (the ID of a trust domain, used by signing authorities).
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        let Some(rest) = s.strip_prefix(SCHEME_PREFIX) else {
            return Err(SpiffeIdError::BadScheme);
        };
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong(s.len()));
        }
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        // Report a query or fragment in the trust domain part before anything else.
        validate_trust_domain(td)?;
        validate_path(path)?;
        Ok(SpiffeId {
            full: s.into(),
            td: TrustDomain { name: td.into() },
        })
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> String {
        id.full.into()
    }
}

/// Hash, equality and order agree with those of the string, so maps keyed by `SpiffeId` can be
/// queried with a `&str`.
impl std::borrow::Borrow<str> for SpiffeId {
    fn borrow(&self) -> &str {
        &self.full
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl PartialEq for SpiffeId {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for SpiffeId {}

impl std::hash::Hash for SpiffeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.full.hash(state);
    }
}

impl PartialOrd for SpiffeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SpiffeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.full.cmp(&other.full)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({:?})", self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SpiffeIdError as E;

    fn id(s: &str) -> Result<SpiffeId, SpiffeIdError> {
        s.parse()
    }

    #[test]
    fn valid_ids() {
        let cases = [
            ("spiffe://trustdomain", "trustdomain", ""),
            (
                "spiffe://example.org/workload-1",
                "example.org",
                "/workload-1",
            ),
            (
                "spiffe://example.org/ns/prod/sa/Web_1",
                "example.org",
                "/ns/prod/sa/Web_1",
            ),
            ("spiffe://td/.path", "td", "/.path"),
            ("spiffe://td/..path", "td", "/..path"),
            ("spiffe://td/...", "td", "/..."),
            ("spiffe://1.2.3.4/x", "1.2.3.4", "/x"),
            ("spiffe://a_b-c.d/AZaz09.-_", "a_b-c.d", "/AZaz09.-_"),
        ];
        for (s, td, path) in cases {
            let parsed = id(s).unwrap();
            assert_eq!(parsed.trust_domain().as_str(), td, "{s}");
            assert_eq!(parsed.path(), path, "{s}");
            assert_eq!(parsed.to_string(), s);
            assert_eq!(parsed.as_str(), s);
            let rebuilt = SpiffeId::new(parsed.trust_domain(), path).unwrap();
            assert_eq!(rebuilt, parsed);
        }
    }

    #[test]
    fn invalid_ids_name_the_rule() {
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", E::Empty),
            ("s", E::BadScheme),
            ("spiffe:/", E::BadScheme),
            ("Spiffe://td", E::BadScheme),
            ("SPIFFE://td", E::BadScheme),
            ("https://td/path", E::BadScheme),
            ("spiffe:td/path", E::BadScheme),
            ("spiffe://", E::MissingTrustDomain),
            ("spiffe:///", E::MissingTrustDomain),
            ("spiffe:///path", E::MissingTrustDomain),
            ("spiffe://trustdomain/", E::TrailingSlash),
            ("spiffe://td/path/", E::TrailingSlash),
            ("spiffe://td//", E::EmptySegment),
            ("spiffe://td//path", E::EmptySegment),
            ("spiffe://td/a//b", E::EmptySegment),
            ("spiffe://td/.", E::DotSegment),
            ("spiffe://td/./path", E::DotSegment),
            ("spiffe://td/path/./other", E::DotSegment),
            ("spiffe://td/path/..", E::DotSegment),
            ("spiffe://td/..", E::DotSegment),
            ("spiffe://td/../path", E::DotSegment),
            ("spiffe://td/path/../other", E::DotSegment),
            ("spiffe://Example.org/x", E::TrustDomainUppercase('E')),
            ("spiffe://exAmple.org", E::TrustDomainUppercase('A')),
            ("spiffe://example.org:8080/x", E::Port),
            ("spiffe://example.com:/foo", E::Port),
            ("spiffe://[::1]/foo", E::TrustDomainChar('[')),
            ("spiffe://user@example.org/x", E::UserInfo),
            ("spiffe://user:pw@example.org/x", E::Port),
            ("spiffe://example.org/x?q=1", E::Query),
            ("spiffe://example.org?q=1", E::Query),
            ("spiffe://example.org/x#frag", E::Fragment),
            ("spiffe://example.org#frag", E::Fragment),
            ("spiffe://%F0%9F%A4%AF/x", E::PercentEncoded),
            ("spiffe://td/%62%61%64", E::PercentEncoded),
            ("spiffe://td/a b", E::PathChar(' ')),
            ("spiffe://td/a$", E::PathChar('$')),
            ("spiffe://td/é", E::PathChar('é')),
            ("spiffe://tdé/x", E::TrustDomainChar('é')),
            ("spiffe://t d/x", E::TrustDomainChar(' ')),
            ("spiffe://td\\x/y", E::TrustDomainChar('\\')),
        ];
        for (s, want) in cases {
            assert_eq!(id(s).unwrap_err(), *want, "{s:?}");
        }
    }

    #[test]
    fn every_byte_as_trust_domain_and_path_char() {
        for b in 0u8..=127 {
            if b == b'/' {
                continue;
            }
            let c = b as char;
            let td_ok = c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
            let r = id(&format!("spiffe://a{c}b/path"));
            assert_eq!(r.is_ok(), td_ok, "td char {b}");
            let path_ok = c.is_ascii_alphanumeric() || "._-".contains(c);
            let r = id(&format!("spiffe://td/a{c}b"));
            assert_eq!(r.is_ok(), path_ok, "path char {b}");
            if !path_ok {
                let msg = r.unwrap_err().to_string();
                assert!(
                    msg.contains("path")
                        || msg.contains("query")
                        || msg.contains("fragment")
                        || msg.contains("percent"),
                    "{b}: {msg}"
                );
            }
        }
    }

    #[test]
    fn uppercase_message_names_rule() {
        let e = id("spiffe://Example.org").unwrap_err();
        assert!(
            e.to_string()
                .contains("trust domain contains an uppercase letter")
        );
        assert!(
            id("http://x")
                .unwrap_err()
                .to_string()
                .contains("scheme is missing or not spiffe")
        );
        assert!(
            id("spiffe://td//x")
                .unwrap_err()
                .to_string()
                .contains("path segment is empty")
        );
    }

    #[test]
    fn length_limits() {
        let td255 = "a".repeat(255);
        assert!(id(&format!("spiffe://{td255}/x")).is_ok());
        let td256 = "a".repeat(256);
        assert_eq!(
            id(&format!("spiffe://{td256}/x")).unwrap_err(),
            E::TrustDomainTooLong(256)
        );
        assert_eq!(
            td256.parse::<TrustDomain>().unwrap_err(),
            E::TrustDomainTooLong(256)
        );
        // Exactly 2048 bytes is fine, 2049 is not.
        let prefix = "spiffe://td/";
        let ok = format!("{prefix}{}", "p".repeat(2048 - prefix.len()));
        assert_eq!(ok.len(), 2048);
        assert!(id(&ok).is_ok());
        let long = format!("{ok}q");
        assert_eq!(id(&long).unwrap_err(), E::TooLong(2049));
        let td: TrustDomain = "td".parse().unwrap();
        assert_eq!(
            SpiffeId::new(&td, &format!("/{}", "p".repeat(2040))).unwrap_err(),
            E::TooLong(2052)
        );
    }

    #[test]
    fn trust_domain_parsing() {
        let td: TrustDomain = "example.org".parse().unwrap();
        assert_eq!(td.as_str(), "example.org");
        assert_eq!(td.id_string(), "spiffe://example.org");
        assert_eq!(td.to_string(), "example.org");
        let from_id: TrustDomain = "spiffe://example.org".parse().unwrap();
        assert_eq!(from_id, td);
        let from_full: TrustDomain = "spiffe://example.org/foo".parse().unwrap();
        assert_eq!(from_full, td);
        assert_eq!(
            "".parse::<TrustDomain>().unwrap_err(),
            E::MissingTrustDomain
        );
        assert_eq!(
            "Example.org".parse::<TrustDomain>().unwrap_err(),
            E::TrustDomainUppercase('E')
        );
        assert_eq!(
            "example.org:443".parse::<TrustDomain>().unwrap_err(),
            E::Port
        );
        assert_eq!(
            "spiffe://example.org//x"
                .parse::<TrustDomain>()
                .unwrap_err(),
            E::EmptySegment
        );
        assert_eq!(
            "https://example.org".parse::<TrustDomain>().unwrap_err(),
            E::BadScheme
        );
        assert_eq!(
            TrustDomain::try_from(String::from("a/b")).unwrap_err(),
            E::TrustDomainChar('/')
        );
        assert_eq!(td.to_spiffe_id().as_str(), "spiffe://example.org");
        assert!(td.to_spiffe_id().is_trust_domain_id());
    }

    #[test]
    fn new_and_segments() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let a = SpiffeId::new(&td, "/ns/prod").unwrap();
        assert_eq!(a.as_str(), "spiffe://example.org/ns/prod");
        assert!(a.is_member_of(&td));
        assert!(!a.is_member_of(&"other.org".parse().unwrap()));
        assert_eq!(SpiffeId::new(&td, "ns").unwrap_err(), E::PathNotAbsolute);
        assert_eq!(SpiffeId::new(&td, "/").unwrap_err(), E::TrailingSlash);
        assert_eq!(td.spiffe_id("").unwrap(), td.to_spiffe_id());
        let b = SpiffeId::from_segments(&td, &["ns", "prod"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            SpiffeId::from_segments(&td, &[""]).unwrap_err(),
            E::EmptySegment
        );
        assert_eq!(
            SpiffeId::from_segments(&td, &["/"]).unwrap_err(),
            E::PathChar('/')
        );
        assert_eq!(
            SpiffeId::from_segments(&td, &["/foo"]).unwrap_err(),
            E::PathChar('/')
        );
        assert_eq!(
            SpiffeId::from_segments(&td, &["$"]).unwrap_err(),
            E::PathChar('$')
        );
        let none: [&str; 0] = [];
        assert_eq!(
            SpiffeId::from_segments(&td, &none).unwrap(),
            td.to_spiffe_id()
        );
    }

    #[test]
    fn serde_as_string() {
        let a: SpiffeId = "spiffe://example.org/x".parse().unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"spiffe://example.org/x\"");
        let back: SpiffeId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        let err = serde_json::from_str::<SpiffeId>("\"spiffe://Bad/x\"").unwrap_err();
        assert!(err.to_string().contains("uppercase"), "{err}");
        let td: TrustDomain = serde_json::from_str("\"example.org\"").unwrap();
        assert_eq!(serde_json::to_string(&td).unwrap(), "\"example.org\"");
        assert!(serde_json::from_str::<TrustDomain>("\"ex ample\"").is_err());
    }

    #[test]
    fn maps_can_be_queried_by_str() {
        let mut ids = std::collections::HashMap::new();
        ids.insert(id("spiffe://a/x").unwrap(), 1);
        assert_eq!(ids.get("spiffe://a/x"), Some(&1));
        let mut tds = std::collections::BTreeMap::new();
        tds.insert("b.org".parse::<TrustDomain>().unwrap(), 2);
        assert_eq!(tds.get("b.org"), Some(&2));
    }

    #[test]
    fn ordering_and_debug() {
        let a: SpiffeId = "spiffe://a/x".parse().unwrap();
        let b: SpiffeId = "spiffe://a/y".parse().unwrap();
        assert!(a < b);
        assert_eq!(format!("{a:?}"), "SpiffeId(\"spiffe://a/x\")");
    }
}
