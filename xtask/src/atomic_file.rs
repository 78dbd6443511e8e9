//! Files and directories that appear whole or not at all: written beside their final place,
//! then renamed over it.

use std::{
    fs,
    io::{BufWriter, Write},
    os::unix::fs::PermissionsExt,
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

/// Swaps a fully prepared directory `staged` into `target`. An existing `target` is moved
/// aside first and removed only once the new one is in place; on failure it is put back.
pub fn replace_dir(staged: &Path, target: &Path) -> anyhow::Result<()> {
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
    if had_target {
        fs::remove_dir_all(&aside)
            .with_context(|| format!("removing the previous tree at {}", aside.display()))?;
    }
    Ok(())
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
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
        }
    }
}
