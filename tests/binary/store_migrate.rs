//! `tollgate store migrate` and `check-config` on a store: the SQLite file is brought up to date; on
//! PostgreSQL (when `TOLLGATE_TEST_POSTGRES` holds a URL) the migrations run once, a second run applies none,
//! `check-config` connects and counts them, and neither a report nor a connection failure shows the URL's
//! password.

use std::process::Command;

use crate::process::*;

const CANARY: &str = "pw-canary-7d1c4e";

fn migrate(config: &std::path::Path, url: Option<&str>) -> (bool, String, String) {
    run(config, url, &["store", "migrate"])
}

fn run(config: &std::path::Path, url: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(BIN);
    command.args(["--config", config.to_str().unwrap()]).args(args);
    if let Some(url) = url {
        command.env("TOLLGATE_DATABASE_URL", url);
    }
    let out = command.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn store_migrate_reports_what_it_applied_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("sqlite.toml");
    std::fs::write(&sqlite, format!("[store]\npath = {:?}\n", dir.path().join("t.db"))).unwrap();
    let (ok, out, err) = migrate(&sqlite, None);
    assert!(ok && out.contains("sqlite") && out.contains("up to date"), "{out}{err}");

    // Nothing listens on port 1: the failure is clear and holds no password.
    let pg = dir.path().join("pg.toml");
    std::fs::write(&pg, "[store]\nbackend = \"postgres\"\nschema = \"tg_test_cli_migrate\"\n").unwrap();
    let (ok, out, err) = migrate(&pg, Some(&format!("postgres://postgres:{CANARY}@127.0.0.1:1/test")));
    assert!(!ok && err.contains("store unavailable"), "{out}{err}");
    assert!(!out.contains(CANARY) && !err.contains(CANARY), "{out}{err}");
    let (ok, out, err) = run(&pg, Some(&format!("postgres://postgres:{CANARY}@127.0.0.1:1/test")), &["check-config"]);
    assert!(!ok && !out.contains(": ok") && err.contains("Connection refused"), "{out}{err}");
    assert!(!out.contains(CANARY) && !err.contains(CANARY), "{out}{err}");

    let Some(url) = std::env::var("TOLLGATE_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped the PostgreSQL part: TOLLGATE_TEST_POSTGRES is not set");
        return;
    };
    // Trust authentication ignores the password, so the canary can ride along in the URL.
    let with_password = url.replacen("://postgres@", &format!("://postgres:{CANARY}@"), 1);
    let schema = format!("tg_test_cli_migrate_{}", std::process::id());
    std::fs::write(&pg, format!("[store]\nbackend = \"postgres\"\nschema = \"{schema}\"\n")).unwrap();
    let first = migrate(&pg, Some(&with_password));
    let second = migrate(&pg, Some(&with_password));
    let checked = run(&pg, Some(&with_password), &["check-config"]);
    let _ =
        Command::new("psql").args([url.as_str(), "-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")]).output();
    for (ok, out, err) in [&first, &second, &checked] {
        assert!(ok, "{out}{err}");
        assert!(!out.contains(CANARY) && !err.contains(CANARY), "{out}{err}");
    }
    assert!(first.1.contains("2 migration(s) applied now"), "{}", first.1);
    assert!(second.1.contains("0 migration(s) applied now"), "{}", second.1);
    assert!(checked.1.contains("connected: PostgreSQL") && checked.1.contains("2 of 2 migrations"), "{}", checked.1);
}
