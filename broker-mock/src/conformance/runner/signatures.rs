//! Signatures and timestamps (PROTOCOL §3): tampered bodies, wrong secrets, missing headers,
//! timestamps beyond the tolerance.

use std::time::Instant;

use diax_sdk::clock::unix_now;
use diax_sdk::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use diax_sdk::wire::BrokerMessage;
use diax_sdk::{JobId, KeyId, Keyring, MessageId, ProblemType, Secret};

use super::exchange::{expect_problem, sign};
use super::{Check, Runner};

impl Runner {
    /// `signature.tampered-body`, `signature.wrong-secret`, `signature.missing-*`.
    pub(super) async fn signature_checks(&mut self) {
        // Tampered body.
        let t = Instant::now();
        let body = Self::body(&BrokerMessage::Offer(
            self.offer(&JobId::generate(), self.account()),
        ));
        let headers = sign(&self.keyring, &MessageId::generate(), unix_now(), &body);
        let tampered = String::from_utf8_lossy(&body)
            .replace("conformance-cube.stl", "conformance-evil.stl")
            .into_bytes();
        let answer = self.send(&tampered, &headers).await;
        let outcome = expect_problem(&answer, ProblemType::SignatureInvalid)
            .map(|_| "a body changed after signing: 401 signature-invalid".to_owned());
        self.judge(Check::SignatureTamperedBody, outcome, t);

        // Wrong secret.
        let t = Instant::now();
        let body = Self::body(&BrokerMessage::Offer(
            self.offer(&JobId::generate(), self.account()),
        ));
        let wrong = Keyring::single(
            KeyId::parse("key_conformance_wrong").unwrap_or_else(|_| KeyId::generate()),
            Secret::generate(),
        );
        let answer = self
            .send(
                &body,
                &sign(&wrong, &MessageId::generate(), unix_now(), &body),
            )
            .await;
        let outcome = expect_problem(&answer, ProblemType::SignatureInvalid)
            .map(|_| "signed with another secret: 401 signature-invalid".to_owned());
        self.judge(Check::SignatureWrongSecret, outcome, t);

        // Each header missing.
        for (check, header) in [
            (Check::SignatureMissingId, HEADER_ID),
            (Check::SignatureMissingTimestamp, HEADER_TIMESTAMP),
            (Check::SignatureMissingSignature, HEADER_SIGNATURE),
        ] {
            let t = Instant::now();
            let body = Self::body(&BrokerMessage::Offer(
                self.offer(&JobId::generate(), self.account()),
            ));
            let mut headers = sign(&self.keyring, &MessageId::generate(), unix_now(), &body);
            match header {
                HEADER_ID => headers.id = None,
                HEADER_TIMESTAMP => headers.timestamp = None,
                _ => headers.signature = None,
            }
            let answer = self.send(&body, &headers).await;
            let outcome = expect_problem(&answer, ProblemType::SignatureMissing)
                .map(|_| format!("no {header} header: 400 signature-missing"));
            self.judge(check, outcome, t);
        }
    }

    /// `timestamp.stale` and `timestamp.future`: correctly signed, beyond the tolerance.
    pub(super) async fn timestamp_checks(&mut self) {
        let tolerance = i64::try_from(self.cfg.tolerance_secs).unwrap_or(300);
        let beyond = tolerance.saturating_add(60);
        for (check, offset, what) in [
            (Check::TimestampStale, -beyond, "in the past"),
            (Check::TimestampFuture, beyond, "in the future"),
        ] {
            let t = Instant::now();
            let body = Self::body(&BrokerMessage::Offer(
                self.offer(&JobId::generate(), self.account()),
            ));
            let headers = sign(
                &self.keyring,
                &MessageId::generate(),
                unix_now().saturating_add(offset),
                &body,
            );
            let answer = self.send(&body, &headers).await;
            let outcome = expect_problem(&answer, ProblemType::TimestampOutOfTolerance).map(|_| {
                format!(
                    "signed {} s {what}: 401 timestamp-out-of-tolerance",
                    offset.abs()
                )
            });
            self.judge(check, outcome, t);
        }
    }
}
