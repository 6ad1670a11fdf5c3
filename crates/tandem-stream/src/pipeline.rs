//! Async encode and decode of whole streams.
//!
//! Encoding reads the `zfs send` output in [`FRAME_SIZE`] chunks and
//! compresses them on blocking threads, several at once, while the writer
//! emits finished frames strictly in order; the number of frames in flight
//! is bounded, so a slow link pushes back to the reader instead of growing
//! memory. In `Auto` mode the encoder compares how long the writer waits
//! for the compressors with how long writes block: when the link is the
//! bottleneck it compresses, when the CPU is, frames go raw.
//!
//! Decoding checks every frame (see [`crate::frame`]) before its bytes are
//! written on, and fails on a missing or inconsistent trailer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, FrameError, HEADER_LEN};

/// Raw bytes per frame.
pub const FRAME_SIZE: usize = 1 << 20;

/// How an encoder compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Never.
    None,
    /// Always try zstd at this level (frames that do not shrink go raw).
    Zstd(i32),
    /// zstd at this level while the link, not the CPU, is the bottleneck.
    Auto(i32),
}

/// Encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Compression mode.
    pub mode: Mode,
    /// Compressing threads (frames in flight is twice this).
    pub workers: usize,
    /// Bytes per second on the wire, 0 = unlimited.
    pub rate_limit: u64,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            mode: Mode::Auto(1),
            workers,
            rate_limit: 0,
        }
    }
}

/// Live counters, readable while a stream runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Raw (zfs) bytes so far.
    pub raw: AtomicU64,
    /// Wire bytes so far.
    pub wire: AtomicU64,
    /// Frames so far.
    pub frames: AtomicU64,
    /// Frames sent compressed.
    pub compressed: AtomicU64,
}

/// What a finished stream moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Raw bytes.
    pub raw: u64,
    /// Wire bytes (headers and trailer included).
    pub wire: u64,
    /// Data frames.
    pub frames: u64,
    /// Frames that went compressed.
    pub compressed: u64,
}

/// Stream errors.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A frame failed its checks.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading the input failed.
    #[error("reading at byte {offset}: {source}")]
    Read {
        /// Offset in the input.
        offset: u64,
        /// OS error.
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("writing at byte {offset}: {source}")]
    Write {
        /// Offset in the output.
        offset: u64,
        /// OS error.
        source: std::io::Error,
    },
    /// A compression thread died.
    #[error("compression worker failed: {0}")]
    Worker(String),
}

/// Reads until `buf` is full or EOF; returns the bytes read.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = r.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

struct Pacer {
    rate: u64,
    start: Instant,
}

impl Pacer {
    async fn pace(&self, sent: u64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(sent as f64 / self.rate as f64);
        let el = self.start.elapsed();
        if due > el {
            tokio::time::sleep(due - el).await;
        }
    }
}

/// One frame on its way to the writer: sealed already (raw frames are
/// sealed in place on the reading task, no thread hop), or being compressed
/// on a blocking thread.
enum Slot {
    Ready(Sealed),
    Busy(tokio::task::JoinHandle<Sealed>),
}

/// A complete frame in `buf[..len]`; `spare` is a buffer to recycle.
struct Sealed {
    buf: Vec<u8>,
    len: usize,
    compressed: bool,
    spare: Option<Vec<u8>>,
}

/// Size of every encoder buffer: a header, then room for a raw frame or for
/// zstd's worst case of one.
fn buf_len() -> usize {
    HEADER_LEN + zstd::zstd_safe::compress_bound(FRAME_SIZE)
}

