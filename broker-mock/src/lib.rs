//! # broker-mock: a faithful stand-in for the 3DIAX broker
//!
//! Provider developers run it to develop against: it registers providers and hands out
//! `whsec_` secrets, signs job offers, checks link tokens, issues temporary model
//! credentials, takes signed job events, fetches results into the user's model repository,
//! notifies users, and logs every message in and out with the reason it was accepted or
//! refused (`GET /v1/messages`, `/inspector`). The wire protocol is `docs/PROTOCOL.md`; all
//! message types come from [`diax_sdk::wire`].
//!
//! ## Layout
//!
//! Four layers; a module only uses the layers below it (`docs/ARCHITECTURE.md` has the
//! whole map and where a change goes).
//!
//! | layer | modules | what |
//! |---|---|---|
//! | server | [`server`], `http` | [`App`] / [`Broker`]; the router, one file per area, thin handlers, the message-log middleware, the OpenAPI document |
//! | flows and deliverers | `offers`, `intake`, `inputs`, `notifier`, `janitor`, `outbound` | offering a job and applying the answer; verifying and applying provider events; durable `job.input` delivery; pushing notifications; purging expired rows; signed POSTs with retries and result downloads |
//! | storage and domain | `store::{users, providers, links, replay, models, jobs, notifications, messages}`, [`db`] | one module per table or aggregate: its SQL, typed rows and rules; the job state machine in `store::jobs::state` |
//! | foundations | [`config`], [`error`], `state`, `budget` | [`Config`] and the adjustable [`Clock`]; [`ApiError`] and its problem mapping; the state every task shares; the budget of model bytes held in memory at once |
//!
//! Beside them: [`client`] ([`BrokerApi`] / [`UserClient`], a typed client of the user API,
//! using only the storage layer's public types), [`openapi`], and [`conformance`], the
//! conformance runner, which plays the broker against any provider and uses none of the
//! above.
//!
//! ## The server shape
//!
//! Build an [`App`] on a bound listener and a [`Config`], read its [`App::local_addr`] and
//! [`App::base_url`], then either [`App::serve`] it until a shutdown future completes (the
//! binary) or [`App::spawn`] it and keep the [`Broker`] handle (tests, the demo):
//! [`Broker::local_addr`], [`Broker::base_url`], [`Broker::clock`], and
//! [`Broker::shutdown`]`().await`, which stops accepting, lets requests in flight finish,
//! stops the background deliverers and closes the database pool. [`Broker::start`] binds,
//! builds and spawns in one call.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use broker_mock::{App, Clock, Config};
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let app = App::build(listener, Config::default(), Clock::default()).await?;
//! println!("broker at {} ({})", app.base_url(), app.local_addr());
//! let broker = app.spawn();
//! broker.clock().advance(601); // expire temporary credentials without sleeping
//! broker.shutdown().await;
//!
//! // The same in one call:
//! let broker = broker_mock::Broker::start(Config::default()).await?;
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod bucket;
mod budget;
pub mod client;
pub mod config;
pub mod conformance;
pub mod db;
pub mod error;
mod http;
mod inputs;
mod intake;
mod janitor;
mod notifier;
mod offers;
pub mod openapi;
mod outbound;
pub mod server;
mod state;
mod store;

pub use client::{BrokerApi, ClientError, UserClient};
pub use config::{Clock, Config};
pub use error::{ApiError, StartError};
pub use server::{App, Broker, run};
pub use store::messages::{LoggedMessage, MessageList};
