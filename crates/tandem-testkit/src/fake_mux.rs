//! A stand-in for Proxmox's watchdog-mux, for the watchdog tests: a unix
//! socket that
//! accepts one client and records every byte it writes (any byte is a
//! keep-alive, `V` is the clean goodbye) and whether it closed the
//! connection (a close without `V` would reset the node).

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The fake mux; clones share what it recorded.
#[derive(Clone)]
pub struct FakeMux {
    bytes: Arc<Mutex<Vec<u8>>>,
    closed: Arc<AtomicBool>,
}

impl FakeMux {
    /// Listens on `path`.
    pub fn start(path: &Path) -> FakeMux {
        let listener = UnixListener::bind(path).unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (b, c) = (bytes.clone(), closed.clone());
        thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 64];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => b.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
            c.store(true, Ordering::SeqCst);
        });
        FakeMux { bytes, closed }
    }

    /// Everything received so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    /// How many bytes (keep-alives) arrived.
    pub fn count(&self) -> usize {
        self.bytes.lock().unwrap().len()
    }

    /// How many `V`s arrived.
    pub fn vs(&self) -> usize {
        self.bytes().iter().filter(|&&b| b == b'V').count()
    }

    /// Whether the client closed the connection.
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Whether keep-alives still arrive: any within `window`.
    pub fn petting(&self, window: Duration) -> bool {
        let before = self.count();
        thread::sleep(window);
        self.count() > before
    }
}
