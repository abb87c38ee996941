//! Where outbound fetches may go: [`FetchPolicy`] (schemes, origins, address ranges) and the
//! [`Fetcher`] that enforces it, on the URL and again on every address a host name resolves
//! to, so a DNS name that points at a loopback or private address is refused as well.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::io::AsyncWrite;

use super::{
    Client, ClientConfig, ClientError, DownloadError, DownloadLimits, Downloaded, Url,
    client_builder, require_secure_url,
};
use crate::wire::Download;

/// Where a [`Fetcher`] may fetch from.
///
/// The default is the safe policy: `https` only, any host, and no private, loopback,
/// link-local or otherwise non-public address, whether written in the URL or reached
/// through DNS. [`development`](Self::development) also allows plain `http` to loopback and
/// private addresses, for a broker and providers running on one machine. Redirects are never
/// followed (a redirect is answered as the final response).
///
/// ```
/// use diax_sdk::client::{FetchPolicy, FetchRefused};
///
/// let safe = FetchPolicy::default();
/// assert!(safe.check("https://results.example/r/1").is_ok());
/// assert_eq!(safe.check("http://127.0.0.1:8080/r/1").unwrap_err(), FetchRefused::Scheme { scheme: "http".into() });
/// assert!(matches!(safe.check("https://10.0.0.7/r/1"), Err(FetchRefused::PrivateAddress { .. })));
/// assert!(matches!(safe.check("https://localhost/r/1"), Err(FetchRefused::PrivateAddress { .. })));
///
/// // Only the origin a provider registered.
/// let one = safe.clone().with_origin_of("https://fixmyprint.example/diax/jobs")?;
/// assert!(one.check("https://fixmyprint.example/v1/results/r1").is_ok());
/// assert!(matches!(one.check("https://elsewhere.example/r1"), Err(FetchRefused::Origin { .. })));
///
/// // A development set-up on one machine.
/// assert!(FetchPolicy::development().check("http://127.0.0.1:8080/r/1").is_ok());
/// # Ok::<(), FetchRefused>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Schemes allowed, lowercase. Default `["https"]`. Plain `http` is, in addition, only
    /// ever allowed to a loopback host (the rule of [`require_secure_url`]).
    pub allowed_schemes: Vec<String>,
    /// Origins (`scheme://host[:port]`, as [`Url::origin`] serialises them) a URL must be
    /// on; empty allows any host. Default empty.
    pub allowed_origins: Vec<String>,
    /// Allow private (RFC 1918, unique-local), loopback, link-local, shared (CGNAT),
    /// unspecified, multicast and reserved addresses. Default `false`: a development flag.
    pub allow_private_addresses: bool,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allowed_schemes: vec!["https".to_owned()],
            allowed_origins: Vec::new(),
            allow_private_addresses: false,
        }
    }
}

/// Why a [`FetchPolicy`] refused a URL or an address. The message names the rule and the
/// host of the URL given, never anything the peer's server sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchRefused {
    /// Not a URL, or a URL without a host.
    #[error("fetch refused: not a valid URL with a host")]
    Invalid,
    /// A scheme not in [`FetchPolicy::allowed_schemes`].
    #[error("fetch refused: scheme {scheme:?} is not allowed")]
    Scheme {
        /// The URL's scheme.
        scheme: String,
    },
    /// Plain `http` to a host that is not a loopback host.
    #[error("fetch refused: plain http is only allowed to loopback hosts")]
    PlainHttp,
    /// An origin not in [`FetchPolicy::allowed_origins`].
    #[error("fetch refused: origin {origin} is not an allowed origin")]
    Origin {
        /// The URL's origin.
        origin: String,
    },
    /// The host is, or resolves only to, addresses the policy refuses.
    #[error("fetch refused: {host} is or resolves to a private, loopback or link-local address")]
    PrivateAddress {
        /// The host as written in the URL.
        host: String,
    },
}

impl FetchPolicy {
    /// The development policy: `https` and plain `http` (to loopback hosts only), private
    /// and loopback addresses allowed. Never for a server reachable by strangers.
    #[must_use]
    pub fn development() -> Self {
        Self {
            allowed_schemes: vec!["https".to_owned(), "http".to_owned()],
            allowed_origins: Vec::new(),
            allow_private_addresses: true,
        }
    }

    /// This policy, restricted to the origin of `url` (e.g. a provider's registered job URL).
    ///
    /// # Errors
    /// [`FetchRefused::Invalid`] when `url` has no origin.
    pub fn with_origin_of(mut self, url: &str) -> Result<Self, FetchRefused> {
        let parsed = Url::parse(url).map_err(|_| FetchRefused::Invalid)?;
        let origin = parsed.origin();
        if !origin.is_tuple() {
            return Err(FetchRefused::Invalid);
        }
        self.allowed_origins = vec![origin.ascii_serialization()];
        Ok(self)
    }

