//! A server binary of the kit as a child process, for tests that need a real process (a
//! signal, a kill, its memory): started on port 0 with its log in a file, found by the
//! `addr=` of its listening line, sent SIGTERM, awaited with a bound. And raw HTTP/1.1
//! helpers for requests kept in flight on purpose.
//!
//! The broker mock's and FixMyPrint's test suites include this file by path (they cannot
//! depend on this crate, which depends on them), so it uses nothing but std and tokio.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// A running child, killed (SIGKILL) when dropped if it is still running.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Child {
    /// Runs `command` with its stdout and stderr appended to `log` (and `NO_COLOR` unset: a
    /// file must get plain text by itself) and returns once a line of `log` written by this
    /// run containing `marker` names the address (`addr=IP:PORT`).
    ///
    /// # Panics
    /// When the process cannot start, exits, or names no address within 60 s.
    pub async fn start(command: &mut Command, log: &Path, marker: &str) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log");
        let skip = file.metadata().map_or(0, |m| m.len());
        let skip = usize::try_from(skip).expect("log size");
        let child = command
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("start the binary");
        let mut child = Child {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read(log).unwrap_or_default();
            let text = String::from_utf8_lossy(text.get(skip..).unwrap_or_default());
            let addr = text
                .lines()
                .filter(|l| l.contains(marker))
                .find_map(|l| l.split(' ').find_map(|w| w.strip_prefix("addr=")));
            if let Some(addr) = addr {
                child.addr = addr.parse().expect("addr=IP:PORT");
                return child;
            }
            assert!(child.running(), "the binary exited:\n{text}");
            assert!(Instant::now() < deadline, "no {marker} addr= in:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    ///
    /// # Panics
    /// When its state cannot be read.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends SIGTERM (through `kill`).
    ///
    /// # Panics
    /// When `kill` fails.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its exit status once it has ended.
    ///
    /// # Panics
    /// When it is still running after `bound`.
    pub async fn exited_within(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {bound:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until a new connection to `addr` is refused.
///
/// # Panics
/// When connections are still accepted after 5 s.
pub async fn refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => {
                assert!(Instant::now() < deadline, "still accepting: {other:?}");
                drop(other);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Reads an HTTP/1.1 response head off `stream`: (status, lower-cased head).
///
/// # Panics
/// When the connection ends first or the status line is not one.
pub async fn read_head(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let mut byte = [0_u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "connection closed after {raw:?}");
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head)
}

/// The `content-length` of a head read by [`read_head`] (0 when absent).
///
/// # Panics
/// When the value is not a number.
#[must_use]
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length"))
}

/// Reads one HTTP/1.1 response with a `content-length` body off `stream`: (status,
/// lower-cased head, body).
///
/// # Panics
/// As [`read_head`], or when the body is cut.
pub async fn read_response(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let (status, head) = read_head(stream).await;
    let mut body = vec![0_u8; content_length(&head)];
    stream.read_exact(&mut body).await.expect("read body");
    (status, head, body)
}

/// The resident memory of process `pid` now and at its peak (`VmRSS`, `VmHWM` of
/// `/proc/PID/status`), KiB.
///
/// # Panics
/// When the process is gone or the file lacks the fields (not Linux).
#[must_use]
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}
