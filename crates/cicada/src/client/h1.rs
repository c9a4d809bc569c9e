//! HTTP/1.1 on one connection, written for a load generator's hot path.
//!
//! A user sends one request at a time, so its connection needs no dispatcher, no channel and no background task:
//! the request is serialised into a reused buffer and written with one syscall, and the response is parsed
//! (`httparse`) straight out of a reused read buffer whose bytes become the response's headers and body without a
//! copy. A connection that holds no read buffer (a new one, or one whose user paused) reads its response into a
//! per-thread scratch buffer instead and keeps it in an allocation of its exact size. Bodies are framed by
//! Content-Length, chunked transfer coding or connection close; a body longer than the cap is read to the end and
//! counted but only its start is kept. A body with a `Content-Encoding` cicada decodes goes through a [`Decoder`]
//! piece by piece as it is read; other bodies never touch one.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::conn::Stream;
use super::decode::{BodyOut, Collector, Decoder, Encoding};
use super::{Exchange, Headers, RequestError, RequestErrorKind, SendFailure, WireRequest};

/// Most response headers parsed; a response with more is refused.
const MAX_HEADERS: usize = 96;
/// Response headers parsed at the first try (see [`parse_head`]).
const COMMON_HEADERS: usize = 24;
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Read buffer size of a connection; grows for large heads and bodies, and shrinks back after them.
const READ_CHUNK: usize = 4 * 1024;
/// Per-thread buffer the first read of a response lands in when the connection holds no read buffer (see
/// [`H1Conn::read_small`]): large enough that a typical response arrives whole in one read.
const READ_SCRATCH_LEN: usize = 16 * 1024;
/// A buffer that grew past this is dropped after the exchange, so an idle connection stays small.
const KEEP_BUFFER_BELOW: usize = 64 * 1024;
/// Room the write buffer starts with: a request head without large headers fits.
const WRITE_BUF_START: usize = 512;
/// Request bodies up to this size are copied next to the head and sent in the same write.
const INLINE_BODY: usize = 16 * 1024;

thread_local! {
    /// Where this thread's HTTP/1.1 connections read a response they hold no buffer for (see [`READ_SCRATCH_LEN`]).
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(Box::default());
}

/// One HTTP/1.1 connection.
pub(crate) struct H1Conn {
    stream: Stream,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
    reusable: bool,
    /// The next response is read through the thread's [`READ_SCRATCH`] and kept in an allocation of its own size,
    /// not a [`READ_CHUNK`] buffer: true for a new connection and once [`H1Conn::release_buffers`] ran (its user is
    /// about to pause), false after a response. A user that pauses between requests then allocates a few hundred
    /// bytes per response instead of 4 KiB (an allocation glibc serves from its bins, not its per-thread cache, and
    /// a hole in the heap while the user waits); a busy connection keeps reading into its own buffer.
    read_small: bool,
}

fn protocol(message: impl Into<String>) -> RequestError {
    RequestError::new(RequestErrorKind::Protocol, message.into())
}

fn io_error(error: &io::Error) -> RequestError {
    let message = match error.kind() {
        io::ErrorKind::ConnectionReset => "connection reset by the server".to_string(),
        io::ErrorKind::BrokenPipe => "connection closed by the server (broken pipe)".to_string(),
        _ => format!("connection error: {error}"),
    };
    RequestError::new(RequestErrorKind::Protocol, message)
}

fn closed_early() -> RequestError {
    protocol("connection closed before the response was complete")
}

