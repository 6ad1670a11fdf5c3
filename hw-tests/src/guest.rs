//! Booting and driving one QEMU (TCG) guest.

use crate::error::{io_err, Error, Result};
use crate::ipmi::Bmc;
use crate::lab::Lab;
use crate::qga::{Agent, ExecOptions, ExecOutput};
use crate::qmp::{EventLog, Qmp, QmpEvent};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One gibibyte, for disk sizes.
pub const GIB: u64 = 1 << 30;

/// The host as seen from a guest with [`GuestBuilder::host_network`]: QEMU's user-mode network
/// forwards this address to the host's 127.0.0.1 (TCP and UDP), where e.g. another guest's
/// `ipmi_sim` BMC listens.
pub const HOST_GATEWAY: &str = "10.0.2.2";

/// The guest's own address on that user-mode network.
const HOST_NET_IP: &str = "10.0.2.15/24";

/// The marker line the guest prints on its console when it is ready (see `lab/guest/rc`).
pub const READY_MARKER: &str = "TANDEM-LAB-READY";

static GUEST_COUNTER: AtomicU32 = AtomicU32::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Quotes `s` for a POSIX shell (single quotes).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs a host command with a timeout, capturing stdout and stderr (killed when the time is up).
pub fn run_host(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("running {what}")))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(io_err(format!("running {what}"))),
        Err(_) => {
            if let Ok(p) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(Error::Timeout {
                what,
                after: timeout,
            })
        }
    }
}

/// A watchdog device for the guest (softdog needs none: `modprobe softdog` in the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watchdog {
    /// Intel 6300ESB (`-device i6300esb -action watchdog=reset`); udev loads `i6300esb` in the
    /// guest with a 30 s heartbeat, reload it with `heartbeat=N` for a shorter one.
    I6300esb,
}

/// A point-to-point Ethernet link between two guests, tunnelled over a TCP port on 127.0.0.1
/// (QEMU `-netdev socket`). Nothing leaves the host. Start the [`Link::listen`] guest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    port: u16,
}

/// One end of a [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetEnd {
    port: u16,
    listen: bool,
}

/// Picks a TCP port on 127.0.0.1 that is free right now.
fn free_tcp_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("reserving a TCP port"))?;
    Ok(l.local_addr()
        .map_err(io_err("reserving a TCP port"))?
        .port())
}

/// Picks a UDP port on 127.0.0.1 that is free right now.
fn free_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(io_err("reserving a UDP port"))?;
    Ok(s.local_addr()
        .map_err(io_err("reserving a UDP port"))?
        .port())
}

/// Whether something listens on 127.0.0.1:`port` (from /proc/net/tcp; connecting would steal
/// QEMU's single peer slot).
fn tcp_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .map(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
            })
        })
        .unwrap_or(false)
}

impl Link {
    pub(crate) fn new() -> Result<Link> {
        Ok(Link {
            port: free_tcp_port()?,
        })
    }

    /// The TCP port on 127.0.0.1 carrying the link.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The end that listens (boot this guest first).
    pub fn listen(&self) -> NetEnd {
        NetEnd {
            port: self.port,
            listen: true,
        }
    }

    /// The end that connects.
    pub fn connect(&self) -> NetEnd {
        NetEnd {
            port: self.port,
            listen: false,
        }
    }
}

/// The MAC of a guest's user-mode NIC (`52:54:01:...`, the link NIC uses `52:54:00:...`), by which
/// the guest finds the interface to configure.
fn host_net_mac(hash: u32) -> String {
    format!(
        "52:54:01:{:02x}:{:02x}:{:02x}",
        (hash >> 16) & 0xff,
        (hash >> 8) & 0xff,
        hash & 0xff
    )
}

