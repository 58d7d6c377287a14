use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use super::*;

async fn get(path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = handle(&Method::GET, path, None, &HeaderMap::new());
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    (parts.status, parts.headers, bytes)
}

fn assert_secured(headers: &HeaderMap, what: &str) {
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY, "{what}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{what}");
}

#[tokio::test]
async fn every_page_of_the_app_is_the_index_with_the_policy() {
    let (_, _, index) = get("/dashboard/").await;
    assert!(String::from_utf8_lossy(&index).contains("<script type=\"module\""), "the index loads the app as a module");
    for page in ["/dashboard/", "/dashboard/keys", "/dashboard/claim", "/dashboard/usage/", "/dashboard/a/b"] {
        let (status, headers, body) = get(page).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8", "{page}");
        assert_secured(&headers, page);
        assert_eq!(body, index, "{page}");
    }
}

#[tokio::test]
async fn files_have_their_types_and_unknown_files_are_404_with_the_policy() {
    let (status, headers, body) = get("/dashboard/js/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_secured(&headers, "app.js");
    assert!(!body.is_empty());
    let missing =
        ["/dashboard/nothing.js", "/dashboard/js/../../Cargo.toml", "/dashboard/%2e%2e/src/lib.rs", "/dashboard/.env"];
    for missing in missing {
        let (status, headers, _) = get(missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert_secured(&headers, missing);
    }
}

#[tokio::test]
async fn the_bare_path_redirects_and_only_get_and_head_are_served() {
    let response = handle(&Method::GET, "/dashboard", Some("x=1"), &HeaderMap::new());
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(response.headers()[header::LOCATION], "/dashboard/?x=1");
    let response = handle(&Method::POST, "/dashboard/keys", None, &HeaderMap::new());
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    let response = handle(&Method::HEAD, "/dashboard/keys", None, &HeaderMap::new());
    assert_eq!(response.status(), StatusCode::OK);
    assert!(is_dashboard("/dashboard") && is_dashboard("/dashboard/x"));
    assert!(!is_dashboard("/dashboards") && !is_dashboard("/v1/dashboard"));
}

#[tokio::test]
async fn an_unchanged_file_is_revalidated_with_its_etag() {
    let (_, headers, _) = get("/dashboard/js/app.js").await;
    let etag = headers[header::ETAG].clone();
    let mut conditional = HeaderMap::new();
    conditional.insert(header::IF_NONE_MATCH, etag.clone());
    let response = handle(&Method::GET, "/dashboard/js/app.js", None, &conditional);
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()[header::ETAG], etag);
    conditional.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
    assert_eq!(handle(&Method::GET, "/dashboard/js/app.js", None, &conditional).status(), StatusCode::OK);
}

/// The pages render what the API says as text: no file may reach for the HTML parser or evaluate strings,
/// and the HTML holds no inline script or style (which the policy would refuse anyway).
#[test]
fn no_file_parses_html_from_strings_or_inlines_script_or_style() {
    const FORBIDDEN: &[&str] =
        &["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "javascript:"];
    let mut seen = 0;
    for name in Assets::iter() {
        let file = Assets::get(&name).unwrap();
        let text = String::from_utf8_lossy(&file.data);
        for word in FORBIDDEN {
            assert!(!text.contains(word), "{name} uses {word}");
        }
        assert!(content_type(&name).is_some(), "{name} is of a kind the dashboard does not serve");
        if name.ends_with(".html") {
            assert!(!text.contains("style="), "{name} has an inline style");
            for script in text.split("<script").skip(1) {
                let tag = script.split('>').next().unwrap_or("");
                assert!(tag.contains("src="), "{name} has an inline script");
            }
        }
        seen += 1;
    }
    assert!(seen >= 3, "the dashboard's files are embedded ({seen} found)");
}