/// How the body of a response is delimited.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl H1Conn {
    pub(crate) fn new(stream: Stream) -> Self {
        H1Conn {
            stream,
            read_buf: BytesMut::new(),
            write_buf: Vec::new(),
            reusable: true,
            read_small: true,
        }
    }

    /// Whether the connection can carry another request: checks, without waiting, that the server has not closed
    /// it (or sent something unasked) since the last response.
    pub(crate) fn still_open(&mut self) -> bool {
        if !self.reusable {
            return false;
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        match Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf) {
            Poll::Pending => true,
            // End of stream, stray bytes or an error: this connection is done.
            Poll::Ready(_) => {
                self.reusable = false;
                false
            }
        }
    }

    /// Frees the read buffer (when it holds nothing) and the write buffer of an idle connection.
    pub(crate) fn release_buffers(&mut self) {
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
            self.read_small = true;
        }
        self.write_buf = Vec::new();
    }

    pub(crate) fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Send a request and read its whole response, decoding its body if `decode` and it is encoded.
    pub(crate) async fn send(
        &mut self,
        request: &WireRequest<'_>,
        max_body: usize,
        decode: bool,
    ) -> Result<Exchange, SendFailure> {
        self.encode(request);
        let inline = request.body.len() <= INLINE_BODY;
        let written = if inline {
            self.stream.write_all(&self.write_buf).await
        } else {
            match self.stream.write_all(&self.write_buf).await {
                Ok(()) => self.stream.write_all(request.body).await,
                Err(error) => Err(error),
            }
        };
        if let Err(error) = written {
            self.reusable = false;
            return Err(SendFailure::Unsent(io_error(&error)));
        }
        if let Err(error) = self.stream.flush().await {
            self.reusable = false;
            return Err(SendFailure::Unsent(io_error(&error)));
        }
        let result = self
            .read_response(request.method == Method::HEAD, max_body, decode)
            .await;
        self.read_small = false;
        if result.is_err() {
            self.reusable = false;
        }
        if self.read_buf.capacity() > KEEP_BUFFER_BELOW {
            self.read_buf = BytesMut::new();
        }
        result.map_err(SendFailure::Failed)
    }

    fn encode(&mut self, request: &WireRequest<'_>) {
        let out = &mut self.write_buf;
        out.clear();
        // After `release_buffers` the buffer starts empty: one allocation for a typical head instead of a chain of
        // reallocations as it doubles from 8 bytes.
        out.reserve(WRITE_BUF_START);
        out.extend_from_slice(request.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(request.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(request.host.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !request.headers.contains_key(header::USER_AGENT) {
            out.extend_from_slice(b"user-agent: ");
            out.extend_from_slice(request.user_agent.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(accept) = request.accept_encoding
            && !request.headers.contains_key(header::ACCEPT_ENCODING)
        {
            out.extend_from_slice(b"accept-encoding: ");
            out.extend_from_slice(accept.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let own_auth = request.keep_own_auth && request.headers.contains_key(header::AUTHORIZATION);
        if let Some(auth) = request.auth
            && !own_auth
        {
            out.extend_from_slice(b"authorization: ");
            out.extend_from_slice(auth.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in request.headers {
            if name == header::HOST
                || name == header::CONTENT_LENGTH
                || (name == header::AUTHORIZATION && !request.keep_own_auth)
            {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(cookie) = request.cookie {
            out.extend_from_slice(b"cookie: ");
            out.extend_from_slice(cookie.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let needs_length = !request.body.is_empty()
            || matches!(*request.method, Method::POST | Method::PUT | Method::PATCH);
        if needs_length {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(request.body.len() as u64).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if request.body.len() <= INLINE_BODY {
            out.extend_from_slice(request.body);
        }
    }

    /// Read more bytes into the read buffer. Returns the number read (0 at end of stream).
    async fn fill(&mut self) -> Result<usize, RequestError> {
        if self.read_small && self.read_buf.capacity() == 0 {
            return std::future::poll_fn(|cx| self.poll_fill_through_scratch(cx))
                .await
                .map_err(|e| io_error(&e));
        }
        if self.read_buf.capacity() - self.read_buf.len() < 512 {
            self.read_buf.reserve(READ_CHUNK);
        }
        self.stream
            .read_buf(&mut self.read_buf)
            .await
            .map_err(|e| io_error(&e))
    }

    /// One read into the thread's scratch buffer, whose bytes are then copied into a read buffer of their size.
    fn poll_fill_through_scratch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let H1Conn {
            stream, read_buf, ..
        } = self;
        super::scratch::with_scratch(&READ_SCRATCH, READ_SCRATCH_LEN, |scratch| {
            let mut buf = ReadBuf::new(scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    read_buf.extend_from_slice(buf.filled());
                    Poll::Ready(Ok(buf.filled().len()))
                }
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                Poll::Pending => Poll::Pending,
            }
        })
    }

    async fn read_response(
        &mut self,
        head_request: bool,
        max_body: usize,
        decode: bool,
    ) -> Result<Exchange, RequestError> {
        loop {
            // Between keep-alive requests the buffer is empty: read before parsing nothing.
            if self.read_buf.is_empty() && self.fill().await? == 0 {
                return Err(closed_early());
            }
            let parsed = parse_head(&self.read_buf)?;
            let Some(head) = parsed else {
                if self.read_buf.len() >= MAX_HEAD_BYTES {
                    return Err(protocol("response head larger than 64 KiB"));
                }
                if self.fill().await? == 0 {
                    return Err(closed_early());
                }
                continue;
            };
            if head.status.is_informational() {
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(protocol(
                        "the server switched protocols, which cicada's HTTP client does not support",
                    ));
                }
                self.read_buf.advance(head.length);
                continue;
            }
            let head_bytes = self.read_buf.split_to(head.length).freeze();
            let headers = Headers::new(head_bytes, head.spans);
            let framing = if head_request
                || head.status == StatusCode::NO_CONTENT
                || head.status == StatusCode::NOT_MODIFIED
            {
                Framing::None
            } else if head.chunked {
                Framing::Chunked
            } else if let Some(length) = head.content_length {
                Framing::Length(length)
            } else {
                Framing::UntilClose
            };
            let mut keep_alive = head.keep_alive;
            if matches!(framing, Framing::UntilClose) {
                keep_alive = false;
            }
            let encoding = head.content_encoding.filter(|_| decode);
            let (body, content_length, truncated) = match (framing, encoding) {
                (Framing::None, _) => (Bytes::new(), 0, false),
                (Framing::Length(length), None) => self.read_length(length, max_body).await?,
                (framing, None) => {
                    let mut out = Collector::new(max_body);
                    self.read_framed(framing, &mut out).await?;
                    out.finish()
                }
                (framing, Some(encoding)) => {
                    // Boxed: a decoder's state (about 300 bytes) would otherwise sit in every request's future.
                    let mut decoder = Box::new(Decoder::new(encoding, max_body));
                    self.read_framed(framing, &mut *decoder).await?;
                    decoder.finish()?
                }
            };
            // Bytes the server sent beyond this response would be taken for the next one.
            if !self.read_buf.is_empty() {
                keep_alive = false;
            }
            self.reusable = keep_alive;
            return Ok(Exchange {
                status: head.status,
                headers,
                body,
                content_length,
                truncated,
            });
        }
    }

    async fn read_length(
        &mut self,
        length: u64,
        max_body: usize,
    ) -> Result<(Bytes, u64, bool), RequestError> {
        let keep = usize::try_from(length).unwrap_or(usize::MAX).min(max_body);
        if self.read_buf.len() < keep {
            self.read_buf.reserve(keep - self.read_buf.len());
        }
        while self.read_buf.len() < keep {
            if self.fill().await? == 0 {
                return Err(closed_early());
            }
        }
        let body = self.read_buf.split_to(keep).freeze();
        let mut to_discard = length - keep as u64;
        while to_discard > 0 {
            if self.read_buf.is_empty() && self.fill().await? == 0 {
                return Err(closed_early());
            }
            let take = (self.read_buf.len() as u64).min(to_discard) as usize;
            self.read_buf.advance(take);
            to_discard -= take as u64;
        }
        Ok((body, length, (keep as u64) < length))
    }

    /// Read a body that is not kept without a copy (chunked, until close, or to be decoded) into `out`.
    async fn read_framed(
        &mut self,
        framing: Framing,
        out: &mut impl BodyOut,
    ) -> Result<(), RequestError> {
        match framing {
            Framing::None => Ok(()),
            Framing::Length(length) => self.read_length_into(length, out).await,
            Framing::Chunked => self.read_chunked(out).await,
            Framing::UntilClose => self.read_until_close(out).await,
        }
    }

    async fn read_length_into(
        &mut self,
        length: u64,
        out: &mut impl BodyOut,
    ) -> Result<(), RequestError> {
        let mut remaining = length;
        while remaining > 0 {
            if self.read_buf.is_empty() && self.fill().await? == 0 {
                return Err(closed_early());
            }
            let take = (self.read_buf.len() as u64).min(remaining) as usize;
            out.push(&self.read_buf[..take]);
            self.read_buf.advance(take);
            remaining -= take as u64;
        }
        Ok(())
    }

    async fn read_chunked(&mut self, out: &mut impl BodyOut) -> Result<(), RequestError> {
        loop {
            let size = loop {
                match find_line(&self.read_buf) {
                    Some(line_end) => {
                        let size = parse_chunk_size(&self.read_buf[..line_end])?;
                        self.read_buf.advance(line_end + 2);
                        break size;
                    }
                    None => {
                        if self.read_buf.len() > 1024 {
                            return Err(protocol("chunk size line longer than 1 KiB"));
                        }
                        if self.fill().await? == 0 {
                            return Err(closed_early());
                        }
                    }
                }
            };
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    match find_line(&self.read_buf) {
                        Some(0) => {
                            self.read_buf.advance(2);
                            return Ok(());
                        }
                        Some(line_end) => self.read_buf.advance(line_end + 2),
                        None => {
                            if self.read_buf.len() > MAX_HEAD_BYTES {
                                return Err(protocol("chunked trailers larger than 64 KiB"));
                            }
                            if self.fill().await? == 0 {
                                return Err(closed_early());
                            }
                        }
                    }
                }
            }
            self.read_length_into(size, out).await?;
            while self.read_buf.len() < 2 {
                if self.fill().await? == 0 {
                    return Err(closed_early());
                }
            }
            if &self.read_buf[..2] != b"\r\n" {
                return Err(protocol("malformed chunked body"));
            }
            self.read_buf.advance(2);
        }
    }

    async fn read_until_close(&mut self, out: &mut impl BodyOut) -> Result<(), RequestError> {
        loop {
            if !self.read_buf.is_empty() {
                out.push(&self.read_buf);
                self.read_buf.clear();
            }
            if self.fill().await? == 0 {
                return Ok(());
            }
        }
    }
}

/// A parsed response head: what we need of it, with header positions relative to the buffer start.
struct Head {
    length: usize,
    status: StatusCode,
    keep_alive: bool,
    chunked: bool,
    content_length: Option<u64>,
    /// A `Content-Encoding` cicada can decode.
    content_encoding: Option<Encoding>,
    /// (name start, name end, value start, value end) of each header.
    spans: Vec<(u32, u32, u32, u32)>,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, RequestError> {
    // Most responses have a few headers: parse with room for `COMMON_HEADERS` first, so that each response does
    // not initialise room for `MAX_HEADERS` (3 KiB), and again with the full room only when that was too little.
    let mut many;
    let mut few = [httparse::EMPTY_HEADER; COMMON_HEADERS];
    let mut response = httparse::Response::new(&mut few);
    let mut parsed = response.parse(buf);
    if let Err(httparse::Error::TooManyHeaders) = parsed {
        many = [httparse::EMPTY_HEADER; MAX_HEADERS];
        response = httparse::Response::new(&mut many);
        parsed = response.parse(buf);
    }
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(protocol(format!(
                "response with more than {MAX_HEADERS} headers"
            )));
        }
        Err(error) => return Err(protocol(format!("invalid HTTP response: {error}"))),
    };
    let code = response.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| protocol(format!("invalid HTTP status {code}")))?;
    let http10 = response.version == Some(0);
    let base = buf.as_ptr() as usize;
    let mut keep_alive = !http10;
    let mut chunked = false;
    let mut content_length = None;
    let mut content_encoding = None;
    let mut spans = Vec::with_capacity(response.headers.len());
    for h in response.headers.iter() {
        let name_start = h.name.as_ptr() as usize - base;
        let value_start = h.value.as_ptr() as usize - base;
        // Offsets fit in u32: a head is at most MAX_HEAD_BYTES long.
        spans.push((
            name_start as u32,
            (name_start + h.name.len()) as u32,
            value_start as u32,
            (value_start + h.value.len()) as u32,
        ));
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).unwrap_or("").trim();
            let value: u64 = text
                .parse()
                .map_err(|_| protocol(format!("invalid content-length `{text}`")))?;
            if content_length.is_some_and(|known| known != value) {
                return Err(protocol("conflicting content-length headers"));
            }
            content_length = Some(value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            content_encoding = Encoding::from_header(h.value);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    Ok(Some(Head {
        length,
        status,
        keep_alive,
        chunked,
        content_length,
        content_encoding,
        spans,
    }))
}

/// Position of the first CRLF.
fn find_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, RequestError> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    let text = std::str::from_utf8(digits).map_err(|_| protocol("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| protocol(format!("invalid chunk size `{text}`")))
}

/// Decimal text of a number without allocating.
pub(super) fn itoa(mut value: u64) -> ItoaBuf {
    let mut buf = ItoaBuf {
        bytes: [0; 20],
        start: 20,
    };
    loop {
        buf.start -= 1;
        buf.bytes[buf.start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return buf;
        }
    }
}

pub(super) struct ItoaBuf {
    bytes: [u8; 20],
    start: usize,
}

impl ItoaBuf {
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderMap, HeaderValue};

    #[test]
    fn heads_parse_with_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nok\n";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.content_length, Some(3));
        assert!(head.keep_alive && !head.chunked);
        let headers = Headers::new(Bytes::copy_from_slice(&raw[..head.length]), head.spans);
        assert_eq!(headers.map()["x-a"], "b");
        assert_eq!(headers.first("content-length"), Some(&b"3"[..]));

        let head = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive);
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(head.chunked && !head.keep_alive);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"NOPE\r\n\r\n").is_err());
    }

    #[test]
    fn heads_with_more_headers_than_the_first_try_holds() {
        let head_with = |count: usize| {
            let mut raw = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..count {
                raw.push_str(&format!("X-Header-{i}: {i}\r\n"));
            }
            raw.push_str("Content-Length: 0\r\n\r\n");
            raw
        };
        // Past the first try's room: parsed again with the full room, every header kept.
        let raw = head_with(COMMON_HEADERS + 5);
        let head = parse_head(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(head.spans.len(), COMMON_HEADERS + 6);
        assert_eq!(head.content_length, Some(0));
        // A partial head with many headers waits for more bytes.
        assert!(
            parse_head(&raw.as_bytes()[..raw.len() - 3])
                .unwrap()
                .is_none()
        );
        // Past the full room: refused, saying why.
        let raw = head_with(MAX_HEADERS);
        let error = parse_head(raw.as_bytes()).err().unwrap();
        assert!(
            error.message.contains("more than 96 headers"),
            "{}",
            error.message
        );
    }

    #[test]
    fn chunk_sizes_and_numbers() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0;ext=1").unwrap(), 0);
        assert!(parse_chunk_size(b"zz").is_err());
        assert_eq!(itoa(0).as_bytes(), b"0");
        assert_eq!(itoa(1234567).as_bytes(), b"1234567");
        assert_eq!(find_line(b"ab\r\ncd"), Some(2));
    }

    /// Serve `responses` (raw bytes, one per request) on a loopback socket and return the client connection.
    async fn connected(responses: Vec<&'static [u8]>) -> H1Conn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for response in responses {
                let _ = socket.read(&mut buf).await;
                // Write in two parts to exercise partial reads.
                let (a, b) = response.split_at(response.len() / 2);
                socket.write_all(a).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                socket.write_all(b).await.unwrap();
            }
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        H1Conn::new(Stream::Plain(stream))
    }

    #[tokio::test]
    async fn length_chunked_and_close_delimited_bodies() {
        let mut conn = connected(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
        ])
        .await;
        let headers = HeaderMap::new();
        let body = Bytes::new();
        let agent = HeaderValue::from_static("test");
        let request = WireRequest::get("/", &headers, &agent, &body);
        let Ok(first) = conn.send(&request, 4, true).await else {
            panic!("first")
        };
        assert_eq!(&first.body[..], b"0123");
        assert_eq!(first.content_length, 10);
        assert!(first.truncated && conn.is_reusable());
        let Ok(second) = conn.send(&request, 1 << 20, true).await else {
            panic!("second")
        };
        assert_eq!(&second.body[..], b"Wikipedia");
        assert!(!second.truncated && conn.is_reusable());
        let Ok(third) = conn.send(&request, 1 << 20, true).await else {
            panic!("third")
        };
        assert_eq!(&third.body[..], b"until the end");
        assert!(!conn.is_reusable());
    }

    #[tokio::test]
    async fn a_connection_that_pauses_reads_a_response_into_an_allocation_of_its_size() {
        const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for _ in 0..4 {
                let _ = socket.read(&mut buf).await;
                socket.write_all(RESPONSE).await.unwrap();
            }
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut conn = H1Conn::new(Stream::Plain(stream));
        let headers = HeaderMap::new();
        let body = Bytes::new();
        let agent = HeaderValue::from_static("test");
        let request = WireRequest::get("/", &headers, &agent, &body);
        let exchange = async |conn: &mut H1Conn| {
            let Ok(exchange) = conn.send(&request, 1 << 20, true).await else {
                panic!("no response")
            };
            assert_eq!(&exchange.body[..], b"ok\n");
            assert!(conn.is_reusable());
        };
        // A new connection: the response went through the thread's scratch buffer into an allocation of its size,
        // which the response's head and body took whole.
        exchange(&mut conn).await;
        assert_eq!(conn.read_buf.capacity(), 0);
        // A busy connection reads into a buffer of its own, whose rest waits for the next response.
        exchange(&mut conn).await;
        assert!(conn.read_buf.capacity() >= READ_CHUNK - RESPONSE.len());
        // Its user pauses: the buffer is freed, and the next response again takes only its size.
        conn.release_buffers();
        assert_eq!(conn.read_buf.capacity(), 0);
        exchange(&mut conn).await;
        assert_eq!(conn.read_buf.capacity(), 0);
        exchange(&mut conn).await;
        assert!(conn.read_buf.capacity() > 0);
    }
}
