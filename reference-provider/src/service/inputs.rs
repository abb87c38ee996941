//! Where a job's input may be downloaded from: the SDK's [`FetchPolicy`] built from
//! [`Config::input_origins`] and [`Config::allow_private_inputs`], enforced by two
//! [`Fetcher`]s (the policy's address rule lives in a client's resolver, so the public and the
//! private rule need a client each).
//!
//! | settings | an input may come from |
//! |---|---|
//! | none (the default) | any origin, `https` only, public addresses only (checked again on every address its host resolves to) |
//! | `input_origins` listed | the listed origins only; a listed origin whose host is a loopback or private IP address or `localhost` is reached there, the others at public addresses only |
//! | `allow_private_inputs` | as above, and loopback, private and link-local addresses (plain `http` to loopback) allowed on every origin allowed |
//!
//! A refused input fails its job with `download-failed` before any connection is made.

use diax_sdk::client::{
    ClientConfig, ClientError, FetchPolicy, FetchRefused, Fetcher, is_public_address,
};
use url::{Host, Url};

use super::Config;

/// The fetchers of job inputs (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct InputFetchers {
    /// Public addresses only (so `https` only), restricted to the listed origins if any.
    public: Fetcher,
    /// Loopback and private addresses allowed: every origin allowed when
    /// `allow_private_inputs`, otherwise the listed origins whose host is such an address
    /// (`None` when there is none).
    private: Option<Fetcher>,
}

/// Whether the host of a listed origin is a loopback or private address written as such
/// (an IP literal, `localhost` or `*.localhost`): listing it is the permission to go there.
fn names_private_host(origin: &str) -> bool {
    let Ok(url) = Url::parse(origin) else {
        return false;
    };
    match url.host() {
        Some(Host::Ipv4(ip)) => !is_public_address(ip.into()),
        Some(Host::Ipv6(ip)) => !is_public_address(ip.into()),
        Some(Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        None => false,
    }
}

impl InputFetchers {
    /// The fetchers for `config`, with clients built from `client`.
    ///
    /// # Errors
    /// As [`Fetcher::new`].
    pub fn new(config: &Config, client: &ClientConfig) -> Result<Self, ClientError> {
        // Plain `http` passes the scheme rule only to be refused by the address rule (it is
        // only ever allowed to loopback hosts), so that a refusal names the rule that
        // matters: the origin, or the address.
        let public = Fetcher::new(
            client,
            FetchPolicy {
                allowed_schemes: vec!["https".into(), "http".into()],
                allowed_origins: config.input_origins.clone(),
                allow_private_addresses: false,
            },
        )?;
        let private_origins = if config.allow_private_inputs {
            Some(config.input_origins.clone())
        } else {
            let listed: Vec<String> = config
                .input_origins
                .iter()
                .filter(|o| names_private_host(o))
                .cloned()
                .collect();
            (!listed.is_empty()).then_some(listed)
        };
        let private = private_origins
            .map(|allowed_origins| {
                Fetcher::new(
                    client,
                    FetchPolicy {
                        allowed_origins,
                        ..FetchPolicy::development()
                    },
                )
            })
            .transpose()?;
        Ok(Self { public, private })
    }

    /// The fetcher whose policy lets `url` through, or the public policy's refusal (with a
    /// hint at the settings when the rule is one about private addresses).
    ///
    /// # Errors
    /// The rule that refused `url`.
    pub fn for_url(&self, url: &str) -> Result<&Fetcher, InputRefused> {
        if let Some(private) = &self.private
            && private.policy().check(url).is_ok()
        {
            return Ok(private);
        }
        match self.public.policy().check(url) {
            Ok(_) => Ok(&self.public),
            Err(rule) => Err(InputRefused(rule)),
        }
    }
}

/// Why a job's input URL is refused: the policy's rule, and for a rule about private
/// addresses or plain `http`, which settings would allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}{hint}", hint = hint(.0))]
pub struct InputRefused(pub FetchRefused);

fn hint(rule: &FetchRefused) -> &'static str {
    match rule {
        FetchRefused::Scheme { .. }
        | FetchRefused::PlainHttp
        | FetchRefused::PrivateAddress { .. } => {
            " (inputs come from public https addresses unless the origin is listed with \
             --input-origin or --allow-private-inputs is set)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetchers(origins: &[&str], allow_private: bool) -> InputFetchers {
        let config = Config {
            input_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            allow_private_inputs: allow_private,
            ..Config::default()
        };
        InputFetchers::new(&config, &ClientConfig::default()).expect("fetchers")
    }

    #[test]
    fn by_default_only_public_https() {
        let f = fetchers(&[], false);
        assert!(f.for_url("https://models.example/m/1").is_ok());
        for url in [
            "http://127.0.0.1:9000/m",
            "https://127.0.0.1:9000/m",
            "https://localhost/m",
            "https://10.0.0.7/m",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:127.0.0.1]/m",
            "https://[fd00::1]/m",
        ] {
            let e = f.for_url(url).expect_err(url).to_string();
            assert!(e.contains("--allow-private-inputs"), "{url}: {e}");
        }
    }

    #[test]
    fn a_listed_loopback_origin_is_the_permission_for_it_only() {
        let f = fetchers(&["http://127.0.0.1:9000", "https://models.example"], false);
        assert!(f.for_url("http://127.0.0.1:9000/m").is_ok());
        assert!(f.for_url("https://models.example/m").is_ok());
        let e = f.for_url("http://127.0.0.1:9001/m").unwrap_err();
        assert!(matches!(e.0, FetchRefused::Origin { .. }), "{e}");
        let e = f.for_url("https://elsewhere.example/m").unwrap_err();
        assert!(matches!(e.0, FetchRefused::Origin { .. }), "{e}");
        // Only the public fetcher serves a listed DNS name: an address it resolves to is
        // checked by its resolver.
        assert!(
            !f.for_url("https://models.example/m")
                .unwrap()
                .policy()
                .allow_private_addresses
        );
    }

    #[test]
    fn the_development_flag_allows_private_addresses_on_allowed_origins() {
        let f = fetchers(&[], true);
        assert!(f.for_url("http://127.0.0.1:9000/m").is_ok());
        assert!(f.for_url("https://10.0.0.7/m").is_ok());
        let f = fetchers(&["https://models.example"], true);
        assert!(f.for_url("http://127.0.0.1:9000/m").is_err());
        assert!(
            f.for_url("https://models.example/m")
                .unwrap()
                .policy()
                .allow_private_addresses
        );
    }
}
