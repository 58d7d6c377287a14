//! The management API's login against the real binary: the operator token needs a session secret
//! beside it.

use crate::process::*;

#[test]
fn an_operator_token_without_a_session_secret_is_refused_at_start() {
    let setup = Setup::new("http://127.0.0.1:9", "");
    for args in [&["check-config"][..], &["serve"]] {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&setup.config)
            .args(args)
            .env("TOLLGATE_ADMIN_TOKEN", "operator-token-0123456789abcdef")
            .env_remove("TOLLGATE_SESSION_SECRET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("TOLLGATE_SESSION_SECRET"), "{args:?}: {err}");
    }
}
