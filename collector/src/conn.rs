//! Connection admission: the collector accepts TCP itself (plaintext and
//! TLS alike) so that no client, however many connections it opens, can
//! take the descriptors or the accept loop from the agents and the CLI.
//!
//! - Descriptors: `RLIMIT_NOFILE` is read at start. Above a high-water
//!   mark below it (or above `max_connections`), the oldest connection
//!   that has not sent a request yet is closed to make room; when there is
//!   none, the new connection is refused (closed at once). Refusals are
//!   logged, at most once a second with a count ("refusing connection from
//!   X: 1010 of 1024 descriptors in use").
//! - Accept errors (EMFILE, ENFILE, ENOBUFS) back off, up to a second,
//!   instead of spinning on a listener that stays readable.
//! - Idle: a connection must send a request (an HTTP/2 HEADERS frame)
//!   within `handshake_timeout`, and is closed after `idle_timeout`
//!   without a frame other than PING either way (HTTP/2 keepalive pings
//!   alone do not keep a connection).
//!
//! **Invariant:** knows sockets and HTTP/2 framing, never tonic's services
//! or the store; every accepted connection is counted until it is dropped.

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use atomic_waker::AtomicWaker;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Sleep,
};
use tracing::{info, warn};

/// Limits on connections; see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// A connection that sent no request within this long is closed.
    pub handshake_timeout: Duration,
    /// A connection without a frame (other than PING) either way for this
    /// long is closed. Agents send a heartbeat every 10 s.
    pub idle_timeout: Duration,
    /// HTTP/2 keepalive: a PING this often, and the connection closed
    /// when one goes unanswered this long.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// HTTP/2 streams one connection may have open, and requests it may
    /// have in progress.
    pub streams_per_connection: u32,
    pub requests_per_connection: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            streams_per_connection: 64,
            requests_per_connection: 32,
        }
    }
}

/// The process's descriptor limit (the soft RLIMIT_NOFILE).
pub fn descriptor_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur
    } else {
        1024
    }
}

/// Descriptors open in this process now.
pub fn descriptors_in_use() -> usize {
    // The directory's own descriptor is one of the entries.
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

/// One accepted connection, as admission tracks it.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    peer: SocketAddr,
    accepted: Instant,
    /// Milliseconds after `accepted` of the last frame other than PING.
    active_ms: AtomicU64,
    /// It sent a request (a HEADERS frame).
    proven: AtomicBool,
    /// Admission asked it to close (to make room).
    closing: AtomicBool,
    /// The connection's reader, woken when admission asks it to close, so
    /// that its descriptor is given back at once rather than at the next
    /// deadline check.
    reader: AtomicWaker,
    /// The TLS handshake, if one is under way, waits on this.
    handshake: tokio::sync::Notify,
}

impl ConnState {
    fn touch(&self) {
        self.active_ms.store(
            self.accepted.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    /// Why the connection should close now, if it should.
    fn expired(&self, limits: &ConnLimits) -> Option<&'static str> {
        if self.closing.load(Ordering::Relaxed) {
            return Some("closed to make room");
        }
        let age = self.accepted.elapsed();
        if !self.proven.load(Ordering::Relaxed) {
            return (age > limits.handshake_timeout).then_some("no request in time");
        }
        let idle = age.saturating_sub(Duration::from_millis(
            self.active_ms.load(Ordering::Relaxed),
        ));
        (idle > limits.idle_timeout).then_some("idle")
    }

    /// Asks the connection to close, and wakes whoever serves it.
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.reader.wake();
        self.handshake.notify_one();
    }

    /// Resolves once admission asks the connection to close (for a TLS
    /// handshake still under way).
    pub async fn closed(&self) {
        // `notify_one` keeps a permit when nobody waits yet, so a close
        // between the check and the wait is not lost.
        while !self.closing.load(Ordering::Acquire) {
            self.handshake.notified().await;
        }
    }
}

/// Counts connections and descriptors, and admits or refuses.
#[derive(Debug)]
pub struct Admission {
    limits: ConnLimits,
    fd_limit: usize,
    /// Above this many descriptors in use, make room or refuse.
    high_water: usize,
    /// Above this, refuse even after making room.
    hard: usize,
    conns: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    log: Mutex<RateLog>,
}

