//! A read-only reader of bbolt database files (go.etcd.io/bbolt), enough to
//! look keys up in nested buckets: containerd keeps its images and
//! containers in one (`io.containerd.metadata.v1.bolt/meta.db`), and there is
//! no other on-disk record of which image a container runs.
//!
//! Bytes in, no I/O. The format (bbolt's page.go, node.go, bucket.go):
//!
//! - the file is pages of `page_size` bytes; pages 0 and 1 are meta pages,
//!   the valid one (magic, version 2, FNV-1a checksum) with the higher txid
//!   is current, and its root bucket is the top level;
//! - every page starts with a 16-byte header: id u64, flags u16 (branch 1,
//!   leaf 2, meta 4, freelist 16), count u16, overflow u32 (pages that
//!   follow it as one);
//! - a branch page has `count` elements of 16 bytes (pos u32, ksize u32,
//!   pgid u64), a leaf page `count` elements of 16 bytes (flags u32, pos
//!   u32, ksize u32, vsize u32); `pos` is relative to the element itself,
//!   keys are sorted, and a leaf element with flag 1 is a nested bucket;
//! - a bucket's value is its header (root pgid u64, sequence u64); root 0
//!   means the bucket is inline, its one leaf page right after the header.
//!
//! Little-endian, as bbolt writes on every platform it supports here. Every
//! offset is checked against the buffer, page ids against the file, and
//! descents are bounded, so a torn or hostile file gives an error, never a
//! panic or a loop. A file read while containerd commits can be torn (bbolt
//! writes pages in place and the meta page last); the caller reads again
//! when the file changes.

/// Why a bbolt file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoltError {
    /// Neither meta page is valid: not a bbolt file, or torn.
    #[error("no valid meta page (not a bbolt file, or written meanwhile)")]
    NoMeta,
    /// A page or element points outside the file, or has the wrong type.
    #[error("corrupt page {page}: {reason}")]
    Corrupt { page: u64, reason: &'static str },
}

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_FLAG: u32 = 0x01;
const BUCKET_HEADER: usize = 16;
/// Deeper than any B+tree of a file that fits in memory: a cycle, then.
const MAX_DEPTH: usize = 32;

/// An open bbolt file: the bytes and the current meta.
#[derive(Debug)]
pub struct Bolt<'a> {
    data: &'a [u8],
    page_size: usize,
    root: Bucket<'a>,
}

/// A bucket: on its own pages, or inline in its parent's value.
#[derive(Debug, Clone, Copy)]
pub enum Bucket<'a> {
    Paged(u64),
    Inline(&'a [u8]),
}

/// A value found in a bucket.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Bucket(Bucket<'a>),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The (txid, root pgid) of a meta page that starts at `at`, when valid.
fn meta_at(data: &[u8], at: usize) -> Option<(u64, u64, usize)> {
    let m = data.get(at + PAGE_HEADER..at + PAGE_HEADER + 64)?;
    if u32_at(m, 0)? != MAGIC || u32_at(m, 4)? != VERSION {
        return None;
    }
    if fnv1a64(&m[..56]) != u64_at(m, 56)? {
        return None;
    }
    let page_size = u32_at(m, 8)? as usize;
    if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    Some((u64_at(m, 48)?, u64_at(m, 16)?, page_size))
}

impl<'a> Bolt<'a> {
    /// Opens the bytes of a whole bbolt file.
    pub fn new(data: &'a [u8]) -> Result<Bolt<'a>, BoltError> {
        // Page 0 says the page size; page 1 is one page further.
        let first = meta_at(data, 0);
        let page_size = first.map(|m| m.2).unwrap_or(4096);
        let second = meta_at(data, page_size).filter(|m| m.2 == page_size);
        let (_, root, page_size) = match (first, second) {
            (Some(a), Some(b)) => {
                if b.0 > a.0 {
                    b
                } else {
                    a
                }
            }
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return Err(BoltError::NoMeta),
        };
        Ok(Bolt {
            data,
            page_size,
            root: Bucket::Paged(root),
        })
    }

    /// The top-level bucket.
    pub fn root(&self) -> Bucket<'a> {
        self.root
    }

