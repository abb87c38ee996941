//! Small helpers every party needs: random tokens, SHA-256 digests and error chains.
//!
//! ```
//! use diax_sdk::util::{random_token, sha256_hex};
//!
//! let key = random_token("fmp_", 40);
//! assert!(key.starts_with("fmp_") && key.len() == 44);
//! assert_eq!(
//!     sha256_hex(b"abc"),
//!     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
//! );
//! ```

use std::error::Error;
use std::fmt;

/// A random token: `prefix` followed by `len` characters from `[A-Za-z0-9]`, from the
/// operating system's CSPRNG. Used for ids, API keys and credentials.
///
/// ```
/// let t = diax_sdk::util::random_token("tc_", 24);
/// assert_eq!(t.len(), 27);
/// assert!(t[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
/// ```
#[must_use]
pub fn random_token(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(prefix.len() + len);
    out.push_str(prefix);
    let mut buf = [0u8; 64];
    while out.len() < prefix.len() + len {
        rand::fill(&mut buf[..]);
        for b in buf {
            // Rejection sampling keeps the distribution uniform (248 = 4 * 62).
            if b < 248 && out.len() < prefix.len() + len {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    out
}

/// Lowercase hex SHA-256 of `bytes`.
///
/// ```
/// assert_eq!(diax_sdk::util::sha256_hex(b"").len(), 64);
/// ```
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Displays an error followed by each of its [`sources`](Error::source), joined by `": "`.
///
/// The errors of this crate keep their cause as a source rather than repeating it in their
/// own message; use this to log or store the whole story in one line.
///
/// ```
/// use diax_sdk::util::ErrorChain;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("could not load the model")]
/// struct Load(#[source] std::io::Error);
///
/// let err = Load(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"));
/// assert_eq!(err.to_string(), "could not load the model");
/// assert_eq!(ErrorChain(&err).to_string(), "could not load the model: no such file");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_uniform_alphanumerics() {
        let t = random_token("x_", 500);
        assert!(t.starts_with("x_"));
        assert_eq!(t.len(), 502);
        assert!(t[2..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_token("", 20), random_token("", 20));
    }
}
