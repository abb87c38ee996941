//! User notifications pushed signed, with retries, and kept pending until acknowledged.

use broker_mock::client::MessageFilter;
use diax_sdk::clock::unix_now;
use diax_sdk::wire::*;
use diax_sdk::*;

use crate::common::*;

#[tokio::test]
async fn notifications_are_pushed_signed_with_retries() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    *fake.state.notify_failures_left.lock().unwrap() = 2;
    let created = api
        .create_user(&CreateUser {
            name: "hooked".into(),
            notification_url: Some(format!("{}/notify", fake.base_url)),
        })
        .await
        .unwrap();
    let secret = Secret::parse(created.notification_secret.as_deref().unwrap()).unwrap();
    let user = api.user(created.api_key.clone());
    let m = user.upload_model("x.stl", stl()).await.unwrap();
    let job = user
        .create_job(&CreateJob {
            provider_id: s.reg.provider_id.clone(),
            model_id: m.model_id,
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Rejected);
    eventually("a delivered notification", || {
        !fake.state.notifications.lock().unwrap().is_empty()
    })
    .await;
    let (headers, body) = fake.state.notifications.lock().unwrap()[0].clone();
    let raw = diax_sdk::webhook::RawHeaders::from_fn(|n| headers.get(n).map(|v| v.as_bytes()));
    let ring = Keyring::single(KeyId::parse("key_any").unwrap(), secret);
    let verified = ring.verify_at(&raw, &body, unix_now(), 300).unwrap();
    let n: Notification = serde_json::from_slice(&body).unwrap();
    assert_eq!(n.event, "job.rejected");
    assert_eq!(n.job_id, job.job_id);
    assert_eq!(verified.id.as_str(), n.notification_id.as_str());
    assert_eq!(*fake.state.notify_failures_left.lock().unwrap(), 0);
    // Still pending until acknowledged.
    assert_eq!(user.notifications().await.unwrap().notifications, vec![n]);
    let log = api
        .messages(&MessageFilter {
            direction: Some("out".into()),
            job_id: Some(job.job_id.to_string()),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert!(
        log.messages
            .iter()
            .filter(|m| m.endpoint.ends_with("/notify"))
            .count()
            >= 3
    );
    broker.shutdown().await;
}
