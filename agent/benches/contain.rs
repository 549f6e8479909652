//! What an attached isolation costs the workload it lets through: loopback
//! TCP throughput (every segment and ACK passes the cgroup_skb egress
//! program) and connects per second (each also passes cgroup/connect4),
//! from this process inside a cgroup with contain.bpf.o attached in enforce
//! mode (loopback is always allowed), against the same in a sibling cgroup
//! with no program. The two are interleaved round by round, in alternating
//! order, so drift on a shared machine hits both alike; medians and their
//! ratio are printed.
//!
//! Needs root. Run: `cargo bench -p patchgap-agent --bench contain`.
//! Cleans up its cgroups and pins on exit, also on a panic.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use patchgap_agent::contain::{Applied, Executor, Isolation, Mode};

const UNIFIED: &str = "/sys/fs/cgroup/unified";
const ROUNDS: usize = 15;
const SLICE: Duration = Duration::from_millis(300);

/// A cgroup of the bench's; Drop moves this process back to the root first.
struct Cgroup(PathBuf);

impl Cgroup {
    fn enter(&self) {
        fs::write(self.0.join("cgroup.procs"), std::process::id().to_string())
            .expect("move into the cgroup");
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::write(
            Path::new(UNIFIED).join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = fs::remove_dir(&self.0);
    }
}

/// The bench's bpffs directory: Drop lifts whatever is still pinned.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Ok(mut exec) = Executor::new(self.0.clone()) {
            exec.reconcile(&[]);
        }
        let _ = fs::remove_dir(&self.0);
        let _ = fs::remove_dir(self.0.parent().unwrap());
    }
}

/// CPU time this process has used (every thread, user and system; the
/// loopback softirq work runs in the sending thread's context), in seconds.
fn cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec; the clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A rate per wall-clock second and per CPU second of this process. The
/// machine is shared (other builds run on its two cores), so the wall rate
/// is noisy; the CPU rate measures what the work itself costs.
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

/// Bytes per second from one loopback TCP stream for `SLICE`. Both sockets
/// are created here, so they belong to the cgroup this process is in.
fn throughput() -> Rate {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let buf = vec![0x5au8; 1 << 16];
    let cpu0 = cpu_s();
    let start = Instant::now();
    while start.elapsed() < SLICE {
        s.write_all(&buf).unwrap();
    }
    drop(s);
    let total = reader.join().unwrap() as f64;
    Rate {
        wall: total / start.elapsed().as_secs_f64(),
        cpu: total / (cpu_s() - cpu0),
    }
}

/// Connects (and resets) per second to a loopback listener for `SLICE`.
fn connects() -> Rate {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // A blocking accept that never sleeps: a polling one let the accept
    // queue overflow, a dropped SYN is retried only a second later, and by
    // then the listener was gone (ECONNREFUSED).
    let acceptor = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            for c in listener.incoming() {
                drop(c);
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        })
    };
    let cpu0 = cpu_s();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < SLICE {
        let s = TcpStream::connect(addr).expect("loopback connect");
        // SO_LINGER 0: close with a reset, so no TIME_WAIT piles up and
        // the ephemeral ports last the whole run.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket descriptor and a valid linger struct of
        // the size passed.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        n += 1;
    }
    let rate = Rate {
        wall: n as f64 / start.elapsed().as_secs_f64(),
        cpu: n as f64 / (cpu_s() - cpu0),
    };
    stop.store(true, Ordering::Relaxed);
    // One more connect wakes the acceptor to see the flag.
    let _ = TcpStream::connect(addr);
    acceptor.join().unwrap();
    rate
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let pid = std::process::id();
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/pgct-bench-{pid}/contain"
    )));
    let isolated = Cgroup(Path::new(UNIFIED).join(format!("pgct-bench-{pid}-isolated")));
    let plain = Cgroup(Path::new(UNIFIED).join(format!("pgct-bench-{pid}-plain")));
    fs::create_dir(&isolated.0).expect("create the isolated cgroup (root needed)");
    fs::create_dir(&plain.0).expect("create the plain cgroup");

    let mut exec = Executor::new(pins.0.clone()).expect("executor");
    let applied = exec.reconcile(&[Isolation {
        id: "bench".into(),
        cgroup: isolated.0.clone(),
        mode: Mode::Enforce,
        allow: vec!["192.0.2.53".parse().unwrap()],
    }]);
    assert!(
        matches!(applied.as_slice(), [Applied::Attached { .. }]),
        "{applied:?}"
    );

    // Warm up both paths once.
    plain.enter();
    throughput();
    isolated.enter();
    throughput();

    let (mut tp_plain, mut tp_iso, mut cn_plain, mut cn_iso) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let order: [&Cgroup; 2] = if round % 2 == 0 {
            [&plain, &isolated]
        } else {
            [&isolated, &plain]
        };
        for cg in order {
            cg.enter();
            let (tp, cn) = (throughput(), connects());
            if std::ptr::eq(cg, &isolated) {
                tp_iso.push(tp);
                cn_iso.push(cn);
            } else {
                tp_plain.push(tp);
                cn_plain.push(cn);
            }
        }
    }
    // Back to the root before anything is released.
    fs::write(Path::new(UNIFIED).join("cgroup.procs"), pid.to_string()).unwrap();

    let c = exec.status("bench").expect("counters");
    assert_eq!(
        (c.blocked_connects, c.blocked_packets),
        (0, 0),
        "loopback was blocked: {c:?}"
    );

    let m = |v: &[Rate], f: fn(&Rate) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let wall = |r: &Rate| r.wall;
    let cpu = |r: &Rate| r.cpu;
    println!("contain bench: {ROUNDS} interleaved rounds of {SLICE:?} each, medians");
    for (what, unit, scale, p, i) in [
        (
            "loopback TCP throughput",
            "MiB/s",
            1048576.0,
            &tp_plain,
            &tp_iso,
        ),
        ("loopback connects", "/s", 1.0, &cn_plain, &cn_iso),
    ] {
        for (clock, f) in [("wall", wall as fn(&Rate) -> f64), ("per CPU second", cpu)] {
            let (vp, vi) = (m(p, f), m(i, f));
            println!(
                "  {what}, {clock}: no program {:.0} {unit}, isolated {:.0} {unit}, ratio {:.3}",
                vp / scale,
                vi / scale,
                vi / vp
            );
        }
    }
    let (cp, ci) = (m(&cn_plain, cpu), m(&cn_iso, cpu));
    println!(
        "  CPU per connect: no program {:.1} us, isolated {:.1} us (added {:.1} us)",
        1e6 / cp,
        1e6 / ci,
        1e6 / ci - 1e6 / cp
    );
}
