//! HPACK (RFC 7541), the header compression of HTTP/2, as cicada's client needs it.
//!
//! Requests are encoded with literal fields that never enter the server's dynamic table and without Huffman
//! coding: every server must accept them, the encoder keeps no state, and a request's headers cost one pass over
//! their bytes. Responses are decoded in full (indexed fields, the dynamic table, Huffman-coded strings), straight
//! into the caller's buffer, so a response head costs no allocation per field. The dynamic table is bounded by the
//! size cicada advertises, and a block is refused once its decoded fields pass the header list limit, so a block
//! that refers to a large entry many times cannot make the decoder build an arbitrarily large head.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::OnceLock;

/// Why a header block could not be decoded. The connection cannot go on: its decoder may have lost track of the
/// server's table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HpackError(&'static str);

/// The static table (RFC 7541, Appendix A), index 1 first.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Static table indices of the fields and names cicada's requests use.
pub(crate) mod index {
    pub(crate) const AUTHORITY: usize = 1;
    pub(crate) const METHOD_GET: usize = 2;
    pub(crate) const METHOD_POST: usize = 3;
    pub(crate) const PATH_ROOT: usize = 4;
    pub(crate) const SCHEME_HTTP: usize = 6;
    pub(crate) const SCHEME_HTTPS: usize = 7;
    /// Used by the tests' scripted servers.
    #[cfg(test)]
    pub(crate) const STATUS_200: usize = 8;
    pub(crate) const ACCEPT_ENCODING: usize = 16;
    pub(crate) const ACCEPT: usize = 19;
    pub(crate) const AUTHORIZATION: usize = 23;
    pub(crate) const CONTENT_LENGTH: usize = 28;
    pub(crate) const CONTENT_TYPE: usize = 31;
    pub(crate) const COOKIE: usize = 32;
    pub(crate) const USER_AGENT: usize = 58;
}

/// An integer with a `prefix_bits`-bit prefix under `flags` (5.1).
pub(crate) fn encode_int(out: &mut Vec<u8>, prefix_bits: u8, flags: u8, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A string literal, without Huffman coding (5.2).
pub(crate) fn encode_string(out: &mut Vec<u8>, text: &[u8]) {
    encode_int(out, 7, 0, text.len());
    out.extend_from_slice(text);
}

/// A field from the static table, name and value (6.1).
pub(crate) fn encode_indexed(out: &mut Vec<u8>, index: usize) {
    encode_int(out, 7, 0x80, index);
}

/// A literal field whose name is in the static table, not added to the dynamic table (6.2.2). A `sensitive` field
/// is marked never to be indexed by intermediaries either (6.2.3).
pub(crate) fn encode_literal(out: &mut Vec<u8>, name_index: usize, value: &[u8], sensitive: bool) {
    encode_int(out, 4, if sensitive { 0x10 } else { 0 }, name_index);
    encode_string(out, value);
}

/// A literal field with a literal name.
pub(crate) fn encode_literal_named(out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
    out.push(if sensitive { 0x10 } else { 0 });
    encode_string(out, name);
    encode_string(out, value);
}

/// The decoding side of one connection: its dynamic table.
pub(crate) struct Decoder {
    /// Newest first; each entry is the name then the value, with the name's length.
    table: VecDeque<(Box<[u8]>, usize)>,
    /// Size of the table as RFC 7541 counts it (each entry's bytes plus 32).
    size: usize,
    /// The size the server chose (a size update), at most `max_allowed`.
    max_size: usize,
    /// The size cicada advertised (SETTINGS_HEADER_TABLE_SIZE).
    max_allowed: usize,
}

impl Decoder {
    pub(crate) fn new(max_allowed: usize) -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: max_allowed,
            max_allowed,
        }
    }

    /// Decodes a complete header block. Each field's name and value are appended to `out` and handed to `field`
    /// as ranges of it (which may truncate `out` to drop the field). Fails once the fields' size (names, values and
    /// 32 bytes each) passes `max_list`.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        out: &mut Vec<u8>,
        max_list: usize,
        mut field: impl FnMut(&mut Vec<u8>, Range<usize>, Range<usize>),
    ) -> Result<(), HpackError> {
        let mut input = block;
        let mut list_size = 0usize;
        let mut fields_seen = false;
        while let Some(&first) = input.first() {
            let start = out.len();
            let name_len = if first & 0x80 != 0 {
                let index = decode_int(&mut input, 7)?;
                self.copy_entry(index, out, true)?
            } else if first & 0xe0 == 0x20 {
                // A dynamic table size update: only at the start of a block (4.2).
                if fields_seen {
                    return Err(HpackError("a table size update after the first field"));
                }
                let size = decode_int(&mut input, 5)?;
                if size > self.max_allowed {
                    return Err(HpackError(
                        "a table size update over the size cicada advertised",
                    ));
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // Literal fields: with incremental indexing (6.2.1), without indexing or never indexed (6.2.2-3).
                let add = first & 0x40 != 0;
                let name_index = decode_int(&mut input, if add { 6 } else { 4 })?;
                if name_index == 0 {
                    decode_string(&mut input, out)?;
                } else {
                    self.copy_entry(name_index, out, false)?;
                }
                let name_len = out.len() - start;
                decode_string(&mut input, out)?;
                if add {
                    self.insert(&out[start..], name_len);
                }
                name_len
            };
            list_size += out.len() - start + 32;
            if list_size > max_list {
                return Err(HpackError("the response's headers are larger than 64 KiB"));
            }
            fields_seen = true;
            field(out, start..start + name_len, start + name_len..out.len());
        }
        Ok(())
    }

    /// Appends the name (and the value, if `with_value`) of table entry `index` to `out`; returns the name's length.
    fn copy_entry(
        &self,
        index: usize,
        out: &mut Vec<u8>,
        with_value: bool,
    ) -> Result<usize, HpackError> {
        if index == 0 {
            return Err(HpackError("a field refers to table index 0"));
        }
        if let Some((name, value)) = STATIC_TABLE.get(index - 1) {
            out.extend_from_slice(name.as_bytes());
            if with_value {
                out.extend_from_slice(value.as_bytes());
            }
            return Ok(name.len());
        }
        let Some((entry, name_len)) = self.table.get(index - 1 - STATIC_TABLE.len()) else {
            return Err(HpackError(
                "a field refers to an index past the table's end",
            ));
        };
        out.extend_from_slice(if with_value {
            entry
        } else {
            &entry[..*name_len]
        });
        Ok(*name_len)
    }

    /// Adds an entry (name then value) at the front, evicting the oldest ones to make room (4.4).
    fn insert(&mut self, entry: &[u8], name_len: usize) {
        let entry_size = entry.len() + 32;
        if entry_size > self.max_size {
            // An entry larger than the table empties it and is not added.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(entry_size);
        self.table.push_front((entry.into(), name_len));
        self.size += entry_size;
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((entry, _)) = self.table.pop_back() else {
                break;
            };
            self.size -= entry.len() + 32;
        }
    }
}

