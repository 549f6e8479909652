//! Paging of large answers (AIP-158): `page_size`, `page_token` and
//! `next_page_token` on ListProcesses, FindPackage and ListFindings.
//!
//! A token is the store's [`ProcessCursor`] (keyset: host name, host,
//! pid, process row) with a fingerprint of the request it continues, so a
//! token is refused with other request fields. Each page is one short read
//! on a pooled reader, bounded in processes, rows scanned and encoded
//! bytes: memory is the page's, never the fleet's, and no reader is held
//! between pages.

use patchgap_proto::Message;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::invalid;
use crate::store::{PageLimit, ProcessCursor};

/// Processes per page when the request names no size.
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// The largest page a request may ask for.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// Process rows one page may look at to find its processes: a query for a
/// rare package answers with short (even empty) pages and a token rather
/// than one long scan.
pub const SCAN_BUDGET: usize = 100_000;
/// A page's encoded items stay under this size: the process that would
/// cross it starts the next page (unless it is the page's first). gRPC
/// clients refuse messages over 4 MiB by default (tonic, grpc-go,
/// grpcurl, Python); the rest is room for the first page's coverage (a
/// row per host) and framing, so any stock client reads every page.
pub const PAGE_BYTES: usize = 2 << 20;

const TOKEN_VERSION: &str = "p1.";

/// A request's paging, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// Processes per page.
    pub size: usize,
    /// Where this page starts (None: the first page).
    pub after: Option<ProcessCursor>,
    fingerprint: [u8; 8],
}

