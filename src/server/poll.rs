//! What a worker of `ebsim serve` does so that a request does not pay for a
//! sleep or a system call of its own, each measured in docs/BENCHMARKS.md
//! ("KMS over HTTP").
//!
//! On the 2-vCPU VMs this project runs on, waking a halted vCPU costs more than
//! serving a KMS request: the waker's IPI exits to the host, and the woken vCPU
//! resumes with cold caches. A client with one request in flight pays that twice
//! per round trip (it wakes the server, the server wakes it); sixteen clients
//! make the server pay one IPI per answer, in the `writev` that delivers it.
//!
//! - [`spin`]: after a request, a worker keeps polling its sockets (epoll with a
//!   zero timeout, through tokio's yield) for a short window instead of parking
//!   at once, so a client that sends its next request within the window finds
//!   the server awake. The window is `ebsim serve --busy-poll-us` (0: off); the
//!   cost is at most that much CPU per request after the last one, as with
//!   Linux's `net.core.busy_poll` or Go's spinning scheduler threads.
//! - [`Coalesced`]: a connection's first write after it read a request waits
//!   until every connection ready on the same worker has had its turn, so the
//!   answers leave in one burst and the client's event loop is woken once for
//!   the burst instead of once per answer (what Netty's flush consolidation and
//!   nginx's postponed writes do). The wait is a place at the back of the
//!   worker's run queue, not a timer: with one connection it is one more poll.
//! - A worker also holds the audit records of its turn's calls and writes them
//!   with one `write` per log ([`worker_started`], [`before_answering`]): before
//!   the first answer of the turn leaves, so no client sees an answer whose
//!   record is not in the log; and whenever the worker is about to sleep or spins.
//!
//! All of this relies on the server's threading (mod.rs): one single-threaded
//! runtime per worker thread, every connection kept on one, so a thread-local is
//! the worker's own.

use std::cell::Cell;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// A worker thread's last answer and its spinner's wake-up.
struct Activity {
    last: Cell<Option<Instant>>,
    /// Whether the spinner is in its window (then no wake-up is needed).
    spinning: Cell<bool>,
    wake: Arc<Notify>,
}

thread_local! {
    static ACTIVITY: Activity = Activity {
        last: Cell::new(None),
        spinning: Cell::new(false),
        wake: Arc::new(Notify::new()),
    };
}

/// Called on a worker's thread before its runtime starts: from now on its
/// calls' audit records are held until [`before_answering`] (or the worker is
/// about to sleep: mod.rs calls that too).
pub fn worker_started() {
    crate::service::hold_audit_records_on_this_thread();
}

/// Called on a worker's thread once its runtime has ended: writes what it
/// still holds, and its thread writes each record at once again.
pub fn worker_stopped() {
    crate::service::stop_holding_audit_records_on_this_thread();
}

/// What a worker does before any answer leaves it, and before it sleeps:
/// writes the audit records it holds.
pub fn before_answering() {
    crate::service::write_held_audit_records();
}

/// Records that this worker just answered a request, and starts its spinner's
/// window if the spinner was waiting. Cheap: a clock read, and a wake-up only
/// when the worker had gone quiet.
pub fn answered() {
    ACTIVITY.with(|a| {
        a.last.set(Some(Instant::now()));
        if !a.spinning.get() {
            a.wake.notify_one();
        }
    });
}

/// The spinner of the worker it is spawned on (once per worker): waits for a
/// request, then yields to the runtime — which polls its I/O driver without
/// blocking before running the spinner again — until `window` has passed since
/// the worker's last answer; then waits again. Runs until its runtime ends.
pub async fn spin(window: Duration) {
    let wake = ACTIVITY.with(|a| a.wake.clone());
    loop {
        wake.notified().await;
        ACTIVITY.with(|a| a.spinning.set(true));
        loop {
            before_answering();
            let quiet = ACTIVITY.with(|a| a.last.get().is_none_or(|t| t.elapsed() >= window));
            if quiet {
                break;
            }
            // Another thread runnable on this CPU (a client, another worker)
            // goes first: the window spends only time nobody else wants.
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
        ACTIVITY.with(|a| a.spinning.set(false));
    }
}

/// A connection's stream whose first write after each read goes to the back of
/// the worker's run queue first (module docs). Reads, later writes, flushes and
/// the shutdown pass straight through.
pub struct Coalesced<S> {
    inner: S,
    /// Data was read since the last write: the next write waits its turn once.
    fresh: bool,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Self {
        Coalesced {
            inner,
            fresh: false,
        }
    }

    /// Whether this write should first let the other ready connections run;
    /// if so the task is queued again (behind them) and the write is pending.
    /// Otherwise the write goes ahead, after the worker's held audit records.
    fn hold(&mut self, cx: &mut Context<'_>) -> bool {
        if self.fresh {
            self.fresh = false;
            cx.waker().wake_by_ref();
            true
        } else {
            before_answering();
            false
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.fresh = true;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.hold(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.hold(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_first_write_after_a_read_waits_one_turn_and_loses_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(4096);
            let mut server = Coalesced::new(server);
            let mut client = client;
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = std::task::Waker::from(count.clone());
            let mut cx = Context::from_waker(&waker);

            // Before any read, writes go straight through.
            let p = Pin::new(&mut server).poll_write(&mut cx, b"hello ");
            assert!(matches!(p, Poll::Ready(Ok(6))), "{p:?}");
            assert_eq!(count.0.load(Ordering::SeqCst), 0);

            // A read of data: the next write is pending once, its task queued
            // again (woken), and nothing is written.
            client.write_all(b"request").await.unwrap();
            let mut buf = [0u8; 16];
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"request");
            let p = Pin::new(&mut server).poll_write(&mut cx, b"answer");
            assert!(p.is_pending(), "{p:?}");
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                1,
                "the task was not re-queued"
            );
            let bufs = [IoSlice::new(b"ans"), IoSlice::new(b"wer")];
            let p = Pin::new(&mut server).poll_write_vectored(&mut cx, &bufs);
            assert!(matches!(p, Poll::Ready(Ok(3 | 6))), "{p:?}");
            let n = match p {
                Poll::Ready(Ok(n)) => n,
                _ => unreachable!(),
            };
            if n == 3 {
                server.write_all(b"wer").await.unwrap();
            }
            // Later writes before the next read are not held.
            let p = Pin::new(&mut server).poll_write(&mut cx, b"!");
            assert!(matches!(p, Poll::Ready(Ok(1))), "{p:?}");
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            server.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello answer!");
        });
    }

    #[test]
    fn a_worker_keeps_polling_for_the_window_after_an_answer_then_sleeps() {
        let parks = Arc::new(AtomicUsize::new(0));
        let counted = parks.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let window = Duration::from_millis(300);
        rt.block_on(async {
            tokio::spawn(spin(window));
            // Idle: the spinner waits, and the runtime sleeps while we do.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let idle = parks.load(Ordering::SeqCst);
            assert!(idle > 0, "an idle worker never slept");

            answered();
            let start = Instant::now();
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Within the window: the runtime polled without blocking (tokio
            // calls its park hook only before it blocks).
            if start.elapsed() < window {
                assert_eq!(
                    parks.load(Ordering::SeqCst),
                    idle,
                    "the worker slept inside its busy-polling window"
                );
            }
            // After it: sleeping again.
            tokio::time::sleep(window).await;
            let before = parks.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(
                parks.load(Ordering::SeqCst) > before,
                "the worker kept spinning after its window"
            );
        });
    }
}
