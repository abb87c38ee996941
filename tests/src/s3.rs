//! The S3-compatible server of the end-to-end tests ([`crate::moto::Moto`]), with the
//! settings that point FixMyPrint and the broker mock at it, and a relay that can cut the link
//! to it (a store outage).

use fixmyprint::service::S3Settings;

pub use crate::moto::{Moto as S3Server, MotoError as S3ServerError};

impl S3Server {
    /// Settings for `s3://{bucket}/{prefix}` on this server, with test credentials.
    #[must_use]
    pub fn settings(&self, bucket: &str, prefix: &str) -> S3Settings {
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        S3Settings {
            endpoint: Some(self.endpoint().to_owned()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            ..S3Settings::parse_url(&url).unwrap_or_default()
        }
    }

    /// The broker's model store in `s3://{bucket}/{prefix}` on this server.
    #[must_use]
    pub fn broker_storage(&self, bucket: &str, prefix: &str) -> crate::stack::BrokerStorage {
        crate::stack::BrokerStorage {
            url: format!("s3://{bucket}/{prefix}"),
            endpoint: self.endpoint().to_owned(),
        }
    }
}

/// A TCP relay in front of a server that the test can cut: while down it refuses new
/// connections and severs open ones (a store outage, as the client sees it).
#[derive(Debug)]
pub struct Cuttable {
    endpoint: String,
    up: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    /// A relay on an OS-assigned loopback port to `target` (`host:port`), up.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(target: String) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(listener, target)
    }

    /// A relay on `listener` (bound beforehand, so that its address can be announced before
    /// the target exists) to `target` (`host:port`), up.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn start_on(listener: tokio::net::TcpListener, target: String) -> std::io::Result<Self> {
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (up, watch) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped: connection closed
                }
                let mut watch = watch.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Self { endpoint, up, task })
    }

    /// `http://127.0.0.1:PORT` of the relay.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Cuts (`false`) or restores (`true`) the link.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
    }
}
