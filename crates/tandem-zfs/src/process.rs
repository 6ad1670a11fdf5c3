//! The one place where `zfs` processes are started: locally, or on another
//! node through `ssh` with a fixed argument vector.
//!
//! Every argument is passed as its own `argv` element locally; over ssh, the
//! remote shell joins them, so each is single-quoted. stderr is always drained
//! on its own task so a chatty child can never block (the classic
//! `zfs send` deadlock), and every call is logged with its duration.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use crate::error::ZfsError;

/// Pipe capacity asked for on stream pipes (the default Linux maximum for
/// unprivileged processes).
const PIPE_SIZE: i32 = 1 << 20;

/// Most stderr kept from one child; the rest is dropped.
const STDERR_CAP: usize = 64 * 1024;

/// How to reach a node over ssh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// Remote user (default: ssh's own default).
    pub user: Option<String>,
    /// Port (default 22).
    pub port: Option<u16>,
    /// Private key file.
    pub identity: Option<PathBuf>,
    /// Extra `-o` options, e.g. `StrictHostKeyChecking=accept-new`.
    pub options: Vec<String>,
    /// Directory for the ssh connection-sharing socket (ControlMaster), so
    /// the many short calls of a cycle share one login.
    pub control_dir: Option<PathBuf>,
}

/// Where a node's `zfs` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// On this machine.
    Local,
    /// On another machine, through ssh.
    Ssh(SshTarget),
}

/// Quotes one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A program and its arguments, on a transport.
#[derive(Debug, Clone)]
pub struct Invocation {
    transport: Transport,
    program: String,
    args: Vec<String>,
    node: String,
}

impl Invocation {
    /// `program args...` on `node` through `transport`.
    pub fn new(node: &str, transport: &Transport, program: &str, args: Vec<String>) -> Self {
        Self {
            transport: transport.clone(),
            program: program.to_owned(),
            args,
            node: node.to_owned(),
        }
    }

    /// The command as an operator would type it, for logs and errors.
    pub fn display(&self) -> String {
        let mut s = format!("[{}] {}", self.node, shell_quote(&self.program));
        for a in &self.args {
            s.push(' ');
            s.push_str(&shell_quote(a));
        }
        s
    }

    /// Is this run through ssh?
    pub fn via_ssh(&self) -> bool {
        matches!(self.transport, Transport::Ssh(_))
    }

    fn command(&self) -> Command {
        match &self.transport {
            Transport::Local => {
                let mut c = Command::new(&self.program);
                c.args(&self.args);
                c
            }
            Transport::Ssh(t) => {
                let mut c = Command::new("ssh");
                c.args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ServerAliveInterval=15",
                    "-o",
                    "ConnectTimeout=10",
                ]);
                if let Some(dir) = &t.control_dir {
                    c.arg("-o").arg("ControlMaster=auto");
                    c.arg("-o").arg(format!("ControlPath={}/%C", dir.display()));
                    c.arg("-o").arg("ControlPersist=60");
                }
                for o in &t.options {
                    c.arg("-o").arg(o);
                }
                if let Some(p) = t.port {
                    c.arg("-p").arg(p.to_string());
                }
                if let Some(u) = &t.user {
                    c.arg("-l").arg(u);
                }
                if let Some(i) = &t.identity {
                    c.arg("-i").arg(i);
                }
                let mut remote = shell_quote(&self.program);
                for a in &self.args {
                    remote.push(' ');
                    remote.push_str(&shell_quote(a));
                }
                c.arg("--").arg(&t.host).arg(remote);
                c
            }
        }
    }

    fn spawn_err(&self, e: std::io::Error) -> ZfsError {
        let program = match &self.transport {
            Transport::Local => self.program.clone(),
            Transport::Ssh(_) => "ssh".to_owned(),
        };
        ZfsError::Spawn {
            cmd: self.display(),
            program,
            source: e,
        }
    }

    /// Runs to completion and returns stdout; a non-zero exit is classified.
    pub async fn output(&self) -> Result<String, ZfsError> {
        let (out, err, code) = self.output_raw().await?;
        if code == Some(0) {
            Ok(out)
        } else {
            Err(ZfsError::classify(
                &self.display(),
                code,
                &err,
                self.via_ssh(),
            ))
        }
    }

    /// Runs to completion: (stdout, stderr, exit code).
    pub async fn output_raw(&self) -> Result<(String, String, Option<i32>), ZfsError> {
        let start = Instant::now();
        let mut cmd = self.command();
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let out = cmd.output().await.map_err(|e| self.spawn_err(e))?;
        let code = out.status.code();
        tracing::debug!(cmd = %self.display(), ?code, elapsed_ms = start.elapsed().as_millis() as u64, "zfs call");
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            code,
        ))
    }

    /// Starts a streaming child with the given stdin/stdout; stderr is drained.
    pub fn spawn(&self, stdin: Stdio, stdout: Stdio) -> Result<ZfsProcess, ZfsError> {
        let mut cmd = self.command();
        cmd.stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| self.spawn_err(e))?;
        // Bigger pipes (1 MiB instead of 64 KiB) mean fewer wake-ups per MB.
        for fd in [
            child.stdout.as_ref().map(|o| o.as_raw_fd()),
            child.stdin.as_ref().map(|i| i.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        }
        let stderr = child.stderr.take().map(drain);
        tracing::debug!(cmd = %self.display(), pid = child.id(), "zfs stream started");
        Ok(ZfsProcess {
            child,
            stderr,
            cmd: self.display(),
            via_ssh: self.via_ssh(),
            start: Instant::now(),
            guard: None,
        })
    }
}

