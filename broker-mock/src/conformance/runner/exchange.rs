//! What goes over the wire to the provider: signing, sending, and reading its answers.

use bytes::Bytes;
use diax_sdk::client;
use diax_sdk::clock::unix_now;
use diax_sdk::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use diax_sdk::wire::BrokerMessage;
use diax_sdk::{Keyring, MessageId, PROBLEM_CONTENT_TYPE, Problem, ProblemType};

use super::Runner;

/// Largest answer read from the provider.
pub(super) const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A provider's answer.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) content_type: Option<String>,
    pub(super) location: Option<String>,
    pub(super) body: Bytes,
}

impl Answer {
    pub(super) fn problem(&self) -> Option<Problem> {
        let ct = self.content_type.as_deref()?;
        if !ct.starts_with(PROBLEM_CONTENT_TYPE) {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }

    /// `202`, or `401 signature-invalid: detail`, or `500 (text…)`.
    pub(super) fn describe(&self) -> String {
        if let Some(p) = self.problem() {
            let slug = p
                .type_uri
                .rsplit('/')
                .next()
                .unwrap_or(&p.type_uri)
                .to_owned();
            return match p.detail {
                Some(d) => format!("{} {slug} ({})", self.status, one_line(&d, 120)),
                None => format!("{} {slug}", self.status),
            };
        }
        if (200..300).contains(&self.status) {
            return self.status.to_string();
        }
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(120)]).into_owned();
        if text.trim().is_empty() {
            format!("{} (no problem document)", self.status)
        } else {
            format!(
                "{} (not a problem document: {})",
                self.status,
                one_line(&text, 120)
            )
        }
    }
}

pub(super) fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// The three `webhook-*` headers, each possibly left out.
#[derive(Debug, Clone, Default)]
pub(super) struct SigHeaders {
    pub(super) id: Option<String>,
    pub(super) timestamp: Option<String>,
    pub(super) signature: Option<String>,
}

pub(super) fn sign(keyring: &Keyring, id: &MessageId, timestamp: i64, body: &[u8]) -> SigHeaders {
    // Signing with a non-empty keyring cannot fail; an empty header is what a broken
    // signer would send, and is judged as such.
    let signature = keyring
        .sign(id, timestamp, body)
        .map(|s| s.signature)
        .unwrap_or_default();
    SigHeaders {
        id: Some(id.to_string()),
        timestamp: Some(timestamp.to_string()),
        signature: Some(signature),
    }
}

/// Whether `answer` is the problem `kind` with the right status and content type.
pub(super) fn expect_problem(
    answer: &Result<Answer, String>,
    kind: ProblemType,
) -> Result<Problem, String> {
    let want = format!("{} {}", kind.status(), kind.slug());
    let a = answer
        .as_ref()
        .map_err(|e| format!("expected {want}, got no answer: {e}"))?;
    let Some(p) = a.problem() else {
        return Err(format!("expected {want}, got {}", a.describe()));
    };
    if a.status != kind.status() || !p.is(kind) {
        return Err(format!("expected {want}, got {}", a.describe()));
    }
    if p.status != 0 && p.status != a.status {
        return Err(format!(
            "{want} sent, but the problem document says status {}",
            p.status
        ));
    }
    Ok(p)
}

/// Whether `a` refuses the message at the signature layer (§3).
pub(super) fn is_signature_problem(a: &Answer) -> bool {
    a.problem().is_some_and(|p| {
        matches!(
            p.kind(),
            Some(
                ProblemType::SignatureInvalid
                    | ProblemType::SignatureMissing
                    | ProblemType::SignatureMalformed
                    | ProblemType::TimestampOutOfTolerance
                    | ProblemType::ReplayedMessage
            )
        )
    })
}

/// Whether a correctly signed message passed the signature layer: any answer but a
/// signature problem or a `5xx`.
pub(super) fn expect_verified(
    answer: &Result<Answer, String>,
    what: &str,
) -> Result<String, String> {
    let a = answer
        .as_ref()
        .map_err(|e| format!("{what}: no answer: {e}"))?;
    if is_signature_problem(a) {
        return Err(format!(
            "{what}: refused as {}, but it was correctly signed",
            a.describe()
        ));
    }
    if a.status >= 500 {
        return Err(format!(
            "{what}: expected it verified, got {}",
            a.describe()
        ));
    }
    Ok(format!("{what}: verified (answered {})", a.describe()))
}

/// Whether `answer` is a `400` or `401` problem document (a malformed header is refused,
/// never answered `5xx` or acted on).
pub(super) fn expect_refused_4xx(answer: &Result<Answer, String>) -> Result<String, String> {
    let a = answer.as_ref().map_err(|e| format!("no answer: {e}"))?;
    match a.problem() {
        Some(_) if matches!(a.status, 400 | 401) => Ok(a.describe()),
        _ => Err(format!(
            "expected a 400 or 401 problem, got {}",
            a.describe()
        )),
    }
}

impl Runner {
    pub(super) async fn send(&self, body: &[u8], headers: &SigHeaders) -> Result<Answer, String> {
        let mut req = self
            .http
            .post(&self.cfg.provider_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        for (name, value) in [
            (HEADER_ID, &headers.id),
            (HEADER_TIMESTAMP, &headers.timestamp),
            (HEADER_SIGNATURE, &headers.signature),
        ] {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        let mut resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("timed out: {e}")
            } else if e.is_connect() {
                format!("could not connect: {e}")
            } else {
                format!("request failed: {e}")
            }
        })?;
        let status = resp.status().as_u16();
        let text = |name: http::HeaderName| {
            resp.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let content_type = text(http::header::CONTENT_TYPE);
        let location = text(http::header::LOCATION);
        let header_text: String = resp
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        self.scan_for_secret(&header_text, &body, status);
        Ok(Answer {
            status,
            content_type,
            location,
            body: Bytes::from(body),
        })
    }

    /// An answer the SDK's sender read (already limited to [`MAX_ANSWER_BYTES`]), checked
    /// for the secret like every other answer.
    pub(super) fn answer(&self, resp: client::Response) -> Answer {
        let text = |name: http::HeaderName| {
            resp.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let content_type = text(http::header::CONTENT_TYPE);
        let location = text(http::header::LOCATION);
        let header_text: String = resp
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        self.scan_for_secret(&header_text, &resp.body, resp.status);
        Answer {
            status: resp.status,
            content_type,
            location,
            body: resp.body,
        }
    }

    /// Signs `body` now under a fresh id and sends it.
    pub(super) async fn send_signed(&self, body: &[u8]) -> Result<Answer, String> {
        let id = MessageId::generate();
        self.send(body, &sign(&self.keyring, &id, unix_now(), body))
            .await
    }

    pub(super) fn body(msg: &BrokerMessage) -> Vec<u8> {
        serde_json::to_vec(msg).unwrap_or_default()
    }

    /// Records an answer that carries the shared secret (in a header or the body).
    fn scan_for_secret(&self, headers: &str, body: &[u8], status: u16) {
        let text = String::from_utf8_lossy(body);
        for (place, hay) in [("a header", headers), ("the body", text.as_ref())] {
            if self.secret_texts.iter().any(|s| hay.contains(s.as_str())) {
                let mut leaks = self
                    .leaks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                leaks.push(format!("a {status} answer carried the secret in {place}"));
            }
        }
    }
}
