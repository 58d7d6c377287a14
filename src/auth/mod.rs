//! Who is calling: service keys and the in-memory key table, the principal authentication returns,
//! scopes and allowlists, management sessions (access tokens), passwords and the login throttles.

pub mod access;
pub mod client;
pub mod id;
pub mod identity;
pub mod keys;
pub mod origin;
pub mod passwords;
pub mod policy;
pub mod principal;
pub mod sessions;
pub mod signing;
pub mod throttle;
pub mod trial;

pub use principal::{AuthError, Principal, authenticate};

/// The socket peer of the connection a request arrived on, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);