fn drain(mut err: ChildStderr) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match err.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if kept.len() < STDERR_CAP {
                        kept.extend_from_slice(&buf[..n.min(STDERR_CAP - kept.len())]);
                    }
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// A running `zfs send` or `zfs receive`.
#[derive(Debug)]
pub struct ZfsProcess {
    child: Child,
    stderr: Option<JoinHandle<String>>,
    cmd: String,
    via_ssh: bool,
    start: Instant,
    guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl ZfsProcess {
    /// Keeps `guard` (a lock, say) alive until this process has exited.
    pub fn keep_until_exit(&mut self, guard: Box<dyn std::any::Any + Send + Sync>) {
        self.guard = Some(guard);
    }

    /// The child's stdout, once.
    pub fn take_stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stdin, once.
    pub fn take_stdin(&mut self) -> Option<tokio::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// The command line, for messages.
    pub fn cmd(&self) -> &str {
        &self.cmd
    }

    /// Kills the child (SIGKILL); waiting afterwards reports the failure.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Waits for the child; a non-zero exit is classified from its stderr.
    pub async fn wait(mut self) -> Result<(), ZfsError> {
        let status = self.child.wait().await.map_err(|e| ZfsError::Io {
            cmd: self.cmd.clone(),
            source: e,
        })?;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        };
        tracing::debug!(cmd = %self.cmd, code = ?status.code(), elapsed_ms = self.start.elapsed().as_millis() as u64, "zfs stream ended");
        if status.success() {
            Ok(())
        } else {
            Err(ZfsError::classify(
                &self.cmd,
                status.code(),
                &stderr,
                self.via_ssh,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_shell_safe() {
        assert_eq!(shell_quote("tank/a"), "tank/a");
        assert_eq!(shell_quote("tank/with space"), "'tank/with space'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a;rm -rf /"), "'a;rm -rf /'");
        assert_eq!(shell_quote("$(x)"), "'$(x)'");
    }

    #[tokio::test]
    async fn local_invocation_passes_arguments_verbatim() {
        let inv = Invocation::new(
            "here",
            &Transport::Local,
            "printf",
            vec!["%s|".into(), "a b".into(), "-x".into(), "'q'".into()],
        );
        assert_eq!(inv.output().await.expect("printf"), "a b|-x|'q'|");
    }

    #[tokio::test]
    async fn failures_are_classified_and_name_the_command() {
        let inv = Invocation::new(
            "here",
            &Transport::Local,
            "sh",
            vec![
                "-c".into(),
                "echo \"cannot open 'p/x': dataset does not exist\" >&2; exit 1".into(),
            ],
        );
        let e = inv.output().await.expect_err("fails");
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("[here] sh -c"), "{e}");
        let missing = Invocation::new("here", &Transport::Local, "/nonexistent/zfs", vec![]);
        let e = missing.output().await.expect_err("no program");
        assert!(matches!(e, ZfsError::Spawn { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/zfs"));
    }
}
