//! Encoding and checking single frames (pure, synchronous).

/// Magic at the start of every frame.
pub const MAGIC: [u8; 4] = *b"TDMF";
/// Wire format version.
pub const VERSION: u8 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 24;
/// Largest raw or payload length a frame may carry (16 MiB).
pub const MAX_FRAME: usize = 16 << 20;
/// Flag: the payload is zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;
/// Flag: this frame is the trailer.
pub const FLAG_TRAILER: u8 = 2;

/// How frames are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Never.
    None,
    /// zstd at this level, per frame where it pays.
    Zstd(i32),
}

/// A frame that failed a check. `offset` is the byte offset of the frame's
/// header in the wire stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The header's checksum does not match: a header byte changed.
    #[error("corrupt frame header at byte {offset} (header crc32 mismatch)")]
    HeaderCrc {
        /// Offset of the frame.
        offset: u64,
    },
    /// Not a tandem frame.
    #[error("not a tandem stream at byte {offset} (bad magic {found:02x?})")]
    Magic {
        /// Offset of the frame.
        offset: u64,
        /// What was found.
        found: [u8; 4],
    },
    /// A version this build does not speak.
    #[error("unsupported stream version {version} at byte {offset}")]
    Version {
        /// Offset of the frame.
        offset: u64,
        /// The version found.
        version: u8,
    },
    /// Lengths out of range or inconsistent with the flags.
    #[error("bad frame lengths at byte {offset}: raw {raw_len}, payload {payload_len}")]
    Lengths {
        /// Offset of the frame.
        offset: u64,
        /// Raw length.
        raw_len: u32,
        /// Payload length.
        payload_len: u32,
    },
    /// The payload's checksum does not match: a payload byte changed.
    #[error("corrupt frame payload at byte {offset} ({payload_len} bytes, crc32 mismatch)")]
    PayloadCrc {
        /// Offset of the frame.
        offset: u64,
        /// Payload length.
        payload_len: u32,
    },
    /// zstd refused the payload, or it did not decompress to `raw_len`.
    #[error("frame at byte {offset} does not decompress to {raw_len} bytes: {reason}")]
    Decompress {
        /// Offset of the frame.
        offset: u64,
        /// Expected length.
        raw_len: u32,
        /// What went wrong.
        reason: String,
    },
    /// The stream ended inside a frame or before the trailer.
    #[error("stream truncated at byte {offset}: {what}")]
    Truncated {
        /// Where the stream ended.
        offset: u64,
        /// What was missing.
        what: &'static str,
    },
    /// The trailer's totals disagree with what arrived.
    #[error("trailer at byte {offset} says {want_bytes} bytes in {want_frames} frames, but {got_bytes} bytes in {got_frames} frames arrived")]
    TrailerMismatch {
        /// Offset of the trailer.
        offset: u64,
        /// Bytes announced.
        want_bytes: u64,
        /// Frames announced.
        want_frames: u64,
        /// Bytes received.
        got_bytes: u64,
        /// Frames received.
        got_frames: u64,
    },
}

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Flags.
    pub flags: u8,
    /// Length once decompressed.
    pub raw_len: u32,
    /// Length on the wire.
    pub payload_len: u32,
    /// crc32 of the payload as sent.
    pub payload_crc: u32,
}

impl FrameHeader {
    /// Is this the trailer?
    pub fn is_trailer(&self) -> bool {
        self.flags & FLAG_TRAILER != 0
    }

    /// Is the payload compressed?
    pub fn is_zstd(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }
}

fn header_bytes(flags: u8, raw_len: u32, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    write_header(&mut h, flags, raw_len, payload);
    h
}

