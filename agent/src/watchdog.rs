//! The agent's watchdog: it measures the agent's own CPU and resident
//! memory and, past the caps, sheds work, the most expensive first: library
//! opens (the busiest tracepoints), then connects. It never kills anything
//! and never blocks: shedding only narrows what the agent watches, and the
//! periodic /proc scan goes on, so the host keeps its inventory. In the
//! spirit of osquery's watchdog (which restarts its worker instead: here the
//! agent is one process, and restarting would lose the sensor's state).
//!
//! A level goes up when the average over the window is over a cap, and
//! down once a whole window stays under 80 % of both caps (hysteresis, so
//! the sensor is not re-attached every few seconds). The measuring thread
//! is its own: it never runs on the async workers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

#[derive(Debug, Clone, PartialEq)]
pub struct WatchdogConfig {
    /// CPU cap, in percent of one core (5.0 is 5 %); 0 turns it off.
    pub cpu_percent: f64,
    /// Resident memory cap in bytes; 0 turns it off.
    pub rss_bytes: u64,
    /// Time between measurements.
    pub interval: Duration,
    /// The CPU cap applies to the average over this window.
    pub window: Duration,
}

impl Default for WatchdogConfig {
    /// Off: the library's default, since `patchgap up` shares its process
    /// with the collector. `patchgap-agent run` turns it on (5 %, 200 MB).
    fn default() -> Self {
        WatchdogConfig {
            cpu_percent: 0.0,
            rss_bytes: 0,
            interval: Duration::from_secs(5),
            window: Duration::from_secs(60),
        }
    }
}

impl WatchdogConfig {
    pub fn enabled(&self) -> bool {
        self.cpu_percent > 0.0 || self.rss_bytes > 0
    }
}

/// What the watchdog decided, shared with the scan loop (which owns the
/// sensor and applies the level) and the heartbeat.
#[derive(Debug, Default)]
pub struct Shed {
    /// 0: nothing; 1: opens; 2: opens and connects.
    level: AtomicU8,
    trips: AtomicU64,
    cpu_permille: AtomicU32,
    rss_bytes: AtomicU64,
    stop: AtomicBool,
}

impl Shed {
    pub fn level(&self) -> u8 {
        self.level.load(Ordering::Relaxed)
    }

    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    pub fn cpu_permille(&self) -> u32 {
        self.cpu_permille.load(Ordering::Relaxed)
    }

    pub fn rss_bytes(&self) -> u64 {
        self.rss_bytes.load(Ordering::Relaxed)
    }

    /// The level as a list of what is shed.
    pub fn describe(level: u8) -> &'static str {
        match level {
            0 => "",
            1 => "opens",
            _ => "opens,connects",
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One measurement: CPU time used so far and resident bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub cpu: Duration,
    pub rss: u64,
}

/// This process's CPU time (user + system) and resident set.
pub fn measure() -> Sample {
    // SAFETY: getrusage writes the struct it is given and has no other effect.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    // Resident pages are the second field of statm (a small procfs read).
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        // SAFETY: sysconf has no preconditions.
        * (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64);
    Sample {
        at: Instant::now(),
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        rss,
    }
}

/// The decision, apart from measuring, so tests can feed it samples.
#[derive(Debug)]
pub struct Governor {
    config: WatchdogConfig,
    samples: std::collections::VecDeque<Sample>,
    level: u8,
    /// When the last level change happened.
    changed: Option<Instant>,
}

impl Governor {
    pub fn new(config: WatchdogConfig) -> Governor {
        Governor {
            config,
            samples: Default::default(),
            level: 0,
            changed: None,
        }
    }

    /// Adds a sample; returns the level, and the CPU use over the window
    /// in thousandths of a core.
    pub fn observe(&mut self, s: Sample) -> (u8, u32) {
        self.samples.push_back(s);
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|second| s.at.duration_since(second.at) >= self.config.window)
        {
            self.samples.pop_front();
        }
        let first = self.samples.front().copied().expect("just pushed");
        let wall = s.at.duration_since(first.at);
        let cpu = s.cpu.saturating_sub(first.cpu);
        let permille = if wall.is_zero() {
            0
        } else {
            (cpu.as_secs_f64() / wall.as_secs_f64() * 1000.0) as u32
        };
        // A full window is needed to judge CPU (a scan is a short burst).
        let full = wall + self.config.interval >= self.config.window;
        let cpu_cap = self.config.cpu_percent * 10.0;
        let cpu_over = self.config.cpu_percent > 0.0 && full && f64::from(permille) > cpu_cap;
        let rss_over = self.config.rss_bytes > 0 && s.rss > self.config.rss_bytes;
        let cpu_low = self.config.cpu_percent <= 0.0 || f64::from(permille) < cpu_cap * 0.8;
        let rss_low =
            self.config.rss_bytes == 0 || (s.rss as f64) < self.config.rss_bytes as f64 * 0.8;
        // One step per window at most, so each step's effect is measured.
        let settled = self
            .changed
            .is_none_or(|t| s.at.duration_since(t) >= self.config.window);
        if (cpu_over || rss_over) && self.level < 2 && (settled || rss_over) {
            self.level += 1;
            self.changed = Some(s.at);
            // Judge the next level on what follows this one.
            self.samples.clear();
            self.samples.push_back(s);
        } else if cpu_low && rss_low && full && self.level > 0 && settled {
            self.level -= 1;
            self.changed = Some(s.at);
        }
        (self.level, permille)
    }
}

