use super::*;

#[test]
fn the_signing_key_is_hex_or_base64_or_derived() {
    let with = |name: &'static str, value: &str| {
        let value = value.to_owned();
        move |asked: &str| (asked == name).then(|| value.clone())
    };
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let config = Config::from_toml("", with(ENV_SIGNING_KEY, hex)).unwrap();
    let key = config.keys.signing_key.unwrap();
    assert_eq!((key[1], key[31]), (0x11, 0xff));
    assert!(!format!("{config:?}").contains("0011"), "the key printed");
    let b64 = "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=";
    assert_eq!(Config::from_toml("", with(ENV_SIGNING_KEY, b64)).unwrap().keys.signing_key, Some(key));
    let signed = "+0+1+2+3+4+5+6+7+8+9+a+b+c+d+e+f+0+1+2+3+4+5+6+7+8+9+a+b+c+d+e+f";
    for bad in ["short", "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", signed] {
        let refused = Config::from_toml("", with(ENV_SIGNING_KEY, bad)).unwrap_err();
        assert!(refused.0.starts_with(ENV_SIGNING_KEY), "{bad}");
    }
    let hash_secret = "a long enough hash secret";
    let derived = Config::from_toml("", with(ENV_KEY_HASH_SECRET, hash_secret)).unwrap().keys.signing_key;
    let derived = derived.unwrap();
    assert_ne!(derived, blake3::derive_key("tollgate service key hash v1", hash_secret.as_bytes()));
    assert_eq!(Config::from_toml("", no_env).unwrap().keys.signing_key, None);
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn the_shipped_proxy_toml_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).unwrap();
    let c = Config::from_toml(&text, no_env).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
    let names: Vec<_> = c.providers.iter().map(|p| p.name.as_str()).collect();
    for n in ["openai", "anthropic", "gemini"] {
        assert!(names.contains(&n), "{n} missing from proxy.toml");
    }
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let e = Config::from_toml("[server]\nlisten_addr = \"x\"\n", no_env).unwrap_err();
    assert!(e.0.contains("listen_addr"), "{e}");
    let e = Config::from_toml("[providers.x]\nkind = \"openai\"\nbase_url = \"http://a\"\nkey = \"s\"\n", no_env)
        .unwrap_err();
    assert!(e.0.contains("key"), "{e}");
}

#[test]
fn ca_files_are_read_at_start_and_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
    let good = dir.path().join("ca.pem");
    let two = format!("{}{}", ca.cert.pem(), ca.cert.pem());
    std::fs::write(&good, &two).unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let provider = |path: &Path| {
        format!(
            "[providers.a]\nkind = \"openai\"\nbase_url = \"https://a\"\nca_file = {:?}\n",
            path.display().to_string()
        )
    };
    let upstream = |path: &Path| format!("[upstream]\nca_file = {:?}\n", path.display().to_string());

    for (text, field) in [
        (upstream(&missing), "upstream.ca_file"),
        (upstream(&empty), "upstream.ca_file"),
        (provider(&missing), "providers.a.ca_file"),
        (provider(&empty), "providers.a.ca_file"),
    ] {
        let e = Config::from_toml(&text, no_env).unwrap_err();
        assert!(e.0.starts_with(field), "{text}: {e}");
    }

    let c = Config::from_toml(&format!("{}{}", upstream(&good), provider(&good)), no_env).unwrap();
    assert_eq!(c.providers[0].extra_roots.files, vec![good.clone(), good.clone()]);
    assert_eq!(c.providers[0].extra_roots.certs.len(), 4);
    let c = Config::from_toml(&provider(&good), no_env).unwrap();
    assert_eq!(c.providers[0].extra_roots.certs.len(), 2);
    let c = Config::from_toml(&upstream(&good), no_env).unwrap();
    assert!(c.providers.iter().all(|p| p.extra_roots.certs.len() == 2), "the defaults take [upstream] ca_file");
    let c = Config::from_toml("", no_env).unwrap();
    assert!(c.providers.iter().all(|p| p.extra_roots == ExtraRoots::default()));
}

