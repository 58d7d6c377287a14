//! Account passwords: argon2id with the crate's recommended parameters and a random salt, stored as a
//! PHC string. Verification of an unknown account does the same work, so timing does not reveal it.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

pub fn verify(password: &str, stored: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), stored).is_ok()
}

/// Spends the time of one verification without an account.
pub fn verify_nothing(password: &str) {
    // A fixed, valid hash of a random password nobody knows.
    const DECOY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2p0Xf/7x3oNhbm2mxUmjTWvD6oUDqyVikpyWyJ3CAkM";
    let _ = verify(password, DECOY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("correct horse battery", &a));
        assert!(!verify("correct horse battery!", &a));
        assert!(!verify("anything", "not a hash"));
        verify_nothing("anything");
    }
}
