//! The in-process pipe from `zfs send` to `zfs receive`: a reader task and a
//! writer task joined by a bounded queue of large buffers, so a slow side
//! applies backpressure instead of growing memory, and reading overlaps
//! writing. No external mbuffer is needed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

/// Size of one buffer.
pub const CHUNK: usize = 1 << 20;
/// Buffers in flight between reader and writer (memory bound: DEPTH × CHUNK).
pub const DEPTH: usize = 8;

/// Live counters of one transfer, readable while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes written to the receiver so far.
    pub bytes: AtomicU64,
    /// The sender's size estimate, 0 if unknown.
    pub estimate: AtomicU64,
}

impl Progress {
    /// Bytes moved so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The size estimate, if one was made.
    pub fn estimate(&self) -> Option<u64> {
        Some(self.estimate.load(Ordering::Relaxed)).filter(|e| *e > 0)
    }
}

/// Rate and ETA from two samples of a transfer, for progress lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct Meter {
    start: Option<(std::time::Instant, u64)>,
}

impl Meter {
    /// (bytes per second since the first call, seconds left if an estimate
    /// exists). The first call only sets the baseline and reports 0.
    pub fn sample(&mut self, p: &Progress) -> (f64, Option<u64>) {
        let (start, b0) = *self
            .start
            .get_or_insert_with(|| (std::time::Instant::now(), p.bytes()));
        let secs = start.elapsed().as_secs_f64();
        if secs < 0.1 {
            return (0.0, None);
        }
        let rate = p.bytes().saturating_sub(b0) as f64 / secs;
        let eta = p
            .estimate()
            .filter(|_| rate > 1.0)
            .map(|e| (e.saturating_sub(p.bytes()) as f64 / rate) as u64);
        (rate, eta)
    }
}

/// Which side of the pipe failed.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// Reading the sender's output failed.
    #[error("reading the send stream failed after {at} bytes: {source}")]
    Read {
        /// Bytes moved before the failure.
        at: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing into the receiver failed (it exited, usually).
    #[error("writing the receive stream failed after {at} bytes: {source}")]
    Write {
        /// Bytes moved before the failure.
        at: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Copies `from` into `to` until EOF, at most `rate_limit` bytes per second
/// (0 = unlimited), counting into `progress`. Closes `to` at the end.
pub async fn copy<R, W>(
    mut from: R,
    mut to: W,
    rate_limit: u64,
    progress: Arc<Progress>,
) -> Result<u64, PipeError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(DEPTH);
    let (free_tx, mut free_rx) = mpsc::channel::<Vec<u8>>(DEPTH + 2);
    let reader = tokio::spawn(async move {
        let mut total = 0u64;
        loop {
            let mut buf = free_rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            buf.clear();
            // Fill the buffer as far as the stream gives, to keep writes large.
            while buf.len() < CHUNK {
                let n = match (&mut from)
                    .take((CHUNK - buf.len()) as u64)
                    .read_to_end(&mut buf)
                    .await
                {
                    Ok(n) => n,
                    Err(e) => {
                        return Err(PipeError::Read {
                            at: total,
                            source: e,
                        })
                    }
                };
                if n == 0 {
                    break;
                }
            }
            if buf.is_empty() {
                return Ok(total);
            }
            total += buf.len() as u64;
            if tx.send(buf).await.is_err() {
                // the writer is gone; its error is the one to report
                return Ok(total);
            }
        }
    });
    let start = Instant::now();
    let mut written = 0u64;
    let mut write_err = None;
    while let Some(buf) = rx.recv().await {
        if let Err(e) = to.write_all(&buf).await {
            write_err = Some(PipeError::Write {
                at: written,
                source: e,
            });
            break;
        }
        written += buf.len() as u64;
        progress.bytes.store(written, Ordering::Relaxed);
        let _ = free_tx.try_send(buf);
        if rate_limit > 0 {
            let due = Duration::from_secs_f64(written as f64 / rate_limit as f64);
            let elapsed = start.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
    drop(rx);
    let read = reader.await.unwrap_or(Ok(written));
    if let Some(e) = write_err {
        return Err(e);
    }
    read?;
    if let Err(e) = to.shutdown().await {
        return Err(PipeError::Write {
            at: written,
            source: e,
        });
    }
    Ok(written)
}

/// The sender's stream as handed to a receiver that reads it itself (see
/// `RecvStream::direct`): counts what passes into `progress`, holds reads
/// back to `rate_limit` bytes per second (0 = unlimited), and notes whether
/// the sender's end was reached.
pub struct Metered<R> {
    inner: R,
    rate: u64,
    start: tokio::time::Instant,
    read: u64,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    progress: Arc<Progress>,
    eof: Arc<AtomicBool>,
}

impl<R> Metered<R> {
    /// Wraps `inner`; `eof` is set once it returned end of file.
    pub fn new(inner: R, rate_limit: u64, progress: Arc<Progress>, eof: Arc<AtomicBool>) -> Self {
        progress.bytes.store(0, Ordering::Relaxed);
        Self {
            inner,
            rate: rate_limit,
            start: tokio::time::Instant::now(),
            read: 0,
            sleep: None,
            progress,
            eof,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.rate > 0 {
            loop {
                if let Some(s) = this.sleep.as_mut() {
                    ready!(s.as_mut().poll(cx));
                    this.sleep = None;
                }
                let due = Duration::from_secs_f64(this.read as f64 / this.rate as f64);
                let elapsed = this.start.elapsed();
                if due <= elapsed {
                    break;
                }
                this.sleep = Some(Box::pin(tokio::time::sleep(due - elapsed)));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n == 0 && buf.remaining() > 0 {
            this.eof.store(true, Ordering::Relaxed);
        }
        this.read += n as u64;
        this.progress.bytes.store(this.read, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_everything_in_order() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (w, mut r) = tokio::io::duplex(64 * 1024);
        let p = Arc::new(Progress::default());
        let src = std::io::Cursor::new(data.clone());
        let h = tokio::spawn(copy(src, w, 0, p.clone()));
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.expect("read");
        assert_eq!(h.await.expect("join").expect("copy"), data.len() as u64);
        assert_eq!(out, data);
        assert_eq!(p.bytes(), data.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_paces_the_writer() {
        let data = vec![0u8; 2 * CHUNK];
        let (w, mut r) = tokio::io::duplex(4 * CHUNK);
        let p = Arc::new(Progress::default());
        let start = tokio::time::Instant::now();
        let h = tokio::spawn(copy(std::io::Cursor::new(data), w, CHUNK as u64, p));
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.expect("read");
        h.await.expect("join").expect("copy");
        // two chunks at one chunk per second: the clock (paused, virtual) moved 2 s
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn metered_counts_paces_and_sees_the_end() {
        let data = vec![5u8; 2 * CHUNK];
        let (p, eof) = (
            Arc::new(Progress::default()),
            Arc::new(AtomicBool::new(false)),
        );
        let start = tokio::time::Instant::now();
        let mut m = Metered::new(
            std::io::Cursor::new(data.clone()),
            CHUNK as u64,
            p.clone(),
            eof.clone(),
        );
        let mut out = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = m.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, data);
        assert_eq!(p.bytes(), data.len() as u64);
        assert!(eof.load(Ordering::Relaxed));
        // the second chunk waited a second, the end another one
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_closed_receiver_is_a_write_error() {
        let (w, r) = tokio::io::duplex(1024);
        drop(r);
        let e = copy(std::io::Cursor::new(vec![1u8; 10]), w, 0, Arc::default())
            .await
            .expect_err("closed");
        assert!(matches!(e, PipeError::Write { .. }), "{e}");
    }
}
