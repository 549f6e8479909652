//! The agent's outbox: every sequenced message the collector has not acked
//! yet, on disk under the agent's state directory, bounded, and readable
//! again after a crash.
//!
//! Layout of `DIR/spool/`:
//! - `session`: this host's agent session (`session=`, `boot=`, `dropped=`),
//!   replaced atomically (write, fsync, rename, fsync the directory). A
//!   restarted agent reuses the session, so its sequence numbers continue
//!   and the collector recognises resends; a new boot starts a new session.
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments, named by the sequence number of
//!   their first record. A record is `len: u32 LE`, `crc32: u32 LE` of the
//!   payload, then the payload (an encoded `AgentMessage`, whose `seq` is
//!   the segment's first plus the record's index). Records are appended with
//!   one write(2) each, so a killed agent (kill -9, panic, OOM) loses none
//!   of them; they are fdatasync'ed at most every `sync_every` (and when a
//!   segment is closed), which bounds what a host crash can lose without an
//!   fsync per event delta. The newest segment always exists (a new
//!   one is created before the old ones are deleted), so the next sequence
//!   number survives even when everything was acked.
//!
//! Opening checks every record. The first bad one (short, a length past the
//! file, a wrong checksum or sequence number: a torn tail) truncates its
//! segment there and is counted; nothing in the files can make it panic.
//! Past the byte limit the oldest segment goes first, its unacked records
//! counted in `dropped` (persisted in `session`), and the caller is told so
//! it can send a full snapshot after what survived.
//!
//! Without a directory the same spool lives in memory (tests, and an agent
//! whose state directory cannot be written).

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use patchgap_proto::{Message, encoded::EncodedMessage, v1};

/// Record header: length and CRC-32 of the payload.
const HEADER: usize = 8;
/// No single message is larger (the wire limit is far below).
const MAX_RECORD: usize = 64 << 20;
/// Encoded bytes of messages kept in memory for the sender after they are
/// written (see `Spool::take_live`). In steady state it holds a batch or
/// two; while the collector is away its oldest leave it, for the disk.
const LIVE_LIMIT: usize = 2 << 20;
/// A fully acked segment being written is replaced by a fresh one once it
/// is this long: a new file costs a create, an fsync of the directory and
/// an unlink, so not once a second on a busy host.
const ROTATE_ACKED: u64 = 1 << 20;
/// Entries of `Spool::unsynced`, at most.
const UNSYNCED_ENTRIES: usize = 4096;

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The agent's state directory; the spool is `DIR/spool`. None keeps it
    /// in memory.
    pub dir: Option<PathBuf>,
    /// Bytes of records kept, at most.
    pub limit_bytes: u64,
    /// Longest time a written record waits for fdatasync.
    pub sync_every: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: None,
            limit_bytes: 256 << 20,
            sync_every: Duration::from_secs(1),
        }
    }
}

/// What opening found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// Records of an earlier run waiting to be sent.
    pub resumed: u64,
    /// Bytes cut from torn or corrupt segment tails.
    pub truncated_bytes: u64,
    /// The session of an earlier boot was discarded (its records counted
    /// in `dropped`).
    pub new_boot: bool,
}

struct Segment {
    first_seq: u64,
    count: u64,
    len: u64,
    store: Store,
}

enum Store {
    File(File),
    Memory(Vec<u8>),
}