fn write_header(h: &mut [u8; HEADER_LEN], flags: u8, raw_len: u32, payload: &[u8]) {
    h.fill(0);
    h[0..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = flags;
    h[8..12].copy_from_slice(&raw_len.to_le_bytes());
    h[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[16..20].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let hc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&hc.to_le_bytes());
}

/// Turns `buf` = [`HEADER_LEN`] bytes of room followed by a raw payload into
/// a complete raw data frame, in place: the header is written into the room
/// (the payload is not copied). `buf.len() - HEADER_LEN` must be at most
/// [`MAX_FRAME`].
pub fn seal_raw(buf: &mut [u8]) {
    debug_assert!(buf.len() >= HEADER_LEN && buf.len() - HEADER_LEN <= MAX_FRAME);
    let (h, payload) = buf.split_at_mut(HEADER_LEN);
    let h: &mut [u8; HEADER_LEN] = h.try_into().expect("HEADER_LEN bytes");
    write_header(h, 0, payload.len() as u32, payload);
}

/// Compresses `raw` with zstd at `level` into `out` as a complete
/// compressed frame (header included) if that saves at least 1/32 of its
/// size; returns the frame's length, or `None` if the frame should go raw.
/// `out` is resized as needed and its contents beyond the frame are
/// unspecified. The zstd context is kept per thread and reused.
pub fn compress_frame(raw: &[u8], level: i32, out: &mut Vec<u8>) -> Option<usize> {
    debug_assert!(raw.len() <= MAX_FRAME);
    let need = HEADER_LEN + zstd::zstd_safe::compress_bound(raw.len());
    if out.len() < need {
        out.resize(need, 0);
    }
    let n = CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, z) = c.as_mut()?;
        z.compress_to_buffer(raw, &mut out[HEADER_LEN..need]).ok()
    })?;
    // Worth it only if it saves at least 1/32.
    if n + raw.len() / 32 >= raw.len() {
        return None;
    }
    let (h, payload) = out.split_at_mut(HEADER_LEN);
    let h: &mut [u8; HEADER_LEN] = h.try_into().expect("HEADER_LEN bytes");
    write_header(h, FLAG_ZSTD, raw.len() as u32, &payload[..n]);
    Some(HEADER_LEN + n)
}

