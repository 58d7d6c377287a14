//! Accounts and projects on every backend.

use super::{Subject, run};
use crate::auth::keys::KeyKind;
use crate::store::{NewAccount, NewKey, NewProject, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_created_found_paged_and_changed() {
    run("accounts", |s: Subject| async move {
        let a = s.account("acct_a", 4).await;
        let b = s.account("acct_b", 4).await;
        let taken = NewAccount {
            id: "acct_c".into(),
            email: "acct_a@example.com".into(),
            password_hash: "h".into(),
            plan: "default".into(),
            key_cap: 1,
            created_at: 2,
        };
        assert!(matches!(s.store.create_account(taken).await, Err(StoreError::Conflict(_))), "the email is taken");
        let ids: Vec<_> = s.store.list_accounts().await.unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(ids, ["default", "trial", a.as_str(), b.as_str()]);
        let page = s.store.accounts_page(Some(a.clone()), 10).await.unwrap().unwrap();
        assert_eq!(page.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [b.as_str()]);
        assert!(s.store.accounts_page(Some("nobody".into()), 10).await.unwrap().is_none());
        assert_eq!(s.store.accounts_page(None, 1).await.unwrap().unwrap().len(), 1);

        let (found, hash) = s.store.account_for_login("acct_a@example.com".into()).await.unwrap().unwrap();
        assert_eq!((found.id.as_str(), hash.as_str(), found.key_cap), (a.as_str(), "hash", 4));
        assert!(s.store.account_for_login("nobody@example.com".into()).await.unwrap().is_none());
        assert_eq!(s.store.password_hash(a.clone()).await.unwrap().as_deref(), Some("hash"));

        assert!(s.store.update_account(a.clone(), "pro".into(), 9).await.unwrap());
        assert!(!s.store.update_account("nobody".into(), "pro".into(), 9).await.unwrap());
        assert_eq!(s.store.end_tokens(a.clone()).await.unwrap(), Some(1));
        assert_eq!(s.store.set_password(a.clone(), "new".into()).await.unwrap(), Some(2));
        assert_eq!(s.store.set_disabled(a.clone(), true).await.unwrap(), Some(3));
        assert_eq!(s.store.end_tokens("nobody".into()).await.unwrap(), None);
        let now = s.store.account(a.clone()).await.unwrap().unwrap();
        assert_eq!((now.plan.as_str(), now.key_cap, now.token_epoch, now.disabled), ("pro", 9, 3, true));
        assert_eq!(s.store.password_hash(a).await.unwrap().as_deref(), Some("new"));
        assert!(s.store.account("nobody".into()).await.unwrap().is_none());
        s.store.ping().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_hold_keys_under_their_own_cap() {
    run("projects", |s: Subject| async move {
        let account = s.account("acct_p", 10).await;
        let new = |id: &str, name: &str| NewProject {
            id: id.into(),
            account: account.clone(),
            name: name.into(),
            key_cap: 1,
            created_at: 3,
        };
        s.store.create_project(new("prj_aaaaaaaaaaaa", "web")).await.unwrap();
        let dup = s.store.create_project(new("prj_bbbbbbbbbbbb", "web")).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        s.store.create_project(new("prj_bbbbbbbbbbbb", "cli")).await.unwrap();

        let in_project = |name: &str, project: &str| {
            let key = NewKey { account: account.clone(), project: Some(project.into()), ..NewKey::live(name, 4) };
            s.key(KeyKind::Live, key).1
        };
        s.store.create_key_within_cap(in_project("k1", "prj_aaaaaaaaaaaa"), 4).await.unwrap();
        let full = s.store.create_key_within_cap(in_project("k2", "prj_aaaaaaaaaaaa"), 4).await;
        assert!(matches!(full, Err(StoreError::ProjectKeyCapReached(1))), "{full:?}");
        let unknown = s.store.create_key_within_cap(in_project("k3", "prj_cccccccccccc"), 4).await;
        assert!(matches!(unknown, Err(StoreError::UnknownProject)), "{unknown:?}");

        let projects = s.store.projects(account.clone(), 5).await.unwrap();
        let got: Vec<_> = projects.iter().map(|p| (p.name.as_str(), p.active_keys)).collect();
        assert_eq!(got, [("web", 1), ("cli", 0)]);
        assert!(s.store.update_project("prj_aaaaaaaaaaaa".into(), "site".into(), 2).await.unwrap());
        let taken = s.store.update_project("prj_bbbbbbbbbbbb".into(), "site".into(), 2).await;
        assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
        let site = s.store.project("prj_aaaaaaaaaaaa".into(), 5).await.unwrap().unwrap();
        assert_eq!((site.name.as_str(), site.key_cap, site.active_keys), ("site", 2, 1));
        s.store.create_key_within_cap(in_project("k4", "prj_aaaaaaaaaaaa"), 4).await.unwrap();

        let busy = s.store.delete_project("prj_aaaaaaaaaaaa".into(), 5).await;
        assert!(matches!(busy, Err(StoreError::ProjectHasKeys(2))), "{busy:?}");
        assert!(s.store.delete_project("prj_bbbbbbbbbbbb".into(), 5).await.unwrap());
        assert!(!s.store.delete_project("prj_bbbbbbbbbbbb".into(), 5).await.unwrap(), "gone already");
        assert!(s.store.project("prj_bbbbbbbbbbbb".into(), 5).await.unwrap().is_none());
    })
    .await;
}
