//! The service-key parser ([`keys::parse`]), generation ([`keys::generate`]) and the table that
//! verifies presented keys ([`KeyTable::verify`]).
//!
//! Input: a selector byte (prefix and kind), a mutation position and byte, 55 bytes that become a
//! key's id and secret, then arbitrary text presented as a key.
//!
//! Invariants checked:
//! - Whatever text is presented, parsing never panics, and text that parses is exactly
//!   `<prefix>_<kind>_<id><secret><check>`: it starts with the key prefix made from what was parsed, is
//!   as long as that format, and its last six characters are the base62 CRC32 of the rest (computed
//!   here independently).
//! - A key built from fuzzer bytes in that format parses back to its own kind and id, and so does a key
//!   from `generate`.
//! - Changing any one byte of a valid key makes it unparseable (CRC32 catches every one-byte error, and
//!   its base62 form is six characters long enough for every CRC value).
//! - [`KeyTable::verify`] accepts the one key it holds and refuses everything else: the arbitrary text
//!   and the held key with one byte changed.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tollgate::auth::access::KeyAccess;
use tollgate::auth::keys::{self, KeyHasher, KeyKind, KeyLimits, KeyRecord, KeyTable, SecretKey};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PREFIXES: [&str; 4] = ["tg", "sk", "a", "z0123456789abcde"];
const KINDS: [KeyKind; 3] = [KeyKind::Live, KeyKind::Trial, KeyKind::Publishable];
const RANDOM_LEN: usize = keys::ID_LEN + keys::SECRET_LEN;

/// A table holding one generated key, as the proxy holds keys from the store.
static TABLE: LazyLock<(KeyTable, SecretKey)> = LazyLock::new(|| {
    let hasher = KeyHasher::new(None);
    let (key, parsed) = keys::generate("tg", KeyKind::Live).expect("the OS CSPRNG");
    let table = KeyTable::new("tg".to_owned(), hasher.clone());
    table.upsert(KeyRecord {
        id: parsed.id,
        account: "default".into(),
        limits: KeyLimits::default(),
        kind: parsed.kind,
        hash: hasher.hash(key.expose()),
        created_at: 0,
        expires_at: None,
        revoked_at: None,
        access: KeyAccess::default(),
        policy: Default::default(),
        signing: Default::default(),
        version: 0,
    });
    (table, key)
});

/// The six base62 characters of the CRC32 of `signed`, most significant first.
fn check(signed: &str) -> String {
    let mut n = crc32fast::hash(signed.as_bytes());
    let mut out = [b'0'; keys::CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

/// Asserts what any text that parses must look like.
fn check_parsed(prefix: &str, text: &str) {
    let Some(parsed) = keys::parse(prefix, text) else { return };
    let label = keys::key_prefix(prefix, parsed.kind, parsed.id);
    assert!(text.starts_with(&label), "{text:?} parsed as {label}");
    let len = prefix.len() + parsed.kind.as_str().len() + 2 + keys::ID_LEN + keys::SECRET_LEN + keys::CHECK_LEN;
    assert_eq!(text.len(), len, "{text:?} parsed with the wrong length");
    let (signed, sum) = text.split_at(len - keys::CHECK_LEN);
    assert_eq!(sum, check(signed), "{text:?} parsed with a wrong checksum");
}

/// `text` with the byte at `at` (modulo its length) changed to another value.
fn mutated(text: &str, at: u8, to: u8) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    let at = usize::from(at) % bytes.len();
    bytes[at] = if bytes[at] == to { to.wrapping_add(1) } else { to };
    bytes
}

fuzz_target!(|data: &[u8]| {
    let [selector, at, to, rest @ ..] = data else { return };
    let prefix = PREFIXES[usize::from(selector & 0x03)];
    let kind = KINDS[usize::from(selector >> 2 & 0x03) % KINDS.len()];
    let (random, text) = rest.split_at(rest.len().min(RANDOM_LEN));

    // Arbitrary text, under each prefix.
    let text = String::from_utf8_lossy(text);
    for p in PREFIXES {
        check_parsed(p, &text);
    }

    // A key in the documented format, built here from the fuzzer's bytes.
    let mut body: Vec<u8> = random.iter().map(|&b| BASE62[usize::from(b) % 62]).collect();
    body.resize(RANDOM_LEN, b'0');
    let body = String::from_utf8(body).expect("base62 is ASCII");
    let signed = format!("{prefix}_{}_{body}", kind.as_str());
    let key = format!("{signed}{}", check(&signed));
    let parsed = keys::parse(prefix, &key).unwrap_or_else(|| panic!("{key:?} does not parse"));
    assert_eq!(parsed.kind, kind);
    assert_eq!(parsed.id.as_str(), &body[..keys::ID_LEN]);
    check_parsed(prefix, &key);
    if let Ok(changed) = String::from_utf8(mutated(&key, *at, *to)) {
        assert_eq!(keys::parse(prefix, &changed), None, "{changed:?}, one byte off {key:?}, parses");
    }

    let (generated, parsed) = keys::generate(prefix, kind).expect("the OS CSPRNG");
    assert_eq!(keys::parse(prefix, generated.expose()), Some(parsed), "a generated key does not parse back");

    let (table, held) = &*TABLE;
    let held = held.expose();
    assert!(table.verify(held, 0).is_ok(), "the held key is refused");
    assert_eq!(table.verify(&text, 0).is_ok(), text == held, "{text:?} verified");
    if let Ok(changed) = String::from_utf8(mutated(held, *at, *to)) {
        assert!(table.verify(&changed, 0).is_err(), "{changed:?}, one byte off the held key, verified");
    }
});
