//! # tandem-stream
//!
//! The framing that carries `zfs send` bytes between nodes. A stream is a
//! sequence of frames and ends with a trailer:
//!
//! ```text
//! frame   = header(24) payload(payload_len)
//! header  = magic "TDMF" | version u8 | flags u8 | reserved u16
//!         | raw_len u32 | payload_len u32 | payload_crc32 u32 | header_crc32 u32   (little endian)
//! flags   = bit 0: payload is zstd-compressed; bit 1: trailer
//! trailer = a frame with the trailer flag whose payload is total raw bytes u64 | data frames u64
//! ```
//!
//! Every frame is checked before a byte of it reaches `zfs receive`: the
//! header's own crc32, the magic, the version, sane lengths, the payload's
//! crc32, and the exact decompressed length. A stream that ends without a
//! trailer is truncated. Errors name the byte offset of the bad frame in the
//! wire stream, so a log line says where the corruption was.
//!
//! Compression is decided per frame: a frame whose zstd output does not save
//! at least 1/32 of its size goes raw (encrypted `send -w` streams, already
//! compressed data), so incompressible data costs only the attempt.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod frame;
pub mod pipeline;

pub use frame::{
    check_payload, compress_frame, decode_all, decode_payload, decompress_payload, encode_frame,
    encode_trailer, parse_header, seal_raw, Compression, FrameError, FrameHeader, HEADER_LEN,
    MAX_FRAME,
};
pub use pipeline::{decode, encode, Counters, EncodeOptions, Mode, Stats, StreamError};