    /// The bytes of page `id` (with its overflow pages).
    fn page(&self, id: u64) -> Result<&'a [u8], BoltError> {
        let corrupt = |reason| BoltError::Corrupt { page: id, reason };
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or(corrupt("page id out of range"))?;
        let header = self
            .data
            .get(start..start + PAGE_HEADER)
            .ok_or(corrupt("beyond the end of the file"))?;
        let overflow = u32_at(header, 12).unwrap_or(0) as usize;
        let len = overflow
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.page_size))
            .ok_or(corrupt("overflow out of range"))?;
        self.data
            .get(start..start.saturating_add(len))
            .ok_or(corrupt("overflow beyond the end of the file"))
    }

    /// Looks `key` up in `bucket`.
    pub fn get(&self, bucket: Bucket<'a>, key: &[u8]) -> Result<Option<Value<'a>>, BoltError> {
        let (mut page, mut id) = match bucket {
            Bucket::Paged(id) => (self.page(id)?, id),
            Bucket::Inline(p) => (p, 0),
        };
        for _ in 0..MAX_DEPTH {
            let corrupt = |reason| BoltError::Corrupt { page: id, reason };
            let flags = u16_at(page, 8).ok_or(corrupt("short page"))?;
            let count = usize::from(u16_at(page, 10).ok_or(corrupt("short page"))?);
            if flags & BRANCH != 0 {
                // The last element whose key is <= key (the first when all are greater).
                let mut next = None;
                for i in 0..count {
                    let e = PAGE_HEADER + i * ELEMENT;
                    let pos = u32_at(page, e).ok_or(corrupt("element beyond the page"))? as usize;
                    let ksize = u32_at(page, e + 4).ok_or(corrupt("element beyond the page"))?;
                    let child = u64_at(page, e + 8).ok_or(corrupt("element beyond the page"))?;
                    let k = e
                        .checked_add(pos)
                        .and_then(|s| page.get(s..s.checked_add(ksize as usize)?))
                        .ok_or(corrupt("key beyond the page"))?;
                    if i > 0 && k > key {
                        break;
                    }
                    next = Some(child);
                }
                let child = next.ok_or(corrupt("empty branch"))?;
                if child == id {
                    return Err(corrupt("branch points at itself"));
                }
                page = self.page(child)?;
                id = child;
                continue;
            }
            if flags & LEAF == 0 {
                return Err(corrupt("neither branch nor leaf"));
            }
            for i in 0..count {
                let e = PAGE_HEADER + i * ELEMENT;
                let eflags = u32_at(page, e).ok_or(corrupt("element beyond the page"))?;
                let pos = u32_at(page, e + 4).ok_or(corrupt("element beyond the page"))? as usize;
                let ksize = u32_at(page, e + 8).ok_or(corrupt("element beyond the page"))? as usize;
                let vsize =
                    u32_at(page, e + 12).ok_or(corrupt("element beyond the page"))? as usize;
                let start = e.checked_add(pos).ok_or(corrupt("key beyond the page"))?;
                let k = page
                    .get(start..start.saturating_add(ksize))
                    .ok_or(corrupt("key beyond the page"))?;
                if k != key {
                    continue;
                }
                let v = page
                    .get(start + ksize..(start + ksize).saturating_add(vsize))
                    .ok_or(corrupt("value beyond the page"))?;
                if eflags & BUCKET_FLAG == 0 {
                    return Ok(Some(Value::Bytes(v)));
                }
                let root = u64_at(v, 0).ok_or(corrupt("short bucket header"))?;
                return Ok(Some(Value::Bucket(if root == 0 {
                    Bucket::Inline(&v[BUCKET_HEADER.min(v.len())..])
                } else {
                    Bucket::Paged(root)
                })));
            }
            return Ok(None);
        }
        Err(BoltError::Corrupt {
            page: id,
            reason: "tree deeper than any real one",
        })
    }

    /// Every (key, value) of `bucket`, in key order; at most `max` of them
    /// (the rest are left out: a bucket of labels has a few dozen).
    pub fn entries(
        &self,
        bucket: Bucket<'a>,
        max: usize,
    ) -> Result<Vec<(&'a [u8], Value<'a>)>, BoltError> {
        let mut out = Vec::new();
        // (page, its id, depth), children pushed last-first so keys come in order.
        let mut stack = vec![match bucket {
            Bucket::Paged(id) => (self.page(id)?, id, 0),
            Bucket::Inline(p) => (p, 0, 0),
        }];
        let mut visited = 0usize;
        while let Some((page, id, depth)) = stack.pop() {
            let corrupt = |reason| BoltError::Corrupt { page: id, reason };
            visited += 1;
            if depth > MAX_DEPTH || visited > self.data.len() / self.page_size + 1 {
                return Err(corrupt("tree deeper or larger than the file"));
            }
            let flags = u16_at(page, 8).ok_or(corrupt("short page"))?;
            let count = usize::from(u16_at(page, 10).ok_or(corrupt("short page"))?);
            if flags & BRANCH != 0 {
                let mut children = Vec::with_capacity(count);
                for i in 0..count {
                    let e = PAGE_HEADER + i * ELEMENT;
                    let child = u64_at(page, e + 8).ok_or(corrupt("element beyond the page"))?;
                    if child == id {
                        return Err(corrupt("branch points at itself"));
                    }
                    children.push(child);
                }
                for child in children.into_iter().rev() {
                    stack.push((self.page(child)?, child, depth + 1));
                }
                continue;
            }
            if flags & LEAF == 0 {
                return Err(corrupt("neither branch nor leaf"));
            }
            for i in 0..count {
                if out.len() >= max {
                    return Ok(out);
                }
                let e = PAGE_HEADER + i * ELEMENT;
                let eflags = u32_at(page, e).ok_or(corrupt("element beyond the page"))?;
                let pos = u32_at(page, e + 4).ok_or(corrupt("element beyond the page"))? as usize;
                let ksize = u32_at(page, e + 8).ok_or(corrupt("element beyond the page"))? as usize;
                let vsize =
                    u32_at(page, e + 12).ok_or(corrupt("element beyond the page"))? as usize;
                let start = e.checked_add(pos).ok_or(corrupt("key beyond the page"))?;
                let k = page
                    .get(start..start.saturating_add(ksize))
                    .ok_or(corrupt("key beyond the page"))?;
                let v = page
                    .get(start + ksize..(start + ksize).saturating_add(vsize))
                    .ok_or(corrupt("value beyond the page"))?;
                let value = if eflags & BUCKET_FLAG == 0 {
                    Value::Bytes(v)
                } else {
                    let root = u64_at(v, 0).ok_or(corrupt("short bucket header"))?;
                    Value::Bucket(if root == 0 {
                        Bucket::Inline(&v[BUCKET_HEADER.min(v.len())..])
                    } else {
                        Bucket::Paged(root)
                    })
                };
                out.push((k, value));
            }
        }
        Ok(out)
    }

    /// Follows `path` through nested buckets; None when a step is missing
    /// or is not a bucket.
    pub fn bucket(&self, path: &[&[u8]]) -> Result<Option<Bucket<'a>>, BoltError> {
        let mut b = self.root;
        for step in path {
            match self.get(b, step)? {
                Some(Value::Bucket(next)) => b = next,
                _ => return Ok(None),
            }
        }
        Ok(Some(b))
    }

    /// The bytes of `key` in the bucket at `path`; None when missing or a bucket.
    pub fn value(&self, path: &[&[u8]], key: &[u8]) -> Result<Option<&'a [u8]>, BoltError> {
        let Some(b) = self.bucket(path)? else {
            return Ok(None);
        };
        Ok(match self.get(b, key)? {
            Some(Value::Bytes(v)) => Some(v),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::fuzz::{Rng, mutate};

    /// containerd 1.6's meta.db (see workload/containerd.rs's tests).
    const DB: &[u8] = include_bytes!("../workload/testdata/containerd-meta.bolt");

    #[test]
    fn nested_buckets_and_values_of_a_real_file() {
        let bolt = Bolt::new(DB).expect("open");
        assert_eq!(bolt.page_size, 4096);
        assert!(
            bolt.bucket(&[b"v1", b"k8s.io", b"images"])
                .unwrap()
                .is_some()
        );
        assert!(bolt.bucket(&[b"v1", b"nope"]).unwrap().is_none());
        let v = bolt
            .value(
                &[
                    b"v1",
                    b"k8s.io",
                    b"images",
                    b"localhost/patchgap-test-debian:bookworm-2",
                    b"target",
                ],
                b"mediatype",
            )
            .unwrap();
        assert_eq!(v, Some(&b"application/vnd.oci.image.manifest.v1+json"[..]));
        // A bucket asked for as a value is not one.
        assert_eq!(bolt.value(&[b"v1"], b"k8s.io").unwrap(), None);
        // A container's labels, as `ctr run --label` wrote them.
        let labels = bolt
            .bucket(&[
                b"v1",
                b"k8s.io",
                b"containers",
                b"c0ffee0000000000000000000000000000000000000000000000000000000001",
                b"labels",
            ])
            .unwrap()
            .expect("labels");
        let got: Vec<(String, String)> = bolt
            .entries(labels, 100)
            .unwrap()
            .into_iter()
            .map(|(k, v)| match v {
                Value::Bytes(v) => (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ),
                Value::Bucket(_) => panic!("a bucket among labels"),
            })
            .collect();
        // In key order, with the image config's labels that containerd copies in.
        let want = [
            ("io.containerd.image.config.stop-signal", "SIGTERM"),
            ("io.cri-containerd.kind", "container"),
            ("io.kubernetes.pod.name", "web-6c8f7b9d4c-h7k2p"),
            ("org.opencontainers.image.created", "2026-12-01T00:00:00Z"),
            (
                "org.opencontainers.image.revision",
                "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            ),
            (
                "org.opencontainers.image.source",
                "https://example.org/patchgap/test-image",
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(got, want);
        assert_eq!(bolt.entries(labels, 1).unwrap().len(), 1);
        // Every image, through however many pages the images bucket has.
        let images = bolt
            .bucket(&[b"v1", b"k8s.io", b"images"])
            .unwrap()
            .unwrap();
        assert_eq!(bolt.entries(images, 100).unwrap().len(), 1);
    }

    #[test]
    fn the_newer_valid_meta_page_wins_and_a_bad_checksum_is_refused() {
        let mut db = DB.to_vec();
        let (a, b) = (meta_at(&db, 0).unwrap(), meta_at(&db, 4096).unwrap());
        assert_ne!(a.0, b.0, "two transactions apart");
        // Spoil the newer one: the older is used.
        let newer = if a.0 > b.0 { 0 } else { 4096 };
        db[newer + PAGE_HEADER + 48] ^= 1;
        assert!(meta_at(&db, newer).is_none());
        assert!(Bolt::new(&db).is_ok());
        let older = 4096 - newer;
        db[older + PAGE_HEADER + 48] ^= 1;
        assert_eq!(Bolt::new(&db).unwrap_err(), BoltError::NoMeta);
    }

    #[test]
    fn hostile_pages_give_errors_never_panics() {
        const ALPHABET: &[u8] = b"\x00\x01\x02\x04\x10\xff\x10\x00v1k8s.io";
        let mut rng = Rng(0x0b01_7db5);
        let pages = DB[..8192].to_vec();
        for _ in 0..2000 {
            // Keep the meta pages, so the mutations reach the tree.
            let mut db = pages.clone();
            db.extend(mutate(&mut rng, &DB[8192..], ALPHABET));
            if let Ok(bolt) = Bolt::new(&db) {
                let _ = bolt.value(
                    &[
                        b"v1",
                        b"k8s.io",
                        b"containers",
                        b"c0ffee0000000000000000000000000000000000000000000000000000000001",
                    ],
                    b"image",
                );
                if let Ok(Some(b)) = bolt.bucket(&[b"v1", b"k8s.io", b"containers"]) {
                    let _ = bolt.entries(b, 1000);
                }
            }
        }
        // A branch that points at itself is refused, not followed forever.
        let mut db = DB.to_vec();
        let root = Bolt::new(&db).map(|b| match b.root {
            Bucket::Paged(id) => id,
            Bucket::Inline(_) => 0,
        });
        let root = root.unwrap() as usize * 4096;
        db[root + 8..root + 10].copy_from_slice(&BRANCH.to_le_bytes());
        db[root + 10..root + 12].copy_from_slice(&1u16.to_le_bytes());
        db[root + 16..root + 32].fill(0);
        db[root + 24..root + 32].copy_from_slice(&((root / 4096) as u64).to_le_bytes());
        assert!(Bolt::new(&db).unwrap().bucket(&[b"v1"]).is_err());
    }
}
