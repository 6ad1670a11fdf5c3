//! [`Machine`]: the production [`Host`], this machine: the `zfs receive`
//! processes still waiting on a fenced node are ended through `/proc`,
//! hooks run through `sh -c`, and `TANDEM_TEST_CRASH_AFTER` lets the
//! real-ZFS tests kill a command after a named step.

use std::time::Duration;

use tandem_fence::BoxFuture;
use tandem_zfs::DatasetName;

use crate::env::{HookCall, Host};
use crate::error::HaError;

/// This machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Machine;

impl Host for Machine {
    fn end_receives<'a>(&'a self, dataset: &'a DatasetName) -> BoxFuture<'a, ()> {
        Box::pin(stop_receives(dataset))
    }

    fn run_hook<'a>(&'a self, call: &'a HookCall) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(run_hook(call))
    }

    /// `TANDEM_TEST_CRASH_AFTER=STEP` makes the process exit(99) right
    /// after STEP, so tests prove that the next run completes the job.
    fn step(&self, step: &'static str) -> Result<(), HaError> {
        if std::env::var("TANDEM_TEST_CRASH_AFTER").is_ok_and(|v| v == step) {
            eprintln!("tandem: TANDEM_TEST_CRASH_AFTER={step}: exiting as if killed");
            std::process::exit(99);
        }
        Ok(())
    }
}

/// How many of a hook's last output lines an error quotes.
const HOOK_TAIL: usize = 5;

/// Runs `sh -c COMMAND` in its own process group with the call's
/// environment; every line it prints is logged (job and hook named), and
/// after the call's timeout the whole group is killed.
async fn run_hook(call: &HookCall) -> Result<(), String> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&call.command)
        .envs(call.env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{:?} could not be started: {e}", call.command))?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let tail = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let mut readers = Vec::new();
    let out: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for r in out {
        let (job, hook, tail) = (call.job.clone(), call.hook, tail.clone());
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::info!(job = %job, hook, "hook: {l}");
                if let Ok(mut t) = tail.lock() {
                    t.push_back(l);
                    if t.len() > HOOK_TAIL {
                        t.pop_front();
                    }
                }
            }
        }));
    }
    let waited = match call.timeout {
        Some(t) => tokio::time::timeout(t, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    let status = match waited {
        Some(s) => s.map_err(|e| format!("{:?}: {e}", call.command))?,
        None => {
            if let Some(pg) = pgid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pg),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            for r in readers {
                r.abort();
            }
            return Err(format!(
                "{:?} did not finish within {} and was killed",
                call.command,
                humantime_secs(call.timeout.unwrap_or_default())
            ));
        }
    };
    // Output still open in a grandchild must not hold the caller.
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
    }
    if status.success() {
        Ok(())
    } else {
        let last: Vec<String> = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        let mut msg = format!("{:?} exited with {status}", call.command);
        if !last.is_empty() {
            msg.push_str(&format!("; its last output: {}", last.join(" | ")));
        }
        Err(msg)
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The `zfs receive` processes on this machine whose target is `ds`.
fn receives_into(ds: &DatasetName) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        let is_zfs = args
            .first()
            .is_some_and(|a| a.rsplit(|b| *b == b'/').next() == Some(b"zfs".as_slice()));
        let is_recv = args
            .iter()
            .any(|a| *a == b"receive".as_slice() || *a == b"recv".as_slice());
        if is_zfs && is_recv && args.last() == Some(&ds.as_str().as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Ends every `zfs receive` into `ds` (SIGTERM, then SIGKILL after 5 s).
async fn stop_receives(ds: &DatasetName) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pids = receives_into(ds);
    if pids.is_empty() {
        return;
    }
    tracing::warn!(dataset = %ds, ?pids, "ending the receive from the fenced node (it can never complete)");
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    for step in 0..50 {
        if receives_into(ds).is_empty() {
            return;
        }
        if step == 25 {
            for p in receives_into(ds) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::error!(dataset = %ds, "a zfs receive into it does not end");
}
