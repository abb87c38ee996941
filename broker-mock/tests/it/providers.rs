//! Provider registration, the registry, secret rotation with a grace period, and per-user secrets.

use diax_sdk::wire::*;
use diax_sdk::*;

use crate::common::*;

#[tokio::test]
async fn registration_registry_and_refusals() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    assert!(s.reg.secret.as_deref().unwrap().starts_with("whsec_"));
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
                public_key: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(rotated.previous_key_id, s.reg.key_id);
    assert_ne!(rotated.key_id, s.reg.key_id);
    let new_ring = Keyring::single(
        rotated.key_id.clone(),
        Secret::parse(rotated.secret.as_deref().unwrap()).unwrap(),
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
        Secret::parse(rotated.secret.as_deref().unwrap()).unwrap(),
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

#[tokio::test]
async fn ed25519_registration_signs_both_ways_with_no_shared_secret() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register_ed25519(&api, &fake, SecretScope::Service).await;
    assert_eq!(s.reg.signature_scheme, Scheme::V1a);
    assert!(s.reg.secret.is_none());
    assert_ne!(s.reg.broker_key_id.as_ref(), Some(&s.reg.key_id));

    // The offer arrives signed v1a with the broker's key; the fake verified it with the
    // broker's public key, and the job was accepted on an EdDSA-linked account.
    let (_user, _model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let sig = fake
        .state
        .offer_signatures
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert!(sig.starts_with("v1a,") && !sig.contains(' '), "{sig}");

    // Events signed with the provider's own key are accepted; with another key, or with
    // an HMAC secret, they are refused with the problem types of section 2.
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
    let (st, p) = post_event_raw(&h, &s.reg, &s.ring, "msg_e1", now, &ev(1)).await;
    assert_eq!(st, 200, "{p}");
    let stranger = Keyring::single(s.reg.key_id.clone(), SigningKey::generate());
    let (st, p) = post_event_raw(&h, &s.reg, &stranger, "msg_e2", now, &ev(2)).await;
    assert_eq!((st, problem_type(&p)), (401, "signature-invalid"), "{p}");
    let hmac = Keyring::single(s.reg.key_id.clone(), Secret::generate());
    let (st, p) = post_event_raw(&h, &s.reg, &hmac, "msg_e3", now, &ev(2)).await;
    assert_eq!((st, problem_type(&p)), (401, "signature-invalid"), "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("only v1 signatures"),
        "{p}"
    );

    // A link token forged with HS256 keyed by the public key's bytes is refused for its
    // algorithm; one signed by another ed25519 key for its signature.
    let public_bytes = PublicKey::parse(&s.ring.get(&s.reg.key_id).map_or_else(
        || unreachable!(),
        |k| match &k.material {
            KeyMaterial::Ed25519(own) => own.public_key().to_string(),
            _ => unreachable!(),
        },
    ))
    .unwrap()
    .to_bytes();
    let confused = LinkTokenIssuer::new(
        s.reg.provider_id.clone(),
        s.reg.broker_id.clone(),
        s.reg.key_id.clone(),
        Secret::from_bytes(&public_bytes).unwrap(),
    )
    .issue_at(&AccountId::parse("acc_x").unwrap(), now)
    .unwrap()
    .token;
    let e = s
        .owner
        .link(&s.reg.provider_id, &confused)
        .await
        .unwrap_err();
    assert_eq!(
        e.problem().unwrap().extension_str("reason"),
        Some("algorithm")
    );
    let other = LinkTokenIssuer::new(
        s.reg.provider_id.clone(),
        s.reg.broker_id.clone(),
        s.reg.key_id.clone(),
        SigningKey::generate(),
    )
    .issue_at(&AccountId::parse("acc_x").unwrap(), now)
    .unwrap()
    .token;
    let e = s.owner.link(&s.reg.provider_id, &other).await.unwrap_err();
    assert_eq!(
        e.problem().unwrap().extension_str("reason"),
        Some("signature")
    );

    // Rotation with a new public key: both key pairs work during the grace period, and
    // offers carry both broker signatures.
    let new_own = SigningKey::generate();
    let rotated = s
        .owner
        .rotate_secret(
            &s.reg.provider_id,
            &RotateSecret {
                grace_secs: Some(100),
                public_key: Some(new_own.public_key().to_string()),
            },
        )
        .await
        .unwrap();
    assert_eq!(rotated.previous_key_id, s.reg.key_id);
    assert!(rotated.secret.is_none());
    let mut new_ring = Keyring::single(rotated.key_id.clone(), new_own);
    new_ring.insert(
        rotated.broker_key_id.clone().unwrap(),
        PublicKey::parse(rotated.broker_public_key.as_deref().unwrap()).unwrap(),
        None,
    );
    let (st, p) = post_event_raw(&h, &s.reg, &new_ring, "msg_e4", now, &ev(2)).await;
    assert_eq!(st, 200, "{p}");
    let (st, p) = post_event_raw(&h, &s.reg, &s.ring, "msg_e5", now, &ev(3)).await;
    assert_eq!(st, 200, "{p}");
    broker.clock().advance(101);
    let now = broker.clock().now();
    let (st, p) = post_event_raw(&h, &s.reg, &s.ring, "msg_e6", now, &ev(4)).await;
    assert_eq!((st, problem_type(&p)), (401, "signature-invalid"), "{p}");
    broker.shutdown().await;
}

#[tokio::test]
async fn ed25519_registration_refuses_bad_keys() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let (created, owner) = new_user(&api, "owner").await;
    let group = owner.create_group("g").await.unwrap();
    let small_order = format!("whpk_{}", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let secret_key = SigningKey::generate().expose();
    for (scheme, key, why) in [
        (Scheme::V1a, None, "needs the provider's public_key"),
        (Scheme::V1a, Some("whpk_AAAA".to_owned()), "public_key"),
        (Scheme::V1a, Some(small_order), "large order"),
        (Scheme::V1a, Some(secret_key), "whpk_"),
        (
            Scheme::V1,
            Some(SigningKey::generate().public_key().to_string()),
            "only with signature_scheme ed25519",
        ),
    ] {
        let mut req = register_req(&group.group_id, &fake.job_url(), SecretScope::Service);
        req.signature_scheme = scheme;
        req.public_key = key.clone();
        let e = owner.register_provider(&req).await.unwrap_err();
        assert_eq!(kind(&e), "invalid-request", "{key:?}");
        let detail = e.problem().unwrap().detail.clone().unwrap_or_default();
        assert!(detail.contains(why), "{detail}");
        // The secret key never shows in the answer.
        if let Some(k) = &key {
            assert!(!detail.contains(&k[5..]) || k.len() < 12, "{detail}");
        }
    }
    // An unknown scheme name is a bad request body.
    let mut body = serde_json::to_value(register_req(
        &group.group_id,
        &fake.job_url(),
        SecretScope::Service,
    ))
    .unwrap();
    body["signature_scheme"] = "rsa".into();
    let (st, _, p) = raw(
        &http(),
        reqwest::Method::POST,
        format!("{}/v1/providers", broker.base_url()),
        Some(&created.api_key),
        Some("application/json"),
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!((st, problem_type(&p)), (400, "invalid-request"), "{p}");
    broker.shutdown().await;
}
