//! The operator binary run as a child process, as it runs in a pod: its own kubeconfig,
//! flags, admin port and signals.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

/// A running `secret-relay run`; killed (SIGKILL) when dropped.
pub struct Process {
    /// The child; `kill_on_drop` is set.
    pub child: Child,
    /// Where its admin server (/livez, /readyz, /metrics) listens.
    pub admin: SocketAddr,
}

/// A free loopback port for an admin server.
pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

impl Process {
    /// Starts `secret-relay run ARGS` with `kubeconfig`; stdout/stderr go to
    /// `log_dir/<name>.log` so a failing test can be diagnosed.
    pub fn start(kubeconfig: &Path, args: &[&str], envs: &[(&str, &str)], log: &Path) -> Process {
        let admin = free_port();
        let out = std::fs::File::create(log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = Command::new(env!("CARGO_BIN_EXE_secret-relay"))
            .arg("run")
            .args(["--admin-addr", &admin.to_string()])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG")
            .envs(envs.iter().copied())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("start secret-relay");
        Process { child, admin }
    }

    /// GETs `path` of the admin server: `(status, body)`, or None when it is not listening yet.
    pub async fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(self.admin).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.admin);
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8(buf).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// The parsed `/metrics` page.
    pub async fn metrics(&self) -> prometheus_parse::Scrape {
        let (status, body) = self.admin_get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200, "/metrics status");
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("/metrics parses as Prometheus text")
    }

    /// Sends a signal (`TERM`, `KILL`) with kill(1).
    pub async fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("process running");
        let status = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {pid}");
    }
}

/// The value of one sample of `name` whose labels include every `(key, value)` of `labels`,
/// summed over the matching samples; 0 when there is none.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => {
                h.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}
