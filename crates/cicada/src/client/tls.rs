//! cicada's client TLS stream: rustls' unbuffered API over a `TcpStream`, holding no heap buffer while idle.
//!
//! rustls' buffered `ClientConnection` (what tokio-rustls wraps) keeps a record buffer of 4 KiB or more for as long
//! as the connection lives, the largest piece of an idle TLS user's memory. Here cicada owns the TLS bytes: records
//! are read from the socket into a per-thread scratch buffer, decrypted there, and their plaintext is copied
//! straight into the reader's buffer; writes are encrypted into a second per-thread scratch buffer and written to
//! the socket from it. Only what cannot be handed on within one poll goes to the heap: plaintext the reader had no
//! room for, the bytes of a record that has not fully arrived, and the unsent tail of a write. Each of those is
//! freed as soon as it is empty, so a connection between requests holds no buffer (bounds in
//! docs/resource-guard.md).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ClientConfig;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::scratch::with_scratch;
use super::sessions::UserSessionStore;

/// Largest TLS record on the wire: a 5-byte header and 16 KiB of payload plus 2 KiB for the cipher's overhead
/// (rustls refuses a record announcing more).
const MAX_RECORD: usize = 5 + 16_384 + 2_048;
/// Most bytes one read from the socket brings: a largest record and room for the start of the next, so one read can
/// bring several small records, and what the reader has no room for stays small.
const READ_PER_POLL: usize = 24 * 1024;
const _: () = assert!(
    READ_PER_POLL > MAX_RECORD,
    "one read must be able to bring a whole record"
);
/// Per-thread buffer incoming records are read into and decrypted in: what rustls keeps of a handshake message still
/// arriving (at most 64 KiB, its limit) and one read more.
const READ_SCRATCH_LEN: usize = 0xffff + READ_PER_POLL;
/// Plaintext encrypted per write: one full record, so that a request of up to 16 KiB, however many slices it is
/// written in, goes out as one record in one syscall.
const PLAINTEXT_PER_WRITE: usize = 16_384;
/// Room for one sealed record (header, content type, tag) and a KeyUpdate or alert rustls queued ahead of it.
const SEALED_PER_WRITE: usize = PLAINTEXT_PER_WRITE + 1024;

thread_local! {
    /// Where this thread's TLS streams read and decrypt records (see [`READ_SCRATCH_LEN`]).
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(Box::default());
    /// Where this thread's TLS streams gather and encrypt what they write ([`PLAINTEXT_PER_WRITE`] of gathered
    /// plaintext, then [`SEALED_PER_WRITE`] of records).
    static WRITE_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(Box::default());
}

/// What went wrong on a TLS stream. Kept by the stream once it happened: every later read or write reports it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TlsError {
    /// rustls refused what the server sent or could not go on: a certificate, an alert from the server, a record
    /// that does not decrypt, garbage that is not TLS.
    #[error("TLS error: {0}")]
    Protocol(#[from] rustls::Error),
    #[error("the server closed the connection during the TLS handshake")]
    HandshakeEof,
    #[error(
        "the server closed the connection without a TLS close_notify, so what it sent last may be cut short"
    )]
    NoCloseNotify,
    #[error("the server closed the connection in the middle of a TLS record")]
    TruncatedRecord,
    #[error("the server sent a TLS handshake message larger than the {0} bytes a connection keeps")]
    Oversized(usize),
    #[error("the TLS connection is closed")]
    Closed,
}

impl TlsError {
    fn to_io(&self) -> io::Error {
        let kind = match self {
            TlsError::HandshakeEof | TlsError::NoCloseNotify | TlsError::TruncatedRecord => {
                io::ErrorKind::UnexpectedEof
            }
            TlsError::Closed => io::ErrorKind::BrokenPipe,
            TlsError::Protocol(_) | TlsError::Oversized(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self.clone())
    }

    /// The error as the handshake reports it: a rustls error as rustls words it, since the caller says it is TLS
    /// ("TLS handshake with X failed: invalid peer certificate: UnknownIssuer").
    fn into_handshake_io(self) -> io::Error {
        match self {
            TlsError::Protocol(error) => io::Error::new(io::ErrorKind::InvalidData, error),
            other => other.to_io(),
        }
    }
}

/// A client TLS connection over TCP. Its heap buffers are empty (unallocated) between requests; while in use each
/// is bounded: `incoming` by [`READ_SCRATCH_LEN`] (a handshake message rustls is still joining; otherwise less than
/// a record), `plaintext` by [`READ_PER_POLL`] and a record, `outgoing` by [`SEALED_PER_WRITE`] (or a handshake
/// flight).
pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedClientConnection,
    /// Received bytes rustls has not discarded yet: a record that has not fully arrived, or the records of a
    /// handshake message still arriving.
    incoming: Vec<u8>,
    /// Decrypted bytes the reader had no room for, from `plaintext_read` on.
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// Encrypted bytes not yet written to the socket, from `outgoing_sent` on. Written before anything new.
    outgoing: Vec<u8>,
    outgoing_sent: usize,
    /// The server sent close_notify: reads end (EOF) once `plaintext` is read.
    peer_closed: bool,
    /// close_notify is queued in `outgoing` (or sent): nothing more may be written.
    close_notify_queued: bool,
    failure: Option<TlsError>,
    /// The user's own TLS sessions, current on the thread whenever rustls works on this connection (see
    /// [`super::sessions`]); `None` when the configuration's store is its own.
    sessions: Option<Arc<UserSessionStore>>,
}

