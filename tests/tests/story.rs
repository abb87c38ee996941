//! The seed story end to end over HTTPS: broker mock + FixMyPrint in this process, a real
//! broken STL of more than 100k facets, every step asserted, and the repaired model judged by
//! an independent implementation (Python trimesh).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use diax_sdk::wire::{CreateJob, JobState, Scheme, SecretScope};
use diax_sdk::{ProblemType, Quote};
use e2e::stack::{ProviderDb, Stack, StackOptions};
use e2e::story::{self, ProviderAccount, Quiet};
use fixmyprint::heal::generate;
use fixmyprint::heal::picture::Image;
use fixmyprint::service::accounts::LedgerKind;

/// `{watertight, winding_consistent, volume, bodies, inward_bodies}` of an STL file,
/// according to trimesh.
fn trimesh_verdict(path: &Path) -> serde_json::Value {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/ensure-venv.sh");
    let out = Command::new("bash")
        .arg(&venv)
        .output()
        .expect("run ensure-venv.sh");
    assert!(
        out.status.success(),
        "ensure-venv.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let script = r#"
import json, sys, trimesh
m = trimesh.load_mesh(sys.argv[1], process=True)
bodies = m.split(only_watertight=False)
print(json.dumps({"watertight": bool(m.is_watertight), "winding_consistent": bool(m.is_winding_consistent),
                  "volume": float(m.volume), "bodies": len(bodies),
                  "inward_bodies": sum(1 for b in bodies if b.volume < 0)}))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "trimesh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn full_story(db: ProviderDb, scheme: Scheme) {
    let stack = Stack::start(StackOptions {
        provider_db: db,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let generated = generate::model(11, 120_000, &generate::Defects::all());
    let outcome = story::play(&stack, "gareth.stl", generated.stl.clone(), scheme, &Quiet)
        .await
        .unwrap();
    assert_eq!(outcome.provider.registered.signature_scheme, scheme);
    // With ed25519 nothing secret crossed the wire at registration, and the link token is EdDSA.
    assert_eq!(
        outcome.provider.registered.secret.is_none(),
        scheme == Scheme::V1a
    );
    let header = outcome.link_token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(&base64_decode(header)).unwrap();
    assert_eq!(header["alg"], scheme.jwt_alg());

    // Step 2: the first refusal names where to register, and that is FixMyPrint's sign-up.
    assert!(outcome.first_refusal.is(ProblemType::AccountRequired));
    assert_eq!(outcome.first_refusal.status, 401);
    assert!(
        outcome
            .first_refusal
            .register_url()
            .unwrap()
            .starts_with(stack.provider.base_url())
    );
    // Insufficient balance: 402 with a quote; the quote is what was charged.
    let quote: Quote = outcome.payment_refusal.quote().unwrap();
    assert!(quote.amount > 0);
    // Step 3: the link names Gareth's FixMyPrint account.
    assert_eq!(outcome.link.provider_account, outcome.account.account_id);
    // Steps 4-6: completed, result stored as a new version linked to the source.
    assert_eq!(outcome.job.state, JobState::Completed);
    let result = outcome.job.result.clone().unwrap();
    assert_eq!(result.model_id, outcome.model.model_id);
    assert_eq!(result.version, 2);
    let stored = outcome.gareth.client.model(&result.model_id).await.unwrap();
    let v2 = &stored.versions[1];
    let source = v2.source.as_ref().unwrap();
    assert_eq!(source.from_version, 1);
    assert_eq!(&source.provider_id, outcome.provider.id());
    assert_eq!(v2.sha256, diax_sdk::util::sha256_hex(&outcome.repaired));
    // The repair picture came with the result and Gareth sees it at the broker: a real PNG
    // whose "after" views show the filled holes in the hole colour, and whose "before" views
    // show none.
    assert!(v2.report_url.is_some(), "{v2:?}");
    let png = outcome
        .gareth
        .client
        .report(&result.model_id, 2)
        .await
        .unwrap();
    assert!(png.starts_with(&diax_sdk::wire::PNG_SIGNATURE));
    let picture = e2e::browser::Screenshot::decode(&png).unwrap();
    let hole_pixels = |row: usize| -> usize {
        (0..3)
            .map(|col| {
                let (x0, y0, side) = Image::panel_rect(col, row);
                (y0..y0 + side)
                    .flat_map(|y| (x0..x0 + side).map(move |x| (x, y)))
                    .filter(|&(x, y)| {
                        let [r, g, b] = picture.pixel(x, y).map(i32::from);
                        r - g.max(b) > 45 && (g - b).abs() < 30
                    })
                    .count()
            })
            .sum()
    };
    assert_eq!(hole_pixels(0), 0, "hole colour in the before views");
    assert!(
        hole_pixels(1) > 50,
        "no filled hole shown in the after views"
    );
    // Step 7: notified by signed callback (exactly one completion) and pending on the next request.
    let inbox = outcome.gareth.inbox.as_ref().unwrap();
    let completions: Vec<_> = inbox
        .received()
        .into_iter()
        .filter(|n| n.job_id == outcome.job.job_id && n.state == JobState::Completed)
        .collect();
    assert_eq!(completions.len(), 1);
    assert_eq!(completions[0].result.as_ref(), Some(&result));
    assert!(outcome.pending_on_next_request >= 1);
    let pending = outcome.gareth.client.notifications().await.unwrap();
    assert!(
        pending
            .notifications
            .iter()
            .any(|n| n.job_id == outcome.job.job_id && n.event == "job.completed")
    );
    // Charged exactly once, the quoted amount, nothing left held.
    let captures: Vec<_> = outcome
        .ledger
        .entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Capture)
        .collect();
    assert_eq!(captures.len(), 1, "ledger: {:?}", outcome.ledger.entries);
    assert_eq!(captures[0].amount, quote.amount);
    assert_eq!(outcome.account_after.held, 0);
    assert_eq!(
        outcome.account_after.balance,
        quote.amount * 4 - quote.amount
    );
    // The model Gareth downloads is watertight, consistently wound and outward, per trimesh.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repaired.stl");
    std::fs::write(&path, &outcome.repaired).unwrap();
    let verdict = trimesh_verdict(&path);
    assert_eq!(verdict["watertight"], true, "{verdict}");
    assert_eq!(verdict["winding_consistent"], true, "{verdict}");
    // Every real shell kept, each outward except the one true cavity, volume within 0.5 %.
    let clean = &generated.clean;
    let cavities = clean.shells.iter().filter(|s| s.cavity).count();
    assert_eq!(
        verdict["bodies"].as_u64().unwrap() as usize,
        clean.shells.len(),
        "{verdict}"
    );
    assert_eq!(
        verdict["inward_bodies"].as_u64().unwrap() as usize,
        cavities,
        "{verdict}"
    );
    let volume = verdict["volume"].as_f64().unwrap();
    assert!(
        (volume - clean.volume).abs() / clean.volume < 0.005,
        "{verdict} vs clean volume {}",
        clean.volume
    );
    // The broker's message log saw the whole exchange.
    let log = stack
        .broker_api
        .messages(&broker_mock::client::MessageFilter {
            job_id: Some(outcome.job.job_id.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(log.messages.len() >= 5, "{} messages", log.messages.len());
    stack.shutdown().await;
}

// The story runs once per signature scheme and once per database, in two runs rather than
// four: the scheme and the database are independent of each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_story_over_https_with_sqlite_and_hmac() {
    full_story(ProviderDb::Sqlite, Scheme::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_story_over_https_with_postgres_and_ed25519() {
    full_story(ProviderDb::Postgres, Scheme::V1a).await;
}

/// Sets up registration, Gareth, a linked and funded account, and an uploaded model.
async fn linked_gareth(
    stack: &Stack,
    scope: SecretScope,
    scheme: Scheme,
    model: Vec<u8>,
) -> (
    story::RegisteredProvider,
    story::BrokerUser,
    ProviderAccount,
    diax_sdk::ModelId,
) {
    let provider = story::register_provider(stack, scope, scheme, &Quiet)
        .await
        .unwrap();
    let gareth = match scope {
        // The per-user secret is bound to the user who registered: Gareth runs it himself.
        SecretScope::User => story::BrokerUser {
            client: stack.broker_api.user(provider.operator_key.clone()),
            user_id: stack
                .broker_api
                .user(provider.operator_key.clone())
                .me()
                .await
                .unwrap()
                .user_id,
            inbox: None,
        },
        SecretScope::Service => story::broker_user(stack, "Gareth", false).await.unwrap(),
    };
    let register_url = format!("{}/v1/accounts", stack.provider.base_url());
    let account = ProviderAccount::sign_up(stack, &register_url, "Gareth")
        .await
        .unwrap();
    account
        .top_up(
            &format!("{}/v1/accounts/me/top-up", stack.provider.base_url()),
            10_000,
        )
        .await
        .unwrap();
    let grant = account.link_token().await.unwrap();
    gareth
        .client
        .link(provider.id(), &grant.token)
        .await
        .unwrap();
    let model = gareth.client.upload_model("m.stl", model).await.unwrap();
    (provider, gareth, account, model.model_id)
}

async fn run_job(
    gareth: &story::BrokerUser,
    provider: &diax_sdk::ProviderId,
    model: &diax_sdk::ModelId,
) -> diax_sdk::wire::Job {
    let job = gareth
        .client
        .create_job(&CreateJob {
            provider_id: provider.clone(),
            model_id: model.clone(),
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap();
    // Accepted, and possibly already further: the broker delivers the first job.input before
    // it answers, so a fast provider may have reported progress, or (for a model it cannot
    // heal) the failure, by then. The caller checks the end state.
    assert!(
        matches!(
            job.state,
            JobState::Accepted | JobState::Running | JobState::Completed | JobState::Failed
        ),
        "{job:?}"
    );
    story::wait_for_job(&gareth.client, &job, Duration::from_secs(120), &Quiet)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_secret_serves_only_its_user() {
    // The open-source variant with ed25519: its keys are bound to the one user, and the
    // broker holds only its public key.
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let (provider, owner, _account, model) = linked_gareth(
        &stack,
        SecretScope::User,
        Scheme::V1a,
        generate::broken_model(3, 20_000),
    )
    .await;
    assert_eq!(provider.registered.secret_scope, SecretScope::User);
    assert_eq!(provider.registered.signature_scheme, Scheme::V1a);
    let job = run_job(&owner, provider.id(), &model).await;
    assert_eq!(job.state, JobState::Completed, "{job:?}");

    // Another user may not use a provider whose secret is bound to someone else.
    let other = story::broker_user(&stack, "Somebody else", false)
        .await
        .unwrap();
    let theirs = other
        .client
        .upload_model("x.stl", generate::broken_model(4, 5_000))
        .await
        .unwrap();
    let err = other
        .client
        .create_job(&CreateJob {
            provider_id: provider.id().clone(),
            model_id: theirs.model_id,
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap_err();
    assert!(err.problem().unwrap().is(ProblemType::Forbidden), "{err}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_in_the_middle_of_the_story() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let (provider, gareth, account, model) = linked_gareth(
        &stack,
        SecretScope::Service,
        Scheme::V1,
        generate::broken_model(5, 20_000),
    )
    .await;
    let first = run_job(&gareth, provider.id(), &model).await;
    assert_eq!(first.state, JobState::Completed);

    // FixMyPrint rotates from its shared secret to ed25519 keys (a migration); the old secret
    // stays valid for a grace period, so both sides hold v1 and v1a keys.
    let service = stack.provider.service();
    let rotated = fixmyprint::service::rotate(
        service.db(),
        service.http(),
        &provider.operator_key,
        Some(3600),
        Some(Scheme::V1a),
    )
    .await
    .unwrap();
    service.reload_keyring().await.unwrap();
    assert_ne!(rotated.key_id, provider.registered.key_id);
    assert_eq!(rotated.previous_key_id, provider.registered.key_id);
    assert_eq!(rotated.signature_scheme, Scheme::V1a);
    assert!(rotated.secret.is_none() && rotated.broker_public_key.is_some());
    // Tokens are now issued with the new key (EdDSA), and the broker accepts them.
    let grant = account.link_token().await.unwrap();
    let header = grant.token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(&base64_decode(header)).unwrap();
    assert_eq!(header["kid"], rotated.key_id.as_str());
    assert_eq!(header["alg"], "EdDSA");
    gareth
        .client
        .link(provider.id(), &grant.token)
        .await
        .unwrap();
    // Offers and callbacks (each signed with both schemes' keys) still flow.
    let second = run_job(&gareth, provider.id(), &model).await;
    assert_eq!(second.state, JobState::Completed, "{second:?}");
    stack.shutdown().await;
}

fn base64_decode(segment: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_stl_fails_and_nothing_is_charged() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let (provider, gareth, account, model) = linked_gareth(
        &stack,
        SecretScope::Service,
        Scheme::V1,
        b"solid junk\n this is not a facet\n".to_vec(),
    )
    .await;
    let job = run_job(&gareth, provider.id(), &model).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let problem = job.problem.unwrap();
    assert!(problem.is(ProblemType::ModelInvalid), "{problem:?}");
    let after = account.view().await.unwrap();
    assert_eq!((after.balance, after.held), (10_000, 0));
    let ledger = account.ledger().await.unwrap();
    assert!(
        ledger.entries.iter().all(|e| e.kind != LedgerKind::Capture),
        "{:?}",
        ledger.entries
    );
    assert!(
        ledger.entries.iter().any(|e| e.kind == LedgerKind::Release),
        "{:?}",
        ledger.entries
    );
    // No new version was stored.
    assert_eq!(gareth.client.model(&model).await.unwrap().versions.len(), 1);
    stack.shutdown().await;
}
