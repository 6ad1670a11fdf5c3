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
        Box::pin(async move {
            let st = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&call.command)
                .env("TANDEM_JOB", &call.job)
                .env("TANDEM_FROM", &call.from)
                .env("TANDEM_TO", &call.to)
                .status()
                .await
                .map_err(|e| format!("{:?}: {e}", call.command))?;
            if st.success() {
                Ok(())
            } else {
                Err(format!("{:?} exited with {st}", call.command))
            }
        })
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
