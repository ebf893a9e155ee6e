//! The accept loop: hyper's HTTP/1 on each connection, with the deadlines `axum::serve` lacks.
//!
//! A client may take at most `header` from its first byte of a request head to the end of
//! it, and a connection with no request in flight and no byte of a new one is closed after
//! `idle`. hyper's own `header_read_timeout` starts while a keep-alive connection waits, so
//! it would close idle connections at the header deadline; the two deadlines are kept apart
//! here by watching the socket's reads and the requests in flight. The body's deadline is
//! the handlers' (`routes`), which answer 408.

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the first byte of a request head to its end.
    pub header: Duration,
    /// From the first byte of a body to its end (enforced by the handlers).
    pub body: Duration,
    /// With no request in flight and none begun.
    pub idle: Duration,
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Nothing in flight since this instant.
    Idle(Instant),
    /// A request head began arriving at this instant.
    Head(Instant),
    /// This many requests in flight (their responses not yet sent to the end).
    Busy(usize),
}

/// Shared by a connection's socket wrapper, its service and its watchdog.
struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when the phase changes, so that it sleeps until the deadline of
    /// the new phase (a head that begins while the connection was idle has a shorter one).
    changed: Notify,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            phase: Mutex::new(Phase::Idle(Instant::now())),
            changed: Notify::new(),
        })
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // A poisoned lock only means a panic elsewhere; the phase is still meaningful.
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, p: Phase) {
        *self.phase() = p;
        self.changed.notify_one();
    }

    fn on_read(&self) {
        let idle = matches!(*self.phase(), Phase::Idle(_));
        if idle {
            self.set(Phase::Head(Instant::now()));
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let next = match *self.phase() {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
        self.set(next);
        InFlight(Arc::clone(self))
    }

    /// When the connection should be closed if nothing changes (`None`: a request runs).
    fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        match *self.phase() {
            Phase::Idle(since) => Some(since + t.idle),
            Phase::Head(since) => Some(since + t.header),
            Phase::Busy(_) => None,
        }
    }
}

/// One request in flight: held by its response body until that is sent (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let next = match *self.0.phase() {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        };
        self.0.set(next);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Counted {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket that tells its connection's [`Activity`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts and serves connections until `signal` resolves, then lets each connection finish
/// its request in flight (idle ones close at once) and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    signal: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a receiver; `closed` resolves when the last one is dropped.
    let (open_tx, open_rx) = watch::channel(());
    tokio::pin!(signal);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: wait for connections to close.
                    eprintln!("fastgen serve: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            router.clone(),
            timeouts,
            stop_rx.clone(),
            open_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
}

async fn connection(
    stream: TcpStream,
    router: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        stream,
        activity: Arc::clone(&activity),
    });
    let inner = TowerToHyperService::new(router);
    let counted = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = counted.begin();
        let response = hyper::service::Service::call(&inner, req);
        async move {
            let resp = response.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| {
                Body::new(Counted {
                    body,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        // While a request runs there is no deadline: wait for the phase to change.
        let wake = (activity.deadline(&timeouts))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = activity.changed.notified() => {}
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if activity.deadline(&timeouts).is_some_and(|d| d <= Instant::now()) {
                    // Dropping the connection closes the socket.
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(2),
            body: Duration::from_secs(3),
            idle: Duration::from_secs(5),
        }
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let t = timeouts();
        let a = Activity::new();
        let idle = a.deadline(&t).unwrap();
        a.on_read();
        let head = a.deadline(&t).unwrap();
        assert!(
            head < idle,
            "a head began: the header deadline, not the idle one"
        );
        // Later bytes of the same head do not move its deadline.
        a.on_read();
        assert_eq!(a.deadline(&t), Some(head));
        let first = a.begin();
        let second = a.begin();
        assert_eq!(a.deadline(&t), None);
        drop(first);
        assert_eq!(a.deadline(&t), None, "one request still in flight");
        drop(second);
        assert!(a.deadline(&t).unwrap() > head, "idle again, from now");
    }
}
