//! nginx as the peer: `grpc_pass` in front of the same adapter, checking
//! nothing and logging nothing. Runs as a child process from a minimal
//! configuration in the benchmark's temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::BenchError;
use crate::deploy::{PeakRss, parse_status_kib, tail};

/// How long nginx may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The nginx binary on `PATH` or in its usual places.
pub fn find() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// The configuration: `worker_processes auto` (nginx's recommendation),
/// upstream keep-alive so connections are reused, h2c on the listener.
pub fn config(dir: &Path, listen_port: u16, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"# Written by tongban bench: a plain gRPC proxy.
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream adapter {{
        server {upstream};
        keepalive 1024;
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{listen_port} http2;
        http2_max_concurrent_streams 1024;
        keepalive_requests 1000000;
        location / {{
            grpc_pass grpc://adapter;
        }}
    }}
}}
"#
    )
}

/// A running nginx.
#[derive(Debug)]
pub struct Nginx {
    binary: PathBuf,
    dir: PathBuf,
    child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx in `dir` proxying to `upstream`.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        upstream: SocketAddr,
    ) -> Result<Self, BenchError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
        // nginx binds by itself: take a free port and hand it over.
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| BenchError::io("finding a free port", e))?;
            probe
                .local_addr()
                .map_err(|e| BenchError::io("finding a free port", e))?
                .port()
        };
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(dir, port, upstream))
            .map_err(|e| BenchError::io(format!("writing {}", conf.display()), e))?;
        let error_log = dir.join("error.log");
        let mut child = tokio::process::Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::io(format!("starting {}", binary.display()), e))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BenchError::Nginx(format!(
                    "nginx exited with {status}: {}",
                    tail(&error_log)
                )));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(BenchError::Nginx(format!(
                    "nginx did not listen on {addr} within {START_TIMEOUT:?}: {}",
                    tail(&error_log)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            child,
            addr,
        })
    }

    /// The last lines of nginx's error log.
    pub fn error_log_tail(&self) -> String {
        crate::deploy::tail(&self.dir.join("error.log"))
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<String> {
        let Some(master) = self.child.id() else {
            return Vec::new();
        };
        std::iter::once(master)
            .chain(children_of(master))
            .map(|p| p.to_string())
            .collect()
    }

    /// Sum of the peak RSS of the master and its workers.
    pub fn peak_rss(&self) -> Option<PeakRss> {
        let master = self.child.id()?;
        let mut pids = vec![master];
        pids.extend(children_of(master));
        let kib: u64 = pids
            .iter()
            .filter_map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                parse_status_kib(&status, "VmHWM:")
            })
            .sum();
        (kib > 0).then(|| PeakRss {
            mib: kib as f64 / 1024.0,
            scope: format!("nginx master + {} workers (sum of peaks)", pids.len() - 1),
        })
    }

    /// Fast shutdown of master and workers (SIGKILL would orphan workers).
    pub async fn stop(mut self) {
        let _ = tokio::process::Command::new(&self.binary)
            .arg("-p")
            .arg(&self.dir)
            .arg("-e")
            .arg(self.dir.join("error.log"))
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Processes whose parent is `pid` (from `/proc/<pid>/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| {
            std::fs::read_to_string(format!("/proc/{candidate}/stat"))
                .ok()
                .and_then(|stat| parent_pid(&stat))
                == Some(pid)
        })
        .collect()
}

/// The 4th field of `/proc/<pid>/stat`, after the parenthesised name.
fn parent_pid(stat: &str) -> Option<u32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_skips_names_with_spaces() {
        assert_eq!(parent_pid("42 (nginx: worker) S 41 41 1 0"), Some(41));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn config_proxies_to_the_upstream() {
        let text = config(
            Path::new("/tmp/x"),
            8080,
            "127.0.0.1:50061".parse().unwrap(),
        );
        assert!(text.contains("listen 127.0.0.1:8080 http2;"));
        assert!(text.contains("server 127.0.0.1:50061;"));
        assert!(text.contains("grpc_pass grpc://adapter;"));
        assert!(text.contains("access_log off;"));
        assert!(!text.contains("daemon"));
    }
}