impl Segment {
    fn last_seq(&self) -> u64 {
        self.first_seq + self.count - 1
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.store {
            Store::File(f) => f.read_exact_at(buf, offset),
            Store::Memory(m) => {
                let start = offset as usize;
                let src = m
                    .get(start..start + buf.len())
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// Where the reader stopped: the next record's sequence number and place.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    seq: u64,
    segment_first: u64,
    offset: u64,
}

pub struct Spool {
    dir: Option<PathBuf>,
    limit: u64,
    segment_bytes: u64,
    sync_every: Duration,
    segments: VecDeque<Segment>,
    next_seq: u64,
    acked: u64,
    bytes: u64,
    session_id: String,
    boot_id: String,
    dropped: u64,
    /// Records written since the last fdatasync and not acked since, with
    /// when each was written, oldest first (an entry `(seq, at)` stands for
    /// the records after the one before it up to `seq`, the oldest written
    /// at `at`). One the collector acked needs
    /// no sync: what a host crash loses of it is already stored there.
    unsynced: VecDeque<(u64, Instant)>,
    /// fdatasyncs done, since the start.
    syncs: u64,
    cursor: Option<Cursor>,
    /// Messages of this run as pushed, encoded (the record's own bytes),
    /// not yet taken by the sender: what was just written is handed over as
    /// it is, not read back, decoded, or encoded again.
    live: VecDeque<EncodedMessage>,
    live_bytes: usize,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("next_seq", &self.next_seq)
            .field("acked", &self.acked)
            .field("bytes", &self.bytes)
            .field("segments", &self.segments.len())
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

fn seg_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn new_session_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{}-{}", std::process::id(), crate::scan::now_ms()))
}

fn encode_record(msg: &v1::AgentMessage) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(HEADER + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    msg.encode(&mut out).expect("a Vec grows");
    let crc = crc32fast::hash(&out[HEADER..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (or creates) the spool. `boot_id` is this boot's
    /// (/proc/sys/kernel/random/boot_id): a spool of another boot is
    /// discarded and counted, since the collector keys processes by boot.
    /// Errors only when the directory or a file cannot be created or read;
    /// what the files hold never makes it fail.
    pub fn open(config: &SpoolConfig, boot_id: &str) -> io::Result<(Spool, Opened)> {
        let segment_bytes = (config.limit_bytes / 8).clamp(64 << 10, 16 << 20);
        let mut spool = Spool {
            dir: None,
            limit: config.limit_bytes.max(1),
            segment_bytes,
            sync_every: config.sync_every,
            segments: VecDeque::new(),
            next_seq: 1,
            acked: 0,
            bytes: 0,
            session_id: new_session_id(),
            boot_id: boot_id.to_string(),
            dropped: 0,
            unsynced: VecDeque::new(),
            syncs: 0,
            cursor: None,
            live: VecDeque::new(),
            live_bytes: 0,
        };
        let mut opened = Opened::default();
        let Some(state) = &config.dir else {
            spool.segments.push_back(Segment {
                first_seq: 1,
                count: 0,
                len: 0,
                store: Store::Memory(Vec::new()),
            });
            return Ok((spool, opened));
        };
        let dir = state.join("spool");
        std::fs::create_dir_all(&dir)?;
        for d in [state.as_path(), dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        }
        spool.dir = Some(dir.clone());
        let session = std::fs::read(dir.join("session")).ok();
        let (old_session, old_boot, old_dropped) =
            session.as_deref().map(parse_session).unwrap_or_default();
        spool.dropped = old_dropped;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                names.push((seq, entry.path()));
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        names.sort();
        let same = !old_session.is_empty() && old_boot == boot_id;
        if same {
            spool.session_id = old_session;
        } else {
            opened.new_boot = !old_session.is_empty();
        }
        for (first_seq, path) in names {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)?;
            let (count, good, total) = validate(&file, first_seq)?;
            if !same {
                // Another boot's (or a lost session's) records: counted, gone.
                spool.dropped += count;
                std::fs::remove_file(&path)?;
                continue;
            }
            if good < total {
                file.set_len(good)?;
                file.sync_all()?;
                opened.truncated_bytes += total - good;
                // At least one record was cut.
                spool.dropped += 1;
            }
            spool.next_seq = spool.next_seq.max(first_seq + count);
            opened.resumed += count;
            spool.bytes += good;
            spool.segments.push_back(Segment {
                first_seq,
                count,
                len: good,
                store: Store::File(file),
            });
        }
        if !same || spool.segments.is_empty() {
            spool.new_segment()?;
        }
        spool.write_session()?;
        Ok((spool, opened))
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The sequence number the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Messages lost so far (spool full, torn records, another boot's).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes of records held (acked ones not yet deleted included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages held and not acked.
    pub fn unacked(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.count > 0)
            .map(|s| {
                s.count
                    - (self.acked.saturating_add(1))
                        .saturating_sub(s.first_seq)
                        .min(s.count)
            })
            .sum()
    }

    pub fn is_disk(&self) -> bool {
        self.dir.is_some()
    }

    /// Appends a message with the next sequence number. Returns its number
    /// and how many unacked messages were dropped to make room (oldest
    /// first; the caller then resyncs with a full snapshot).
    pub fn push(&mut self, body: v1::agent_message::Body) -> io::Result<(u64, u64)> {
        let seq = self.next_seq;
        let msg = v1::AgentMessage {
            seq,
            body: Some(body),
        };
        let record = encode_record(&msg);
        self.next_seq += 1;
        if record.len() > MAX_RECORD || record.len() as u64 > self.limit {
            // Never fits: lost, and said so. The sequence number is spent,
            // so the segment starts over after it.
            self.dropped += 1;
            self.new_segment()?;
            self.write_session()?;
            return Ok((seq, 1));
        }
        self.collect()?;
        let mut lost = 0;
        while self.bytes + record.len() as u64 > self.limit {
            if self.segments.len() == 1 {
                // Only the segment being written is left: close it first.
                self.new_segment_at(seq)?;
            }
            lost += self.drop_oldest()?;
        }
        let tail = self.segments.back().expect("a segment always exists");
        if tail.first_seq + tail.count != seq || tail.len >= self.segment_bytes {
            self.new_segment_at(seq)?;
        }
        let tail = self.segments.back_mut().expect("a segment always exists");
        match &mut tail.store {
            Store::File(f) => {
                if let Err(error) = f.write_all(&record) {
                    // A full disk: cut what part of the record got written,
                    // so later records are not stranded behind it. The
                    // number is spent; the next record starts a segment.
                    let _ = f.set_len(tail.len);
                    self.dropped += 1 + lost;
                    return Err(error);
                }
            }
            Store::Memory(m) => m.extend_from_slice(&record),
        }
        tail.count += 1;
        tail.len += record.len() as u64;
        self.bytes += record.len() as u64;
        let full = self.unsynced.len() >= UNSYNCED_ENTRIES;
        match self.unsynced.back_mut() {
            // Bounded while syncs fail: the last entry stands for the newer
            // records too, with the older time (a sync is due no later).
            Some(last) if full => last.0 = seq,
            _ => self.unsynced.push_back((seq, Instant::now())),
        }
        self.live_bytes += record.len();
        self.live.push_back(EncodedMessage {
            seq,
            bytes: bytes::Bytes::from(record).slice(HEADER..),
        });
        while self.live_bytes > LIVE_LIMIT
            && let Some(m) = self.live.pop_front()
        {
            self.live_bytes -= HEADER + m.bytes.len();
        }
        if lost > 0 {
            self.dropped += lost;
            self.write_session()?;
        }
        self.sync_if_due()?;
        Ok((seq, lost))
    }

    /// Records that the collector stored everything up to `seq`. Memory
    /// only: files are deleted by `collect`, on the writer's side.
    pub fn ack(&mut self, seq: u64) {
        self.acked = self.acked.max(seq.min(self.next_seq - 1));
    }

    /// The collector already has everything below `seq` (it acked more than
    /// this spool holds: an older copy of the state directory). Later
    /// messages must get higher numbers, or it would take them for resends.
    pub fn skip_to(&mut self, seq: u64) -> io::Result<()> {
        if seq > self.next_seq {
            self.next_seq = seq;
            self.new_segment()?;
        }
        self.ack(seq - 1);
        self.collect()
    }

    /// Deletes segments whose records are all acked (the newest stays, as
    /// the witness of the next sequence number; it is replaced by an empty
    /// one once it is fully acked and has grown), and syncs if due.
    pub fn collect(&mut self) -> io::Result<()> {
        let tail_done = self
            .segments
            .back()
            .is_some_and(|s| s.count > 0 && s.last_seq() <= self.acked && s.len >= ROTATE_ACKED);
        if tail_done {
            self.new_segment()?;
        }
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.count == 0 || s.last_seq() <= self.acked)
        {
            self.drop_oldest()?;
        }
        self.sync_if_due()
    }

    /// fdatasync of the segment being written, if a record in it has been
    /// unacked and unsynced for `sync_every`. The collector acks a delta
    /// within milliseconds, so on a healthy link this syncs almost never
    /// (it was 4.5 % of the agent's CPU, once a second, for records
    /// already acked); while the collector is away, once per `sync_every`.
    pub fn sync_if_due(&mut self) -> io::Result<()> {
        if self.has_unsynced()
            && self
                .unsynced
                .front()
                .is_some_and(|(_, at)| at.elapsed() >= self.sync_every)
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Whether any record written since the last sync is still unacked.
    fn has_unsynced(&mut self) -> bool {
        while self
            .unsynced
            .front()
            .is_some_and(|&(seq, _)| seq <= self.acked)
        {
            self.unsynced.pop_front();
        }
        !self.unsynced.is_empty()
    }

    /// fdatasyncs done since the start.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(Segment {
            store: Store::File(f),
            ..
        }) = self.segments.back()
        {
            f.sync_data()?;
            self.syncs += 1;
        }
        self.unsynced.clear();
        Ok(())
    }

    /// Messages after `after`, in order, up to about `max_bytes`, from
    /// memory: Some when the next one (`after + 1`) is the oldest message
    /// kept there, or none is due (empty then); None when it must be read
    /// from disk (`read_after`: after a reconnect, a restart, or an outage
    /// longer than memory holds). Messages up to `after` are let go.
    pub fn take_live(&mut self, after: u64, max_bytes: usize) -> Option<Vec<EncodedMessage>> {
        while let Some(m) = self.live.front()
            && m.seq <= after
        {
            self.live_bytes -= HEADER + m.bytes.len();
            self.live.pop_front();
        }
        match self.live.front() {
            None if after + 1 >= self.next_seq => return Some(Vec::new()),
            Some(m) if m.seq == after + 1 => {}
            _ => return None,
        }
        let mut out = Vec::new();
        let mut taken = 0usize;
        while taken < max_bytes.max(1)
            && let Some(m) = self.live.pop_front()
        {
            let len = HEADER + m.bytes.len();
            self.live_bytes -= len;
            taken += len;
            out.push(m);
        }
        Some(out)
    }

    /// Messages after `after`, in order, up to about `max_bytes` (at least
    /// one when there is one). A record that no longer reads back (the disk
    /// changed under us) ends this segment's part and is counted lost.
    pub fn read_after(&mut self, after: u64, max_bytes: usize) -> io::Result<Vec<EncodedMessage>> {
        let mut out = Vec::new();
        let mut taken = 0usize;
        let want = after + 1;
        let (mut seg_idx, mut offset, mut seq) = match self.cursor {
            Some(c) if c.seq == want => {
                match self
                    .segments
                    .iter()
                    .position(|s| s.first_seq == c.segment_first)
                {
                    Some(i) => (i, c.offset, c.seq),
                    None => self.locate(want),
                }
            }
            _ => self.locate(want),
        };
        while seg_idx < self.segments.len() && taken < max_bytes.max(1) {
            let seg = &self.segments[seg_idx];
            if seq < seg.first_seq {
                seq = seg.first_seq;
                offset = 0;
            }
            if offset >= seg.len || seq > seg.last_seq().max(seg.first_seq) || seg.count == 0 {
                seg_idx += 1;
                offset = 0;
                continue;
            }
            let mut header = [0u8; HEADER];
            seg.read_at(&mut header, offset)?;
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
            let mut payload = vec![0u8; len.min(MAX_RECORD)];
            let good = len <= MAX_RECORD
                && offset + (HEADER + len) as u64 <= seg.len
                && seg.read_at(&mut payload, offset + HEADER as u64).is_ok()
                && crc32fast::hash(&payload) == crc;
            // Decoded to check it is whole and the one expected; sent as
            // read.
            let msg = good
                .then(|| v1::AgentMessage::decode(payload.as_slice()).ok())
                .flatten()
                .filter(|m| m.seq == seq)
                .map(|m| EncodedMessage {
                    seq: m.seq,
                    bytes: payload.into(),
                });
            let Some(msg) = msg else {
                // Give up on the rest of this segment.
                let rest = seg.last_seq() + 1 - seq;
                self.dropped += rest;
                seg_idx += 1;
                offset = 0;
                seq += rest;
                continue;
            };
            offset += (HEADER + len) as u64;
            seq += 1;
            if msg.seq > after {
                taken += len;
                out.push(msg);
            }
        }
        if let Some(seg) = self.segments.get(seg_idx) {
            self.cursor = Some(Cursor {
                seq,
                segment_first: seg.first_seq,
                offset,
            });
        } else {
            self.cursor = None;
        }
        Ok(out)
    }

    /// Where the record `seq` (or the first after it) starts: the segment
    /// holding it and its offset, found by walking that segment's headers.
    fn locate(&self, seq: u64) -> (usize, u64, u64) {
        let Some(idx) = self
            .segments
            .iter()
            .position(|s| s.count > 0 && s.last_seq() >= seq)
        else {
            return (self.segments.len(), 0, seq);
        };
        let seg = &self.segments[idx];
        let (mut at, mut offset) = (seg.first_seq, 0u64);
        while at < seq && offset < seg.len {
            let mut header = [0u8; HEADER];
            if seg.read_at(&mut header, offset).is_err() {
                break;
            }
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
            offset += HEADER as u64 + len;
            at += 1;
        }
        (idx, offset, at)
    }

    /// Drops the oldest segment; returns how many of its records were not
    /// acked.
    fn drop_oldest(&mut self) -> io::Result<u64> {
        let Some(seg) = self.segments.pop_front() else {
            return Ok(0);
        };
        self.bytes -= seg.len;
        let (first_seq, count, last_seq) = (seg.first_seq, seg.count, seg.first_seq + seg.count);
        if let Some(dir) = &self.dir {
            drop(seg.store);
            match std::fs::remove_file(dir.join(seg_name(first_seq))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if self.cursor.is_some_and(|c| c.segment_first == first_seq) {
            self.cursor = None;
        }
        // (`last_seq` here is one past the last record.)
        let unacked = if count == 0 {
            0
        } else {
            let first_unacked = (self.acked + 1).max(first_seq);
            last_seq.saturating_sub(first_unacked)
        };
        Ok(unacked)
    }

    fn new_segment(&mut self) -> io::Result<()> {
        self.new_segment_at(self.next_seq)
    }

    /// Closes the segment being written (synced) and starts an empty one
    /// named `first_seq`; an empty segment of that name is kept as it is.
    fn new_segment_at(&mut self, first_seq: u64) -> io::Result<()> {
        if self
            .segments
            .back()
            .is_some_and(|s| s.count == 0 && s.first_seq == first_seq)
        {
            return Ok(());
        }
        if self.dir.is_some() && self.has_unsynced() {
            self.sync()?;
        }
        let store = match &self.dir {
            None => Store::Memory(Vec::new()),
            Some(dir) => {
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(dir.join(seg_name(first_seq)))?;
                file.set_len(0)?;
                sync_dir(dir)?;
                Store::File(file)
            }
        };
        // An empty segment left behind says nothing any more.
        if self.segments.back().is_some_and(|s| s.count == 0) {
            let old = self.segments.pop_back().expect("checked");
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_file(dir.join(seg_name(old.first_seq)));
            }
        }
        self.segments.push_back(Segment {
            first_seq,
            count: 0,
            len: 0,
            store,
        });
        Ok(())
    }

    fn write_session(&self) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let text = format!(
            "session={}\nboot={}\ndropped={}\n",
            self.session_id, self.boot_id, self.dropped
        );
        let tmp = dir.join("session.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join("session"))?;
        sync_dir(dir)
    }
}

/// (session id, boot id, dropped) from a session file; empty when unreadable.
fn parse_session(bytes: &[u8]) -> (String, String, u64) {
    let text = String::from_utf8_lossy(bytes);
    let mut out = (String::new(), String::new(), 0);
    for line in text.lines() {
        match line.split_once('=') {
            Some(("session", v)) => out.0 = v.trim().to_string(),
            Some(("boot", v)) => out.1 = v.trim().to_string(),
            Some(("dropped", v)) => out.2 = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    out
}

/// Walks a segment: (records that check out, bytes they span, file size).
fn validate(file: &File, first_seq: u64) -> io::Result<(u64, u64, u64)> {
    let total = file.metadata()?.len();
    let mut offset = 0u64;
    let mut count = 0u64;
    let mut payload = Vec::new();
    while offset + HEADER as u64 <= total {
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, offset)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD || offset + (HEADER + len) as u64 > total {
            break;
        }
        payload.resize(len, 0);
        file.read_exact_at(&mut payload, offset + HEADER as u64)?;
        if crc32fast::hash(&payload) != crc {
            break;
        }
        match v1::AgentMessage::decode(payload.as_slice()) {
            Ok(m) if m.seq == first_seq + count => {}
            _ => break,
        }
        offset += (HEADER + len) as u64;
        count += 1;
    }
    Ok((count, offset, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(n: u64) -> v1::agent_message::Body {
        v1::agent_message::Body::Delta(v1::Delta {
            scanned_at_ms: n as i64,
            exits: vec![v1::Exit {
                key: Some(v1::ProcessKey {
                    pid: n as u32,
                    start_ticks: n,
                }),
                exit_time_ms: 1_700_000_000_000 + n as i64,
            }],
            ..Default::default()
        })
    }

    fn config(dir: &Path, limit: u64) -> SpoolConfig {
        SpoolConfig {
            dir: Some(dir.to_path_buf()),
            limit_bytes: limit,
            sync_every: Duration::from_millis(0),
        }
    }

    fn seqs(spool: &mut Spool, after: u64) -> Vec<u64> {
        spool
            .read_after(after, usize::MAX)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect()
    }

    fn exit_time(m: &EncodedMessage) -> i64 {
        let m = v1::AgentMessage::decode(m.bytes.clone()).expect("a whole message");
        match &m.body {
            Some(v1::agent_message::Body::Delta(d)) => d.exits[0].exit_time_ms,
            _ => panic!("not a delta"),
        }
    }

    /// A record is synced when it has been unacked for `sync_every`; one the
    /// collector acked before then never is (the collector has it). While
    /// syncs are not done, what they are owed stays bounded.
    #[test]
    fn only_records_left_unacked_past_sync_every_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let every = Duration::from_millis(100);
        let config = SpoolConfig {
            sync_every: every,
            ..config(dir.path(), 64 << 20)
        };
        let (mut s, _) = Spool::open(&config, "boot-a").unwrap();
        for n in 1..=3 {
            s.push(delta(n)).unwrap();
        }
        s.ack(3);
        std::thread::sleep(every + Duration::from_millis(20));
        s.collect().unwrap();
        assert_eq!(s.syncs(), 0, "acked in time: nothing to sync");
        s.push(delta(4)).unwrap();
        s.push(delta(5)).unwrap();
        s.ack(4);
        s.collect().unwrap();
        assert_eq!(s.syncs(), 0, "5 is not due yet");
        std::thread::sleep(every + Duration::from_millis(20));
        s.collect().unwrap();
        assert_eq!(s.syncs(), 1, "5 stayed unacked past sync_every");
        s.collect().unwrap();
        assert_eq!(s.syncs(), 1, "synced once");
        // Unsynced and unacked: the bookkeeping is bounded.
        let (mut s, _) = Spool::open(
            &SpoolConfig {
                sync_every: Duration::from_secs(3600),
                ..config
            },
            "boot-a",
        )
        .unwrap();
        for n in 0..(UNSYNCED_ENTRIES as u64 + 100) {
            s.push(delta(n)).unwrap();
        }
        assert_eq!(s.unsynced.len(), UNSYNCED_ENTRIES);
        assert_eq!(s.unsynced.back().map(|e| e.0), Some(s.next_seq - 1));
        s.ack(s.next_seq - 2);
        assert!(s.has_unsynced(), "the last record is still owed a sync");
    }

    /// What was just written is handed to the sender from memory, the same
    /// messages a read from disk gives; anything memory no longer holds (a
    /// restart, a reconnect further back, an outage past its limit) sends
    /// the reader to disk.
    #[test]
    fn the_sender_takes_fresh_messages_from_memory_and_the_rest_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(&config(dir.path(), 64 << 20), "boot-a").unwrap();
        assert_eq!(s.take_live(0, usize::MAX).unwrap(), Vec::new(), "none due");
        for n in 1..=5 {
            s.push(delta(n)).unwrap();
        }
        let from_disk = s.read_after(0, usize::MAX).unwrap();
        let live = s.take_live(0, usize::MAX).unwrap();
        assert_eq!(live, from_disk, "memory and disk agree");
        assert_eq!(s.take_live(5, usize::MAX).unwrap(), Vec::new(), "all sent");
        // A reconnect that resumes after 2: taken already, so from disk.
        assert_eq!(s.take_live(2, usize::MAX), None);
        assert_eq!(seqs(&mut s, 2), [3, 4, 5]);
        // Past the memory limit the oldest are only on disk.
        let big = |n: u64| {
            v1::agent_message::Body::Delta(v1::Delta {
                scanned_at_ms: n as i64,
                exits: (0..20_000)
                    .map(|i| v1::Exit {
                        key: Some(v1::ProcessKey {
                            pid: i,
                            start_ticks: n,
                        }),
                        exit_time_ms: 1,
                    })
                    .collect(),
                ..Default::default()
            })
        };
        for n in 6..=40 {
            s.push(big(n)).unwrap();
        }
        assert_eq!(s.take_live(5, usize::MAX), None, "6 left memory");
        let rest = s.read_after(5, usize::MAX).unwrap();
        assert_eq!(rest.first().map(|m| m.seq), Some(6));
        assert_eq!(rest.last().map(|m| m.seq), Some(40));
        let live = s.take_live(38, usize::MAX).expect("39.. still in memory");
        assert_eq!(live.first().map(|m| m.seq), Some(39));
        // Reopened: memory is empty, the disk has them all.
        drop(s);
        let (mut s, _) = Spool::open(&config(dir.path(), 64 << 20), "boot-a").unwrap();
        assert_eq!(s.take_live(0, usize::MAX), None);
        assert_eq!(s.read_after(0, usize::MAX).unwrap().len(), 40);
    }

    #[test]
    fn reopen_resumes_the_session_and_its_unacked_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, opened) = Spool::open(&config(dir.path(), 1 << 20), "boot-a").unwrap();
        assert_eq!(opened, Opened::default());
        let session = s.session_id().to_string();
        for n in 1..=10 {
            assert_eq!(s.push(delta(n)).unwrap(), (n, 0));
        }
        s.ack(4);
        // Killed: nothing closed, nothing synced beyond what push did.
        drop(s);
        let (mut s, opened) = Spool::open(&config(dir.path(), 1 << 20), "boot-a").unwrap();
        assert_eq!(
            s.session_id(),
            session,
            "the same session, so resends are recognised"
        );
        assert_eq!(opened.resumed, 10, "acks live in memory: all ten come back");
        assert_eq!(s.next_seq(), 11);
        let msgs = s.read_after(4, usize::MAX).unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (5..=10).collect::<Vec<_>>()
        );
        assert_eq!(exit_time(&msgs[0]), 1_700_000_000_005, "times are kept");
        assert_eq!(s.push(delta(11)).unwrap(), (11, 0), "numbers continue");
        // Acked all: the files go, the next number stays.
        s.ack(11);
        s.collect().unwrap();
        drop(s);
        let (mut s, _) = Spool::open(&config(dir.path(), 1 << 20), "boot-a").unwrap();
        assert!(s.next_seq() >= 12);
        assert_eq!(s.push(delta(1)).unwrap().0, s.next_seq() - 1);
        assert!(s.next_seq() > 12);
    }

    #[test]
    fn a_torn_tail_is_cut_on_open_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(&config(dir.path(), 1 << 20), "b").unwrap();
        for n in 1..=5 {
            s.push(delta(n)).unwrap();
        }
        drop(s);
        let seg = dir.path().join("spool").join(seg_name(1));
        let full = std::fs::read(&seg).unwrap();
        let one = full.len() / 5;
        // A record cut in the middle, as a power loss leaves it.
        std::fs::write(&seg, &full[..full.len() - one / 2]).unwrap();
        let (mut s, opened) = Spool::open(&config(dir.path(), 1 << 20), "b").unwrap();
        assert_eq!(opened.resumed, 4);
        assert_eq!(opened.truncated_bytes as usize, one - one / 2);
        assert_eq!(s.dropped(), 1);
        assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, one * 4);
        assert_eq!(seqs(&mut s, 0), [1, 2, 3, 4]);
        // The next record goes after what survived, under a new number
        // (5 may have reached the collector before the crash).
        assert_eq!(s.push(delta(6)).unwrap().0, 5);
        assert_eq!(seqs(&mut s, 0), [1, 2, 3, 4, 5]);

