//! # tandem
//!
//! The `tandem` command: replication cycles (`run`), the scheduler
//! (`daemon`), `status`, `plan`, fencing, `failover`, `reverse`, `quorum`, and a
//! self-contained `demo`. The engine lives in the library crates
//! (`tandem-zfs`, `tandem-repl`, `tandem-fence`, `tandem-ha`); this crate
//! turns the config file into backends and jobs, and results into text,
//! JSON and exit codes.

#![forbid(unsafe_code)]

mod cmd;
mod ha;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ZFS replication and fencing for small HA clusters.
#[derive(Parser, Debug)]
#[command(name = "tandem", version, about, long_about = None)]
struct Cli {
    /// Config file [default: $TANDEM_CONFIG, else /etc/tandem/tandem.toml]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More log output (-v info, -vv debug: every zfs call with its duration)
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one replication cycle now; exit 0 only if every job succeeded
    Run {
        /// Jobs to run [default: every enabled job]
        jobs: Vec<String>,
        /// Refuse at once if a job is running elsewhere, instead of waiting
        #[arg(long)]
        no_wait: bool,
        /// Print results as JSON
        #[arg(long)]
        json: bool,
    },
    /// Run the scheduler: every job whose source is this node, every interval
    Daemon,
    /// Per job: source, target, last success, lag, state, error
    Status {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Dry run: what the next cycle would send, and how much
    Plan {
        /// Jobs to plan [default: every enabled job]
        jobs: Vec<String>,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// The peer agent other nodes talk to: over ssh (`--stdio`) or mutual TLS (`--listen`)
    #[command(group(clap::ArgGroup::new("how").required(true).args(["stdio", "listen"])))]
    Serve {
        /// Speak the protocol on stdin/stdout (an ssh forced command)
        #[arg(long)]
        stdio: bool,
        /// Accept mutual-TLS connections on ADDR (e.g. 0.0.0.0:7456), with [tls] and [[serve.peers]]
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// With --stdio: the connecting peer's identity [default: $TANDEM_PEER]
        #[arg(long)]
        peer: Option<String>,
    },
    /// Write man pages (tandem.1 and one per subcommand) into DIR
    #[command(hide = true)]
    Manpages {
        /// Where to write [default: target/man]
        #[arg(long, default_value = "target/man")]
        dir: PathBuf,
    },
    /// On a survivor: fence NODE, then promote the local replicas of its jobs
    /// (exit 0 promoted, 1 a job failed, 3 refused: NODE not confirmed off, or this
    /// node has no quorum). With --test JOB, on the job's follower: a failover
    /// drill against clones that fences nothing and changes no replica
    Failover {
        /// The node that died
        #[arg(required_unless_present_any = ["test", "cleanup"], conflicts_with_all = ["test", "cleanup"])]
        node: Option<String>,
        /// Test a failover of JOB without one: clone the newest replicated snapshot
        /// here, run the job's on_test hook against the clone, report the
        /// data-loss window, destroy the clone (exit 0 only if the hook, if any,
        /// succeeded and the clone is gone)
        #[arg(long, value_name = "JOB", conflicts_with = "confirmed_off")]
        test: Option<String>,
        /// Remove what interrupted --test runs left here: of JOB (or of the --test
        /// JOB), or of every job with a dataset on this node
        #[arg(long, value_name = "JOB", num_args = 0..=1, default_missing_value = "", conflicts_with = "confirmed_off")]
        cleanup: Option<String>,
        /// Do not fence: the operator has checked by hand that NODE is powered off
        /// (the quorum check still applies)
        #[arg(long)]
        confirmed_off: bool,
        /// Promote only: do not run the jobs' on_promote hooks (which start the
        /// workload; run by default, at most once per promotion)
        #[arg(long, conflicts_with_all = ["test", "cleanup"])]
        no_start: bool,
        /// Do not ask before --confirmed-off (required when not on a terminal)
        #[arg(long)]
        yes: bool,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Make a job's old primary follow the new one, keeping its divergent writes restorable
    Reverse {
        /// The job
        job: String,
        /// Planned switchover: quiesce the primary, sync, and swap roles
        #[arg(long)]
        switchover: bool,
        /// Do not ask (required when not on a terminal)
        #[arg(long)]
        yes: bool,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// This node's automatic failover: pause it for maintenance, resume it, see it
    Ha {
        #[command(subcommand)]
        what: HaCmd,
    },
    /// Fence a node through its [[nodes.NODE.fence]] levels, or test them
    Fence {
        #[command(subcommand)]
        what: FenceCmd,
    },
    /// This node's quorum and membership, as the daemon and failover see them
    /// (exit 0 quorate or no cluster, 1 not quorate, 3 no answer: fail closed)
    Quorum {
        /// Print as JSON (with --watch: one object per line)
        #[arg(long)]
        json: bool,
        /// Print one line per change until SIGINT
        #[arg(long)]
        watch: bool,
    },
    /// Print a tandem config made from another tool's setup; changes nothing
    Import {
        #[command(subcommand)]
        what: ImportCmd,
    },
    /// Make the cluster CA and node certificates for the TLS transport
    Cert {
        #[command(subcommand)]
        what: CertCmd,
    },
    /// Demonstrate on two throw-away file-backed pools (needs a running ZFS)
    Demo {
        /// Replication cycles to run
        #[arg(long, default_value_t = 4)]
        cycles: u32,
        /// Keep the demo pools and files afterwards
        #[arg(long)]
        keep: bool,
        /// Directory for the pool files [default: a new temporary directory]
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A BMC that fences the demo's primary node (HOST:PORT, IPMI v2.0;
        /// scripts/demo.sh starts a simulated one); without it, failover
        /// takes the operator's word (--confirmed-off)
        #[arg(long, value_name = "HOST:PORT")]
        bmc: Option<String>,
        /// The BMC user
        #[arg(long, default_value = "admin")]
        bmc_user: String,
        /// File holding the BMC password (mode 0600)
        #[arg(long)]
        bmc_password_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ImportCmd {
    /// Proxmox VE storage replication (replication.cfg, storage.cfg, the guest
    /// configs): one job per guest with all its ZFS disks, printed as TOML
    Pvesr {
        /// Where PVE's cluster filesystem is (or a copy of it)
        #[arg(long, default_value = tandem_config::pve::DEFAULT_ROOT)]
        root: PathBuf,
        /// Print the mapping as JSON instead of a config
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum HaCmd {
    /// Stop all automatic failover on this node until `resume` (the daemon reads it at once)
    Pause {
        /// Why (shown by `ha status`)
        #[arg(long)]
        reason: Option<String>,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Resume automatic failover; every delay counts from now
    Resume {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Each job's HA state as the running daemon sees it (watching, primary lost
    /// since, fencing, promoted, hook failed, paused, not quorate)
    Status {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum FenceCmd {
    /// Report the node's power state (exit 0 on, 2 off, 1 error or unknown)
    Status {
        /// The node
        node: String,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Power the node on and wait until a device confirms it
    On {
        /// The node
        node: String,
        /// Do not ask (required when not on a terminal)
        #[arg(long)]
        yes: bool,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Fence: power the node off through its levels until one confirms it is off
    Off {
        /// The node
        node: String,
        /// Do not ask (required when not on a terminal)
        #[arg(long)]
        yes: bool,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Power off, confirm off, power on, confirm on (never a power cycle command)
    Reboot {
        /// The node
        node: String,
        /// Do not ask (required when not on a terminal)
        #[arg(long)]
        yes: bool,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Commissioning check of every level: reach, authenticate, privilege, power state
    Test {
        /// The node
        node: String,
        /// Also run the real drill: off, verify, on, verify
        #[arg(long)]
        power_cycle: bool,
        /// Do not ask before --power-cycle (required when not on a terminal)
        #[arg(long)]
        yes: bool,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CertCmd {
    /// Create a CA (ca.crt, ca.key) in DIR
    Ca {
        /// Where to write [default: /etc/tandem/tls]
        #[arg(long, default_value = "/etc/tandem/tls")]
        dir: PathBuf,
    },
    /// Create NAME.crt and NAME.key in DIR, signed by DIR/ca.crt (NAME = the node name)
    Node {
        /// The node name (as in [nodes.NAME] and [[serve.peers]] name)
        name: String,
        /// Where the CA is and the files go [default: /etc/tandem/tls]
        #[arg(long, default_value = "/etc/tandem/tls")]
        dir: PathBuf,
    },
}

/// Renders `tandem.1` and `tandem-SUBCOMMAND.1` from the CLI definition,
/// so the man pages never drift from `--help`.
fn manpages(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    let mut pages = vec![("tandem".to_owned(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push((
            format!("tandem-{}", sub.get_name()),
            sub.clone().name(format!("tandem-{}", sub.get_name())),
        ));
    }
    for (name, c) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .render(&mut out)
            .with_context(|| format!("rendering {name}.1"))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        crate::outln!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(verbose: u8, daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.verbose,
        matches!(cli.command, Command::Daemon | Command::Serve { .. }),
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandem: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let path = tandem_config::Config::path_from(cli.config.as_deref());
    let result = rt.block_on(async {
        match cli.command {
            Command::Run {
                jobs,
                no_wait,
                json,
            } => cmd::run::run(&path, &jobs, no_wait, json).await,
            Command::Daemon => cmd::daemon::daemon(&path).await,
            Command::Status { json } => cmd::status::status(&path, json).await,
            Command::Plan { jobs, json } => cmd::run::plan(&path, &jobs, json).await,
            Command::Demo {
                cycles,
                keep,
                dir,
                bmc,
                bmc_user,
                bmc_password_file,
            } => {
                let bmc = bmc.map(|addr| cmd::demo::DemoBmc {
                    addr,
                    user: bmc_user,
                    password_file: bmc_password_file,
                });
                cmd::demo::demo(cycles, keep, dir, bmc).await
            }
            Command::Manpages { dir } => manpages(&dir),
            Command::Serve {
                stdio: _,
                listen: Some(addr),
                ..
            } => cmd::serve::serve_listen(&path, &addr).await,
            Command::Serve {
                stdio: _,
                listen: None,
                peer,
            } => cmd::serve::serve_stdio(&path, peer).await,
            Command::Failover {
                cleanup: Some(job),
                test,
                json,
                ..
            } => {
                let job = Some(job).filter(|j| !j.is_empty()).or(test);
                cmd::failover::cleanup(&path, job.as_deref(), json).await
            }
            Command::Failover {
                test: Some(job),
                json,
                ..
            } => cmd::failover::test(&path, &job, json).await,
            Command::Failover {
                node,
                confirmed_off,
                no_start,
                yes,
                json,
                ..
            } => {
                let node = node.unwrap_or_default();
                cmd::failover::failover(&path, &node, confirmed_off, no_start, yes, json).await
            }
            Command::Reverse {
                job,
                switchover,
                yes,
                json,
            } => cmd::reverse::reverse(&path, &job, switchover, yes, json).await,
            Command::Ha { what } => match what {
                HaCmd::Pause { reason, json } => cmd::ha::pause(&path, reason, json),
                HaCmd::Resume { json } => cmd::ha::resume(&path, json),
                HaCmd::Status { json } => cmd::ha::status(&path, json),
            },
            Command::Fence { what } => {
                use cmd::fence::{fence, Action};
                match what {
                    FenceCmd::Status { node, json } => {
                        fence(&path, Action::Status, &node, false, json).await
                    }
                    FenceCmd::On { node, yes, json } => {
                        fence(&path, Action::On, &node, yes, json).await
                    }
                    FenceCmd::Off { node, yes, json } => {
                        fence(&path, Action::Off, &node, yes, json).await
                    }
                    FenceCmd::Reboot { node, yes, json } => {
                        fence(&path, Action::Reboot, &node, yes, json).await
                    }
                    FenceCmd::Test {
                        node,
                        power_cycle,
                        yes,
                        json,
                    } => fence(&path, Action::Test { power_cycle }, &node, yes, json).await,
                }
            }
            Command::Quorum { json, watch } => cmd::quorum::quorum(&path, json, watch).await,
            Command::Import {
                what: ImportCmd::Pvesr { root, json },
            } => cmd::import::pvesr(&root, json),
            Command::Cert {
                what: CertCmd::Ca { dir },
            } => cmd::cert::ca(&dir),
            Command::Cert {
                what: CertCmd::Node { name, dir },
            } => cmd::cert::node(&name, &dir),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tandem: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
