//! What arrives checked against what the host listed: the end of the `tar` stream, the
//! CRC POSIX `cksum` computes, and the files in place against the listing.

use std::{fs, io::Read, path::Path};

use anyhow::{bail, Context as _};

use super::listing::{Listing, Tree};

/// A reader that reports how much went through it.
pub(super) struct Counted<'a, R> {
    pub(super) inner: R,
    pub(super) on_read: &'a dyn Fn(u64),
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(n as u64);
        Ok(n)
    }
}

/// What follows a tar archive's end: `tar` pads its output to whole records (10 KiB for GNU
/// tar) and nothing else; more than a little is refused.
pub(super) fn drain_padding(stream: &mut impl std::io::Read) -> anyhow::Result<()> {
    const LIMIT: u64 = 1 << 20;
    let mut rest = stream.take(LIMIT + 1);
    let mut buf = [0u8; 64 * 1024];
    let mut seen = 0u64;
    loop {
        let n = rest
            .read(&mut buf)
            .context("reading the end of the tar stream")?;
        if n == 0 {
            return Ok(());
        }
        seen += n as u64;
        if seen > LIMIT || buf[..n].iter().any(|&b| b != 0) {
            bail!("data after the end of the tar stream: not an archive of the media tree");
        }
    }
}

/// POSIX `cksum`'s CRC of what `read` gives, and its size: CRC-32/CKSUM over the data and
/// then its length, least significant byte first.
pub fn cksum(mut read: impl std::io::Read) -> std::io::Result<(u32, u64)> {
    const CKSUM: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_CKSUM);
    let mut digest = CKSUM.digest();
    let mut buf = vec![0; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = read.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        size += n as u64;
    }
    let mut len = size;
    while len > 0 {
        digest.update(&[(len & 0xff) as u8]);
        len >>= 8;
    }
    Ok((digest.finalize(), size))
}

/// Whether the files under `root` are exactly the listed ones, each with its listed size,
/// and those in `sums` (the fetched ones) with the host's CRC; else what differs, for the
/// message.
pub(super) fn verify_against(root: &Path, sums: &Listing, tree: &Tree) -> Result<(), String> {
    let mut seen = 0usize;
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|err| err.to_string())?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        seen += 1;
        let Some(listed) = tree.files.get(rel) else {
            return Err(format!("{} was not listed", rel.display()));
        };
        let size = entry.metadata().map_err(|err| err.to_string())?.len();
        if size != listed.size {
            return Err(format!(
                "{} was listed with {} bytes and arrived with {size}",
                rel.display(),
                listed.size
            ));
        }
        if let Some(&expected) = sums.get(rel) {
            let file = fs::File::open(entry.path()).map_err(|err| err.to_string())?;
            if cksum(file).map_err(|err| err.to_string())? != expected {
                return Err(format!("{} differs from its listing", rel.display()));
            }
        }
    }
    match seen == tree.files.len() {
        true => Ok(()),
        false => Err(format!("{} files listed, {seen} arrived", tree.files.len())),
    }
}