impl Paging {
    /// Parses `page_size` and `page_token`; `request` is the request with
    /// both cleared, whose hash a token carries.
    pub fn parse(page_size: i32, token: &str, request: &impl Message) -> Result<Paging, Status> {
        let size = match page_size {
            n if n < 0 => return Err(invalid("page_size must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let fingerprint = fingerprint(request);
        let after = match token.trim() {
            "" => None,
            t => Some(decode(t, &fingerprint).ok_or_else(|| {
                invalid(
                    "the page token is not one this collector gave for this request (same command, filters and arguments); start again without it",
                )
            })?),
        };
        Ok(Paging {
            size,
            after,
            fingerprint,
        })
    }

    pub fn first(&self) -> bool {
        self.after.is_none()
    }

    /// The store's limits for this page.
    pub fn limit(&self) -> PageLimit {
        PageLimit {
            items: self.size,
            scan: SCAN_BUDGET,
        }
    }

    /// The token of the page after `cursor`.
    pub fn token(&self, cursor: &ProcessCursor) -> String {
        let mut raw = Vec::with_capacity(28 + cursor.hostname.len());
        raw.extend_from_slice(&self.fingerprint);
        raw.extend_from_slice(&cursor.host.to_be_bytes());
        raw.extend_from_slice(&cursor.pid.to_be_bytes());
        raw.extend_from_slice(&cursor.id.to_be_bytes());
        raw.extend_from_slice(cursor.hostname.as_bytes());
        let mut out = String::from(TOKEN_VERSION);
        for b in raw {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Takes whole processes' items from `groups` while the page has room
    /// (`size` items, passed by at most the last process's; under
    /// [`PAGE_BYTES`], unless one process alone is larger), and the token
    /// of what is left: after the last process taken when the page was
    /// cut, else `next`.
    pub fn fill<T: Message>(
        &self,
        groups: Vec<(ProcessCursor, Vec<T>)>,
        next: Option<ProcessCursor>,
    ) -> (Vec<T>, String) {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut last: Option<ProcessCursor> = None;
        let total = groups.len();
        for (i, (cursor, items)) in groups.into_iter().enumerate() {
            let size = items.iter().map(Message::encoded_len).sum::<usize>();
            if let Some(last) = &last
                && bytes + size > PAGE_BYTES
            {
                return (out, self.token(last));
            }
            bytes += size;
            out.extend(items);
            if out.len() >= self.size && i + 1 < total {
                return (out, self.token(&cursor));
            }
            last = Some(cursor);
        }
        (out, next.map(|c| self.token(&c)).unwrap_or_default())
    }
}

fn fingerprint(request: &impl Message) -> [u8; 8] {
    let digest = Sha256::digest(request.encode_to_vec());
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn decode(token: &str, fingerprint: &[u8; 8]) -> Option<ProcessCursor> {
    let hex = token.strip_prefix(TOKEN_VERSION)?;
    if hex.len() % 2 != 0 || hex.len() < 56 || hex.len() > 56 + 2 * 1024 {
        return None;
    }
    let raw: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    if raw[..8] != fingerprint[..] {
        return None;
    }
    Some(ProcessCursor {
        host: i64::from_be_bytes(raw[8..16].try_into().ok()?),
        pid: u32::from_be_bytes(raw[16..20].try_into().ok()?),
        id: i64::from_be_bytes(raw[20..28].try_into().ok()?),
        hostname: String::from_utf8(raw[28..].to_vec()).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use patchgap_proto::v1;

    use super::*;

    fn req(host: &str) -> v1::ListProcessesRequest {
        v1::ListProcessesRequest {
            host: host.into(),
            ..Default::default()
        }
    }

    #[test]
    fn tokens_round_trip_and_bind_to_their_request() {
        let p = Paging::parse(5, "", &req("a")).unwrap();
        assert_eq!(p.size, 5);
        assert!(p.first());
        let cursor = ProcessCursor {
            hostname: "wéb-1".into(),
            host: 3,
            pid: 42,
            id: -7,
        };
        let t = p.token(&cursor);
        let next = Paging::parse(5, &t, &req("a")).unwrap();
        assert_eq!(next.after, Some(cursor));
        // Another request, a damaged token, a negative size: refused.
        assert!(Paging::parse(5, &t, &req("b")).is_err());
        assert!(Paging::parse(5, &t[..t.len() - 1], &req("a")).is_err());
        assert!(Paging::parse(5, "p1.zz", &req("a")).is_err());
        assert!(Paging::parse(-1, "", &req("a")).is_err());
        assert_eq!(
            Paging::parse(0, "", &req("a")).unwrap().size,
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(
            Paging::parse(i32::MAX, "", &req("a")).unwrap().size,
            MAX_PAGE_SIZE
        );
    }

    #[test]
    fn a_page_holds_whole_processes() {
        let p = Paging::parse(3, "", &req("")).unwrap();
        let c = |id| ProcessCursor {
            id,
            ..Default::default()
        };
        let m = |n: u32| v1::Match {
            uid: n,
            ..Default::default()
        };
        let groups = vec![
            (c(1), vec![m(1), m(2)]),
            (c(2), vec![m(3), m(4)]),
            (c(3), vec![m(5)]),
        ];
        let (items, token) = p.fill(groups.clone(), None);
        assert_eq!(items.len(), 4, "the second process is not split");
        assert_eq!(
            Paging::parse(3, &token, &req("")).unwrap().after,
            Some(c(2))
        );
        let (items, token) = p.fill(groups[2..].to_vec(), None);
        assert_eq!((items.len(), token.as_str()), (1, ""));
        let (_, token) = p.fill(groups[2..].to_vec(), Some(c(9)));
        assert_eq!(
            Paging::parse(3, &token, &req("")).unwrap().after,
            Some(c(9))
        );
    }

    /// Pages stay under PAGE_BYTES whatever page_size asks, so a stock
    /// gRPC client (4 MiB by default) reads each; a process larger than
    /// that alone still goes, alone.
    #[test]
    fn a_page_fits_a_stock_grpc_client() {
        let p = Paging::parse(i32::MAX, "", &req("")).unwrap();
        let c = |id| ProcessCursor {
            id,
            ..Default::default()
        };
        let big = |kib: usize| v1::Match {
            cmdline: "x".repeat(kib << 10),
            ..Default::default()
        };
        let groups: Vec<_> = (1..=20).map(|i| (c(i), vec![big(300)])).collect();
        let (mut rest, mut pages, mut seen) = (groups, 0, 0);
        while !rest.is_empty() {
            let (items, token) = p.fill(rest.clone(), None);
            let bytes: usize = items.iter().map(Message::encoded_len).sum();
            assert!(bytes <= PAGE_BYTES, "page {pages}: {bytes} bytes");
            assert!(!items.is_empty());
            seen += items.len();
            pages += 1;
            let after = match token.as_str() {
                "" => break,
                t => Paging::parse(i32::MAX, t, &req("")).unwrap().after.unwrap(),
            };
            rest.retain(|(cur, _)| cur.id > after.id);
        }
        assert_eq!(seen, 20, "every process once");
        let per_page = PAGE_BYTES / big(300).encoded_len();
        assert_eq!(pages, 20usize.div_ceil(per_page), "{per_page} a page");
        let alone = vec![(c(1), vec![big(3 << 10)]), (c(2), vec![big(1)])];
        let (items, token) = p.fill(alone, None);
        assert_eq!(items.len(), 1, "the large one alone");
        assert_eq!(
            Paging::parse(i32::MAX, &token, &req("")).unwrap().after,
            Some(c(1))
        );
    }
}
