//! Log lines go to stderr through a buffer that a background thread writes out in batches, so a request
//! never waits on a write system call for its access log line. A batch leaves at most `BATCH_DELAY` after
//! its first line; a buffer that grows past `MAX_BUFFER` (stderr slower than the lines) is written by the
//! thread that filled it, so memory stays bounded and no line is dropped. Dropping the [`LogGuard`] writes
//! whatever is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

const BATCH_DELAY: Duration = Duration::from_millis(20);
const MAX_BUFFER: usize = 1 << 20;

struct Shared {
    /// Lines not yet written, and whether the writer thread should stop.
    pending: Mutex<(Vec<u8>, bool)>,
    /// Signalled when the buffer stops being empty, and at shutdown.
    filled: Condvar,
    /// Held while writing, so batches reach stderr in order.
    out: Mutex<()>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared { pending: Mutex::new((Vec::new(), false)), filled: Condvar::new(), out: Mutex::new(()) })
    }

    fn pending(&self) -> MutexGuard<'_, (Vec<u8>, bool)> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes everything buffered so far.
    fn write_out(&self) {
        let _order = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let batch = std::mem::take(&mut self.pending().0);
        if !batch.is_empty() {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&batch);
            let _ = stderr.flush();
        }
    }
}

/// The `MakeWriter` for `tracing_subscriber`: each event arrives as one `write` of a whole line.
#[derive(Clone)]
pub struct BufferedStderr {
    shared: Arc<Shared>,
}

/// Stops the writer thread and writes what is left when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A buffered stderr writer and the guard that flushes it at exit.
pub fn buffered_stderr() -> (BufferedStderr, LogGuard) {
    let shared = Shared::new();
    let worker = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("tollgate-log".into())
        .spawn(move || {
            loop {
                let mut pending = worker.pending();
                while pending.0.is_empty() && !pending.1 {
                    pending = worker.filled.wait(pending).unwrap_or_else(|e| e.into_inner());
                }
                let stop = pending.1;
                drop(pending);
                if !stop {
                    std::thread::sleep(BATCH_DELAY);
                }
                worker.write_out();
                if stop {
                    return;
                }
            }
        })
        .ok();
    (BufferedStderr { shared: Arc::clone(&shared) }, LogGuard { shared, thread })
}

impl Write for BufferedStderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.pending();
        let was_empty = pending.0.is_empty();
        pending.0.extend_from_slice(line);
        let full = pending.0.len() >= MAX_BUFFER;
        drop(pending);
        if full {
            self.shared.write_out();
        } else if was_empty {
            self.shared.filled.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStderr {
    type Writer = BufferedStderr;

    fn make_writer(&'a self) -> BufferedStderr {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.pending().1 = true;
        self.shared.filled.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.write_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_written_from_many_threads_all_arrive_whole() {
        let shared = Shared::new();
        let writer = BufferedStderr { shared: Arc::clone(&shared) };
        std::thread::scope(|s| {
            for t in 0..4 {
                let mut w = writer.clone();
                s.spawn(move || {
                    for i in 0..1000 {
                        w.write_all(format!("thread {t} line {i}\n").as_bytes()).unwrap();
                    }
                });
            }
        });
        let text = String::from_utf8(std::mem::take(&mut shared.pending().0)).unwrap();
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let mine: Vec<_> = text.lines().filter(|l| l.starts_with(&format!("thread {t} "))).collect();
            let expected: Vec<_> = (0..1000).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(mine, expected, "thread {t}'s lines out of order or torn");
        }
    }
}
