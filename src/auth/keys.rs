//! Service keys: the `<prefix>_<kind>_<id><secret><check>` format, generation from the OS CSPRNG, the CRC32
//! checksum that rejects malformed keys without a lookup, blake3 hashing, and the in-memory [`KeyTable`] that
//! the hot path verifies against. A lookup never inserts: a flood of random keys costs no memory.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::auth::access::KeyAccess;
use crate::auth::id::{BASE62, random_base62};
pub use crate::auth::id::{ID_LEN, KeyId, SECRET_LEN, random_id};
use crate::auth::policy::KeyPolicy;
use crate::auth::signing::{Sealer, Signing};

/// Base62 CRC32 of everything before it.
pub const CHECK_LEN: usize = 6;
const BODY_LEN: usize = ID_LEN + SECRET_LEN + CHECK_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Live,
    Trial,
    Publishable,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Live => "live",
            KeyKind::Trial => "trial",
            KeyKind::Publishable => "pub",
        }
    }

    /// How the management API, logs and metrics name the kind.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Live => "live",
            KeyKind::Trial => "trial",
            KeyKind::Publishable => "publishable",
        }
    }

    pub fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "live" => Some(KeyKind::Live),
            "trial" => Some(KeyKind::Trial),
            "pub" => Some(KeyKind::Publishable),
            _ => None,
        }
    }
}

/// A full service key as the caller holds it. Shown once at creation; never logged.
pub struct SecretKey(String);

impl SecretKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a well-formed key says about itself, before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey {
    pub kind: KeyKind,
    pub id: KeyId,
}

/// Parses `text` strictly: the configured prefix, a known kind, base62 body of the right length, a
/// matching checksum. Anything else is `None` and costs no store access.
pub fn parse(prefix: &str, text: &str) -> Option<ParsedKey> {
    let parts: Vec<&str> = text.splitn(4, '_').collect();
    let [p, kind, body] = parts.as_slice() else {
        return None;
    };
    if *p != prefix || body.len() != BODY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let kind = KeyKind::parse(kind)?;
    let (signed, check) = text.split_at(text.len() - CHECK_LEN);
    if checksum(signed).as_slice() != check.as_bytes() {
        return None;
    }
    let id = KeyId::parse(&body[..ID_LEN])?;
    Some(ParsedKey { kind, id })
}

/// `<prefix>_<kind>_<id>`: identifies a key in lists and logs.
pub fn key_prefix(prefix: &str, kind: KeyKind, id: KeyId) -> String {
    Prefixed(prefix, kind, id).to_string()
}

/// The one spelling of a key prefix, shared by [`key_prefix`] and [`KeyLabel`].
struct Prefixed<'a>(&'a str, KeyKind, KeyId);

impl std::fmt::Display for Prefixed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}_{}", self.0, self.1.as_str(), self.2)
    }
}

/// A key's `<prefix>_<kind>_<id>`, formatted when displayed.
#[derive(Debug, Clone)]
pub struct KeyLabel {
    prefix: Arc<str>,
    kind: KeyKind,
    id: KeyId,
}

impl KeyLabel {
    pub fn kind(&self) -> KeyKind {
        self.kind
    }
}

impl std::fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Prefixed(&self.prefix, self.kind, self.id).fmt(f)
    }
}

/// Generates a new key. Fails only if the OS CSPRNG does.
pub fn generate(prefix: &str, kind: KeyKind) -> Result<(SecretKey, ParsedKey), getrandom::Error> {
    let id = random_base62::<ID_LEN>()?;
    let secret = random_base62::<SECRET_LEN>()?;
    let mut text = String::with_capacity(prefix.len() + kind.as_str().len() + 2 + BODY_LEN);
    text.push_str(prefix);
    text.push('_');
    text.push_str(kind.as_str());
    text.push('_');
    text.extend(id.iter().map(|&b| b as char));
    text.extend(secret.iter().map(|&b| b as char));
    let check = checksum(&text);
    text.extend(check.iter().map(|&b| b as char));
    Ok((SecretKey(text), ParsedKey { kind, id: KeyId::drawn(id) }))
}

fn checksum(signed: &str) -> [u8; CHECK_LEN] {
    let mut n = crc32fast::hash(signed.as_bytes());
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Hashes keys for storage and verification: blake3, keyed when a server secret is configured.
#[derive(Clone)]
pub struct KeyHasher {
    secret: Option<[u8; 32]>,
}

impl KeyHasher {
    pub fn new(secret: Option<[u8; 32]>) -> KeyHasher {
        KeyHasher { secret }
    }

    pub fn hash(&self, key: &str) -> blake3::Hash {
        match &self.secret {
            Some(secret) => blake3::keyed_hash(secret, key.as_bytes()),
            None => blake3::hash(key.as_bytes()),
        }
    }
}

/// Per-key overrides of the configured default limits (`None`: use the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub requests_per_minute: Option<u32>,
    pub requests_per_day: Option<u32>,
    pub concurrent_requests: Option<u32>,
    /// A monthly token quota of the key's own, below its account's plan.
    pub tokens_per_month: Option<u64>,
}

