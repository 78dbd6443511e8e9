//! A media directory on the SSH host, read with nothing but `sh`, `find`, `cksum` and `tar`
//! there, through the run's connection.
//!
//! The host lists its tree (with GNU `find -printf`: type, mode, size, modification time and
//! link target of every entry; elsewhere with `cksum`, which reads every file, and POSIX
//! `find`). Against an earlier copy, files of the same size, time and mode are linked from it
//! and only the rest is fetched. The `tar` stream may hold only what the listing holds, each
//! member as what it was listed as; modes keep their permission bits only; each fetched file is
//! checked against the CRC and size the host's `cksum` gives for it and the size it was listed
//! with, so a file that changed on the way fails the run instead of arriving cut short.

use std::{
    fs,
    io::Write,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use anyhow::{bail, Context as _};

use super::Tunnel;
use crate::remedy::Remedy;
use crate::{media, process, term};

mod listing;
mod verify;

pub use listing::Tree;
use listing::{
    parse_listing, parse_posix_listing, parse_tree, FileMeta, Listing, FIND_PRINTF, POSIX_LISTING,
};
use verify::{drain_padding, verify_against, Counted};

pub struct RemoteMedia<'a> {
    pub tunnel: &'a Tunnel,
    pub dir: String,
}

impl RemoteMedia<'_> {
    /// `DEST:DIR`, for messages.
    pub fn shown(&self) -> String {
        format!("{}:{}", self.tunnel.remote.dest, self.dir)
    }

    /// `cd DIR && <then>` on the host, through the run's connection.
    fn command(&self, then: &str) -> Command {
        let script = format!("cd -- {} && {then}", sh_quote(&self.dir));
        let control = self.tunnel.dir.path().join("control");
        let mut command = self.tunnel.remote.command_with(
            &[
                "-T",
                "-S",
                &control.to_string_lossy(),
                "-o",
                "ControlMaster=no",
            ],
            &script,
        );
        command.stdin(Stdio::null()).stderr(Stdio::piped());
        if term::verbose() {
            term::detail(format!("{command:?}"));
        }
        command
    }

    /// Runs `then` in the directory with `input` on its standard input; its output, or a
    /// one-line failure naming the host.
    fn run(&self, what: &str, then: &str, input: Option<Vec<u8>>) -> anyhow::Result<Vec<u8>> {
        let mut command = self.command(then);
        command.stdout(Stdio::piped());
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = process::spawn(&mut command)
            .with_context(|| format!("{what} of the media at {}", self.shown()))?;
        let feed = input.map(|bytes| {
            let mut stdin = child.stdin.take().unwrap();
            thread::spawn(move || stdin.write_all(&bytes))
        });
        let out = child
            .wait_with_output()
            .with_context(|| format!("{what} of the media at {}", self.shown()))?;
        if let Some(feed) = feed {
            let _ = feed.join();
        }
        process::check_interrupted()?;
        if !out.status.success() {
            bail!(self.remote_failure(what, &String::from_utf8_lossy(&out.stderr)));
        }
        Ok(out.stdout)
    }

    /// The tree there; fails naming the host when the directory is not there or not readable.
    pub fn list(&self) -> anyhow::Result<Tree> {
        if let Ok(out) = self.run("listing", FIND_PRINTF, None) {
            if let Ok(tree) = parse_tree(&out) {
                return Ok(tree);
            }
        }
        // No GNU find there (or a listing it could not finish: cksum says why).
        let out = self.run("listing", POSIX_LISTING, None)?;
        parse_posix_listing(&out).with_context(|| format!("listing the media at {}", self.shown()))
    }

    /// Fills the new directory `dst` with the tree: files unchanged since `previous` (an
    /// earlier copy on the same file system) linked from it, the rest fetched as one `tar`
    /// stream, unpacked as safely as an archive is, refused when it holds anything the listing
    /// does not, and checked against the host's CRCs and the listed sizes.
    /// Returns every file, and of them those linked.
    pub fn fetch(
        &self,
        tree: &Tree,
        previous: Option<&Path>,
        dst: &Path,
    ) -> anyhow::Result<media::TreeCopy> {
        let totals = tree.totals();
        if let Some(sums) = &tree.sums {
            self.fetch_all(tree, sums, dst)?;
            return Ok(media::TreeCopy {
                all: totals,
                linked: media::Totals::default(),
            });
        }
        let previous = previous.and_then(|p| fs::canonicalize(p).ok());
        let unchanged: Vec<&PathBuf> = match &previous {
            Some(previous) => tree
                .files
                .iter()
                .filter(|(rel, meta)| {
                    media::unchanged_file(previous, rel, meta.size, |was| same_file(was, meta))
                        .is_some()
                })
                .map(|(rel, _)| rel)
                .collect(),
            None => Vec::new(),
        };
        let wanted: Vec<&PathBuf> = tree
            .files
            .keys()
            .filter(|rel| unchanged.binary_search(rel).is_err())
            .collect();
        let linked = media::Totals {
            files: unchanged.len() as u64,
            bytes: unchanged.iter().map(|rel| tree.files[*rel].size).sum(),
        };
        match unchanged.is_empty() {
            true => term::step(format!(
                "fetching media {} → {} ({} files, {})",
                self.shown(),
                dst.display(),
                totals.files,
                term::human_bytes(totals.bytes)
            )),
            false => term::step(format!(
                "fetching media {} → {}: {} of {} files new or changed ({}), {} unchanged since the previous copy",
                self.shown(),
                dst.display(),
                wanted.len(),
                totals.files,
                term::human_bytes(totals.bytes - linked.bytes),
                unchanged.len()
            )),
        }
        let names =
            |rels: &mut dyn Iterator<Item = &PathBuf>, end: u8| -> anyhow::Result<Vec<u8>> {
                let mut list = Vec::new();
                for rel in rels {
                    if rel.as_os_str().as_bytes().contains(&b'\n') {
                        bail!(
                            "media file {:?} at {} has a line break in its name: rename it",
                            rel,
                            self.shown()
                        );
                    }
                    list.extend_from_slice(b"./");
                    list.extend_from_slice(rel.as_os_str().as_bytes());
                    list.push(end);
                }
                Ok(list)
            };
        let mut sums = if wanted.is_empty() {
            Listing::new()
        } else if unchanged.is_empty() && !tree.partial {
            parse_listing(&self.run("cksum", "exec find . -type f -exec cksum {} +", None)?)?
        } else {
            parse_listing(&self.run(
                "cksum",
                "while IFS= read -r f; do cksum \"$f\" || exit; done",
                Some(names(&mut wanted.iter().copied(), b'\n')?),
            )?)?
        };
        // Each file fetched is checked against its CRC: one the host's cksum did not see was
        // removed or replaced since the listing. (Of the CRCs of a whole tree, only the
        // listed files' count.)
        if let Some(gone) = wanted.iter().find(|rel| !sums.contains_key(**rel)) {
            return Err(self.changed(&format!("{} is gone", gone.display())));
        }
        sums.retain(|rel, _| tree.files.contains_key(rel));
        // Only what was asked for may come back, each as what it was listed as.
        let asked = |rel: &Path, member: media::Member<'_>| match member {
            media::Member::File => wanted.binary_search_by(|w| w.as_path().cmp(rel)).is_ok(),
            media::Member::Symlink(_) => tree.holds(rel, member),
            media::Member::Dir => false,
        };
        let mut fetch = wanted.iter().copied().chain(tree.links.keys()).peekable();
        match fetch.peek() {
            None => fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?,
            // Names as they are: NUL-separated, never unquoted (a `\` stays a `\`).
            Some(_) => self.untar(
                "exec tar --null --no-unquote -cf - -T -",
                Some(names(&mut fetch, 0)?),
                &sums,
                &asked,
                dst,
            )?,
        }
        if let Some(previous) = &previous {
            for rel in &unchanged {
                let (from, to) = (previous.join(rel), dst.join(rel));
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::hard_link(&from, &to)
                    .or_else(|_| fs::copy(&from, &to).map(drop))
                    .with_context(|| {
                        format!("linking {} into {}", from.display(), dst.display())
                    })?;
            }
        }
        for (rel, mode) in tree.dirs.iter().rev() {
            let to = dst.join(rel);
            fs::create_dir_all(&to)?;
            if let Some(mode) = mode {
                fs::set_permissions(&to, fs::Permissions::from_mode(dir_mode(*mode)))?;
            }
        }
        verify_against(dst, &sums, tree).map_err(|why| self.changed(&why))?;
        Ok(media::TreeCopy {
            all: totals,
            linked,
        })
    }

    /// The whole tree as one `tar -cf - .`, for a host without GNU tools, checked file by
    /// file against the host's CRCs.
    fn fetch_all(&self, tree: &Tree, sums: &Listing, dst: &Path) -> anyhow::Result<()> {
        let totals = tree.totals();
        term::step(format!(
            "fetching media {} → {} ({} files, {})",
            self.shown(),
            dst.display(),
            totals.files,
            term::human_bytes(totals.bytes)
        ));
        let listed = |rel: &Path, member: media::Member<'_>| tree.holds(rel, member);
        self.untar("exec tar -cf - .", None, sums, &listed, dst)?;
        verify_against(dst, sums, tree).map_err(|why| self.changed(&why))
    }

    fn changed(&self, why: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "media at {} changed while they were fetched ({why}): run the clone again",
            self.shown()
        )
    }

    /// Runs a `tar -c` there and unpacks its stream into the new directory `dst`.
    fn untar(
        &self,
        script: &str,
        input: Option<Vec<u8>>,
        sums: &Listing,
        listed: media::Listed<'_>,
        dst: &Path,
    ) -> anyhow::Result<()> {
        let mut command = self.command(script);
        command.stdout(Stdio::piped());
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = process::spawn(&mut command)
            .with_context(|| format!("fetching the media from {}", self.shown()))?;
        let feed = input.map(|bytes| {
            let mut stdin = child.stdin.take().unwrap();
            thread::spawn(move || stdin.write_all(&bytes))
        });
        let stderr = process::collect_stderr(child.stderr.take().unwrap());
        let bar = term::bytes_progress("media", Some(sums.values().map(|&(_, size)| size).sum()));
        let mut stream = Counted {
            inner: child.stdout.take().unwrap(),
            on_read: &|n| bar.inc(n),
        };
        // Read to the end: tar pads its output past the archive's end, and a reader that left
        // early would fail the sender on a closed pipe.
        let unpacked = media::extract_tar(&mut stream, None, dst, Some(listed))
            .and_then(|()| drain_padding(&mut stream));
        drop(stream);
        bar.finish_and_clear();
        let status = child.wait()?;
        if let Some(feed) = feed {
            let _ = feed.join();
        }
        let said = stderr.join().unwrap_or_default();
        process::check_interrupted()?;
        let unpacked =
            unpacked.with_context(|| format!("unpacking the media from {}", self.shown()));
        match (unpacked, status.success()) {
            (Ok(()), true) => Ok(()),
            // Our side gave up first (the host's tar then only saw its pipe close).
            (Err(err), _)
                if status.success() || said.trim().is_empty() || said.contains("Broken pipe") =>
            {
                Err(err)
            }
            _ => bail!(self.remote_failure("tar", &said)),
        }
    }

    fn remote_failure(&self, what: &str, said: &str) -> String {
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim();
        // GNU tar's words for a file that changed, went or shrank after the listing.
        let moved = [
            "Cannot stat",
            "file changed as we read it",
            "File shrank",
            "file removed before we read it",
        ];
        let gone = what == "cksum" && said.contains("No such file or directory");
        if gone || (what == "tar" && moved.iter().any(|m| said.contains(m))) {
            return self.changed(last).to_string();
        }
        if said.contains("can't cd") || (said.contains("cd") && said.contains("No such file")) {
            return format!(
                "no media directory {} on {}: {} ({last})",
                self.dir,
                self.tunnel.remote.dest,
                Remedy::SourceMediaPath
            );
        }
        format!(
            "{what} of the media at {} failed on that host: {last}; check that {} can read every file there, then run again",
            self.shown(),
            self.tunnel.remote.dest
        )
    }
}

