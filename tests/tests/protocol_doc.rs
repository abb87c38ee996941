//! Every worked example in docs/PROTOCOL.md must be true: its signature verifies with the SDK
//! at its own timestamp, its body parses as the named wire type, and the link tokens validate.
//! `v1` examples use the Standard Webhooks test secret; `v1a` ones the RFC 8032 keys the
//! document names (the broker's signs broker messages, the provider's its events and tokens).

use diax_sdk::token::LinkTokenValidator;
use diax_sdk::webhook::RawHeaders;
use diax_sdk::wire::{BrokerMessage, JobEvent, Notification};
use diax_sdk::{KeyId, Keyring, ProviderId, PublicKey, Secret, SigningKey};

const TEST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// RFC 8032 section 7.1, test 1 (the broker's key in the examples).
const BROKER_SK: &str =
    "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg==";
/// RFC 8032 section 7.1, test 2 (the provider's key in the examples).
const PROVIDER_SK: &str =
    "whsk_TM0Imyj/ltqdtsNG7BFOD1uKMZ81q6Yk2oz27U+4pvs9QBfD6EOJWpK3CqdNG368nJgszy7ElozAzVXxKvRmDA==";

struct Example {
    kind: String,
    v1a: bool,
    block: String,
}

fn public(secret_key: &str) -> PublicKey {
    SigningKey::parse(secret_key).unwrap().public_key()
}

/// The ring a receiver of this example holds: the shared secret, or the signer's public key.
fn receiver_ring(ex: &Example) -> Keyring {
    let kid = KeyId::parse("key_doc").unwrap();
    match (ex.v1a, ex.kind.as_str()) {
        (false, _) => Keyring::single(kid, Secret::parse(TEST_SECRET).unwrap()),
        (true, "BrokerMessage" | "Notification") => Keyring::single(kid, public(BROKER_SK)),
        (true, _) => Keyring::single(kid, public(PROVIDER_SK)),
    }
}

fn examples() -> Vec<Example> {
    let doc = include_str!("../../docs/PROTOCOL.md");
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("<!-- example type=") else {
            continue;
        };
        let attrs = rest.trim_end_matches(" -->");
        let (kind, v1a) = match attrs.split_once(" scheme=") {
            Some((kind, "v1a")) => (kind.to_owned(), true),
            Some((_, other)) => panic!("unknown scheme {other}"),
            None => (attrs.to_owned(), false),
        };
        let fence = lines.next().expect("a fenced block follows the marker");
        assert!(fence.starts_with("```"), "marker not followed by a fence");
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        out.push(Example {
            kind,
            v1a,
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
    let all = examples();
    let signed: Vec<&Example> = all.iter().filter(|e| e.kind != "LinkToken").collect();
    assert!(
        signed.len() >= 8,
        "expected the six v1 and two v1a signed examples, found {}",
        signed.len()
    );
    assert_eq!(signed.iter().filter(|e| e.v1a).count(), 2);
    for ex in signed {
        let ring = receiver_ring(ex);
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
        assert_eq!(sig.starts_with("v1a,"), ex.v1a, "{id}");
        if ex.v1a {
            // Ed25519 is deterministic: signing the bytes again gives the documented entry.
            let signer = match ex.kind.as_str() {
                "BrokerMessage" | "Notification" => BROKER_SK,
                _ => PROVIDER_SK,
            };
            let again =
                diax_sdk::webhook::sign_v1a(&SigningKey::parse(signer).unwrap(), id, now, body);
            assert_eq!(again, sig, "{id}");
            // The other side's key does not verify it.
            let other = if signer == BROKER_SK {
                PROVIDER_SK
            } else {
                BROKER_SK
            };
            let wrong = Keyring::single(KeyId::parse("key_doc").unwrap(), public(other));
            assert!(
                wrong
                    .verify_at(&RawHeaders::new(id, ts, sig), body, now, 300)
                    .is_err()
            );
        }
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
        .find(|e| e.kind == "LinkToken" && !e.v1a)
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

#[test]
fn the_eddsa_link_token_example_validates_with_the_public_key_only() {
    let ex = examples()
        .into_iter()
        .find(|e| e.kind == "LinkToken" && e.v1a)
        .expect("an EdDSA link token example");
    let kid = KeyId::parse("key_Ed25519Prv00000001").unwrap();
    let ring = Keyring::single(kid.clone(), public(PROVIDER_SK));
    let validator = LinkTokenValidator::new(
        ProviderId::parse("prv_Q7mZ2kX9wB4nT6vR1cHs").unwrap(),
        "3diax-mock",
    );
    let claims = validator
        .validate_at(ex.block.trim(), &ring, 1764352700)
        .unwrap();
    assert_eq!(claims.sub.as_str(), "acc_H3nR8tW2qZ5mK9vB4xLc");
    assert_eq!(claims.jti, "lt_Ed4Qm2Xk9Lz4Tw8Rn3Cy6Hp2");
    // The broker's key under the same kid does not validate it, nor does an HMAC secret.
    let wrong = Keyring::single(kid.clone(), public(BROKER_SK));
    assert!(
        validator
            .validate_at(ex.block.trim(), &wrong, 1764352700)
            .is_err()
    );
    let hmac = Keyring::single(kid, Secret::parse(TEST_SECRET).unwrap());
    assert!(
        validator
            .validate_at(ex.block.trim(), &hmac, 1764352700)
            .is_err()
    );
}