/// A warning at most once a second, with how many were left out.
#[derive(Debug, Default)]
struct RateLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    /// Whether to log now, and how many were suppressed since the last.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Admission {
    pub fn new(limits: ConnLimits) -> Arc<Admission> {
        Self::with_descriptor_limit(limits, descriptor_limit())
    }

    pub fn with_descriptor_limit(limits: ConnLimits, fd_limit: u64) -> Arc<Admission> {
        let fd_limit = usize::try_from(fd_limit).unwrap_or(usize::MAX).max(4);
        // Room for the store's readers, its WAL files, the data files and
        // the TLS files read at a handshake.
        let reserve = (fd_limit / 16).clamp(32, 256).min(fd_limit / 2);
        let admission = Admission {
            limits,
            fd_limit,
            high_water: fd_limit - reserve,
            hard: fd_limit - reserve / 2,
            conns: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            log: Mutex::new(RateLog::default()),
        };
        info!(
            descriptors = fd_limit,
            high_water = admission.high_water,
            max_connections = limits.max_connections,
            "connection limits"
        );
        Arc::new(admission)
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Admits a connection just accepted from `peer`, or refuses it
    /// (None: drop the socket).
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Arc<ConnState>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        // Connections already asked to close give their descriptors back
        // within moments (their readers were woken): count them as gone,
        // or a burst of connections would be refused while the room made
        // for it is still being freed.
        let leaving = conns
            .values()
            .filter(|c| c.closing.load(Ordering::Relaxed))
            .count();
        let in_use = descriptors_in_use().saturating_sub(leaving);
        if in_use >= self.high_water || conns.len() >= self.limits.max_connections {
            // The oldest connection that never sent a request makes room.
            let victim = conns
                .values()
                .filter(|c| !c.proven.load(Ordering::Relaxed) && !c.closing.load(Ordering::Relaxed))
                .min_by_key(|c| c.accepted)
                .cloned();
            let made_room = match victim {
                Some(v) => {
                    v.close();
                    if let Some(suppressed) = self.rate_log() {
                        warn!(
                            suppressed,
                            "closing idle connection from {} (no request in {} ms) to make room: {in_use} of {} descriptors in use, {} connections open",
                            v.peer,
                            v.accepted.elapsed().as_millis(),
                            self.fd_limit,
                            conns.len()
                        );
                    }
                    true
                }
                None => false,
            };
            if !made_room || in_use >= self.hard || conns.len() >= self.limits.max_connections * 2 {
                if let Some(suppressed) = self.rate_log() {
                    warn!(
                        suppressed,
                        "refusing connection from {peer}: {in_use} of {} descriptors in use, {} connections open",
                        self.fd_limit,
                        conns.len()
                    );
                }
                return None;
            }
        }
        let state = Arc::new(ConnState {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            accepted: Instant::now(),
            active_ms: AtomicU64::new(0),
            proven: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            handshake: tokio::sync::Notify::new(),
        });
        conns.insert(state.id, state.clone());
        Some(state)
    }

    fn rate_log(&self) -> Option<u64> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).due()
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// An admitted connection: its socket, peer and state.
pub type Admitted = (TcpStream, SocketAddr, Arc<ConnState>);

