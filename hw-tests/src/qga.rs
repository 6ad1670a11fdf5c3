//! A small QEMU guest agent client (virtio-serial): `guest-exec` with captured output.

use crate::b64;
use crate::error::{Error, Result};
use crate::jsonio::{JsonReader, ReadError};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The result of a command run in a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; 128 + N when the command was killed by signal N.
    pub code: i32,
    /// Standard output (lossily decoded as UTF-8).
    pub stdout: String,
    /// Standard error (lossily decoded as UTF-8).
    pub stderr: String,
}

impl ExecOutput {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// How to run a command in a guest.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Give up (and kill the command) after this long. Default: 600 s.
    pub timeout: Duration,
    /// Bytes fed to the command's standard input. Default: none (stdin is empty).
    pub stdin: Option<Vec<u8>>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            timeout: Duration::from_secs(600),
            stdin: None,
        }
    }
}

impl ExecOptions {
    /// Options with the given timeout.
    pub fn timeout(timeout: Duration) -> Self {
        ExecOptions {
            timeout,
            ..ExecOptions::default()
        }
    }

    /// Sets the bytes fed to standard input.
    pub fn with_stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    reader: JsonReader,
}

/// Guest agent client. One persistent connection, re-synchronised (`guest-sync`) whenever it is
/// (re)opened, so stale replies from an earlier client or boot are discarded.
#[derive(Debug)]
pub(crate) struct Agent {
    guest: String,
    path: PathBuf,
    conn: Mutex<Option<Conn>>,
}

static SYNC_COUNTER: AtomicU64 = AtomicU64::new(1);

fn sync_id() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t ^ (u64::from(std::process::id()) << 32) ^ SYNC_COUNTER.fetch_add(7919, Ordering::Relaxed))
        & 0x3fff_ffff_ffff
}

impl Agent {
    pub(crate) fn new(guest: &str, path: PathBuf) -> Agent {
        Agent {
            guest: guest.to_string(),
            path,
            conn: Mutex::new(None),
        }
    }

    fn err(&self, message: String) -> Error {
        Error::Agent {
            guest: self.guest.clone(),
            message,
        }
    }

    /// Opens the socket and synchronises; retries until `deadline` (the agent may still be starting).
    fn open(&self, deadline: Instant) -> Result<Conn> {
        loop {
            let attempt = (|| -> std::result::Result<Conn, String> {
                let stream = UnixStream::connect(&self.path)
                    .map_err(|e| format!("connect {}: {e}", self.path.display()))?;
                let mut conn = Conn {
                    stream,
                    reader: JsonReader::default(),
                };
                let id = sync_id();
                let req = json!({"execute": "guest-sync", "arguments": {"id": id}});
                conn.stream
                    .write_all(format!("{req}\n").as_bytes())
                    .map_err(|e| format!("write: {e}"))?;
                let until = deadline.min(Instant::now() + Duration::from_secs(3));
                loop {
                    match conn
                        .reader
                        .next(&mut conn.stream, Some(until), |s, t| s.set_read_timeout(t))
                    {
                        Ok(v) if v.get("return").and_then(Value::as_u64) == Some(id) => {
                            return Ok(conn)
                        }
                        Ok(_) => continue, // a stale reply
                        Err(e) => return Err(format!("guest-sync: {e:?}")),
                    }
                }
            })();
            match attempt {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => {
                    return Err(self.err(format!("agent not answering: {e}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits until the agent answers `guest-sync`.
    pub(crate) fn ping(&self, timeout: Duration) -> Result<()> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
        *guard = Some(self.open(Instant::now() + timeout)?);
        Ok(())
    }

    /// Drops the connection (the next request reconnects and re-syncs).
    pub(crate) fn reset(&self) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Sends one request and returns its `return` value.
    pub(crate) fn request(
        &self,
        execute: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + timeout;
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.open(deadline)?);
            }
            let Some(conn) = guard.as_mut() else {
                continue;
            };
            let req = json!({"execute": execute, "arguments": arguments});
            if let Err(e) = conn.stream.write_all(format!("{req}\n").as_bytes()) {
                *guard = None;
                if attempt == 0 {
                    continue;
                }
                return Err(self.err(format!("{execute}: write: {e}")));
            }
            let res = conn.reader.next(&mut conn.stream, Some(deadline), |s, t| {
                s.set_read_timeout(t)
            });
            match res {
                Ok(v) => {
                    if let Some(r) = v.get("return") {
                        return Ok(r.clone());
                    }
                    let msg = v
                        .get("error")
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| v.to_string());
                    return Err(self.err(format!("{execute}: {msg}")));
                }
                Err(ReadError::Timeout) => {
                    *guard = None;
                    return Err(Error::Timeout {
                        what: format!("guest agent reply to {execute} from {}", self.guest),
                        after: timeout,
                    });
                }
                Err(e) => {
                    *guard = None;
                    if attempt == 0 {
                        continue;
                    }
                    return Err(self.err(format!("{execute}: {e:?}")));
                }
            }
        }
        Err(self.err(format!("{execute}: no connection")))
    }

    /// Runs `/bin/sh -c command` in the guest and collects its output.
    pub(crate) fn exec(&self, command: &str, opts: &ExecOptions) -> Result<ExecOutput> {
        let mut args = json!({
            "path": "/bin/sh",
            "arg": ["-c", command],
            "capture-output": true,
        });
        if let Some(data) = &opts.stdin {
            args["input-data"] = Value::String(b64::encode(data));
        }
        let short = Duration::from_secs(60).min(opts.timeout.max(Duration::from_secs(10)));
        let started = self.request("guest-exec", args, short)?;
        let pid = started
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| self.err(format!("guest-exec: no pid in {started}")))?;
        let deadline = Instant::now() + opts.timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let st = self.request("guest-exec-status", json!({ "pid": pid }), short)?;
            if st.get("exited").and_then(Value::as_bool) == Some(true) {
                let decode = |key: &str| -> Result<String> {
                    match st.get(key).and_then(Value::as_str) {
                        None => Ok(String::new()),
                        Some(s) => b64::decode(s)
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .ok_or_else(|| self.err(format!("{key}: invalid base64"))),
                    }
                };
                let code = match st.get("exitcode").and_then(Value::as_i64) {
                    Some(c) => c,
                    None => 128 + st.get("signal").and_then(Value::as_i64).unwrap_or(0),
                };
                return Ok(ExecOutput {
                    code: i32::try_from(code).unwrap_or(i32::MAX),
                    stdout: decode("out-data")?,
                    stderr: decode("err-data")?,
                });
            }
            if Instant::now() >= deadline {
                // best effort: do not leave it running
                let _ = self.request(
                    "guest-exec",
                    json!({"path": "/bin/kill", "arg": ["-9", pid.to_string()]}),
                    Duration::from_secs(10),
                );
                return Err(Error::Timeout {
                    what: format!("command in guest {}: {command}", self.guest),
                    after: opts.timeout,
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 3 / 2).min(Duration::from_millis(300));
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
