//! The serving side: one connection, requests answered in order.

use std::sync::Arc;

use tandem_stream::{Counters, EncodeOptions, Mode, StreamError};
use tandem_zfs::{Changed, HoldTag, WireCompress, Zfs, ZfsError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::auth::Policy;
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

fn unit(r: Result<(), ZfsError>) -> Response {
    match r {
        Ok(()) => Response::Ok,
        Err(e) => Response::Error(WireError::zfs(&e)),
    }
}

fn tag(t: &str) -> Result<HoldTag, ZfsError> {
    HoldTag::parse(t).map_err(ZfsError::from)
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
        if let Err(why) = policy.check(&req) {
            tracing::warn!(%peer, op = req.op(), "refused: {why}");
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
            Request::Snapshot { names } => unit(zfs.snapshot(&names).await),
            Request::DestroySnapshot { name } => changed(zfs.destroy_snapshot(&name).await),
            Request::Hold { tag: t, snapshot } => match tag(&t) {
                Ok(t) => changed(zfs.hold(&t, &snapshot).await),
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::Release { tag: t, snapshot } => match tag(&t) {
                Ok(t) => changed(zfs.release(&t, &snapshot).await),
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::Rollback { snapshot } => unit(zfs.rollback(&snapshot).await),
            Request::SetProperty {
                dataset,
                prop,
                value,
            } => unit(zfs.set_property(&dataset, &prop, &value).await),
            Request::GetProperty { dataset, prop } => match zfs.get_property(&dataset, &prop).await
            {
                Ok(value) => Response::Property { value },
                Err(e) => Response::Error(WireError::zfs(&e)),
            },
            Request::ReceiveAbort { dataset } => changed(zfs.receive_abort(&dataset).await),
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
