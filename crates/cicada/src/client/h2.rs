//! HTTP/2 on one connection, driven by the user's own task, written for a load generator's hot path.
//!
//! A user sends one request at a time, so its HTTP/2 connection carries one stream at a time and needs no task of
//! its own: the user's task writes the request's frames, then reads frames until its response is complete,
//! answering what the server asks for on the way (SETTINGS, PING, window updates). Between requests nobody reads the
//! connection; what the server sent meanwhile (a PING, new SETTINGS, a GOAWAY, or the end of the connection) is
//! handled when the connection is next checked out of the pool, and a connection the server is closing is not used
//! again. Like [`super::h1`], the connection keeps two buffers that are freed while its user pauses, so an idle
//! connection costs its socket, its TLS state and a few hundred bytes.
//!
//! Header blocks are encoded and decoded by [`super::hpack`]; the response decoder's dynamic table is bounded by
//! the size cicada advertises ([`HEADER_TABLE_SIZE`]). The bounds of a connection (windows, frame and
//! header sizes) are in docs/resource-guard.md.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::Stream;
use super::decode::{BodyOut, Collector, Decoder, Encoding};
use super::hpack::{self, encode_indexed, encode_literal, encode_literal_named, index};
use super::{Exchange, Headers, RequestError, RequestErrorKind, SendFailure, WireRequest};

/// What the server may send ahead of the reader: a user reads its one response as it comes, so a 1 MiB connection
/// window and 256 KiB per stream keep bodies flowing at full speed on a local network while bounding what a
/// connection can have in flight.
pub(crate) const CONNECTION_WINDOW: u32 = 1024 * 1024;
pub(crate) const STREAM_WINDOW: u32 = 256 * 1024;
/// Largest response header list accepted (names, values and 32 bytes per field, as RFC 9113 counts it).
pub(crate) const MAX_HEADER_LIST: u32 = 64 * 1024;
/// Largest compressed header block accepted (HEADERS and its CONTINUATION frames).
const MAX_HEADER_BLOCK: usize = MAX_HEADER_LIST as usize + 16 * 1024;
/// Dynamic table of the response decoder: the protocol's default, the bound of what a connection's decoder keeps.
pub(crate) const HEADER_TABLE_SIZE: usize = 4096;
/// Largest frame payload cicada accepts: the protocol's default, never raised.
const MAX_FRAME: usize = 16 * 1024;
/// The peer's default frame and window sizes until its SETTINGS say otherwise.
const DEFAULT_MAX_FRAME: usize = 16 * 1024;
const DEFAULT_WINDOW: i64 = 65_535;
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// Stream identifiers are 31 bits; a connection that used them up is replaced.
const LAST_STREAM_ID: u32 = (1 << 31) - 1;
/// Room the read buffer gets when it runs short; it grows to a full frame when one arrives.
const READ_CHUNK: usize = 4 * 1024;
/// A buffer that grew past this is dropped after the exchange, so an idle connection stays small.
const KEEP_BUFFER_BELOW: usize = 64 * 1024;
/// Room the write buffer starts with: a request's headers without large values fit.
const WRITE_BUF_START: usize = 512;
/// Request body bytes queued before they are written: bounds the write buffer while a large body goes out.
const WRITE_FLUSH_AT: usize = 64 * 1024;
/// Answers (PING and SETTINGS acknowledgements) queued between two writes: a server that asks for more is flooding
/// the connection, which is closed (ENHANCE_YOUR_CALM).
const MAX_PENDING_ANSWERS: usize = 16 * 1024;
/// What a checkout reads of what the server sent while the connection was idle; the rest is read with the response.
const MAX_IDLE_READ: usize = 64 * 1024;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113, 6).
mod kind {
    pub(super) const DATA: u8 = 0;
    pub(super) const HEADERS: u8 = 1;
    /// Ignored when it comes (RFC 9113, 5.3.2), once its size is checked.
    pub(super) const PRIORITY: u8 = 2;
    pub(super) const RST_STREAM: u8 = 3;
    pub(super) const SETTINGS: u8 = 4;
    pub(super) const PUSH_PROMISE: u8 = 5;
    pub(super) const PING: u8 = 6;
    pub(super) const GOAWAY: u8 = 7;
    pub(super) const WINDOW_UPDATE: u8 = 8;
    pub(super) const CONTINUATION: u8 = 9;
}

/// Frame flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Settings identifiers.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 1;
const SETTINGS_ENABLE_PUSH: u16 = 2;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 5;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 6;

/// Error codes (RFC 9113, 7).
const NO_ERROR: u32 = 0;
const PROTOCOL_ERROR: u32 = 1;
const FLOW_CONTROL_ERROR: u32 = 3;
const FRAME_SIZE_ERROR: u32 = 6;
const REFUSED_STREAM: u32 = 7;
const CANCEL: u32 = 8;
const COMPRESSION_ERROR: u32 = 9;
const ENHANCE_YOUR_CALM: u32 = 11;

fn error_code_name(code: u32) -> Cow<'static, str> {
    Cow::Borrowed(match code {
        0 => "NO_ERROR",
        1 => "PROTOCOL_ERROR",
        2 => "INTERNAL_ERROR",
        3 => "FLOW_CONTROL_ERROR",
        4 => "SETTINGS_TIMEOUT",
        5 => "STREAM_CLOSED",
        6 => "FRAME_SIZE_ERROR",
        7 => "REFUSED_STREAM",
        8 => "CANCEL",
        9 => "COMPRESSION_ERROR",
        10 => "CONNECT_ERROR",
        11 => "ENHANCE_YOUR_CALM",
        12 => "INADEQUATE_SECURITY",
        13 => "HTTP_1_1_REQUIRED",
        other => return Cow::Owned(format!("error code {other}")),
    })
}

/// What went wrong on a connection, before it becomes a request's error.
#[derive(Debug)]
enum ConnError {
    /// The server broke the protocol: cicada closes the connection with this code.
    Protocol {
        code: u32,
        reason: String,
    },
    /// The server ended the connection (GOAWAY) or the stream (RST_STREAM) before it processed the request: it may
    /// be sent again on another connection.
    Refused(String),
    /// The server reset the stream after it started on it.
    Reset(u32),
    /// The server stopped the connection with an error (GOAWAY) while the response was under way.
    GoAway(u32),
    Io(io::Error),
    Closed,
}

impl ConnError {
    fn protocol(code: u32, reason: impl Into<String>) -> ConnError {
        ConnError::Protocol {
            code,
            reason: reason.into(),
        }
    }

    fn into_request_error(self) -> RequestError {
        let message = match self {
            ConnError::Protocol { code, reason } => {
                format!("HTTP/2 error ({}): {reason}", error_code_name(code))
            }
            ConnError::Refused(reason) => reason,
            ConnError::Reset(code) => {
                format!(
                    "the server reset the HTTP/2 stream ({})",
                    error_code_name(code)
                )
            }
            ConnError::GoAway(code) => format!(
                "the server closed the HTTP/2 connection during the response (GOAWAY, {})",
                error_code_name(code)
            ),
            ConnError::Io(error) => match error.kind() {
                io::ErrorKind::ConnectionReset => "connection reset by the server".to_string(),
                io::ErrorKind::BrokenPipe => {
                    "connection closed by the server (broken pipe)".to_string()
                }
                _ => format!("connection error: {error}"),
            },
            ConnError::Closed => "connection closed before the response was complete".to_string(),
        };
        RequestError::new(RequestErrorKind::Protocol, message)
    }
}

