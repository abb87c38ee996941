//! # diax-sdk: join the 3DIAX broker as a service provider
//!
//! A provider sells an operation (model repair, slicing, …) on the models of the broker's
//! users. The broker is only a secure middleman: it registers the provider and hands it a
//! shared secret, signs every job offer with it, checks the link tokens the provider issues
//! to its users, gives the provider short-lived credentials to download a model, and takes
//! back signed progress and completion callbacks. `docs/PROTOCOL.md` in the repository is
//! the normative description; this crate implements its provider side.
//!
//! ## Contents
//! | module | what |
//! |---|---|
//! | [`wire`] | every message of the protocol as serde types |
//! | [`webhook`] | Standard Webhooks `v1` (HMAC) and `v1a` (ed25519) signing and verification over raw bytes |
//! | [`Verifier`] | full check of an incoming request: size, signature, tolerance, replay |
//! | [`replay`] | [`ReplayStore`] trait and an in-memory implementation |
//! | [`Secret`], [`Keyring`] | `whsec_` secrets that never print, several keys for rotation or a migration between schemes |
//! | [`ed25519`] | `whsk_` secret keys and `whpk_` public keys for `v1a` signatures and EdDSA tokens |
//! | [`token`] | link tokens: HS256 or EdDSA JWTs, algorithm pinned per key, strict validation |
//! | [`problem`] | RFC 9457 problem details with the protocol's stable types |
//! | [`clock`] | [`unix_now`](clock::unix_now) and the [`Clock`](clock::Clock) senders sign with |
//! | [`util`] | random tokens, SHA-256 hex digests, [`ErrorChain`](util::ErrorChain) for logs |
//! | `axum_ext` (feature `axum`) | an extractor that verifies, checks replay and parses a signed body |
//! | `client` (feature `client`) | registration client, signed sends with retries, downloads |
//! | `openapi` (feature `openapi`) | the shared problem responses of an OpenAPI document, its checked-in text, the checks tests run on it |
//! | `s3` (feature `object-store`) | S3-compatible buckets: settings, the client (https, or http on loopback only), the start-up probe, presigned `GET` URLs |
//! | `server` (feature `server`) | serve an axum router on a bound listener, HTTP or HTTPS, until a shutdown future, with a request-head deadline and a connection cap |
//!
//! The crate root re-exports the main types (ids, secrets, the verifier, problems, tokens);
//! helpers live in their modules. The axum integration is `axum_ext`, not `axum`, so that
//! `use diax_sdk::*;` never makes `axum::…` paths ambiguous.
//!
//! ## Features
//! | feature | default | adds |
//! |---|---|---|
//! | `axum` | no | `axum_ext` module: the `Signed<T>` extractor, problem responses, the `finish_request_body` middleware (axum 0.8) |
//! | `client` | no | `client` module (reqwest 0.13 + rustls/ring, no redirects) |
//! | `server` | no | `server` module (axum-server 0.9 + rustls/ring): head deadline (slowloris), connection cap, bounded drain; implies `axum` |
//! | `object-store` | no | `s3` module (object_store 0.14, ring signatures, no aws-lc-rs); implies `client` |
//! | `cli` | no | the `diax` debugging command |
//! | `openapi` | no | `utoipa::ToSchema` (utoipa 6) for every [`wire`] type, the ids and [`Problem`]; the `openapi` module |
//!
//! Without features the crate needs no async runtime and no HTTP library.
//!
//! ## Quick start: verify a job offer
//! ```
//! use diax_sdk::webhook::RawHeaders;
//! use diax_sdk::wire::BrokerMessage;
//! use diax_sdk::clock::unix_now;
//! use diax_sdk::{KeyId, Keyring, MessageId, Problem, Secret};
//!
//! // The secret the broker gave you at registration.
//! let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let ring = Keyring::single(KeyId::parse("key_1")?, secret);
//!
//! // What arrives over HTTP (here signed by the same key, as the broker would).
//! let body = br#"{"type":"job.input","job_id":"job_1","provider_job_id":"pjob_1",
//!   "download":{"url":"https://broker/x","expires_at":1,"size":3,"sha256":"00"}}"#;
//! let now = unix_now();
//! let signed = ring.sign(&MessageId::generate(), now, body)?;
//! let ts = signed.timestamp.to_string();
//! let headers = RawHeaders::new(signed.id.as_str(), &ts, &signed.signature);
//!
//! // Verify the raw bytes first, then parse.
//! match ring.verify_at(&headers, body, now, 300) {
//!     Ok(_) => {
//!         let msg: BrokerMessage = serde_json::from_slice(body)?;
//!         assert!(matches!(msg, BrokerMessage::Input(_)));
//!     }
//!     Err(e) => {
//!         let problem = Problem::from(&e); // answer with this, as application/problem+json
//!         panic!("{problem}");
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod clock;
pub mod ed25519;
pub mod ids;
pub mod problem;
mod quote;
mod redact;
pub mod replay;
pub mod secret;
pub mod token;
pub mod util;
mod verify;
pub mod webhook;
pub mod wire;

#[cfg(feature = "axum")]
pub mod axum_ext;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "openapi")]
pub mod openapi;
#[cfg(feature = "object-store")]
pub mod s3;
#[cfg(feature = "server")]
pub mod server;

pub use ed25519::{KeyError, PublicKey, SigningKey};
pub use ids::{
    AccountId, GroupId, InvalidId, JobId, KeyId, MessageId, ModelId, NotificationId, ProviderId,
    ProviderJobId, UserId,
};
pub use problem::{PROBLEM_CONTENT_TYPE, Problem, ProblemType};
pub use replay::{Delivery, MemoryReplayStore, ReplayError, ReplayStore};
pub use secret::{Key, KeyMaterial, Keyring, Scheme, Secret, SecretError};
pub use token::{LinkClaims, LinkTokenIssuer, LinkTokenValidator, TokenError};
pub use verify::{DEFAULT_MAX_BODY_BYTES, DEFAULT_REPLAY_RETENTION_SECS, Verifier, VerifierConfig};
pub use webhook::{SignError, SignedHeaders, Verified, VerifyError};
pub use wire::Quote;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
