//! Signing and verification costs.
//!
//! ```text
//! cargo bench -p diax-sdk --bench signing -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Target: `verify/1KiB` (signature and tolerance check of a 1 KiB body) ≤ 3 µs median.
//! `verifier/1KiB` adds what an endpoint does on top: the size limit and the in-memory replay
//! store (here answering "redelivery", the same message being checked again and again).
//! The `v1a-*` functions do the same with ed25519 (`v1a`): the sender's ring holds its own
//! secret key, the receiver's only the public key.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use diax_sdk::webhook::RawHeaders;
use diax_sdk::{KeyId, Keyring, MessageId, Secret, SigningKey, Verifier, VerifierConfig};

const NOW: i64 = 1_700_000_000;

fn now_or_never<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the in-memory replay store never waits"),
    }
}

fn body(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"{\"a\":1,\"b\":[2,3]} "[i % 18])
        .collect()
}

fn bench(c: &mut Criterion) {
    let ring = Keyring::single(
        KeyId::parse("key_1").expect("id"),
        Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret"),
    );
    let id = MessageId::parse("msg_p5jXN8AQM9LWM0D4loKWxJek").expect("id");
    let ed_key = SigningKey::from_seed(&[7u8; 32]);
    let ed_sender = Keyring::single(KeyId::parse("key_ed").expect("id"), ed_key.clone());
    let ed_receiver = Keyring::single(KeyId::parse("key_ed").expect("id"), ed_key.public_key());

    for (name, len) in [("1KiB", 1024), ("1MiB", 1024 * 1024)] {
        let body = body(len);
        let signed = ring.sign(&id, NOW, &body).expect("sign");
        let ts = signed.timestamp.to_string();
        let headers = RawHeaders::new(signed.id.as_str(), &ts, &signed.signature);

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("sign", |b| {
            b.iter(|| ring.sign(black_box(&id), NOW, black_box(&body)))
        });
        group.bench_function("verify", |b| {
            b.iter(|| {
                ring.verify_at(black_box(&headers), black_box(&body), NOW, 300)
                    .expect("valid")
            })
        });
        let verifier = Verifier::new(ring.clone()).with_config(VerifierConfig {
            max_body_bytes: 2 * 1024 * 1024,
            ..VerifierConfig::default()
        });
        group.bench_function("verifier", |b| {
            b.iter(|| {
                now_or_never(verifier.verify_at(black_box(&headers), black_box(&body), NOW))
                    .expect("valid")
            })
        });
        let ed_signed = ed_sender.sign(&id, NOW, &body).expect("sign");
        let ed_headers = RawHeaders::new(ed_signed.id.as_str(), &ts, &ed_signed.signature);
        group.bench_function("v1a-sign", |b| {
            b.iter(|| ed_sender.sign(black_box(&id), NOW, black_box(&body)))
        });
        group.bench_function("v1a-verify", |b| {
            b.iter(|| {
                ed_receiver
                    .verify_at(black_box(&ed_headers), black_box(&body), NOW, 300)
                    .expect("valid")
            })
        });
        let ed_verifier = Verifier::new(ed_receiver.clone()).with_config(VerifierConfig {
            max_body_bytes: 2 * 1024 * 1024,
            ..VerifierConfig::default()
        });
        group.bench_function("v1a-verifier", |b| {
            b.iter(|| {
                now_or_never(ed_verifier.verify_at(black_box(&ed_headers), black_box(&body), NOW))
                    .expect("valid")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
