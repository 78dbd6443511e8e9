//! Files and directories that appear whole or not at all: written beside their final place,
//! then renamed over it.

use std::{
    fs,
    io::{BufWriter, Write},
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

/// Writes `path` through `fill`; on any error the previous file is untouched and no
/// temporary file is left behind.
pub fn write(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = parent_dir(path)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", file_name(path)))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .with_context(|| {
            format!(
                "cannot write to {}: check that it is writable",
                dir.display()
            )
        })?;
    {
        let mut out = BufWriter::new(tmp.as_file_mut());
        fill(&mut out)?;
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))?;
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

pub fn write_bytes(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write(path, |out| Ok(out.write_all(bytes)?))
}

/// The directory that holds `path`, which must exist.
pub fn parent_dir(path: &Path) -> anyhow::Result<PathBuf> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.exists() && !dir.is_dir() {
        bail!("{} is not a directory: choose another path", dir.display());
    }
    if !dir.is_dir() {
        bail!(
            "directory {} does not exist: create it or choose another path",
            dir.display()
        );
    }
    Ok(dir)
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into())
}

/// A directory being prepared beside (or inside) what it will replace, removed with all it
/// holds unless it was swapped in first: on an error, an interrupt or a panic alike.
pub struct StagingDir(pub PathBuf);

impl std::ops::Deref for StagingDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for StagingDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl StagingDir {
    /// The directory, kept: it is in its final place and no longer removed on drop.
    pub fn keep(self) -> PathBuf {
        let path = self.0.clone();
        std::mem::forget(self);
        path
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if fs::remove_dir_all(&self.0).is_err() && self.0.exists() {
            crate::process::note_left_behind();
        }
    }
}

/// Where a directory for `target` is prepared, on the file system it will be swapped into:
/// beside the directory `target` resolves to, or inside it when it is a mount point (a Docker
/// volume, an NFS share), which cannot be renamed.
pub fn staging_dir(target: &Path) -> anyhow::Result<PathBuf> {
    let real = resolve_target(target)?;
    Ok(if is_mount_point(&real) {
        real.join(format!(".netpoint-staging-{}", std::process::id()))
    } else {
        sibling(&real, "staging")
    })
}

/// Checks, before anything is changed, that a directory prepared by [`staging_dir`] can be
/// swapped into `target`: the staging place can be written and lies on `target`'s device.
pub fn check_swappable(target: &Path) -> anyhow::Result<()> {
    let staging = staging_dir(target)?;
    let real = resolve_target(target)?;
    let shown = target.display();
    fs::create_dir(&staging).with_context(|| {
        format!(
            "media directory {shown} cannot be replaced: cannot create {}; make it writable or choose another directory",
            staging.display()
        )
    })?;
    let devices = fs::metadata(&staging)
        .map(|s| s.dev())
        .and_then(|staged| fs::metadata(&real).map(|r| (staged, r.dev())));
    let _ = fs::remove_dir(&staging);
    if let Ok((staged, target_device)) = devices {
        if staged != target_device {
            bail!("media directory {shown} is on another device than {}: it cannot be swapped in one step; choose another directory", staging.display());
        }
    }
    Ok(())
}

/// The directory `target` stands for: itself, or where it points when it is a symbolic link
/// (the link stays, the directory it names gets the new contents).
fn resolve_target(target: &Path) -> anyhow::Result<PathBuf> {
    let Ok(meta) = fs::symlink_metadata(target) else {
        parent_dir(target)?;
        return Ok(target.to_path_buf());
    };
    if meta.file_type().is_symlink() {
        let points_to = fs::read_link(target).unwrap_or_default();
        let real = fs::canonicalize(target).with_context(|| {
            format!(
                "{} is a symbolic link to {}, which does not exist: create that directory or fix the link",
                target.display(),
                points_to.display()
            )
        })?;
        if !real.is_dir() {
            bail!(
                "{} points to {}, which is not a directory: fix the link",
                target.display(),
                real.display()
            );
        }
        return Ok(real);
    }
    if !meta.is_dir() {
        bail!(
            "{} is not a directory: choose another path",
            target.display()
        );
    }
    Ok(target.to_path_buf())
}

/// Whether `dir` is where a file system is mounted: another device than its parent, or
/// listed as a mount point (bind mounts keep their device).
fn is_mount_point(dir: &Path) -> bool {
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    let Some(parent) = dir.parent() else {
        return true;
    };
    match (fs::metadata(&dir), fs::metadata(parent)) {
        (Ok(d), Ok(p)) if d.dev() != p.dev() || d.ino() == p.ino() => return true,
        _ => {}
    }
    let mounts = fs::read(MOUNTINFO).unwrap_or_default();
    mounts
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .any(|point| unescape_mount_point(point) == dir.as_os_str().as_bytes())
}

/// Linux's list of mounts, for a bind mount of a directory of the same file system; other
/// systems have no such file (and macOS no bind mounts), so the device check above decides.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// `/proc/self/mountinfo` writes a space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// Swaps a fully prepared directory `staged` into `target`. An existing `target` is moved
/// aside first and removed only once the new one is in place; on failure it is put back.
/// A `target` that is a symbolic link keeps it; the directory it points to is swapped.
/// When `staged` lies inside `target` (a mount point, see [`staging_dir`]), the contents are
/// swapped instead, entry by entry.
pub fn replace_dir(staged: &Path, target: &Path) -> anyhow::Result<()> {
    if let Some((old, target)) = replace_dir_keeping_old(staged, target)? {
        remove_replaced(&old, &target);
    }
    Ok(())
}

