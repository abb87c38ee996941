//! The conformance runner, pointed at the real FixMyPrint over HTTPS: every check passes (its
//! repair picture checked whole), and
//! the funded account is charged exactly four times (the job under test, the parallel job,
//! the job whose input came twice and the job whose input is a presigned URL),
//! also after inputs and offers came again; the four jobs that must fail charge nothing.

use diax_sdk::wire::{ProviderRegistered, Scheme, SecretScope};
use diax_sdk::{KeyId, ProviderId, SigningKey};
use e2e::stack::{Stack, StackOptions};
use e2e::story::{self, ProviderAccount, Quiet};
use fixmyprint::service::accounts::LedgerKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixmyprint_passes_every_conformance_check() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let provider = story::register_provider(&stack, SecretScope::Service, Scheme::V1, &Quiet)
        .await
        .unwrap();
    let mut config = broker_mock::conformance::ConformanceConfig::new(
        format!(
            "{}/diax/jobs",
            stack.provider.base_url().trim_end_matches('/')
        ),
        provider
            .registered
            .secret
            .clone()
            .expect("an hmac-sha256 registration has a secret"),
    );
    config.key_id = provider.registered.key_id.to_string();
    conformance_run(&stack, &provider.registered, config).await;
    stack.shutdown().await;
}

/// The same check list with ed25519 (v1a). The runner plays the broker, so it needs the
/// broker's secret key: FixMyPrint stores a registration whose broker public key is the
/// runner's (what a provider developer does to point a provider at the runner), through the
/// same entry point its registration uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixmyprint_passes_every_conformance_check_with_ed25519() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let own = SigningKey::generate();
    let runner_broker = SigningKey::generate();
    let provider_id = ProviderId::generate();
    let registered = ProviderRegistered {
        events_url: format!(
            "{}/v1/providers/{provider_id}/events",
            stack.broker.base_url()
        ),
        provider_id,
        broker_id: "3diax-mock".into(),
        key_id: KeyId::generate(),
        secret: None,
        secret_scope: SecretScope::Service,
        bound_user_id: None,
        signature_scheme: Scheme::V1a,
        broker_key_id: Some(KeyId::generate()),
        broker_public_key: Some(runner_broker.public_key().to_string()),
    };
    let service = stack.provider.service();
    fixmyprint::service::registration::store_registration(
        service.db(),
        &registered,
        stack.broker.base_url(),
        Some(&own),
    )
    .await
    .unwrap();
    service.reload_keyring().await.unwrap();
    let mut config = broker_mock::conformance::ConformanceConfig::new(
        format!(
            "{}/diax/jobs",
            stack.provider.base_url().trim_end_matches('/')
        ),
        runner_broker.expose(),
    );
    config.provider_public_key = Some(own.public_key().to_string());
    config.key_id = registered.broker_key_id.clone().unwrap().to_string();
    conformance_run(&stack, &registered, config).await;
    stack.shutdown().await;
}

async fn conformance_run(
    stack: &Stack,
    registered: &ProviderRegistered,
    mut config: broker_mock::conformance::ConformanceConfig,
) {
    let base = stack.provider.base_url().trim_end_matches('/').to_owned();
    let signup = format!("{base}/v1/accounts");
    let funded = ProviderAccount::sign_up(stack, &signup, "Funded")
        .await
        .unwrap();
    funded
        .top_up(&format!("{base}/v1/accounts/me/top-up"), 1000)
        .await
        .unwrap();
    let poor = ProviderAccount::sign_up(stack, &signup, "Poor")
        .await
        .unwrap();

    config.provider_id = registered.provider_id.to_string();
    config.broker_id = registered.broker_id.clone();
    config.account = Some(funded.account_id.to_string());
    config.poor_account = Some(poor.account_id.to_string());
    config.extra_root_certs_pem = vec![stack.pki.ca_pem.clone()];
    config.timeout = std::time::Duration::from_secs(120);
    let report = broker_mock::conformance::run(config).await.unwrap();
    println!("{}", report.to_human());
    assert!(report.passed(), "{}", report.to_human());
    assert!(report.skipped().is_empty(), "{}", report.to_human());
    // FixMyPrint's repair picture came with the result and was checked whole: a PNG of the
    // picture's size, on FixMyPrint's origin, refused without the result's credential.
    let picture = &report
        .get(broker_mock::conformance::Check::ResultPicture)
        .unwrap()
        .reason;
    assert!(
        picture.contains("a 1200×992 PNG") && picture.contains("refused without its credential"),
        "{picture}"
    );

    // Four jobs ran to completion: each charged once, nothing left held (the failed jobs
    // released their holds); the poor account untouched.
    let after = funded.view().await.unwrap();
    let ledger = funded.ledger().await.unwrap();
    let captures: Vec<_> = ledger
        .entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Capture)
        .collect();
    assert_eq!(captures.len(), 4, "{:?}", ledger.entries);
    assert_eq!(after.held, 0);
    let charged: i64 = captures.iter().map(|c| c.amount).sum();
    assert_eq!(after.balance, 1000 - charged);
    let poor_after = poor.view().await.unwrap();
    assert_eq!((poor_after.balance, poor_after.held), (0, 0));
}