/// One HTTP/2 connection.
pub(crate) struct H2Conn {
    stream: Stream,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
    decoder: hpack::Decoder,
    /// A header block whose CONTINUATION frames are still to come: its stream, whether it ends the stream, and the
    /// block so far.
    partial_block: Option<(u32, bool, Vec<u8>)>,
    next_stream_id: u32,
    /// The server's SETTINGS_MAX_FRAME_SIZE: the largest frame cicada sends.
    peer_max_frame: usize,
    /// The server's SETTINGS_INITIAL_WINDOW_SIZE: each new stream's send window.
    peer_initial_window: i64,
    /// What cicada may still send on the connection.
    send_window: i64,
    /// Bytes received on the connection and not yet given back with a WINDOW_UPDATE.
    recv_unacked: u32,
    /// The next header block starts with a dynamic table size update (to 0: the encoder never indexes). Needed on
    /// the first block and after each SETTINGS_HEADER_TABLE_SIZE from the server, which a decoder may insist on
    /// (RFC 7541, 4.2; nghttp2 does).
    table_size_update: bool,
    reusable: bool,
}

/// The stream of the request under way.
struct Active {
    id: u32,
    send_window: i64,
    recv_unacked: u32,
    head_request: bool,
    max_body: usize,
    decode: bool,
    /// The final response's status and headers, once they came.
    head: Option<(StatusCode, Headers)>,
    body: Option<Body>,
    /// The server ended its side of the stream: the response is complete.
    ended: bool,
    /// The response's Content-Length, which its DATA must add up to (RFC 9113, 8.1.1).
    expected_length: Option<u64>,
    /// DATA bytes of the response, padding left out.
    data_bytes: u64,
}

/// A response body on its way in: kept as it comes, or decoded.
enum Body {
    Plain(Collector),
    Decoded(Box<Decoder>),
}

impl Body {
    fn push(&mut self, data: &[u8]) {
        match self {
            Body::Plain(collector) => collector.push(data),
            Body::Decoded(decoder) => decoder.push(data),
        }
    }
}

fn frame_head(out: &mut Vec<u8>, length: usize, frame_kind: u8, flags: u8, stream_id: u32) {
    let length = length as u32;
    out.extend_from_slice(&[
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        frame_kind,
        flags,
    ]);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// Headers HTTP/2 forbids (RFC 9113, 8.2.2): they are left out, as browsers and hyper do. `TE` may only say
/// `trailers`.
fn is_connection_specific(name: &header::HeaderName, value: &HeaderValue) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    ) || (name == header::TE && value != "trailers")
}

impl H2Conn {
    /// A connection on which the client preface and cicada's settings are queued: they go out with the first
    /// request, in the same write.
    pub(crate) fn new(stream: Stream) -> Self {
        let mut write_buf = Vec::with_capacity(WRITE_BUF_START);
        write_buf.extend_from_slice(PREFACE);
        let settings: [(u16, u32); 4] = [
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
            (SETTINGS_HEADER_TABLE_SIZE, HEADER_TABLE_SIZE as u32),
        ];
        frame_head(&mut write_buf, settings.len() * 6, kind::SETTINGS, 0, 0);
        for (id, value) in settings {
            write_buf.extend_from_slice(&id.to_be_bytes());
            write_buf.extend_from_slice(&value.to_be_bytes());
        }
        frame_head(&mut write_buf, 4, kind::WINDOW_UPDATE, 0, 0);
        write_buf.extend_from_slice(&(CONNECTION_WINDOW - DEFAULT_WINDOW as u32).to_be_bytes());
        H2Conn {
            stream,
            read_buf: BytesMut::new(),
            write_buf,
            decoder: hpack::Decoder::new(HEADER_TABLE_SIZE),
            partial_block: None,
            next_stream_id: 1,
            peer_max_frame: DEFAULT_MAX_FRAME,
            peer_initial_window: DEFAULT_WINDOW,
            send_window: DEFAULT_WINDOW,
            recv_unacked: 0,
            table_size_update: true,
            reusable: true,
        }
    }

