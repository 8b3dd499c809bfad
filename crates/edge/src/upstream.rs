//! The edge's HTTP/1.1 client to the containers.
//!
//! A request is written and its answer read on the task that serves the
//! client: no connection task, no channel between the two, one wake-up per
//! read. The connection is handed back by [`Reader::reusable`] once the
//! response body has been read to its end, for the next request to the
//! same target.
//!
//! It speaks what a reverse proxy needs of HTTP/1.1: request bodies of
//! known length or chunked (streamed while the answer is awaited, so an
//! upstream that answers before reading the whole body is heard);
//! responses framed by `content-length`, by chunked transfer-coding
//! (trailers dropped) or by the connection's close (HTTP/1.0), none for
//! HEAD, 204 and 304; interim 1xx answers skipped; `Connection: close`
//! and HTTP/1.0 keep-alive honoured. Upgrades (101) are not relayed.
//! Hop-by-hop headers are left out both ways.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::header::{HOST, TRANSFER_ENCODING, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// Interim (1xx) answers skipped before the final one, at most.
const MAX_INTERIM: usize = 16;
/// Room made in the read buffer before each read.
const READ_ROOM: usize = 16 * 1024;

/// A connection to a target.
pub struct Conn {
    stream: TcpStream,
    /// Read but not yet consumed.
    buf: BytesMut,
}

/// Whether a header belongs to one connection (RFC 9110 7.6.1): never
/// passed from one side to the other. Left out as requests are encoded and
/// responses parsed, rather than removed from each map by name.
fn hop_by_hop(name: &HeaderName) -> bool {
    use hyper::header::{PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, UPGRADE};
    [
        CONNECTION,
        TRANSFER_ENCODING,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// A request's head, encoded once: a request that must go again (on a
/// fresh connection, or to another target) is written from the same bytes.
pub struct Prepared {
    head: Vec<u8>,
    head_only: bool,
    sending: Sending,
}

impl Prepared {
    /// The head of a request from `parts` (origin-form URI, its headers as
    /// given; its framing headers are replaced by those of `body`).
    pub fn new<B: Body>(parts: &hyper::http::request::Parts, body: &B) -> Self {
        let sending = if body.is_end_stream() {
            Sending::Nothing
        } else {
            match body.size_hint().exact() {
                Some(n) => Sending::Length(n),
                None => Sending::Chunked,
            }
        };
        Self {
            head: encode_head(parts, sending),
            head_only: parts.method == Method::HEAD,
            sending,
        }
    }

    /// Whether the request has a body to send.
    pub fn has_body(&self) -> bool {
        self.sending != Sending::Nothing
    }
}

/// How long a request may take: the client to send each piece of its body,
/// the target to answer once the request is sent.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    pub body: Duration,
    pub response: Duration,
}

impl Waits {
    /// As long as `total` for both (health checks bound the whole exchange).
    pub fn within(total: Duration) -> Self {
        Self {
            body: total,
            response: total,
        }
    }
}

/// The client, not the target, made the request fail: answered 4xx and
/// never counted against the target's release.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// Its body broke off or was malformed (a bad chunk).
    BadBody(String),
    /// Its body stalled for longer than the body timeout.
    SlowBody(Duration),
}

/// Why a request got no answer.
pub struct SendError<B> {
    /// None of the request was written: it can go on another connection
    /// as it is, with this body.
    pub unsent: Option<Option<B>>,
    /// Not one byte of an answer came back before the connection failed or
    /// closed — what a kept-alive connection that the target had just
    /// closed looks like.
    pub no_answer: bool,
    pub reason: String,
    /// The client's doing, not the target's.
    pub client: Option<ClientFault>,
    /// The target did not answer within the response timeout.
    pub timed_out: bool,
}

impl<B> SendError<B> {
    fn new(reason: impl Into<String>, no_answer: bool) -> Self {
        Self {
            unsent: None,
            no_answer,
            reason: reason.into(),
            client: None,
            timed_out: false,
        }
    }
}

