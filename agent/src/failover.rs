//! The agent's list of collectors (`--collector A,B,C`) and the order it
//! tries them in: it stays on the one that answers, and moves to the next
//! after a failed connect or a broken stream.
//!
//! Failing over is safe because collectors sharing one database are
//! interchangeable for an agent: the spool keeps everything not acked, the
//! next collector's Welcome says what the database already holds of this
//! session, and a resend of an already stored message is idempotent there.
//! So the rotation carries no state of its own beyond an index, and when
//! each collector that said it was busy may be tried again: a busy
//! collector's retry time holds back that collector, not a failover to
//! another.

/// The longest a collector's retry time is honoured (its own bound).
const MAX_PUSHBACK: std::time::Duration = std::time::Duration::from_secs(300);

/// When a collector that refused a message for want of room said to send
/// it again: gRPC's retry pushback (`grpc-retry-pushback-ms`) on the
/// status that ended the stream, found anywhere in `error`'s chain.
pub fn pushback(error: &anyhow::Error) -> Option<std::time::Duration> {
    let status = error
        .chain()
        .find_map(|e| e.downcast_ref::<tonic::Status>())?;
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    let ms: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms).min(MAX_PUSHBACK))
}

/// The collectors an agent streams to, in the order they were given, and
/// the one it tries next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collectors {
    urls: Vec<String>,
    current: usize,
    /// Per collector, when it said it may be tried again.
    held: Vec<Option<std::time::Instant>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CollectorsError {
    #[error("no collector address given: pass --collector HOST:PORT[,HOST:PORT...]")]
    Empty,
    #[error("empty address in the collector list {list:?} (a doubled or trailing comma)")]
    EmptyEntry { list: String },
}

impl Collectors {
    /// The addresses in a comma-separated `list`, each passed through
    /// `to_url` (such as [`crate::tls::collector_url`]). Blanks around an
    /// entry are ignored; an empty entry is an error, since it is most
    /// likely a typo in a script rather than a wish.
    pub fn parse(list: &str, to_url: impl Fn(&str) -> String) -> Result<Self, CollectorsError> {
        if list.trim().is_empty() {
            return Err(CollectorsError::Empty);
        }
        let urls = list
            .split(',')
            .map(|entry| {
                let entry = entry.trim();
                if entry.is_empty() {
                    Err(CollectorsError::EmptyEntry { list: list.into() })
                } else {
                    Ok(to_url(entry))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Collectors {
            held: vec![None; urls.len()],
            urls,
            current: 0,
        })
    }

    /// The current collector said to try it again no sooner than `until`.
    pub fn hold(&mut self, until: std::time::Instant) {
        self.held[self.current] = Some(until);
    }

    /// How long the current collector's retry time still holds it back
    /// (zero when it never said, or said for a time already past).
    pub fn held_for(&self, now: std::time::Instant) -> std::time::Duration {
        self.held[self.current].map_or(std::time::Duration::ZERO, |t| {
            t.saturating_duration_since(now)
        })
    }

    /// The collector to connect to now.
    pub fn current(&self) -> &str {
        &self.urls[self.current]
    }

    /// Gives up on the current collector (it refused, timed out or broke
    /// the stream) and moves to the next, wrapping around: with one
    /// collector this is the same one again, after the caller's backoff.
    pub fn fail_over(&mut self) -> &str {
        self.current = (self.current + 1) % self.urls.len();
        self.current()
    }

    /// Every address, in the order given.
    pub fn all(&self) -> &[String] {
        &self.urls
    }

    /// The list as the config carries it (comma-separated URLs).
    pub fn joined(&self) -> String {
        self.urls.join(",")
    }
}

#[cfg(test)]
mod tests {

    fn refused(code: tonic::Code, retry: Option<&str>) -> anyhow::Error {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(r) = retry {
            metadata.insert("grpc-retry-pushback-ms", r.parse().unwrap());
        }
        anyhow::Error::new(tonic::Status::with_metadata(code, "busy", metadata))
            .context("streaming to the collector")
    }

    #[test]
    fn a_busy_collector_s_retry_time_is_honoured_within_bounds() {
        use std::time::Duration;
        let busy = refused(tonic::Code::Unavailable, Some("1500"));
        assert_eq!(pushback(&busy), Some(Duration::from_millis(1500)));
        // Bounded, whatever the collector says.
        let far = refused(tonic::Code::Unavailable, Some("999999999"));
        assert_eq!(pushback(&far), Some(Duration::from_secs(300)));
        // Nothing to honour: no time, a bad one, another code, another error.
        assert_eq!(pushback(&refused(tonic::Code::Unavailable, None)), None);
        assert_eq!(
            pushback(&refused(tonic::Code::Unavailable, Some("soon"))),
            None
        );
        assert_eq!(
            pushback(&refused(tonic::Code::Internal, Some("1500"))),
            None
        );
        assert_eq!(pushback(&anyhow::anyhow!("connection refused")), None);
    }

    use super::*;

    /// What `tls::collector_url` does without TLS files.
    fn http(addr: &str) -> String {
        crate::tls::collector_url(addr, &crate::tls::ClientTls::default())
    }

    #[test]
    fn one_address_stays_on_it() {
        let mut c = Collectors::parse("127.0.0.1:7373", http).unwrap();
        assert_eq!(c.current(), "http://127.0.0.1:7373");
        assert_eq!(c.fail_over(), "http://127.0.0.1:7373");
        assert_eq!(c.all().len(), 1);
    }

    #[test]
    fn failures_rotate_through_the_list_in_order_and_wrap() {
        let mut c = Collectors::parse("a:1, b:2 ,https://c:3", http).unwrap();
        assert_eq!(c.current(), "http://a:1");
        assert_eq!(c.fail_over(), "http://b:2");
        // No failure: the agent stays where it is.
        assert_eq!(c.current(), "http://b:2");
        assert_eq!(c.fail_over(), "https://c:3");
        assert_eq!(c.fail_over(), "http://a:1");
        assert_eq!(c.joined(), "http://a:1,http://b:2,https://c:3");
    }

    /// A busy collector's retry time holds back that collector, not a
    /// failover to the next one.
    #[test]
    fn a_retry_time_holds_back_only_the_collector_that_said_it() {
        let mut c = Collectors::parse("a:1,b:2", http).unwrap();
        let now = std::time::Instant::now();
        assert_eq!(c.held_for(now), std::time::Duration::ZERO);
        c.hold(now + std::time::Duration::from_secs(5));
        assert_eq!(c.held_for(now), std::time::Duration::from_secs(5));
        assert_eq!(c.fail_over(), "http://b:2");
        assert_eq!(c.held_for(now), std::time::Duration::ZERO);
        assert_eq!(c.fail_over(), "http://a:1");
        assert_eq!(
            c.held_for(now + std::time::Duration::from_secs(2)),
            std::time::Duration::from_secs(3)
        );
        assert_eq!(
            c.held_for(now + std::time::Duration::from_secs(9)),
            std::time::Duration::ZERO
        );
    }

    #[test]
    fn a_joined_list_parses_back_to_the_same_urls() {
        let c = Collectors::parse("a:1,b:2", http).unwrap();
        let again = Collectors::parse(&c.joined(), |u| u.to_string()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn empty_lists_and_entries_are_errors() {
        assert_eq!(Collectors::parse(" ", http), Err(CollectorsError::Empty));
        assert!(matches!(
            Collectors::parse("a:1,,b:2", http),
            Err(CollectorsError::EmptyEntry { .. })
        ));
        assert!(matches!(
            Collectors::parse("a:1,", http),
            Err(CollectorsError::EmptyEntry { .. })
        ));
    }
}
