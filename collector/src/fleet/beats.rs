//! Heartbeats written together. An agent sends one every 10 s, so they
//! are three in four of a fleet's messages, and each changes one host row
//! only: one statement and one pooled connection per heartbeat cost the
//! store more than the rows (at 10,000 hosts, 1,000 a second). Streams
//! hand their heartbeats to one writer thread, which takes whatever has
//! queued since its last write (a host's once; a second waits for the
//! next write) and applies them with `Ingest::heartbeats`: one statement
//! on PostgreSQL. A write waits at most [`LINGER`] after its first
//! heartbeat for others.
//!
//! Invariant: a heartbeat's result reaches its stream only after its write
//! committed or failed, so an ack still means stored. The queue is bounded
//! ([`Beats::WAITING`]); past it a heartbeat is refused like any message
//! for want of room.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, mpsc},
};

use patchgap_proto::v1;
use tokio::sync::oneshot;

use super::ingest::Ingest;
use crate::store::{Result, Session};

/// How long the writer waits, after a heartbeat, for others to write with
/// it. A heartbeat comes every 10 s; its ack may take this much longer,
/// and at 1,000 a second a write takes some 50 of them instead of one
/// (without it, a write rarely found more than one waiting, measured).
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// One heartbeat waiting, and where its result goes.
struct Beat {
    session: Session,
    msg: v1::AgentMessage,
    done: oneshot::Sender<Result<()>>,
}

/// The heartbeat writer's queue (see the module documentation).
pub struct Beats {
    queue: mpsc::SyncSender<Beat>,
}

/// The queue is full: refuse the heartbeat for want of room.
#[derive(Debug)]
pub struct Full;

impl Beats {
    /// Heartbeats that may wait to be written; a write takes at most this
    /// many.
    pub const WAITING: usize = 4096;

    /// Starts the writer thread; it ends when the last `Beats` is dropped.
    pub fn start(ingest: Arc<Ingest>) -> Beats {
        let (queue, waiting) = mpsc::sync_channel(Self::WAITING);
        std::thread::Builder::new()
            .name("heartbeats".into())
            .spawn(move || write(&ingest, &waiting))
            .expect("start the heartbeat writer thread");
        Beats { queue }
    }

    /// Queues a heartbeat (`msg.body` is one); the receiver gets its
    /// result once it is written.
    pub fn submit(
        &self,
        session: Session,
        msg: v1::AgentMessage,
    ) -> Result<oneshot::Receiver<Result<()>>, Full> {
        let (done, result) = oneshot::channel();
        self.queue
            .try_send(Beat { session, msg, done })
            .map_err(|_| Full)?;
        Ok(result)
    }
}

/// The writer: waits for a heartbeat, takes every other one queued (one
/// per host), writes them, answers each, and again.
fn write(ingest: &Ingest, waiting: &mpsc::Receiver<Beat>) {
    let mut held: VecDeque<Beat> = VecDeque::new();
    loop {
        if held.is_empty() {
            match waiting.recv() {
                Ok(beat) => held.push_back(beat),
                Err(_) => return,
            }
        }
        // What comes within LINGER of the first joins it.
        let until = std::time::Instant::now() + LINGER;
        while held.len() < Beats::WAITING {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match waiting.recv_timeout(left) {
                Ok(beat) => held.push_back(beat),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) if held.is_empty() => return,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let batch = take_batch(&mut held);
        let (beats, done): (Vec<(Session, v1::AgentMessage)>, Vec<_>) = batch
            .into_iter()
            .map(|b| ((b.session, b.msg), b.done))
            .unzip();
        let results = ingest.heartbeats(&beats, patchgap_proto::time::now_ms());
        for (done, result) in done.into_iter().zip(results) {
            // The stream may have ended meanwhile: nobody to tell.
            let _ = done.send(result);
        }
    }
}

/// The first heartbeat of each host in `held`, in order; the others stay
/// for the next write, in order.
fn take_batch(held: &mut VecDeque<Beat>) -> Vec<Beat> {
    let mut hosts = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = VecDeque::new();
    for beat in held.drain(..) {
        if hosts.insert(beat.session.host) {
            batch.push(beat);
        } else {
            rest.push_back(beat);
        }
    }
    *held = rest;
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(host: i64, seq: u64) -> Beat {
        Beat {
            session: Session {
                host,
                acked_seq: 0,
                new: false,
                epoch: 1,
            },
            msg: v1::AgentMessage {
                seq,
                ..Default::default()
            },
            done: oneshot::channel().0,
        }
    }

    /// A batch holds a host once, in arrival order; a host's later
    /// heartbeats stay, in order, for the batches after.
    #[test]
    fn a_batch_takes_each_host_once_in_order() {
        let mut held: VecDeque<Beat> = [(1, 1), (2, 1), (1, 2), (3, 1), (1, 3), (2, 2)]
            .into_iter()
            .map(|(h, s)| beat(h, s))
            .collect();
        let seen = |b: &[Beat]| -> Vec<(i64, u64)> {
            b.iter().map(|b| (b.session.host, b.msg.seq)).collect()
        };
        assert_eq!(seen(&take_batch(&mut held)), [(1, 1), (2, 1), (3, 1)]);
        assert_eq!(seen(&take_batch(&mut held)), [(1, 2), (2, 2)]);
        assert_eq!(seen(&take_batch(&mut held)), [(1, 3)]);
        assert!(held.is_empty());
    }
}
