//! Finding QEMU and the lab artifacts, and the lab-wide lock.

use crate::error::{io_err, Error, Result};
use crate::guest::{GuestBuilder, Link};
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The command that builds the lab, quoted in skip reasons.
pub const BUILD_HINT: &str = "run hw-tests/lab/lab.sh build";

/// A usable lab: QEMU plus a built guest kernel and initramfs.
///
/// Cloning is cheap; all clones (and every [`crate::Guest`] booted from them) share the lab lock
/// taken by [`Lab::acquire`], which is released when the last of them is dropped.
#[derive(Debug, Clone)]
pub struct Lab {
    pub(crate) inner: Arc<LabInner>,
}

#[derive(Debug)]
pub(crate) struct LabInner {
    pub(crate) dir: PathBuf,
    pub(crate) key: String,
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    pub(crate) qemu: PathBuf,
    pub(crate) setpriv: Option<PathBuf>,
    pub(crate) ipmi_sim: Option<PathBuf>,
    pub(crate) ipmitool: Option<PathBuf>,
    /// QEMU knows `reconnect-ms=` (9.2+) rather than only the old `reconnect=`.
    pub(crate) reconnect_ms: bool,
    /// Held for the lab's lifetime (released on drop).
    pub(crate) _lock: Option<Flock<File>>,
}

