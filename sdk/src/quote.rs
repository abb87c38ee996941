//! Prices: [`Quote`], integer minor units of a currency. Its own module because both the
//! wire messages ([`crate::wire`]) and the `payment-required` problem ([`crate::problem`])
//! carry one, and `wire` already depends on `problem`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A price: integer minor units of a currency (e.g. cents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quote {
    /// Amount in minor units; never negative.
    pub amount: i64,
    /// ISO 4217 currency code.
    pub currency: String,
}

impl Quote {
    /// A quote of `amount` minor units of `currency`.
    #[must_use]
    pub fn new(amount: i64, currency: impl Into<String>) -> Self {
        Self {
            amount,
            currency: currency.into(),
        }
    }
}

impl fmt::Display for Quote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:02} {}",
            self.amount / 100,
            (self.amount % 100).abs(),
            self.currency
        )
    }
}