impl Conn {
    /// A new connection to `addr` (`host:port`).
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Conn, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect to {addr} timed out"))?
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_ROOM),
        })
    }

    /// Whether an idle connection can carry another request: the target has
    /// neither closed it nor sent anything unasked. No system call unless
    /// the socket has become readable.
    pub fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes `req` with `body` (what [`Prepared`] was made with; `None`
    /// when it has none) and reads the head of the answer, within `waits`
    /// (the response timeout runs from the end of the request). The
    /// response body is read through the returned [`Reader`].
    pub async fn send<B>(
        mut self,
        req: &Prepared,
        body: Option<B>,
        waits: Waits,
    ) -> Result<Response<Reader>, SendError<B>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let head = &req.head;
        let mut written = 0;
        while written < head.len() {
            match self.stream.write(&head[written..]).await {
                Ok(n) if n > 0 => written += n,
                result => {
                    let why = match result {
                        Err(e) => e.to_string(),
                        Ok(_) => "the connection takes no more data".to_string(),
                    };
                    let mut e = SendError::new(format!("writing the request: {why}"), true);
                    if written == 0 {
                        e.unsent = Some(body);
                    }
                    return Err(e);
                }
            }
        }
        let Conn {
            mut stream,
            mut buf,
        } = self;
        let (mut rd, mut wr) = stream.split();
        let mut keep = true;
        let timed_out = || {
            let mut e = SendError::new(
                format!("did not answer within {} s", waits.response.as_secs_f64()),
                false,
            );
            e.timed_out = true;
            e
        };
        let head = {
            let read = read_head(&mut rd, &mut buf, req.head_only);
            tokio::pin!(read);
            if let (Some(body), true) = (body, req.has_body()) {
                let pump = pump(&mut wr, body, req.sending == Sending::Chunked, waits.body);
                tokio::pin!(pump);
                let mut pumped = false;
                let mut upstream_write_error = None;
                // Armed once the whole request is written.
                let answer_due = tokio::time::sleep(Duration::MAX);
                tokio::pin!(answer_due);
                loop {
                    tokio::select! {
                        biased;
                        done = &mut pump, if !pumped => {
                            pumped = true;
                            answer_due.as_mut().reset(tokio::time::Instant::now() + waits.response);
                            match done {
                                Ok(()) => {}
                                // The client went away mid-body, sent a broken
                                // one or stalled: its fault, the target's never.
                                Err(Pumped::Client(fault)) => {
                                    let mut e = SendError::new(format!("{fault:?}"), false);
                                    e.client = Some(fault);
                                    return Err(e);
                                }
                                // The target may have answered early and closed.
                                Err(Pumped::Upstream(why)) => {
                                    keep = false;
                                    upstream_write_error = Some(why);
                                }
                            }
                        }
                        head = &mut read => {
                            // Answered before the whole body was sent: the
                            // connection is out of step, not reusable.
                            keep &= pumped;
                            break head.map_err(|(no_answer, why)| {
                                let why = match upstream_write_error.take() {
                                    Some(w) => format!("writing the request body: {w}"),
                                    None => why,
                                };
                                (no_answer, why)
                            });
                        }
                        _ = &mut answer_due, if pumped => return Err(timed_out()),
                    }
                }
            } else {
                match tokio::time::timeout(waits.response, read).await {
                    Ok(head) => head,
                    Err(_) => return Err(timed_out()),
                }
            }
        };
        let head = head.map_err(|(no_answer, why)| SendError::new(why, no_answer))?;
        let mut resp = Response::new(Reader {
            conn: Some(Conn { stream, buf }),
            framing: head.framing,
            keep: keep && head.keep_alive,
        });
        // The version towards the client is the client's connection's.
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sending {
    Nothing,
    Length(u64),
    Chunked,
}

/// The request line and headers, with framing headers for the body.
fn encode_head(parts: &hyper::http::request::Parts, sending: Sending) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut had_length = false;
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || hop_by_hop(name) {
            had_length |= name == CONTENT_LENGTH;
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match sending {
        Sending::Nothing => {
            if had_length || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Sending::Length(n) => {
            out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        Sending::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    out
}

enum Pumped {
    Client(ClientFault),
    Upstream(String),
}

/// Writes the request body, chunked or as it comes (its length announced);
/// the client may take at most `stall` for each piece of it.
async fn pump<B>(
    wr: &mut WriteHalf<'_>,
    mut body: B,
    chunked: bool,
    stall: Duration,
) -> Result<(), Pumped>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let upstream = |e: std::io::Error| Pumped::Upstream(e.to_string());
    loop {
        let Some(frame) = tokio::time::timeout(stall, body.frame())
            .await
            .map_err(|_| Pumped::Client(ClientFault::SlowBody(stall)))?
        else {
            break;
        };
        let frame = frame.map_err(|e| {
            Pumped::Client(ClientFault::BadBody(format!(
                "the request body failed: {}",
                e.into()
            )))
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not passed on
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            let mut piece = Buf::chain(Buf::chain(size.as_bytes(), data), &b"\r\n"[..]);
            wr.write_all_buf(&mut piece).await.map_err(upstream)?;
        } else {
            let mut data = data;
            wr.write_all_buf(&mut data).await.map_err(upstream)?;
        }
    }
    if chunked {
        wr.write_all(b"0\r\n\r\n").await.map_err(upstream)?;
    }
    Ok(())
}

/// A final response head, parsed.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

#[derive(Debug)]
enum Parsed {
    /// An interim (1xx) answer of this many bytes, to skip.
    Interim(usize),
    /// The final answer's head, of this many bytes.
    Final(Head, usize),
}

/// Reads until a final response head is in `buf`, and takes it out.
/// `Err((no_answer, why))`.
async fn read_head(
    rd: &mut ReadHalf<'_>,
    buf: &mut BytesMut,
    head_only: bool,
) -> Result<Head, (bool, String)> {
    let mut answered = false;
    let mut interim = 0;
    loop {
        if !buf.is_empty() {
            answered = true;
            match parse_head(buf, head_only).map_err(|why| (false, why))? {
                Some(Parsed::Interim(len)) => {
                    buf.advance(len);
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err((false, "sent interim answers without end".to_string()));
                    }
                    continue;
                }
                Some(Parsed::Final(head, len)) => {
                    buf.advance(len);
                    return Ok(head);
                }
                None if buf.len() > MAX_HEAD => {
                    return Err((false, format!("sent a response head over {MAX_HEAD} bytes")))
                }
                None => {}
            }
        }
        buf.reserve(READ_ROOM);
        match rd.read_buf(buf).await {
            Ok(0) if answered => {
                return Err((false, "closed the connection mid-answer".to_string()))
            }
            Ok(0) => return Err((true, "closed the connection without answering".to_string())),
            Ok(_) => {}
            Err(e) => return Err((!answered, e.to_string())),
        }
    }
}

/// Parses a response head at the start of `bytes`; `None` when it is not
/// all there yet.
fn parse_head(bytes: &[u8], head_only: bool) -> Result<Option<Parsed>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("sent a malformed response ({e})")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| format!("sent status {code}, which is not a valid one"))?;
    if status.is_informational() {
        if code == 101 {
            return Err("switched protocols, which the edge does not relay".to_string());
        }
        return Ok(Some(Parsed::Interim(len)));
    }
    let http_11 = resp.version != Some(0);
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut encoded = false;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_asked = false;
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("sent a header with an invalid name {:?}", h.name))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| format!("sent header {name} with an invalid value"))?;
        if name == CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| format!("sent content-length {value:?}, which is not a length"))?;
            if length.is_some_and(|l| l != n) {
                return Err("sent two different content-lengths".to_string());
            }
            length = Some(n);
        } else if name == TRANSFER_ENCODING {
            encoded = true;
            // Chunked must be the last coding applied.
            chunked = value
                .to_str()
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name == CONNECTION {
            for token in value.to_str().unwrap_or("").split(',') {
                let token = token.trim();
                close |= token.eq_ignore_ascii_case("close");
                keep_alive_asked |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
        if !hop_by_hop(&name) {
            headers.append(name, value);
        }
    }
    let mut keep_alive = !close && (http_11 || keep_alive_asked);
    let framing = if head_only || code == 204 || code == 304 {
        Framing::Length(0)
    } else if encoded {
        // Transfer-encoding wins over content-length (RFC 9112 6.3); a
        // message with both is suspect: the connection is not reused.
        keep_alive &= length.is_none();
        headers.remove(CONTENT_LENGTH);
        if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        }
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    if matches!(framing, Framing::Close) {
        keep_alive = false;
    }
    Ok(Some(Parsed::Final(
        Head {
            status,
            headers,
            framing,
            keep_alive,
        },
        len,
    )))
}

/// How the response body ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// The body ends when the connection closes.
    Close,
}

