//! Redaction for `Debug` output: secrets, credentials and URLs that carry them.

use std::borrow::Cow;
use std::fmt;

/// Shows `[redacted]` in place of a secret.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `Some([redacted])` or `None`: whether a secret is there, never what it is.
pub(crate) fn redact_opt<T>(value: Option<&T>) -> Option<Redacted> {
    value.map(|_| Redacted)
}

/// A URL without the parts that can carry a credential: the user information
/// (`user:password@`), the query (presigned URLs sign there) and the fragment.
pub(crate) fn redact_url(url: &str) -> Cow<'_, str> {
    let (base, cut) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], true),
        None => (url, false),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let userinfo = base[authority_start..authority_end].rfind('@');
    if !cut && userinfo.is_none() {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(base.len() + 24);
    match userinfo {
        Some(at) => {
            out.push_str(&base[..authority_start]);
            out.push_str("[redacted]");
            out.push_str(&base[authority_start + at..]);
        }
        None => out.push_str(base),
    }
    if cut {
        out.push_str("?[redacted]");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_only() {
        for (url, shown) in [
            ("https://b.example/m/1", "https://b.example/m/1"),
            (
                "https://b.example/m?sig=abc",
                "https://b.example/m?[redacted]",
            ),
            ("https://b.example/m#tok", "https://b.example/m?[redacted]"),
            ("https://u:p@b.example/m", "https://[redacted]@b.example/m"),
            (
                "https://u:p@b.example?x=1",
                "https://[redacted]@b.example?[redacted]",
            ),
            ("https://b.example/a@b", "https://b.example/a@b"),
            ("not a url?secret", "not a url?[redacted]"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