/// Reads an integer with a `prefix_bits`-bit prefix (5.1). Values past 2^28 are refused: no field or table size
/// is that large, and the bound keeps the arithmetic from overflowing.
fn decode_int(input: &mut &[u8], prefix_bits: u8) -> Result<usize, HpackError> {
    let truncated = HpackError("a header block ends inside an integer");
    let (&first, mut rest) = input.split_first().ok_or(truncated.clone())?;
    let max = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & max;
    if value == max {
        let mut shift = 0;
        loop {
            let (&byte, after) = rest.split_first().ok_or(truncated.clone())?;
            rest = after;
            value += usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
            if shift > 21 {
                return Err(HpackError("an integer in a header block is too large"));
            }
        }
    }
    *input = rest;
    Ok(value)
}

/// Reads a string literal (5.2), Huffman-coded or not, appending its text to `out`.
fn decode_string(input: &mut &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = input.first().is_some_and(|first| first & 0x80 != 0);
    let length = decode_int(input, 7)?;
    if length > input.len() {
        return Err(HpackError("a header block ends inside a string"));
    }
    let (text, rest) = input.split_at(length);
    *input = rest;
    if huffman {
        huffman_decode(text, out)
    } else {
        out.extend_from_slice(text);
        Ok(())
    }
}

/// One step of the Huffman decoder: from a state (a node of the code tree), four more bits lead to `next`, having
/// completed the code of `symbol` on the way if `emits`.
#[derive(Clone, Copy, Default)]
struct Step {
    next: u8,
    symbol: u8,
    emits: bool,
    /// The bits lead outside the code (to EOS, which must not appear in a string).
    fails: bool,
}

/// The Huffman decoder's tables: `steps[state * 16 + nibble]`, and whether each state may end a string (the bits
/// since the last symbol are a prefix of EOS, all ones, seven bits at most: RFC 7541, 5.2).
struct HuffmanTables {
    steps: Vec<Step>,
    may_end: [bool; 256],
}

