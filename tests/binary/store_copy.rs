//! `tollgate store copy`: a SQLite file populated through the command line and a running server
//! (accounts, a project, keys of every kind, a revoked one, a rotated one, one with a policy, a trial key
//! with its device, usage from real requests and end-user usage) is copied into PostgreSQL; a server on
//! the copy accepts every active key, refuses the revoked one and reports the same usage; copying again
//! writes nothing; a target holding other rows is refused unless `--merge`. The URL's password is never
//! printed. Runs when `TOLLGATE_TEST_POSTGRES` is set.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::*;
use crate::process::*;

const CANARY: &str = "pw-canary-5b2e91";
const TRIAL: &str = "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[trial]\nenabled = true\n";

/// Runs the binary with `config`, `env` and `stdin`; its status, stdout and stderr.
fn run(config: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out: Output = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The only line of a command that succeeded.
fn line(result: (bool, String, String)) -> String {
    assert!(result.0, "{}{}", result.1, result.2);
    result.1.trim().to_owned()
}

/// `(table, source, target, equal, written)` per line of a copy's report.
fn counts(report: &str) -> Vec<(String, u64, u64, u64, u64)> {
    report
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (f[0].to_owned(), n(1), n(2), n(3), n(4))
        })
        .collect()
}

/// The device a trial key serves: its address (through the trusted proxy) and user agent.
fn device() -> Vec<(&'static str, &'static str)> {
    vec![("x-provider-key", PROVIDER_KEY), ("user-agent", "copy-test/1"), ("x-forwarded-for", "203.0.113.77")]
}

/// The status each key gets from `server` (the trial key with its device's headers).
async fn statuses(server: &Server, keys: &[(&str, String)], trial: &str) -> Vec<(String, u16)> {
    let url = server.url(Shape::OpenAi.path());
    let mut out = Vec::new();
    for (name, key) in keys {
        let mut headers = Keys::new(key);
        if *name == "publishable" {
            headers = headers.with("origin", "https://app.example.com");
        }
        out.push((name.to_string(), post(&url, &headers.headers(), Shape::OpenAi.body()).await.status.as_u16()));
    }
    let mut headers = device();
    let bearer = format!("Bearer {trial}");
    headers.push(("authorization", &bearer));
    out.push(("trial".into(), post(&url, &headers, Shape::OpenAi.body()).await.status.as_u16()));
    out
}