/// Whether a file of the earlier copy (its size already the host's) has the host's time and mode.
fn same_file(was: &fs::Metadata, meta: &FileMeta) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.mtime == Some(was.mtime()) && was.mode() & 0o777 == meta.mode & 0o777
}

/// A directory's mode as it is installed: its permission bits, never setuid, setgid or
/// sticky, and always open to us (so that it can be filled and replaced later).
fn dir_mode(listed: u32) -> u32 {
    (listed & 0o777) | 0o700
}

/// `'it'\''s'`: one word for a POSIX shell, whatever it holds.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::{listing::*, verify::*, *};

    #[test]
    fn find_records_become_a_tree() {
        let text = b". 755 4096 1700000000.5 .\0\0d 2750 4096 1700000000.25 ./a b\0\0\
f 4644 12 1700000123.9990000000 ./a b/it's\nodd\0\0l 777 3 1700000000.0 ./a b/link\0it's\nodd\0";
        let tree = parse_tree(text).unwrap();
        assert_eq!(
            tree.dirs.clone().into_iter().collect::<Vec<_>>(),
            vec![(PathBuf::from("a b"), Some(0o2750))]
        );
        assert_eq!(
            tree.links.clone().into_iter().collect::<Vec<_>>(),
            vec![(PathBuf::from("a b/link"), Some(PathBuf::from("it's\nodd")))]
        );
        let meta = tree.files[Path::new("a b/it's\nodd")];
        assert_eq!(
            (meta.size, meta.mtime, meta.mode),
            (12, Some(1700000123), 0o4644)
        );
        assert_eq!(tree.totals().files, 1);
        assert!(parse_tree(b"p 644 0 1.0 ./fifo\0\0")
            .unwrap_err()
            .to_string()
            .contains("special file"));
        assert!(parse_tree(b"f 644 x 1.0 ./a\0\0").is_err());
        assert!(parse_tree(b"f 644 1 1.0 ./a\0").is_err(), "cut short");
        assert!(parse_tree(b"f 644 1 1.0 a\0\0").is_err());
        assert!(parse_tree(b"").unwrap().files.is_empty());
    }

    #[test]
    fn a_posix_listing_becomes_a_tree_with_its_crcs() {
        let text = b"4294967295 3 ./a/f\n1 0 ./g\n/\n.\n./a\n/\n./l\n/\n/\n";
        let tree = parse_posix_listing(text).unwrap();
        assert_eq!(tree.totals().files, 2);
        assert_eq!(tree.dirs.keys().collect::<Vec<_>>(), vec![Path::new("a")]);
        assert_eq!(tree.links.get(Path::new("l")), Some(&None));
        assert_eq!(
            tree.sums.as_ref().unwrap()[Path::new("a/f")],
            (4294967295, 3)
        );
        let special = b"/\n.\n/\n/\n./fifo\n/\n";
        assert!(parse_posix_listing(special)
            .unwrap_err()
            .to_string()
            .contains("./fifo is a special file"));
        assert!(
            parse_posix_listing(b"1 0 ./g\n/\n.\n/\n").is_err(),
            "cut short"
        );
    }

    #[test]
    fn a_listing_holds_members_only_as_what_they_were_listed_as() {
        let tree =
            parse_tree(b"d 755 0 1.0 ./d\0\0f 644 1 1.0 ./d/f\0\0l 777 1 1.0 ./l\0d\0").unwrap();
        use media::Member::*;
        assert!(tree.holds(Path::new("d"), Dir));
        assert!(tree.holds(Path::new("d/f"), File));
        assert!(tree.holds(Path::new("l"), Symlink(Path::new("d"))));
        assert!(!tree.holds(Path::new("l"), Symlink(Path::new("/etc"))));
        assert!(!tree.holds(Path::new("d"), File));
        assert!(!tree.holds(Path::new("d/f"), Symlink(Path::new("x"))));
        assert!(!tree.holds(Path::new("other"), File));
        assert_eq!(dir_mode(0o2775), 0o775);
        assert_eq!(dir_mode(0o1000), 0o700);
    }

    #[test]
    fn only_zero_padding_may_follow_the_archive() {
        assert!(drain_padding(&mut &[0u8; 10240][..]).is_ok());
        assert!(drain_padding(&mut &b""[..]).is_ok());
        let mut junk = vec![0u8; 600];
        junk[599] = 1;
        assert!(drain_padding(&mut &junk[..]).is_err());
        assert!(drain_padding(&mut std::io::repeat(0)).is_err());
    }

    #[test]
    fn an_earlier_copy_counts_as_unchanged_only_with_the_same_size_time_and_mode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::write(root.join("f"), b"abc").unwrap();
        let had = fs::metadata(root.join("f")).unwrap();
        let meta = FileMeta {
            size: 3,
            mtime: Some(had.mtime()),
            mode: had.mode() & 0o7777,
        };
        let unchanged = |rel: &str, meta: FileMeta| {
            media::unchanged_file(&root, Path::new(rel), meta.size, |was| {
                same_file(was, &meta)
            })
            .is_some()
        };
        assert!(unchanged("f", meta));
        assert!(!unchanged("f", FileMeta { size: 4, ..meta }));
        assert!(!unchanged(
            "f",
            FileMeta {
                mtime: Some(1),
                ..meta
            }
        ));
        assert!(!unchanged(
            "f",
            FileMeta {
                mtime: None,
                ..meta
            }
        ));
        assert!(!unchanged(
            "f",
            FileMeta {
                mode: 0o600 ^ meta.mode,
                ..meta
            }
        ));
        assert!(!unchanged("missing", meta));
    }
}
