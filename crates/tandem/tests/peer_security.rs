//! `tandem serve` against real ZFS through a real sshd: authorization, and
//! corrupted or truncated streams on the wire.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;

struct Setup {
    _a: Pool,
    b: Pool,
    src: String,
    dst: String,
    env: Env,
}

fn setup() -> Option<Setup> {
    if !zfs_available() {
        return None;
    }
    let (a, b) = (Pool::new("a"), Pool::new("b"));
    let (src, dst) = (a.ds("vm"), b.ds("vm"));
    zfs(&["create", &src]);
    let env = Env::new(Via::Serve, &job("j", &src, &dst, "compress = \"none\""))?;
    Some(Setup {
        _a: a,
        b,
        src,
        dst,
        env,
    })
}

/// A `tandem_path` wrapper that runs `FILTER | tandem serve ...`: the
/// filter sits on the wire from the client to the server.
fn wrapper(env: &Env, name: &str, filter: &str) -> String {
    let path = env.dir.path().join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n{filter} | {} \"$@\"\n",
            env!("CARGO_BIN_EXE_tandem")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn writing_outside_the_peers_prefixes_is_refused_before_any_zfs_call() {
    let Some(s) = setup() else { return };
    write_random(&mnt(&s.src).join("f"), 1 << 20, 1);
    // The peer may write only below another dataset of the target pool.
    s.env.rewrite(
        &format!("write = [\"{}\"]", s.b.name),
        &format!("write = [\"{}/elsewhere\"]", s.b.name),
    );
    let before = pool_state(&s.b);
    let src_before = snaps(&s.src);
    let text = s.env.run_fails("j");
    assert!(
        text.contains("refused by tandem serve")
            && text.contains("outside the datasets peer src may"),
        "{text}"
    );
    assert_eq!(pool_state(&s.b), before, "target pool unchanged");
    assert_eq!(
        snaps(&s.src),
        src_before,
        "no snapshot taken on the source either"
    );
    // A peer identity with no [[serve.peers]] entry gets nothing at all.
    s.env
        .rewrite("\"--peer\", \"src\"", "\"--peer\", \"mallory\"");
    let text = s.env.run_fails("j");
    assert!(text.contains("node dst"), "{text}");
    assert_eq!(pool_state(&s.b), before);
}

#[test]
fn a_flipped_byte_on_the_wire_is_caught_and_the_next_cycle_succeeds() {
    let Some(s) = setup() else { return };
    write_random(&mnt(&s.src).join("f"), 1 << 20, 2);
    s.env.run_ok("j");
    assert_replica(&s.src, &s.dst);
    write_random(&mnt(&s.src).join("g"), 3 << 20, 3);
    let before = snaps(&s.dst);
    // Flip one bit of byte 1,000,000 of the client-to-server byte stream:
    // inside the framed zfs stream (control messages are a few hundred bytes).
    let perl = r#"perl -e 'binmode STDIN; binmode STDOUT; my $n = shift; my $pos = 0; while (my $r = sysread(STDIN, my $buf, 65536)) { if ($pos <= $n && $n < $pos + $r) { substr($buf, $n - $pos, 1) ^= chr(0x40) } syswrite(STDOUT, $buf); $pos += $r }' 1000000"#;
    let flip = wrapper(&s.env, "flip.sh", perl);
    let real = env!("CARGO_BIN_EXE_tandem");
    s.env.rewrite(
        &format!("tandem_path = \"{real}\""),
        &format!("tandem_path = \"{flip}\""),
    );
    let text = s.env.run_fails("j");
    assert!(
        text.contains("corrupt frame") && text.contains("byte"),
        "{text}"
    );
    assert_eq!(
        snaps(&s.dst),
        before,
        "nothing of the corrupt stream was kept"
    );
    s.env.rewrite(
        &format!("tandem_path = \"{flip}\""),
        &format!("tandem_path = \"{real}\""),
    );
    let out = s.env.run_ok("j");
    assert!(out.contains("incremental"), "{out}");
    assert_replica(&s.src, &s.dst);
}

#[test]
fn a_truncated_stream_is_caught_and_the_next_cycle_succeeds() {
    let Some(s) = setup() else { return };
    write_random(&mnt(&s.src).join("f"), 1 << 20, 4);
    s.env.run_ok("j");
    write_random(&mnt(&s.src).join("g"), 3 << 20, 5);
    let before = snaps(&s.dst);
    // The connection dies after 1,500,000 bytes (perl, not head: head's
    // buffered output would hold back the small control messages).
    let perl = r#"perl -e 'binmode STDIN; binmode STDOUT; my $left = shift; while ($left > 0 and my $r = sysread(STDIN, my $buf, $left < 65536 ? $left : 65536)) { syswrite(STDOUT, $buf); $left -= $r }' 1500000"#;
    let cut = wrapper(&s.env, "cut.sh", perl);
    let real = env!("CARGO_BIN_EXE_tandem");
    s.env.rewrite(
        &format!("tandem_path = \"{real}\""),
        &format!("tandem_path = \"{cut}\""),
    );
    let text = s.env.run_fails("j");
    assert!(
        text.contains("truncated") || text.contains("closed"),
        "{text}"
    );
    assert_eq!(snaps(&s.dst), before);
    s.env.rewrite(
        &format!("tandem_path = \"{cut}\""),
        &format!("tandem_path = \"{real}\""),
    );
    s.env.run_ok("j");
    assert_replica(&s.src, &s.dst);
}

fn tls_setup() -> Option<(Pool, Pool, String, String, Env)> {
    if !zfs_available() {
        return None;
    }
    let (a, b) = (Pool::new("a"), Pool::new("b"));
    let (src, dst) = (a.ds("vm"), b.ds("vm"));
    zfs(&["create", &src]);
    write_random(&mnt(&src).join("f"), 1 << 20, 6);
    let env = Env::new(Via::Tls, &job("j", &src, &dst, ""))?;
    Some((a, b, src, dst, env))
}

#[test]
fn tls_clients_without_a_valid_certificate_are_refused_before_any_zfs_call() {
    let Some((a, b, src, dst, env)) = tls_setup() else {
        return;
    };
    env.run_ok("j");
    assert_replica(&src, &dst);
    let (sa, sb) = (pool_state(&a), pool_state(&b));
    let tls = env.dir.path().join("tls");
    // A certificate from another CA: the handshake fails.
    let rogue = env.dir.path().join("rogue");
    make_certs(&rogue, &["src"]);
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        cfg.replace(
            &format!("{}/src.", tls.display()),
            &format!("{}/src.", rogue.display()),
        ),
    )
    .unwrap();
    write_random(&mnt(&src).join("g"), 1 << 20, 7);
    let text = env.run_fails("j");
    assert!(
        text.contains("TLS handshake failed") || text.contains("the peer refused the connection"),
        "{text}"
    );
    // A certificate from the right CA whose name is no configured peer.
    cmd(
        env!("CARGO_BIN_EXE_tandem"),
        &["cert", "node", "mallory", "--dir", tls.to_str().unwrap()],
    );
    std::fs::write(
        &env.config,
        cfg.replace(
            &format!("{}/src.", tls.display()),
            &format!("{}/mallory.", tls.display()),
        ),
    )
    .unwrap();
    let text = env.run_fails("j");
    assert!(text.contains("the peer refused the connection"), "{text}");
    let log =
        std::fs::read_to_string(env.server.as_ref().unwrap().0.with_extension("log")).unwrap();
    assert!(log.contains("refused: TLS handshake failed"), "{log}");
    assert!(
        log.contains("refused: the client certificate names no [[serve.peers]] entry"),
        "{log}"
    );
    assert_eq!(pool_state(&b), sb, "target pool unchanged");
    // (the source may carry the snapshots of the refused cycles; its data is untouched)
    let _ = sa;
    // The right certificate works again.
    std::fs::write(&env.config, cfg).unwrap();
    env.run_ok("j");
    assert_replica(&src, &dst);
}

