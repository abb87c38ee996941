//! Provider registration, the registry, secret rotation with a grace period, and per-user secrets.

use diax_sdk::wire::*;
use diax_sdk::*;

use crate::common::*;

#[tokio::test]
async fn registration_registry_and_refusals() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    assert!(s.reg.secret.starts_with("whsec_"));
    assert_eq!(s.reg.broker_id, "3diax-mock");
    assert_eq!(
        s.reg.events_url,
        format!(
            "{}/v1/providers/{}/events",
            broker.base_url(),
            s.reg.provider_id
        )
    );
    let reg = api.registry(Some(SERVICE_KIND_MODEL_REPAIR)).await.unwrap();
    assert_eq!(reg.providers.len(), 1);
    assert_eq!(reg.providers[0].provider_id, s.reg.provider_id);
    assert_eq!(reg.providers[0].pricing, Pricing::Paid);
    assert!(
        api.registry(Some("slicing"))
            .await
            .unwrap()
            .providers
            .is_empty()
    );
    assert_eq!(api.registry(None).await.unwrap().providers.len(), 1);

    let group = s.owner.me().await.unwrap().groups[0].clone();
    let (_, stranger) = new_user(&api, "stranger").await;
    let e = stranger
        .register_provider(&register_req(&group, &fake.job_url(), SecretScope::Service))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "forbidden");
    for bad_url in ["http://example.com/jobs", "ftp://127.0.0.1/x", "not a url"] {
        let e = s
            .owner
            .register_provider(&register_req(&group, bad_url, SecretScope::Service))
            .await
            .unwrap_err();
        assert_eq!(kind(&e), "invalid-request", "{bad_url}");
    }
    let mut bad_kind = register_req(&group, &fake.job_url(), SecretScope::Service);
    bad_kind.service_kind = "Model Repair".into();
    assert_eq!(
        kind(&s.owner.register_provider(&bad_kind).await.unwrap_err()),
        "invalid-request"
    );
    let e = s
        .owner
        .register_provider(&register_req(
            &GroupId::parse("grp_nope").unwrap(),
            &fake.job_url(),
            SecretScope::Service,
        ))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    let e = stranger
        .rotate_secret(&s.reg.provider_id, &RotateSecret::default())
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "forbidden");
    let e = s
        .owner
        .rotate_secret(
            &ProviderId::parse("prv_nope").unwrap(),
            &RotateSecret::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    broker.shutdown().await;
}

#[tokio::test]
async fn rotation_accepts_both_secrets_during_grace_only() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (_user, _model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let rotated = s
        .owner
        .rotate_secret(
            &s.reg.provider_id,
            &RotateSecret {
                grace_secs: Some(100),
            },
        )
        .await
        .unwrap();
    assert_eq!(rotated.previous_key_id, s.reg.key_id);
    assert_ne!(rotated.key_id, s.reg.key_id);
    let new_ring = Keyring::single(
        rotated.key_id.clone(),
        Secret::parse(&rotated.secret).unwrap(),
    );
    let h = http();
    let ev = |seq| {
        serde_json::to_vec(&event(
            &job,
            &s.reg,
            seq,
            JobEventKind::Progress {
                percent: 10,
                stage: None,
            },
        ))
        .unwrap()
    };
    let now = broker.clock().now();
    assert_eq!(
        post_event_raw(&h, &s.reg, &s.ring, "msg_r1", now, &ev(1))
            .await
            .0,
        200
    );
    assert_eq!(
        post_event_raw(&h, &s.reg, &new_ring, "msg_r2", now, &ev(2))
            .await
            .0,
        200
    );
    // Offers during the overlap carry both signatures.
    let (_, user2) = new_user(&api, "second").await;
    let m = user2.upload_model("x.stl", stl()).await.unwrap();
    let mut both = s.ring.clone();
    both.insert(
        rotated.key_id.clone(),
        Secret::parse(&rotated.secret).unwrap(),
        None,
    );
    fake.set_ring(both);
    user2
        .create_job(&CreateJob {
            provider_id: s.reg.provider_id.clone(),
            model_id: m.model_id,
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap();
    let sig = fake
        .state
        .offer_signatures
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    // After the grace period only the new secret is accepted.
    broker.clock().advance(101);
    let now = broker.clock().now();
    let (st, p) = post_event_raw(&h, &s.reg, &s.ring, "msg_r3", now, &ev(3)).await;
    assert_eq!((st, problem_type(&p)), (401, "signature-invalid"), "{p}");
    assert_eq!(
        post_event_raw(&h, &s.reg, &new_ring, "msg_r4", now, &ev(3))
            .await
            .0,
        200
    );
    // A link token signed with the retired key is refused too.
    let old_token = link_token(&s.reg, "acc_late", now);
    let e = s
        .owner
        .link(&s.reg.provider_id, &old_token)
        .await
        .unwrap_err();
    assert_eq!(e.problem().unwrap().extension_str("reason"), Some("key"));
    broker.shutdown().await;
}

#[tokio::test]
async fn per_user_secrets_speak_only_for_their_user() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::User).await;
    assert_eq!(s.reg.secret_scope, SecretScope::User);
    let owner_id = s.owner.me().await.unwrap().user_id;
    assert_eq!(s.reg.bound_user_id, Some(owner_id));
    let (_, other) = new_user(&api, "other").await;
    let m = other.upload_model("x.stl", stl()).await.unwrap();
    let create = CreateJob {
        provider_id: s.reg.provider_id.clone(),
        model_id: m.model_id,
        version: None,
        operation: None,
        params: serde_json::Value::Null,
    };
    assert_eq!(
        kind(&other.create_job(&create).await.unwrap_err()),
        "forbidden"
    );
    let token = link_token(&s.reg, "acc_other", broker.clock().now());
    assert_eq!(
        kind(&other.link(&s.reg.provider_id, &token).await.unwrap_err()),
        "forbidden"
    );
    assert!(fake.state.offers.lock().unwrap().is_empty());
    // The bound user works normally.
    let mine = s.owner.upload_model("mine.stl", stl()).await.unwrap();
    fake.add_account("acc_me");
    s.owner
        .link(
            &s.reg.provider_id,
            &link_token(&s.reg, "acc_me", broker.clock().now()),
        )
        .await
        .unwrap();
    let job = s
        .owner
        .create_job(&CreateJob {
            provider_id: s.reg.provider_id.clone(),
            model_id: mine.model_id,
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Accepted);
    broker.shutdown().await;
}
