//! The shared secret never leaves the provider (PROTOCOL §3, §2: details only in the
//! server's log): every answer and every event is scanned for it.

use std::time::Instant;

use super::{Check, Runner};

impl Runner {
    /// `secret.not-echoed`: no answer (status line aside: headers and body) and no event
    /// carried the secret, as `whsec_…` or its base64 part.
    pub(super) async fn secret_check(&mut self) {
        let t = Instant::now();
        let mut leaks = self
            .leaks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        leaks.extend(self.endpoint.shared.log.lock().await.leaks.iter().cloned());
        let outcome = match leaks.first() {
            Some(first) => Err(format!(
                "{} answer(s) or event(s) carried the shared secret; first: {first} (§3: the \
                 secret is never sent; §2: details of errors stay in the server's log)",
                leaks.len()
            )),
            None => Ok("no answer and no event carried the shared secret".to_owned()),
        };
        self.judge(Check::SecretNotEchoed, outcome, t);
    }
}
