//! The picture of a job's work: fetched with the result under the same rules, kept with the
//! new version, shown to the model's owner only; a bad picture never spoils the result.

use broker_mock::client::MessageFilter;
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::*;

use crate::common::*;

/// Bytes the broker takes for a PNG: the signature, then anything.
fn png_like(body: &[u8]) -> Vec<u8> {
    [&PNG_SIGNATURE[..], body].concat()
}

fn completed(fake: &Fake, healed: &[u8], picture: Option<Download>) -> JobEventKind {
    JobEventKind::Completed {
        result: JobResult {
            download: fake.result_download(healed, unix_now() + 600),
            format: "stl".into(),
            report: None,
            charged: None,
            picture,
        },
    }
}

#[tokio::test]
async fn the_owner_gets_the_picture_of_the_version_a_job_made() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (key, user, model, job) = linked_job(&api, &fake, &s, &broker).await;
    assert_eq!(job.state, JobState::Accepted, "{job:?}");
    let healed = b"healed".to_vec();
    let png = png_like(b"the picture");
    fake.set_result(healed.clone());
    fake.set_picture(png.clone());
    let done = event(
        &job,
        &s.reg,
        1,
        completed(
            &fake,
            &healed,
            Some(fake.picture_download(&png, unix_now() + 600)),
        ),
    );
    let h = http();
    let (st, ack) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_done",
        unix_now(),
        &serde_json::to_vec(&done).unwrap(),
    )
    .await;
    assert_eq!(
        (st, ack["state"].as_str()),
        (200, Some("completed")),
        "{ack}"
    );
    let shown = user.model(&model.model_id).await.unwrap();
    assert_eq!(
        shown.versions[0].report_url, None,
        "an upload has no picture"
    );
    let url = shown.versions[1].report_url.clone().expect("a report_url");
    assert_eq!(
        url,
        format!(
            "{}/v1/models/{}/versions/2/report",
            broker.base_url(),
            model.model_id
        )
    );
    assert_eq!(user.report(&model.model_id, 2).await.unwrap(), png);
    // Over plain HTTP as a person would fetch it: PNG, with its digest.
    let resp = h.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(
        resp.headers()["x-content-sha256"],
        sha256_hex(&png).as_str()
    );
    // The version without a picture, someone else, nobody.
    let e = user.report(&model.model_id, 1).await.unwrap_err();
    assert_eq!(kind(&e), "not-found");
    assert!(e.to_string().contains("has no picture"), "{e}");
    let (_, eve) = new_user(&api, "eve").await;
    let e = eve.report(&model.model_id, 2).await.unwrap_err();
    assert_eq!(kind(&e), "not-found");
    assert!(!e.to_string().contains("picture"), "{e}");
    let (st, _, p) = raw(&h, reqwest::Method::GET, url, None, None, vec![]).await;
    assert_eq!((st, problem_type(&p)), (401, "unauthorized"), "{p}");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_bad_picture_is_dropped_and_the_result_kept() {
    let elsewhere = fake_provider().await;
    let too_large = png_like(&vec![0; usize::try_from(MAX_PICTURE_BYTES).unwrap()]);
    let cases: [(&str, Box<dyn Fn(&Fake, &[u8]) -> Download>, Vec<u8>, &str); 4] = [
        (
            "digest",
            Box::new(|f, png| {
                let mut d = f.picture_download(png, unix_now() + 600);
                d.sha256 = sha256_hex(b"another picture");
                d
            }),
            png_like(b"x"),
            "SHA-256 mismatch",
        ),
        (
            "not a png",
            Box::new(|f, b| f.picture_download(b, unix_now() + 600)),
            b"GIF89a and so on".to_vec(),
            "not a PNG",
        ),
        (
            "too large",
            Box::new(|f, b| f.picture_download(b, unix_now() + 600)),
            too_large,
            "exceeds the limit",
        ),
        (
            "another origin",
            Box::new(|_, b| elsewhere.picture_download(b, unix_now() + 600)),
            png_like(b"x"),
            "origin",
        ),
    ];
    for (name, make, picture, reason) in cases {
        let (broker, api) = start(test_config()).await;
        let fake = fake_provider().await;
        let s = register(&api, &fake, SecretScope::Service).await;
        let (user, model, job) = accepted_job(&api, &fake, &s, &broker).await;
        let healed = b"healed".to_vec();
        fake.set_result(healed.clone());
        fake.set_picture(picture.clone());
        elsewhere.set_picture(picture.clone());
        let done = event(
            &job,
            &s.reg,
            1,
            completed(&fake, &healed, Some(make(&fake, &picture))),
        );
        let (st, ack) = post_event_raw(
            &http(),
            &s.reg,
            &s.ring,
            "msg_done",
            unix_now(),
            &serde_json::to_vec(&done).unwrap(),
        )
        .await;
        assert_eq!(
            (st, ack["state"].as_str()),
            (200, Some("completed")),
            "{name}: {ack}"
        );
        assert_eq!(
            user.download(&model.model_id, 2).await.unwrap(),
            healed,
            "{name}"
        );
        let shown = user.model(&model.model_id).await.unwrap();
        assert_eq!(shown.versions[1].report_url, None, "{name}");
        let e = user.report(&model.model_id, 2).await.unwrap_err();
        assert_eq!(kind(&e), "not-found", "{name}");
        let log = api
            .messages(&MessageFilter {
                job_id: Some(job.job_id.to_string()),
                limit: Some(1000),
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        let refused = log
            .messages
            .iter()
            .find(|m| m.verdict.contains("picture refused"))
            .unwrap_or_else(|| panic!("{name}: no refusal in {:#?}", log.messages));
        let why = refused.reason.as_deref().unwrap_or("");
        assert!(why.contains(reason), "{name}: {why}");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn a_resent_completion_downloads_nothing_more() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (user, model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let healed = b"healed".to_vec();
    fake.set_result(healed.clone());
    let body =
        serde_json::to_vec(&event(&job, &s.reg, 1, completed(&fake, &healed, None))).unwrap();
    let h = http();
    let (st, first) = post_event_raw(&h, &s.reg, &s.ring, "msg_once", unix_now(), &body).await;
    assert_eq!((st, &first["duplicate"]), (200, &serde_json::json!(false)));
    assert_eq!(fake.result_gets(), 1);
    // The same event again: as a redelivery (same id) and as a new message (new id).
    for id in ["msg_once", "msg_again"] {
        let (st, again) = post_event_raw(&h, &s.reg, &s.ring, id, unix_now(), &body).await;
        assert_eq!(
            (st, &again["duplicate"]),
            (200, &serde_json::json!(true)),
            "{again}"
        );
    }
    assert_eq!(fake.result_gets(), 1, "a duplicate is not downloaded again");
    assert_eq!(user.model(&model.model_id).await.unwrap().versions.len(), 2);
    broker.shutdown().await;
}

/// A picture is loaded whole from the database to be sent: it takes its size from the
/// model budget first, and past the budget it gets `503` with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_past_the_memory_budget_gets_503() {
    let (broker, api) = start(broker_mock::Config {
        max_model_bytes: 1000,
        max_buffered_model_bytes: Some(1000),
        ..test_config()
    })
    .await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (key, user, model, job) = linked_job(&api, &fake, &s, &broker).await;
    let healed = b"healed".to_vec();
    let png = png_like(&[b'p'; 400]);
    fake.set_result(healed.clone());
    fake.set_picture(png.clone());
    let picture = Some(fake.picture_download(&png, unix_now() + 600));
    let done = event(&job, &s.reg, 1, completed(&fake, &healed, picture));
    let body = serde_json::to_vec(&done).unwrap();
    let (st, ack) = post_event_raw(&http(), &s.reg, &s.ring, "msg_done", unix_now(), &body).await;
    assert_eq!(st, 200, "{ack}");
    // 700 bytes held: the 408-byte picture does not fit beside them.
    let held = HeldUpload::start(broker.local_addr(), &key, 700).await;
    let url = format!(
        "{}/v1/models/{}/versions/2/report",
        broker.base_url(),
        model.model_id
    );
    let resp = http().get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(held.finish().await, "HTTP/1.1 201 Created");
    let resp = http().get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        png.len().to_string().as_str()
    );
    assert_eq!(user.report(&model.model_id, 2).await.unwrap(), png);
    broker.shutdown().await;
}