/// Performs a TLS handshake over `tcp` with `config` (certificate checks, ALPN, session resumption) for
/// `server_name`.
#[cfg(test)]
pub(crate) async fn connect(
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    tcp: TcpStream,
) -> io::Result<Box<TlsStream>> {
    connect_with_sessions(config, server_name, tcp, None).await
}

/// [`connect`], with `sessions` current on the thread whenever rustls works on the connection (a configuration made
/// by [`super::sessions::routed_config`] finds them there).
pub(crate) async fn connect_with_sessions(
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    tcp: TcpStream,
    sessions: Option<Arc<UserSessionStore>>,
) -> io::Result<Box<TlsStream>> {
    let previous = super::sessions::enter(sessions);
    let conn = UnbufferedClientConnection::new(config, server_name);
    let sessions = super::sessions::leave(previous);
    let conn = conn.map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    // Boxed from the start: the connection's one long-lived allocation is made before the handshake's short-lived
    // ones (fewer holes in the heap once they are freed), and the future of `connect` stays small.
    let mut stream = Box::new(TlsStream {
        tcp,
        conn,
        incoming: Vec::new(),
        plaintext: Vec::new(),
        plaintext_read: 0,
        outgoing: Vec::new(),
        outgoing_sent: 0,
        peer_closed: false,
        close_notify_queued: false,
        failure: None,
        sessions,
    });
    // The handshake runs through the same per-thread buffer as reads later on: a connection being set up keeps on
    // the heap only what rustls has not finished with (the records of a handshake message still arriving).
    let handshake = std::future::poll_fn(|cx| stream.poll_handshake(cx)).await;
    if let Err(error) = handshake {
        return Err(match stream.failure.take() {
            Some(failure) => {
                // Tell the server why, if the socket takes the alert now; the connection is over either way.
                let _ = stream
                    .tcp
                    .try_write(&stream.outgoing[stream.outgoing_sent..]);
                failure.into_handshake_io()
            }
            None => error,
        });
    }
    Ok(stream)
}

