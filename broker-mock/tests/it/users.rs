//! Users, groups and membership.

use diax_sdk::*;

use crate::common::*;

#[tokio::test]
async fn users_groups_and_membership() {
    let (broker, api) = start(test_config()).await;
    let (alice_created, alice) = new_user(&api, "alice").await;
    let (bob_created, bob) = new_user(&api, "bob").await;
    assert!(alice_created.api_key.starts_with("bk_"));
    assert!(alice_created.notification_secret.is_none());
    let me = alice.me().await.unwrap();
    assert_eq!(me.user_id, alice_created.user_id);
    assert_eq!(me.pending_notifications, 0);
    assert_eq!(alice.pending_count().await.unwrap(), 0);

    let group = alice.create_group("makers").await.unwrap();
    assert_eq!(group.members, vec![alice_created.user_id.clone()]);
    let e = bob
        .add_member(&group.group_id, &bob_created.user_id)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "forbidden");
    let group = alice
        .add_member(&group.group_id, &bob_created.user_id)
        .await
        .unwrap();
    assert_eq!(group.members.len(), 2);
    // Idempotent.
    let group = alice
        .add_member(&group.group_id, &bob_created.user_id)
        .await
        .unwrap();
    assert_eq!(group.members.len(), 2);
    assert_eq!(bob.me().await.unwrap().groups, vec![group.group_id.clone()]);
    let e = alice
        .add_member(
            &GroupId::parse("grp_unknown").unwrap(),
            &bob_created.user_id,
        )
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    let e = alice
        .add_member(&group.group_id, &UserId::parse("usr_nobody").unwrap())
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    broker.shutdown().await;
}
