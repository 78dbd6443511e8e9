//! What a copy of a media tree remembers of the live files it holds the contents of: each
//! one's device, inode and change time. The change time (ctime) moves forward at every
//! write, `chmod`, `utimes` and link, and no tool can set it back, unlike the size and the
//! modification time, which a file rewritten in place can keep (`touch -d`, `cp -p`,
//! `rsync --inplace -t`). A later copy links a file from an earlier one only when the live
//! file still has the identity recorded: unchanged since, whatever else it looks like.

use std::{
    collections::{hash_map::Entry, HashMap},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

/// A file as the file system knows it: which one (device, inode) and when it last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl Identity {
    pub fn of(meta: &fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The same file (device and inode), whenever it changed.
    pub fn same_file(&self, other: &Identity) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }

    /// Whether the file last changed before `stamp`. Change times come from a clock that
    /// ticks in steps of a few milliseconds: a file read in the step it changed in could
    /// change again within that step without its change time moving, so only a file that
    /// changed before the step the copy began in is recorded.
    pub fn before(&self, stamp: &Stamp) -> bool {
        self.ctime < stamp.0
    }
}

/// The file system's clock now, as a change time: that of a file made for the purpose.
#[derive(Debug, Clone, Copy)]
pub struct Stamp((i64, i64));

impl Stamp {
    /// Read in `dir`, which must be on the file system of the files compared with it.
    pub fn now(dir: &Path) -> anyhow::Result<Stamp> {
        let file = tempfile::tempfile_in(dir)
            .with_context(|| format!("cannot write to {}", dir.display()))?;
        let meta = file.metadata()?;
        Ok(Stamp((meta.ctime(), meta.ctime_nsec())))
    }
}

/// Per file (relative path), the identity of the live file whose contents the copy holds.
#[derive(Debug, Default, Clone)]
pub struct Origins {
    files: HashMap<PathBuf, Identity>,
}

/// The file as written: a version, the snapshot it belongs to, and one row per file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginsFile {
    netpoint_media_origins: u32,
    snapshot: String,
    /// `[path, device, inode, ctime seconds, ctime nanoseconds]`.
    files: Vec<(String, u64, u64, i64, i64)>,
}

const VERSION: u32 = 1;

impl Origins {
    pub fn get(&self, rel: &Path) -> Option<&Identity> {
        self.files.get(rel)
    }

    pub fn insert(&mut self, rel: PathBuf, identity: Identity) {
        self.files.insert(rel, identity);
    }

    pub fn into_files(self) -> impl Iterator<Item = (PathBuf, Identity)> {
        self.files.into_iter()
    }

    /// Writes the record of snapshot `snapshot` to `path`, atomically. A file whose name is
    /// not UTF-8 is left out: it is copied every time.
    pub fn write(&self, path: &Path, snapshot: &str) -> anyhow::Result<()> {
        let mut files: Vec<_> = self
            .files
            .iter()
            .filter_map(|(rel, id)| {
                let rel = rel.to_str()?.to_string();
                Some((rel, id.dev, id.ino, id.ctime.0, id.ctime.1))
            })
            .collect();
        files.sort();
        let text = serde_json::to_vec(&OriginsFile {
            netpoint_media_origins: VERSION,
            snapshot: snapshot.to_string(),
            files,
        })?;
        crate::atomic_file::write_bytes(path, &text)
    }

    /// Reads the record at `path`, which must belong to snapshot `snapshot`. Anything this
    /// tool did not write is an error naming the file and the place in it.
    pub fn read(path: &Path, snapshot: &str) -> anyhow::Result<Origins> {
        let text = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Origins::parse(&text, snapshot).with_context(|| format!("{}", path.display()))
    }

    fn parse(text: &[u8], snapshot: &str) -> anyhow::Result<Origins> {
        let file: OriginsFile = serde_json::from_slice(text)?;
        if file.netpoint_media_origins != VERSION {
            bail!(
                "key `netpoint_media_origins`: version {} where this tool writes {VERSION}",
                file.netpoint_media_origins
            );
        }
        if file.snapshot != snapshot {
            bail!(
                "key `snapshot`: `{}` where the snapshot is `{snapshot}`",
                file.snapshot
            );
        }
        let mut files = HashMap::with_capacity(file.files.len());
        for (rel, dev, ino, secs, nanos) in file.files {
            let path = PathBuf::from(&rel);
            if rel.is_empty() || !path.is_relative() {
                bail!("key `files`: `{rel}` is not a path inside the media");
            }
            let identity = Identity {
                dev,
                ino,
                ctime: (secs, nanos),
            };
            match files.entry(path) {
                Entry::Occupied(_) => bail!("key `files`: `{rel}` is listed twice"),
                Entry::Vacant(slot) => {
                    slot.insert(identity);
                }
            }
        }
        Ok(Origins { files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_back_as_written_and_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.png");
        fs::write(&file, b"a").unwrap();
        let mut origins = Origins::default();
        let id = Identity::of(&fs::metadata(&file).unwrap());
        origins.insert("x/a.png".into(), id);
        let path = dir.path().join("origins.json");
        origins.write(&path, "0123").unwrap();
        let back = Origins::read(&path, "0123").unwrap();
        assert_eq!(back.get(Path::new("x/a.png")), Some(&id));
        assert_eq!(back.files.len(), 1);

        let err = format!("{:#}", Origins::read(&path, "4567").unwrap_err());
        assert!(
            err.contains("origins.json") && err.contains("key `snapshot`"),
            "{err}"
        );
        for (text, needle) in [
            (
                r#"{"netpoint_media_origins":1,"snapshot":"0123","files":[],"extra":1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"netpoint_media_origins":2,"snapshot":"0123","files":[]}"#,
                "version 2",
            ),
            (
                r#"{"netpoint_media_origins":1,"snapshot":"0123","files":[["a",1,2,3]]}"#,
                "line 1",
            ),
            (
                r#"{"netpoint_media_origins":1,"snapshot":"0123","files":[["a",1,2,3,4],["a",1,2,3,4]]}"#,
                "listed twice",
            ),
            (
                r#"{"netpoint_media_origins":1,"snapshot":"0123","files":[["/etc/passwd",1,2,3,4]]}"#,
                "not a path inside",
            ),
        ] {
            fs::write(&path, text).unwrap();
            let err = format!("{:#}", Origins::read(&path, "0123").unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn a_rewrite_with_the_old_size_and_times_changes_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"first").unwrap();
        let meta = fs::metadata(&file).unwrap();
        let before = Identity::of(&meta);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let stamp = Stamp::now(dir.path()).unwrap();
        assert!(before.before(&stamp));
        fs::write(&file, b"other").unwrap();
        let times = fs::FileTimes::new()
            .set_accessed(meta.accessed().unwrap())
            .set_modified(meta.modified().unwrap());
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_times(times)
            .unwrap();
        let after = fs::metadata(&file).unwrap();
        assert_eq!(after.len(), meta.len());
        assert_eq!(after.modified().unwrap(), meta.modified().unwrap());
        assert_ne!(Identity::of(&after), before);
        assert!(Identity::of(&after).same_file(&before));
        assert!(!Identity::of(&after).before(&stamp));
    }
}