/// Encodes everything from `input` onto `output`, then the trailer; flushes
/// `output` but leaves it open.
///
/// The input is read straight into reused frame buffers behind room for the
/// header, so a raw frame is written as read (one copy in, one out: the
/// kernel's); compressed frames go to a blocking thread with a reused zstd
/// context and come back in order.
pub async fn encode<R, W>(
    mut input: R,
    mut output: W,
    opts: EncodeOptions,
    counters: Arc<Counters>,
) -> Result<Stats, StreamError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let workers = opts.workers.max(1);
    let level = match opts.mode {
        Mode::None => None,
        Mode::Zstd(l) | Mode::Auto(l) => Some(l),
    };
    let mut compress_now = level.is_some();
    let auto = matches!(opts.mode, Mode::Auto(_));
    let mut inflight: VecDeque<Slot> = VecDeque::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut stats = Stats::default();
    let pacer = Pacer {
        rate: opts.rate_limit,
        start: Instant::now(),
    };
    // Exponentially weighted waits: on the encoders vs. in writes.
    let (mut wait_enc, mut wait_write) = (0f64, 0f64);
    let mut eof = false;
    loop {
        while !eof && inflight.len() < workers * 2 {
            let mut buf = pool.pop().unwrap_or_else(|| vec![0u8; buf_len()]);
            let n = fill(&mut input, &mut buf[HEADER_LEN..HEADER_LEN + FRAME_SIZE])
                .await
                .map_err(|e| StreamError::Read {
                    offset: stats.raw,
                    source: e,
                })?;
            if n == 0 {
                pool.push(buf);
                eof = true;
                break;
            }
            stats.raw += n as u64;
            counters.raw.store(stats.raw, Ordering::Relaxed);
            match level.filter(|_| compress_now) {
                None => {
                    frame::seal_raw(&mut buf[..HEADER_LEN + n]);
                    inflight.push_back(Slot::Ready(Sealed {
                        buf,
                        len: HEADER_LEN + n,
                        compressed: false,
                        spare: None,
                    }));
                }
                Some(l) => {
                    let mut out = pool.pop().unwrap_or_else(|| vec![0u8; buf_len()]);
                    inflight.push_back(Slot::Busy(tokio::task::spawn_blocking(move || {
                        match frame::compress_frame(&buf[HEADER_LEN..HEADER_LEN + n], l, &mut out) {
                            Some(len) => Sealed {
                                buf: out,
                                len,
                                compressed: true,
                                spare: Some(buf),
                            },
                            None => {
                                frame::seal_raw(&mut buf[..HEADER_LEN + n]);
                                Sealed {
                                    buf,
                                    len: HEADER_LEN + n,
                                    compressed: false,
                                    spare: Some(out),
                                }
                            }
                        }
                    })));
                }
            }
        }
        let Some(next) = inflight.pop_front() else {
            break;
        };
        let t0 = Instant::now();
        let sealed = match next {
            Slot::Ready(s) => s,
            Slot::Busy(h) => h.await.map_err(|e| StreamError::Worker(e.to_string()))?,
        };
        let te = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        output
            .write_all(&sealed.buf[..sealed.len])
            .await
            .map_err(|e| StreamError::Write {
                offset: stats.wire,
                source: e,
            })?;
        let tw = t1.elapsed().as_secs_f64();
        stats.wire += sealed.len as u64;
        stats.frames += 1;
        stats.compressed += u64::from(sealed.compressed);
        pool.push(sealed.buf);
        pool.extend(sealed.spare);
        counters.wire.store(stats.wire, Ordering::Relaxed);
        counters.frames.store(stats.frames, Ordering::Relaxed);
        counters
            .compressed
            .store(stats.compressed, Ordering::Relaxed);
        pacer.pace(stats.wire).await;
        if auto {
            wait_enc = 0.8 * wait_enc + 0.2 * te;
            wait_write = 0.8 * wait_write + 0.2 * (tw + pacer_wait(&pacer, stats.wire));
            // Compress while writes (the link) take longer than compression.
            if compress_now && wait_enc > 1.5 * wait_write {
                compress_now = false;
            } else if !compress_now && wait_write > wait_enc.max(1e-4) {
                compress_now = true;
            }
        }
    }
    let mut t = Vec::with_capacity(HEADER_LEN + 16);
    frame::encode_trailer(stats.raw, stats.frames, &mut t);
    output.write_all(&t).await.map_err(|e| StreamError::Write {
        offset: stats.wire,
        source: e,
    })?;
    stats.wire += t.len() as u64;
    // Flushed, not closed: on a peer connection, messages follow the stream.
    output.flush().await.map_err(|e| StreamError::Write {
        offset: stats.wire,
        source: e,
    })?;
    counters.wire.store(stats.wire, Ordering::Relaxed);
    Ok(stats)
}

