//! Reading kernel text files. Several of them can hold bytes that are not UTF-8 (the command name in
//! `/proc/self/stat` and `/proc/self/status` is whatever the program was named; mount points in
//! `/proc/self/mountinfo` are arbitrary paths), so files are read as bytes and decoded lossily: one odd
//! name must not blind the monitor to every other line of the file.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Reads the whole file, replacing invalid UTF-8 with U+FFFD.
pub(crate) fn read_text(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    read_bytes(path, &mut bytes)?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    })
}

/// Reads the whole file as bytes.
pub(crate) fn read_bytes_vec(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    read_bytes(path, &mut bytes)?;
    Ok(bytes)
}

/// Reads the whole file into `bytes` (cleared first), reusing its allocation.
pub(crate) fn read_bytes(path: &Path, bytes: &mut Vec<u8>) -> io::Result<()> {
    bytes.clear();
    File::open(path)?.read_to_end(bytes)?;
    Ok(())
}

/// A kernel file kept open and read again from its start with `pread`: one system call per reading instead of
/// three (open, read, close), and no path lookup. For the files read tens of times a second. Kernel text files
/// (procfs, cgroupfs) render their contents afresh on every read from offset 0.
#[derive(Debug)]
pub(crate) struct KeptFile {
    path: PathBuf,
    file: Option<File>,
}

impl KeptFile {
    /// Opens nothing yet: the first read does.
    pub(crate) fn new(path: PathBuf) -> KeptFile {
        KeptFile { path, file: None }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole file into `bytes` (cleared first). A failed read closes the file and tries once more
    /// with a fresh open (a cgroup removed and made again, a descriptor gone stale).
    pub(crate) fn read_into(&mut self, bytes: &mut Vec<u8>) -> io::Result<()> {
        match self.read_kept(bytes) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.file = None;
                self.read_kept(bytes)
            }
        }
    }

    fn read_kept(&mut self, bytes: &mut Vec<u8>) -> io::Result<()> {
        bytes.clear();
        let file = match &mut self.file {
            Some(file) => file,
            empty => empty.insert(File::open(&self.path)?),
        };
        // The small files read here fit in one read; the loop covers any that do not.
        if bytes.capacity() < 512 {
            bytes.reserve(512);
        }
        loop {
            let filled = bytes.len();
            if filled == bytes.capacity() {
                bytes.reserve(filled);
            }
            let spare = bytes.capacity() - filled;
            bytes.resize(filled + spare, 0);
            let read = match file.read_at(&mut bytes[filled..], filled as u64) {
                Ok(read) => read,
                Err(error) => {
                    bytes.truncate(filled);
                    return Err(error);
                }
            };
            bytes.truncate(filled + read);
            // A short read is the end: procfs and cgroupfs files render whole into a buffer that has room, and a
            // regular file reads short only at its end. It saves the second system call that would return 0.
            if read < spare {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_file_reads_its_current_contents_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage");
        std::fs::write(&path, "123\n").unwrap();
        let mut kept = KeptFile::new(path.clone());
        let mut bytes = Vec::new();
        kept.read_into(&mut bytes).unwrap();
        assert_eq!(bytes, b"123\n");
        // Rewritten in place (as a kernel file renders anew): the kept descriptor sees the new contents.
        std::fs::write(&path, "4567890\n").unwrap();
        kept.read_into(&mut bytes).unwrap();
        assert_eq!(bytes, b"4567890\n");
        // Larger than the first buffer: read whole.
        let long = "x".repeat(5000);
        std::fs::write(&path, &long).unwrap();
        kept.read_into(&mut bytes).unwrap();
        assert_eq!(bytes.len(), 5000);
    }

    #[test]
    fn a_kept_file_reopens_after_it_was_replaced_and_fails_when_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage");
        std::fs::write(&path, "1").unwrap();
        let mut kept = KeptFile::new(path.clone());
        let mut bytes = Vec::new();
        kept.read_into(&mut bytes).unwrap();
        std::fs::remove_file(&path).unwrap();
        // The open descriptor still reads the unlinked file; once gone for good, a new open is what fails.
        kept.file = None;
        assert!(kept.read_into(&mut bytes).is_err());
        std::fs::write(&path, "2").unwrap();
        kept.read_into(&mut bytes).unwrap();
        assert_eq!(bytes, b"2");
    }

    #[test]
    fn procfs_statm_reads_again_from_the_start() {
        let mut kept = KeptFile::new(PathBuf::from("/proc/self/statm"));
        let mut bytes = Vec::new();
        if kept.read_into(&mut bytes).is_err() {
            return; // not Linux
        }
        let first = String::from_utf8(bytes.clone()).unwrap();
        let _grow = vec![1u8; 8 << 20];
        kept.read_into(&mut bytes).unwrap();
        let second = String::from_utf8(bytes).unwrap();
        assert_eq!(first.split_whitespace().count(), 7, "{first}");
        assert_eq!(second.split_whitespace().count(), 7, "{second}");
    }
}
