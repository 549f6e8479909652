//! Loaders under the live agent (issue 11, defects 4 and 5): Perl's XS
//! modules, loaded by `dlopen` through a symlinked directory, and code
//! loaded from a memfd or an unlinked file, which no path on disk names.
//! Real processes, the real eBPF sensor, a collector in process.

use std::{process::Command, time::Duration};

use patchgap_proto::v1;
use patchgap_tests::*;

/// Lets the agent read what the kernel has queued (the ring is drained every
/// 50 ms, events are batched for 200 ms, an exec is rescanned 100 ms
/// later), then scans and waits until the collector has stored everything.
async fn settle(h: &Harness) {
    tokio::time::sleep(Duration::from_millis(800)).await;
    h.sync().await;
}

/// The XS modules of issue 11's Perl case, as /proc/PID/maps names them.
/// Perl's @INC spells their directory `perl/5.36`, a symlink to the
/// `perl/5.36.0` that dpkg lists.
const XS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/perl/5.36.0/auto/IPC/SysV/SysV.so",
    "/usr/lib/x86_64-linux-gnu/perl/5.36.0/auto/Devel/Peek/Peek.so",
];

/// Issue 11, defect 4: three `perl -MIPC::SysV -MDevel::Peek` processes
/// started under the live agent must be listed under libperl5.36 with both
/// XS .so files mapped, as a one-shot scan lists them. Before the fix, the
/// eBPF open of `perl/5.36/auto/…/SysV.so` (the symlinked spelling dpkg
/// does not list) was resolved first and its "no package" was cached under
/// the file's inode, so every later scan's mapping of the same file, under
/// dpkg's own spelling, answered "no package" too: 0 of 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perl_xs_modules_are_kept_by_the_live_agent() {
    let h = Harness::start().await;
    let perls: Vec<Proc> = (0..3)
        .map(|_| {
            spawn_ready(Command::new("/usr/bin/perl").args([
                "-MIPC::SysV",
                "-MDevel::Peek",
                "-e",
                "$| = 1; print qq(ready\\n); sleep 1e6",
            ]))
        })
        .collect();
    for p in &perls {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid())).unwrap();
        assert!(XS.iter().all(|so| maps.contains(so)), "perl maps {XS:?}");
    }
    settle(&h).await;

    let r = h.find("libperl5.36", "").await;
    let mut complete = 0;
    for p in &perls {
        let m = r
            .matches
            .iter()
            .find(|m| m.key.is_some_and(|k| k.pid == p.pid()));
        let paths: Vec<String> = m
            .map(|m| {
                m.paths
                    .iter()
                    .filter(|p| p.evidence == "mapped")
                    .map(|p| String::from_utf8_lossy(&p.path).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if XS.iter().all(|so| paths.iter().any(|p| p == so)) {
            complete += 1;
        } else {
            eprintln!("perl {} under libperl5.36: {paths:?}", p.pid());
        }
    }
    eprintln!(
        "perl: {complete}/{} processes list libperl5.36 with both XS .so mapped",
        perls.len()
    );
    assert_eq!(complete, perls.len());
    drop(perls);
    h.stop().await;
}

/// The loader of issue 11's memfd cases, one case per process. It never
/// runs code of its own from the memfd beyond what the case is about.
const LOADER: &str = r#"
import ctypes, mmap, os, shutil, sys, time
case, lib = sys.argv[1], sys.argv[2]
def ready():
    print('ready', flush=True)
    time.sleep(120)
if case == 'exec':
    # (a) fexecve: a copy of an executable in a memfd, exec'd through
    # /proc/self/fd/N. It prints nothing: the test waits for its mapping.
    fd = os.memfd_create('pg-exec', 0)
    os.write(fd, open(lib, 'rb').read())
    os.execv('/proc/self/fd/%d' % fd, ['pg-exec', '120'])
elif case == 'memfd':
    # (b) a shared library written to a memfd and dlopen'd.
    fd = os.memfd_create('pg-lib')
    os.write(fd, open(lib, 'rb').read())
    keep = ctypes.CDLL('/proc/self/fd/%d' % fd)
    ready()
elif case == 'unlinked':
    # (c) a copy in a temporary file, opened, unlinked, then dlopen'd.
    path = sys.argv[3]
    shutil.copyfile(lib, path)
    fd = os.open(path, os.O_RDONLY)
    os.unlink(path)
    keep = ctypes.CDLL('/proc/self/fd/%d' % fd)
    ready()
elif case == 'shm':
    # (d) a memfd as shared memory, mapped rw: not code.
    fd = os.memfd_create('pg-shm')
    os.ftruncate(fd, 1 << 16)
    keep = mmap.mmap(fd, 1 << 16)
    keep[:5] = b'hello'
    ready()
"#;

/// SHA-256 of a file, by coreutils.
fn sha256(path: &str) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Issue 11, defect 5: code loaded from a memfd or an unlinked file is
/// reported as anonymous code, with its name and the SHA-256 of its
/// content, through to the collector's process list: (a) a memfd exec'd,
/// (b) a library in a memfd dlopen'd, (c) an unlinked copy dlopen'd through
/// /proc/self/fd/N; and (d) a memfd mapped rw is not. Before the fix the
/// maps parser dropped every memfd and an unlinked file was only a stale
/// mapping with no package: 0 of the 3 code cases were reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_from_memfds_and_unlinked_files_is_reported_with_its_hash() {
    // Libraries of Debian packages that python does not map itself.
    let lib = "/usr/lib/x86_64-linux-gnu/libgraphite2.so.3.2.1";
    let exe = "/usr/bin/sleep";
    let dir = tempfile::tempdir().unwrap();
    let unlinked = dir.path().join("pg-unlinked.so");
    let unlinked = unlinked.to_str().unwrap();
    let h = Harness::start().await;
    let python = |case: &str, file: &str| {
        let mut c = Command::new("/usr/bin/python3");
        c.args(["-c", LOADER, case, file, unlinked]);
        c
    };
    let exec = spawn_mapping(&mut python("exec", exe), "/memfd:pg-exec");
    let memfd = spawn_ready(&mut python("memfd", lib));
    let deleted = spawn_ready(&mut python("unlinked", lib));
    let shm = spawn_ready(&mut python("shm", lib));
    let maps = |p: &Proc| std::fs::read_to_string(format!("/proc/{}/maps", p.pid())).unwrap();
    assert!(maps(&memfd).contains("/memfd:pg-lib (deleted)"));
    assert!(maps(&deleted).contains(&format!("{unlinked} (deleted)")));
    assert!(maps(&shm).contains("/memfd:pg-shm (deleted)"));
    settle(&h).await;

    let ps = h
        .client()
        .await
        .list_processes(v1::ListProcessesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let anonymous = |p: &Proc| -> Vec<(String, bool, String)> {
        ps.processes
            .iter()
            .find(|s| s.key.is_some_and(|k| k.pid == p.pid()))
            .expect("the process is listed")
            .anonymous_code
            .iter()
            .map(|a| {
                (
                    String::from_utf8_lossy(&a.path).into_owned(),
                    a.deleted,
                    a.content.clone().unwrap_or_default().sha256,
                )
            })
            .collect()
    };
    let cases = [
        (&exec, "/memfd:pg-exec", sha256(exe)),
        (&memfd, "/memfd:pg-lib", sha256(lib)),
        (&deleted, unlinked, sha256(lib)),
    ];
    let mut reported = 0;
    for (p, name, sha) in &cases {
        let got = anonymous(p);
        if got == vec![(name.to_string(), true, sha.clone())] {
            reported += 1;
        } else {
            eprintln!("{name}: anonymous code {got:?}");
        }
    }
    let shm_got = anonymous(&shm);
    eprintln!(
        "memfd: {reported}/{} code cases reported with name and hash, {}/1 rw case not reported",
        cases.len(),
        usize::from(shm_got.is_empty())
    );
    assert_eq!(reported, cases.len());
    assert!(shm_got.is_empty(), "a rw memfd is not code: {shm_got:?}");
    h.stop().await;
}
