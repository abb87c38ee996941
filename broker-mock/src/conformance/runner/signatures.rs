//! Signatures and timestamps (PROTOCOL §3): tampered bodies, wrong secrets, missing headers,
//! timestamps beyond the tolerance.

use std::time::Instant;

use diax_sdk::clock::unix_now;
use diax_sdk::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use diax_sdk::wire::BrokerMessage;
use diax_sdk::{JobId, KeyId, Keyring, MessageId, ProblemType};

use super::exchange::{
    SigHeaders, expect_problem, expect_refused_4xx, expect_verified, one_line, sign,
};
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
        // A key of the run's scheme that the provider does not trust: another shared
        // secret, or with ed25519 another key pair than the broker's.
        let wrong = Keyring::single(
            KeyId::parse("key_conformance_wrong").unwrap_or_else(|_| KeyId::generate()),
            self.stranger_key(),
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

    /// `signature.multiple-entries` (§3: accept the message if any `v1` entry matches; skip
    /// other versions): entries signed with other secrets, one of another version, and the
    /// valid one last.
    pub(super) async fn multiple_entries_check(&mut self) {
        let t = Instant::now();
        let body = self.unknown_job_input();
        let id = MessageId::generate();
        let now = unix_now();
        let other = |n: u8| {
            let ring = Keyring::single(
                KeyId::parse(format!("key_conformance_other{n}"))
                    .unwrap_or_else(|_| KeyId::generate()),
                self.stranger_key(),
            );
            sign(&ring, &id, now, &body).signature.unwrap_or_default()
        };
        let valid = sign(&self.keyring, &id, now, &body);
        let entries = format!(
            "{} v2,{} {} {}",
            other(1),
            other(2).split_once(',').map_or("", |(_, sig)| sig),
            other(3),
            valid.signature.clone().unwrap_or_default()
        );
        let headers = SigHeaders {
            signature: Some(entries),
            ..valid
        };
        let answer = self.send(&body, &headers).await;
        let outcome = expect_verified(
            &answer,
            "four entries (v1 with another secret, v2, v1 with another secret, the valid v1 last)",
        );
        self.judge(Check::SignatureMultipleEntries, outcome, t);
    }

    /// `signature.malformed-id`, `-timestamp`, `-signature` (§3, §2): each malformed value
    /// of the header is a `400` (or `401`) problem, never a `5xx` and never acted on.
    pub(super) async fn malformed_header_checks(&mut self) {
        let long_id = "m".repeat(200);
        let variants: [(Check, &str, Vec<String>); 3] = [
            (
                Check::SignatureMalformedId,
                HEADER_ID,
                vec![
                    String::new(),
                    "msg with spaces".into(),
                    "../../etc".into(),
                    long_id,
                ],
            ),
            (
                Check::SignatureMalformedTimestamp,
                HEADER_TIMESTAMP,
                vec![
                    String::new(),
                    "soon".into(),
                    "-5".into(),
                    format!("{}.5", unix_now()),
                    "99999999999999999999".into(),
                ],
            ),
            (
                Check::SignatureMalformedSignature,
                HEADER_SIGNATURE,
                vec![
                    String::new(),
                    "v1".into(),
                    "v1,".into(),
                    "v1,***not-base64***".into(),
                    "no-version-prefix".into(),
                    "v2,c2lnbmF0dXJl".into(),
                ],
            ),
        ];
        for (check, header, values) in variants {
            let t = Instant::now();
            let mut seen = Vec::new();
            let mut failures = Vec::new();
            for value in &values {
                let body = self.unknown_job_input();
                let mut headers = sign(&self.keyring, &MessageId::generate(), unix_now(), &body);
                match header {
                    HEADER_ID => headers.id = Some(value.clone()),
                    HEADER_TIMESTAMP => headers.timestamp = Some(value.clone()),
                    _ => headers.signature = Some(value.clone()),
                }
                let answer = self.send(&body, &headers).await;
                match expect_refused_4xx(&answer) {
                    Ok(got) => seen.push(got.split(' ').next().unwrap_or("").to_owned()),
                    Err(e) => failures.push(format!("{header}: {:?}: {e}", one_line(value, 24))),
                }
            }
            let outcome = match failures.first() {
                Some(first) => Err(format!(
                    "{} of {} malformed {header} values not refused with a 400/401 problem; \
                     first: {first}",
                    failures.len(),
                    values.len()
                )),
                None => Ok(format!(
                    "{} malformed {header} values ({}): refused {}",
                    values.len(),
                    values
                        .iter()
                        .map(|v| format!("{:?}", one_line(v, 24)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    seen.join("/")
                )),
            };
            self.judge(check, outcome, t);
        }
    }

    /// `signature.raw-bytes` (§3: verify over the raw body bytes): a body that is valid JSON
    /// but not what a serialiser writes: indented, escaped slashes, `\u` escapes,
    /// non-ASCII text and an unknown member.
    pub(super) async fn raw_bytes_check(&mut self) {
        let t = Instant::now();
        let compact = String::from_utf8_lossy(&self.unknown_job_input()).into_owned();
        let mut value: serde_json::Value = serde_json::from_str(&compact).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "conformance_note".into(),
                serde_json::Value::String("caf\u{e9} \u{2615} w\u{fc}rfel".into()),
            );
        }
        let pretty = serde_json::to_string_pretty(&value).unwrap_or(compact);
        let text = format!(
            "{}\n",
            pretty
                .replace('/', "\\/")
                .replace("conformance_note", "conformance\\u005fnote")
        );
        let body = text.into_bytes();
        let answer = self
            .send(
                &body,
                &sign(&self.keyring, &MessageId::generate(), unix_now(), &body),
            )
            .await;
        let outcome = expect_verified(
            &answer,
            "an indented body with escaped slashes, a \\u escape, non-ASCII text and an \
             unknown member",
        );
        self.judge(Check::SignatureRawBytes, outcome, t);
    }

    /// `body.not-json` and `body.not-schema` (§1, §2): correctly signed bodies that are not
    /// JSON, or not a message of the schema, are `400` problems, never a `5xx`.
    pub(super) async fn body_checks(&mut self) {
        for (check, body, what) in [
            (
                Check::BodyNotJson,
                b"this is not JSON {".to_vec(),
                "a correctly signed body that is not JSON",
            ),
            (
                Check::BodyNotSchema,
                br#"{"type":"job.offer","job_id":"job_conformanceNotSchema"}"#.to_vec(),
                "a correctly signed job.offer missing its required members",
            ),
        ] {
            let t = Instant::now();
            let answer = self
                .send(
                    &body,
                    &sign(&self.keyring, &MessageId::generate(), unix_now(), &body),
                )
                .await;
            let outcome = match &answer {
                Ok(a) if a.status == 400 && a.problem().is_some() => {
                    Ok(format!("{what}: {}", a.describe()))
                }
                Ok(a) => Err(format!(
                    "{what}: expected a 400 problem, got {}",
                    a.describe()
                )),
                Err(e) => Err(format!("{what}: no answer: {e}")),
            };
            self.judge(check, outcome, t);
        }
    }
}
