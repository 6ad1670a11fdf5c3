//! A WS-Management test server that behaves like Intel AMT's power
//! control, strictly: HTTP Digest (qop=auth, nonce counts, MD5) is
//! enforced, and every SOAP message is checked for the exact shape AMT
//! expects. Anything malformed is answered with a SOAP fault (HTTP 400)
//! and recorded in [`Server::rejections`], so a client bug fails the test.
//!
//! The namespaces and URIs are written out here independently of the
//! client's own constants, so a typo on either side shows.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use md5::{Digest as _, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

pub const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const WSA: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
pub const WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
pub const ANON: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
pub const GET: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get";
pub const APMS: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_AssociatedPowerManagementService";
pub const PMS: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_PowerManagementService";
pub const CS: &str = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ComputerSystem";
pub const CHANGE: &str = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_PowerManagementService/RequestPowerStateChange";
pub const PMS_NAME: &str = "Intel(r) AMT Power Management Service";
pub const REALM: &str = "Digest:6D2B0000000000000000000000000000";

/// How the device behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Like a healthy AMT.
    Normal,
    /// Accepts power changes (ReturnValue 0) but never changes state.
    Lying,
    /// Answers power changes with this non-zero ReturnValue.
    ReturnValue(u32),
    /// Reads requests and never answers.
    Silent,
    /// The user lacks the Remote Control realm: the power service and
    /// power changes answer an AccessDenied fault.
    NoPowerRealm,
}

/// A valid, authenticated request the device acted on.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    /// "get-apms", "get-pms" or "change".
    pub what: &'static str,
    /// The PowerState of a change.
    pub power_state: Option<u16>,
}

#[derive(Debug, Default)]
struct State {
    power: u16,
    log: Vec<Logged>,
    http_requests: usize,
    raw_requests: Vec<Vec<u8>>,
    authorizations: Vec<String>,
    auth_failures: usize,
    stale_answers: usize,
    rejections: Vec<String>,
    /// Issued nonces and the last nonce count used with each.
    nonces: HashMap<String, u32>,
    message_ids: HashSet<String>,
}

/// The running server.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    /// The SHA-256 fingerprint of the TLS certificate, "AB:CD:..." form.
    pub fingerprint: Option<String>,
    state: Arc<Mutex<State>>,
}

pub struct Options {
    pub mode: Mode,
    pub tls: bool,
    pub user: &'static str,
    pub password: &'static str,
    pub power: u16,
    /// Answer "stale" after this many uses of one nonce.
    pub nonce_uses: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Normal,
            tls: false,
            user: "admin",
            password: "P@ssw0rd-amt",
            power: 2,
            nonce_uses: None,
        }
    }
}

impl Server {
    pub async fn start(opts: Options) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            power: opts.power,
            ..State::default()
        }));
        let (acceptor, fingerprint) = if opts.tls {
            let ck = rcgen::generate_simple_self_signed(vec!["amt.test".to_string()]).unwrap();
            let der = ck.cert.der().clone();
            let fp = {
                use sha2::{Digest as _, Sha256};
                Sha256::digest(der.as_ref())
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(":")
            };
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
                rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
            );
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .unwrap();
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                Some(fp),
            )
        } else {
            (None, None)
        };
        let server = Server {
            addr,
            fingerprint,
            state,
        };
        let s = server.clone();
        let mode = opts.mode;
        let nonce_uses = opts.nonce_uses;
        let (user, password) = (opts.user, opts.password);
        let scheme = if opts.tls { "https" } else { "http" };
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                let acceptor = acceptor.clone();
                let to = format!("{scheme}://{addr}/wsman");
                tokio::spawn(async move {
                    let dev = Device {
                        server: s,
                        mode,
                        user,
                        password,
                        to,
                        nonce_uses,
                    };
                    match acceptor {
                        None => dev.serve(tcp).await,
                        Some(acc) => {
                            if let Ok(tls) = acc.accept(tcp).await {
                                dev.serve(tls).await
                            }
                        }
                    }
                });
            }
        });
        server
    }

    pub fn power(&self) -> u16 {
        self.state.lock().unwrap().power
    }

    pub fn set_power(&self, p: u16) {
        self.state.lock().unwrap().power = p;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn changes(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.what == "change")
            .collect()
    }

    pub fn http_requests(&self) -> usize {
        self.state.lock().unwrap().http_requests
    }

    pub fn raw_requests(&self) -> Vec<Vec<u8>> {
        self.state.lock().unwrap().raw_requests.clone()
    }

    pub fn authorizations(&self) -> Vec<String> {
        self.state.lock().unwrap().authorizations.clone()
    }

    pub fn auth_failures(&self) -> usize {
        self.state.lock().unwrap().auth_failures
    }

    /// How many 401s said the nonce was stale (the password was right).
    pub fn stale_answers(&self) -> usize {
        self.state.lock().unwrap().stale_answers
    }

    /// Every malformed request, with what was wrong.
    pub fn rejections(&self) -> Vec<String> {
        self.state.lock().unwrap().rejections.clone()
    }
}

