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
    name: String,
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
            full: self.id_string(),
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
        Ok(TrustDomain { name: s.to_owned() })
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
            return Ok(TrustDomain { name: s });
        }
        s.parse()
    }
}

impl From<TrustDomain> for String {
    fn from(td: TrustDomain) -> String {
        td.name
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
    /// The whole ID, `spiffe://<td><path>`.
    full: String,
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
            full,
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
            full: s.to_owned(),
            td: TrustDomain {
                name: td.to_owned(),
            },
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
        id.full
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