/// Accepts on `listener` until the receiver goes, admitting each
/// connection (see [`Admission::admit`]) and handing it on with its state.
/// Accept errors back off instead of spinning.
pub fn accept_loop(
    listener: TcpListener,
    admission: Arc<Admission>,
) -> (mpsc::Receiver<Admitted>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        let mut log = RateLog::default();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => {
                    backoff = Duration::from_millis(50);
                    c
                }
                Err(error) => {
                    // Out of descriptors or memory: the pending connection
                    // stays queued and the listener stays readable, so
                    // wait rather than spin.
                    let scarce = matches!(
                        error.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    );
                    if let Some(suppressed) = log.due() {
                        warn!(%error, suppressed, descriptors = descriptors_in_use(), "accept failed");
                    }
                    if scarce {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    continue;
                }
            };
            let Some(state) = admission.admit(peer) else {
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            keepalive(&tcp);
            if tx.send((tcp, peer, state)).await.is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// TCP keepalive, so a peer that vanished without a FIN is found.
fn keepalive(tcp: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a valid int option.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// An admitted connection's stream: counts as open until dropped, notes
/// its HTTP/2 frames (to know it is active, and proven once it sends a
/// request), and fails its reads once it should close (idle, no request in
/// time, or asked to make room), which ends the connection.
pub struct Guarded<S> {
    inner: S,
    state: Arc<ConnState>,
    admission: Arc<Admission>,
    read: FrameScan,
    write: FrameScan,
    tick: Pin<Box<Sleep>>,
}

/// How often a connection checks whether it should close.
const CHECK: Duration = Duration::from_millis(500);

impl<S> Guarded<S> {
    pub fn new(inner: S, state: Arc<ConnState>, admission: Arc<Admission>) -> Guarded<S> {
        Guarded {
            inner,
            state,
            admission,
            read: FrameScan::client(),
            write: FrameScan::server(),
            tick: Box::pin(tokio::time::sleep(CHECK)),
        }
    }
}

impl<S> Drop for Guarded<S> {
    fn drop(&mut self) {
        self.admission.remove(self.state.id);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.state.expired(this.admission.limits()) {
            return Poll::Ready(Err(closing(&this.state, why)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let seen = this.read.feed(&buf.filled()[before..]);
                if seen.active {
                    this.state.touch();
                }
                if seen.request {
                    this.state.proven.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Woken at once when admission asks us to close...
                this.state.reader.register(cx.waker());
                if let Some(why) = this.state.expired(this.admission.limits()) {
                    return Poll::Ready(Err(closing(&this.state, why)));
                }
                // ...and now and then to check the deadlines.
                while this.tick.as_mut().poll(cx).is_ready() {
                    if let Some(why) = this.state.expired(this.admission.limits()) {
                        return Poll::Ready(Err(closing(&this.state, why)));
                    }
                    this.tick
                        .as_mut()
                        .reset(tokio::time::Instant::now() + CHECK);
                }
                Poll::Pending
            }
        }
    }
}

fn closing(state: &ConnState, why: &'static str) -> io::Error {
    tracing::debug!(peer = %state.peer, why, "closing connection");
    io::Error::new(io::ErrorKind::TimedOut, why)
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r
            && this.write.feed(&data[..*n]).active
        {
            this.state.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Follows the HTTP/2 frames in one direction of a connection: only their
/// 9-byte headers are looked at (length, type), payloads are skipped.
#[derive(Debug, Clone)]
struct FrameScan {
    /// Bytes of the client's connection preface still to skip.
    preface: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

/// What a run of bytes held.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// A frame other than PING.
    active: bool,
    /// A HEADERS frame: a request.
    request: bool,
}

const PREFACE_LEN: usize = 24;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_PING: u8 = 0x6;

impl FrameScan {
    /// What a client sends: the preface, then frames.
    fn client() -> FrameScan {
        FrameScan {
            preface: PREFACE_LEN,
            header: [0; 9],
            have: 0,
            skip: 0,
        }
    }

    fn server() -> FrameScan {
        FrameScan {
            preface: 0,
            ..FrameScan::client()
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) -> Seen {
        let mut seen = Seen::default();
        while !bytes.is_empty() {
            if self.preface > 0 {
                let n = self.preface.min(bytes.len());
                self.preface -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let h = self.header;
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                if h[3] != FRAME_PING {
                    seen.active = true;
                }
                if h[3] == FRAME_HEADERS {
                    seen.request = true;
                }
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            ty,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend(std::iter::repeat_n(0xAB, len));
        f
    }

    #[test]
    fn frames_are_followed_across_reads() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 18)); // SETTINGS
        let ping = frame(FRAME_PING, 8);
        let headers = frame(FRAME_HEADERS, 300);
        let mut scan = FrameScan::client();
        assert_eq!(
            scan.feed(&bytes),
            Seen {
                active: true,
                request: false
            }
        );
        assert_eq!(scan.feed(&ping), Seen::default(), "a PING is not activity");
        // A request split at every byte is still seen once.
        let mut seen = Seen::default();
        for b in &headers {
            let s = scan.feed(std::slice::from_ref(b));
            seen.active |= s.active;
            seen.request |= s.request;
        }
        assert_eq!(
            seen,
            Seen {
                active: true,
                request: true
            }
        );
        assert_eq!(scan.feed(&ping[..5]), Seen::default());
        assert_eq!(scan.feed(&ping[5..]), Seen::default());
        assert!(scan.feed(&frame(0x0, 70_000)).active, "DATA");
    }

    #[test]
    fn refusals_make_room_first() {
        // A limit far below what the test process has open: every admit
        // is above the high-water mark.
        let admission = Admission::with_descriptor_limit(ConnLimits::default(), 4);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(admission.admit(peer).is_none(), "nothing to close: refused");
        let admission = Admission::with_descriptor_limit(
            ConnLimits {
                max_connections: 2,
                ..Default::default()
            },
            1 << 20,
        );
        let a = admission.admit(peer).unwrap();
        let b = admission.admit(peer).unwrap();
        b.proven.store(true, Ordering::Relaxed);
        let c = admission.admit(peer).expect("the idle one makes room");
        assert!(
            a.closing.load(Ordering::Relaxed),
            "the oldest without a request"
        );
        assert!(
            !b.closing.load(Ordering::Relaxed),
            "a connection with requests stays"
        );
        assert!(
            a.expired(&ConnLimits::default()).is_some(),
            "asked to close"
        );
        assert!(c.expired(&ConnLimits::default()).is_none());
        admission.remove(a.id);
        assert_eq!(admission.open(), 2);
    }
}
