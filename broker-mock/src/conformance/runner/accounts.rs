//! Accounts and payment (PROTOCOL §5.2): unknown and missing accounts, an account that
//! cannot pay.

use std::time::Instant;

use diax_sdk::util::random_token;
use diax_sdk::wire::BrokerMessage;
use diax_sdk::{JobId, ProblemType};

use super::exchange::expect_problem;
use super::{Check, Runner, Verdict};

impl Runner {
    /// `account.unknown`, `account.missing` and `payment.insufficient`.
    pub(super) async fn account_checks(&mut self) {
        // Accounts.
        for (check, unknown) in [
            (Check::AccountUnknown, true),
            (Check::AccountMissing, false),
        ] {
            let t = Instant::now();
            if self.cfg.account.is_none() {
                self.record(
                    check,
                    Verdict::Skip,
                    "no --account given: the provider is taken to be free (no accounts)",
                    t,
                );
                continue;
            }
            let account = unknown.then(|| random_token("acc_conformanceUnknown", 12));
            let body = Self::body(&BrokerMessage::Offer(
                self.offer(&JobId::generate(), account.as_deref()),
            ));
            let answer = self.send_signed(&body).await;
            let what = if unknown {
                "an account the provider does not know"
            } else {
                "no account"
            };
            let outcome =
                expect_problem(&answer, ProblemType::AccountRequired).and_then(|p| {
                    match p.register_url() {
                        Some(url) if !url.is_empty() => {
                            Ok(format!("{what}: 401 account-required, register_url {url}"))
                        }
                        _ => Err(format!(
                            "{what}: 401 account-required, but without a register_url"
                        )),
                    }
                });
            self.judge(check, outcome, t);
        }

        // Payment.
        let t = Instant::now();
        match self.cfg.poor_account.clone() {
            None => self.record(
                Check::PaymentInsufficient,
                Verdict::Skip,
                "no --poor-account given (an account that exists but cannot pay)",
                t,
            ),
            Some(poor) => {
                let body = Self::body(&BrokerMessage::Offer(
                    self.offer(&JobId::generate(), Some(&poor)),
                ));
                let answer = self.send_signed(&body).await;
                let outcome = expect_problem(&answer, ProblemType::PaymentRequired).and_then(|p| {
                    let quote = p
                        .quote()
                        .ok_or("402 payment-required, but without a valid quote")?;
                    let top_up = p.top_up_url().unwrap_or("(no top_up_url)");
                    Ok(format!(
                        "an account that cannot pay: 402 payment-required, quote {quote}, \
                             top_up_url {top_up}"
                    ))
                });
                self.judge(Check::PaymentInsufficient, outcome, t);
            }
        }
    }
}
