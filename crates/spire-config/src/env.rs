//! `-expandEnv`: `$VAR` / `${VAR}` expansion of the config text before parsing.
//!
//! Mirrors Go's `os.Expand` (which SPIRE's `-expandEnv` uses): unset variables expand to the empty
//! string, a `$` not followed by a name stays, and `${}` or an unclosed `${` is dropped.

/// Expands `$VAR` and `${VAR}` in `text` with `lookup`; unknown names become empty.
///
/// `lookup` is a closure rather than `std::env` so that callers decide where values come from
/// (the binaries pass `|k| std::env::var(k).ok()`; tests pass a map).
pub fn expand_env<F>(text: &str, lookup: F) -> String
where
    F: Fn(&str) -> Option<String>,
{
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied_to = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&text[copied_to..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match name {
                Some(name) => out.push_str(&lookup(name).unwrap_or_default()),
                // `$` not followed by a name: keep the dollar.
                None if width == 0 => out.push('$'),
                // Bad syntax such as `${}`: drop it.
                None => {}
            }
            j += width;
            copied_to = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[copied_to.min(text.len())..]);
    out
}

/// Returns the variable name at the start of `s` (after a `$`) and how many bytes it used.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b.first() == Some(&b'{') {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        for (i, c) in b.iter().enumerate().skip(1) {
            if *c == b'}' {
                if i == 1 {
                    return (None, 2);
                }
                return (Some(&s[1..i]), i + 1);
            }
        }
        return (None, 1);
    }
    if b.first().is_some_and(|c| is_special(*c)) {
        return (Some(&s[0..1]), 1);
    }
    let len = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if len == 0 {
        (None, 0)
    } else {
        (Some(&s[..len]), len)
    }
}

fn is_special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "TD" => Some("example.org".into()),
            "PORT" => Some("8081".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_like_go() {
        let cases = [
            ("trust_domain = \"$TD\"", "trust_domain = \"example.org\""),
            ("bind_port = ${PORT}", "bind_port = 8081"),
            ("a${TD}b", "aexample.orgb"),
            ("$TD.x", "example.org.x"),
            ("$UNSET!", "!"),
            ("x$EMPTY", "x"),
            ("cost $ 5", "cost $ 5"),
            ("end$", "end$"),
            ("a${}b", "ab"),
            ("a${TD", "aTD"),
            ("no vars", "no vars"),
            ("ünïcödé $TD ü", "ünïcödé example.org ü"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_env(input, lookup), want, "{input}");
        }
    }
}