struct Device {
    server: Server,
    mode: Mode,
    user: &'static str,
    password: &'static str,
    to: String,
    nonce_uses: Option<u32>,
}

struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<(HttpRequest, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 || buf.len() > 65536 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    if first.next()? != "HTTP/1.1" {
        return None;
    }
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    Some((
        HttpRequest {
            method,
            path,
            headers,
            body,
        },
        buf,
    ))
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_params(s: &str) -> HashMap<String, String> {
    // Good enough for the client's own output: name=value or name="value"
    // separated by ", "; quoted values have no embedded quotes here.
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name.trim().trim_start_matches(',').trim().to_string();
        let (value, after) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(name, value);
        rest = after.trim_start_matches([',', ' ']);
    }
    out
}

fn chunked_response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Type: application/soap+xml; charset=UTF-8\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    // Two chunks, like AMT's firmware splitting its answers.
    let mid = body.len() / 2;
    let mid = (0..=mid)
        .rev()
        .find(|i| body.is_char_boundary(*i))
        .unwrap_or(0);
    for part in [&body[..mid], &body[mid..]] {
        if !part.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn fault(subcode: &str, reason: &str, relates_to: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><a:Envelope xmlns:a="{SOAP}" xmlns:b="{WSA}" xmlns:c="{WSMAN}"><a:Header><b:To>{ANON}</b:To><b:RelatesTo>{relates_to}</b:RelatesTo><b:Action a:mustUnderstand="true">http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</b:Action><b:MessageID>uuid:00000000-8086-8086-8086-000000000001</b:MessageID></a:Header><a:Body><a:Fault><a:Code><a:Value>a:Sender</a:Value><a:Subcode><a:Value>c:{subcode}</a:Value></a:Subcode></a:Code><a:Reason><a:Text xml:lang="en-US">{reason}</a:Text></a:Reason><a:Detail></a:Detail></a:Fault></a:Body></a:Envelope>"#,
        reason = reason.replace('&', "&amp;").replace('<', "&lt;")
    )
}

fn reply(action: &str, relates_to: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><a:Envelope xmlns:a="{SOAP}" xmlns:b="{WSA}" xmlns:c="{WSMAN}"><a:Header><b:To>{ANON}</b:To><b:RelatesTo>{relates_to}</b:RelatesTo><b:Action a:mustUnderstand="true">{action}</b:Action><b:MessageID>uuid:00000000-8086-8086-8086-000000000002</b:MessageID><c:ResourceURI>x</c:ResourceURI></a:Header><a:Body>{body}</a:Body></a:Envelope>"#
    )
}

/// What a valid request asks for.
enum Op {
    GetApms,
    GetPms,
    Change(u16),
}