/// Starts the watchdog's thread; it ends when `shed.stop()` is called.
pub fn start(config: WatchdogConfig, shed: Arc<Shed>) -> std::io::Result<()> {
    if !config.enabled() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("patchgap-watchdog".into())
        .spawn(move || {
            let mut governor = Governor::new(config.clone());
            while !shed.stop.load(Ordering::Relaxed) {
                let s = measure();
                let (level, permille) = governor.observe(s);
                let before = shed.level.swap(level, Ordering::Relaxed);
                if level > before {
                    shed.trips.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        cpu_permille = permille,
                        rss_bytes = s.rss,
                        shedding = Shed::describe(level),
                        "watchdog: over the agent's CPU or memory cap; shedding"
                    );
                } else if level < before {
                    tracing::info!(
                        shedding = Shed::describe(level),
                        "watchdog: back under the caps"
                    );
                }
                shed.cpu_permille.store(permille, Ordering::Relaxed);
                shed.rss_bytes.store(s.rss, Ordering::Relaxed);
                // Sleep in steps of a second, so a stop is seen within one
                // (nothing waits for this thread) without waking the agent
                // ten times a second for nothing.
                let until = Instant::now() + config.interval;
                while Instant::now() < until && !shed.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1).min(config.interval));
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WatchdogConfig {
        WatchdogConfig {
            cpu_percent: 5.0,
            rss_bytes: 200 << 20,
            interval: Duration::from_secs(5),
            window: Duration::from_secs(60),
        }
    }

    /// Samples every 5 s using `cpu_share` of a core and `rss` bytes.
    fn feed(
        g: &mut Governor,
        t0: Instant,
        from: u64,
        secs: u64,
        cpu_share: f64,
        cpu0: &mut Duration,
        rss: u64,
    ) -> u8 {
        let mut level = 0;
        for s in (from..from + secs).step_by(5) {
            *cpu0 += Duration::from_secs_f64(5.0 * cpu_share);
            level = g
                .observe(Sample {
                    at: t0 + Duration::from_secs(s + 5),
                    cpu: *cpu0,
                    rss,
                })
                .0;
        }
        level
    }

    #[test]
    fn sustained_cpu_sheds_opens_then_connects_and_recovers() {
        let t0 = Instant::now();
        let mut g = Governor::new(config());
        let mut cpu = Duration::ZERO;
        g.observe(Sample {
            at: t0,
            cpu,
            rss: 10 << 20,
        });
        // A 2 % agent sheds nothing.
        assert_eq!(feed(&mut g, t0, 0, 120, 0.02, &mut cpu, 10 << 20), 0);
        // A short burst (a 5 s scan at 20 % of a core) inside a quiet
        // window averages out under the cap.
        assert_eq!(feed(&mut g, t0, 120, 5, 0.2, &mut cpu, 10 << 20), 0);
        assert_eq!(feed(&mut g, t0, 125, 60, 0.02, &mut cpu, 10 << 20), 0);
        // Sustained 20 %: opens first, a window later connects too.
        assert_eq!(feed(&mut g, t0, 185, 60, 0.2, &mut cpu, 10 << 20), 1);
        assert_eq!(feed(&mut g, t0, 245, 65, 0.2, &mut cpu, 10 << 20), 2);
        assert_eq!(
            feed(&mut g, t0, 310, 300, 0.2, &mut cpu, 10 << 20),
            2,
            "no level past 2"
        );
        // Quiet again: back down a step per window.
        assert_eq!(feed(&mut g, t0, 610, 65, 0.01, &mut cpu, 10 << 20), 1);
        assert_eq!(feed(&mut g, t0, 675, 65, 0.01, &mut cpu, 10 << 20), 0);
    }

    #[test]
    fn memory_over_the_cap_sheds_at_once() {
        let t0 = Instant::now();
        let mut g = Governor::new(config());
        let mut cpu = Duration::ZERO;
        g.observe(Sample {
            at: t0,
            cpu,
            rss: 10 << 20,
        });
        assert_eq!(feed(&mut g, t0, 0, 5, 0.0, &mut cpu, 300 << 20), 1);
        assert_eq!(feed(&mut g, t0, 5, 5, 0.0, &mut cpu, 300 << 20), 2);
    }

    #[test]
    fn measures_this_process() {
        let a = measure();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = measure();
        assert!(b.cpu > a.cpu, "{:?} -> {:?}", a.cpu, b.cpu);
        assert!(b.rss > 1 << 20, "rss {}", b.rss);
    }
}
