//! Test-only helpers for the collector parsers' fuzz-style tests (OSV,
//! SBOM): a deterministic generator and the mutations they apply to real
//! fixtures. The agent's parsers have the same in agent/src/parse/fuzz.rs;
//! test code of one crate cannot be shared with another's tests.

/// The calling thread's CPU time since [`CpuTimer::start`]: what the
/// "finishes quickly" guards bound. They guard against super-linear work,
/// and a wall clock on a shared, loaded machine measures the neighbours
/// too (a 60 s wall bound failed at 62.6 s in CI while the work itself was
/// unchanged); the thread's own CPU time does not grow with the load.
pub(crate) struct CpuTimer(std::time::Duration);

impl CpuTimer {
    pub(crate) fn start() -> CpuTimer {
        CpuTimer(thread_cpu())
    }

    pub(crate) fn elapsed(&self) -> std::time::Duration {
        thread_cpu().saturating_sub(self.0)
    }
}

fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A xorshift64* generator: deterministic, dependency-free, good enough to
/// shake out panics.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Up to 300 bytes, three in four drawn from `alphabet` (bytes that mean
/// something to the parser under test), so random inputs get past the
/// first checks more often than pure noise.
pub(crate) fn random_input(rng: &mut Rng, alphabet: &[u8]) -> Vec<u8> {
    let len = rng.below(300);
    (0..len)
        .map(|_| {
            if rng.below(4) == 0 || alphabet.is_empty() {
                rng.next() as u8
            } else {
                alphabet[rng.below(alphabet.len())]
            }
        })
        .collect()
}

/// A fixture with one to nine random edits: overwrites, insertions of
/// structural bytes, deletions, truncation and duplicated ranges.
pub(crate) fn mutate(rng: &mut Rng, fixture: &[u8], alphabet: &[u8]) -> Vec<u8> {
    let mut out = fixture.to_vec();
    let structural = |rng: &mut Rng| {
        if alphabet.is_empty() {
            rng.next() as u8
        } else {
            alphabet[rng.below(alphabet.len())]
        }
    };
    for _ in 0..=rng.below(8) {
        let pos = rng.below(out.len() + 1);
        match rng.below(6) {
            // Overwrite one byte with something random.
            0 if pos < out.len() => out[pos] = rng.next() as u8,
            // Overwrite one byte with a structural byte.
            1 if pos < out.len() => out[pos] = structural(rng),
            // Insert a structural byte.
            2 => {
                let b = structural(rng);
                out.insert(pos, b);
            }
            // Delete a short range.
            3 => {
                let end = (pos + rng.below(16)).min(out.len());
                out.drain(pos..end);
            }
            // Truncate.
            4 => out.truncate(pos),
            // Duplicate a short range somewhere else.
            _ => {
                let end = (pos + rng.below(64)).min(out.len());
                let chunk = out[pos..end].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, chunk);
            }
        }
    }
    out
}