/// Where a chunked body's decoding stands.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Data(Bytes),
    /// More bytes must be read first.
    More,
    End,
}

/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

/// Takes one line (without its CRLF or LF) off the front of `buf`.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, String> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => {
            Err("sent a chunked body with a line without end".to_string())
        }
        None => Ok(None),
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
    let digits = std::str::from_utf8(digits).unwrap_or("").trim();
    if digits.is_empty() || digits.len() > 15 {
        return Err(format!(
            "sent a chunk size {:?} that is not one",
            String::from_utf8_lossy(line)
        ));
    }
    u64::from_str_radix(digits, 16).map_err(|_| {
        format!(
            "sent a chunk size {:?} that is not one",
            String::from_utf8_lossy(line)
        )
    })
}

impl Framing {
    fn at_end(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Chunked(Chunk::Done))
    }

    /// The next piece of the body out of `buf`.
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, String> {
        match self {
            Framing::Length(0) => Ok(Step::End),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                Ok(Step::Data(buf.split_to(n as usize).freeze()))
            }
            Framing::Close => {
                if buf.is_empty() {
                    Ok(Step::More)
                } else {
                    Ok(Step::Data(buf.split().freeze()))
                }
            }
            Framing::Chunked(state) => loop {
                match *state {
                    Chunk::Size => match take_line(buf)? {
                        None => return Ok(Step::More),
                        Some(line) => {
                            *state = match chunk_size(&line)? {
                                0 => Chunk::Trailers,
                                n => Chunk::Data(n),
                            }
                        }
                    },
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Step::More);
                        }
                        let n = left.min(buf.len() as u64);
                        *state = if n == left {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - n)
                        };
                        return Ok(Step::Data(buf.split_to(n as usize).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.starts_with(b"\r\n") {
                            buf.advance(2);
                        } else if buf.starts_with(b"\n") {
                            buf.advance(1);
                        } else if buf.is_empty() || &buf[..] == b"\r" {
                            return Ok(Step::More);
                        } else {
                            return Err("sent a chunk longer than its size says".to_string());
                        }
                        *state = Chunk::Size;
                    }
                    Chunk::Trailers => match take_line(buf)? {
                        None => return Ok(Step::More),
                        Some(line) if line.is_empty() => *state = Chunk::Done,
                        Some(_) => {} // a trailer field: dropped
                    },
                    Chunk::Done => return Ok(Step::End),
                }
            },
        }
    }
}

