//! Every worked example in docs/PROTOCOL.md must be true: its signature verifies with the SDK
//! at its own timestamp, its body parses as the named wire type, and the link token validates.

use diax_sdk::token::LinkTokenValidator;
use diax_sdk::webhook::RawHeaders;
use diax_sdk::wire::{BrokerMessage, JobEvent, Notification};
use diax_sdk::{KeyId, Keyring, ProviderId, Secret};

const TEST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Example {
    kind: String,
    block: String,
}

fn examples() -> Vec<Example> {
    let doc = include_str!("../../docs/PROTOCOL.md");
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("<!-- example type=") else {
            continue;
        };
        let kind = rest.trim_end_matches(" -->").to_owned();
        let fence = lines.next().expect("a fenced block follows the marker");
        assert!(fence.starts_with("```"), "marker not followed by a fence");
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        out.push(Example {
            kind,
            block: block.join("\n"),
        });
    }
    out
}

fn header<'a>(block: &'a str, name: &str) -> &'a str {
    block
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("example lacks {name}"))
}

#[test]
fn every_signed_example_verifies_and_parses() {
    let ring = Keyring::single(
        KeyId::parse("key_doc").unwrap(),
        Secret::parse(TEST_SECRET).unwrap(),
    );
    let all = examples();
    let signed: Vec<&Example> = all.iter().filter(|e| e.kind != "LinkToken").collect();
    assert!(
        signed.len() >= 6,
        "expected the six signed examples, found {}",
        signed.len()
    );
    for ex in signed {
        let (head, body) = ex
            .block
            .split_once("\n\n")
            .expect("headers, blank line, body");
        let id = header(head, "webhook-id");
        let ts = header(head, "webhook-timestamp");
        let sig = header(head, "webhook-signature");
        let now: i64 = ts.parse().unwrap();
        let body = body.trim_end().as_bytes();
        ring.verify_at(&RawHeaders::new(id, ts, sig), body, now, 300)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        match ex.kind.as_str() {
            "BrokerMessage" => {
                serde_json::from_slice::<BrokerMessage>(body).unwrap();
            }
            "JobEvent" => {
                serde_json::from_slice::<JobEvent>(body).unwrap();
            }
            "Notification" => {
                serde_json::from_slice::<Notification>(body).unwrap();
            }
            other => panic!("unknown example type {other}"),
        }
        // One flipped byte in the body must break it.
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        assert!(
            ring.verify_at(&RawHeaders::new(id, ts, sig), &tampered, now, 300)
                .is_err()
        );
    }
}

#[test]
fn the_link_token_example_validates() {
    let ex = examples()
        .into_iter()
        .find(|e| e.kind == "LinkToken")
        .expect("a link token example");
    let ring = Keyring::single(
        KeyId::parse("key_Rt5Wm8Qz2Xk7Bn4Vc9Lp").unwrap(),
        Secret::parse(TEST_SECRET).unwrap(),
    );
    let validator = LinkTokenValidator::new(
        ProviderId::parse("prv_Q7mZ2kX9wB4nT6vR1cHs").unwrap(),
        "3diax-mock",
    );
    let claims = validator
        .validate_at(ex.block.trim(), &ring, 1764352700)
        .unwrap();
    assert_eq!(claims.sub.as_str(), "acc_H3nR8tW2qZ5mK9vB4xLc");
    assert_eq!(claims.exp, 1764353600);
    assert!(
        validator
            .validate_at(ex.block.trim(), &ring, 1764353600 + 31)
            .is_err()
    );
}