/// A connector that runs `tandem serve --stdio` here, as node `dst`,
/// for peer `src` (what sshd's forced command would run).
struct LocalServe {
    config: std::path::PathBuf,
    children: std::sync::Mutex<Vec<tokio::process::Child>>,
}

impl tandem_peer::client::Connector for LocalServe {
    fn connect(
        &self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<tandem_peer::client::Connection, tandem_zfs::ZfsError>,
                > + Send
                + '_,
        >,
    > {
        Box::pin(async move {
            let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
                .arg("--config")
                .arg(&self.config)
                .args(["serve", "--stdio", "--peer", "src"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let (r, w) = (c.stdout.take().unwrap(), c.stdin.take().unwrap());
            self.children.lock().unwrap().push(c);
            Ok(tandem_peer::client::Connection::new(r, w))
        })
    }
    fn describe(&self) -> String {
        "tandem serve --stdio (local)".into()
    }
}

/// The generation guard of `tandem serve`: a peer that acts for an older
/// generation than a dataset's mark (a stale primary come back) cannot
/// write into it, and no peer changes the data of the serving node's own
/// primary; a peer acting for a newer generation (reverse) can.
#[tokio::test]
async fn serve_refuses_writes_from_a_stale_generation_and_into_its_own_primary() {
    use tandem_zfs::{Generation, RecvSpec, SnapshotName, Zfs};
    if !zfs_available() {
        return;
    }
    let b = Pool::new("b");
    let vm = b.ds("vm");
    zfs(&["create", &vm]);
    zfs(&["snapshot", &format!("{vm}@tandem_j_20260101T000000Z")]);
    zfs(&["snapshot", &format!("{vm}@tandem_j_20260101T000100Z")]);
    // vm is dst's primary at generation 2.
    zfs(&["set", "tandem:generation=j 2 dst", &vm]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dst.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}/state\"\nlocal_node = \"dst\"\n[nodes.dst]\naddress = \"local\"\n\
             [[serve.peers]]\nname = \"src\"\nwrite = [\"{}\"]\n",
            dir.path().display(),
            b.name
        ),
    )
    .unwrap();
    let peer = tandem_peer::client::PeerZfs::new(
        "dst",
        "src",
        std::sync::Arc::new(LocalServe {
            config,
            children: Default::default(),
        }),
    );
    let ds = tandem_zfs::DatasetName::parse(&vm).unwrap();
    let g = |s: &str| Generation::parse(s).unwrap();
    let before = pool_state(&b);

    let stale = g("j 1 src");
    let e = peer
        .set_property(&ds, "readonly", "on", Some(&stale))
        .await
        .expect_err("stale");
    assert!(
        e.to_string().contains("a stale primary") && e.to_string().contains("generation 2"),
        "{e}"
    );
    let spec = RecvSpec {
        target: Some(ds.clone()),
        claim: Some(stale.clone()),
        ..RecvSpec::default()
    };
    let e = peer.receive(&spec).await.expect_err("stale receive");
    assert!(e.to_string().contains("a stale primary"), "{e}");
    let e = peer
        .set_property(&ds, "readonly", "on", None)
        .await
        .expect_err("no claim");
    assert!(e.to_string().contains("no generation"), "{e}");
    let current = g("j 2 dst");
    let e = peer
        .rollback(
            &SnapshotName::parse(&format!("{vm}@tandem_j_20260101T000100Z")).unwrap(),
            Some(&current),
        )
        .await
        .expect_err("own primary");
    assert!(e.to_string().contains("this node's (dst) primary"), "{e}");
    assert_eq!(
        pool_state(&b),
        before,
        "nothing changed on the serving node"
    );

    // Housekeeping of the current primary's own snapshots (a pull) is fine,
    // and so is a write for a newer generation (reverse after a failover).
    peer.destroy_snapshot(
        &SnapshotName::parse(&format!("{vm}@tandem_j_20260101T000000Z")).unwrap(),
        Some(&current),
    )
    .await
    .unwrap();
    peer.set_property(&ds, "readonly", "on", Some(&g("j 3 src")))
        .await
        .unwrap();
    // (zfs-fuse reports `readonly` as a temporary "off"; a write tells.)
    assert!(
        std::fs::write(mnt(&vm).join("probe"), b"x").is_err(),
        "the dataset is read-only now"
    );
}