/// Keys of every kind and state, made through the command line; `(name, key)`, the revoked one last.
fn populate(setup: &Setup, env: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let cli = |args: &[&str]| line(run(&setup.config, env, args, ""));
    let account =
        line(run(&setup.config, env, &["accounts", "create", "--email", "ann@example.com"], "pw-of-ann-1234\n"));
    let project = cli(&["projects", "create", "--name", "web", "--account", &account]);
    let mut keys = vec![
        ("live", cli(&["keys", "create", "--name", "live"])),
        (
            "policy",
            cli(&[
                "keys",
                "create",
                "--name",
                "policy",
                "--account",
                &account,
                "--project",
                &project,
                "--max-output-tokens",
                "500",
                "--rpm",
                "50",
                "--ip-allow",
                "127.0.0.0/8",
            ]),
        ),
        (
            "publishable",
            cli(&[
                "keys",
                "create",
                "--name",
                "pub",
                "--kind",
                "publishable",
                "--allowed-origin",
                "https://app.example.com",
            ]),
        ),
        ("expiring", cli(&["keys", "create", "--name", "exp", "--expires-in", "30"])),
    ];
    let old = cli(&["keys", "create", "--name", "rot"]);
    keys.push(("rotated-new", cli(&["keys", "rotate", key_prefix(&old), "--grace-seconds", "3600"])));
    keys.push(("rotated-old", old));
    let revoked = cli(&["keys", "create", "--name", "gone"]);
    cli(&["keys", "revoke", key_prefix(&revoked)]);
    keys.push(("revoked", revoked));
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copied_store_serves_every_key_and_reports_the_same_usage() {
    let Some(url) = std::env::var("TOLLGATE_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: TOLLGATE_TEST_POSTGRES is not set");
        return;
    };
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), TRIAL);
    let env = [("TOLLGATE_TRIAL_SECRET", TRIAL_SECRET)];
    let keys = populate(&setup, &env);

    // Usage from real requests, and a trial key issued to a device.
    let server = Server::spawn(&setup.config, &env);
    let first = post(&server.url(Shape::OpenAi.path()), &device(), Shape::OpenAi.body()).await;
    let trial = first.headers["x-tollgate-key-provisioned"].to_str().unwrap().to_owned();
    let before = statuses(&server, &keys, &trial).await;
    statuses(&server, &keys, &trial).await;
    let (status, _) = server.stop();
    assert!(status.success());
    let want: Vec<(String, u16)> =
        keys.iter().map(|(n, _)| (n.to_string(), if *n == "revoked" { 401 } else { 200 })).collect();
    assert_eq!(before[..keys.len()], want[..], "as created");
    assert_eq!(before[keys.len()].1, 200, "the trial key");
    let store = tollgate::store::SqliteStore::open(&setup.db).unwrap();
    let today = tollgate::clock::day_of(tollgate::clock::unix_now());
    let end_user = |name: &str| tollgate::store::EndUserAddition {
        key: key_id(&keys[0].1),
        account: std::sync::Arc::from("default"),
        end_user: std::sync::Arc::from(name),
        day: today,
        requests: 3,
        input_tokens: 30,
        output_tokens: 7,
    };
    store.add_end_user_usage(&[end_user("ann"), end_user("bob")]).unwrap();
    drop(store);

    let schema = format!("tg_test_store_copy_{}", std::process::id());
    let with_password = url.replacen("://postgres@", &format!("://postgres:{CANARY}@"), 1);
    let copy = |extra: &[&str]| {
        let mut args = vec!["store", "copy", "--from"];
        let from = format!("sqlite:{}", setup.db.display());
        args.extend([from.as_str(), "--to", &with_password, "--schema", &schema]);
        args.extend(extra);
        let out = run(&setup.config, &env, &args, "");
        assert!(!out.1.contains(CANARY) && !out.2.contains(CANARY), "the password was shown: {}{}", out.1, out.2);
        out
    };
    let _drop = DropSchema { url: url.clone(), schema: schema.clone() };
    {
        let (ok, report, err) = copy(&[]);
        assert!(ok, "{report}{err}");
        eprintln!("first copy:\n{report}{err}");
        let first = counts(&report);
        let tables: Vec<&str> = first.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(tables, ["accounts", "projects", "service_keys", "usage_daily", "usage_end_users"]);
        for (table, source, target, equal, _) in &first {
            assert!(source == target && target == equal && *source > 0, "{table}: {report}");
        }
        assert_eq!(first[2].1, keys.len() as u64 + 1, "every key and the trial key");
        let (ok, again, err) = copy(&[]);
        assert!(ok, "{again}{err}");
        let second = counts(&again);
        assert!(second.iter().all(|c| c.4 == 0), "a second copy writes nothing: {again}");
        let strip = |c: &Vec<(String, u64, u64, u64, u64)>| c.iter().map(|c| (c.1, c.2, c.3)).collect::<Vec<_>>();
        assert_eq!(strip(&second), strip(&first), "the same counts");

        // A server on the copy: the same answer for every key, the same usage and accounts.
        let pg = setup.dir.path().join("pg.toml");
        let extra = format!("{TRIAL}[store]\nbackend = \"postgres\"\nschema = \"{schema}\"\n");
        std::fs::write(&pg, config_text(&mock.base_url(), &setup.db, &extra)).unwrap();
        let pg_env = [("TOLLGATE_TRIAL_SECRET", TRIAL_SECRET), ("TOLLGATE_DATABASE_URL", with_password.as_str())];
        let report = |config: &Path, env: &[(&str, &str)]| {
            ["usage --from 2000-01-01 --to 2100-01-01", "usage --by end-user --from 2000-01-01 --to 2100-01-01"]
                .map(|args| line(run(config, env, &args.split(' ').collect::<Vec<_>>(), "")))
        };
        let sqlite_usage = report(&setup.config, &env);
        assert!(
            sqlite_usage[0].contains(key_prefix(&keys[0].1)) && sqlite_usage[1].contains("bob"),
            "{sqlite_usage:?}"
        );
        assert_eq!(report(&pg, &pg_env), sqlite_usage, "the same usage, read from the copy");
        let accounts = |config: &Path, env: &[(&str, &str)]| line(run(config, env, &["accounts", "list"], ""));
        assert_eq!(accounts(&pg, &pg_env), accounts(&setup.config, &env));
        let server = Server::spawn(&pg, &pg_env);
        assert_eq!(statuses(&server, &keys, &trial).await, before, "every key answers as before the copy");
        let (status, _) = server.stop();
        assert!(status.success());

        // The target moved on (a key made there, usage counted there): copying again is refused.
        line(run(&pg, &pg_env, &["keys", "create", "--name", "made-on-postgres"], ""));
        let (ok, out, err) = copy(&[]);
        assert!(
            !ok && err.contains("nothing was written") && err.contains("service_keys: 1 other row(s)"),
            "{out}{err}"
        );
        assert!(
            err.contains("usage_daily: 0 other row(s), ") && !err.contains("usage_daily: 0 other row(s), 0"),
            "{err}"
        );
        let (ok, out, err) = copy(&["--merge"]);
        assert!(!ok && err.contains("differing"), "rows that differ are refused even in a merge: {out}{err}");
    }
}

/// Drops the test's schema when the test ends, passed or not.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let _ = Command::new("psql").args([self.url.as_str(), "-qc", &sql]).output();
    }
}