/// Applies one change to a limit override: absent keeps it, `Some(None)` returns it to the configured
/// default, a value must lie in `range`. The CLI and the management API both go through here.
pub fn change_limit(change: Option<Option<u64>>, (min, max): (u32, u32), slot: &mut Option<u32>) -> Result<(), String> {
    match change {
        None => {}
        Some(None) => *slot = None,
        Some(Some(n)) if n >= u64::from(min) && n <= u64::from(max) => *slot = Some(n as u32),
        Some(Some(n)) => return Err(format!("{n} is outside {min}..={max}")),
    }
    Ok(())
}

/// What the hot path knows about a key. Built from the store; holds the hash, never the key.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: KeyId,
    pub account: Arc<str>,
    pub limits: KeyLimits,
    pub kind: KeyKind,
    pub hash: blake3::Hash,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Revoked from this instant on (a rotation with a grace period sets it in the future).
    pub revoked_at: Option<i64>,
    pub access: KeyAccess,
    pub policy: KeyPolicy,
    /// A publishable key's signing secret, for its identity tokens (sealed as read, opened on load).
    pub signing: Signing,
    /// The store version of the record's last write: the table never lets an older record replace a
    /// newer one (a refresh read before a revocation applied after it).
    pub version: i64,
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed, unknown, wrong secret or revoked: callers cannot tell these apart.
    Invalid,
    Expired,
    /// Switched off by its owner; enabled again, it works again.
    Disabled,
}

/// Every known key by public id, read on each request.
pub struct KeyTable {
    prefix: Arc<str>,
    hasher: KeyHasher,
    by_id: DashMap<KeyId, Arc<KeyRecord>>,
    /// Keys removed as revoked at run time: the store version of the revoking write, and when (unix
    /// seconds). See [`KeyTable::upsert`].
    gone: DashMap<KeyId, (i64, i64)>,
    /// Accounts the operator disabled: their keys are refused. Usually empty, so the hot path reads
    /// only `any_disabled`.
    disabled_accounts: RwLock<HashSet<Arc<str>>>,
    any_disabled: AtomicBool,
    /// Opens the signing secrets of loaded keys; `None`: no sealing key configured.
    sealer: Option<Arc<Sealer>>,
}

impl KeyTable {
    pub fn new(prefix: String, hasher: KeyHasher) -> KeyTable {
        KeyTable {
            prefix: prefix.into(),
            hasher,
            by_id: DashMap::new(),
            gone: DashMap::new(),
            disabled_accounts: RwLock::default(),
            any_disabled: AtomicBool::new(false),
            sealer: None,
        }
    }

