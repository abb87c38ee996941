//! The result (PROTOCOL §5.6): the job completed and its location serves the declared bytes;
//! its picture, when there is one, is a whole PNG fetched under the same rules.

use std::time::Instant;

use diax_sdk::Quote;
use diax_sdk::client::{self, DownloadError, DownloadLimits};
use diax_sdk::clock::unix_now;
use diax_sdk::util::random_token;
use diax_sdk::wire::{Download, JobAccepted, JobEventKind, MAX_PICTURE_BYTES, PNG_SIGNATURE};

use super::super::endpoint::{Charge, Log};
use super::{Check, Runner, not_checked};

/// `result.digest`.
pub(super) fn judge_result(log: &Log, unfinished: &str) -> Result<String, String> {
    match (&log.terminal, &log.result) {
        (None, _) => Err(format!("the job never completed{unfinished}")),
        (Some(ev), _) if matches!(ev.kind, JobEventKind::Failed { .. }) => {
            let why = match &ev.kind {
                JobEventKind::Failed { problem, .. } => problem.to_string(),
                _ => String::new(),
            };
            Err(format!("the job failed on a valid model: {why}"))
        }
        (Some(_), Some(Ok((size, sha)))) => Ok(format!(
            "the result location served {size} bytes with the declared sha256 {sha}"
        )),
        (Some(_), Some(Err(e))) => Err(e.clone()),
        (Some(_), None) => Err("the result was not fetched".to_owned()),
    }
}

impl Runner {
    /// `result.credential-required` (§5.6: the result is fetched with its credential): the
    /// completed job's result location, fetched without a credential and with a wrong one,
    /// must refuse (`401`/`403`) and serve nothing.
    pub(super) async fn result_credential_check(&mut self, finished: bool) {
        let t = Instant::now();
        let result = {
            let log = self.endpoint.shared.log.lock().await;
            match &log.terminal {
                Some(ev) => match &ev.kind {
                    JobEventKind::Completed { result } => Some(result.download.clone()),
                    _ => None,
                },
                None => None,
            }
        };
        let Some(download) = result else {
            let why = if finished {
                "not checked: the job did not complete (see result.digest)"
            } else {
                "not checked: the job did not end (see events.transitions)"
            };
            self.judge(Check::ResultCredentialRequired, Err(why.to_owned()), t);
            return;
        };
        let limits = DownloadLimits {
            max_bytes: download.size.saturating_add(1),
            timeout: self.cfg.request_timeout.min(self.cfg.timeout),
            ..DownloadLimits::default()
        };
        let mut seen = Vec::new();
        let mut outcome = Ok(());
        for (what, authorization) in [
            ("without a credential", None),
            (
                "given a wrong credential",
                Some(format!(
                    "Bearer {}",
                    random_token("rc_conformanceWrong", 24)
                )),
            ),
        ] {
            let mut d = download.clone();
            d.authorization = authorization;
            match client::download_to_vec(&self.http, &d, &limits).await {
                Err(DownloadError::Refused { status, .. }) if matches!(status, 401 | 403) => {
                    seen.push(format!("{what}: {status}"));
                }
                Err(DownloadError::Refused { status, .. }) => {
                    outcome = Err(format!(
                        "the result location {what} answered {status}; expected 401 or 403"
                    ));
                    break;
                }
                Ok(bytes) => {
                    outcome = Err(format!(
                        "the result location served {} bytes {what}: anyone with the URL gets \
                         the user's model",
                        bytes.len()
                    ));
                    break;
                }
                Err(e) => {
                    outcome = Err(format!(
                        "the result location {what}: {}",
                        diax_sdk::util::ErrorChain(&e)
                    ));
                    break;
                }
            }
        }
        let outcome = outcome.map(|()| format!("result.download.url {}", seen.join(", ")));
        self.judge(Check::ResultCredentialRequired, outcome, t);
    }

