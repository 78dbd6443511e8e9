//! The uploaded-media tree: walking it, copying it verified, its SHA-256 list in `sha256sum`
//! format, and packing or unpacking it as `netpoint/media/` in a gzip tar whose members are
//! compressed on every core.

mod archive;
mod copy;
mod extract;
mod gz;
mod listed;
mod origins;
mod sums;
mod walk;

#[cfg(test)]
mod tests;

use std::{fs::File, io, io::Read, path::PathBuf};

pub use archive::write_archive;
pub use copy::{
    copy_from_live, copy_to_live, copy_tree, copy_verified, settle_origins, unchanged_file,
    Tracked, TreeCopy,
};
pub use extract::{extract_archive, extract_tar, Listed, Member};
pub use listed::copy_listed;
pub use origins::{Origins, Stamp};
pub use sums::{
    hash_all, hash_file, hash_reader, hex, parse_sha256_list, parse_sums, print_sums, sha256_list,
    sums_line, verify,
};
pub use walk::{count, scan, scan_totals};

/// Where a tar archive keeps the media, as `tar -czf x netpoint/media/` from an installation root.
pub const ARCHIVE_PREFIX: &str = "netpoint/media/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        size: u64,
    },
    /// A symbolic link whose target stays inside the root.
    Symlink {
        target: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the media root.
    pub rel: PathBuf,
    pub kind: Kind,
}

/// One file and its SHA-256, as in a `sha256sum` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    pub rel: PathBuf,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
}

pub fn totals(files: &[Hashed]) -> Totals {
    Totals {
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.size).sum(),
    }
}

/// Bytes per read: large enough that syscalls cost nothing, small enough to hash from cache.
const READ_BUF: usize = 256 * 1024;

fn read_buffer() -> Vec<u8> {
    vec![0; READ_BUF]
}

fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}