/// Builds the tables from the code of RFC 7541 Appendix B, as `httlib-huffman` publishes it (length, code).
fn huffman_tables() -> &'static HuffmanTables {
    static TABLES: OnceLock<HuffmanTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        // The code tree: 257 leaves, so 256 inner nodes, numbered as they are created (the root is 0). A child is
        // an inner node, a leaf (a symbol) or nothing yet.
        #[derive(Clone, Copy)]
        enum Child {
            None,
            Node(u8),
            Leaf(u16),
        }
        let mut tree: Vec<[Child; 2]> = vec![[Child::None; 2]];
        for (symbol, &(length, code)) in httlib_huffman::encoder::table::ENCODE_TABLE
            .iter()
            .enumerate()
        {
            let mut node = 0usize;
            for bit_index in (0..length).rev() {
                let bit = ((code >> bit_index) & 1) as usize;
                if bit_index == 0 {
                    tree[node][bit] = Child::Leaf(symbol as u16);
                } else {
                    node = match tree[node][bit] {
                        Child::Node(next) => usize::from(next),
                        _ => {
                            tree.push([Child::None; 2]);
                            let next = tree.len() - 1;
                            tree[node][bit] = Child::Node(next as u8);
                            next
                        }
                    };
                }
            }
        }
        assert_eq!(tree.len(), 256, "the HPACK code has 256 inner nodes");
        let mut steps = vec![Step::default(); 256 * 16];
        for state in 0..256 {
            for nibble in 0..16u8 {
                let mut step = Step::default();
                let mut node = state;
                for bit_index in (0..4).rev() {
                    match tree[node][usize::from((nibble >> bit_index) & 1)] {
                        Child::Node(next) => node = usize::from(next),
                        Child::Leaf(symbol) if symbol < 256 => {
                            // Codes are 5 bits or longer: four bits complete one at most.
                            step.symbol = symbol as u8;
                            step.emits = true;
                            node = 0;
                        }
                        Child::Leaf(_) | Child::None => step.fails = true,
                    }
                }
                step.next = node as u8;
                steps[state * 16 + usize::from(nibble)] = step;
            }
        }
        // States reached from the root by up to seven 1-bits, and the root itself.
        let mut may_end = [false; 256];
        may_end[0] = true;
        let mut node = 0usize;
        for _ in 0..7 {
            match tree[node][1] {
                Child::Node(next) => {
                    node = usize::from(next);
                    may_end[node] = true;
                }
                _ => break,
            }
        }
        HuffmanTables { steps, may_end }
    })
}