fn name_hash(name: &str) -> u32 {
    // FNV-1a: stable across runs, unlike std's RandomState
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Describes a guest; [`GuestBuilder::boot`] starts it. Defaults: 1 vCPU, 1536 MiB, no disks,
/// no network, hostid derived from the name, 180 s boot timeout.
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    lab: Lab,
    name: String,
    memory_mib: u32,
    smp: u32,
    disks: Vec<u64>,
    shared_disk: Option<PathBuf>,
    hostid: Option<u32>,
    net: Option<(NetEnd, String)>,
    share: Option<PathBuf>,
    watchdog: Option<Watchdog>,
    ipmi: bool,
    host_net: bool,
    boot_timeout: Duration,
}

impl GuestBuilder {
    pub(crate) fn new(lab: Lab, name: &str) -> GuestBuilder {
        GuestBuilder {
            lab,
            name: name.to_string(),
            memory_mib: 1536,
            smp: 1,
            disks: Vec::new(),
            shared_disk: None,
            hostid: None,
            net: None,
            share: None,
            watchdog: None,
            ipmi: false,
            host_net: false,
            boot_timeout: Duration::from_secs(180),
        }
    }

    /// Guest RAM in MiB (default 1536).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Number of vCPUs (default 1; the host has 2 cores for at most two busy guests).
    pub fn smp(mut self, cpus: u32) -> Self {
        self.smp = cpus;
        self
    }

    /// Adds a sparse raw virtio disk of `size` bytes: `/dev/vda`, `/dev/vdb`, ... in order, also
    /// `/dev/disk/by-id/virtio-<name>-d<N>` (N from 1).
    pub fn disk(mut self, size: u64) -> Self {
        self.disks.push(size);
        self
    }

    /// Adds `count` disks of `size` bytes each (see [`GuestBuilder::disk`]).
    pub fn disks(mut self, count: usize, size: u64) -> Self {
        self.disks.extend(std::iter::repeat_n(size, count));
        self
    }

    /// Attaches a raw image shared with other guests (`/dev/disk/by-id/virtio-shared0`), for
    /// multihost/MMP fencing scenarios. The image is created (sparse, 1 GiB) if missing and is
    /// not deleted with the guest.
    pub fn shared_disk(mut self, image: impl Into<PathBuf>) -> Self {
        self.shared_disk = Some(image.into());
        self
    }

    /// The guest's ZFS hostid (default: derived from the name, so guests differ).
    pub fn hostid(mut self, hostid: u32) -> Self {
        self.hostid = Some(hostid);
        self
    }

    /// Connects `eth0` to one end of a [`Link`] with address `ip` (e.g. `"169.254.77.1/24"`).
    pub fn network(mut self, end: NetEnd, ip: &str) -> Self {
        self.net = Some((end, ip.to_string()));
        self
    }

    /// Shares a host directory read-write at `/mnt/host` (virtio-9p), e.g. `target/debug` so the
    /// guest can run a host-built binary (same bookworm glibc).
    pub fn share(mut self, dir: impl Into<PathBuf>) -> Self {
        self.share = Some(dir.into());
        self
    }

    /// Adds a hardware watchdog device.
    pub fn watchdog(mut self, wd: Watchdog) -> Self {
        self.watchdog = Some(wd);
        self
    }

    /// Puts the guest's power under an `ipmi_sim` BMC reachable with `ipmitool -I lanplus`
    /// (see [`Bmc`]); the BMC starts QEMU.
    pub fn ipmi_bmc(mut self) -> Self {
        self.ipmi = true;
        self
    }

    /// Adds a second NIC on QEMU's user-mode network (slirp), through which the guest reaches the
    /// host's 127.0.0.1 at [`HOST_GATEWAY`] (TCP and UDP), e.g. the `ipmi_sim` BMC of another
    /// guest. [`Guest::wait_ready`] configures it (`10.0.2.15/24`, no default route) after every
    /// boot. `restrict=off`, because slirp's `guestfwd` carries TCP only; nothing listens on the
    /// host for the guest beyond what the test starts.
    pub fn host_network(mut self) -> Self {
        self.host_net = true;
        self
    }

