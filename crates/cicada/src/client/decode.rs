//! Response bodies: collected up to the user type's cap, and decoded (gzip, deflate, brotli) while they are read.
//!
//! Both HTTP/1.1 ([`super::h1`]) and HTTP/2 push body bytes into a [`BodyOut`]: a [`Collector`] for bodies without a
//! `Content-Encoding` (or when decoding is off), a [`Decoder`] otherwise. A decoder never holds the compressed body:
//! each piece is decoded as it arrives, the first `max_body_bytes` decoded bytes are kept, and the rest is only
//! counted, up to [`MAX_DECODED_COUNTED`] bytes per response, after which decoding stops and the body is marked
//! truncated. So a decompression bomb costs at most the cap in memory (plus the decoder's own window: 32 KiB for
//! gzip and deflate, at most 16 MiB for brotli) and a bounded amount of CPU.
//!
//! zstd is not offered: the pure-Rust decoders read from a source instead of accepting pushed bytes, and the C
//! library would need a C toolchain at build time.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};

use super::{RequestError, RequestErrorKind};

/// The `Accept-Encoding` sent when decoding is on (the encodings [`Decoder`] understands).
pub(crate) const ACCEPT_ENCODING: &str = "gzip, deflate, br";

/// Decoded bytes counted at most per response. Past this, decoding stops: the content size says at least this much
/// and the body is marked truncated. It bounds the CPU a decompression bomb can take (about a second at most).
pub(crate) const MAX_DECODED_COUNTED: u64 = 1 << 30;

/// Where body bytes go while a response is read.
pub(crate) trait BodyOut {
    /// The next piece of the body as it came off the wire (after transfer decoding).
    fn push(&mut self, data: &[u8]);
}

/// Keeps the first `max` bytes of a body and counts all of them.
pub(crate) struct Collector {
    body: BytesMut,
    total: u64,
    max: usize,
}

impl Collector {
    pub(crate) fn new(max: usize) -> Self {
        Collector {
            body: BytesMut::new(),
            total: 0,
            max,
        }
    }

    /// The kept body, the whole body's size, and whether only part of it was kept.
    pub(crate) fn finish(self) -> (Bytes, u64, bool) {
        let truncated = self.total > self.body.len() as u64;
        (self.body.freeze(), self.total, truncated)
    }
}

impl BodyOut for Collector {
    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.max.saturating_sub(self.body.len());
        self.body.extend_from_slice(&data[..data.len().min(room)]);
    }
}

