//! The serving side: one connection, requests answered in order.

use std::sync::Arc;

use tandem_stream::{Counters, EncodeOptions, Mode, StreamError};
use tandem_zfs::{Changed, DatasetName, Generation, HoldTag, WireCompress, Zfs, ZfsError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::auth::Policy;
use crate::guard::{self, Write};
use crate::proto::{read_msg, write_msg, ProtoError, Request, Response, WireError, VERSION};

/// Maps the wire compression setting to the encoder's mode.
pub fn mode(w: WireCompress) -> Mode {
    match w {
        WireCompress::None => Mode::None,
        WireCompress::Zstd(l) => Mode::Zstd(l),
        WireCompress::Auto(l) => Mode::Auto(l),
    }
}

fn changed(r: Result<Changed, ZfsError>) -> Response {
    match r {
        Ok(c) => Response::Changed {
            changed: c == Changed::Done,
        },
        Err(e) => Response::Error(WireError::zfs(&e)),
    }
}

fn changed_many(r: Vec<Result<Changed, ZfsError>>) -> Response {
    Response::ChangedMany {
        results: r
            .into_iter()
            .map(|r| {
                r.map(|c| c == Changed::Done)
                    .map_err(|e| WireError::zfs(&e))
            })
            .collect(),
    }
}

fn unit(r: Result<(), ZfsError>) -> Response {
    match r {
        Ok(()) => Response::Ok,
        Err(e) => Response::Error(WireError::zfs(&e)),
    }
}

fn tag(t: &str) -> Result<HoldTag, ZfsError> {
    HoldTag::parse(t).map_err(ZfsError::from)
}

/// The datasets a write request changes, its claim, and what it does to
/// them (see [`guard`]); `None` for requests that write nothing.
fn writes(req: &Request) -> Option<(Vec<&DatasetName>, Option<&Generation>, Write)> {
    Some(match req {
        Request::DestroySnapshot { name, claim, .. } => {
            (vec![name.dataset()], claim.as_ref(), Write::Housekeeping)
        }
        Request::Rollback { snapshot, claim } => {
            (vec![snapshot.dataset()], claim.as_ref(), Write::Data)
        }
        Request::SetProperty { dataset, claim, .. }
        | Request::ReceiveAbort { dataset, claim }
        | Request::Promote { dataset, claim } => (vec![dataset], claim.as_ref(), Write::Data),
        Request::Receive { spec } => (
            spec.target.iter().collect(),
            spec.claim.as_ref(),
            Write::Data,
        ),
        Request::Rename { from, to, claim } => (vec![from, to], claim.as_ref(), Write::Data),
        Request::Clone { to, claim, .. } => (vec![to], claim.as_ref(), Write::Data),
        _ => return None,
    })
}

/// Checks a write request against the marks of the datasets it changes.
async fn check_generation<Z: Zfs>(zfs: &Z, req: &Request, node: &str) -> Result<(), String> {
    let Some((datasets, claim, write)) = writes(req) else {
        return Ok(());
    };
    let listing = zfs
        .list(&datasets.iter().map(|d| (*d).clone()).collect::<Vec<_>>())
        .await
        .map_err(|e| format!("cannot read the generation marks: {e}"))?;
    for d in datasets {
        let Some(ds) = listing.get(d) else {
            continue;
        };
        // The mark of the job the claim is for; any other mark refuses.
        let mark = match claim {
            Some(c) => ds.generation_of(&c.job).or(ds.generation.as_ref()),
            None => ds.generation.as_ref(),
        };
        guard::check(d, mark, claim, node, write)?;
    }
    Ok(())
}

/// Serves one connection until the client closes it. Every request is
/// authorized by `policy` before `zfs` is touched; refusals are logged.
pub async fn serve<R, W, Z>(
    mut r: R,
    mut w: W,
    zfs: &Z,
    policy: &Policy,
    node: &str,
) -> Result<(), ProtoError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    Z: Zfs,
{
    let peer = policy.peer.as_str();
    let mut greeted = false;
    loop {
        let Some(req) = read_msg::<_, Request>(&mut r).await? else {
            tracing::debug!(%peer, "peer closed the connection");
            return Ok(());
        };
        if !greeted && !matches!(req, Request::Hello { .. }) {
            let e = WireError {
                kind: "Protocol".into(),
                cmd: req.op().into(),
                msg: "the first request must be hello".into(),
            };
            write_msg(&mut w, &Response::Error(e)).await?;
            return Ok(());
        }
        // Authorization, then the generation guard: both before any change.
        let refused = match policy.check(&req) {
            Err(why) => Some(("refused", why)),
            Ok(()) => check_generation(zfs, &req, node)
                .await
                .err()
                .map(|why| ("refused by the generation guard", why)),
        };
        if let Some((by, why)) = refused {
            tracing::warn!(%peer, op = req.op(), "{by}: {why}");
            write_msg(
                &mut w,
                &Response::Error(WireError {
                    kind: "Denied".into(),
                    cmd: format!("[{node}] {}", req.op()),
                    msg: why,
                }),
            )
            .await?;
            continue;
        }
        tracing::debug!(%peer, op = req.op(), "request");
        let resp = match req {
            Request::Hello {
                version,
                node: client,
            } => {
                if version != VERSION {
                    let e = WireError { kind: "Protocol".into(), cmd: "hello".into(), msg: format!("protocol version {version} is not supported by this tandem (speaks {VERSION})") };
                    write_msg(&mut w, &Response::Error(e)).await?;
                    return Ok(());
                }
                greeted = true;
                tracing::info!(%peer, %client, "peer connected");
                Response::Hello {
                    version: VERSION,
                    node: node.to_owned(),
                    peer: peer.to_owned(),
                }
            }
            Request::Capabilities => match zfs.capabilities().await {
                Ok(c) => Response::Capabilities(c),
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::List { roots } => match zfs.list(&roots).await {
                Ok(l) => Response::Listing(l),
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::Snapshot {
                names,
                recursive: false,
            } => unit(zfs.snapshot(&names).await),
            Request::Snapshot {
                names,
                recursive: true,
            } => match names.as_slice() {
                [root] => unit(zfs.snapshot_tree(root).await),
                _ => Response::Error(WireError::protocol(
                    "a recursive snapshot request names exactly one snapshot",
                )),
            },
            Request::DestroySnapshot {
                name,
                claim,
                recursive: false,
            } => changed(zfs.destroy_snapshot(&name, claim.as_ref()).await),
            Request::DestroySnapshot {
                name,
                claim,
                recursive: true,
            } => changed(zfs.destroy_snapshot_tree(&name, claim.as_ref()).await),
            Request::Hold { tag: t, snapshot } => match tag(&t) {
                Ok(t) => changed(zfs.hold(&t, &snapshot).await),
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::Release { tag: t, snapshot } => match tag(&t) {
                Ok(t) => changed(zfs.release(&t, &snapshot).await),
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::HoldMany { tag: t, snapshots } => match tag(&t) {
                Ok(t) => changed_many(zfs.hold_many(&t, &snapshots).await),
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::ReleaseMany { tag: t, snapshots } => match tag(&t) {
                Ok(t) => changed_many(zfs.release_many(&t, &snapshots).await),
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::Rollback { snapshot, claim } => {
                unit(zfs.rollback(&snapshot, claim.as_ref()).await)
            }
            Request::SetProperty {
                dataset,
                prop,
                value,
                claim,
            } => unit(
                zfs.set_property(&dataset, &prop, &value, claim.as_ref())
                    .await,
            ),
            Request::GetProperty { dataset, prop } => match zfs.get_property(&dataset, &prop).await
            {
                Ok(value) => Response::Property { value },
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::ReceiveAbort { dataset, claim } => {
                changed(zfs.receive_abort(&dataset, claim.as_ref()).await)
            }
            Request::Rename { from, to, claim } => {
                unit(zfs.rename(&from, &to, claim.as_ref()).await)
            }
            Request::Clone {
                snapshot,
                to,
                props,
                claim,
            } => {
                let props: Vec<(&str, &str)> = props
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                unit(
                    zfs.clone_snapshot(&snapshot, &to, &props, claim.as_ref())
                        .await,
                )
            }
            Request::Promote { dataset, claim } => {
                unit(zfs.promote(&dataset, claim.as_ref()).await)
            }
            Request::CreateContainer { dataset, props } => {
                let props: Vec<(&str, &str)> = props
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                changed(zfs.create_container(&dataset, &props).await)
            }
            Request::Sync { datasets } => unit(zfs.sync(&datasets).await),
            Request::Bookmark { snapshot, bookmark } => {
                changed(zfs.bookmark(&snapshot, &bookmark).await)
            }
            Request::DestroyBookmark { bookmark } => changed(zfs.destroy_bookmark(&bookmark).await),
            Request::Estimate { request } => match zfs.estimate(&request).await {
                Ok(bytes) => Response::Estimate { bytes },
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::Receive { spec } => {
                let mut recv = match zfs.receive(&spec).await {
                    Ok(x) => x,
                    Err(e) => {
                        write_msg(&mut w, &Response::Error(WireError::zfs(&e))).await?;
                        continue;
                    }
                };
                write_msg(&mut w, &Response::Ready).await?;
                let decoded =
                    tandem_stream::decode(&mut r, &mut recv.writer, Arc::new(Counters::default()))
                        .await;
                match decoded {
                    Ok(stats) => {
                        let _ = recv.writer.shutdown().await;
                        drop(recv.writer);
                        match recv.handle.wait().await {
                            Ok(()) => Response::Done {
                                raw: stats.raw,
                                wire: stats.wire,
                            },
                            Err(e) => Response::Error(WireError::zfs(&e)),
                        }
                    }
                    Err(e) => {
                        // The rest of the stream is unread: answer, then close.
                        drop(recv.writer);
                        let zfs_err = match e {
                            StreamError::Write { .. } => recv.handle.wait().await.err(),
                            _ => {
                                recv.handle.kill();
                                let _ = recv.handle.wait().await;
                                None
                            }
                        };
                        let we = match zfs_err {
                            Some(z) => WireError::zfs(&z),
                            None => WireError {
                                kind: "Stream".into(),
                                cmd: format!("[{node}] receive"),
                                msg: e.to_string(),
                            },
                        };
                        tracing::warn!(%peer, "receive failed: {} {}", we.kind, we.msg);
                        write_msg(&mut w, &Response::Error(we)).await?;
                        return Ok(());
                    }
                }
            }
            Request::Send { request, wire } => {
                let send = match zfs.send(&request).await {
                    Ok(x) => x,
                    Err(e) => {
                        write_msg(&mut w, &Response::Error(WireError::zfs(&e))).await?;
                        continue;
                    }
                };
                write_msg(&mut w, &Response::Ready).await?;
                let opts = EncodeOptions {
                    mode: mode(wire),
                    ..EncodeOptions::default()
                };
                let mut handle = send.handle;
                match tandem_stream::encode(
                    send.reader,
                    &mut w,
                    opts,
                    Arc::new(Counters::default()),
                )
                .await
                {
                    Ok(stats) => match handle.wait().await {
                        Ok(()) => Response::Done {
                            raw: stats.raw,
                            wire: stats.wire,
                        },
                        Err(e) => Response::Error(WireError::zfs(&e)),
                    },
                    Err(e) => {
                        handle.kill();
                        let _ = handle.wait().await;
                        return Err(ProtoError::Bad(format!("sending the stream failed: {e}")));
                    }
                }
            }
        };
        write_msg(&mut w, &resp).await?;
    }
}