/// A response body as it arrives from the target.
pub struct Reader {
    /// `None` once the connection has failed or been taken back.
    conn: Option<Conn>,
    framing: Framing,
    /// The connection may carry another request once this body has ended.
    keep: bool,
}

impl Reader {
    /// The connection, when the body has been read to its end and the
    /// connection can carry another request.
    pub fn reusable(&mut self) -> Option<Conn> {
        if self.keep && self.framing.at_end() {
            self.conn.take()
        } else {
            None
        }
    }

    fn fail(&mut self, why: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.keep = false;
        Poll::Ready(Some(Err(why.into())))
    }
}

impl Body for Reader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.buf) {
                Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::More) => {}
                Err(why) => return this.fail(why),
            }
            if let Err(e) = ready!(conn.stream.poll_read_ready(cx)) {
                return this.fail(e.to_string());
            }
            conn.buf.reserve(READ_ROOM);
            match conn.stream.try_read_buf(&mut conn.buf) {
                Ok(0) if this.framing == Framing::Close => {
                    this.conn = None;
                    this.keep = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("the target closed the connection mid-body".to_string()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return this.fail(e.to_string()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.at_end() || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// `GET path` on a new connection to `addr`, within `timeout`: the status
/// and the first bytes of the body (up to `keep` of them). For health
/// checks and the probe.
pub async fn get(
    addr: &str,
    path: &str,
    timeout: Duration,
    keep: usize,
) -> Result<(StatusCode, Bytes), String> {
    let uri: Uri = path
        .parse()
        .map_err(|_| format!("{path:?} is not a valid URL path"))?;
    let host = HeaderValue::from_str(addr).map_err(|_| format!("{addr:?} is not a host"))?;
    let exchange = async {
        let conn = Conn::connect(addr, timeout).await?;
        let (mut parts, body) = Request::new(http_body_util::Empty::<Bytes>::new()).into_parts();
        parts.uri = uri;
        parts.headers.insert(HOST, host);
        parts
            .headers
            .insert(USER_AGENT, HeaderValue::from_static("changeover-edge"));
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("close"));
        let resp = conn
            .send(
                &Prepared::new(&parts, &body),
                None::<http_body_util::Empty<Bytes>>,
                Waits::within(timeout),
            )
            .await
            .map_err(|e| e.reason)?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut kept = BytesMut::new();
        while kept.len() < keep {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        kept.extend_from_slice(&data[..data.len().min(keep - kept.len())]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        Ok((status, kept.freeze()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str, head_only: bool) -> Head {
        match parse_head(raw.as_bytes(), head_only) {
            Ok(Some(Parsed::Final(head, len))) => {
                assert_eq!(len, raw.len());
                head
            }
            other => panic!("{raw:?} -> {other:?}"),
        }
    }

    #[test]
    fn response_heads_say_how_the_body_ends_and_whether_the_connection_stays() {
        use Framing::{Chunked, Close, Length};
        // (head, answer to HEAD, framing, kept alive, header names passed on)
        let cases: [(&str, bool, Framing, bool, &[&str]); 9] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, Length(5), true, &["content-length"]),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, Chunked(Chunk::Size), true, &[]),
            // Transfer-encoding wins; such a message is not trusted to leave
            // the connection in step.
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", false, Chunked(Chunk::Size), false, &[]),
            // Hop-by-hop headers stay behind.
            ("HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nX-App: 1\r\n\r\n", false, Length(2), false, &["content-length", "x-app"]),
            ("HTTP/1.0 200 OK\r\n\r\n", false, Close, false, &[]),
            ("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", false, Length(0), true, &["content-length"]),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, Length(0), true, &["content-length"]),
            ("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false, Length(0), true, &["content-length"]),
            ("HTTP/1.1 204 No Content\r\n\r\n", false, Length(0), true, &[]),
        ];
        for (raw, head_only, framing, keep_alive, names) in cases {
            let h = parsed(raw, head_only);
            assert_eq!(
                (&h.framing, h.keep_alive),
                (&framing, keep_alive),
                "{raw:?}"
            );
            let passed: Vec<_> = h.headers.keys().map(|n| n.as_str()).collect();
            assert_eq!(passed, names, "{raw:?}");
        }
    }

    #[test]
    fn interim_answers_are_skipped_and_bad_heads_refused() {
        assert!(matches!(
            parse_head(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200",
                false
            ),
            Ok(Some(Parsed::Interim(40)))
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nA: b\r\n", false),
            Ok(None)
        ));
        for bad in [
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes(), false).is_err(), "{bad:?}");
        }
    }

    /// Decodes `pieces` fed one after another, as reads would.
    fn decode(pieces: &[&str]) -> Result<(String, BytesMut), String> {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::new();
        let mut out = String::new();
        let mut pieces = pieces.iter();
        loop {
            match framing.step(&mut buf)? {
                Step::Data(d) => out.push_str(std::str::from_utf8(&d).unwrap()),
                Step::End => return Ok((out, buf)),
                Step::More => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p.as_bytes()),
                    None => return Err(format!("ran out of input with {out:?}")),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_across_reads_with_extensions_and_trailers() {
        let whole = "5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-sum: 1\r\n\r\n";
        assert_eq!(decode(&[whole]).unwrap().0, "hello world");
        // Every split point.
        for i in 1..whole.len() {
            let (a, b) = whole.split_at(i);
            assert_eq!(decode(&[a, b]).unwrap().0, "hello world", "split at {i}");
        }
        // Bare LF line ends, upper-case hex, what follows stays in the buffer.
        let (body, rest) = decode(&["A\nabcdefghij\n0\n\nNEXT"]).unwrap();
        assert_eq!((body.as_str(), &rest[..]), ("abcdefghij", &b"NEXT"[..]));
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for bad in [
            "zz\r\nhello\r\n0\r\n\r\n",
            "\r\nhello\r\n0\r\n\r\n",
            "3\r\nhello\r\n0\r\n\r\n",
            "fffffffffffffffff\r\n",
        ] {
            assert!(decode(&[bad]).is_err(), "{bad:?}");
        }
        let endless = "1".repeat(MAX_LINE + 10);
        assert!(decode(&[&endless]).is_err());
    }

    #[test]
    fn request_heads_carry_the_framing_of_their_body() {
        let mut req = Request::post("/a?b=1")
            .header("host", "app")
            .header("connection", "keep-alive, x-private")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("upgrade", "websocket")
            .header("proxy-authorization", "Basic eDp5")
            .header("transfer-encoding", "chunked")
            .header("content-length", "10")
            .body(())
            .unwrap();
        let (parts, _) = std::mem::replace(&mut req, Request::new(())).into_parts();
        let text = |s| String::from_utf8(encode_head(&parts, s)).unwrap();
        assert_eq!(
            text(Sending::Chunked),
            "POST /a?b=1 HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            text(Sending::Length(3)),
            "POST /a?b=1 HTTP/1.1\r\nhost: app\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(
            text(Sending::Nothing),
            "POST /a?b=1 HTTP/1.1\r\nhost: app\r\ncontent-length: 0\r\n\r\n"
        );
        let (get, _) = Request::get("/").body(()).unwrap().into_parts();
        assert_eq!(
            String::from_utf8(encode_head(&get, Sending::Nothing)).unwrap(),
            "GET / HTTP/1.1\r\n\r\n"
        );
    }
}