    pub(crate) fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Whether the connection can carry another request: handles, without waiting, what the server sent since the
    /// last response (answers go out with the next request), and checks that it is not closing the connection.
    pub(crate) fn still_open(&mut self) -> bool {
        // Frames that arrived with the end of the last response and were left in the buffer come first.
        if self.process_frames(None).is_err() {
            self.reusable = false;
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut read_so_far = 0;
        while self.reusable && read_so_far < MAX_IDLE_READ {
            if self.read_buf.capacity() - self.read_buf.len() < 512 {
                self.read_buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(
                Pin::new(&mut self.stream),
                &mut cx,
                &mut self.read_buf,
            ) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => self.reusable = false,
                Poll::Ready(Ok(read)) => {
                    read_so_far += read;
                    if self.process_frames(None).is_err() {
                        self.reusable = false;
                    }
                }
                Poll::Ready(Err(_)) => self.reusable = false,
            }
        }
        self.reusable
    }

    /// Frees the buffers of an idle connection (the read buffer only when it holds nothing).
    pub(crate) fn release_buffers(&mut self) {
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
        if self.write_buf.is_empty() {
            self.write_buf = Vec::new();
        }
    }

    /// Send a request on a new stream and read its whole response, decoding its body if `decode` and it is encoded.
    pub(crate) async fn send(
        &mut self,
        request: &WireRequest<'_>,
        https: bool,
        max_body: usize,
        decode: bool,
    ) -> Result<Exchange, SendFailure> {
        if !self.reusable {
            return Err(SendFailure::Unsent(ConnError::Closed.into_request_error()));
        }
        let id = self.next_stream_id;
        self.next_stream_id += 2;
        if self.next_stream_id > LAST_STREAM_ID {
            self.reusable = false;
        }
        let body = request.body;
        encode_headers(
            &mut self.write_buf,
            self.peer_max_frame,
            request,
            https,
            id,
            body.is_empty(),
            std::mem::take(&mut self.table_size_update),
        );
        let mut active = Active {
            id,
            send_window: self.peer_initial_window,
            recv_unacked: 0,
            head_request: *request.method == Method::HEAD,
            max_body,
            decode,
            head: None,
            body: None,
            ended: false,
            expected_length: None,
            data_bytes: 0,
        };
        let result = self.drive(&mut active, body).await;
        // A large buffer is dropped once it holds nothing: bytes after the response are the start of the next frame.
        if self.read_buf.capacity() > KEEP_BUFFER_BELOW && self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
        if self.write_buf.capacity() > KEEP_BUFFER_BELOW && self.write_buf.is_empty() {
            self.write_buf = Vec::new();
        }
        if let Err((error, written)) = result {
            let refused = matches!(error, ConnError::Refused(_));
            // A stream the server reset leaves the connection as it was; anything else ends it.
            if !matches!(error, ConnError::Reset(_) | ConnError::Refused(_)) {
                self.reusable = false;
            }
            let error = error.into_request_error();
            return Err(if refused || !written {
                SendFailure::Unsent(error)
            } else {
                SendFailure::Failed(error)
            });
        }
        let Some((status, headers)) = active.head else {
            return Err(SendFailure::Failed(
                ConnError::protocol(PROTOCOL_ERROR, "the stream ended without a response")
                    .into_request_error(),
            ));
        };
        let (body, content_length, truncated) = match active.body {
            None => (bytes::Bytes::new(), 0, false),
            Some(Body::Plain(collector)) => collector.finish(),
            Some(Body::Decoded(decoder)) => match decoder.finish() {
                Ok(done) => done,
                Err(error) => return Err(SendFailure::Failed(error)),
            },
        };
        Ok(Exchange {
            status,
            headers,
            body,
            content_length,
            truncated,
        })
    }

    /// Writes the request's body as the windows allow and reads frames until the response is complete. The error
    /// says whether anything of this request was written.
    async fn drive(
        &mut self,
        active: &mut Active,
        body: &bytes::Bytes,
    ) -> Result<(), (ConnError, bool)> {
        let mut body_sent = 0;
        let mut written = false;
        let mut body_done = body.is_empty();
        loop {
            while !body_done && !active.ended && self.write_buf.len() < WRITE_FLUSH_AT {
                let room = self
                    .send_window
                    .min(active.send_window)
                    .min(self.peer_max_frame as i64)
                    .min(WRITE_FLUSH_AT as i64);
                if room <= 0 {
                    break;
                }
                let take = (body.len() - body_sent).min(room as usize);
                body_done = body_sent + take == body.len();
                frame_head(
                    &mut self.write_buf,
                    take,
                    kind::DATA,
                    if body_done { END_STREAM } else { 0 },
                    active.id,
                );
                self.write_buf
                    .extend_from_slice(&body[body_sent..body_sent + take]);
                body_sent += take;
                self.send_window -= take as i64;
                active.send_window -= take as i64;
            }
            if active.ended && !body_done {
                // The server answered before taking the whole body: stop sending it (RFC 9113, 8.1).
                self.reset_stream(active.id, CANCEL);
                body_done = true;
            }
            if !self.write_buf.is_empty() {
                if let Err((error, any_sent)) = self.write_out().await {
                    return Err((ConnError::Io(error), written || any_sent));
                }
                written = true;
            }
            if active.ended {
                return Ok(());
            }
            if !body_done && self.write_buf.is_empty() {
                let room = self.send_window.min(active.send_window);
                if room > 0 {
                    // The buffer was written to bound it; more of the body may go at once.
                    continue;
                }
            }
            self.read_more(active)
                .await
                .map_err(|error| (error, written))?;
        }
    }

    /// Writes the write buffer out. The error says whether any of it was taken: a request whose HEADERS may have
    /// left cannot count as unsent.
    async fn write_out(&mut self) -> Result<(), (io::Error, bool)> {
        let mut sent = 0;
        while sent < self.write_buf.len() {
            match self.stream.write(&self.write_buf[sent..]).await {
                Ok(0) => return Err((io::ErrorKind::WriteZero.into(), sent > 0)),
                Ok(taken) => sent += taken,
                Err(error) => return Err((error, sent > 0)),
            }
        }
        self.stream.flush().await.map_err(|error| (error, true))?;
        self.write_buf.clear();
        Ok(())
    }

    async fn read_more(&mut self, active: &mut Active) -> Result<(), ConnError> {
        if self.read_buf.capacity() - self.read_buf.len() < 512 {
            self.read_buf.reserve(READ_CHUNK);
        }
        let read = self
            .stream
            .read_buf(&mut self.read_buf)
            .await
            .map_err(ConnError::Io)?;
        if read == 0 {
            return Err(ConnError::Closed);
        }
        let result = self.process_frames(Some(active));
        if let Err(ConnError::Protocol { code, .. }) = &result {
            // Tell the server why the connection ends, as far as the socket still takes it.
            let code = *code;
            self.write_buf.clear();
            self.go_away(code);
            let _ = self.write_out().await;
        }
        result
    }

    /// Handles every complete frame in the read buffer, for the request under way if there is one.
    fn process_frames(&mut self, mut active: Option<&mut Active>) -> Result<(), ConnError> {
        loop {
            if self.read_buf.len() < 9 {
                return Ok(());
            }
            let head = &self.read_buf[..9];
            let length =
                usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let frame_kind = head[3];
            let flags = head[4];
            let stream_id =
                u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & LAST_STREAM_ID;
            if length > MAX_FRAME {
                return Err(ConnError::protocol(
                    FRAME_SIZE_ERROR,
                    format!("a frame of {length} bytes, over the 16 KiB cicada accepts"),
                ));
            }
            if self.read_buf.len() < 9 + length {
                self.read_buf.reserve(9 + length - self.read_buf.len());
                return Ok(());
            }
            self.read_buf.advance(9);
            let payload = self.read_buf.split_to(length);
            if let Some((block_stream, _, _)) = &self.partial_block
                && (frame_kind != kind::CONTINUATION || stream_id != *block_stream)
            {
                return Err(ConnError::protocol(
                    PROTOCOL_ERROR,
                    "a header block was interrupted by another frame",
                ));
            }
            if matches!(frame_kind, kind::DATA | kind::HEADERS | kind::RST_STREAM)
                && (stream_id.is_multiple_of(2) || stream_id >= self.next_stream_id)
            {
                // Stream 0, a stream the server would have opened (push is off), or one cicada never opened.
                return Err(ConnError::protocol(
                    PROTOCOL_ERROR,
                    format!(
                        "a frame of type {frame_kind} on stream {stream_id}, which cicada did not open"
                    ),
                ));
            }
            let active_here = active.as_deref_mut().filter(|a| a.id == stream_id);
            match frame_kind {
                kind::DATA => self.on_data(active_here, flags, &payload)?,
                kind::HEADERS => {
                    let fragment = strip_padding(&payload, flags, true)?;
                    self.on_header_fragment(active_here, stream_id, flags, fragment)?;
                }
                kind::CONTINUATION => {
                    if self.partial_block.is_none() {
                        return Err(ConnError::protocol(
                            PROTOCOL_ERROR,
                            "a CONTINUATION frame without a header block",
                        ));
                    }
                    self.on_header_fragment(active_here, stream_id, flags, &payload)?;
                }
                kind::RST_STREAM => {
                    if payload.len() != 4 {
                        return Err(ConnError::protocol(
                            FRAME_SIZE_ERROR,
                            "RST_STREAM of the wrong size",
                        ));
                    }
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    if let Some(active) = active_here
                        && !active.ended
                    {
                        return Err(if code == REFUSED_STREAM && active.head.is_none() {
                            ConnError::Refused(
                                "the server refused the HTTP/2 stream before processing it (REFUSED_STREAM)"
                                    .to_string(),
                            )
                        } else {
                            ConnError::Reset(code)
                        });
                    }
                }
                kind::SETTINGS => {
                    self.on_settings(active.as_deref_mut(), stream_id, flags, &payload)?
                }
                kind::PING => {
                    if stream_id != 0 || payload.len() != 8 {
                        return Err(ConnError::protocol(PROTOCOL_ERROR, "a malformed PING"));
                    }
                    if flags & ACK == 0 {
                        self.check_answers()?;
                        frame_head(&mut self.write_buf, 8, kind::PING, ACK, 0);
                        self.write_buf.extend_from_slice(&payload);
                    }
                }
                kind::GOAWAY => {
                    if stream_id != 0 {
                        return Err(ConnError::protocol(PROTOCOL_ERROR, "GOAWAY on a stream"));
                    }
                    if payload.len() < 8 {
                        return Err(ConnError::protocol(
                            FRAME_SIZE_ERROR,
                            "a GOAWAY shorter than 8 bytes",
                        ));
                    }
                    let last_stream =
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & LAST_STREAM_ID;
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    // No new stream goes on a connection the server is leaving.
                    self.reusable = false;
                    if let Some(active) = active.as_deref_mut()
                        && !active.ended
                    {
                        if active.id > last_stream && active.head.is_none() {
                            return Err(ConnError::Refused(format!(
                                "the server closed the HTTP/2 connection before processing the request (GOAWAY, {})",
                                error_code_name(code)
                            )));
                        }
                        if code != NO_ERROR || active.id > last_stream {
                            return Err(ConnError::GoAway(code));
                        }
                    }
                }
                kind::WINDOW_UPDATE => {
                    if payload.len() != 4 {
                        return Err(ConnError::protocol(
                            FRAME_SIZE_ERROR,
                            "WINDOW_UPDATE of the wrong size",
                        ));
                    }
                    let increment = i64::from(
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & LAST_STREAM_ID,
                    );
                    if stream_id == 0 {
                        if increment == 0 {
                            return Err(ConnError::protocol(
                                PROTOCOL_ERROR,
                                "a WINDOW_UPDATE of 0",
                            ));
                        }
                        self.send_window += increment;
                        if self.send_window > MAX_WINDOW {
                            return Err(ConnError::protocol(
                                FLOW_CONTROL_ERROR,
                                "the connection's send window went over 2^31-1",
                            ));
                        }
                    } else if let Some(active) = active_here {
                        active.send_window += increment;
                        if increment == 0 || active.send_window > MAX_WINDOW {
                            return Err(ConnError::protocol(
                                FLOW_CONTROL_ERROR,
                                "a stream's send window update was 0 or went over 2^31-1",
                            ));
                        }
                    }
                }
                kind::PUSH_PROMISE => {
                    return Err(ConnError::protocol(
                        PROTOCOL_ERROR,
                        "the server pushed a stream, which cicada's settings forbid",
                    ));
                }
                kind::PRIORITY if payload.len() != 5 => {
                    return Err(ConnError::protocol(
                        FRAME_SIZE_ERROR,
                        "PRIORITY of the wrong size",
                    ));
                }
                // PRIORITY and frame types this code does not know are ignored (RFC 9113, 5.3.2 and 5.5).
                _ => {}
            }
        }
    }

    fn on_data(
        &mut self,
        active: Option<&mut Active>,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        // The whole payload counts against the windows, padding included.
        self.recv_unacked += payload.len() as u32;
        if self.recv_unacked > CONNECTION_WINDOW {
            return Err(ConnError::protocol(
                FLOW_CONTROL_ERROR,
                "the server sent more than the connection window",
            ));
        }
        if self.recv_unacked >= CONNECTION_WINDOW / 2 {
            frame_head(&mut self.write_buf, 4, kind::WINDOW_UPDATE, 0, 0);
            self.write_buf
                .extend_from_slice(&self.recv_unacked.to_be_bytes());
            self.recv_unacked = 0;
        }
        let data = strip_padding(payload, flags, false)?;
        // Data of a stream that is over (the rest of a body sent after its reset) only counted for the window.
        let Some(active) = active.filter(|a| !a.ended) else {
            return Ok(());
        };
        if active.head.is_none() {
            return Err(ConnError::protocol(
                PROTOCOL_ERROR,
                "DATA before the response's headers",
            ));
        }
        // A response to HEAD, a 204 or a 304 has no body: what comes (an empty DATA frame that ends the stream,
        // usually) is counted for the windows and dropped, as over HTTP/1.1.
        if let Some(body) = &mut active.body {
            body.push(data);
        }
        active.data_bytes += data.len() as u64;
        active.recv_unacked += payload.len() as u32;
        if active.recv_unacked > STREAM_WINDOW {
            return Err(ConnError::protocol(
                FLOW_CONTROL_ERROR,
                "the server sent more than the stream window",
            ));
        }
        if flags & END_STREAM != 0 {
            return end_stream(active);
        } else if active.recv_unacked >= STREAM_WINDOW / 2 {
            frame_head(&mut self.write_buf, 4, kind::WINDOW_UPDATE, 0, active.id);
            self.write_buf
                .extend_from_slice(&active.recv_unacked.to_be_bytes());
            active.recv_unacked = 0;
        }
        Ok(())
    }

    fn on_header_fragment(
        &mut self,
        active: Option<&mut Active>,
        stream_id: u32,
        flags: u8,
        fragment: &[u8],
    ) -> Result<(), ConnError> {
        let (ends_stream, block) = match self.partial_block.take() {
            Some((_, ends_stream, mut block)) => {
                block.extend_from_slice(fragment);
                (ends_stream, Cow::Owned(block))
            }
            None => (flags & END_STREAM != 0, Cow::Borrowed(fragment)),
        };
        if block.len() > MAX_HEADER_BLOCK {
            return Err(ConnError::protocol(
                PROTOCOL_ERROR,
                "a response header block larger than 80 KiB",
            ));
        }
        if flags & END_HEADERS == 0 {
            self.partial_block = Some((stream_id, ends_stream, block.into_owned()));
            return Ok(());
        }
        // Every block is decoded, whatever stream it belongs to: the decoder's table must follow the server's.
        let decoded = decode_block(&mut self.decoder, &block)?;
        let Some(active) = active.filter(|a| !a.ended) else {
            return Ok(());
        };
        if active.head.is_some() {
            // Trailers: read and dropped, as over HTTP/1.1.
            if !ends_stream {
                return Err(ConnError::protocol(
                    PROTOCOL_ERROR,
                    "trailers that do not end the stream",
                ));
            }
            return end_stream(active);
        }
        let (status, headers) = decoded?;
        if status.is_informational() {
            if ends_stream {
                return Err(ConnError::protocol(
                    PROTOCOL_ERROR,
                    "an informational response ended the stream",
                ));
            }
            return Ok(());
        }
        let has_body = !(active.head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED);
        if has_body {
            let encoding = if active.decode {
                headers
                    .first("content-encoding")
                    .and_then(Encoding::from_header)
            } else {
                None
            };
            active.body = Some(match encoding {
                Some(encoding) => Body::Decoded(Box::new(Decoder::new(encoding, active.max_body))),
                None => Body::Plain(Collector::new(active.max_body)),
            });
            active.expected_length = headers
                .first("content-length")
                .and_then(|value| std::str::from_utf8(value).ok())
                .and_then(|value| value.trim().parse().ok());
        }
        active.head = Some((status, headers));
        if ends_stream {
            return end_stream(active);
        }
        Ok(())
    }

    fn on_settings(
        &mut self,
        active: Option<&mut Active>,
        stream_id: u32,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        if stream_id != 0 {
            return Err(ConnError::protocol(PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            if !payload.is_empty() {
                return Err(ConnError::protocol(
                    FRAME_SIZE_ERROR,
                    "a SETTINGS acknowledgement with a payload",
                ));
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(ConnError::protocol(
                FRAME_SIZE_ERROR,
                "SETTINGS of the wrong size",
            ));
        }
        let mut window_change = 0;
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > MAX_WINDOW {
                        return Err(ConnError::protocol(
                            FLOW_CONTROL_ERROR,
                            "an initial window size over 2^31-1",
                        ));
                    }
                    window_change += i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(ConnError::protocol(
                            PROTOCOL_ERROR,
                            format!("a maximum frame size of {value}, outside 16384..=16777215"),
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                SETTINGS_HEADER_TABLE_SIZE => self.table_size_update = true,
                SETTINGS_ENABLE_PUSH if value != 0 => {
                    return Err(ConnError::protocol(
                        PROTOCOL_ERROR,
                        format!("the server set SETTINGS_ENABLE_PUSH to {value}"),
                    ));
                }
                // The header list limit is advisory and cicada opens one stream at a time: the other settings
                // change nothing here.
                _ => {}
            }
        }
        if let Some(active) = active {
            active.send_window += window_change;
            if active.send_window > MAX_WINDOW {
                return Err(ConnError::protocol(
                    FLOW_CONTROL_ERROR,
                    "a stream's send window went over 2^31-1",
                ));
            }
        }
        self.check_answers()?;
        frame_head(&mut self.write_buf, 0, kind::SETTINGS, ACK, 0);
        Ok(())
    }

    /// Refuses to queue another answer when the server asked for more than a flood's worth since the last write.
    fn check_answers(&self) -> Result<(), ConnError> {
        if self.write_buf.len() > MAX_PENDING_ANSWERS {
            return Err(ConnError::protocol(
                ENHANCE_YOUR_CALM,
                "the server sent PING or SETTINGS frames faster than they are answered",
            ));
        }
        Ok(())
    }

    fn reset_stream(&mut self, stream_id: u32, code: u32) {
        frame_head(&mut self.write_buf, 4, kind::RST_STREAM, 0, stream_id);
        self.write_buf.extend_from_slice(&code.to_be_bytes());
    }

    fn go_away(&mut self, code: u32) {
        frame_head(&mut self.write_buf, 8, kind::GOAWAY, 0, 0);
        self.write_buf.extend_from_slice(&0u32.to_be_bytes());
        self.write_buf.extend_from_slice(&code.to_be_bytes());
    }
}

/// Appends a request's HEADERS frame to `out` (and CONTINUATION frames for a block larger than `max_frame`),
/// starting with a dynamic table size update to 0 if `table_size_update`.
fn encode_headers(
    out: &mut Vec<u8>,
    max_frame: usize,
    request: &WireRequest<'_>,
    https: bool,
    stream_id: u32,
    ends_stream: bool,
    table_size_update: bool,
) {
    // After `release_buffers` the buffer starts empty: one allocation for a typical block.
    out.reserve(WRITE_BUF_START);
    let frame_at = out.len();
    out.extend_from_slice(&[0; 9]);
    if table_size_update {
        hpack::encode_int(out, 5, 0x20, 0);
    }
    match *request.method {
        Method::GET => encode_indexed(out, index::METHOD_GET),
        Method::POST => encode_indexed(out, index::METHOD_POST),
        ref other => encode_literal(out, index::METHOD_GET, other.as_str().as_bytes(), false),
    }
    encode_indexed(
        out,
        if https {
            index::SCHEME_HTTPS
        } else {
            index::SCHEME_HTTP
        },
    );
    if request.target == "/" {
        encode_indexed(out, index::PATH_ROOT);
    } else {
        encode_literal(out, index::PATH_ROOT, request.target.as_bytes(), false);
    }
    encode_literal(out, index::AUTHORITY, request.host.as_bytes(), false);
    if !request.headers.contains_key(header::USER_AGENT) {
        encode_literal(out, index::USER_AGENT, request.user_agent.as_bytes(), false);
    }
    if let Some(accept) = request.accept_encoding
        && !request.headers.contains_key(header::ACCEPT_ENCODING)
    {
        encode_literal(out, index::ACCEPT_ENCODING, accept.as_bytes(), false);
    }
    let own_auth = request.keep_own_auth && request.headers.contains_key(header::AUTHORIZATION);
    if let Some(auth) = request.auth
        && !own_auth
    {
        encode_literal(out, index::AUTHORIZATION, auth.as_bytes(), true);
    }
    for (name, value) in request.headers {
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || (name == header::AUTHORIZATION && !request.keep_own_auth)
            || is_connection_specific(name, value)
        {
            continue;
        }
        let value_bytes = value.as_bytes();
        if name == header::AUTHORIZATION || name == header::COOKIE || value.is_sensitive() {
            let name_index = match name.as_str() {
                "authorization" => index::AUTHORIZATION,
                "cookie" => index::COOKIE,
                _ => 0,
            };
            if name_index == 0 {
                encode_literal_named(out, name.as_str().as_bytes(), value_bytes, true);
            } else {
                encode_literal(out, name_index, value_bytes, true);
            }
            continue;
        }
        match name.as_str() {
            "accept" => encode_literal(out, index::ACCEPT, value_bytes, false),
            "content-type" => encode_literal(out, index::CONTENT_TYPE, value_bytes, false),
            "user-agent" => encode_literal(out, index::USER_AGENT, value_bytes, false),
            "accept-encoding" => encode_literal(out, index::ACCEPT_ENCODING, value_bytes, false),
            name => encode_literal_named(out, name.as_bytes(), value_bytes, false),
        }
    }
    if let Some(cookie) = request.cookie {
        encode_literal(out, index::COOKIE, cookie.as_bytes(), true);
    }
    let needs_length = !request.body.is_empty()
        || matches!(*request.method, Method::POST | Method::PUT | Method::PATCH);
    if needs_length {
        let length = super::h1::itoa(request.body.len() as u64);
        encode_literal(out, index::CONTENT_LENGTH, length.as_bytes(), false);
    }
    let block_length = out.len() - frame_at - 9;
    let end_stream = if ends_stream { END_STREAM } else { 0 };
    if block_length <= max_frame {
        let mut head = Vec::with_capacity(9);
        frame_head(
            &mut head,
            block_length,
            kind::HEADERS,
            END_HEADERS | end_stream,
            stream_id,
        );
        out[frame_at..frame_at + 9].copy_from_slice(&head);
        return;
    }
    let block = out.split_off(frame_at + 9);
    out.truncate(frame_at);
    let mut pieces = block.chunks(max_frame).peekable();
    let mut first = true;
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        let (frame_kind, mut flags) = if first {
            (kind::HEADERS, end_stream)
        } else {
            (kind::CONTINUATION, 0)
        };
        if last {
            flags |= END_HEADERS;
        }
        frame_head(out, piece.len(), frame_kind, flags, stream_id);
        out.extend_from_slice(piece);
        first = false;
    }
}

/// Marks the response complete, once its DATA add up to its Content-Length (RFC 9113, 8.1.1): a shorter body that
/// ends the stream is a truncated response, not a complete one.
fn end_stream(active: &mut Active) -> Result<(), ConnError> {
    if let Some(expected) = active.expected_length
        && expected != active.data_bytes
    {
        return Err(ConnError::protocol(
            PROTOCOL_ERROR,
            format!(
                "the response's body was {} bytes where its Content-Length says {expected}",
                active.data_bytes
            ),
        ));
    }
    active.ended = true;
    Ok(())
}

/// The payload of a DATA or HEADERS frame without its padding (and, for HEADERS, its priority fields).
fn strip_padding(payload: &[u8], flags: u8, headers: bool) -> Result<&[u8], ConnError> {
    let mut data = payload;
    let mut padding = 0;
    if flags & PADDED != 0 {
        let Some((&length, rest)) = data.split_first() else {
            return Err(ConnError::protocol(
                PROTOCOL_ERROR,
                "a padded frame without its pad length",
            ));
        };
        padding = usize::from(length);
        data = rest;
    }
    if headers && flags & PRIORITY != 0 {
        data = data.get(5..).ok_or_else(|| {
            ConnError::protocol(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
        })?;
    }
    if padding > data.len() {
        return Err(ConnError::protocol(
            PROTOCOL_ERROR,
            "padding longer than the frame",
        ));
    }
    Ok(&data[..data.len() - padding])
}

/// A response head decoded from its header block, or why it is malformed. The decoder's state is intact either
/// way; a malformed head fails the request (and, as cicada does not reset streams it reads, its connection).
type DecodedHead = Result<(StatusCode, Headers), ConnError>;

/// Decodes a complete header block. A block the decoder cannot read breaks the connection (COMPRESSION_ERROR).
fn decode_block(decoder: &mut hpack::Decoder, block: &[u8]) -> Result<DecodedHead, ConnError> {
    let mut head = Vec::with_capacity(block.len() * 2);
    let mut spans: Vec<(u32, u32, u32, u32)> = Vec::new();
    let mut status = None;
    let mut malformed: Option<String> = None;
    decoder
        .decode(
            block,
            &mut head,
            MAX_HEADER_LIST as usize,
            |head, name, value| {
                if name.is_empty() {
                    // A field name is a token: never empty.
                    malformed
                        .get_or_insert_with(|| "a response header with an empty name".to_string());
                    head.truncate(name.start);
                    return;
                }
                if head[name.start] != b':' {
                    spans.push((
                        name.start as u32,
                        name.end as u32,
                        value.start as u32,
                        value.end as u32,
                    ));
                    return;
                }
                if malformed.is_none() {
                    if &head[name.clone()] != b":status" || status.is_some() || !spans.is_empty() {
                        malformed = Some(format!(
                            "the response's pseudo-header `{}` is not allowed there",
                            String::from_utf8_lossy(&head[name.clone()])
                        ));
                    } else {
                        status = StatusCode::from_bytes(&head[value.clone()]).ok();
                        if status.is_none() {
                            malformed = Some(format!(
                                "the response's status `{}` is not a status code",
                                String::from_utf8_lossy(&head[value])
                            ));
                        }
                    }
                }
                head.truncate(name.start);
            },
        )
        .map_err(|error| {
            ConnError::protocol(
                COMPRESSION_ERROR,
                format!("the server's header block did not decode: {error}"),
            )
        })?;
    if let Some(reason) = malformed {
        return Ok(Err(ConnError::protocol(PROTOCOL_ERROR, reason)));
    }
    let Some(status) = status else {
        return Ok(Err(ConnError::protocol(
            PROTOCOL_ERROR,
            "a response without a :status",
        )));
    };
    Ok(Ok((status, Headers::new(bytes::Bytes::from(head), spans))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn user_agent() -> HeaderValue {
        HeaderValue::from_static("cicada-test")
    }

    /// Frames in `bytes`: (type, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while bytes.len() >= 9 {
            let length =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + length].to_vec()));
            bytes = &bytes[9 + length..];
        }
        assert!(bytes.is_empty(), "a partial frame at the end");
        out
    }

    /// The frames `encode_headers` writes for `request` (default frame size).
    fn encoded(
        request: &WireRequest<'_>,
        https: bool,
        stream_id: u32,
        ends_stream: bool,
        table_size_update: bool,
    ) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        encode_headers(
            &mut out,
            DEFAULT_MAX_FRAME,
            request,
            https,
            stream_id,
            ends_stream,
            table_size_update,
        );
        frames(&out)
    }