    /// How long [`GuestBuilder::boot`] / [`Guest::wait_ready`] wait (default 180 s).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_name {
            return Err(Error::Config(format!(
                "guest name {:?}: use 1-32 of [a-z0-9-]",
                self.name
            )));
        }
        for p in self.share.iter().chain(self.shared_disk.iter()) {
            if p.to_string_lossy().contains(',') {
                return Err(Error::Config(format!(
                    "{}: QEMU options cannot take paths with commas",
                    p.display()
                )));
            }
        }
        if let Some(s) = &self.share {
            if !s.is_dir() {
                return Err(Error::Config(format!(
                    "share {} is not a directory",
                    s.display()
                )));
            }
        }
        if self.ipmi {
            self.lab.require_ipmi()?;
        }
        Ok(())
    }

    fn qemu_args(&self, dir: &Path, ipmi_vm_port: Option<u16>) -> Vec<String> {
        let d = |f: &str| dir.join(f).display().to_string();
        let lab = &self.lab.inner;
        let hash = name_hash(&self.name);
        let hostid = self.hostid.unwrap_or(0x0a77_0000 | (hash & 0xffff));
        let mut append = format!(
            "console=ttyS0 rdinit=/sbin/init quiet loglevel=3 net.ifnames=0 tandem.name={} tandem.hostid=0x{hostid:08x}",
            self.name
        );
        let mut a: Vec<String> = [
            "-name",
            &self.name,
            "-machine",
            "pc,accel=tcg",
            "-cpu",
            "max",
            "-smp",
            &self.smp.to_string(),
            "-m",
            &self.memory_mib.to_string(),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-kernel",
            &lab.kernel.display().to_string(),
            "-initrd",
            &lab.initrd.display().to_string(),
            "-chardev",
            &format!("file,id=con0,path={},append=on", d("console.log")),
            "-serial",
            "chardev:con0",
            "-qmp",
            &format!("unix:{},server=on,wait=off", d("qmp.sock")),
            "-chardev",
            &format!("socket,id=qga0,path={},server=on,wait=off", d("qga.sock")),
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-device",
            "virtio-rng-pci",
            "-pidfile",
            &d("qemu.pid"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (i, _) in self.disks.iter().enumerate() {
            let n = i + 1;
            a.push("-drive".into());
            a.push(format!(
                "file={},format=raw,if=none,id=d{n},cache=unsafe,aio=threads",
                d(&format!("disk{n}.img"))
            ));
            a.push("-device".into());
            a.push(format!(
                "virtio-blk-pci,drive=d{n},serial={}-d{n}",
                self.name
            ));
        }
        if let Some(img) = &self.shared_disk {
            a.push("-drive".into());
            a.push(format!(
                "file={},format=raw,if=none,id=sd0,cache=unsafe,aio=threads,file.locking=off",
                img.display()
            ));
            a.push("-device".into());
            a.push("virtio-blk-pci,drive=sd0,share-rw=on,serial=shared0".into());
        }
        if let Some((end, ip)) = &self.net {
            let mode = if end.listen { "listen" } else { "connect" };
            a.push("-netdev".into());
            a.push(format!("socket,id=n0,{mode}=127.0.0.1:{}", end.port));
            a.push("-device".into());
            a.push(format!(
                "virtio-net-pci,netdev=n0,mac=52:54:00:{:02x}:{:02x}:{:02x}",
                (hash >> 16) & 0xff,
                (hash >> 8) & 0xff,
                hash & 0xff
            ));
            append.push_str(&format!(" tandem.ip={ip}"));
        }
        if self.host_net {
            a.push("-netdev".into());
            a.push("user,id=h0,restrict=off,net=10.0.2.0/24,host=10.0.2.2".into());
            a.push("-device".into());
            a.push(format!(
                "virtio-net-pci,netdev=h0,mac={}",
                host_net_mac(hash)
            ));
        }
        if let Some(s) = &self.share {
            a.push("-virtfs".into());
            a.push(format!(
                "local,path={},mount_tag=hostshare,security_model=none,id=fs0",
                s.display()
            ));
            append.push_str(" tandem.share=1");
        }
        if let Some(Watchdog::I6300esb) = self.watchdog {
            a.extend(["-device", "i6300esb", "-action", "watchdog=reset"].map(String::from));
        }
        if let Some(port) = ipmi_vm_port {
            let reconnect = if lab.reconnect_ms {
                "reconnect-ms=10000"
            } else {
                "reconnect=10"
            };
            a.push("-chardev".into());
            a.push(format!(
                "socket,id=ipmi0,host=127.0.0.1,port={port},{reconnect}"
            ));
            a.extend(
                [
                    "-device",
                    "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
                    "-device",
                    "isa-ipmi-kcs,bmc=bmc0",
                ]
                .map(String::from),
            );
        }
        a.push("-append".into());
        a.push(append);
        a
    }

    /// Starts QEMU (or the BMC that starts it) without waiting for the guest to be ready; call
    /// [`Guest::wait_ready`]. Use this to boot two guests in parallel (the [`Link::listen`] one
    /// first).
    pub fn start(self) -> Result<Guest> {
        self.validate()?;
        let keep = std::env::var("TANDEM_KEEP_GUESTS").is_ok_and(|v| v == "1");
        let n = GUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "tandem-lab-{}-{n}-{}",
            std::process::id(),
            self.name
        ));
        if dir.to_string_lossy().contains(',') {
            return Err(Error::Config(format!(
                "temp dir {} contains a comma",
                dir.display()
            )));
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let events = Arc::new(EventLog::default());
        let mut guest = Guest {
            lab: self.lab.clone(),
            name: self.name.clone(),
            agent: Agent::new(&self.name, dir.join("qga.sock")),
            dir: dir.clone(),
            child: Mutex::new(None),
            bmc: None,
            events,
            qmp: Mutex::new(None),
            cursor: Mutex::new(0),
            ready_seen: Mutex::new(0),
            host_net_mac: self.host_net.then(|| host_net_mac(name_hash(&self.name))),
            boot_timeout: self.boot_timeout,
            started: Instant::now(),
            keep,
        };
        // from here on, dropping `guest` cleans up
        for (i, size) in self.disks.iter().enumerate() {
            let p = dir.join(format!("disk{}.img", i + 1));
            File::create(&p)
                .and_then(|f| f.set_len(*size))
                .map_err(io_err(format!("creating {}", p.display())))?;
        }
        if let Some(img) = &self.shared_disk {
            if !img.exists() {
                File::create(img)
                    .and_then(|f| f.set_len(GIB))
                    .map_err(io_err(format!("creating {}", img.display())))?;
            }
        }
        let lab = &self.lab.inner;
        let wrap = |program: &Path| -> Vec<String> {
            let mut v = Vec::new();
            if let (false, Some(sp)) = (keep, &lab.setpriv) {
                // the process dies with the thread that started it, even on SIGKILL of the tests
                v.extend([
                    sp.display().to_string(),
                    "--pdeathsig".into(),
                    "KILL".into(),
                    "--".into(),
                ]);
            }
            v.push(program.display().to_string());
            v
        };
        let log_file = |name: &str| -> Result<File> {
            File::options()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .map_err(io_err(format!("creating {name}")))
        };
        if self.ipmi {
            let (Some(ipmi_sim), Some(ipmitool)) = (&lab.ipmi_sim, &lab.ipmitool) else {
                return Err(Error::Unavailable("ipmi_sim/ipmitool not installed".into()));
            };
            let lan_port = free_udp_port()?;
            let vm_port = free_tcp_port()?;
            let mut script =
                String::from("#!/bin/sh\n# started by ipmi_sim on \"chassis power on\"\nexec");
            for w in wrap(&lab.qemu)
                .iter()
                .chain(self.qemu_args(&dir, Some(vm_port)).iter())
            {
                script.push(' ');
                script.push_str(&shell_quote(w));
            }
            script.push_str(&format!(
                " </dev/null >>{q} 2>&1\n",
                q = shell_quote(&dir.join("qemu.log").display().to_string())
            ));
            let start = dir.join("start-qemu.sh");
            std::fs::write(&start, script).map_err(io_err("writing start-qemu.sh"))?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&start, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod start-qemu.sh"))?;
            }
            Bmc::write_config(&dir, lan_port, vm_port, &start)?;
            let argv = wrap(ipmi_sim);
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .arg("-c")
                .arg(dir.join("lan.conf"))
                .arg("-f")
                .arg(dir.join("sim.emu"))
                .arg("-s")
                .arg(dir.join("ipmi-state"))
                .arg("-n")
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log_file("ipmi_sim.log")?)
                .stderr(log_file("ipmi_sim.log")?);
            let child = cmd.spawn().map_err(io_err("starting ipmi_sim"))?;
            guest.bmc = Some(Bmc {
                lan_port,
                ipmitool: ipmitool.clone(),
                child: Mutex::new(Some(child)),
            });
        } else {
            let argv = wrap(&lab.qemu);
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .args(self.qemu_args(&dir, None))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log_file("qemu.log")?)
                .stderr(log_file("qemu.log")?);
            let child = cmd.spawn().map_err(io_err("starting qemu-system-x86_64"))?;
            *lock(&guest.child) = Some(child);
        }
        if let Some((end, _)) = &self.net {
            if end.listen {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !tcp_listening(end.port) {
                    guest.check_alive()?;
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout {
                            what: format!("{} to listen on 127.0.0.1:{}", self.name, end.port),
                            after: Duration::from_secs(30),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        guest.ensure_qmp(Duration::from_secs(30))?;
        Ok(guest)
    }

    /// [`GuestBuilder::start`] + [`Guest::wait_ready`].
    pub fn boot(self) -> Result<Guest> {
        let g = self.start()?;
        g.wait_ready()?;
        Ok(g)
    }
}

/// A running lab guest: QEMU under TCG booted from the lab kernel + initramfs (root on tmpfs, so
/// nothing but the disks survives a reboot; pools are not auto-imported).
///
/// Commands run through the QEMU guest agent ([`Guest::exec`], [`Guest::run`]); QMP events are
/// collected from the start ([`Guest::wait_event`]). Dropping the guest kills QEMU (and its BMC)
/// and deletes its directory (disks, sockets, console log) — unless `TANDEM_KEEP_GUESTS=1`, in
/// which case everything is left running and the paths are printed.
#[derive(Debug)]
pub struct Guest {
    lab: Lab,
    name: String,
    dir: PathBuf,
    agent: Agent,
    child: Mutex<Option<Child>>,
    bmc: Option<Bmc>,
    events: Arc<EventLog>,
    qmp: Mutex<Option<Qmp>>,
    cursor: Mutex<usize>,
    ready_seen: Mutex<usize>,
    /// MAC of the user-mode NIC ([`GuestBuilder::host_network`]), configured by `wait_ready`.
    host_net_mac: Option<String>,
    boot_timeout: Duration,
    started: Instant,
    keep: bool,
}

impl Guest {
    /// The guest's name (also its hostname).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab this guest runs in.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The guest's host directory: `console.log`, `qemu.log`, `qmp.sock`, `qga.sock`, disks.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the serial console log (kept across reboots and power cycles).
    pub fn console_path(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The serial console log so far.
    pub fn console(&self) -> String {
        std::fs::read(self.console_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn console_tail(&self) -> String {
        let c = self.console();
        let lines: Vec<&str> = c.lines().collect();
        let tail = lines[lines.len().saturating_sub(25)..].join("\n");
        let qemu_log = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
        format!(
            "--- console tail ({})\n{tail}\n--- qemu.log\n{qemu_log}",
            self.console_path().display()
        )
    }

    /// The BMC owning this guest's power, if built with [`GuestBuilder::ipmi_bmc`].
    pub fn bmc(&self) -> Option<&Bmc> {
        self.bmc.as_ref()
    }

    /// PID of the running QEMU process, if any.
    pub fn pid(&self) -> Option<u32> {
        if let Some(c) = lock(&self.child).as_mut() {
            return match c.try_wait() {
                Ok(None) => Some(c.id()),
                _ => None,
            };
        }
        let pid: u32 = std::fs::read_to_string(self.dir.join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // guard against PID reuse: the process must be our QEMU and not a zombie
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().chars().next());
        let ours = String::from_utf8_lossy(&cmdline).contains(&*self.dir.to_string_lossy());
        (ours && state != Some(Some('Z'))).then_some(pid)
    }

    /// Whether the guest's QEMU process is running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    fn check_alive(&self) -> Result<()> {
        if let Some(c) = lock(&self.child).as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(Error::GuestDied {
                    guest: self.name.clone(),
                    reason: format!("QEMU exited with {status}\n{}", self.console_tail()),
                });
            }
        }
        if let Some(b) = &self.bmc {
            if let Some(c) = lock(&b.child).as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(Error::GuestDied {
                        guest: self.name.clone(),
                        reason: format!("ipmi_sim exited with {status}\n{}", self.console_tail()),
                    });
                }
            }
        }
        Ok(())
    }

    /// (Re)connects QMP if needed (e.g. after the BMC powered the guest on again).
    fn ensure_qmp(&self, timeout: Duration) -> Result<()> {
        let mut q = lock(&self.qmp);
        if q.as_ref().is_some_and(|q| !q.is_closed()) {
            return Ok(());
        }
        *q = None;
        let path = self.dir.join("qmp.sock");
        let deadline = Instant::now() + timeout;
        // wait for the socket file so that a crashing QEMU is reported as such
        while !path.exists() {
            self.check_alive()?;
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("QMP socket of {}\n{}", self.name, self.console_tail()),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        *q = Some(Qmp::connect(
            &self.name,
            &path,
            Arc::clone(&self.events),
            left.max(Duration::from_secs(1)),
        )?);
        Ok(())
    }

    /// How many times the guest has printed its ready marker (boots, resets, power cycles).
    pub fn boots(&self) -> usize {
        self.console()
            .lines()
            .filter(|l| l.starts_with(READY_MARKER))
            .count()
    }

    /// Waits (up to the builder's boot timeout) for the guest's next boot to be ready: its console
    /// shows one more ready marker than seen before, and the guest agent answers. Returns the wait.
    pub fn wait_ready(&self) -> Result<Duration> {
        self.wait_ready_within(self.boot_timeout)
    }

    /// [`Guest::wait_ready`] with an explicit timeout.
    pub fn wait_ready_within(&self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let mut seen = lock(&self.ready_seen);
        loop {
            let console = self.console();
            let n = console
                .lines()
                .filter(|l| l.starts_with(READY_MARKER))
                .count();
            if n > *seen {
                *seen = n;
                break;
            }
            self.check_alive()?;
            if console.contains("Kernel panic") {
                return Err(Error::GuestDied {
                    guest: self.name.clone(),
                    reason: format!("kernel panic\n{}", self.console_tail()),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{} to boot\n{}", self.name, self.console_tail()),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(seen);
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(30));
        self.agent.reset();
        self.agent.ping(left)?;
        self.ensure_qmp(Duration::from_secs(30))?;
        if let Some(mac) = &self.host_net_mac {
            // the rc configures eth0 only; find the user-mode NIC by its MAC
            self.run(&format!(
                "dev=; for d in /sys/class/net/*; do \
                 [ \"$(cat $d/address)\" = {mac} ] && dev=${{d##*/}}; done; \
                 test -n \"$dev\" && ip addr replace {HOST_NET_IP} dev \"$dev\" && ip link set \"$dev\" up"
            ))?;
        }
        Ok(t0.elapsed())
    }

    /// Time since [`GuestBuilder::start`].
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Runs `sh -c command` in the guest (guest agent), 600 s timeout; any exit code is returned.
    pub fn exec(&self, command: &str) -> Result<ExecOutput> {
        self.exec_with(command, &ExecOptions::default())
    }

    /// Runs `sh -c command` in the guest with options (timeout, stdin).
    pub fn exec_with(&self, command: &str, opts: &ExecOptions) -> Result<ExecOutput> {
        self.agent.exec(command, opts)
    }

    /// Runs `sh -c command`; fails with [`Error::CommandFailed`] unless it exits 0. Returns stdout.
    pub fn run(&self, command: &str) -> Result<String> {
        self.run_with(command, &ExecOptions::default())
    }

    /// [`Guest::run`] with options.
    pub fn run_with(&self, command: &str, opts: &ExecOptions) -> Result<String> {
        let out = self.exec_with(command, opts)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(Error::CommandFailed {
                guest: self.name.clone(),
                command: command.to_string(),
                code: out.code,
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
    }

    /// Starts `command` in the background in the guest (its own session, all file descriptors
    /// redirected, so the agent does not wait for it). Redirect its output to a file yourself.
    pub fn spawn(&self, command: &str) -> Result<()> {
        self.run(&format!(
            "setsid sh -c {} </dev/null >/dev/null 2>&1 &",
            shell_quote(command)
        ))
        .map(|_| ())
    }

    /// Runs `command` every half second until it exits 0 (or `timeout` passes).
    pub fn wait_for(&self, command: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec_with(command, &ExecOptions::timeout(timeout))?;
            if out.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "`{command}` to succeed in {} (last: {} {})",
                        self.name, out.stdout, out.stderr
                    ),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs a QMP command and returns its `return` value.
    pub fn qmp(&self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.ensure_qmp(Duration::from_secs(10))?;
        let q = lock(&self.qmp);
        match q.as_ref() {
            Some(q) => q.execute(command, arguments, Duration::from_secs(30)),
            None => Err(Error::Qmp {
                guest: self.name.clone(),
                message: "not connected".into(),
            }),
        }
    }

    /// Waits for the next QMP event named `name` (`"RESET"`, `"WATCHDOG"`, `"SHUTDOWN"`, ...) that
    /// no earlier call returned. Events are recorded from QEMU's start, so none is missed.
    pub fn wait_event(&self, name: &str, timeout: Duration) -> Result<QmpEvent> {
        let mut cursor = lock(&self.cursor);
        self.events
            .wait(&mut cursor, name, Instant::now() + timeout)
            .ok_or_else(|| Error::Timeout {
                what: format!(
                    "QMP event {name} from {} (seen: {:?})",
                    self.name,
                    self.events
                        .snapshot()
                        .iter()
                        .map(|e| e.name.clone())
                        .collect::<Vec<_>>()
                ),
                after: timeout,
            })
    }

    /// All QMP events received so far.
    pub fn events(&self) -> Vec<QmpEvent> {
        self.events.snapshot()
    }

    /// Hard reset (QMP `system_reset`); follow with [`Guest::wait_ready`].
    pub fn reset(&self) -> Result<()> {
        self.qmp("system_reset", None).map(|_| ())
    }

    /// Waits until the QEMU process has ended.
    pub fn wait_stopped(&self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        while self.is_running() {
            if t0.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("QEMU of {} to end", self.name),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(t0.elapsed())
    }

    fn kill_all(&self) {
        let qemu_pid = self.pid();
        if let Some(b) = &self.bmc {
            b.kill();
        }
        if let Some(mut c) = lock(&self.child).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = qemu_pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let t0 = Instant::now();
            while self.is_running() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.keep {
            let pids: Vec<String> = self
                .pid()
                .into_iter()
                .map(|p| p.to_string())
                .chain(self.bmc.as_ref().and_then(|b| {
                    lock(&b.child)
                        .as_ref()
                        .map(|c| format!("{} (ipmi_sim)", c.id()))
                }))
                .collect();
            eprintln!(
                "[tandem-lab] TANDEM_KEEP_GUESTS=1: kept guest {} running\n  dir:     {}\n  console: {}\n  qmp:     {}\n  agent:   {}\n  pids:    {}\n  stop it: kill {}; rm -r {}",
                self.name,
                self.dir.display(),
                self.console_path().display(),
                self.dir.join("qmp.sock").display(),
                self.dir.join("qga.sock").display(),
                pids.join(", "),
                pids.iter()
                    .map(|p| p.split(' ').next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(" "),
                self.dir.display()
            );
            return;
        }
        self.kill_all();
        *lock(&self.qmp) = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