fn el<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    ns: &str,
    name: &str,
) -> Result<roxmltree::Node<'a, 'i>, String> {
    let found: Vec<_> = n
        .children()
        .filter(|c| {
            c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(ns)
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no {{{ns}}}{name} in {}", n.tag_name().name())),
        _ => Err(format!("{name} repeated in {}", n.tag_name().name())),
    }
}

fn text(n: roxmltree::Node<'_, '_>) -> String {
    n.text().unwrap_or("").to_string()
}

fn must_understand(n: roxmltree::Node<'_, '_>) -> Result<(), String> {
    if n.attribute((SOAP, "mustUnderstand")) == Some("true") {
        Ok(())
    } else {
        Err(format!(
            "{} without s:mustUnderstand=\"true\"",
            n.tag_name().name()
        ))
    }
}

fn selectors(set: roxmltree::Node<'_, '_>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for c in set.children().filter(|c| c.is_element()) {
        if c.tag_name().name() != "Selector" || c.tag_name().namespace() != Some(WSMAN) {
            return Err(format!("unexpected {} in SelectorSet", c.tag_name().name()));
        }
        let name = c.attribute("Name").ok_or("Selector without Name")?;
        out.push((name.to_string(), text(c)));
    }
    out.sort();
    Ok(out)
}

impl Device {
    /// Validates the SOAP message; returns (message id, operation) or
    /// (message id if any, subcode, reason).
    fn validate(&self, xml: &str) -> Result<(String, Op), (String, &'static str, String)> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| {
            (
                String::new(),
                "SchemaValidationError",
                format!("not XML: {e}"),
            )
        })?;
        let env = doc.root_element();
        if env.tag_name().name() != "Envelope" || env.tag_name().namespace() != Some(SOAP) {
            return Err((
                String::new(),
                "SchemaValidationError",
                "not a SOAP 1.2 Envelope".into(),
            ));
        }
        let schema = |id: &str, m: String| (id.to_string(), "SchemaValidationError", m);
        let header = el(env, SOAP, "Header").map_err(|m| schema("", m))?;
        let msg_id_el = el(header, WSA, "MessageID").map_err(|m| schema("", m))?;
        let id = text(msg_id_el);
        let id_ok = id.len() == 41
            && id.starts_with("uuid:")
            && id[5..].char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        if !id_ok {
            return Err(schema(
                "",
                format!("MessageID {id:?} is not uuid:xxxxxxxx-xxxx-..."),
            ));
        }
        if !self
            .server
            .state
            .lock()
            .unwrap()
            .message_ids
            .insert(id.clone())
        {
            return Err((
                id.clone(),
                "InvalidMessageInformationHeader",
                format!("MessageID {id} reused"),
            ));
        }
        let action_el = el(header, WSA, "Action").map_err(|m| schema(&id, m))?;
        must_understand(action_el).map_err(|m| schema(&id, m))?;
        let action = text(action_el);
        let to = el(header, WSA, "To").map_err(|m| schema(&id, m))?;
        if text(to) != self.to {
            return Err((
                id.clone(),
                "InvalidMessageInformationHeader",
                format!("To {:?}, expected {:?}", text(to), self.to),
            ));
        }
        let ru_el = el(header, WSMAN, "ResourceURI").map_err(|m| schema(&id, m))?;
        must_understand(ru_el).map_err(|m| schema(&id, m))?;
        let ru = text(ru_el);
        let reply_to = el(header, WSA, "ReplyTo").map_err(|m| schema(&id, m))?;
        let addr = el(reply_to, WSA, "Address").map_err(|m| schema(&id, m))?;
        if text(addr) != ANON {
            return Err(schema(&id, format!("ReplyTo {:?}", text(addr))));
        }
        let sels = match el(header, WSMAN, "SelectorSet") {
            Ok(s) => selectors(s).map_err(|m| schema(&id, m))?,
            Err(_) => Vec::new(),
        };
        let body = el(env, SOAP, "Body").map_err(|m| schema(&id, m))?;
        let body_children: Vec<_> = body.children().filter(|c| c.is_element()).collect();
        let pms_sel = vec![("Name".to_string(), PMS_NAME.to_string())];
        match (action.as_str(), ru.as_str()) {
            (GET, APMS) => {
                if !sels.is_empty() || !body_children.is_empty() {
                    return Err(schema(&id, "Get of APMS with selectors or a body".into()));
                }
                Ok((id, Op::GetApms))
            }
            (GET, PMS) => {
                if sels != pms_sel {
                    return Err((id, "InvalidSelectors", format!("selectors {sels:?}")));
                }
                if !body_children.is_empty() {
                    return Err(schema(&id, "Get with a body".into()));
                }
                Ok((id, Op::GetPms))
            }
            (CHANGE, PMS) => {
                if sels != pms_sel {
                    return Err((id, "InvalidSelectors", format!("selectors {sels:?}")));
                }
                let [input] = body_children.as_slice() else {
                    return Err(schema(
                        &id,
                        "Body must hold exactly RequestPowerStateChange_INPUT".into(),
                    ));
                };
                if input.tag_name().name() != "RequestPowerStateChange_INPUT"
                    || input.tag_name().namespace() != Some(PMS)
                {
                    return Err(schema(
                        &id,
                        format!(
                            "body element {:?} ({:?})",
                            input.tag_name().name(),
                            input.tag_name().namespace()
                        ),
                    ));
                }
                let ps = el(*input, PMS, "PowerState").map_err(|m| schema(&id, m))?;
                let ps: u16 = text(ps)
                    .parse()
                    .map_err(|_| schema(&id, format!("PowerState {:?}", text(ps))))?;
                if ![2, 5, 8, 10].contains(&ps) {
                    return Err((id, "InvalidParameter", format!("PowerState {ps}")));
                }
                let me = el(*input, PMS, "ManagedElement").map_err(|m| schema(&id, m))?;
                let a = el(me, WSA, "Address").map_err(|m| schema(&id, m))?;
                if text(a) != ANON {
                    return Err(schema(&id, format!("ManagedElement Address {:?}", text(a))));
                }
                let rp = el(me, WSA, "ReferenceParameters").map_err(|m| schema(&id, m))?;
                let cs = el(rp, WSMAN, "ResourceURI").map_err(|m| schema(&id, m))?;
                if text(cs) != CS {
                    return Err(schema(
                        &id,
                        format!("ManagedElement ResourceURI {:?}", text(cs)),
                    ));
                }
                let set = el(rp, WSMAN, "SelectorSet").map_err(|m| schema(&id, m))?;
                let s = selectors(set).map_err(|m| schema(&id, m))?;
                let want = vec![
                    (
                        "CreationClassName".to_string(),
                        "CIM_ComputerSystem".to_string(),
                    ),
                    ("Name".to_string(), "ManagedSystem".to_string()),
                ];
                if s != want {
                    return Err((
                        id,
                        "InvalidSelectors",
                        format!("ManagedElement selectors {s:?}"),
                    ));
                }
                Ok((id, Op::Change(ps)))
            }
            (a, r) => Err((id, "ActionNotSupported", format!("action {a:?} on {r:?}"))),
        }
    }

    /// Checks the Authorization header; Some(reason) when it is not valid.
    fn check_auth(&self, req: &HttpRequest) -> Option<String> {
        let Some(h) = req.header("Authorization") else {
            return Some("no credentials".into());
        };
        self.server
            .state
            .lock()
            .unwrap()
            .authorizations
            .push(h.to_string());
        let Some(params) = h.strip_prefix("Digest ") else {
            return Some("not Digest".into());
        };
        let p = parse_params(params);
        let get = |k: &str| p.get(k).cloned().unwrap_or_default();
        if get("username") != self.user || get("realm") != REALM || get("uri") != req.path {
            return Some(format!(
                "username/realm/uri {:?}",
                (get("username"), get("realm"), get("uri"))
            ));
        }
        if get("qop") != "auth"
            || get("cnonce").is_empty()
            || !matches!(get("algorithm").as_str(), "" | "MD5")
        {
            return Some("qop/cnonce/algorithm".into());
        }
        let nc_txt = get("nc");
        let Ok(nc) = u32::from_str_radix(&nc_txt, 16) else {
            return Some("nc".into());
        };
        if nc_txt.len() != 8 {
            return Some("nc must be 8 hex digits".into());
        }
        let nonce = get("nonce");
        let ha1 = md5_hex(&format!("{}:{REALM}:{}", self.user, self.password));
        let ha2 = md5_hex(&format!("{}:{}", req.method, req.path));
        let expect = md5_hex(&format!(
            "{ha1}:{nonce}:{nc_txt}:{}:auth:{ha2}",
            get("cnonce")
        ));
        if get("response") != expect {
            return Some("wrong response hash".into());
        }
        let mut st = self.server.state.lock().unwrap();
        match st.nonces.get_mut(&nonce) {
            None => Some("unknown nonce".into()),
            Some(last) if nc <= *last => Some(format!("nonce count {nc} replayed (last {last})")),
            Some(last) => {
                *last = nc;
                if self.nonce_uses.is_some_and(|n| nc > n) {
                    Some("stale".into())
                } else {
                    None
                }
            }
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(self, mut s: S) {
        let Some((req, raw)) = read_request(&mut s).await else {
            return;
        };
        {
            let mut st = self.server.state.lock().unwrap();
            st.http_requests += 1;
            st.raw_requests.push(raw);
        }
        if self.mode == Mode::Silent {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        let out = self.answer(&req);
        let _ = s.write_all(&out).await;
        let _ = s.flush().await;
        let _ = s.shutdown().await;
    }

    fn answer(&self, req: &HttpRequest) -> Vec<u8> {
        if req.method != "POST" || req.path != "/wsman" {
            self.reject(format!("{} {}", req.method, req.path));
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec();
        }
        let expected_host = self.to.split('/').nth(2).unwrap_or("");
        if req.header("Host") != Some(expected_host) {
            self.reject(format!("Host header {:?}", req.header("Host")));
        }
        if let Some(why) = self.check_auth(req) {
            let stale = why == "stale";
            if stale {
                self.server.state.lock().unwrap().stale_answers += 1;
            } else if req.header("Authorization").is_some() {
                self.server.state.lock().unwrap().auth_failures += 1;
            }
            let nonce = format!("{:032x}", fastrand::u128(..));
            self.server
                .state
                .lock()
                .unwrap()
                .nonces
                .insert(nonce.clone(), 0);
            let body = format!("<html><body>401 Unauthorized: {why}</body></html>");
            return format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", stale=\"{stale}\", qop=\"auth\"\r\n\
                 Content-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes();
        }
        let ct = req.header("Content-Type").unwrap_or("");
        if !ct.starts_with("application/soap+xml") {
            self.reject(format!("Content-Type {ct:?}"));
        }
        let xml = String::from_utf8_lossy(&req.body).to_string();
        let (id, op) = match self.validate(&xml) {
            Ok(v) => v,
            Err((id, sub, why)) => {
                self.reject(format!("{sub}: {why}"));
                return chunked_response("400 Bad Request", "", &fault(sub, &why, &id));
            }
        };
        let now = Instant::now();
        let mut st = self.server.state.lock().unwrap();
        match op {
            Op::GetApms => {
                st.log.push(Logged {
                    at: now,
                    what: "get-apms",
                    power_state: None,
                });
                let available = if st.power == 2 {
                    vec![8, 10, 5, 12]
                } else {
                    vec![2]
                };
                let avail: String = available
                    .iter()
                    .map(|v| format!("<g:AvailableRequestedPowerStates>{v}</g:AvailableRequestedPowerStates>"))
                    .collect();
                let body = format!(
                    r#"<g:CIM_AssociatedPowerManagementService xmlns:g="{APMS}">{avail}<g:PowerState>{}</g:PowerState><g:ServiceProvided><b:Address>{ANON}</b:Address><b:ReferenceParameters><c:ResourceURI>{PMS}</c:ResourceURI><c:SelectorSet><c:Selector Name="Name">{PMS_NAME}</c:Selector></c:SelectorSet></b:ReferenceParameters></g:ServiceProvided><g:UserOfService><b:Address>{ANON}</b:Address></g:UserOfService></g:CIM_AssociatedPowerManagementService>"#,
                    st.power
                );
                chunked_response("200 OK", "", &reply(&format!("{GET}Response"), &id, &body))
            }
            Op::GetPms => {
                if self.mode == Mode::NoPowerRealm {
                    return chunked_response(
                        "400 Bad Request",
                        "",
                        &fault(
                            "AccessDenied",
                            "The sender was not authorized to access the resource.",
                            &id,
                        ),
                    );
                }
                st.log.push(Logged {
                    at: now,
                    what: "get-pms",
                    power_state: None,
                });
                let body = format!(
                    r#"<g:CIM_PowerManagementService xmlns:g="{PMS}"><g:CreationClassName>CIM_PowerManagementService</g:CreationClassName><g:ElementName>{PMS_NAME}</g:ElementName><g:Name>{PMS_NAME}</g:Name><g:SystemName>Intel(r) AMT</g:SystemName></g:CIM_PowerManagementService>"#
                );
                chunked_response("200 OK", "", &reply(&format!("{GET}Response"), &id, &body))
            }
            Op::Change(ps) => {
                if self.mode == Mode::NoPowerRealm {
                    return chunked_response(
                        "400 Bad Request",
                        "",
                        &fault(
                            "AccessDenied",
                            "The sender was not authorized to access the resource.",
                            &id,
                        ),
                    );
                }
                st.log.push(Logged {
                    at: now,
                    what: "change",
                    power_state: Some(ps),
                });
                let rv = match self.mode {
                    Mode::ReturnValue(v) => v,
                    Mode::Lying => 0,
                    _ => {
                        match ps {
                            2 | 8 => st.power = ps,
                            _ => st.power = 2,
                        }
                        0
                    }
                };
                let body = format!(
                    r#"<g:RequestPowerStateChange_OUTPUT xmlns:g="{PMS}"><g:ReturnValue>{rv}</g:ReturnValue></g:RequestPowerStateChange_OUTPUT>"#
                );
                chunked_response(
                    "200 OK",
                    "",
                    &reply(&format!("{CHANGE}Response"), &id, &body),
                )
            }
        }
    }

    fn reject(&self, why: String) {
        self.server.state.lock().unwrap().rejections.push(why);
    }
}