    /// `result.picture` (§5.6: a picture is optional; when offered it is a PNG of at most
    /// [`MAX_PICTURE_BYTES`] on the result's origins, with its own size and digest, fetchable
    /// as long as the result). Checked as a broker fetches it, plus what a broker does not
    /// look at: a credential-protected picture refused without its credential, and the PNG
    /// decoding whole. Any other failure is this check's alone: the result stays good.
    pub(super) async fn picture_check(&mut self, finished: bool) {
        let t = Instant::now();
        let completed = {
            let log = self.endpoint.shared.log.lock().await;
            match log.terminal.as_ref().map(|ev| &ev.kind) {
                Some(JobEventKind::Completed { result }) => {
                    Some((result.download.clone(), result.picture.clone()))
                }
                _ => None,
            }
        };
        let outcome = match completed {
            None if finished => {
                Err("not checked: the job did not complete (see result.digest)".to_owned())
            }
            None => Err("not checked: the job did not end (see events.transitions)".to_owned()),
            Some((_, None)) => {
                Ok("the provider offers no picture (optional, PROTOCOL §5.6)".into())
            }
            Some((result, Some(picture))) => self.judge_picture(&result, &picture).await,
        };
        self.judge(Check::ResultPicture, outcome, t);
    }

    async fn judge_picture(&self, result: &Download, picture: &Download) -> Result<String, String> {
        let origin = |url: &str| {
            url::Url::parse(url)
                .ok()
                .map(|u| u.origin())
                .filter(url::Origin::is_tuple)
                .map(|o| o.ascii_serialization())
        };
        let allowed = [origin(&self.cfg.provider_url), origin(&result.url)];
        let Some(at) = origin(&picture.url) else {
            return Err("result.picture.url is not a URL with a host".into());
        };
        if !allowed.iter().flatten().any(|o| *o == at) {
            return Err(format!(
                "result.picture.url is on {at}, neither the result's origin nor the job URL's: \
                 a broker refuses it"
            ));
        }
        client::require_secure_url(&picture.url)
            .map_err(|e| format!("result.picture.url: {}", diax_sdk::util::ErrorChain(&e)))?;
        if picture.size > MAX_PICTURE_BYTES {
            return Err(format!(
                "result.picture.size is {} bytes, over the {MAX_PICTURE_BYTES}-byte bound \
                 (diax_sdk::wire::MAX_PICTURE_BYTES): a broker refuses it",
                picture.size
            ));
        }
        if picture.expires_at < result.expires_at {
            return Err(format!(
                "result.picture.expires_at {} is before the result's {}: the picture must be \
                 fetchable as long as the result",
                picture.expires_at, result.expires_at
            ));
        }
        if picture.expires_at < unix_now() {
            return Err(format!(
                "the picture location had expired at {}",
                picture.expires_at
            ));
        }
        let limits = DownloadLimits {
            max_bytes: MAX_PICTURE_BYTES,
            timeout: self.cfg.request_timeout.min(self.cfg.timeout),
            ..DownloadLimits::default()
        };
        let bytes = match client::download_to_vec(&self.http, picture, &limits).await {
            Ok(bytes) => bytes,
            Err(DownloadError::Refused {
                status,
                problem: Some(p),
            }) => return Err(format!("the picture location answered {status}: {p}")),
            Err(e) => {
                return Err(format!(
                    "fetching the picture: {}",
                    diax_sdk::util::ErrorChain(&e)
                ));
            }
        };
        let (width, height) = decode_png(&bytes)?;
        let mut guarded = "presigned (no credential to leave out)".to_owned();
        if picture.authorization.is_some() {
            let mut bare = picture.clone();
            bare.authorization = None;
            match client::download_to_vec(&self.http, &bare, &limits).await {
                Err(DownloadError::Refused { status, .. }) if matches!(status, 401 | 403) => {
                    guarded = format!("refused without its credential ({status})");
                }
                Err(DownloadError::Refused { status, .. }) => {
                    return Err(format!(
                        "the picture location without a credential answered {status}; \
                         expected 401 or 403"
                    ));
                }
                Ok(b) => {
                    return Err(format!(
                        "the picture location served {} bytes without a credential: anyone \
                         with the URL sees the user's model",
                        b.len()
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "the picture location without a credential: {}",
                        diax_sdk::util::ErrorChain(&e)
                    ));
                }
            }
        }
        Ok(format!(
            "result.picture: a {width}×{height} PNG of {} bytes with the declared sha256, on \
             {at}, {guarded}",
            bytes.len()
        ))
    }

    /// `charges.match-quote`, judged at the end of the run (after the finished job's input
    /// came again), so that a second charge shows.
    pub(super) async fn charges_check(&mut self, accepted: Option<&JobAccepted>, input_ok: bool) {
        let t = Instant::now();
        let outcome = match accepted {
            None => Err(not_checked(Check::OfferValidAccepted)),
            Some(_) if !input_ok => Err(not_checked(Check::InputAccepted)),
            Some(acc) => {
                let log = self.endpoint.shared.log.lock().await;
                judge_charges(&log.charges, acc.quote.as_ref())
            }
        };
        self.judge(Check::ChargesMatchQuote, outcome, t);
    }
}

