//! Offers arriving together (so that the intake writer commits several in one
//! transaction): a repeated offer is one job, an offer the balance cannot cover is refused
//! without failing the others, and every answer is what the database says.

use std::collections::HashSet;

use crate::support::*;
use diax_sdk::MessageId;
use diax_sdk::wire::{BrokerMessage, JobAccepted};
use futures_util::future::join_all;
use serde_json::Value;

/// 50 + 30 × 10 = 350 per offer at the test prices.
const SIZE: u64 = 1024 * 1024 * 30;
const PRICE: i64 = 350;

async fn offers_together(backend: Backend) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    register(&provider, &broker).await;
    let base = provider.base_url().to_owned();
    // `rich` can pay every offer; `poor` two of five; `twice` is offered one job ten times.
    let rich = create_account(&provider, "rich").await;
    top_up(&provider, &rich.api_key, 20 * PRICE).await;
    let poor = create_account(&provider, "poor").await;
    top_up(&provider, &poor.api_key, 2 * PRICE + PRICE / 2).await;
    let twice = create_account(&provider, "twice").await;
    top_up(&provider, &twice.api_key, 5 * PRICE).await;

    let repeated = BrokerMessage::Offer(broker.offer(Some(&twice.account_id), SIZE));
    let same_id = MessageId::generate();
    let mut sends: Vec<(&'static str, MessageId, BrokerMessage)> = Vec::new();
    for i in 0..10 {
        // Ten deliveries of one offer: seven as new messages, three under one message id.
        let id = if i < 7 {
            MessageId::generate()
        } else {
            same_id.clone()
        };
        sends.push(("twice", id, repeated.clone()));
    }
    for _ in 0..5 {
        let offer = broker.offer(Some(&poor.account_id), SIZE);
        sends.push(("poor", MessageId::generate(), BrokerMessage::Offer(offer)));
    }
    for _ in 0..10 {
        let offer = broker.offer(Some(&rich.account_id), SIZE);
        sends.push(("rich", MessageId::generate(), BrokerMessage::Offer(offer)));
    }
    let (provider_ref, broker_ref) = (&provider, &broker);
    let answers = join_all(sends.iter().map(|(who, id, msg)| async move {
        let (status, _, body) = send_signed(provider_ref, broker_ref, id, msg).await;
        (*who, status, body)
    }))
    .await;

    let of = |who: &str| -> Vec<(u16, Value)> {
        answers
            .iter()
            .filter(|(w, _, _)| *w == who)
            .map(|(_, s, b)| (*s, b.clone()))
            .collect()
    };
    // One job for the ten deliveries, held once.
    let twice_jobs: HashSet<String> = of("twice")
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 202, "{body}");
            let acc: JobAccepted = serde_json::from_value(body).unwrap();
            acc.provider_job_id.to_string()
        })
        .collect();
    assert_eq!(twice_jobs.len(), 1, "{twice_jobs:?}");
    // Two of five for the poor account, refused with its real balance; none failed.
    let mut poor_statuses: Vec<u16> = of("poor").iter().map(|(s, _)| *s).collect();
    poor_statuses.sort_unstable();
    assert_eq!(poor_statuses, [202, 202, 402, 402, 402]);
    for (status, body) in of("poor") {
        if status == 402 {
            assert_eq!(body["balance"], PRICE / 2, "{body}");
        }
    }
    // Every offer of the rich account, each its own job.
    let rich_jobs: HashSet<String> = of("rich")
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 202, "{body}");
            body["provider_job_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(rich_jobs.len(), 10);

    // The money agrees with the answers, ledger and account row alike.
    for (account, held, balance, holds) in [
        (&twice, PRICE, 4 * PRICE, 1),
        (&poor, 2 * PRICE, PRICE / 2, 2),
        (&rich, 10 * PRICE, 10 * PRICE, 10),
    ] {
        let (_, me) = get_json(&format!("{base}/v1/accounts/me"), Some(&account.api_key)).await;
        assert_eq!(
            (me["held"].as_i64(), me["balance"].as_i64()),
            (Some(held), Some(balance)),
            "{me}"
        );
        let (_, ledger) = get_json(
            &format!("{base}/v1/accounts/me/ledger"),
            Some(&account.api_key),
        )
        .await;
        let n = ledger["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "hold")
            .count();
        assert_eq!(n, holds, "{ledger}");
    }

    // Redeliveries are answered as the first delivery was, refusals included.
    for (who, id, msg) in &sends {
        let (status, _, body) = send_signed(&provider, &broker, id, msg).await;
        let first = answers
            .iter()
            .zip(&sends)
            .find(|(_, (_, i, _))| i == id)
            .map(|((_, s, b), _)| (*s, b.clone()))
            .unwrap();
        if *who == "twice" {
            assert_eq!(status, 202);
            assert_eq!(body["provider_job_id"], first.1["provider_job_id"]);
        } else {
            assert_eq!((status, &body), (first.0, &first.1), "{who}");
        }
    }
    provider.shutdown().await;
}
both_backends!(offers_together);
