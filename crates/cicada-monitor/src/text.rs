//! Reading kernel text files. Several of them can hold bytes that are not UTF-8 (the command name in
//! `/proc/self/stat` and `/proc/self/status` is whatever the program was named; mount points in
//! `/proc/self/mountinfo` are arbitrary paths), so files are read as bytes and decoded lossily: one odd
//! name must not blind the monitor to every other line of the file.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Reads the whole file, replacing invalid UTF-8 with U+FFFD.
pub(crate) fn read_text(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    read_bytes(path, &mut bytes)?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    })
}

/// Reads the whole file into `bytes` (cleared first), reusing its allocation.
pub(crate) fn read_bytes(path: &Path, bytes: &mut Vec<u8>) -> io::Result<()> {
    bytes.clear();
    File::open(path)?.read_to_end(bytes)?;
    Ok(())
}