impl Write for Collector {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.push(data);
        if self.total > MAX_DECODED_COUNTED {
            // Tells the decoder to stop; `Decoder` recognises this case by the count.
            return Err(io::Error::other("decoded size limit reached"));
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A content coding cicada decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Gzip,
    Deflate,
    Brotli,
}

impl Encoding {
    /// The coding a `Content-Encoding` value names, if cicada decodes it. `identity`, unknown codings and stacked
    /// codings (`gzip, br`) give `None`: such bodies are kept as they came.
    pub(crate) fn from_header(value: &[u8]) -> Option<Encoding> {
        let value = value.trim_ascii();
        if value.eq_ignore_ascii_case(b"gzip") || value.eq_ignore_ascii_case(b"x-gzip") {
            Some(Encoding::Gzip)
        } else if value.eq_ignore_ascii_case(b"deflate") {
            Some(Encoding::Deflate)
        } else if value.eq_ignore_ascii_case(b"br") {
            Some(Encoding::Brotli)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "brotli",
        }
    }
}

enum Inner {
    Gzip(flate2::write::GzDecoder<Collector>),
    Zlib(flate2::write::ZlibDecoder<Collector>),
    RawDeflate(flate2::write::DeflateDecoder<Collector>),
    /// `deflate` is zlib-wrapped by the standard and raw by some servers (as browsers, cicada accepts both): the
    /// first two bytes tell which.
    DeflateStart {
        first: Option<u8>,
        out: Collector,
    },
    /// Brotli's decoder is large (its tables); boxed so that the other variants stay small.
    Brotli(Box<brotli_decompressor::DecompressorWriter<Collector>>),
}

impl Inner {
    fn out(&mut self) -> &mut Collector {
        match self {
            Inner::Gzip(decoder) => decoder.get_mut(),
            Inner::Zlib(decoder) => decoder.get_mut(),
            Inner::RawDeflate(decoder) => decoder.get_mut(),
            Inner::DeflateStart { out, .. } => out,
            Inner::Brotli(decoder) => decoder.get_mut(),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Inner::Gzip(decoder) => decoder.write_all(data),
            Inner::Zlib(decoder) => decoder.write_all(data),
            Inner::RawDeflate(decoder) => decoder.write_all(data),
            Inner::Brotli(decoder) => decoder.write_all(data),
            Inner::DeflateStart { .. } => Ok(()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        match self {
            Inner::Gzip(decoder) => decoder.try_finish(),
            Inner::Zlib(decoder) => decoder.try_finish(),
            Inner::RawDeflate(decoder) => decoder.try_finish(),
            Inner::Brotli(decoder) => decoder.close(),
            // A one-byte deflate body is no valid stream of either kind.
            Inner::DeflateStart { first: Some(_), .. } => {
                Err(io::Error::other("the body ended after one byte"))
            }
            Inner::DeflateStart { first: None, .. } => Ok(()),
        }
    }
}

/// Decodes a body as it is read.
pub(crate) struct Decoder {
    encoding: Encoding,
    inner: Inner,
    /// Bytes of encoded body seen (an empty body decodes to an empty body, whatever its coding).
    fed: bool,
    /// Decoding stopped: at the count limit, or on a broken stream (then the error).
    stopped: bool,
    error: Option<String>,
}

impl Decoder {
    pub(crate) fn new(encoding: Encoding, max: usize) -> Self {
        let out = Collector::new(max);
        let inner = match encoding {
            Encoding::Gzip => Inner::Gzip(flate2::write::GzDecoder::new(out)),
            Encoding::Deflate => Inner::DeflateStart { first: None, out },
            Encoding::Brotli => Inner::Brotli(Box::new(
                brotli_decompressor::DecompressorWriter::new(out, 4096),
            )),
        };
        Decoder {
            encoding,
            inner,
            fed: false,
            stopped: false,
            error: None,
        }
    }

    /// Choose zlib or raw deflate once two bytes are known; returns the bytes still to decode.
    fn start_deflate<'d>(&mut self, data: &'d [u8]) -> (Option<[u8; 2]>, &'d [u8]) {
        let Inner::DeflateStart { first, .. } = &mut self.inner else {
            return (None, data);
        };
        let (header, rest) = match (*first, data) {
            (_, []) => return (None, data),
            (None, [only]) => {
                *first = Some(*only);
                return (None, &[]);
            }
            (None, [a, b, rest @ ..]) => ([*a, *b], rest),
            (Some(a), [b, rest @ ..]) => ([a, *b], rest),
        };
        let out = std::mem::replace(self.inner.out(), Collector::new(0));
        // RFC 1950: compression method 8, and the two header bytes are a multiple of 31.
        let zlib = header[0] & 0x0f == 8 && u16::from_be_bytes(header) % 31 == 0;
        self.inner = if zlib {
            Inner::Zlib(flate2::write::ZlibDecoder::new(out))
        } else {
            Inner::RawDeflate(flate2::write::DeflateDecoder::new(out))
        };
        (Some(header), rest)
    }

    fn stop(&mut self, error: &io::Error) {
        self.stopped = true;
        if self.inner.out().total <= MAX_DECODED_COUNTED {
            self.error = Some(error.to_string());
        }
    }

    /// The decoded body (its first `max` bytes), its decoded size, and whether only part of it was kept; or why
    /// the body could not be decoded.
    pub(crate) fn finish(mut self) -> Result<(Bytes, u64, bool), RequestError> {
        if self.fed
            && !self.stopped
            && let Err(error) = self.inner.finish()
        {
            self.stop(&error);
        }
        if let Some(error) = self.error {
            return Err(RequestError::new(
                RequestErrorKind::Protocol,
                format!(
                    "could not decode the {} response body: {error}",
                    self.encoding.name()
                ),
            ));
        }
        let over_limit = self.stopped;
        let out = std::mem::replace(self.inner.out(), Collector::new(0));
        let (body, total, truncated) = out.finish();
        Ok((body, total, truncated || over_limit))
    }
}

impl BodyOut for Decoder {
    fn push(&mut self, data: &[u8]) {
        if self.stopped || data.is_empty() {
            return;
        }
        self.fed = true;
        let data = match self.start_deflate(data) {
            (Some(header), rest) => {
                if let Err(error) = self.inner.write_all(&header) {
                    self.stop(&error);
                    return;
                }
                rest
            }
            (None, rest) => rest,
        };
        if let Err(error) = self.inner.write_all(data) {
            self.stop(&error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn decode_in_pieces(encoding: Encoding, encoded: &[u8], piece: usize, max: usize) -> Decoder {
        let mut decoder = Decoder::new(encoding, max);
        for chunk in encoded.chunks(piece) {
            decoder.push(chunk);
        }
        decoder
    }

    #[test]
    fn gzip_and_both_deflate_flavours_decode_in_any_pieces() {
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(50);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&text).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(&text).unwrap();
        let raw = raw.finish().unwrap();
        for (encoding, encoded) in [
            (Encoding::Gzip, gzip(&text)),
            (Encoding::Deflate, zlib),
            (Encoding::Deflate, raw),
        ] {
            for piece in [1, 7, 4096] {
                let (body, total, truncated) = decode_in_pieces(encoding, &encoded, piece, 1 << 20)
                    .finish()
                    .unwrap();
                assert_eq!(&body[..], &text[..], "{encoding:?} in pieces of {piece}");
                assert_eq!(total, text.len() as u64);
                assert!(!truncated);
            }
        }
    }

    #[test]
    fn brotli_stored_blocks_decode() {
        // A brotli stream made of one uncompressed meta-block: window bits 16, MLEN-1 in four nibbles.
        let data = b"hello brotli";
        let header = ((data.len() as u32 - 1) << 4) | (1 << 20);
        let mut encoded = header.to_le_bytes()[..3].to_vec();
        encoded.extend_from_slice(data);
        encoded.push(0x03);
        let (body, total, _) = decode_in_pieces(Encoding::Brotli, &encoded, 3, 1024)
            .finish()
            .unwrap();
        assert_eq!((&body[..], total), (&data[..], data.len() as u64));
    }

    #[test]
    fn the_cap_keeps_the_start_and_counts_the_rest() {
        let text = vec![b'a'; 100_000];
        let (body, total, truncated) = decode_in_pieces(Encoding::Gzip, &gzip(&text), 512, 1000)
            .finish()
            .unwrap();
        assert_eq!(body.len(), 1000);
        assert_eq!(total, 100_000);
        assert!(truncated);
    }

    #[test]
    fn broken_and_empty_bodies() {
        let mut decoder = Decoder::new(Encoding::Gzip, 1024);
        decoder.push(b"this is not gzip at all");
        let error = decoder.finish().unwrap_err();
        assert!(
            error.to_string().starts_with("could not decode the gzip"),
            "{error}"
        );
        // A HEAD response or a 204 says gzip but has no body: nothing to decode.
        let (body, total, truncated) = Decoder::new(Encoding::Brotli, 1024).finish().unwrap();
        assert!(body.is_empty() && total == 0 && !truncated);
        assert_eq!(Encoding::from_header(b" GZIP "), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_header(b"gzip, br"), None);
        assert_eq!(Encoding::from_header(b"identity"), None);
    }
}