#[test]
fn bad_values_name_their_field() {
    let cases = [
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[server]\nmax_body_bytes = 1\n", "server.max_body_bytes"),
        ("[upstream]\nidle_timeout = \"5 minutes\"\n", "upstream.idle_timeout"),
        ("[upstream]\nconnect_timeout = \"0s\"\n", "upstream.connect_timeout"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[keys]\nprefix = \"TG_\"\n", "keys.prefix"),
        ("[providers.a]\nkind = \"bedrock\"\nbase_url = \"http://a\"\n", "providers.a.kind"),
        ("[providers.a]\nkind = \"openai\"\nbase_url = \"ftp://a\"\n", "providers.a.base_url"),
        ("[providers.a]\nkind = \"openai\"\nbase_url = \"http://a?x=1\"\n", "providers.a.base_url"),
        ("[providers.a]\nkind = \"openai\"\nbase_url = \"http://a\"\nauth = \"header\"\n", "providers.a.auth"),
        ("[providers.v1]\nkind = \"openai\"\nbase_url = \"http://a\"\n", "providers.v1"),
        ("[server]\ntls_cert = \"c.pem\"\n", "server.tls_key"),
        ("[providers.openai]\nkind = \"anthropic\"\nbase_url = \"http://a\"\n", "providers.openai.kind"),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        ("[server]\nmax_connections = 1000001\n", "server.max_connections"),
        ("[server]\nmax_connections = \"lots\"\n", "server.max_connections"),
        ("[server]\nmax_connections_per_ip = \"all\"\n", "server.max_connections_per_ip"),
        ("[server]\nmax_connections_per_ip = 0\n", "server.max_connections_per_ip"),
        ("[server]\nbody_timeout = \"0s\"\n", "server.body_timeout"),
        ("[server]\nidle_timeout = \"forever\"\n", "server.idle_timeout"),
        ("[server]\nhttp2_max_concurrent_streams = 0\n", "server.http2_max_concurrent_streams"),
        ("[metrics]\nlisten = \"everywhere\"\n", "metrics.listen"),
        ("[dashboard]\nlisten = \"off\"\n", "dashboard.listen"),
        ("[providers.dashboard]\nkind = \"openai\"\nbase_url = \"https://api.openai.com\"\n", "providers.dashboard"),
        ("[metrics]\non_main_listener = true\n", "metrics.on_main_listener"),
    ];
    for (text, field) in cases {
        let e = Config::from_toml(text, no_env).unwrap_err();
        assert!(e.0.starts_with(field), "{text:?} gave {e}");
    }
}

#[test]
fn environment_overrides_the_file() {
    let env = |name: &str| match name {
        "TOLLGATE_LISTEN" => Some("0.0.0.0:9999".to_owned()),
        "TOLLGATE_STORE" => Some("/tmp/x.db".to_owned()),
        _ => None,
    };
    let c = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\n", env).unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:9999".parse().unwrap());
    assert_eq!(c.store.path, PathBuf::from("/tmp/x.db"));
    let bad = |name: &str| (name == "TOLLGATE_LISTEN").then(|| "bogus".to_owned());
    assert!(Config::from_toml("", bad).unwrap_err().0.starts_with("server.listen"));
}

#[test]
fn provider_base_paths_are_kept() {
    let c =
        Config::from_toml("[providers.groq]\nkind = \"openai\"\nbase_url = \"https://api.groq.com/openai/\"\n", no_env)
            .unwrap();
    assert_eq!(c.providers[0].base_path, "/openai");
    assert_eq!(c.providers[0].authority.as_str(), "api.groq.com");
}

