//! Key caps under concurrent creation on all three processes: creations spread round-robin over them,
//! far more than the caps allow, into one account (cap N) and into one project (cap M) of another account,
//! all at once. Never more keys than a cap; every refusal a 409 naming the cap.

use serde_json::{Value, json};

use super::*;

const ACCOUNT_CAP: u64 = 10;
const PROJECT_CAP: u64 = 4;
const ATTEMPTS: usize = 36;

/// Active keys of the account `token` belongs to, read on process `i`.
async fn active_keys(cluster: &Cluster, i: usize, token: &str) -> u64 {
    let (status, list) = cluster.api(i, http::Method::GET, "/v1/auth/keys?limit=1000", token, None).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().iter().filter(|k| k["revoked_at"].is_null()).count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_caps_hold_under_concurrent_creation_on_three_processes() {
    let Some(services) = services("the three-process key cap test") else { return };
    let cluster = Cluster::start(&services, &services.redis, "caps", "").await;
    let capped = cluster.account("capped@example.com", ACCOUNT_CAP as u32).await;
    let roomy = cluster.account("roomy@example.com", 1000).await;
    let (status, project) = cluster
        .api(0, http::Method::POST, "/v1/projects", &roomy, Some(json!({"name": "mobile", "key_cap": PROJECT_CAP})))
        .await;
    assert_eq!(status, 201, "{project}");
    let project = project["id"].as_str().unwrap().to_owned();

    // Both races at once: attempt i on process i mod 3, alternating between the account and the project.
    let mut tasks = Vec::new();
    for i in 0..2 * ATTEMPTS {
        let (token, body) = if i % 2 == 0 {
            (capped.clone(), json!({"name": format!("a-{i}")}))
        } else {
            (roomy.clone(), json!({"name": format!("p-{i}"), "project_id": project}))
        };
        let url = cluster.url(i % 3, "/v1/auth/keys");
        tasks.push(tokio::spawn(async move {
            let auth = format!("Bearer {token}");
            let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
            let reply = post(&url, &headers, &body.to_string()).await;
            (i % 2 == 1, reply.status.as_u16(), reply.json())
        }));
    }
    let (mut account_made, mut project_made) = (0u64, 0u64);
    for task in tasks {
        let (into_project, status, body): (bool, u16, Value) = task.await.unwrap();
        match (status, into_project) {
            (201, false) => account_made += 1,
            (201, true) => project_made += 1,
            (409, false) => assert_eq!(body["error"]["code"], "key_cap_reached", "{body}"),
            (409, true) => assert_eq!(body["error"]["code"], "project_key_cap_reached", "{body}"),
            _ => panic!("{status}: {body}"),
        }
    }
    eprintln!(
        "{ATTEMPTS} concurrent creations on three processes into an account of cap {ACCOUNT_CAP}: {account_made} made; \
         {ATTEMPTS} into a project of cap {PROJECT_CAP}: {project_made} made"
    );
    // More attempts than either cap, and nothing else refuses them: each cap is reached and never passed.
    assert_eq!(account_made, ACCOUNT_CAP);
    assert_eq!(project_made, PROJECT_CAP);
    // What the store holds agrees, read on another process than most creations.
    assert_eq!(active_keys(&cluster, 1, &capped).await, ACCOUNT_CAP);
    assert_eq!(active_keys(&cluster, 2, &roomy).await, PROJECT_CAP);
    let (status, project) = cluster.api(2, http::Method::GET, &format!("/v1/projects/{project}"), &roomy, None).await;
    assert_eq!(status, 200, "{project}");
    assert_eq!(project["active_keys"], PROJECT_CAP, "{project}");
}
