//! A client of Proxmox's `watchdog-mux`, which owns `/dev/watchdog` on a
//! Proxmox node and multiplexes it to its clients over a unix socket.
//!
//! The protocol: any byte written is a keep-alive; a `V` followed by a
//! close is a clean goodbye. A client that is silent for 60 s, or closes
//! without the `V`, makes the mux stop petting the hardware watchdog
//! (timeout 10 s), and the node resets.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `watchdog-mux` lets a client be silent before it resets the
/// node.
pub const MUX_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The byte written as a keep-alive (anything but `V`).
pub const KEEPALIVE_BYTE: u8 = 0;

/// A connection to `watchdog-mux`.
#[derive(Debug)]
pub struct MuxClient {
    path: PathBuf,
    stream: UnixStream,
}

impl MuxClient {
    /// Connects to the mux's socket. Writes give up after `write_timeout`,
    /// so a stuck mux cannot stall the keeper.
    pub fn connect(path: &Path, write_timeout: Duration) -> io::Result<MuxClient> {
        let stream = UnixStream::connect(path)?;
        stream.set_write_timeout(Some(write_timeout.max(Duration::from_millis(1))))?;
        Ok(MuxClient {
            path: path.to_path_buf(),
            stream,
        })
    }

    /// The socket, for logs and errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one keep-alive byte.
    pub fn keepalive(&mut self) -> io::Result<()> {
        self.stream.write_all(&[KEEPALIVE_BYTE])
    }

    /// Writes the magic `V`: the connection's close that follows is a clean
    /// goodbye, not a reason to reset the node.
    pub fn magic_close(&mut self) -> io::Result<()> {
        self.stream.write_all(b"V")?;
        self.stream.flush()
    }
}