#[test]
fn max_connections_is_derived_from_the_open_file_limit_unless_set() {
    assert_eq!(auto_max_connections(1024), 480);
    assert_eq!(auto_max_connections(4096), 2016);
    assert_eq!(auto_max_connections(65_536), 32_736);
    // Floor and ceiling: a tiny limit still serves some, a huge or missing one is bounded.
    assert_eq!(auto_max_connections(256), 96);
    assert_eq!(auto_max_connections(64), 64);
    assert_eq!(auto_max_connections(0), 64);
    assert_eq!(auto_max_connections(1 << 20), 100_000);
    assert_eq!(auto_max_connections(u64::MAX), 100_000);
    assert_eq!(connections_allowed_by(1024), 480);

    // The per-address default is 100, and never more than a quarter of the total.
    assert_eq!(default_max_connections_per_ip(480), 100);
    assert_eq!(default_max_connections_per_ip(400), 100);
    assert_eq!(default_max_connections_per_ip(96), 24);
    assert_eq!(default_max_connections_per_ip(8), 2);
    assert_eq!(default_max_connections_per_ip(3), 1);
    for limit in [0, 64, 256, 1024, 4096, 1 << 20, u64::MAX] {
        let total = auto_max_connections(limit);
        assert!(3 * default_max_connections_per_ip(total) < total, "{limit}: three addresses hold everything");
    }

    let unset = Config::from_toml("", no_env).unwrap();
    assert_eq!(unset.server.max_connections, None);
    assert_eq!(unset.server.connection_limits(1024), ConnectionLimits { total: 480, per_ip: 100 });
    assert_eq!(unset.server.connection_limits(256), ConnectionLimits { total: 96, per_ip: 24 });
    let auto =
        Config::from_toml("[server]\nmax_connections = \"auto\"\nmax_connections_per_ip = \"auto\"\n", no_env).unwrap();
    assert_eq!(auto.server.connection_limits(1024), ConnectionLimits { total: 480, per_ip: 100 });
    // A number set in the file wins, whatever the limit; the per-address default follows it.
    let set = Config::from_toml("[server]\nmax_connections = 40\n", no_env).unwrap();
    assert_eq!(set.server.connection_limits(1024), ConnectionLimits { total: 40, per_ip: 10 });
    let e = Config::from_toml("[server]\nmax_connections = -1\n", no_env).unwrap_err();
    assert!(e.0.contains("max_connections") && e.0.contains("\"auto\""), "{e}");
    let both = Config::from_toml("[server]\nmax_connections = 40\nmax_connections_per_ip = 30\n", no_env).unwrap();
    assert_eq!(both.server.connection_limits(u64::MAX), ConnectionLimits { total: 40, per_ip: 30 });
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "99999999999999999999h"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn durations_are_bounded_so_no_deadline_overflows_the_clock() {
    for (text, ok) in [("1ms", true), ("720h", true), ("0s", false), ("721h", false), ("18446744073709551615ms", false)]
    {
        let toml = format!("[server]\nbody_timeout = \"{text}\"\n");
        let result = Config::from_toml(&toml, no_env);
        assert_eq!(result.is_ok(), ok, "{text}: {result:?}");
        if let Err(e) = result {
            assert!(e.to_string().contains("server.body_timeout"), "{e}");
        }
    }
}

#[test]
fn metrics_default_to_a_loopback_listener_and_need_a_token_on_the_main_one() {
    let c = Config::from_toml("", no_env).unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert!(c.metrics.main_listener_token.is_none());
    let env = |name: &str| (name == ENV_METRICS_TOKEN).then(|| "scrape-token-0123456789".to_owned());
    let c = Config::from_toml("[metrics]\nlisten = \"off\"\non_main_listener = true\n", env).unwrap();
    assert_eq!(c.metrics.listen, None);
    assert_eq!(c.metrics.main_listener_token, Some(blake3::hash(b"scrape-token-0123456789")));
}

#[test]
fn the_dashboard_is_on_the_main_listener_unless_given_its_own() {
    let c = Config::from_toml("", no_env).unwrap();
    assert!(c.dashboard.enabled);
    assert_eq!(c.dashboard.listen, None);
    let c = Config::from_toml("[dashboard]\nenabled = false\nlisten = \"127.0.0.1:8081\"\n", no_env).unwrap();
    assert!(!c.dashboard.enabled);
    assert_eq!(c.dashboard.listen, Some("127.0.0.1:8081".parse().unwrap()));
}

#[test]
fn a_short_hash_secret_is_refused() {
    let env = |name: &str| (name == ENV_KEY_HASH_SECRET).then(|| "short".to_owned());
    assert!(Config::from_toml("", env).unwrap_err().0.starts_with(ENV_KEY_HASH_SECRET));
}
