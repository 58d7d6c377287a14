//! Account passwords: argon2id with the crate's recommended parameters and a random salt, stored as a
//! PHC string. All argon2 work runs on a [`PasswordPool`]: a fixed set of threads, each reusing one
//! memory area (made at its first job, so a server that never sees a login never holds it), behind a short
//! queue; beyond it callers are told to come back later. So a
//! flood of logins costs a bounded amount of CPU and memory, whatever its size. Verification of an
//! unknown account does the same work, so timing does not reveal it.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

/// A fixed, valid hash of a random password nobody knows: verified against when there is no account.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2p0Xf/7x3oNhbm2mxUmjTWvD6oUDqyVikpyWyJ3CAkM";
/// Most memory a stored hash may ask for, in 1 KiB blocks: four times the default. A hash asking for
/// more (not one tollgate wrote) fails to verify rather than letting a row set the pool's footprint.
const MAX_BLOCKS: usize = 4 * Params::DEFAULT_M_COST as usize;
const SALT_LEN: usize = 16;

/// One worker's argon2 memory, allocated at its first hash and reused for every later one.
struct Workspace {
    blocks: Vec<Block>,
}

impl Workspace {
    fn new() -> Workspace {
        Workspace { blocks: Vec::new() }
    }

    /// The first `n` blocks, growing the area (at the first hash, and once more up to [`MAX_BLOCKS`] if a
    /// stored hash needs more).
    fn blocks(&mut self, n: usize) -> Option<&mut [Block]> {
        if n > MAX_BLOCKS {
            return None;
        }
        if self.blocks.len() < n {
            self.blocks.resize(n, Block::default());
        }
        self.blocks.get_mut(..n)
    }

    /// Whether `password` matches the PHC string `stored`.
    fn verify(&mut self, password: &str, stored: &str) -> bool {
        let Ok(hash) = PasswordHash::new(stored) else { return false };
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return false };
        let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else { return false };
        let Ok(version) = hash.version.map_or(Ok(Version::default()), Version::try_from) else { return false };
        let Ok(params) = Params::try_from(&hash) else { return false };
        let mut out = [0u8; Output::MAX_LENGTH];
        let Some(out) = out.get_mut(..expected.len()) else { return false };
        let Some(memory) = self.blocks(params.block_count()) else {
            tracing::warn!(m_cost = params.m_cost(), "a stored password hash asks for more memory than allowed");
            return false;
        };
        let argon = Argon2::new(algorithm, version, params);
        if argon.hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), out, memory).is_err() {
            return false;
        }
        // `Output` equality is constant-time.
        Output::new(out).is_ok_and(|computed| computed == *expected)
    }

    /// A new PHC string for `password` with the default parameters and a random salt.
    fn hash(&mut self, password: &str) -> Result<String, String> {
        let params = Params::default();
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let memory = self.blocks(params.block_count()).ok_or("argon2 memory")?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        argon
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)
            .map_err(|e| e.to_string())?;
        let phc = PasswordHash {
            algorithm: ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
            salt: Some(Salt::try_from(&salt[..]).map_err(|e| e.to_string())?),
            hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
        };
        Ok(phc.to_string())
    }
}

enum Job {
    /// Verify against a stored hash, or against the decoy when there is none.
    Verify {
        password: String,
        stored: Option<String>,
        reply: oneshot::Sender<bool>,
    },
    Hash {
        password: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// The pool's queue is full: try again in a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The argon2 workers and their queue. Dropping the pool ends the workers once their jobs are done.
pub struct PasswordPool {
    jobs: SyncSender<Job>,
}

impl PasswordPool {
    /// `workers` threads (at least one) behind a queue of `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> PasswordPool {
        let (jobs, receiver) = std::sync::mpsc::sync_channel(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers.max(1) {
            let receiver = Arc::clone(&receiver);
            let spawned =
                std::thread::Builder::new().name(format!("tollgate-argon2-{i}")).spawn(move || work(&receiver));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password worker");
            }
        }
        PasswordPool { jobs }
    }

    /// The pool for this machine: half its cores (at least one), so a login flood leaves the rest to the
    /// data plane, and a queue of four jobs per worker.
    pub fn for_this_machine() -> PasswordPool {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = (cores / 2).max(1);
        PasswordPool::new(workers, 4 * workers)
    }

    /// Whether `password` matches `stored`; with no hash, the same work for nothing, and `false`.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Busy> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify { password, stored, reply })?;
        answer.await.map_err(|_| Busy)
    }

    /// A new PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<Result<String, String>, Busy> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        answer.await.map_err(|_| Busy)
    }

    fn submit(&self, job: Job) -> Result<(), Busy> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => Busy,
        })
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    let mut workspace = Workspace::new();
    loop {
        // The lock is held only to take one job; a poisoned lock still guards a usable receiver.
        let job = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        match job {
            Err(_) => return,
            Ok(Job::Verify { password, stored, reply }) => {
                let ok = match stored {
                    Some(stored) => workspace.verify(&password, &stored),
                    None => {
                        workspace.verify(&password, DECOY);
                        false
                    }
                };
                let _ = reply.send(ok);
            }
            Ok(Job::Hash { password, reply }) => {
                let _ = reply.send(workspace.hash(&password));
            }
        }
    }
}

/// A hash made outside a pool (the CLI, once per command).
pub fn hash(password: &str) -> Result<String, String> {
    Workspace::new().hash(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b);
        let mut w = Workspace::new();
        assert!(w.verify("correct horse battery", &a));
        assert!(!w.verify("correct horse battery!", &a));
        assert!(!w.verify("anything", "not a hash"));
        // The crate's own verifier agrees, both ways.
        assert!(Argon2::default().verify_password(b"correct horse battery", a.as_str()).is_ok());
        let theirs = argon2::PasswordHasher::hash_password(&Argon2::default(), b"pw of theirs").unwrap().to_string();
        assert!(w.verify("pw of theirs", &theirs));
        assert!(!w.verify("pw of theirs", &theirs.replace("m=19456", &format!("m={}", MAX_BLOCKS * 2))));
    }

    #[tokio::test]
    async fn the_pool_answers_and_refuses_beyond_its_queue() {
        let pool = PasswordPool::new(1, 1);
        let stored = hash("a password of length").unwrap();
        assert_eq!(pool.verify("a password of length".into(), Some(stored.clone())).await, Ok(true));
        assert_eq!(pool.verify("wrong".into(), None).await, Ok(false));
        // One running, one queued; of eight at once, the rest are refused at once.
        let pool = Arc::new(pool);
        let many: Vec<_> = (0..8)
            .map(|_| {
                let (pool, stored) = (Arc::clone(&pool), stored.clone());
                tokio::spawn(async move { pool.verify("wrong".into(), Some(stored)).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in many {
            results.push(task.await.unwrap());
        }
        assert!(results.contains(&Ok(false)), "{results:?}");
        assert!(results.iter().filter(|r| **r == Err(Busy)).count() >= 5, "{results:?}");
        let made = pool.hash("another password".into()).await.unwrap().unwrap();
        assert_eq!(pool.verify("another password".into(), Some(made)).await, Ok(true));
    }
}