/// One job's terminal events against its quote: the first says what was charged (the quote
/// on `job.completed`, zero on `job.failed`), and no later one charges again.
pub(super) fn judge_charges(charges: &[Charge], quote: Option<&Quote>) -> Result<String, String> {
    let Some(first) = charges.first() else {
        return Err("not checked: no job.completed or job.failed arrived (see \
                    events.transitions)"
            .to_owned());
    };
    let charged = first.charged.as_ref().ok_or_else(|| {
        format!(
            "{} {} carries no `charged` (PROTOCOL §5.6: what the provider charged, amount \
             and currency)",
            first.event_type, first.id
        )
    })?;
    let quoted = quote.map_or_else(|| "no quote (free)".to_owned(), ToString::to_string);
    if first.event_type == "job.failed" {
        if charged.amount != 0 {
            return Err(format!(
                "job.failed {} says {charged} was charged; a failed job charges nothing \
                 (amount 0) and releases its hold (quote was {quoted})",
                first.id
            ));
        }
    } else {
        let expected = quote.map_or(0, |q| q.amount);
        let currency_ok = quote.is_none_or(|q| q.currency == charged.currency);
        if charged.amount != expected || !currency_ok {
            return Err(format!(
                "job.completed {} says {charged} was charged, but the accepted quote was \
                 {quoted}",
                first.id
            ));
        }
    }
    let again: Vec<String> = charges
        .iter()
        .skip(1)
        .filter(|c| c.charged.as_ref().is_none_or(|q| q.amount != 0))
        .map(|c| {
            let what = c
                .charged
                .as_ref()
                .map_or_else(|| "no charged member".to_owned(), ToString::to_string);
            format!("{} {} ({what})", c.event_type, c.id)
        })
        .collect();
    if let Some(second) = again.first() {
        return Err(format!(
            "{} {} charged {charged}, then {} more terminal event(s) under new webhook-ids: \
             first {second}: the job was charged more than once",
            first.event_type,
            first.id,
            again.len()
        ));
    }
    Ok(format!(
        "{} {} says {charged} was charged (quote {quoted}), and no other terminal event came",
        first.event_type, first.id
    ))
}

/// The most a picture may take decoded while it is checked (the decoder's allocation bound).
const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// Decodes `bytes` as a PNG, row by row (one row in memory at a time), to its end: signature,
/// header, every chunk's CRC, the compressed image data, `IEND`. Returns its width and height,
/// or one line saying what is wrong.
pub(super) fn decode_png(bytes: &[u8]) -> Result<(u32, u32), String> {
    if !bytes.starts_with(&PNG_SIGNATURE) {
        return Err(
            "the picture is not a PNG: its bytes do not start with the PNG \
                    signature (89 50 4E 47 0D 0A 1A 0A)"
                .into(),
        );
    }
    let bad = |e: png::DecodingError| format!("the picture is not a whole PNG: {e}");
    let limits = png::Limits {
        bytes: MAX_DECODED_BYTES,
    };
    let decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    let mut reader = decoder.read_info().map_err(bad)?;
    let (width, height) = (reader.info().width, reader.info().height);
    while reader.next_row().map_err(bad)?.is_some() {}
    reader.finish().map_err(bad)?;
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::decode_png;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&vec![200; (width * height * 3) as usize])
            .unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn a_whole_png_decodes_and_each_kind_of_damage_is_named() {
        let good = png(40, 30);
        assert_eq!(decode_png(&good), Ok((40, 30)));
        let not_png = decode_png(b"solid model\nendsolid model\n").unwrap_err();
        assert!(not_png.contains("PNG signature"), "{not_png}");
        // Cut short: the image data ends early.
        let cut = decode_png(&good[..good.len() / 2]).unwrap_err();
        assert!(cut.contains("not a whole PNG"), "{cut}");
        // One byte of the image data changed: a CRC no longer matches.
        let mut flipped = good.clone();
        let at = flipped.len() - 20;
        flipped[at] ^= 0x55;
        let crc = decode_png(&flipped).unwrap_err();
        assert!(crc.contains("not a whole PNG"), "{crc}");
    }
}