    /// The table, opening each loaded key's signing secret with `sealer`.
    pub fn with_sealer(mut self, sealer: Option<Arc<Sealer>>) -> KeyTable {
        self.sealer = sealer;
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How `record` is named in logs: its key prefix, built when shown rather than stored per key.
    pub fn label(&self, record: &KeyRecord) -> KeyLabel {
        KeyLabel { prefix: Arc::clone(&self.prefix), kind: record.kind, id: record.id }
    }

    /// Adds or replaces a key (a record from the store), unless the table holds a newer record of it or
    /// removed it for a newer revocation: a refresh that read the store before a revocation may finish
    /// after the revocation was applied here, and must not bring the key back. A key already revoked
    /// leaves the table instead (it answers as unknown does), so keys created and revoked in a loop cost
    /// the table nothing but a short-lived tombstone. A key revoked later, at the end of a rotation's
    /// grace period, stays until then and is refused from that moment.
    pub fn upsert(&self, record: KeyRecord) {
        self.put(record, true);
    }

    /// [`KeyTable::upsert`] for the first read of the store, which nothing else races: a key found
    /// revoked then needs no tombstone.
    pub fn load(&self, record: KeyRecord) {
        self.put(record, false);
    }

    fn put(&self, mut record: KeyRecord, remember: bool) {
        let now = crate::clock::unix_now();
        let (id, version) = (record.id, record.version);
        let revoked = record.revoked_at.is_some_and(|at| now >= at);
        if !revoked {
            record.signing = std::mem::take(&mut record.signing).opened(id, self.sealer.as_deref());
        }
        // The entry's shard stays locked while the tombstones are read and written, so a concurrent
        // upsert of the same key sees both maps in step.
        match self.by_id.entry(id) {
            Entry::Occupied(held) if held.get().version > version => {}
            Entry::Occupied(held) if revoked => {
                held.remove();
                self.bury(id, version, now, remember);
            }
            Entry::Occupied(mut held) => {
                held.insert(Arc::new(record));
            }
            Entry::Vacant(_) if revoked => self.bury(id, version, now, remember),
            Entry::Vacant(place) => {
                if self.gone.get(&id).is_none_or(|g| g.0 < version) {
                    place.insert(Arc::new(record));
                }
            }
        }
    }

    fn bury(&self, id: KeyId, version: i64, now: i64, remember: bool) {
        if remember {
            self.gone.entry(id).and_modify(|g| *g = (g.0.max(version), now)).or_insert((version, now));
        }
    }

    /// Forgets the tombstones of keys removed before `before` (unix seconds): by then no refresh that
    /// read the store before their revocation is still running.
    pub fn forget_tombstones(&self, before: i64) {
        self.gone.retain(|_, g| g.1 >= before);
    }

    /// Replaces the set of disabled accounts (from the store).
    pub fn set_disabled_accounts(&self, accounts: &[String]) {
        let mut set = self.disabled_accounts.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *set = accounts.iter().map(|a| Arc::from(a.as_str())).collect();
        self.any_disabled.store(!set.is_empty(), Ordering::Release);
    }

    /// Disables or enables one account's keys here at once (the store was written first).
    pub fn set_account_disabled(&self, account: &str, disabled: bool) {
        let mut set = self.disabled_accounts.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if disabled {
            set.insert(Arc::from(account));
        } else {
            set.remove(account);
        }
        self.any_disabled.store(!set.is_empty(), Ordering::Release);
    }

    /// Whether the operator disabled `account` (its keys are refused).
    pub fn is_disabled(&self, account: &str) -> bool {
        self.any_disabled.load(Ordering::Acquire)
            && self.disabled_accounts.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(account)
    }

    /// The record of key `id`, if the table holds it (for a caller that knows the key by id, not by its
    /// secret: a device's trial key).
    pub fn get(&self, id: KeyId) -> Option<Arc<KeyRecord>> {
        self.by_id.get(&id).map(|r| Arc::clone(r.value()))
    }

    /// Whether the table holds a key (revoked keys leave it).
    pub fn contains(&self, id: KeyId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Verifies `presented` at unix time `now`. The hash comparison is constant-time
    /// (`blake3::Hash` equality); a miss inserts nothing.
    pub fn verify(&self, presented: &str, now: i64) -> Result<Arc<KeyRecord>, Refusal> {
        let parsed = parse(&self.prefix, presented).ok_or(Refusal::Invalid)?;
        // Clone the Arc out so no map guard outlives this statement.
        let record = self.by_id.get(&parsed.id).map(|r| Arc::clone(r.value())).ok_or(Refusal::Invalid)?;
        if record.hash != self.hasher.hash(presented) {
            return Err(Refusal::Invalid);
        }
        if record.revoked_at.is_some_and(|at| now >= at) || self.is_disabled(&record.account) {
            return Err(Refusal::Invalid);
        }
        if record.expires_at.is_some_and(|at| now >= at) {
            return Err(Refusal::Expired);
        }
        if record.policy.disabled {
            return Err(Refusal::Disabled);
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &SecretKey, parsed: ParsedKey, hasher: &KeyHasher) -> KeyRecord {
        KeyRecord {
            id: parsed.id,
            account: "default".into(),
            limits: KeyLimits::default(),
            kind: parsed.kind,
            hash: hasher.hash(key.expose()),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            access: KeyAccess::default(),
            policy: KeyPolicy::default(),
            signing: Signing::None,
            version: 0,
        }
    }

    #[test]
    fn generated_keys_parse_and_have_the_documented_shape() {
        for kind in [KeyKind::Live, KeyKind::Trial, KeyKind::Publishable] {
            let (key, parsed) = generate("tg", kind).unwrap();
            let text = key.expose();
            assert!(text.starts_with(&format!("tg_{}_", kind.as_str())));
            assert_eq!(text.len(), 4 + kind.as_str().len() + BODY_LEN);
            assert_eq!(parse("tg", text), Some(parsed));
            assert!(text.ends_with(std::str::from_utf8(&checksum(&text[..text.len() - CHECK_LEN])).unwrap()));
        }
    }

    #[test]
    fn any_single_character_change_fails_the_checksum_or_the_format() {
        let (key, _) = generate("tg", KeyKind::Live).unwrap();
        let text = key.expose();
        for i in 8..text.len() {
            let mut b = text.as_bytes().to_vec();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(b).unwrap();
            assert_eq!(parse("tg", &changed), None, "change at {i} accepted");
        }
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let (key, _) = generate("tg", KeyKind::Live).unwrap();
        let text = key.expose();
        let bad = [
            String::new(),
            "tg_live_".into(),
            text.replacen("tg_", "xx_", 1),
            text.replacen("_live_", "_gold_", 1),
            format!("{text}a"),
            text[..text.len() - 1].to_owned(),
            format!("{}_", text),
            text.replacen("tg_live_", "tg_live__", 1),
            format!("Bearer {text}"),
        ];
        for b in &bad {
            assert_eq!(parse("tg", b), None, "{b:?}");
        }
        assert_eq!(parse("other", text), None);
    }

    #[test]
    fn two_keys_differ_and_carry_enough_entropy() {
        let (a, pa) = generate("tg", KeyKind::Live).unwrap();
        let (b, pb) = generate("tg", KeyKind::Live).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(pa.id, pb.id);
        assert!((SECRET_LEN as f64) * 62f64.log2() >= 256.0);
    }

    #[test]
    fn the_table_verifies_and_refuses() {
        let hasher = KeyHasher::new(None);
        let table = KeyTable::new("tg".into(), hasher.clone());
        let (key, parsed) = generate("tg", KeyKind::Live).unwrap();
        table.upsert(record(&key, parsed, &hasher));
        assert!(table.verify(key.expose(), 0).is_ok());

        // Well-formed with a valid checksum but unknown: refused, and nothing is inserted.
        let (stranger, _) = generate("tg", KeyKind::Live).unwrap();
        assert_eq!(table.verify(stranger.expose(), 0).unwrap_err(), Refusal::Invalid);
        assert_eq!(table.len(), 1);

        let mut expiring = record(&key, parsed, &hasher);
        expiring.expires_at = Some(100);
        table.upsert(expiring.clone());
        assert!(table.verify(key.expose(), 99).is_ok());
        assert_eq!(table.verify(key.expose(), 100).unwrap_err(), Refusal::Expired);

        let mut later = expiring.clone();
        later.revoked_at = Some(i64::MAX);
        table.upsert(later);
        assert!(table.verify(key.expose(), 99).is_ok(), "revoked only from its revocation time");
        assert_eq!(table.verify(key.expose(), i64::MAX).unwrap_err(), Refusal::Invalid);

        let mut disabled = record(&key, parsed, &hasher);
        disabled.policy.disabled = true;
        table.upsert(disabled);
        assert_eq!(table.verify(key.expose(), 0).unwrap_err(), Refusal::Disabled);

        expiring.revoked_at = Some(0);
        table.upsert(expiring);
        assert_eq!(table.verify(key.expose(), 0).unwrap_err(), Refusal::Invalid);
        assert_eq!(table.len(), 0, "a revoked key leaves the table");
    }

    /// A refresh that read the store before a revocation, applied after it, must not bring the key back;
    /// nor may any older record replace a newer one.
    #[test]
    fn an_older_record_never_replaces_a_newer_one_or_undoes_a_revocation() {
        let hasher = KeyHasher::new(None);
        let table = KeyTable::new("tg".into(), hasher.clone());
        let (key, parsed) = generate("tg", KeyKind::Live).unwrap();
        let at = |version: i64| KeyRecord { version, ..record(&key, parsed, &hasher) };
        table.upsert(KeyRecord { expires_at: Some(50), ..at(7) });
        table.upsert(at(6));
        assert_eq!(table.verify(key.expose(), 60).unwrap_err(), Refusal::Expired, "version 6 is older than 7");

        table.upsert(KeyRecord { revoked_at: Some(0), ..at(8) });
        table.upsert(at(7));
        assert_eq!(table.verify(key.expose(), 0).unwrap_err(), Refusal::Invalid, "the stale read stays out");

        // The first read of the store leaves no tombstone, and tombstones go once they are old.
        let (other, parsed_other) = generate("tg", KeyKind::Live).unwrap();
        let other_at = |version: i64| KeyRecord { version, ..record(&other, parsed_other, &hasher) };
        table.load(KeyRecord { revoked_at: Some(0), ..other_at(3) });
        table.upsert(other_at(2));
        assert!(table.verify(other.expose(), 0).is_ok());
        table.forget_tombstones(i64::MAX);
        table.upsert(at(7));
        assert!(table.verify(key.expose(), 0).is_ok(), "no tombstone left");
    }

    #[test]
    fn a_keyed_hash_differs_from_the_plain_one() {
        let plain = KeyHasher::new(None).hash("k");
        let keyed = KeyHasher::new(Some([7; 32])).hash("k");
        assert_ne!(plain, keyed);
    }

    #[test]
    fn the_secret_key_never_prints() {
        let (key, _) = generate("tg", KeyKind::Live).unwrap();
        assert_eq!(format!("{key:?}"), "[redacted]");
    }
}
