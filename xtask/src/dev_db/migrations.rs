//! Django migrations: which a snapshot had applied (recorded whole at save time, since a
//! snapshot's database takes no connections) against the migration files of the checkout.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// `(app, migration)`, as `django_migrations` names them.
pub(super) type Migration = (String, String);

/// The migration files of the checkout under `root`: `<app>/migrations/<digit>*.py`, found
/// down to a few levels, outside hidden directories and build output. None when there are none.
pub(super) fn in_checkout(root: &Path) -> Option<BTreeSet<Migration>> {
    let mut found = BTreeSet::new();
    let mut dirs: Vec<(PathBuf, u32)> = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type().is_ok_and(|t| t.is_dir())
                || name.starts_with('.')
                || matches!(name.as_str(), "target" | "node_modules" | "__pycache__")
            {
                continue;
            }
            if name == "migrations" {
                found.extend(files_of(&entry.path()));
            } else if depth < 6 {
                dirs.push((entry.path(), depth + 1));
            }
        }
    }
    (!found.is_empty()).then_some(found)
}

fn files_of(migrations: &Path) -> Vec<Migration> {
    let app = migrations
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(entries) = fs::read_dir(migrations) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let stem = file.strip_suffix(".py")?;
            stem.starts_with(|c: char| c.is_ascii_digit())
                .then(|| (app.clone(), stem.to_string()))
        })
        .collect()
}

/// One line saying how a snapshot's applied migrations and the checkout's files differ;
/// none when they fit.
pub(super) fn compare(applied: &[Migration], checkout: &BTreeSet<Migration>) -> Option<String> {
    let applied: BTreeSet<&Migration> = applied.iter().collect();
    // Only the apps the checkout has migrations for: Django's own (auth, admin, …) live in
    // the installed packages, not in the checkout.
    let apps: BTreeSet<&str> = checkout.iter().map(|(app, _)| app.as_str()).collect();
    let only_snapshot: Vec<String> = applied
        .iter()
        .filter(|m| apps.contains(m.0.as_str()) && !checkout.contains(*m))
        .map(|(app, name)| format!("{app}.{name}"))
        .collect();
    let only_checkout: Vec<String> = checkout
        .iter()
        .filter(|m| !applied.contains(m))
        .map(|(app, name)| format!("{app}.{name}"))
        .collect();
    let shown = |list: &[String]| match list.len() {
        0..=3 => list.join(", "),
        n => format!("{} and {} more", list[..3].join(", "), n - 3),
    };
    match (only_snapshot.is_empty(), only_checkout.is_empty()) {
        (true, true) => None,
        (false, true) => Some(format!(
            "the snapshot has migrations this checkout lacks: {}",
            shown(&only_snapshot)
        )),
        (true, false) => Some(format!(
            "this checkout has migrations the snapshot has not applied: {}",
            shown(&only_checkout)
        )),
        (false, false) => Some(format!(
            "the snapshot has migrations this checkout lacks: {}; the checkout has some it has not applied: {}",
            shown(&only_snapshot),
            shown(&only_checkout)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(app: &str, name: &str) -> Migration {
        (app.to_string(), name.to_string())
    }

    #[test]
    fn migration_files_are_found_per_app_and_compared_both_ways() {
        let root = std::env::temp_dir().join(format!("np-migrations-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for file in [
            "netpoint/dcim/migrations/0001_initial.py",
            "netpoint/dcim/migrations/0002_rack.py",
            "netpoint/dcim/migrations/__init__.py",
            "netpoint/ipam/migrations/0001_initial.py",
            ".venv/lib/django/contrib/auth/migrations/0001_initial.py",
        ] {
            let path = root.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "").unwrap();
        }
        let files = in_checkout(&root).unwrap();
        assert_eq!(
            files,
            BTreeSet::from([
                m("dcim", "0001_initial"),
                m("dcim", "0002_rack"),
                m("ipam", "0001_initial")
            ])
        );
        let same = [
            m("auth", "0001_initial"),
            m("dcim", "0001_initial"),
            m("dcim", "0002_rack"),
            m("ipam", "0001_initial"),
        ];
        assert_eq!(compare(&same, &files), None);
        let behind = compare(&same[..2], &files).unwrap();
        assert!(
            behind.contains("has not applied: dcim.0002_rack, ipam.0001_initial"),
            "{behind}"
        );
        let mut ahead = same.to_vec();
        ahead.push(m("dcim", "0003_cable"));
        let ahead = compare(&ahead, &files).unwrap();
        assert!(ahead.contains("lacks: dcim.0003_cable"), "{ahead}");
        assert!(!ahead.contains("auth"), "{ahead}");
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(in_checkout(&root), None);
    }
}