thread_local! {
    static CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Appends one data frame carrying `raw` (at most [`MAX_FRAME`] bytes) to
/// `out`, compressed if `compression` asks for it and it pays. Returns
/// whether it was compressed. `scratch` is reused between calls.
pub fn encode_frame(
    raw: &[u8],
    compression: Compression,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> bool {
    debug_assert!(raw.len() <= MAX_FRAME);
    if let Compression::Zstd(level) = compression {
        if let Some(n) = compress_frame(raw, level, scratch) {
            out.extend_from_slice(&scratch[..n]);
            return true;
        }
    }
    out.extend_from_slice(&header_bytes(0, raw.len() as u32, raw));
    out.extend_from_slice(raw);
    false
}

/// Appends the trailer: `total` raw bytes in `frames` data frames.
pub fn encode_trailer(total: u64, frames: u64, out: &mut Vec<u8>) {
    let mut p = [0u8; 16];
    p[0..8].copy_from_slice(&total.to_le_bytes());
    p[8..16].copy_from_slice(&frames.to_le_bytes());
    out.extend_from_slice(&header_bytes(FLAG_TRAILER, 16, &p));
    out.extend_from_slice(&p);
}

/// Checks a header found at stream offset `offset`.
pub fn parse_header(h: &[u8; HEADER_LEN], offset: u64) -> Result<FrameHeader, FrameError> {
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        // A wrong magic with a valid header crc would be another protocol;
        // with a bad crc it is corruption. Report the more useful one.
        if crc32fast::hash(&h[0..20]) != u32_at(20) && magic[..3] == MAGIC[..3] {
            return Err(FrameError::HeaderCrc { offset });
        }
        return Err(FrameError::Magic {
            offset,
            found: magic,
        });
    }
    if crc32fast::hash(&h[0..20]) != u32_at(20) {
        return Err(FrameError::HeaderCrc { offset });
    }
    if h[4] != VERSION {
        return Err(FrameError::Version {
            offset,
            version: h[4],
        });
    }
    let flags = h[5];
    let (raw_len, payload_len) = (u32_at(8), u32_at(12));
    let bad_len = raw_len as usize > MAX_FRAME
        || payload_len as usize > MAX_FRAME + 4096
        || flags & !(FLAG_ZSTD | FLAG_TRAILER) != 0
        || (flags & FLAG_ZSTD == 0 && raw_len != payload_len)
        || (flags & FLAG_TRAILER != 0
            && (raw_len != 16 || payload_len != 16 || flags & FLAG_ZSTD != 0));
    if bad_len {
        return Err(FrameError::Lengths {
            offset,
            raw_len,
            payload_len,
        });
    }
    Ok(FrameHeader {
        flags,
        raw_len,
        payload_len,
        payload_crc: u32_at(16),
    })
}

/// Checks a payload against its header and appends the raw bytes to `out`.
pub fn decode_payload(
    h: &FrameHeader,
    payload: &[u8],
    offset: u64,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    check_payload(h, payload, offset)?;
    if h.is_zstd() {
        let start = out.len();
        out.resize(start + h.raw_len as usize, 0);
        match decompress_payload(h, payload, offset, &mut out[start..]) {
            Ok(()) => Ok(()),
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    } else {
        out.extend_from_slice(payload);
        Ok(())
    }
}

/// Checks a payload's crc32 against its header.
pub fn check_payload(h: &FrameHeader, payload: &[u8], offset: u64) -> Result<(), FrameError> {
    if crc32fast::hash(payload) != h.payload_crc {
        return Err(FrameError::PayloadCrc {
            offset,
            payload_len: h.payload_len,
        });
    }
    Ok(())
}

/// Decompresses a (checked) zstd payload into `out`, which must be exactly
/// `h.raw_len` bytes long; fails unless it decompresses to exactly that.
/// The zstd context is kept per thread and reused.
pub fn decompress_payload(
    h: &FrameHeader,
    payload: &[u8],
    offset: u64,
    out: &mut [u8],
) -> Result<(), FrameError> {
    let err = |reason: String| FrameError::Decompress {
        offset,
        raw_len: h.raw_len,
        reason,
    };
    let r = DCTX.with(|d| {
        let mut d = d.borrow_mut();
        let mut z = match d.take() {
            Some(z) => z,
            None => zstd::bulk::Decompressor::new()?,
        };
        let r = z.decompress_to_buffer(payload, out);
        *d = Some(z);
        r
    });
    match r {
        Ok(n) if n == h.raw_len as usize && n == out.len() => Ok(()),
        Ok(n) => Err(err(format!("got {n} bytes"))),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Parses a trailer payload: (total raw bytes, data frames).
pub fn parse_trailer(payload: &[u8]) -> Option<(u64, u64)> {
    let t = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let f = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((t, f))
}

/// Decodes a whole in-memory stream (for tests and tools): the raw bytes,
/// or the first error.
pub fn decode_all(wire: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    let mut frames = 0u64;
    loop {
        let Some(hb) = wire.get(off..off + HEADER_LEN) else {
            return Err(FrameError::Truncated {
                offset: off as u64,
                what: if off == wire.len() {
                    "no trailer"
                } else {
                    "inside a frame header"
                },
            });
        };
        let mut hdr = [0u8; HEADER_LEN];
        hdr.copy_from_slice(hb);
        let h = parse_header(&hdr, off as u64)?;
        let p0 = off + HEADER_LEN;
        let Some(payload) = wire.get(p0..p0 + h.payload_len as usize) else {
            return Err(FrameError::Truncated {
                offset: wire.len() as u64,
                what: "inside a frame payload",
            });
        };
        if h.is_trailer() {
            if crc32fast::hash(payload) != h.payload_crc {
                return Err(FrameError::PayloadCrc {
                    offset: off as u64,
                    payload_len: h.payload_len,
                });
            }
            let (want_bytes, want_frames) = parse_trailer(payload).unwrap_or_default();
            if want_bytes != out.len() as u64 || want_frames != frames {
                return Err(FrameError::TrailerMismatch {
                    offset: off as u64,
                    want_bytes,
                    want_frames,
                    got_bytes: out.len() as u64,
                    got_frames: frames,
                });
            }
            return Ok(out);
        }
        decode_payload(&h, payload, off as u64, &mut out)?;
        frames += 1;
        off = p0 + h.payload_len as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(data: &[u8], chunk: usize, c: Compression) -> Vec<u8> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let mut frames = 0;
        for part in data.chunks(chunk.max(1)) {
            encode_frame(part, c, &mut scratch, &mut out);
            frames += 1;
        }
        encode_trailer(data.len() as u64, frames, &mut out);
        out
    }

    fn mixed(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        (0..n)
            .map(|i| {
                if (i / 4096) % 2 == 0 {
                    (i % 97) as u8
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn compressible_frames_shrink_and_random_ones_go_raw() {
        let (mut out, mut s) = (Vec::new(), Vec::new());
        assert!(encode_frame(
            &vec![7u8; 1 << 20],
            Compression::Zstd(1),
            &mut s,
            &mut out
        ));
        assert!(out.len() < 10_000);
        let random = {
            let mut x = 1u64;
            (0..1 << 20)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 33) as u8
                })
                .collect::<Vec<u8>>()
        };
        let mut out2 = Vec::new();
        assert!(
            !encode_frame(&random, Compression::Zstd(1), &mut s, &mut out2),
            "incompressible data goes raw"
        );
        assert_eq!(out2.len(), random.len() + HEADER_LEN);
    }

    #[test]
    fn every_flipped_byte_is_detected_with_its_frame_offset() {
        let data = mixed(3 * 4096 + 100);
        for c in [Compression::None, Compression::Zstd(3)] {
            let wire = encode_all(&data, 4096, c);
            assert_eq!(decode_all(&wire).expect("clean stream decodes"), data);
            // Flip each byte (sampled densely) and expect an error, never wrong data.
            for i in (0..wire.len()).step_by(7).chain([0, 5, 20, wire.len() - 1]) {
                let mut bad = wire.clone();
                bad[i] ^= 0x40;
                match decode_all(&bad) {
                    Ok(out) => panic!("flip at {i} went unnoticed ({} bytes out)", out.len()),
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(msg.contains("byte"), "{msg}");
                    }
                }
            }
        }
    }

    #[test]
    fn truncation_anywhere_is_detected() {
        let data = mixed(10_000);
        let wire = encode_all(&data, 3000, Compression::Zstd(1));
        for cut in 0..wire.len() {
            let e = decode_all(&wire[..cut]).expect_err("truncated");
            assert!(
                matches!(e, FrameError::Truncated { .. }),
                "cut at {cut}: {e}"
            );
        }
    }

    #[test]
    fn dropped_or_repeated_frames_fail_the_trailer() {
        let data = mixed(9000);
        let (mut a, mut s) = (Vec::new(), Vec::new());
        encode_frame(&data[..3000], Compression::None, &mut s, &mut a);
        let first = a.clone();
        encode_frame(&data[3000..6000], Compression::None, &mut s, &mut a);
        a.extend_from_slice(&first);
        encode_trailer(6000, 2, &mut a);
        assert!(matches!(
            decode_all(&a),
            Err(FrameError::TrailerMismatch { got_frames: 3, .. })
        ));
    }

    proptest! {
        #[test]
        fn roundtrip(data in proptest::collection::vec(any::<u8>(), 0..20_000), chunk in 1usize..5000, level in 0i32..4) {
            let c = if level == 0 { Compression::None } else { Compression::Zstd(level) };
            let wire = encode_all(&data, chunk, c);
            prop_assert_eq!(decode_all(&wire).expect("decodes"), data);
        }
    }
}