/// [`replace_dir`], but what it replaced is left where it was moved to, for the caller to
/// look at and remove with [`remove_replaced`]: returns that place and the directory that
/// was replaced (`target` resolved), or `None` when there was nothing to replace.
pub fn replace_dir_keeping_old(
    staged: &Path,
    target: &Path,
) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    let target = resolve_target(target)?;
    if staged.parent() == Some(target.as_path()) {
        let old = replace_contents(staged, &target)?;
        return Ok(Some((old, target)));
    }
    let target = &target;
    let aside = sibling(target, "old");
    let had_target = target.exists();
    if had_target {
        fs::rename(target, &aside).with_context(|| format!("moving {} aside", target.display()))?;
    }
    if let Err(err) = fs::rename(staged, target) {
        if had_target {
            let _ = fs::rename(&aside, target);
        }
        return Err(err).with_context(|| format!("moving the new tree into {}", target.display()));
    }
    Ok(had_target.then(|| (aside, target.clone())))
}

/// Removes `old`, what a swap replaced at `target`. It is already out of the way: failing
/// to remove it is a warning (the next run removes it), not a failure.
pub fn remove_replaced(old: &Path, target: &Path) {
    if let Err(err) = fs::remove_dir_all(old) {
        crate::term::warn(format!(
            "the new tree is in place at {}, but the previous one could not be removed ({err}): remove {} by hand",
            target.display(),
            old.display()
        ));
    }
}

/// [`replace_dir`] for a directory that cannot be renamed: its entries go into a hidden
/// directory inside it (returned, for the caller to remove), and the staged entries move up.
/// On failure every entry goes back where it was.
fn replace_contents(staged: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    let old = target.join(format!(".netpoint-old-{}", std::process::id()));
    fs::create_dir(&old).with_context(|| format!("creating {}", old.display()))?;
    let ours = |name: &std::ffi::OsStr| {
        let name = name.as_bytes();
        name.starts_with(b".netpoint-staging-") || name.starts_with(b".netpoint-old-")
    };
    let entries = |dir: &Path| -> anyhow::Result<Vec<std::ffi::OsString>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let name = entry?.file_name();
            if !ours(&name) {
                names.push(name);
            }
        }
        Ok(names)
    };
    let mut moved_old = Vec::new();
    let mut moved_new = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for name in entries(target)? {
            fs::rename(target.join(&name), old.join(&name))
                .with_context(|| format!("moving {} aside", target.join(&name).display()))?;
            moved_old.push(name);
        }
        for name in entries(staged)? {
            fs::rename(staged.join(&name), target.join(&name)).with_context(|| {
                format!("moving the new {} into place", target.join(&name).display())
            })?;
            moved_new.push(name);
        }
        Ok(())
    })();
    if let Err(err) = result {
        for name in moved_new.iter().rev() {
            let _ = fs::rename(target.join(name), staged.join(name));
        }
        for name in moved_old.iter().rev() {
            let _ = fs::rename(old.join(name), target.join(name));
        }
        let _ = fs::remove_dir(&old);
        return Err(err);
    }
    if let Ok(meta) = fs::metadata(staged) {
        let _ = fs::set_permissions(target, meta.permissions());
    }
    let _ = fs::remove_dir(staged);
    Ok(old)
}

/// Removes leftovers of killed runs for a directory `target` swapped by [`replace_dir`]:
/// beside the directory it resolves to, and staging directories inside it.
pub fn remove_stale_staging(target: &Path) {
    let Ok(real) = resolve_target(target) else {
        return;
    };
    remove_stale_siblings(&real);
    let Ok(entries) = fs::read_dir(&real) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(".netpoint-staging-")
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| pid != std::process::id() && !crate::process::alive(pid)) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A hidden path beside `path` that names this process, such as `.media.staging-1234`.
pub fn sibling(path: &Path, what: &str) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!(
        ".{}.{what}-{}",
        file_name(path),
        std::process::id()
    ))
}

/// Removes leftovers of killed runs (`.name.staging-PID`, `.name.old-PID`) beside `path`
/// whose process is gone.
pub fn remove_stale_siblings(path: &Path) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!(".{}.", file_name(path));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((_, pid)) = rest.rsplit_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !crate::process::alive(pid) {
            let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
        }
    }
}

/// `path` with its links resolved; for a path that does not exist yet, its nearest existing
/// ancestor is resolved and the rest appended.
pub fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => resolved(parent).join(name),
        (_, Some(name)) => resolved(Path::new(".")).join(name),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_as_the_kernel_escapes_them() {
        assert_eq!(
            unescape_mount_point(br"/srv/net\040point\134media"),
            b"/srv/net point\\media"
        );
        assert_eq!(unescape_mount_point(br"/odd\9\777"), br"/odd\9\777");
        assert!(is_mount_point(Path::new("/")));
        #[cfg(target_os = "linux")]
        assert!(is_mount_point(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()));
    }

    #[test]
    fn contents_swap_in_place_and_links_stay_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir_all(real.join("old-dir")).unwrap();
        fs::write(real.join("old.txt"), b"old").unwrap();
        let staged = real.join(format!(".netpoint-staging-{}", std::process::id()));
        fs::create_dir_all(staged.join("new-dir")).unwrap();
        fs::write(staged.join("new-dir/new.txt"), b"new").unwrap();
        replace_dir(&staged, &real).unwrap();
        let mut names: Vec<_> = fs::read_dir(&real)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["new-dir"]);

        let link = dir.path().join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        let staged = staging_dir(&link).unwrap();
        assert_eq!(staged.parent(), Some(dir.path()));
        fs::create_dir(&staged).unwrap();
        fs::write(staged.join("newer.txt"), b"newer").unwrap();
        replace_dir(&staged, &link).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(real.join("newer.txt")).unwrap(), b"newer");
        assert!(!real.join("new-dir").exists());
    }
}
