//! The message log endpoint and the inspector page.

use broker_mock::client::MessageFilter;

use crate::common::*;

#[tokio::test]
async fn messages_endpoint_and_inspector_page() {
    let (broker, api) = start(test_config()).await;
    new_user(&api, "x").await;
    let html = http()
        .get(format!("{}/inspector", broker.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 200);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.text().await.unwrap().contains("/v1/messages"));
    let log = api
        .messages(&MessageFilter {
            limit: Some(1),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(log.messages.len(), 1);
    assert_eq!(log.messages[0].endpoint, "/v1/users");
    assert_eq!(log.messages[0].status, Some(201));
    broker.shutdown().await;
}