        // Garbage in the middle (a flipped bit): cut there too.
        drop(s);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[one + HEADER + 2] ^= 0x40;
        std::fs::write(&seg, &bytes).unwrap();
        let (mut s, opened) = Spool::open(&config(dir.path(), 1 << 20), "b").unwrap();
        assert_eq!(opened.resumed, 1);
        assert_eq!(seqs(&mut s, 0), [1]);
        assert_eq!(s.dropped(), 2);

        // Random bytes never panic.
        drop(s);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..200 {
            let mut junk = Vec::new();
            for _ in 0..(round * 7) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                junk.push(x as u8);
            }
            if round % 3 == 0 && junk.len() > 8 {
                // A plausible header in front.
                let len = (junk.len() - 8) as u32;
                junk[..4].copy_from_slice(&len.to_le_bytes());
            }
            std::fs::write(&seg, &junk).unwrap();
            let (mut s, _) = Spool::open(&config(dir.path(), 1 << 20), "b").unwrap();
            let _ = s.read_after(0, usize::MAX).unwrap();
            s.push(delta(1)).unwrap();
        }
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode_record(&v1::AgentMessage {
            seq: 1,
            body: Some(delta(1)),
        })
        .len() as u64;
        // Segments are at least 64 KiB: a limit of 256 KiB is four of them.
        let limit = 256 << 10;
        let (mut s, _) = Spool::open(&config(dir.path(), limit), "b").unwrap();
        let n = 3 * limit / one;
        let mut lost = 0;
        for i in 1..=n {
            let (seq, l) = s.push(delta(i)).unwrap();
            assert_eq!(seq, i);
            lost += l;
            assert!(s.bytes() <= limit);
        }
        assert!(lost > 0 && lost < n, "lost {lost} of {n}");
        assert_eq!(s.dropped(), lost);
        let kept = seqs(&mut s, 0);
        assert_eq!(kept.len() as u64, n - lost, "nothing else is missing");
        assert_eq!(kept[0], lost + 1, "the oldest went first");
        assert_eq!(*kept.last().unwrap(), n, "the newest is kept");
        // Acked records are not losses when they make room.
        s.ack(n);
        for i in 0..limit / one / 2 {
            let (_, l) = s.push(delta(i)).unwrap();
            assert_eq!(l, 0);
        }
        // The count survives a restart.
        drop(s);
        let (s, _) = Spool::open(&config(dir.path(), limit), "b").unwrap();
        assert_eq!(s.dropped(), lost);
        let on_disk: u64 = std::fs::read_dir(dir.path().join("spool"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= limit + 4096, "{on_disk} bytes on disk");
    }

    #[test]
    fn another_boot_starts_a_new_session_and_counts_what_it_discards() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(&config(dir.path(), 1 << 20), "boot-a").unwrap();
        let old = s.session_id().to_string();
        for n in 1..=3 {
            s.push(delta(n)).unwrap();
        }
        drop(s);
        let (mut s, opened) = Spool::open(&config(dir.path(), 1 << 20), "boot-b").unwrap();
        assert!(opened.new_boot);
        assert_ne!(s.session_id(), old);
        assert_eq!(s.dropped(), 3);
        assert_eq!(seqs(&mut s, 0), Vec::<u64>::new());
        assert_eq!(
            s.push(delta(1)).unwrap().0,
            1,
            "a new session counts from 1"
        );
    }

    #[test]
    fn reads_resume_where_they_stopped_and_skip_to_moves_numbers_on() {
        let (mut s, _) = Spool::open(&SpoolConfig::default(), "b").unwrap();
        for n in 1..=6 {
            s.push(delta(n)).unwrap();
        }
        let one = s.read_after(0, 1).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(seqs(&mut s, 1), [2, 3, 4, 5, 6]);
        assert_eq!(seqs(&mut s, 3), [4, 5, 6], "a reconnect starts anywhere");
        s.skip_to(100).unwrap();
        assert_eq!(seqs(&mut s, 0), Vec::<u64>::new());
        assert_eq!(s.push(delta(1)).unwrap().0, 100);
        assert_eq!(s.unacked(), 1);
    }
}
