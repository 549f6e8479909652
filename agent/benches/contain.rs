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
use std::thread;
use std::time::{Duration, Instant};

use patchgap_agent::contain::{Applied, Executor, Isolation, Mode};

const UNIFIED: &str = "/sys/fs/cgroup/unified";
const ROUNDS: usize = 9;
const SLICE: Duration = Duration::from_millis(400);

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

/// Bytes per second from one loopback TCP stream for `SLICE`. Both sockets
/// are created here, so they belong to the cgroup this process is in.
fn throughput() -> f64 {
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
    let start = Instant::now();
    while start.elapsed() < SLICE {
        s.write_all(&buf).unwrap();
    }
    drop(s);
    let total = reader.join().unwrap();
    total as f64 / start.elapsed().as_secs_f64()
}

/// Connects (and resets) per second to a loopback listener for `SLICE`.
fn connects() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        while start.elapsed() < SLICE + Duration::from_millis(200) {
            match listener.accept() {
                Ok(_) => {}
                Err(_) => thread::sleep(Duration::from_micros(200)),
            }
        }
    });
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < SLICE {
        let s = TcpStream::connect(addr).unwrap();
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
    let rate = n as f64 / start.elapsed().as_secs_f64();
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

    let (tp_p, tp_i) = (median(&mut tp_plain), median(&mut tp_iso));
    let (cn_p, cn_i) = (median(&mut cn_plain), median(&mut cn_iso));
    println!("contain bench: {ROUNDS} interleaved rounds of {SLICE:?} each, medians");
    println!(
        "  loopback TCP throughput: no program {:.0} MiB/s, isolated {:.0} MiB/s, ratio {:.3}",
        tp_p / 1048576.0,
        tp_i / 1048576.0,
        tp_i / tp_p
    );
    println!(
        "  loopback connects/s:     no program {:.0}/s, isolated {:.0}/s, ratio {:.3}",
        cn_p,
        cn_i,
        cn_i / cn_p
    );
    println!(
        "  per connect, added: {:.2} us",
        (1.0 / cn_i - 1.0 / cn_p) * 1e6
    );
}