/// Finds an executable in `$PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Reads `KEY=VALUE` lines.
fn read_env_file(path: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

impl Lab {
    /// The lab directory: `$TANDEM_LAB_DIR`, or `<repo>/target/lab`.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = env_path("TANDEM_LAB_DIR") {
            return d;
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest
            .parent()
            .unwrap_or(manifest)
            .join("target")
            .join("lab")
    }

    /// Finds QEMU and the built artifacts without taking the lab lock.
    ///
    /// Artifacts come from `$TANDEM_LAB_KERNEL` + `$TANDEM_LAB_INITRD` if both are set, otherwise from
    /// `<lab dir>/current.env` written by `lab.sh build`. QEMU is `$TANDEM_LAB_QEMU` or
    /// `qemu-system-x86_64` in `$PATH`. Returns [`Error::Unavailable`] with a reason to print when
    /// the lab cannot run here.
    pub fn detect() -> Result<Lab> {
        let qemu = match env_path("TANDEM_LAB_QEMU").or_else(|| which("qemu-system-x86_64")) {
            Some(q) if q.is_file() => q,
            _ => {
                return Err(Error::Unavailable(format!(
                    "qemu-system-x86_64 not installed; {BUILD_HINT}"
                )))
            }
        };
        let dir = Lab::default_dir();
        let (key, kernel, initrd) =
            match (env_path("TANDEM_LAB_KERNEL"), env_path("TANDEM_LAB_INITRD")) {
                (Some(k), Some(i)) => ("env".to_string(), k, i),
                _ => {
                    let current = dir.join("current.env");
                    if !current.is_file() {
                        return Err(Error::Unavailable(format!(
                            "lab artifacts not built ({} missing); {BUILD_HINT}",
                            current.display()
                        )));
                    }
                    let env = read_env_file(&current)?;
                    let get = |k: &str| {
                        env.get(k).cloned().ok_or_else(|| {
                            Error::Unavailable(format!(
                                "{} lacks {k}; {BUILD_HINT}",
                                current.display()
                            ))
                        })
                    };
                    (
                        get("TANDEM_LAB_KEY")?,
                        PathBuf::from(get("TANDEM_LAB_KERNEL")?),
                        PathBuf::from(get("TANDEM_LAB_INITRD")?),
                    )
                }
            };
        for (what, p) in [("guest kernel", &kernel), ("guest initramfs", &initrd)] {
            if !p.is_file() {
                return Err(Error::Unavailable(format!(
                    "{what} {} missing; {BUILD_HINT}",
                    p.display()
                )));
            }
        }
        let reconnect_ms = Command::new(&qemu)
            .args(["-chardev", "socket,help"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("reconnect-ms"))
            .unwrap_or(false);
        Ok(Lab {
            inner: Arc::new(LabInner {
                dir,
                key,
                kernel,
                initrd,
                qemu,
                setpriv: which("setpriv"),
                ipmi_sim: which("ipmi_sim"),
                ipmitool: which("ipmitool"),
                reconnect_ms,
                _lock: None,
            }),
        })
    }

    /// [`Lab::detect`], then takes the lab-wide lock (an `flock` on `<lab dir>/lab.lock`), waiting
    /// for other tests (in this or other processes) to finish with their guests. This keeps the
    /// host to one test — at most two busy guests — at a time.
    pub fn acquire() -> Result<Lab> {
        let lab = Lab::detect()?;
        let inner = Arc::try_unwrap(lab.inner)
            .map_err(|_| Error::Config("lab handle unexpectedly shared".into()))?;
        std::fs::create_dir_all(&inner.dir)
            .map_err(io_err(format!("creating {}", inner.dir.display())))?;
        let path = inner.dir.join("lab.lock");
        let open = || {
            File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err(format!("opening {}", path.display())))
        };
        let lock = match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err(_) => {
                eprintln!(
                    "[tandem-lab] waiting for the lab lock {} (another lab test is running)",
                    path.display()
                );
                Flock::lock(open()?, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
                    context: format!("locking {}", path.display()),
                    source: e.into(),
                })?
            }
        };
        sweep_stale_guest_dirs();
        Ok(Lab {
            inner: Arc::new(LabInner {
                _lock: Some(lock),
                ..inner
            }),
        })
    }

    /// [`Lab::acquire`] for tests: on [`Error::Unavailable`] prints `SKIP <test>: <reason>` and
    /// returns `None`; any other error panics (a broken lab must not pass silently). With
    /// `TANDEM_LAB_REQUIRE=1` (set by `scripts/test.sh`, so CI) an unavailable lab panics too.
    pub fn acquire_or_skip(test: &str) -> Option<Lab> {
        match Lab::acquire() {
            Ok(lab) => Some(lab),
            Err(Error::Unavailable(reason))
                if std::env::var_os("TANDEM_LAB_REQUIRE").is_some_and(|v| v == "1") =>
            {
                panic!(
                    "{test}: the lab is required (TANDEM_LAB_REQUIRE=1) but unavailable: {reason}"
                )
            }
            Err(Error::Unavailable(reason)) => {
                eprintln!("SKIP {test}: {reason}");
                None
            }
            Err(e) => panic!("{test}: cannot use the lab: {e}"),
        }
    }

    /// Starts describing a guest named `name` (letters, digits and `-`).
    pub fn guest(&self, name: &str) -> GuestBuilder {
        GuestBuilder::new(self.clone(), name)
    }

    /// Reserves a point-to-point network link between two guests (a free TCP port on 127.0.0.1).
    pub fn link(&self) -> Result<Link> {
        Link::new()
    }

    /// Fails with [`Error::Unavailable`] unless OpenIPMI's `ipmi_sim` and `ipmitool` are installed.
    pub fn require_ipmi(&self) -> Result<()> {
        match (&self.inner.ipmi_sim, &self.inner.ipmitool) {
            (Some(_), Some(_)) => Ok(()),
            _ => Err(Error::Unavailable(format!(
                "ipmi_sim (openipmi) or ipmitool not installed; {BUILD_HINT}"
            ))),
        }
    }

    /// The lab directory (cache, `current.env`, lock).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The artifact key, `<kernel-abi>-<zfs-version>` (or `env` when given by environment).
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The guest kernel image.
    pub fn kernel(&self) -> &Path {
        &self.inner.kernel
    }

    /// The guest initramfs (the whole root filesystem).
    pub fn initrd(&self) -> &Path {
        &self.inner.initrd
    }

    /// The QEMU binary.
    pub fn qemu(&self) -> &Path {
        &self.inner.qemu
    }
}

/// Removes guest directories (`$TMPDIR/tandem-lab-<pid>-<n>-<name>`) left by test processes that
/// were killed (SIGKILL skips `Drop`), unless their QEMU still runs (`TANDEM_KEEP_GUESTS=1`).
fn sweep_stale_guest_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("tandem-lab-") else {
            continue;
        };
        let mut parts = rest.splitn(3, '-');
        let (Some(pid), Some(n), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if pid.parse::<u32>().is_err() || n.parse::<u32>().is_err() {
            continue;
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let qemu_alive = std::fs::read_to_string(entry.path().join("qemu.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !qemu_alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
