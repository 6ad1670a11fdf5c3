//! A small QMP (QEMU Machine Protocol) client: commands and an event log.

use crate::error::{Error, Result};
use crate::jsonio::{JsonReader, ReadError};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// One asynchronous QMP event (`RESET`, `WATCHDOG`, `SHUTDOWN`, `STOP`, ...).
#[derive(Debug, Clone)]
pub struct QmpEvent {
    /// Event name, e.g. `"RESET"`.
    pub name: String,
    /// The event's `data` member (`Value::Null` if absent).
    pub data: Value,
    /// QEMU's timestamp of the event (host wall clock).
    pub timestamp: SystemTime,
    /// When the harness received it.
    pub received: Instant,
}

#[derive(Debug, Default)]
struct LogState {
    events: Vec<QmpEvent>,
    /// Bumped whenever a connection's reader ends, so waiters can notice QEMU going away.
    disconnects: u64,
}

/// Events of one guest, kept across QMP reconnects (e.g. after an IPMI power cycle).
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    state: Mutex<LogState>,
    cv: Condvar,
}

impl EventLog {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// All events so far.
    pub(crate) fn snapshot(&self) -> Vec<QmpEvent> {
        self.lock().events.clone()
    }

    /// Waits for the first event named `name` at index `>= *cursor`; advances the cursor past it.
    /// Returns `Ok(None)` when `deadline` passes.
    pub(crate) fn wait(
        &self,
        cursor: &mut usize,
        name: &str,
        deadline: Instant,
    ) -> Option<QmpEvent> {
        let mut st = self.lock();
        loop {
            let start = (*cursor).min(st.events.len());
            if let Some(i) = st.events[start..].iter().position(|e| e.name == name) {
                let idx = start + i;
                *cursor = idx + 1;
                return Some(st.events[idx].clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn push(&self, ev: QmpEvent) {
        self.lock().events.push(ev);
        self.cv.notify_all();
    }

    fn disconnected(&self) {
        self.lock().disconnects += 1;
        self.cv.notify_all();
    }
}

#[derive(Debug, Default)]
struct Replies {
    queue: VecDeque<Value>,
    closed: bool,
}

#[derive(Debug, Default)]
struct ReplyBox {
    state: Mutex<Replies>,
    cv: Condvar,
}

/// A live QMP connection. A reader thread files events into the guest's [`EventLog`].
#[derive(Debug)]
pub(crate) struct Qmp {
    guest: String,
    writer: Mutex<UnixStream>,
    replies: Arc<ReplyBox>,
    reader: Option<JoinHandle<()>>,
}

impl Qmp {
    /// Connects to QEMU's QMP socket (retrying until `timeout`), negotiates capabilities.
    pub(crate) fn connect(
        guest: &str,
        path: &Path,
        log: Arc<EventLog>,
        timeout: Duration,
    ) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let qerr = |message: String| Error::Qmp {
            guest: guest.to_string(),
            message,
        };
        let mut stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(qerr(format!("cannot connect to {}: {e}", path.display()))),
            }
        };
        let mut reader = JsonReader::default();
        let set = |s: &mut UnixStream, t| s.set_read_timeout(t);
        let mut read = |stream: &mut UnixStream| {
            reader
                .next(stream, Some(deadline), set)
                .map_err(|e| qerr(format!("handshake: {e:?}")))
        };
        let greeting = read(&mut stream)?;
        if greeting.get("QMP").is_none() {
            return Err(qerr(format!("unexpected greeting {greeting}")));
        }
        stream
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .map_err(|e| qerr(format!("write: {e}")))?;
        let mut early_events = Vec::new();
        loop {
            let v = read(&mut stream)?;
            if v.get("return").is_some() {
                break;
            }
            if v.get("error").is_some() {
                return Err(qerr(format!("qmp_capabilities: {v}")));
            }
            early_events.push(v);
        }
        for v in early_events {
            if let Some(ev) = parse_event(&v) {
                log.push(ev);
            }
        }
        stream
            .set_read_timeout(None)
            .map_err(|e| qerr(format!("socket: {e}")))?;
        let mut rstream = stream
            .try_clone()
            .map_err(|e| qerr(format!("socket: {e}")))?;
        let replies = Arc::new(ReplyBox::default());
        let thread_replies = Arc::clone(&replies);
        let handle = std::thread::Builder::new()
            .name(format!("qmp-{guest}"))
            .spawn(move || {
                let mut rd = reader;
                while let Ok(v) = rd.next(&mut rstream, None, |s, t| s.set_read_timeout(t)) {
                    if let Some(ev) = parse_event(&v) {
                        log.push(ev);
                    } else {
                        let mut st = thread_replies
                            .state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        st.queue.push_back(v);
                        thread_replies.cv.notify_all();
                    }
                }
                thread_replies
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .closed = true;
                thread_replies.cv.notify_all();
                log.disconnected();
            })
            .map_err(|e| qerr(format!("spawning the reader thread: {e}")))?;
        Ok(Qmp {
            guest: guest.to_string(),
            writer: Mutex::new(stream),
            replies,
            reader: Some(handle),
        })
    }

    /// Whether QEMU closed the connection.
    pub(crate) fn is_closed(&self) -> bool {
        self.replies
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed
    }

    /// Runs one QMP command and returns its `return` value.
    pub(crate) fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let qerr = |message: String| Error::Qmp {
            guest: self.guest.clone(),
            message,
        };
        let mut req = json!({ "execute": command });
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        // holding the writer for the whole exchange keeps replies in request order
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut line = req.to_string();
        line.push('\n');
        w.write_all(line.as_bytes())
            .map_err(|e| qerr(format!("{command}: write: {e}")))?;
        let deadline = Instant::now() + timeout;
        let mut st = self.replies.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = st.queue.pop_front() {
                drop(w);
                if let Some(r) = v.get("return") {
                    return Ok(r.clone());
                }
                return Err(qerr(format!("{command}: {}", v.get("error").unwrap_or(&v))));
            }
            if st.closed {
                // `quit` and friends legitimately end the connection
                return Err(qerr(format!("{command}: connection closed by QEMU")));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!("QMP reply to {command} from {}", self.guest),
                    after: timeout,
                });
            }
            st = self
                .replies
                .cv
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        if let Ok(w) = self.writer.lock() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

fn parse_event(v: &Value) -> Option<QmpEvent> {
    let name = v.get("event")?.as_str()?.to_string();
    let ts = v.get("timestamp");
    let secs = ts.and_then(|t| t.get("seconds")).and_then(Value::as_u64);
    let micros = ts
        .and_then(|t| t.get("microseconds"))
        .and_then(Value::as_u64);
    let timestamp = match (secs, micros) {
        (Some(s), Some(us)) => {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us)
        }
        _ => SystemTime::now(),
    };
    Some(QmpEvent {
        name,
        data: v.get("data").cloned().unwrap_or(Value::Null),
        timestamp,
        received: Instant::now(),
    })
}

impl std::fmt::Debug for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Timeout => f.write_str("timeout"),
            ReadError::Closed => f.write_str("connection closed"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}
