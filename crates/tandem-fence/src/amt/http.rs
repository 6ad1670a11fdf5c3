//! A small HTTP/1.1 client for one request per connection (`Connection:
//! close`), over TCP or TLS. AMT answers with `Content-Length` or chunked
//! bodies; both are decoded. Timeouts are the caller's business.

use std::sync::Arc;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;

/// Largest header block and body accepted from a device.
const MAX_HEADER: usize = 64 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Where requests go.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Some: TLS with this config (certificate pinning inside).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// No TCP connection (refused, no route, name not resolved).
    Connect(std::io::Error),
    /// The TLS handshake failed (e.g. the certificate is not the pinned one).
    Tls(std::io::Error),
    /// Reading or writing failed after connecting.
    Io(std::io::Error),
    /// The answer is not HTTP as we know it.
    Malformed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "{e}"),
            HttpError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            HttpError::Io(e) => write!(f, "connection failed: {e}"),
            HttpError::Malformed(m) => write!(f, "malformed HTTP answer: {m}"),
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Every value of header `name`.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header_values(name).next()
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What [`Endpoint::connect`] established, for the checklist.
pub(crate) struct Connected {
    stream: Box<dyn Stream>,
    /// "TCP" or "TLS 1.3, certificate matches the pinned fingerprint".
    pub what: String,
}

impl Endpoint {
    /// The `host:port` form (IPv6 literals in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL of the WS-Management service.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/wsman", self.authority())
    }

    /// Opens a connection (and does the TLS handshake).
    pub async fn connect(&self) -> Result<Connected, HttpError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, self.port))
            .await
            .map_err(HttpError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Connected {
                stream: Box::new(tcp),
                what: "TCP connection".to_string(),
            }),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| HttpError::Malformed(format!("host name {host:?}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(HttpError::Tls)?;
                let version = tls
                    .get_ref()
                    .1
                    .protocol_version()
                    .and_then(|v| v.as_str())
                    .unwrap_or("TLS");
                Ok(Connected {
                    stream: Box::new(tls),
                    what: format!("{version}, certificate matches the pinned fingerprint"),
                })
            }
        }
    }

    /// Sends one POST of `body` to `path` with the given extra headers and
    /// reads the answer.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        extra_headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let conn = self.connect().await?;
        let mut stream = conn.stream;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tandem-fence\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.authority(),
            body.len()
        );
        for (n, v) in extra_headers {
            head.push_str(n);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        stream.write_all(&msg).await.map_err(HttpError::Io)?;
        stream.flush().await.map_err(HttpError::Io)?;
        let mut reader = BufReader::new(stream);
        read_response(&mut reader).await
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    budget: &mut usize,
) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)
        .await
        .map_err(HttpError::Io)?;
    if n == 0 {
        return Err(HttpError::Malformed(
            "connection closed before the answer".into(),
        ));
    }
    if n > *budget {
        return Err(HttpError::Malformed("header block too large".into()));
    }
    *budget -= n;
    if line.last() != Some(&b'\n') {
        return Err(HttpError::Malformed(
            "connection closed inside the headers".into(),
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HttpError::Malformed("header is not UTF-8".into()))
}

async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Response, HttpError> {
    let mut budget = MAX_HEADER;
    let status_line = read_line(r, &mut budget).await?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed(format!("status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, &mut budget).await?;
        if line.is_empty() {
            break;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line {line:?}")))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    let chunked = resp
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        resp.body = read_chunked(r).await?;
    } else if let Some(len) = resp.header("Content-Length") {
        let len: usize = len
            .parse()
            .map_err(|_| HttpError::Malformed(format!("Content-Length {len:?}")))?;
        if len > MAX_BODY {
            return Err(HttpError::Malformed(format!(
                "body of {len} bytes is too large"
            )));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.map_err(HttpError::Io)?;
        resp.body = body;
    } else {
        // No framing: the body ends with the connection. A TLS peer that
        // closes without close_notify is tolerated here.
        let mut body = Vec::new();
        match r.take(MAX_BODY as u64 + 1).read_to_end(&mut body).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(HttpError::Io(e)),
        }
        if body.len() > MAX_BODY {
            return Err(HttpError::Malformed("body too large".into()));
        }
        resp.body = body;
    }
    Ok(resp)
}

async fn read_chunked<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEADER;
    loop {
        let line = read_line(r, &mut budget).await?;
        let size_txt = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_txt, 16)
            .map_err(|_| HttpError::Malformed(format!("chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                if read_line(r, &mut budget).await?.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::Malformed("body too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .await
            .map_err(HttpError::Io)?;
        if !read_line(r, &mut budget).await?.is_empty() {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunked_and_length_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        let r = read_response(&mut &raw[..]).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world"[..]));
        let raw = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest a=b\r\nContent-Length: 2\r\n\r\nhi";
        let r = read_response(&mut &raw[..]).await.unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.reason, "Unauthorized");
        assert_eq!(
            r.header_values("www-authenticate").next(),
            Some("Digest a=b")
        );
        assert_eq!(r.body, b"hi");
        assert!(read_response(&mut &b"SSH-2.0-x\r\n\r\n"[..]).await.is_err());
        assert!(
            read_response(&mut &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"[..])
                .await
                .is_err()
        );
    }
}
