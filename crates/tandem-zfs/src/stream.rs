//! Byte streams of `zfs send` and `zfs receive`, whatever runs them: a
//! local or ssh child process, or a peer agent across the network. The
//! executor only sees a reader, a writer and a handle it can wait on or kill.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use crate::error::ZfsError;
use crate::process::ZfsProcess;

/// How a stream ends: a child process, or a task (a peer's reply).
#[derive(Debug)]
pub struct StreamHandle {
    cmd: String,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Process(Box<ZfsProcess>),
    Task(JoinHandle<Result<(), ZfsError>>),
}

impl StreamHandle {
    /// A child process.
    pub fn process(p: ZfsProcess) -> Self {
        Self {
            cmd: p.cmd().to_owned(),
            inner: Inner::Process(Box::new(p)),
        }
    }

    /// A task that resolves when the far side has finished.
    pub fn task(
        cmd: String,
        fut: impl Future<Output = Result<(), ZfsError>> + Send + 'static,
    ) -> Self {
        Self {
            cmd,
            inner: Inner::Task(tokio::spawn(fut)),
        }
    }

    /// The command, for messages.
    pub fn cmd(&self) -> &str {
        &self.cmd
    }

    /// Stops it (the process is killed, the task aborted).
    pub fn kill(&mut self) {
        match &mut self.inner {
            Inner::Process(p) => p.kill(),
            Inner::Task(t) => t.abort(),
        }
    }

    /// Waits for the end; failures are classified.
    pub async fn wait(self) -> Result<(), ZfsError> {
        match self.inner {
            Inner::Process(p) => p.wait().await,
            Inner::Task(t) => match t.await {
                Ok(r) => r,
                Err(e) => Err(ZfsError::Failed {
                    cmd: self.cmd,
                    code: None,
                    msg: if e.is_cancelled() {
                        "aborted".into()
                    } else {
                        e.to_string()
                    },
                }),
            },
        }
    }
}

/// A running send: read the stream from `reader`.
pub struct SendStream {
    /// The stream.
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Its end.
    pub handle: StreamHandle,
}

/// A running receive: write the stream into `writer`, then close it.
pub struct RecvStream {
    /// Where the stream goes.
    pub writer: Pin<Box<dyn AsyncWrite + Send>>,
    /// Its end.
    pub handle: StreamHandle,
    /// A receiver that can read the stream itself offers this: send it the
    /// sender's reader (then close `writer` unused) and it reads from there,
    /// sparing a copy through `writer`. Drop it to use `writer` instead.
    pub direct: Option<DirectInput>,
}

/// Where to hand a [`RecvStream`] the stream's reader; see
/// [`RecvStream::direct`].
pub type DirectInput = tokio::sync::oneshot::Sender<Pin<Box<dyn AsyncRead + Send>>>;

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendStream({})", self.handle.cmd())
    }
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecvStream({})", self.handle.cmd())
    }
}

impl SendStream {
    /// From a `zfs send` child with piped stdout.
    pub fn from_process(mut p: ZfsProcess) -> Result<Self, ZfsError> {
        let out = p.take_stdout().ok_or_else(|| ZfsError::Io {
            cmd: p.cmd().to_owned(),
            source: std::io::Error::other("no stdout pipe"),
        })?;
        Ok(Self {
            reader: Box::pin(out),
            handle: StreamHandle::process(p),
        })
    }
}

impl RecvStream {
    /// From a `zfs receive` child with piped stdin.
    pub fn from_process(mut p: ZfsProcess) -> Result<Self, ZfsError> {
        let inp = p.take_stdin().ok_or_else(|| ZfsError::Io {
            cmd: p.cmd().to_owned(),
            source: std::io::Error::other("no stdin pipe"),
        })?;
        Ok(Self {
            writer: Box::pin(inp),
            handle: StreamHandle::process(p),
            direct: None,
        })
    }
}