    /// Decoded by an independent implementation.
    fn decoded(block: &[u8]) -> Vec<(String, String)> {
        let mut decoder = loona_hpack::Decoder::new();
        decoder
            .decode(block)
            .unwrap()
            .into_iter()
            .map(|(name, value)| {
                (
                    String::from_utf8(name).unwrap(),
                    String::from_utf8(value).unwrap(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn request_headers_decode_to_what_the_request_says() {
        let mut headers = HeaderMap::new();
        headers.insert("x-trace", HeaderValue::from_static("abc"));
        headers.insert("accept", HeaderValue::from_static("text/html"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        headers.insert("host", HeaderValue::from_static("elsewhere"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        let agent = user_agent();
        let body = Bytes::from_static(b"{}");
        let accept_encoding = HeaderValue::from_static("gzip, br");
        let auth = HeaderValue::from_static("Basic dTpw");
        let mut request = WireRequest::get("/search?q=1", &headers, &agent, &body);
        let method = Method::POST;
        request.method = &method;
        request.accept_encoding = Some(&accept_encoding);
        request.auth = Some(&auth);
        request.cookie = Some("a=1; b=2");
        let sent = encoded(&request, true, 3, false, true);
        assert_eq!(sent.len(), 1);
        let (frame_kind, flags, stream, block) = &sent[0];
        assert_eq!(
            (*frame_kind, *flags, *stream),
            (kind::HEADERS, END_HEADERS, 3)
        );
        assert_eq!(block[0], 0x20, "a table size update to 0 comes first");
        assert_eq!(
            decoded(block),
            pairs(&[
                (":method", "POST"),
                (":scheme", "https"),
                (":path", "/search?q=1"),
                (":authority", "127.0.0.1:8080"),
                ("user-agent", "cicada-test"),
                ("accept-encoding", "gzip, br"),
                ("authorization", "Basic dTpw"),
                ("x-trace", "abc"),
                ("accept", "text/html"),
                ("content-type", "application/json"),
                ("te", "trailers"),
                ("cookie", "a=1; b=2"),
                ("content-length", "2"),
            ])
        );

        let none = HeaderMap::new();
        let empty = Bytes::new();
        let sent = encoded(
            &WireRequest::get("/", &none, &agent, &empty),
            false,
            1,
            true,
            false,
        );
        assert_eq!(sent[0].1, END_HEADERS | END_STREAM);
        assert_eq!(
            decoded(&sent[0].3),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "127.0.0.1:8080"),
                ("user-agent", "cicada-test"),
            ])
        );
        // Other methods and the request's own user agent.
        let mut own = HeaderMap::new();
        own.insert("user-agent", HeaderValue::from_static("mine"));
        let delete = Method::DELETE;
        let mut request = WireRequest::get("/x", &own, &agent, &empty);
        request.method = &delete;
        let block = &encoded(&request, false, 1, true, false)[0].3;
        assert_eq!(
            decoded(block),
            pairs(&[
                (":method", "DELETE"),
                (":scheme", "http"),
                (":path", "/x"),
                (":authority", "127.0.0.1:8080"),
                ("user-agent", "mine"),
            ])
        );
    }

    #[test]
    fn a_header_block_larger_than_a_frame_continues_in_continuation_frames() {
        let mut headers = HeaderMap::new();
        headers.insert("x-big", HeaderValue::from_str(&"v".repeat(40_000)).unwrap());
        let agent = user_agent();
        let empty = Bytes::new();
        let sent = encoded(
            &WireRequest::get("/", &headers, &agent, &empty),
            false,
            5,
            true,
            false,
        );
        assert_eq!(sent.len(), 3);
        assert_eq!((sent[0].0, sent[0].1), (kind::HEADERS, END_STREAM));
        assert_eq!((sent[1].0, sent[1].1), (kind::CONTINUATION, 0));
        assert_eq!((sent[2].0, sent[2].1), (kind::CONTINUATION, END_HEADERS));
        assert!(
            sent.iter()
                .all(|f| f.2 == 5 && f.3.len() <= DEFAULT_MAX_FRAME)
        );
        let block: Vec<u8> = sent.iter().flat_map(|f| f.3.clone()).collect();
        let fields = decoded(&block);
        assert_eq!(fields.last().unwrap().1.len(), 40_000);
    }

    /// The server's side of a scripted connection: reads the client's frames and writes whatever a test says.
    struct Peer {
        tcp: TcpStream,
        buf: Vec<u8>,
    }

    impl Peer {
        async fn frame(&mut self) -> (u8, u8, u32, Vec<u8>) {
            loop {
                if self.buf.len() >= 9 {
                    let length = usize::from(self.buf[0]) << 16
                        | usize::from(self.buf[1]) << 8
                        | usize::from(self.buf[2]);
                    if self.buf.len() >= 9 + length {
                        let frame = frames(&self.buf[..9 + length]).remove(0);
                        self.buf.drain(..9 + length);
                        return frame;
                    }
                }
                let mut chunk = [0u8; 4096];
                let read = self.tcp.read(&mut chunk).await.unwrap();
                assert!(read > 0, "the client closed the connection");
                self.buf.extend_from_slice(&chunk[..read]);
            }
        }

        /// The next frame of `frame_kind`, skipping others (SETTINGS acknowledgements, window updates).
        async fn next(&mut self, frame_kind: u8) -> (u8, u32, Vec<u8>) {
            loop {
                let (kind_read, flags, stream, payload) = self.frame().await;
                if kind_read == frame_kind {
                    return (flags, stream, payload);
                }
            }
        }

        async fn send(&mut self, frame_kind: u8, flags: u8, stream: u32, payload: &[u8]) {
            let mut out = Vec::new();
            frame_head(&mut out, payload.len(), frame_kind, flags, stream);
            out.extend_from_slice(payload);
            self.tcp.write_all(&out).await.unwrap();
        }

        /// A response head with a status and one header, as literal fields.
        async fn head(&mut self, stream: u32, status: &str, flags: u8) {
            let mut block = Vec::new();
            encode_literal(&mut block, index::STATUS_200, status.as_bytes(), false);
            encode_literal_named(&mut block, b"x-server", b"scripted", false);
            self.send(kind::HEADERS, END_HEADERS | flags, stream, &block)
                .await;
        }
    }

    /// A connection to a scripted server on 127.0.0.1; the server has read the client's preface.
    async fn scripted() -> (H2Conn, impl Future<Output = Peer>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let conn = H2Conn::new(Stream::Plain(tcp));
        let peer = async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut peer = Peer {
                tcp,
                buf: Vec::new(),
            };
            while peer.buf.len() < PREFACE.len() {
                let mut chunk = [0u8; 4096];
                let read = peer.tcp.read(&mut chunk).await.unwrap();
                assert!(read > 0);
                peer.buf.extend_from_slice(&chunk[..read]);
            }
            assert_eq!(&peer.buf[..PREFACE.len()], PREFACE);
            peer.buf.drain(..PREFACE.len());
            let (settings_flags, _, _) = peer.next(kind::SETTINGS).await;
            assert_eq!(settings_flags, 0);
            peer
        };
        (conn, peer)
    }

    /// A scripted connection that has carried one GET, answered by `status` with no body; the server's side is
    /// handed back for what the test does next.
    async fn after_one_exchange(status: &'static str) -> (H2Conn, Peer) {
        let (mut conn, peer) = scripted().await;
        let server = tokio::spawn(async move {
            let mut peer = peer.await;
            peer.next(kind::HEADERS).await;
            peer.head(1, status, END_STREAM).await;
            peer
        });
        send_get(&mut conn).await.map_err(message).unwrap();
        (conn, server.await.unwrap())
    }

    async fn send_get(conn: &mut H2Conn) -> Result<Exchange, SendFailure> {
        let headers = HeaderMap::new();
        let agent = user_agent();
        let body = Bytes::new();
        conn.send(
            &WireRequest::get("/", &headers, &agent, &body),
            false,
            1 << 20,
            true,
        )
        .await
    }

    fn message(failure: SendFailure) -> (bool, String) {
        match failure {
            SendFailure::Unsent(error) => (true, error.to_string()),
            SendFailure::Failed(error) => (false, error.to_string()),
        }
    }

    #[tokio::test]
    async fn padded_continued_and_split_responses_are_read_and_pings_answered() {
        let (mut conn, peer) = scripted().await;
        let server = tokio::spawn(async move {
            let mut peer = peer.await;
            let (flags, stream, _) = peer.next(kind::HEADERS).await;
            assert_eq!((flags, stream), (END_HEADERS | END_STREAM, 1));
            peer.send(kind::SETTINGS, 0, 0, &[0, 5, 0, 0, 0x80, 0])
                .await;
            peer.send(kind::PING, 0, 0, b"12345678").await;
            // An informational head first, then the real one split over HEADERS (padded, with priority) and
            // CONTINUATION.
            peer.head(1, "103", 0).await;
            let mut block = Vec::new();
            encode_indexed(&mut block, index::STATUS_200);
            encode_literal_named(&mut block, b"x-first", b"1", false);
            let mut rest = Vec::new();
            encode_literal_named(&mut rest, b"x-second", b"2", false);
            let mut headers = vec![3u8, 0, 0, 0, 0, 16];
            headers.extend_from_slice(&block);
            headers.extend_from_slice(&[0, 0, 0]);
            peer.send(kind::HEADERS, PADDED | PRIORITY, 1, &headers)
                .await;
            peer.send(kind::CONTINUATION, END_HEADERS, 1, &rest).await;
            peer.send(kind::DATA, PADDED, 1, &[2, b'a', b'b', 0, 0])
                .await;
            peer.send(kind::DATA, 0, 1, b"cd").await;
            peer.send(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 9]).await;
            peer.send(0xee, 0, 0, b"an extension frame").await;
            // Trailers end the stream.
            let mut trailers = Vec::new();
            encode_literal_named(&mut trailers, b"x-checksum", b"ok", false);
            peer.send(kind::HEADERS, END_HEADERS | END_STREAM, 1, &trailers)
                .await;
            let (flags, _, payload) = peer.next(kind::PING).await;
            assert_eq!((flags, payload.as_slice()), (ACK, &b"12345678"[..]));
            peer
        });
        let exchange = send_get(&mut conn).await.map_err(message).unwrap();
        assert_eq!(exchange.status, StatusCode::OK);
        assert_eq!(exchange.headers.first("x-first"), Some(&b"1"[..]));
        assert_eq!(exchange.headers.first("x-second"), Some(&b"2"[..]));
        assert_eq!(exchange.headers.first("x-checksum"), None);
        assert_eq!(&exchange.body[..], b"abcd");
        assert_eq!(conn.peer_max_frame, 0x8000);
        assert!(conn.is_reusable());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_request_the_server_never_processed_is_unsent() {
        // GOAWAY that excludes the stream, and REFUSED_STREAM: both say the request may go elsewhere.
        for refuse in [kind::GOAWAY, kind::RST_STREAM] {
            let (mut conn, peer) = scripted().await;
            let server = tokio::spawn(async move {
                let mut peer = peer.await;
                peer.next(kind::HEADERS).await;
                if refuse == kind::GOAWAY {
                    peer.send(kind::GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0])
                        .await;
                } else {
                    peer.send(kind::RST_STREAM, 0, 1, &REFUSED_STREAM.to_be_bytes())
                        .await;
                }
                peer
            });
            let (unsent, text) = message(send_get(&mut conn).await.err().unwrap());
            assert!(unsent, "{text}");
            // A refused stream leaves the connection usable; a GOAWAY does not.
            assert_eq!(conn.is_reusable(), refuse == kind::RST_STREAM);
            drop(server.await.unwrap());
        }
        // A reset after the head is a failure of the request.
        let (mut conn, peer) = scripted().await;
        let server = tokio::spawn(async move {
            let mut peer = peer.await;
            peer.next(kind::HEADERS).await;
            peer.head(1, "200", 0).await;
            peer.send(kind::RST_STREAM, 0, 1, &2u32.to_be_bytes()).await;
            peer
        });
        let (unsent, text) = message(send_get(&mut conn).await.err().unwrap());
        assert!(!unsent);
        assert!(text.contains("INTERNAL_ERROR"), "{text}");
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn protocol_errors_fail_the_request_and_tell_the_server() {
        let (mut conn, peer) = scripted().await;
        let server = tokio::spawn(async move {
            let mut peer = peer.await;
            peer.next(kind::HEADERS).await;
            // A frame over the 16 KiB cicada advertises.
            peer.send(kind::DATA, 0, 1, &vec![0; MAX_FRAME + 1]).await;
            let (_, _, payload) = peer.next(kind::GOAWAY).await;
            assert_eq!(payload[4..8], FRAME_SIZE_ERROR.to_be_bytes());
        });
        let (unsent, text) = message(send_get(&mut conn).await.err().unwrap());
        assert!(!unsent);
        assert!(text.contains("FRAME_SIZE_ERROR"), "{text}");
        assert!(!conn.is_reusable());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn request_bodies_wait_for_the_server_s_windows() {
        let (mut conn, peer) = scripted().await;
        let server = tokio::spawn(async move {
            let mut peer = peer.await;
            // Ten bytes per stream until the server says more; the client learns it with the first response.
            peer.next(kind::HEADERS).await;
            peer.send(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 10]).await;
            peer.head(1, "200", END_STREAM).await;
            let (_, stream, _) = peer.next(kind::HEADERS).await;
            assert_eq!(stream, 3);
            let mut received = Vec::new();
            let mut windows = 0;
            loop {
                let (flags, stream, payload) = peer.next(kind::DATA).await;
                assert_eq!(stream, 3);
                assert!(payload.len() <= 10, "a frame larger than the window");
                received.extend_from_slice(&payload);
                if flags & END_STREAM != 0 {
                    break;
                }
                windows += 1;
                peer.send(kind::WINDOW_UPDATE, 0, 3, &10u32.to_be_bytes())
                    .await;
            }
            assert_eq!(received.len(), 95);
            assert_eq!(windows, 9);
            peer.head(3, "201", END_STREAM).await;
            peer
        });
        send_get(&mut conn).await.map_err(message).unwrap();
        let headers = HeaderMap::new();
        let agent = user_agent();
        let body = Bytes::from(vec![b'z'; 95]);
        let method = Method::POST;
        let mut request = WireRequest::get("/upload", &headers, &agent, &body);
        request.method = &method;
        let exchange = conn
            .send(&request, false, 1024, true)
            .await
            .map_err(message)
            .unwrap();
        assert_eq!(exchange.status, StatusCode::CREATED);
        assert!(exchange.body.is_empty());
        assert!(conn.is_reusable());
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn what_the_server_sends_while_the_connection_is_idle_is_handled_at_checkout() {
        let (mut conn, mut peer) = after_one_exchange("204").await;
        conn.release_buffers();
        peer.send(kind::PING, 0, 0, b"idle-png").await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(conn.still_open(), "a PING keeps the connection");
        // The acknowledgement goes out with the next request.
        let server = tokio::spawn(async move {
            let (flags, _, payload) = peer.next(kind::PING).await;
            assert_eq!((flags, payload.as_slice()), (ACK, &b"idle-png"[..]));
            let (_, stream, _) = peer.next(kind::HEADERS).await;
            assert_eq!(stream, 3);
            peer.head(3, "200", END_STREAM).await;
            peer
        });
        send_get(&mut conn).await.map_err(message).unwrap();
        let mut peer = server.await.unwrap();
        peer.send(kind::GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0])
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!conn.still_open(), "a GOAWAY ends the connection's use");
        drop(peer);
    }

    #[tokio::test]
    async fn a_server_that_closed_while_idle_is_noticed_at_checkout() {
        let (mut conn, peer) = after_one_exchange("200").await;
        drop(peer);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!conn.still_open());
    }

    /// Against the `h2` crate's server: a response body four times the stream window and a quarter over the
    /// connection window arrives whole, so the window updates went out.
    #[tokio::test]
    async fn response_bodies_larger_than_the_windows_arrive_whole() {
        const SIZE: usize = 1300 * 1024;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(tcp).await.unwrap();
            while let Some(Ok((_, mut respond))) = connection.accept().await {
                tokio::spawn(async move {
                    let mut send = respond
                        .send_response(http::Response::new(()), false)
                        .unwrap();
                    let mut left = SIZE;
                    while left > 0 {
                        let piece = left.min(10_000);
                        send.reserve_capacity(piece);
                        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx))
                            .await
                            .unwrap()
                            .unwrap();
                        let piece = piece.min(granted);
                        left -= piece;
                        send.send_data(Bytes::from(vec![b'q'; piece]), left == 0)
                            .unwrap();
                    }
                });
            }
        });
        let tcp = TcpStream::connect(address).await.unwrap();
        let mut conn = H2Conn::new(Stream::Plain(tcp));
        for _ in 0..2 {
            let exchange =
                tokio::time::timeout(std::time::Duration::from_secs(20), send_get(&mut conn))
                    .await
                    .expect("the body arrived in time")
                    .map_err(message)
                    .unwrap();
            assert_eq!(exchange.content_length, SIZE as u64);
            assert!(exchange.body.iter().all(|&b| b == b'q'));
        }
        assert!(conn.is_reusable());
    }

    #[tokio::test]
    async fn malformed_responses_fail_the_request_without_a_panic() {
        // An empty header name, a body shorter than its Content-Length, a GOAWAY that disowns a stream it answered.
        for case in 0..3 {
            let (mut conn, peer) = scripted().await;
            let server = tokio::spawn(async move {
                let mut peer = peer.await;
                peer.next(kind::HEADERS).await;
                match case {
                    0 => peer.send(kind::HEADERS, END_HEADERS, 1, &[0, 0, 0]).await,
                    1 => {
                        let mut block = Vec::new();
                        encode_indexed(&mut block, index::STATUS_200);
                        encode_literal(&mut block, index::CONTENT_LENGTH, b"10", false);
                        peer.send(kind::HEADERS, END_HEADERS, 1, &block).await;
                        peer.send(kind::DATA, END_STREAM, 1, b"short").await;
                    }
                    _ => {
                        peer.head(1, "200", 0).await;
                        peer.send(kind::GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0])
                            .await;
                    }
                }
                peer
            });
            let (unsent, text) = message(send_get(&mut conn).await.err().unwrap());
            assert!(
                !unsent,
                "case {case}: a request the server answered is not unsent: {text}"
            );
            let expected = ["empty name", "Content-Length says 10", "GOAWAY"][case];
            assert!(text.contains(expected), "case {case}: {text}");
            drop(server.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_server_that_lowers_its_table_size_gets_a_size_update_on_the_next_block() {
        let (mut conn, peer) = scripted().await;
        let server = tokio::spawn(async move {
            let mut peer = peer.await;
            let (_, _, first) = peer.next(kind::HEADERS).await;
            assert_eq!(first[0], 0x20, "the connection's first block");
            peer.send(kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 0, 0]).await;
            peer.head(1, "200", END_STREAM).await;
            let (_, _, second) = peer.next(kind::HEADERS).await;
            assert_eq!(second[0], 0x20, "the first block after the new size");
            peer.head(3, "200", END_STREAM).await;
            let (_, _, third) = peer.next(kind::HEADERS).await;
            assert_eq!(third[0], 0x82, "no update when nothing changed");
            peer.head(5, "200", END_STREAM).await;
            peer
        });
        for _ in 0..3 {
            send_get(&mut conn).await.map_err(message).unwrap();
        }
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn a_flood_of_pings_while_idle_ends_the_connection_s_use() {
        let (mut conn, mut peer) = after_one_exchange("200").await;
        let mut flood = Vec::new();
        for _ in 0..2_000 {
            frame_head(&mut flood, 8, kind::PING, 0, 0);
            flood.extend_from_slice(b"pingpong");
        }
        peer.tcp.write_all(&flood).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!conn.still_open());
        assert!(conn.write_buf.len() <= MAX_PENDING_ANSWERS + 17);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_header_blocks_never_panic_the_head_decoder(
            block in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let mut decoder = hpack::Decoder::new(HEADER_TABLE_SIZE);
            let _ = decode_block(&mut decoder, &block);
            // Blocks that are valid HPACK but odd responses: empty names and values, pseudo-headers anywhere.
            let mut fields = Vec::new();
            for chunk in block.chunks(3) {
                fields.push(0x40);
                hpack::encode_string(&mut fields, &chunk[..chunk.len().min(1)]);
                hpack::encode_string(&mut fields, &chunk[chunk.len().min(1)..]);
            }
            let _ = decode_block(&mut decoder, &fields);
        }
    }
}