    /// Checks `url` against every rule that can be checked without DNS: scheme, origin, and
    /// the address when the host is an IP literal or `localhost`.
    ///
    /// # Errors
    /// The rule that failed.
    pub fn check(&self, url: &str) -> Result<Url, FetchRefused> {
        let parsed = Url::parse(url).map_err(|_| FetchRefused::Invalid)?;
        let host = parsed.host().ok_or(FetchRefused::Invalid)?;
        let scheme = parsed.scheme();
        if !self.allowed_schemes.iter().any(|s| s == scheme) {
            return Err(FetchRefused::Scheme {
                scheme: scheme.to_owned(),
            });
        }
        if require_secure_url(url).is_err() {
            return Err(FetchRefused::PlainHttp);
        }
        if !self.allowed_origins.is_empty() {
            let origin = parsed.origin().ascii_serialization();
            if !self.allowed_origins.contains(&origin) {
                return Err(FetchRefused::Origin { origin });
            }
        }
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.');
                (d.eq_ignore_ascii_case("localhost")
                    || d.to_ascii_lowercase().ends_with(".localhost"))
                .then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
        };
        if let Some(ip) = literal
            && !self.allows_address(ip)
        {
            return Err(FetchRefused::PrivateAddress {
                host: host.to_string(),
            });
        }
        Ok(parsed)
    }

    /// Whether the policy lets a connection go to `ip`.
    #[must_use]
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        self.allow_private_addresses || is_public_address(ip)
    }
}

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918, IPv6
/// unique-local), link-local, shared (100.64.0.0/10), unspecified, broadcast, multicast,
/// benchmarking (198.18.0.0/15) or reserved (240.0.0.0/4); an IPv6 address that embeds an
/// IPv4 one (mapped, NAT64, 6to4) is judged by the IPv4 address.
///
/// ```
/// use diax_sdk::client::is_public_address;
///
/// assert!(is_public_address("93.184.216.34".parse()?));
/// for private in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
///                 "100.64.0.1", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1"] {
///     assert!(!is_public_address(private.parse()?), "{private}");
/// }
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[must_use]
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    if seg[0] == 0x2002 {
        let [a, b] = seg[1].to_be_bytes();
        let [c, d] = seg[2].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || seg[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
}

/// The resolver of a [`Fetcher`]'s client: the system resolver, keeping only the addresses
/// the policy allows; a name with none left is refused.
#[derive(Debug, Clone, Copy)]
struct PolicyResolver {
    allow_private: bool,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let resolved_any = !found.is_empty();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow_private || is_public_address(a.ip()))
                .collect();
            if allowed.is_empty() && resolved_any {
                return Err(Box::new(FetchRefused::PrivateAddress { host })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The policy refusal in an error's chain, if a [`Fetcher`]'s resolver refused the address.
pub(crate) fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<FetchRefused> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<FetchRefused>() {
            return Some(r.clone());
        }
        cur = err.source();
    }
    None
}

/// An HTTP client bound to a [`FetchPolicy`]: every URL is checked before a request, every
/// address a name resolves to is checked before a connection, no proxy is used and no
/// redirect is followed.
///
/// ```no_run
/// # async fn demo(dl: diax_sdk::wire::Download) -> Result<(), Box<dyn std::error::Error>> {
/// use diax_sdk::client::{ClientConfig, DownloadError, DownloadLimits, FetchPolicy, Fetcher};
///
/// let fetcher = Fetcher::new(&ClientConfig::default(), FetchPolicy::default())?;
/// // A result must come from the origin the provider registered.
/// let for_provider = fetcher.with_origin_of("https://fixmyprint.example/diax/jobs")?;
/// match for_provider.download_to_vec(&dl, &DownloadLimits::default()).await {
///     Ok(bytes) => println!("{} bytes", bytes.len()),
///     Err(DownloadError::NotAllowed(rule)) => eprintln!("{rule}"),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: Client,
    policy: FetchPolicy,
}

impl Fetcher {
    /// A fetcher with its own client built from `config`, enforcing `policy`.
    ///
    /// # Errors
    /// As [`http_client`](super::http_client).
    pub fn new(config: &ClientConfig, policy: FetchPolicy) -> Result<Self, ClientError> {
        let client = client_builder(config)?
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver {
                allow_private: policy.allow_private_addresses,
            }))
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self { client, policy })
    }

    /// The client: its resolver applies the policy's address rule to any request it makes
    /// (a [`SignedSender`](super::SignedSender) over it cannot reach refused addresses by
    /// DNS name either). Check URLs with [`policy`](Self::policy) first for the other rules.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// The same fetcher (sharing its connections), restricted to the origin of `url`.
    ///
    /// # Errors
    /// [`FetchRefused::Invalid`] when `url` has no origin.
    pub fn with_origin_of(&self, url: &str) -> Result<Self, FetchRefused> {
        Ok(Self {
            client: self.client.clone(),
            policy: self.policy.clone().with_origin_of(url)?,
        })
    }

    /// [`download`](super::download) under the policy.
    ///
    /// # Errors
    /// [`DownloadError::NotAllowed`] naming the rule, or as [`download`](super::download).
    pub async fn download<W: AsyncWrite + Unpin>(
        &self,
        dl: &Download,
        out: &mut W,
        limits: &DownloadLimits,
    ) -> Result<Downloaded, DownloadError> {
        let url = self.policy.check(&dl.url)?;
        super::download_from(&self.client, url, dl, out, limits).await
    }

    /// [`download_to_vec`](super::download_to_vec) under the policy.
    ///
    /// # Errors
    /// As [`download`](Self::download).
    pub async fn download_to_vec(
        &self,
        dl: &Download,
        limits: &DownloadLimits,
    ) -> Result<Vec<u8>, DownloadError> {
        let url = self.policy.check(&dl.url)?;
        let mut buf = super::download_buffer(dl, limits);
        super::download_from(&self.client, url, dl, &mut buf, limits).await?;
        Ok(buf)
    }

    /// [`download_to_file`](super::download_to_file) under the policy.
    ///
    /// # Errors
    /// As [`download`](Self::download).
    pub async fn download_to_file(
        &self,
        dl: &Download,
        path: &Path,
        limits: &DownloadLimits,
    ) -> Result<Downloaded, DownloadError> {
        let url = self.policy.check(&dl.url)?;
        super::file_download(path, async |file: &mut tokio::fs::File| {
            super::download_from(&self.client, url, dl, file, limits).await
        })
        .await
    }
}
