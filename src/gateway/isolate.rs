//! A runtime of its own for work that must not wait on the connections.
//!
//! The connection tasks run on the gateway's shared runtime, and what they do per wake-up is
//! the counterparties' choice within the session's bounds. The sequencer and the engine links
//! are what keeps the venue alive (an engine drops a gateway that is silent for a second), so
//! they run on their own thread: however busy the connections keep the shared workers, the
//! core is scheduled, reads its links and sends its heartbeats.

use std::future::Future;

use tokio::sync::oneshot;

/// Runs `future`, and every task it spawns, on a single-threaded runtime on a new OS thread
/// named `name`. The receiver yields its output when it completes (or an error if it panicked).
pub fn spawn_isolated<F>(name: &str, future: F) -> std::io::Result<oneshot::Receiver<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let output = runtime.block_on(future);
            let _ = done_tx.send(output);
        })?;
    Ok(done_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_its_own_thread_while_the_caller_blocks() {
        let caller = std::thread::current().id();
        let done = spawn_isolated("isolated-test", async move {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tokio::spawn(async { std::thread::current().id() })
                .await
                .expect("task runs")
        })
        .expect("thread starts");
        let ran_on = done.blocking_recv().expect("completes");
        assert_ne!(ran_on, caller);
    }
}
