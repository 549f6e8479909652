//! A real Alertmanager (Debian's `prometheus-alertmanager`, which
//! tests/deps.sh installs) on a loopback port: clustering off, its own
//! storage and a route to nowhere, so nothing leaves the machine. The
//! same setup as collector/tests/webhooks.rs (which cannot depend on this
//! crate); killed and its files removed on drop.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A running Alertmanager.
pub struct Alertmanager {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("prometheus-alertmanager (tests/deps.sh installs it)");
        let am = Alertmanager {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(addr, "/-/ready").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "Alertmanager did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// Its base URL, as `--alertmanager` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The alerts `GET /api/v2/alerts` lists (active ones: a resolved
    /// alert is not listed).
    pub fn alerts(&self) -> Vec<Value> {
        let (status, body) = http_get(self.addr, "/api/v2/alerts").expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}
