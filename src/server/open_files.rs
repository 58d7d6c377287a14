//! The process's open-file limit, raised at start from its soft value to its hard one, as nginx
//! (`worker_rlimit_nofile`) and Go's runtime do: the soft limit is often 1,024 while the hard one allows far
//! more, and every held connection takes a descriptor (two while it is forwarding).

/// macOS refuses a soft limit above `OPEN_MAX` when the hard limit is unlimited.
#[cfg(unix)]
const OPEN_MAX: u64 = 10_240;

/// Raises the soft open-file limit to the hard one (or as near as the system allows) and returns the soft
/// limit then in force; `u64::MAX` stands for no limit. Logs the result at info.
#[cfg(unix)]
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let soft = before.current.unwrap_or(u64::MAX);
    let hard = before.maximum.unwrap_or(u64::MAX);
    let mut now = soft;
    let mut refused = None;
    for target in [hard, hard.min(OPEN_MAX)] {
        if target <= now {
            break;
        }
        let current = (target != u64::MAX).then_some(target);
        match setrlimit(Resource::Nofile, Rlimit { current, maximum: before.maximum }) {
            Ok(()) => {
                now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
                break;
            }
            Err(e) => refused = Some(e),
        }
    }
    let shown = |n: u64| if n == u64::MAX { "unlimited".to_owned() } else { n.to_string() };
    match refused {
        Some(e) if now == soft => {
            tracing::warn!(soft = %shown(soft), hard = %shown(hard), error = %e, "could not raise the open-file limit");
        }
        _ if now > soft => {
            tracing::info!(from = %shown(soft), to = %shown(now), "open-file limit raised to the hard limit");
        }
        _ => tracing::info!(limit = %shown(now), "open-file limit (already at the hard limit)"),
    }
    now
}

/// Elsewhere the limit is unknown: taken as the common 1,024.
#[cfg(not(unix))]
pub fn raise_open_file_limit() -> u64 {
    tracing::info!("open-file limit unknown on this system; taken as 1024");
    1024
}
