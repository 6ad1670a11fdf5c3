//! Reading a stream of JSON objects (QMP / guest agent) from a socket.

use serde_json::Value;
use std::io::{ErrorKind, Read};
use std::time::Instant;

/// What [`JsonReader::next`] can end with besides an object.
pub(crate) enum ReadError {
    /// The deadline passed.
    Timeout,
    /// The peer closed the connection.
    Closed,
    /// Any other I/O error.
    Io(std::io::Error),
}

/// Buffers bytes from a stream and hands out complete JSON values, skipping garbage between them
/// (e.g. the 0xFF sync bytes of the guest agent, or stale partial output).
#[derive(Debug, Default)]
pub(crate) struct JsonReader {
    buf: Vec<u8>,
}

impl JsonReader {
    /// Returns a parsed value if the buffer already holds a complete one.
    fn take_buffered(&mut self) -> Option<Value> {
        loop {
            let start = self.buf.iter().position(|&b| b == b'{')?;
            self.buf.drain(..start);
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    self.buf.drain(..used);
                    return Some(v);
                }
                Some(Err(e)) if e.is_eof() => return None,
                // not JSON after all: drop this '{' and look for the next one
                Some(Err(_)) => {
                    self.buf.drain(..1);
                }
                None => return None,
            }
        }
    }

    /// Reads the next JSON value from `stream`; `set_timeout` is called with the time left before
    /// each blocking read (use `UnixStream::set_read_timeout`).
    pub(crate) fn next<S: Read>(
        &mut self,
        stream: &mut S,
        deadline: Option<Instant>,
        mut set_timeout: impl FnMut(&mut S, Option<std::time::Duration>) -> std::io::Result<()>,
    ) -> Result<Value, ReadError> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(v) = self.take_buffered() {
                return Ok(v);
            }
            let left = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(ReadError::Timeout);
                    }
                    Some(d - now)
                }
                None => None,
            };
            set_timeout(stream, left).map_err(ReadError::Io)?;
            match stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if deadline.is_none() {
                        continue;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_objects_and_skips_garbage() {
        let mut data: &[u8] = b"\xff\xff{\"return\": 1}\n{\"event\":\"RESET\"}{\"a\":";
        let mut r = JsonReader::default();
        let noop = |_: &mut &[u8], _| Ok(());
        let v = r.next(&mut data, None, noop);
        assert!(matches!(v, Ok(ref v) if v["return"] == 1), "{v:?}");
        let v = r.next(&mut data, None, noop);
        assert!(matches!(v, Ok(ref v) if v["event"] == "RESET"), "{v:?}");
        assert!(matches!(
            r.next(&mut data, None, noop),
            Err(ReadError::Closed)
        ));
    }
}