/// With a rate limit, the time the pacer will make the writer wait counts as
/// link time: a throttled link is a slow link.
fn pacer_wait(p: &Pacer, sent: u64) -> f64 {
    if p.rate == 0 {
        return 0.0;
    }
    (sent as f64 / p.rate as f64 - p.start.elapsed().as_secs_f64()).max(0.0)
}

/// Decodes a framed stream from `input`, writing the checked raw bytes to
/// `output`. Nothing of a frame is written before the frame passed its checks.
pub async fn decode<R, W>(
    mut input: R,
    mut output: W,
    counters: Arc<Counters>,
) -> Result<Stats, StreamError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut stats = Stats::default();
    // Reused buffers, grown but never shrunk (so never zeroed again).
    let (mut pbuf, mut obuf) = (Vec::new(), Vec::new());
    loop {
        let offset = stats.wire;
        let mut hdr = [0u8; HEADER_LEN];
        let n = fill(&mut input, &mut hdr)
            .await
            .map_err(|e| StreamError::Read { offset, source: e })?;
        if n < HEADER_LEN {
            return Err(FrameError::Truncated {
                offset: offset + n as u64,
                what: if n == 0 {
                    "no trailer"
                } else {
                    "inside a frame header"
                },
            }
            .into());
        }
        let h = frame::parse_header(&hdr, offset)?;
        let plen = h.payload_len as usize;
        if pbuf.len() < plen {
            pbuf.resize(plen, 0);
        }
        let payload = &mut pbuf[..plen];
        let n = fill(&mut input, payload)
            .await
            .map_err(|e| StreamError::Read { offset, source: e })?;
        if n < payload.len() {
            return Err(FrameError::Truncated {
                offset: offset + (HEADER_LEN + n) as u64,
                what: "inside a frame payload",
            }
            .into());
        }
        stats.wire += (HEADER_LEN + payload.len()) as u64;
        if h.is_trailer() {
            if crc32fast::hash(payload) != h.payload_crc {
                return Err(FrameError::PayloadCrc {
                    offset,
                    payload_len: h.payload_len,
                }
                .into());
            }
            let (want_bytes, want_frames) = frame::parse_trailer(payload).unwrap_or_default();
            if want_bytes != stats.raw || want_frames != stats.frames {
                return Err(FrameError::TrailerMismatch {
                    offset,
                    want_bytes,
                    want_frames,
                    got_bytes: stats.raw,
                    got_frames: stats.frames,
                }
                .into());
            }
            output.flush().await.map_err(|e| StreamError::Write {
                offset: stats.raw,
                source: e,
            })?;
            counters.wire.store(stats.wire, Ordering::Relaxed);
            return Ok(stats);
        }
        frame::check_payload(&h, payload, offset)?;
        // A raw payload goes on as it is; a compressed one through `obuf`.
        let raw: &[u8] = if h.is_zstd() {
            let rlen = h.raw_len as usize;
            if obuf.len() < rlen {
                obuf.resize(rlen, 0);
            }
            frame::decompress_payload(&h, payload, offset, &mut obuf[..rlen])?;
            &obuf[..rlen]
        } else {
            payload
        };
        output
            .write_all(raw)
            .await
            .map_err(|e| StreamError::Write {
                offset: stats.raw,
                source: e,
            })?;
        stats.raw += raw.len() as u64;
        stats.frames += 1;
        stats.compressed += u64::from(h.is_zstd());
        counters.raw.store(stats.raw, Ordering::Relaxed);
        counters.wire.store(stats.wire, Ordering::Relaxed);
        counters.frames.store(stats.frames, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        let mut x: u64 = 88172645463325252;
        (0..n)
            .map(|i| {
                if (i / 100_000) % 3 == 0 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                } else {
                    b"zfs send stream of a VM disk "[i % 29]
                }
            })
            .collect()
    }

    async fn roundtrip(mode: Mode, workers: usize, n: usize) -> (Vec<u8>, Stats, Stats) {
        let input = data(n);
        let (w, r) = tokio::io::duplex(256 * 1024);
        let opts = EncodeOptions {
            mode,
            workers,
            rate_limit: 0,
        };
        let src = std::io::Cursor::new(input.clone());
        let enc = tokio::spawn(async move {
            let mut w = w;
            encode(src, &mut w, opts, Arc::default()).await
        });
        let mut out = Vec::new();
        let dec = decode(r, &mut out, Arc::default()).await.expect("decode");
        let es = enc.await.expect("join").expect("encode");
        assert_eq!(out, input);
        (out, es, dec)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_compression_keeps_order() {
        for mode in [Mode::None, Mode::Zstd(1), Mode::Zstd(3), Mode::Auto(1)] {
            let (_, es, ds) = roundtrip(mode, 4, 7 * FRAME_SIZE + 12345).await;
            assert_eq!(es.frames, 8);
            assert_eq!(ds.frames, 8);
            assert_eq!(es.raw, ds.raw);
            if mode == Mode::Zstd(1) {
                assert!(es.wire < es.raw, "compressible data shrinks: {es:?}");
                assert!(es.compressed >= 4, "{es:?}");
            }
            if mode == Mode::None {
                assert_eq!(es.compressed, 0);
            }
        }
        let (_, es, _) = roundtrip(Mode::Zstd(1), 1, 0).await;
        assert_eq!(es.frames, 0, "an empty stream is just a trailer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_stream_stops_before_the_bad_frame_reaches_the_output() {
        let input = data(3 * FRAME_SIZE);
        let mut wire = Vec::new();
        encode(
            std::io::Cursor::new(input.clone()),
            &mut wire,
            EncodeOptions {
                mode: Mode::Zstd(1),
                workers: 2,
                rate_limit: 0,
            },
            Arc::default(),
        )
        .await
        .expect("encode");
        // Flip a byte inside the second frame's payload.
        let first_len =
            HEADER_LEN + u32::from_le_bytes(wire[12..16].try_into().expect("4")) as usize;
        let mut bad = wire.clone();
        bad[first_len + HEADER_LEN + 10] ^= 1;
        let mut out = Vec::new();
        let e = decode(std::io::Cursor::new(bad), &mut out, Arc::default())
            .await
            .expect_err("corrupt");
        assert!(e.to_string().contains(&format!("byte {first_len}")), "{e}");
        assert_eq!(
            out,
            input[..FRAME_SIZE],
            "only the first, good frame was written"
        );
        // Truncated.
        let mut out = Vec::new();
        let e = decode(
            std::io::Cursor::new(&wire[..wire.len() - 5]),
            &mut out,
            Arc::default(),
        )
        .await
        .expect_err("truncated");
        assert!(
            matches!(e, StreamError::Frame(FrameError::Truncated { .. })),
            "{e}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_compresses_on_a_slow_link() {
        // A 8 MiB/s link: compression must be on for most frames.
        let input = data(6 * FRAME_SIZE);
        let mut wire = Vec::new();
        let opts = EncodeOptions {
            mode: Mode::Auto(1),
            workers: 2,
            rate_limit: 8 << 20,
        };
        let s = encode(std::io::Cursor::new(input), &mut wire, opts, Arc::default())
            .await
            .expect("encode");
        assert!(
            s.compressed >= 4,
            "link-bound stream should be compressed: {s:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_stops_compressing_when_the_cpu_is_the_bottleneck() {
        // An in-memory "link" never blocks while zstd -15 is slow: after the
        // first frames auto must send raw.
        let input = data(8 * FRAME_SIZE);
        let mut wire = Vec::new();
        let opts = EncodeOptions {
            mode: Mode::Auto(15),
            workers: 1,
            rate_limit: 0,
        };
        let s = encode(std::io::Cursor::new(input), &mut wire, opts, Arc::default())
            .await
            .expect("encode");
        assert!(
            s.compressed < s.frames / 2,
            "CPU-bound stream should mostly go raw: {s:?}"
        );
    }
}
