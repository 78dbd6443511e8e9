//! Writing the media as `netpoint/media/` in a gzip tar, hashing each file on the way.

use std::{
    fs::File,
    io::{self, Write},
    path::Path,
    sync::mpsc,
};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use super::gz::{write_members, GzMembers};
use super::sums::hex;
use super::{Entry, Hashed, Kind, ARCHIVE_PREFIX};

/// Writes the tree as a gzip tar with members under `netpoint/media/`, hashing each file
/// while it is read. Returns the hashes for `media.sha256`.
///
/// The tar stream is cut into pieces compressed on every core and written, by a thread of
/// their own, as consecutive gzip members, which `gzip -d`, `tar -xzf` and [`extract_archive`]
/// read as one stream.
pub fn write_archive(
    root: &Path,
    entries: &[Entry],
    out: impl Write + Send,
    on_file: &dyn Fn(u64),
) -> anyhow::Result<Vec<Hashed>> {
    let (to_writer, compressed) = mpsc::channel();
    let (recycle, recycled) = mpsc::channel();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_members(out, compressed, recycle));
        let archived = write_tar(root, entries, GzMembers::new(to_writer, recycled), on_file);
        match writer.join() {
            Ok(Ok(())) => archived,
            // The writer's error is why the tar side stopped too.
            Ok(Err(err)) => Err(err).context("writing the media archive"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

pub fn write_tar(
    root: &Path,
    entries: &[Entry],
    members: GzMembers,
    on_file: &dyn Fn(u64),
) -> anyhow::Result<Vec<Hashed>> {
    let mut tar = tar::Builder::new(members);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    tar.append_dir("netpoint/", root)
        .context("archiving the media root")?;
    tar.append_dir(ARCHIVE_PREFIX, root)
        .context("archiving the media root")?;
    let mut hashed = Vec::new();
    for entry in entries {
        let path = root.join(&entry.rel);
        let name = Path::new(ARCHIVE_PREFIX).join(&entry.rel);
        match &entry.kind {
            Kind::Dir => tar.append_dir(&name, &path)?,
            Kind::Symlink { .. } => tar.append_path_with_name(&path, &name)?,
            Kind::File { .. } => {
                let mut file =
                    File::open(&path).with_context(|| format!("reading {}", path.display()))?;
                let meta = file.metadata()?;
                let mut header = tar::Header::new_gnu();
                header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                // The header (and a long-name entry when needed) from tar, then the data read
                // straight into the stream rather than through `io::copy`'s small buffer.
                tar.append_data(&mut header, &name, io::empty())
                    .with_context(|| format!("archiving {}", path.display()))?;
                let mut hasher = Sha256::new();
                let same_size = tar
                    .get_mut()
                    .append_file(&mut file, meta.len(), &mut hasher)
                    .with_context(|| format!("archiving {}", path.display()))?;
                if !same_size {
                    bail!(
                        "{} changed while it was archived: run again",
                        path.display()
                    );
                }
                on_file(meta.len());
                hashed.push(Hashed {
                    rel: entry.rel.clone(),
                    sha256: hex(&hasher.finalize()),
                    size: meta.len(),
                });
            }
        }
    }
    tar.into_inner()
        .and_then(GzMembers::finish)
        .context("finishing the media archive")?;
    Ok(hashed)
}