impl TlsStream {
    /// The protocol the server chose by ALPN (`h2`, `http/1.1`), if any.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Whether the handshake was full or resumed a session.
    #[cfg(test)]
    pub(crate) fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        self.conn.handshake_kind()
    }

    /// The TLS version negotiated.
    #[cfg(test)]
    pub(crate) fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Bytes this stream holds on the heap in its own buffers (rustls' connection state aside); 0 between requests.
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }

    /// Runs rustls over `incoming` until it needs more bytes from the server or is ready for our data, handling
    /// everything in between: decrypted data goes to `reader` while it has room, then to `self.plaintext`;
    /// handshake messages, KeyUpdates and alerts rustls wants sent go to `self.outgoing`. When ready for our data,
    /// `on_writable` runs with it. Returns how many bytes at the front of `incoming` are done with (the caller
    /// removes them before the next call, as rustls requires) and what `on_writable` returned.
    fn drive<R>(
        &mut self,
        incoming: &mut [u8],
        reader: Option<&mut ReadBuf<'_>>,
        on_writable: impl FnMut(&mut WriteTraffic<'_, ClientConnectionData>, &mut Vec<u8>) -> R,
    ) -> Result<(usize, Option<R>), TlsError> {
        // Moved, not cloned, in and out of the thread's slot: no reference counting per read.
        let previous = super::sessions::enter(self.sessions.take());
        let driven = self.drive_records(incoming, reader, on_writable);
        self.sessions = super::sessions::leave(previous);
        driven
    }

    fn drive_records<R>(
        &mut self,
        incoming: &mut [u8],
        mut reader: Option<&mut ReadBuf<'_>>,
        mut on_writable: impl FnMut(&mut WriteTraffic<'_, ClientConnectionData>, &mut Vec<u8>) -> R,
    ) -> Result<(usize, Option<R>), TlsError> {
        let mut consumed = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut incoming[consumed..]);
            let state = match state {
                Ok(state) => state,
                Err(error) => {
                    consumed += discard;
                    self.queue_alert(&mut incoming[consumed..]);
                    return Err(self.fail(error.into()));
                }
            };
            let mut written = None;
            let go_on = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(TlsError::from);
                        let record = match record {
                            Ok(record) => record,
                            Err(error) => {
                                self.failure = Some(error.clone());
                                return Err(error);
                            }
                        };
                        discard += record.discard;
                        deliver(
                            record.payload,
                            &mut reader,
                            &mut self.plaintext,
                            self.plaintext_read,
                        );
                    }
                    true
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let encoded = append_encoded(
                        &mut self.outgoing,
                        |out| encode.encode(out),
                        |error| match error {
                            EncodeError::InsufficientSize(size) => Some(size.required_size),
                            _ => None,
                        },
                    );
                    if let Err(error) = encoded {
                        let error = TlsError::from(rustls::Error::General(error.to_string()));
                        self.failure = Some(error.clone());
                        return Err(error);
                    }
                    true
                }
                // What it asks to send is already queued in `outgoing`, which goes out before anything else.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    true
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    true
                }
                ConnectionState::Closed => {
                    self.peer_closed = true;
                    false
                }
                ConnectionState::WriteTraffic(mut writable) => {
                    written = Some(on_writable(&mut writable, &mut self.outgoing));
                    false
                }
                ConnectionState::BlockedHandshake => false,
                // Early data is a server's state; any state a later rustls adds is not one cicada knows to handle.
                other => {
                    let error = TlsError::Protocol(rustls::Error::General(format!(
                        "unexpected TLS connection state {other:?}"
                    )));
                    self.failure = Some(error.clone());
                    return Err(error);
                }
            };
            consumed += discard;
            if !go_on {
                return Ok((consumed, written));
            }
        }
    }

    /// [`Self::drive`] over the bytes kept from earlier reads (rustls must see again what it has not discarded),
    /// removing what it is done with.
    fn drive_kept<R>(
        &mut self,
        on_writable: impl FnMut(&mut WriteTraffic<'_, ClientConnectionData>, &mut Vec<u8>) -> R,
    ) -> Result<Option<R>, TlsError> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let driven = self.drive(&mut incoming, None, on_writable);
        if let Ok((consumed, _)) = &driven {
            incoming.drain(..*consumed);
        }
        if !incoming.is_empty() {
            self.incoming = incoming;
        }
        driven.map(|(_, written)| written)
    }

    /// After rustls failed on what the server sent, queues the alert it prepared for the server, if any.
    fn queue_alert(&mut self, incoming: &mut [u8]) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
            let _ = append_encoded(
                &mut self.outgoing,
                |out| encode.encode(out),
                |error| match error {
                    EncodeError::InsufficientSize(size) => Some(size.required_size),
                    _ => None,
                },
            );
        }
    }

    fn fail(&mut self, error: TlsError) -> TlsError {
        self.failure = Some(error.clone());
        error
    }

    /// Sends what rustls queued and reads what the server sent until the handshake is done.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send_queued(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.peer_closed {
                return Poll::Ready(Err(self.fail(TlsError::HandshakeEof).to_io()));
            }
            let mut no_reader = ReadBuf::new(&mut []);
            ready!(with_scratch(&READ_SCRATCH, READ_SCRATCH_LEN, |scratch| {
                self.read_records(cx, &mut no_reader, scratch)
            }))?;
        }
    }

    /// Copies plaintext kept from an earlier poll to `buf`. Returns whether there was any.
    fn take_leftover(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let left = &self.plaintext[self.plaintext_read..];
        if left.is_empty() {
            return false;
        }
        let take = left.len().min(buf.remaining());
        buf.put_slice(&left[..take]);
        self.plaintext_read += take;
        if self.plaintext_read == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plaintext_read = 0;
        }
        true
    }

    fn poll_read_plaintext(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 || self.take_leftover(buf) {
            return Poll::Ready(Ok(()));
        }
        if let Some(failure) = &self.failure {
            return Poll::Ready(Err(failure.to_io()));
        }
        if self.peer_closed {
            return Poll::Ready(Ok(()));
        }
        let polled = with_scratch(&READ_SCRATCH, READ_SCRATCH_LEN, |scratch| {
            self.read_records(cx, buf, scratch)
        });
        if !self.outgoing.is_empty() {
            // Something rustls answers with (an alert) while we read: sent when the socket takes it, and in any
            // case before the next write.
            let _ = self.poll_send_queued(cx);
        }
        polled
    }

    /// Reads records from the socket into `scratch` until some plaintext reached `buf`, the server closed, or the
    /// socket has nothing more (while connecting: until rustls has something to send or is done); keeps what rustls
    /// has not finished with (the start of a record, the records of a handshake message still arriving) in
    /// `self.incoming`.
    fn read_records(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        scratch: &mut [u8],
    ) -> Poll<io::Result<()>> {
        // `incoming` was kept from a buffer of this size, so it fits.
        let mut end = self.incoming.len();
        scratch[..end].copy_from_slice(&self.incoming);
        self.incoming = Vec::new();
        let filled_before = buf.filled().len();
        let connecting = self.conn.is_handshaking();
        let mut start = 0;
        let polled = loop {
            match self.drive(&mut scratch[start..end], Some(&mut *buf), |_, _| ()) {
                Ok((consumed, _)) => start += consumed,
                // Plaintext of the records before the failure is still the server's: the reader gets it first,
                // and the failure (kept) with its next read.
                Err(_) if buf.filled().len() > filled_before => break Poll::Ready(Ok(())),
                Err(error) => break Poll::Ready(Err(error.to_io())),
            }
            if buf.filled().len() > filled_before || self.peer_closed {
                break Poll::Ready(Ok(()));
            }
            // While connecting: back to the handshake once rustls has something to send or is done.
            if connecting && (!self.outgoing.is_empty() || !self.conn.is_handshaking()) {
                break Poll::Ready(Ok(()));
            }
            if start > 0 {
                scratch.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            if end == scratch.len() {
                // Only a handshake message spread over many records can fill the buffer: rustls keeps those
                // records until the message is whole.
                let error = self.fail(TlsError::Oversized(scratch.len()));
                break Poll::Ready(Err(error.to_io()));
            }
            let read_end = scratch.len().min(end + READ_PER_POLL);
            let mut read_buf = ReadBuf::new(&mut scratch[end..read_end]);
            match Pin::new(&mut self.tcp).poll_read(cx, &mut read_buf) {
                Poll::Pending => break Poll::Pending,
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {
                    let read = read_buf.filled().len();
                    if read == 0 {
                        let error = if self.conn.is_handshaking() {
                            TlsError::HandshakeEof
                        } else if end > start {
                            TlsError::TruncatedRecord
                        } else {
                            TlsError::NoCloseNotify
                        };
                        let error = self.fail(error);
                        break Poll::Ready(Err(error.to_io()));
                    }
                    end += read;
                }
            }
        };
        if end > start {
            self.incoming = scratch[start..end].to_vec();
        }
        polled
    }

    /// Writes what is left of `outgoing` to the socket; frees it once all is written.
    fn poll_send_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_sent < self.outgoing.len() {
            let written = ready!(
                Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.outgoing_sent..])
            )?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing_sent += written;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.outgoing_sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_plaintext(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(failure) = &self.failure {
            return Poll::Ready(Err(failure.to_io()));
        }
        if self.close_notify_queued {
            return Poll::Ready(Err(TlsError::Closed.to_io()));
        }
        ready!(self.poll_send_queued(cx))?;
        let total: usize = bufs.iter().map(|slice| slice.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        // Encrypt only once the socket takes bytes, so that a full socket keeps no sealed record on the heap.
        ready!(self.tcp.poll_write_ready(cx))?;
        with_scratch(
            &WRITE_SCRATCH,
            PLAINTEXT_PER_WRITE + SEALED_PER_WRITE,
            |scratch| self.write_record(cx, bufs, total, scratch),
        )
    }

    /// Encrypts up to one record of `bufs` (gathered into one record when they are several slices) and writes it;
    /// what the socket does not take now is kept in `outgoing`.
    fn write_record(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
        total: usize,
        scratch: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let (gather, sealed) = scratch.split_at_mut(PLAINTEXT_PER_WRITE);
        let take = total.min(PLAINTEXT_PER_WRITE);
        let plaintext: &[u8] = match bufs.iter().find(|slice| !slice.is_empty()) {
            Some(first) if first.len() >= take => &first[..take],
            _ => {
                let mut filled = 0;
                for slice in bufs {
                    let part = slice.len().min(take - filled);
                    gather[filled..filled + part].copy_from_slice(&slice[..part]);
                    filled += part;
                    if filled == take {
                        break;
                    }
                }
                &gather[..take]
            }
        };
        let driven =
            self.drive_kept(|writable, outgoing| encrypt(writable, plaintext, sealed, outgoing));
        let sealed_len = match driven {
            Ok(Some(Ok(sealed_len))) => sealed_len,
            Ok(Some(Err(error))) => {
                let error = self.fail(TlsError::Protocol(rustls::Error::General(
                    error.to_string(),
                )));
                return Poll::Ready(Err(error.to_io()));
            }
            // rustls will not take our data: the connection is closed.
            Ok(None) => return Poll::Ready(Err(TlsError::Closed.to_io())),
            Err(error) => return Poll::Ready(Err(error.to_io())),
        };
        if !self.outgoing.is_empty() {
            // Something was queued ahead of this record (or it did not fit the scratch): keep the order.
            self.outgoing.extend_from_slice(&sealed[..sealed_len]);
            return match self.poll_send_queued(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                _ => Poll::Ready(Ok(take)),
            };
        }
        match Pin::new(&mut self.tcp).poll_write(cx, &sealed[..sealed_len]) {
            Poll::Ready(Ok(written)) => {
                if written < sealed_len {
                    self.outgoing = sealed[written..sealed_len].to_vec();
                }
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            // The record is sealed (its sequence number used): it goes out with the next write or flush.
            Poll::Pending => self.outgoing = sealed[..sealed_len].to_vec(),
        }
        Poll::Ready(Ok(take))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_notify_queued && self.failure.is_none() {
            self.close_notify_queued = true;
            let queued = self.drive_kept(|writable, outgoing| {
                append_encoded(
                    outgoing,
                    |out| writable.queue_close_notify(out),
                    insufficient,
                )
            });
            if let Ok(Some(Err(error))) = queued {
                return Poll::Ready(Err(io::Error::other(error)));
            }
        }
        ready!(self.poll_send_queued(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Hands a decrypted record to the reader, as much as it has room for, and keeps the rest in `leftover` (after
/// what it already holds, which the reader gets first).
fn deliver(
    payload: &[u8],
    reader: &mut Option<&mut ReadBuf<'_>>,
    leftover: &mut Vec<u8>,
    leftover_read: usize,
) {
    let mut rest = payload;
    if let Some(reader) = reader
        && leftover.len() == leftover_read
    {
        let take = rest.len().min(reader.remaining());
        reader.put_slice(&rest[..take]);
        rest = &rest[take..];
    }
    if !rest.is_empty() {
        leftover.extend_from_slice(rest);
    }
}

/// Encrypts `plaintext` into `sealed`; if it does not fit there (a large queued message ahead of it), onto the end
/// of `outgoing` instead. Returns the bytes written to `sealed`.
fn encrypt(
    writable: &mut WriteTraffic<'_, ClientConnectionData>,
    plaintext: &[u8],
    sealed: &mut [u8],
    outgoing: &mut Vec<u8>,
) -> Result<usize, EncryptError> {
    match writable.encrypt(plaintext, sealed) {
        Err(EncryptError::InsufficientSize(_)) => {
            append_encoded(
                outgoing,
                |out| writable.encrypt(plaintext, out),
                insufficient,
            )?;
            Ok(0)
        }
        other => other,
    }
}

fn insufficient(error: &EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(size) => Some(size.required_size),
        _ => None,
    }
}

/// Runs `encode` on room at the end of `outgoing`, growing the room to what it says it needs.
fn append_encoded<E>(
    outgoing: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, E>,
    required: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = outgoing.len();
    let mut room = 256;
    loop {
        outgoing.resize(start + room, 0);
        match encode(&mut outgoing[start..]) {
            Ok(written) => {
                outgoing.truncate(start + written);
                return Ok(());
            }
            Err(error) => match required(&error) {
                Some(size) if size > room => room = size,
                _ => {
                    outgoing.truncate(start);
                    return Err(error);
                }
            },
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_read_plaintext(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_plaintext(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_plaintext(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_queued(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};
    use tokio::sync::oneshot;
    use tokio_rustls::server::TlsStream as ServerStream;

    use super::*;
    use crate::client::HttpVersion;
    use crate::client::conn::tls_config;

    /// Every test's exchange ends well within this; a stream that waits for what never comes fails instead of hanging.
    const LIMIT: Duration = Duration::from_secs(20);

    fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        (cert.cert.der().clone(), key)
    }

    fn server_config(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        let (cert, key) = certificate();
        Arc::new(server_config_with(cert, key, versions))
    }

    fn server_config_with(
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap()
    }

    /// cicada's own configuration, without certificate checks (the server's certificate is self-signed).
    fn client_config() -> Arc<ClientConfig> {
        Arc::new(tls_config(HttpVersion::Http1, true, true).unwrap())
    }

    /// A TLS server on 127.0.0.1:0 running `handle` on each connection it accepts, and the accept errors it saw.
    async fn serve<F, Fut>(
        config: Arc<rustls::ServerConfig>,
        handle: F,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>)
    where
        F: Fn(ServerStream<TcpStream>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        serve_on(listener, config, handle)
    }

    fn serve_on<F, Fut>(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        handle: F,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>)
    where
        F: Fn(ServerStream<TcpStream>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let address = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (errors, seen) = tokio::sync::mpsc::unbounded_channel();
        let handle = Arc::new(handle);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let handle = handle.clone();
                let errors = errors.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => handle(tls).await,
                        Err(error) => {
                            let _ = errors.send(error.to_string());
                        }
                    }
                });
            }
        });
        (address, seen)
    }

    async fn open(address: SocketAddr, config: Arc<ClientConfig>) -> io::Result<Box<TlsStream>> {
        let tcp = TcpStream::connect(address).await?;
        connect(config, ServerName::try_from("localhost").unwrap(), tcp).await
    }

    async fn echo(tls: ServerStream<TcpStream>) {
        let (mut reader, mut writer) = tokio::io::split(tls);
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
        let _ = writer.shutdown().await;
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Writes `sent` and reads back as many bytes through one stream, both at once (the echo would stall otherwise).
    async fn round_trip(stream: Box<TlsStream>, sent: &[u8]) -> (Box<TlsStream>, Vec<u8>) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let write = async {
            writer.write_all(sent).await.unwrap();
            writer.flush().await.unwrap();
        };
        let read = async {
            let mut got = vec![0u8; sent.len()];
            reader.read_exact(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(write, read);
        (reader.unsplit(writer), got)
    }

    #[tokio::test]
    async fn small_and_large_payloads_echo_byte_exact_and_leave_no_buffer() {
        let (address, _) = serve(server_config(rustls::ALL_VERSIONS), echo).await;
        let work = async {
            let stream = open(address, client_config()).await.unwrap();
            assert_eq!(
                stream.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_3)
            );
            let (stream, got) = round_trip(stream, b"hello").await;
            assert_eq!(got, b"hello");
            assert_eq!(
                stream.buffered_capacity(),
                0,
                "no heap buffer after an exchange"
            );
            let large = payload(1024 * 1024);
            let (mut stream, got) = round_trip(stream, &large).await;
            assert!(got == large, "1 MiB came back changed");
            assert_eq!(
                stream.buffered_capacity(),
                0,
                "no heap buffer after a 1 MiB exchange"
            );
            stream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
    }

    /// A TCP relay in front of `server` that counts the TLS records the client sends through it.
    async fn record_counting_relay(
        server: SocketAddr,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let records = Arc::new(AtomicUsize::new(0));
        let counted = records.clone();
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let upstream = TcpStream::connect(server).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut upstream_read, mut upstream_write) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
            });
            // Record boundaries: 5-byte headers, the last two bytes the payload's length.
            let mut header = Vec::with_capacity(5);
            let mut payload_left = 0usize;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let read = client_read.read(&mut chunk).await.unwrap_or(0);
                if read == 0 {
                    break;
                }
                for &byte in &chunk[..read] {
                    if payload_left > 0 {
                        payload_left -= 1;
                        continue;
                    }
                    header.push(byte);
                    if header.len() == 5 {
                        payload_left = usize::from(u16::from_be_bytes([header[3], header[4]]));
                        header.clear();
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                }
                upstream_write.write_all(&chunk[..read]).await.unwrap();
            }
            let _ = upstream_write.shutdown().await;
        });
        (address, records)
    }

    #[tokio::test]
    async fn a_vectored_write_is_gathered_into_one_record() {
        use std::sync::atomic::Ordering;
        let (server, _) = serve(server_config(rustls::ALL_VERSIONS), echo).await;
        let (relay, records) = record_counting_relay(server).await;
        let work = async {
            let mut stream = open(relay, client_config()).await.unwrap();
            // The handshake's records have all gone by once a first exchange came back.
            let (returned, got) = round_trip(stream, b"warm-up").await;
            assert_eq!(got, b"warm-up");
            stream = returned;
            let before = records.load(Ordering::SeqCst);
            let head = b"GET / HTTP/1.1\r\nhost: localhost\r\n".to_vec();
            let cookie = b"cookie: a=1\r\n".to_vec();
            let end = b"\r\n".to_vec();
            let slices = [
                io::IoSlice::new(&head),
                io::IoSlice::new(&cookie),
                io::IoSlice::new(&end),
            ];
            assert!(stream.is_write_vectored());
            let written = stream.write_vectored(&slices).await.unwrap();
            assert_eq!(written, head.len() + cookie.len() + end.len());
            stream.flush().await.unwrap();
            let mut echoed = vec![0u8; written];
            stream.read_exact(&mut echoed).await.unwrap();
            assert_eq!(echoed, [head.as_slice(), &cookie, &end].concat());
            assert_eq!(
                records.load(Ordering::SeqCst) - before,
                1,
                "three slices, one record"
            );
            // More than a record's worth: one full record per write.
            let large = payload(40_000);
            let halves = [
                io::IoSlice::new(&large[..20_000]),
                io::IoSlice::new(&large[20_000..]),
            ];
            let before = records.load(Ordering::SeqCst);
            let written = stream.write_vectored(&halves).await.unwrap();
            assert_eq!(written, PLAINTEXT_PER_WRITE);
            stream.flush().await.unwrap();
            let mut echoed = vec![0u8; written];
            stream.read_exact(&mut echoed).await.unwrap();
            assert!(echoed == large[..written]);
            assert_eq!(records.load(Ordering::SeqCst) - before, 1);
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
    }

    #[tokio::test]
    async fn reads_into_a_one_byte_buffer_get_every_byte_in_order() {
        let sent = payload(40_000);
        let served = sent.clone();
        let (address, _) = serve(server_config(rustls::ALL_VERSIONS), move |mut tls| {
            let served = served.clone();
            async move {
                let mut ask = [0u8; 1];
                tls.read_exact(&mut ask).await.unwrap();
                tls.write_all(&served).await.unwrap();
                tls.flush().await.unwrap();
                echo(tls).await;
            }
        })
        .await;
        let work = async {
            let mut stream = open(address, client_config()).await.unwrap();
            stream.write_all(b"?").await.unwrap();
            stream.flush().await.unwrap();
            let mut got = Vec::with_capacity(sent.len());
            let mut byte = [0u8; 1];
            let mut saw_leftover = false;
            while got.len() < sent.len() {
                stream.read_exact(&mut byte).await.unwrap();
                got.push(byte[0]);
                saw_leftover |= stream.plaintext.len() > stream.plaintext_read;
            }
            assert!(got == sent, "bytes read one at a time came out changed");
            assert!(
                saw_leftover,
                "a record larger than the reader's buffer leaves plaintext over"
            );
            assert_eq!(
                stream.buffered_capacity(),
                0,
                "leftover plaintext freed once read"
            );
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
    }

    #[tokio::test]
    async fn writes_larger_than_the_socket_buffer_go_through_a_slow_reader_intact() {
        // Small socket buffers on both sides and a server that waits, then reads in small steps: the client's
        // writes only partly fit, so the unsent tails of records must go out first and whole.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let (address, _) = serve_on(
            listener,
            server_config(rustls::ALL_VERSIONS),
            |mut tls| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut total = 0u64;
                let mut sum = 0u64;
                let mut chunk = [0u8; 1000];
                loop {
                    let read = tls.read(&mut chunk).await.unwrap();
                    if read == 0 {
                        break;
                    }
                    for &byte in &chunk[..read] {
                        sum = sum.wrapping_mul(31).wrapping_add(u64::from(byte));
                    }
                    total += read as u64;
                    tokio::task::yield_now().await;
                }
                tls.write_all(format!("{total} {sum}").as_bytes())
                    .await
                    .unwrap();
                tls.shutdown().await.unwrap();
            },
        );
        let sent = payload(1024 * 1024 + 123);
        let expected_sum = sent.iter().fold(0u64, |sum, &byte| {
            sum.wrapping_mul(31).wrapping_add(u64::from(byte))
        });
        let work = async {
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_send_buffer_size(4096).unwrap();
            let tcp = socket.connect(address).await.unwrap();
            let mut stream = connect(
                client_config(),
                ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
            let mut saw_tail = false;
            let mut rest: &[u8] = &sent;
            while !rest.is_empty() {
                let written = stream.write(rest).await.unwrap();
                rest = &rest[written..];
                saw_tail |= !stream.outgoing.is_empty();
            }
            stream.shutdown().await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            assert_eq!(answer, format!("{} {expected_sum}", sent.len()));
            assert!(saw_tail, "the socket took records only in part");
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
    }

    #[tokio::test]
    async fn reads_go_on_across_a_key_update_from_the_server_and_ours_follows() {
        let (address, _) = serve(
            server_config(&[&rustls::version::TLS13]),
            |mut tls| async move {
                let mut ask = [0u8; 1];
                tls.read_exact(&mut ask).await.unwrap();
                tls.write_all(&payload(3000)).await.unwrap();
                tls.flush().await.unwrap();
                tls.get_mut().1.refresh_traffic_keys().unwrap();
                tls.write_all(&payload(5000)).await.unwrap();
                tls.flush().await.unwrap();
                echo(tls).await;
            },
        )
        .await;
        let work = async {
            let mut stream = open(address, client_config()).await.unwrap();
            stream.write_all(b"?").await.unwrap();
            stream.flush().await.unwrap();
            let mut first = vec![0u8; 3000];
            stream.read_exact(&mut first).await.unwrap();
            let mut second = vec![0u8; 5000];
            stream.read_exact(&mut second).await.unwrap();
            assert!(first == payload(3000) && second == payload(5000));
            // The server asked for our KeyUpdate: it goes ahead of this write, and the server must still read us.
            let (stream, got) = round_trip(stream, b"after the key update").await;
            assert_eq!(got, b"after the key update");
            assert_eq!(stream.buffered_capacity(), 0);
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
    }

    #[tokio::test]
    async fn close_notify_from_the_server_is_the_end_of_stream_while_tcp_stays_open() {
        let (release, released) = oneshot::channel::<()>();
        let released = std::sync::Mutex::new(Some(released));
        let (address, _) = serve(server_config(rustls::ALL_VERSIONS), move |mut tls| {
            let released = released.lock().unwrap().take();
            async move {
                tls.write_all(b"bye").await.unwrap();
                tls.get_mut().1.send_close_notify();
                tls.flush().await.unwrap();
                // TCP stays open until the client has seen the end.
                if let Some(released) = released {
                    let _ = released.await;
                }
            }
        })
        .await;
        let work = async {
            let mut stream = open(address, client_config()).await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"bye");
            let mut more = [0u8; 8];
            assert_eq!(
                stream.read(&mut more).await.unwrap(),
                0,
                "end of stream stays"
            );
            stream.shutdown().await.unwrap();
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
        let _ = release.send(());
    }

    #[tokio::test]
    async fn a_tcp_close_without_close_notify_is_an_unexpected_eof() {
        let (address, _) = serve(server_config(rustls::ALL_VERSIONS), |mut tls| async move {
            tls.write_all(b"partial").await.unwrap();
            tls.flush().await.unwrap();
            let (tcp, _) = tls.into_inner();
            drop(tcp);
        })
        .await;
        let work = async {
            let mut stream = open(address, client_config()).await.unwrap();
            let mut got = [0u8; 7];
            stream.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"partial");
            let error = stream.read(&mut [0u8; 8]).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
            assert!(
                error.to_string().contains("without a TLS close_notify"),
                "{error}"
            );
            // The pool's probe (a 1-byte read with a waker that does nothing) sees the end too.
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let mut probe = [0u8; 1];
            let mut buf = ReadBuf::new(&mut probe);
            assert!(matches!(
                Pin::new(&mut stream).poll_read(&mut cx, &mut buf),
                Poll::Ready(Err(_))
            ));
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
    }

    #[tokio::test]
    async fn a_large_certificate_in_many_small_records_joins_across_reads() {
        // A ~40 KiB certificate (many names) sent in records of 1,000 bytes: the Certificate message spans many
        // records and several reads, which rustls joins in the bytes the stream keeps between polls.
        let names: Vec<String> = std::iter::once("localhost".to_string())
            .chain((0..2000).map(|i| format!("host-{i}.cicada.test")))
            .collect();
        let cert = rcgen::generate_simple_self_signed(names).unwrap();
        assert!(
            cert.cert.der().len() > 32 * 1024,
            "{}",
            cert.cert.der().len()
        );
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let mut config =
                server_config_with(cert.cert.der().clone(), key.clone_key(), &[version]);
            config.max_fragment_size = Some(1000);
            let (address, _) = serve(Arc::new(config), echo).await;
            let work = async {
                let stream = open(address, client_config()).await.unwrap();
                let sent = payload(50_000);
                let (stream, got) = round_trip(stream, &sent).await;
                assert!(got == sent, "{version:?}");
                assert_eq!(stream.buffered_capacity(), 0, "{version:?}");
            };
            tokio::time::timeout(LIMIT, work).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_tls12_only_server_works() {
        let (address, _) = serve(server_config(&[&rustls::version::TLS12]), echo).await;
        let work = async {
            let stream = open(address, client_config()).await.unwrap();
            assert_eq!(
                stream.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_2)
            );
            let sent = payload(100_000);
            let (stream, got) = round_trip(stream, &sent).await;
            assert!(got == sent);
            assert_eq!(stream.buffered_capacity(), 0);
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
    }

    #[tokio::test]
    async fn a_second_connection_with_the_same_config_resumes_the_session() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (address, _) = serve(server_config(&[version]), echo).await;
            let config = client_config();
            let work = async {
                let first = open(address, config.clone()).await.unwrap();
                assert_eq!(first.handshake_kind(), Some(rustls::HandshakeKind::Full));
                // The exchange reads the server's session tickets (TLS 1.3 sends them after the handshake).
                let (mut first, _) = round_trip(first, b"ping").await;
                first.shutdown().await.unwrap();
                let second = open(address, config.clone()).await.unwrap();
                assert_eq!(
                    second.handshake_kind(),
                    Some(rustls::HandshakeKind::Resumed),
                    "{version:?}"
                );
                let (_, got) = round_trip(second, b"pong").await;
                assert_eq!(got, b"pong");
            };
            tokio::time::timeout(LIMIT, work).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_certificate_that_does_not_verify_fails_the_handshake_and_tells_the_server() {
        let (address, mut server_errors) = serve(server_config(rustls::ALL_VERSIONS), echo).await;
        let checked = Arc::new(tls_config(HttpVersion::Http1, false, true).unwrap());
        let work = async {
            let error = match open(address, checked).await {
                Ok(_) => panic!("a self-signed certificate passed the checks"),
                Err(error) => error,
            };
            assert_eq!(error.to_string(), "invalid peer certificate: UnknownIssuer");
            let seen = server_errors.recv().await.unwrap();
            assert!(seen.contains("received fatal alert: UnknownCA"), "{seen}");
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
    }

    #[tokio::test]
    async fn garbage_or_an_oversized_record_from_the_server_is_an_error_not_growth() {
        // Not TLS at all, during the handshake.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut tcp, _)) = listener.accept().await {
                let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        // After the handshake, a record header announcing 64 KiB.
        let (address, _) = serve(server_config(rustls::ALL_VERSIONS), |mut tls| async move {
            tls.write_all(b"ok").await.unwrap();
            tls.flush().await.unwrap();
            let (mut tcp, _) = tls.into_inner();
            let _ = tcp
                .write_all(&[0x17, 0x03, 0x03, 0xff, 0xff, 0, 0, 0])
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let work = async {
            let error = match open(plain, client_config()).await {
                Ok(_) => panic!("a plain HTTP answer passed as TLS"),
                Err(error) => error,
            };
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
            let mut stream = open(address, client_config()).await.unwrap();
            let mut got = [0u8; 2];
            stream.read_exact(&mut got).await.unwrap();
            let error = stream.read(&mut [0u8; 64]).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
            assert!(error.to_string().starts_with("TLS error:"), "{error}");
            assert!(
                stream.buffered_capacity() < MAX_RECORD,
                "{}",
                stream.buffered_capacity()
            );
            let again = stream.read(&mut [0u8; 64]).await.unwrap_err();
            assert_eq!(again.to_string(), error.to_string(), "the failure is kept");
        };
        tokio::time::timeout(LIMIT, work).await.unwrap();
    }
}
