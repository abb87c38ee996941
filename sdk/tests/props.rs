//! Property tests of the core: signatures, tolerance, rotation, replays, and parsers that
//! must never panic whatever they are fed.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use diax_sdk::token::{LinkTokenIssuer, LinkTokenValidator};
use diax_sdk::webhook::{RawHeaders, sign};
use diax_sdk::{
    AccountId, Delivery, GroupId, JobId, KeyId, Keyring, MessageId, ModelId, NotificationId,
    ProviderId, ProviderJobId, Secret, SecretError, UserId, Verifier, VerifierConfig, VerifyError,
};
use proptest::prelude::*;

/// Drives a future that is ready at once (the in-memory replay store never waits).
fn now_or_never<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("future was not ready"),
    }
}

fn secret() -> impl Strategy<Value = Secret> {
    prop::collection::vec(any::<u8>(), 16..=64)
        .prop_map(|b| Secret::from_bytes(&b).expect("16..=64 bytes is a valid secret"))
}

fn message_id() -> impl Strategy<Value = MessageId> {
    "msg_[A-Za-z0-9_.:-]{1,60}".prop_map(|s| MessageId::parse(s).expect("valid id"))
}

fn timestamp() -> impl Strategy<Value = i64> {
    0i64..4_000_000_000
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..512)
}

fn ring(secret: Secret) -> Keyring {
    Keyring::single(KeyId::parse("key_1").expect("valid"), secret)
}

fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> RawHeaders<'a> {
    RawHeaders::new(id, ts, sig)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn signed_messages_verify(secret in secret(), id in message_id(), ts in timestamp(), body in body()) {
        let ring = ring(secret.clone());
        let signed = ring.sign(&id, ts, &body).expect("active key");
        prop_assert_eq!(&signed.signature, &sign(&secret, id.as_str(), ts, &body));
        let t = signed.timestamp.to_string();
        let v = ring.verify_at(&headers(id.as_str(), &t, &signed.signature), &body, ts, 300).expect("verifies");
        prop_assert_eq!(v.id, id);
        prop_assert_eq!(v.timestamp, ts);
    }

    #[test]
    fn any_body_change_fails(
        secret in secret(), id in message_id(), ts in timestamp(), body in body(),
        edit in 0usize..3, pos in any::<prop::sample::Index>(), byte in any::<u8>(),
    ) {
        let ring = ring(secret);
        let sig = ring.sign(&id, ts, &body).expect("active key").signature;
        let mut other = body.clone();
        match edit {
            0 if !body.is_empty() => { let i = pos.index(body.len()); other[i] ^= byte | 1; }
            1 if !body.is_empty() => { other.truncate(pos.index(body.len())); }
            _ => other.push(byte),
        }
        prop_assume!(other != body);
        let t = ts.to_string();
        prop_assert_eq!(
            ring.verify_at(&headers(id.as_str(), &t, &sig), &other, ts, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn any_id_change_fails(secret in secret(), id in message_id(), other in message_id(), ts in timestamp(), body in body()) {
        prop_assume!(id != other);
        let ring = ring(secret);
        let sig = ring.sign(&id, ts, &body).expect("active key").signature;
        let t = ts.to_string();
        prop_assert_eq!(
            ring.verify_at(&headers(other.as_str(), &t, &sig), &body, ts, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn any_timestamp_change_fails(secret in secret(), id in message_id(), ts in timestamp(), shift in -300i64..=300, body in body()) {
        prop_assume!(shift != 0 && ts + shift >= 0);
        let ring = ring(secret);
        let sig = ring.sign(&id, ts, &body).expect("active key").signature;
        let t = (ts + shift).to_string();
        // Inside the tolerance, so only the signature can refuse it.
        prop_assert_eq!(
            ring.verify_at(&headers(id.as_str(), &t, &sig), &body, ts, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn any_signature_byte_change_fails(
        secret in secret(), id in message_id(), ts in timestamp(), body in body(),
        pos in any::<prop::sample::Index>(), byte in any::<u8>(),
    ) {
        let ring = ring(secret);
        let sig = ring.sign(&id, ts, &body).expect("active key").signature.into_bytes();
        let mut bad = sig.clone();
        let i = pos.index(bad.len());
        bad[i] = byte;
        prop_assume!(bad != sig);
        let t = ts.to_string();
        let h = RawHeaders { id: Some(id.as_str().as_bytes()), timestamp: Some(t.as_bytes()), signature: Some(&bad) };
        prop_assert!(ring.verify_at(&h, &body, ts, 300).is_err());
    }

    #[test]
    fn any_signature_bit_flip_fails(
        secret in secret(), id in message_id(), ts in timestamp(), body in body(),
        bit in 0usize..256,
    ) {
        let ring = ring(secret);
        let sig = ring.sign(&id, ts, &body).expect("active key").signature;
        let mut raw = STANDARD.decode(&sig[3..]).expect("base64");
        raw[bit / 8] ^= 1 << (bit % 8);
        let bad = format!("v1,{}", STANDARD.encode(&raw));
        let t = ts.to_string();
        prop_assert_eq!(
            ring.verify_at(&headers(id.as_str(), &t, &bad), &body, ts, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn wrong_secret_fails(a in secret(), b in secret(), id in message_id(), ts in timestamp(), body in body()) {
        prop_assume!(a.expose_bytes() != b.expose_bytes());
        let sig = ring(a).sign(&id, ts, &body).expect("active key").signature;
        let t = ts.to_string();
        prop_assert_eq!(
            ring(b).verify_at(&headers(id.as_str(), &t, &sig), &body, ts, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn tolerance_edges_both_ways(
        secret in secret(), id in message_id(), ts in 1_000_000i64..4_000_000_000,
        tolerance in 0u64..100_000, body in body(),
    ) {
        let ring = ring(secret);
        let sig = ring.sign(&id, ts, &body).expect("active key").signature;
        let t = ts.to_string();
        let h = headers(id.as_str(), &t, &sig);
        let tol = i64::try_from(tolerance).expect("small");
        prop_assert!(ring.verify_at(&h, &body, ts + tol, tolerance).is_ok());
        prop_assert!(ring.verify_at(&h, &body, ts - tol, tolerance).is_ok());
        let too_old = ring.verify_at(&h, &body, ts + tol + 1, tolerance);
        prop_assert!(matches!(too_old, Err(VerifyError::TimestampTooOld { age, .. }) if age == tol + 1), "{too_old:?}");
        let too_new = ring.verify_at(&h, &body, ts - tol - 1, tolerance);
        prop_assert!(matches!(too_new, Err(VerifyError::TimestampInFuture { ahead, .. }) if ahead == tol + 1), "{too_new:?}");
    }

    #[test]
    fn rotation_old_and_new_keys(
        old in secret(), new in secret(), id in message_id(), ts in 1_000_000i64..4_000_000_000,
        grace in 0i64..100_000, body in body(),
    ) {
        let old_id = KeyId::parse("key_old").expect("valid");
        let new_id = KeyId::parse("key_new").expect("valid");
        let mut sender = Keyring::new();
        sender.insert(old_id.clone(), old.clone(), Some(ts + grace));
        sender.insert(new_id.clone(), new.clone(), None);

        // During the grace period: signed with both, so receivers that have either key
        // (not yet rotated, or already rotated) accept it.
        let during = sender.sign(&id, ts, &body).expect("active keys");
        prop_assert_eq!(during.signature.split(' ').count(), 2);
        let t = ts.to_string();
        let h = headers(id.as_str(), &t, &during.signature);
        let only_old = Keyring::single(old_id.clone(), old.clone());
        let only_new = Keyring::single(new_id.clone(), new.clone());
        prop_assert_eq!(only_old.verify_at(&h, &body, ts, 300).expect("old key").key_id, old_id.clone());
        prop_assert_eq!(only_new.verify_at(&h, &body, ts, 300).expect("new key").key_id, new_id.clone());
        prop_assert!(sender.verify_at(&h, &body, ts, 300).is_ok());

        // A sender still on the old key only is accepted by a rotated receiver until the
        // grace period ends.
        let legacy = only_old.sign(&id, ts, &body).expect("active").signature;
        let h = headers(id.as_str(), &t, &legacy);
        prop_assert_eq!(sender.verify_at(&h, &body, ts, 300).expect("old key in grace").key_id, old_id);
        let after = ts + grace + 1;
        let t_after = after.to_string();
        let legacy_after = only_old.sign(&id, after, &body).expect("active").signature;
        prop_assert_eq!(
            sender.verify_at(&headers(id.as_str(), &t_after, &legacy_after), &body, after, 300),
            Err(VerifyError::SignatureMismatch)
        );

        // After the grace period the sender signs with the new key only.
        let later = sender.sign(&id, after, &body).expect("new key");
        prop_assert_eq!(later.signature.split(' ').count(), 1);
        let h = headers(id.as_str(), &t_after, &later.signature);
        prop_assert_eq!(only_old.verify_at(&h, &body, after, 300), Err(VerifyError::SignatureMismatch));
        prop_assert!(only_new.verify_at(&h, &body, after, 300).is_ok());
    }

    #[test]
    fn replays_refused_redeliveries_accepted(
        secret in secret(), id in message_id(), ts in 1_000_000i64..4_000_000_000,
        body in body(), other in body(), retry_after in 1i64..250,
    ) {
        prop_assume!(body != other);
        let ring = ring(secret);
        let verifier = Verifier::new(ring.clone());

        let first = ring.sign(&id, ts, &body).expect("active");
        let t = ts.to_string();
        let h = headers(id.as_str(), &t, &first.signature);
        let (v, d) = now_or_never(verifier.verify_at(&h, &body, ts)).expect("first");
        prop_assert_eq!(d, Delivery::First);
        prop_assert_eq!(v.id, id.clone());

        // The same delivery again, as-is: a redelivery.
        let (_, d) = now_or_never(verifier.verify_at(&h, &body, ts + 1)).expect("redelivery");
        prop_assert_eq!(d, Delivery::Redelivery);

        // A retry re-signed with a fresh timestamp: still a redelivery.
        let later = ts + retry_after;
        let retry = ring.sign(&id, later, &body).expect("active");
        let t_later = later.to_string();
        let (_, d) = now_or_never(verifier.verify_at(&headers(id.as_str(), &t_later, &retry.signature), &body, later))
            .expect("re-signed redelivery");
        prop_assert_eq!(d, Delivery::Redelivery);

        // The same id over another body, validly signed: a replay.
        let forged = ring.sign(&id, later, &other).expect("active");
        prop_assert_eq!(
            now_or_never(verifier.verify_at(&headers(id.as_str(), &t_later, &forged.signature), &other, later)),
            Err(VerifyError::Replayed(id.to_string()))
        );
    }

    #[test]
    fn arbitrary_headers_and_bodies_never_panic(
        id in prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
        ts in prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
        sig in prop::option::of(prop::collection::vec(any::<u8>(), 0..1200)),
        body in body(),
        now in any::<i64>(),
        tolerance in any::<u64>(),
        secret in secret(),
    ) {
        let ring = ring(secret);
        let h = RawHeaders { id: id.as_deref(), timestamp: ts.as_deref(), signature: sig.as_deref() };
        let _ = ring.verify_at(&h, &body, now, tolerance);
        let verifier = Verifier::new(ring).with_config(VerifierConfig { tolerance_secs: tolerance, max_body_bytes: 256, ..VerifierConfig::default() });
        let _ = now_or_never(verifier.verify_at(&h, &body, now));
    }

    #[test]
    fn plausible_headers_never_panic(
        id in "[ -~]{0,140}",
        ts in "[-+0-9 ]{0,25}",
        sig in prop::collection::vec(("v[0-9]{1,2}|v1|", "[A-Za-z0-9+/=,_-]{0,50}"), 0..20),
        body in body(),
        now in any::<i64>(),
        secret in secret(),
    ) {
        let sig: Vec<String> = sig.into_iter().map(|(v, s)| format!("{v},{s}")).collect();
        let sig = sig.join(" ");
        let ring = ring(secret);
        let _ = ring.verify_at(&headers(&id, &ts, &sig), &body, now, 300);
    }

    #[test]
    fn secret_parse_never_panics(text in any::<String>()) {
        let _ = Secret::parse(&text);
        let _ = Secret::parse(&format!("whsec_{text}"));
    }

    #[test]
    fn secret_parse_accepts_exactly_16_to_64_bytes(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        let text = format!("whsec_{}", STANDARD.encode(&bytes));
        match Secret::parse(&text) {
            Ok(s) => {
                prop_assert!((16..=64).contains(&bytes.len()));
                prop_assert_eq!(s.expose_bytes(), &bytes[..]);
                prop_assert_eq!(s.expose(), text);
            }
            Err(SecretError::Empty) => prop_assert!(bytes.is_empty()),
            Err(SecretError::TooShort(n)) => prop_assert!(n == bytes.len() && n < 16),
            Err(SecretError::TooLong(_)) => prop_assert!(bytes.len() > 64),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    #[test]
    fn id_parsers_never_panic(text in any::<String>()) {
        let ok = MessageId::parse(text.clone()).is_ok();
        prop_assert_eq!(ok, !text.is_empty() && text.len() <= 128 && !text.starts_with('.')
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b)));
        let _ = UserId::parse(text.clone());
        let _ = GroupId::parse(text.clone());
        let _ = ProviderId::parse(text.clone());
        let _ = JobId::parse(text.clone());
        let _ = ProviderJobId::parse(text.clone());
        let _ = ModelId::parse(text.clone());
        let _ = AccountId::parse(text.clone());
        let _ = KeyId::parse(text.clone());
        let _ = NotificationId::parse(text.clone());
        let json = serde_json::to_string(&text).expect("string");
        prop_assert_eq!(serde_json::from_str::<JobId>(&json).is_ok(), ok);
    }

    #[test]
    fn link_token_validator_never_panics(text in any::<String>(), secret in secret()) {
        let ring = ring(secret);
        let v = LinkTokenValidator::new(ProviderId::parse("prv_x").expect("valid"), "diax");
        prop_assert!(v.validate_at(&text, &ring, 1_700_000_000).is_err());
        let _ = LinkTokenValidator::peek_key_id(&text);
    }

    #[test]
    fn structured_garbage_tokens_never_panic(
        header in prop::collection::vec(any::<u8>(), 0..120),
        claims in prop::collection::vec(any::<u8>(), 0..200),
        sig in "[A-Za-z0-9_-]{0,50}",
        alg in prop::sample::select(vec!["HS256", "none", "HS512", "RS256", ""]),
        exp in any::<i64>(),
        secret in secret(),
    ) {
        let ring = ring(secret);
        let v = LinkTokenValidator::new(ProviderId::parse("prv_x").expect("valid"), "diax");
        let raw = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(&header), URL_SAFE_NO_PAD.encode(&claims), sig);
        prop_assert!(v.validate_at(&raw, &ring, 0).is_err());
        let h = format!(r#"{{"alg":"{alg}","typ":"diax-link+jwt","kid":"key_1"}}"#);
        let c = format!(r#"{{"iss":"prv_x","sub":"acc_1","aud":"diax","iat":0,"exp":{exp},"jti":"j"}}"#);
        let json = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(c), sig);
        prop_assert!(v.validate_at(&json, &ring, 0).is_err());
    }

    #[test]
    fn tampered_link_tokens_fail(
        secret in secret(), pos in any::<prop::sample::Index>(), ch in prop::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.".to_vec()),
        now in 1_000_000i64..4_000_000_000,
    ) {
        let kid = KeyId::parse("key_1").expect("valid");
        let prv = ProviderId::parse("prv_x").expect("valid");
        let issued = LinkTokenIssuer::new(prv.clone(), "diax", kid.clone(), secret.clone())
            .issue_at(&AccountId::parse("acc_1").expect("valid"), now)
            .expect("issued");
        let ring = Keyring::single(kid, secret);
        let v = LinkTokenValidator::new(prv, "diax");
        prop_assert!(v.validate_at(&issued.token, &ring, now).is_ok());
        let mut bytes = issued.token.clone().into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = ch;
        let tampered = String::from_utf8(bytes).expect("ascii");
        prop_assume!(tampered != issued.token);
        prop_assert!(v.validate_at(&tampered, &ring, now).is_err());
    }
}

/// ed25519 (`v1a`): the receiver holds only the sender's public key.
mod v1a {
    use super::*;
    use diax_sdk::SigningKey;
    use diax_sdk::ed25519::PublicKey;

    fn key() -> impl Strategy<Value = SigningKey> {
        any::<[u8; 32]>().prop_map(|seed| SigningKey::from_seed(&seed))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn signed_messages_verify_with_the_public_key_and_any_change_fails(
            key in key(), id in message_id(), ts in timestamp(), body in body(),
            pos in any::<prop::sample::Index>(), byte in 1u8..,
        ) {
            let sender = Keyring::single(KeyId::parse("key_s").expect("id"), key.clone());
            let receiver = Keyring::single(KeyId::parse("key_s").expect("id"), key.public_key());
            let signed = sender.sign(&id, ts, &body).expect("active key");
            let t = ts.to_string();
            let h = headers(id.as_str(), &t, &signed.signature);
            prop_assert!(receiver.verify_at(&h, &body, ts, 300).is_ok());
            // A flipped body byte, or a flipped signature byte, is refused without a panic.
            let mut other = body.clone();
            if other.is_empty() { other.push(byte); } else { let i = pos.index(other.len()); other[i] ^= byte; }
            prop_assert_eq!(receiver.verify_at(&h, &other, ts, 300), Err(VerifyError::SignatureMismatch));
            let mut raw = STANDARD.decode(&signed.signature[4..]).expect("base64");
            let i = pos.index(raw.len());
            raw[i] ^= byte;
            let flipped = format!("v1a,{}", STANDARD.encode(&raw));
            let h2 = headers(id.as_str(), &t, &flipped);
            prop_assert_eq!(receiver.verify_at(&h2, &body, ts, 300), Err(VerifyError::SignatureMismatch));
        }

        #[test]
        fn key_parsers_never_panic(text in "\\PC{0,120}", raw in prop::collection::vec(any::<u8>(), 0..100)) {
            let _ = SigningKey::parse(&text);
            let _ = PublicKey::parse(&text);
            let b64 = STANDARD.encode(&raw);
            let _ = SigningKey::parse(&format!("whsk_{b64}"));
            let _ = PublicKey::parse(&format!("whpk_{b64}"));
            if raw.len() >= 32 {
                let mut a = [0u8; 32];
                a.copy_from_slice(&raw[..32]);
                let _ = PublicKey::from_bytes(&a);
            }
        }

        #[test]
        fn any_v1a_header_never_panics(
            key in key(), id in message_id(), sig in "[ -~]{0,300}", body in body(),
        ) {
            let receiver = Keyring::single(KeyId::parse("key_s").expect("id"), key.public_key());
            let header = format!("v1a,{sig} {sig}");
            let _ = receiver.verify_at(&headers(id.as_str(), "1000", &header), &body, 1000, 300);
        }
    }
}
