//! Management credentials. Account access tokens are `tgs_<account>.<epoch>.<expiry>.<mac>`, the MAC a
//! keyed blake3 hash under a session key (from `TOLLGATE_SESSION_SECRET`, else random per process, so
//! tokens end with the process). The epoch is the account's token epoch when the token was issued; the
//! caller compares it with the store's, so logout, a new password or disabling ends every earlier token.
//! The operator token comes from `TOLLGATE_ADMIN_TOKEN`. Neither can call a provider route (they are not
//! service keys), and service keys are refused here.

use std::time::Duration;

/// Who is calling the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator,
    /// An account, by a token of its token epoch `epoch` (still to be compared with the store's).
    Account {
        id: String,
        epoch: u64,
    },
}

pub struct Credentials {
    session_key: [u8; 32],
    admin_hash: Option<blake3::Hash>,
    pub token_ttl: Duration,
}

const TOKEN_PREFIX: &str = "tgs_";

impl Credentials {
    pub fn new(session_secret: Option<&str>, admin_token: Option<&str>, token_ttl: Duration) -> Credentials {
        let session_key = match session_secret {
            Some(secret) => blake3::derive_key("tollgate session token v2", secret.as_bytes()),
            None => {
                tracing::warn!(
                    "TOLLGATE_SESSION_SECRET is not set: access tokens are signed with a random key of this \
                     process, so they end when it exits and every other instance refuses them"
                );
                let mut key = [0u8; 32];
                // Without the OS source no token can be trusted: an all-zero key is refused below.
                if getrandom::fill(&mut key).is_err() {
                    key = [0; 32];
                }
                key
            }
        };
        Credentials { session_key, admin_hash: admin_token.map(|t| blake3::hash(t.as_bytes())), token_ttl }
    }

    /// A signed access token for `account` in token epoch `epoch`, valid until `expires_at` (unix seconds).
    pub fn issue(&self, account: &str, epoch: u64, expires_at: i64) -> String {
        let claims = format!("{account}.{epoch}.{expires_at}");
        let mac = blake3::keyed_hash(&self.session_key, claims.as_bytes());
        format!("{TOKEN_PREFIX}{claims}.{}", mac.to_hex())
    }

    /// Who a bearer token belongs to, if anyone, at unix time `now`.
    pub fn caller(&self, token: &str, now: i64) -> Option<Caller> {
        if let Some(claims_and_mac) = token.strip_prefix(TOKEN_PREFIX) {
            if self.session_key == [0; 32] {
                return None;
            }
            let (claims, mac) = claims_and_mac.rsplit_once('.')?;
            let mac = blake3::Hash::from_hex(mac).ok()?;
            // `blake3::Hash` equality is constant-time.
            if blake3::keyed_hash(&self.session_key, claims.as_bytes()) != mac {
                return None;
            }
            let (rest, expires_at) = claims.rsplit_once('.')?;
            let (account, epoch) = rest.rsplit_once('.')?;
            let (expires_at, epoch): (i64, u64) = (expires_at.parse().ok()?, epoch.parse().ok()?);
            return (now < expires_at).then(|| Caller::Account { id: account.to_owned(), epoch });
        }
        let admin = self.admin_hash?;
        (blake3::hash(token.as_bytes()) == admin).then_some(Caller::Operator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_expire_and_resist_tampering() {
        let c = Credentials::new(
            Some("a session secret of some length"),
            Some("operator-token-0123456789"),
            Duration::from_secs(60),
        );
        let t = c.issue("acct_A", 7, 1000);
        assert_eq!(c.caller(&t, 999), Some(Caller::Account { id: "acct_A".into(), epoch: 7 }));
        assert_eq!(c.caller(&t.replace(".7.", ".8."), 999), None, "the epoch is signed");
        assert_eq!(c.caller(&t, 1000), None, "expired at its instant");
        assert_eq!(c.caller(&t.replace("acct_A", "acct_B"), 999), None);
        assert_eq!(c.caller(&t.replace(".1000.", ".9999."), 999), None);
        let other = Credentials::new(Some("another secret entirely"), None, Duration::from_secs(60));
        assert_eq!(other.caller(&t, 999), None);
        assert_eq!(c.caller("operator-token-0123456789", 0), Some(Caller::Operator));
        assert_eq!(c.caller("operator-token-012345678", 0), None);
        assert_eq!(other.caller("operator-token-0123456789", 0), None, "no operator token configured");
        assert_eq!(c.caller("tg_live_whatever", 0), None);
    }
}
