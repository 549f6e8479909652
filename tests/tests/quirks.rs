//! Smaller cases of issue 11 (defect 10), on real processes: a real file
//! named "x (deleted)", and command lines with MySQL-style passwords.

use std::{os::unix::process::CommandExt, path::Path, process::Command};

use patchgap_tests::*;

fn scan(pid: u32) -> patchgap_agent::model::Process {
    patchgap_agent::scan_once(Path::new("/proc"), Default::default())
        .processes
        .into_iter()
        .find(|p| p.key.pid == pid)
        .expect("process scanned")
}

/// /proc/PID/maps appends " (deleted)" to an unlinked file's name, so a
/// file really named "x (deleted)" reads like a deleted "x". The agent
/// tells them apart by the file's device and inode.
#[test]
fn a_real_file_named_deleted_is_not_reported_as_deleted() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["x (deleted)", "y", "z (deleted)"] {
        std::fs::write(dir.path().join(name), b"some bytes to map").unwrap();
    }
    let script = "import mmap, os, sys, time\n\
                  d = sys.argv[1]\n\
                  keep = []\n\
                  for n in ['x (deleted)', 'y', 'z (deleted)']:\n\
                  \x20   f = open(os.path.join(d, n), 'rb')\n\
                  \x20   keep.append((f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)))\n\
                  os.unlink(os.path.join(d, 'y'))\n\
                  os.unlink(os.path.join(d, 'z (deleted)'))\n\
                  print('ready', flush=True)\n\
                  time.sleep(120)\n";
    let proc = spawn_ready(
        Command::new("/usr/bin/python3")
            .args(["-c", script])
            .arg(dir.path()),
    );
    let p = scan(proc.pid());
    let find = |name: &str| {
        let want = dir.path().join(name);
        p.artifacts
            .iter()
            .find(|a| a.path.0 == want.as_os_str().as_encoded_bytes())
            .unwrap_or_else(|| panic!("{name} not among {:?}", p.artifacts))
    };
    let x = find("x (deleted)");
    assert!(!x.deleted && !x.stale, "a real file by that name: {x:?}");
    let y = find("y");
    assert!(y.deleted && y.stale, "{y:?}");
    // A file named "z (deleted)" that was deleted: "z (deleted) (deleted)".
    let z = find("z (deleted)");
    assert!(z.deleted && z.stale, "{z:?}");
}

/// `-pPASSWORD` (MySQL's attached password) and `-p PASSWORD` are redacted
/// for the programs that take a password there, as their real command
/// line shows; `--pass X` and `--db-pass=Y` everywhere.
#[test]
fn mysql_style_passwords_are_redacted_from_a_live_process() {
    // bash named "mysql" by its argv[0], running a sleep it does not exec
    // into (the trailing ':'), with the arguments after the script.
    let proc = spawn_mapping(
        Command::new("/bin/bash").arg0("mysql").args([
            "-c",
            "sleep 120; :",
            "-uroot",
            "-phunter2",
            "--pass",
            "hunter3",
            "--db-pass=hunter4",
        ]),
        "libc.so",
    );
    let p = scan(proc.pid());
    assert!(
        p.cmdline.starts_with("mysql -c"),
        "argv[0] as given: {}",
        p.cmdline
    );
    for secret in ["hunter2", "hunter3", "hunter4"] {
        assert!(!p.cmdline.contains(secret), "{secret} in {}", p.cmdline);
    }
    assert!(
        p.cmdline
            .ends_with("-uroot -p<redacted> --pass <redacted> --db-pass=<redacted>"),
        "{}",
        p.cmdline
    );
}

/// The real terraform on this image replaces nine of its own modules by
/// local directories (`=> ./internal/backend/remote-state/azure (devel)`):
/// the agent names them by the module path the requirements give and
/// records the replacement, through to the collector's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_local_replacements_keep_the_required_module_path() {
    let exe = "/usr/local/bin/terraform";
    if !patchgap_tests::image::has(exe) {
        return;
    }
    let proc = stopped_at_exec(exe);
    let p = scan(proc.pid());
    let golang: Vec<_> = p
        .artifacts
        .iter()
        .filter_map(|a| a.package.as_ref())
        .filter(|pkg| pkg.ecosystem == "golang")
        .collect();
    assert!(golang.len() > 100, "{}", golang.len());
    assert!(
        golang.iter().all(|pkg| !pkg.name.starts_with("./")),
        "no module named after a directory"
    );
    let azure = "github.com/hashicorp/terraform/internal/backend/remote-state/azure";
    let m = golang
        .iter()
        .find(|pkg| pkg.name == azure)
        .expect("the required module path");
    assert_eq!(
        (m.version.as_str(), m.replaced_by.as_str()),
        (
            "v0.0.0-00010101000000-000000000000",
            "./internal/backend/remote-state/azure"
        )
    );
    assert_eq!(
        golang
            .iter()
            .filter(|pkg| pkg.replaced_by.starts_with("./"))
            .count(),
        9
    );

    let h = Harness::start().await;
    h.sync().await;
    let r = h.find(azure, "").await;
    let found = r
        .matches
        .iter()
        .find(|m| m.key.is_some_and(|k| k.pid == proc.pid()))
        .expect("terraform listed under the module path");
    let pkg = found.package.as_ref().unwrap();
    assert_eq!(pkg.replaced_by, "./internal/backend/remote-state/azure");
    assert_eq!(found.evidence, "embedded");
    h.stop().await;
}