/// Decodes a Huffman-coded string (5.2), four bits at a time.
fn huffman_decode(text: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let tables = huffman_tables();
    let invalid = HpackError("a Huffman-coded string in a header block is malformed");
    let mut state = 0usize;
    out.reserve(text.len() * 8 / 5);
    for &byte in text {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = tables.steps[state * 16 + usize::from(nibble)];
            if step.fails {
                return Err(invalid);
            }
            if step.emits {
                out.push(step.symbol);
            }
            state = usize::from(step.next);
        }
    }
    if !tables.may_end[state] {
        return Err(invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut out = Vec::new();
        let mut fields = Vec::new();
        decoder.decode(block, &mut out, 64 * 1024, |out, name, value| {
            fields.push((out[name].to_vec(), out[value].to_vec()));
        })?;
        Ok(fields)
    }

    fn pairs(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec()))
            .collect()
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn integers_follow_the_rfc_examples() {
        // RFC 7541, C.1.
        let mut out = Vec::new();
        encode_int(&mut out, 5, 0, 10);
        assert_eq!(out, [10]);
        out.clear();
        encode_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        encode_int(&mut out, 8, 0, 42);
        assert_eq!(out, [42]);
        for (bytes, prefix, value) in [
            (&[10u8][..], 5, 10),
            (&[31, 154, 10], 5, 1337),
            (&[42], 8, 42),
        ] {
            let mut input = bytes;
            assert_eq!(decode_int(&mut input, prefix).unwrap(), value);
            assert!(input.is_empty());
        }
        // Truncated and oversized integers are refused, not wrapped.
        assert!(decode_int(&mut &[31u8, 154][..], 5).is_err());
        assert!(decode_int(&mut &[31u8, 255, 255, 255, 255, 1][..], 5).is_err());
    }

    #[test]
    fn the_static_table_matches_an_independent_decoder() {
        let mut theirs = loona_hpack::Decoder::new();
        for index in 1..=STATIC_TABLE.len() {
            let mut block = Vec::new();
            encode_indexed(&mut block, index);
            let expected = theirs.decode(&block).unwrap();
            let ours = decode_all(&mut Decoder::new(4096), &block).unwrap();
            assert_eq!(ours, expected, "static table entry {index}");
        }
    }

    #[test]
    fn the_rfc_s_huffman_coded_request_sequence_decodes() {
        // RFC 7541, C.4: three requests on one connection, the dynamic table carried from one to the next.
        let mut decoder = Decoder::new(4096);
        let first = decode_all(
            &mut decoder,
            &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
        )
        .unwrap();
        assert_eq!(
            first,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        let second = decode_all(&mut decoder, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(
            second,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        let third = decode_all(
            &mut decoder,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        )
        .unwrap();
        assert_eq!(
            third,
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(decoder.size, 164, "the table's size after C.4.3");
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let mut decoder = Decoder::new(4096);
        // Index 0, an index past the table, a string past the block's end.
        assert!(decode_all(&mut decoder, &[0x80]).is_err());
        assert!(decode_all(&mut decoder, &[0x80 | 70]).is_err());
        assert!(decode_all(&mut decoder, &[0x00, 0x05, b'a']).is_err());
        // A size update over the advertised size, or after a field.
        assert!(decode_all(&mut decoder, &hex("3fe2 1f")).is_err());
        assert!(decode_all(&mut decoder, &[0x82, 0x20]).is_err());
        // Huffman: EOS inside a string, and padding of eight bits.
        assert!(
            decode_all(
                &mut decoder,
                &[0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x01, b'a']
            )
            .is_err()
        );
        assert!(decode_all(&mut decoder, &[0x00, 0x81, 0xff, 0x01, b'a']).is_err());
    }

    #[test]
    fn a_block_that_expands_past_the_list_limit_is_refused() {
        let mut decoder = Decoder::new(4096);
        // One 3,000-byte entry, then the same entry referred to thirty times: 90 KiB from a few bytes.
        let mut block = Vec::new();
        encode_int(&mut block, 6, 0x40, 0);
        encode_string(&mut block, b"x-big");
        encode_string(&mut block, &[b'v'; 3000]);
        for _ in 0..30 {
            encode_indexed(&mut block, 62);
        }
        let mut out = Vec::new();
        let result = decoder.decode(&block, &mut out, 64 * 1024, |_, _, _| {});
        assert!(result.is_err());
        assert!(out.len() <= 64 * 1024 + 3100);
    }

    #[test]
    fn the_table_evicts_its_oldest_entries_and_follows_size_updates() {
        let mut decoder = Decoder::new(100);
        let mut block = Vec::new();
        for name in [&b"aa"[..], b"bb", b"cc"] {
            encode_int(&mut block, 6, 0x40, 0);
            encode_string(&mut block, name);
            encode_string(&mut block, b"1");
        }
        decode_all(&mut decoder, &block).unwrap();
        // Each entry is 35 bytes: two fit in 100, the first was evicted.
        assert_eq!(decoder.table.len(), 2);
        assert_eq!(
            decode_all(&mut decoder, &[0x80 | 62]).unwrap(),
            pairs(&[("cc", "1")])
        );
        assert_eq!(
            decode_all(&mut decoder, &[0x80 | 63]).unwrap(),
            pairs(&[("bb", "1")])
        );
        assert!(decode_all(&mut decoder, &[0x80 | 64]).is_err());
        // A size update to 40 keeps one entry; to 0 empties the table.
        decode_all(&mut decoder, &[0x20 | 31, 9]).unwrap();
        assert_eq!(decoder.table.len(), 1);
        decode_all(&mut decoder, &[0x20]).unwrap();
        assert!(decoder.table.is_empty());
    }

    proptest! {
        #[test]
        fn huffman_strings_round_trip(text in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut coded = Vec::new();
            httlib_huffman::encode(&text, &mut coded).unwrap();
            let mut decoded = Vec::new();
            huffman_decode(&coded, &mut decoded).unwrap();
            prop_assert_eq!(decoded, text);
        }

        #[test]
        fn blocks_from_an_independent_encoder_decode_to_their_fields(
            fields in proptest::collection::vec(
                ("[a-z-]{1,12}", "[ -~]{0,40}"),
                1..20,
            ),
            rounds in 1usize..4,
        ) {
            // loona-hpack's encoder indexes what it sends, so later blocks refer to the dynamic table.
            let mut theirs = loona_hpack::Encoder::new();
            let mut ours = Decoder::new(4096);
            for _ in 0..rounds {
                let list: Vec<(&[u8], &[u8])> =
                    fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
                let block = theirs.encode(list.iter().copied());
                let expected: Vec<(Vec<u8>, Vec<u8>)> =
                    list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
                prop_assert_eq!(decode_all(&mut ours, &block).unwrap(), expected);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(block in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut decoder = Decoder::new(4096);
            let _ = decode_all(&mut decoder, &block);
            prop_assert!(decoder.size <= 4096);
        }
    }
}
