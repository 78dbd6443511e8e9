//! Finding the client tools: on `PATH` and where each system's installers put them, and
//! what each one's `--version` tells (its major, whether it knows `\restrict`).

use std::{
    collections::HashSet,
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::Client;

/// Where a system's PostgreSQL installers put the client tools, besides `PATH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Linux and other Unix systems: the packages put them on `PATH` (Debian's behind its
    /// `pg_wrapper`, which [`find_clients`] looks through).
    Plain,
    /// macOS: Homebrew (`postgresql@N` and `libpq` are keg-only, so often not on `PATH`),
    /// Postgres.app and the EDB installer each keep their own directories.
    MacOs,
}

impl Layout {
    pub const HOST: Layout = match cfg!(target_os = "macos") {
        true => Layout::MacOs,
        false => Layout::Plain,
    };

    /// The `bin` directories of the installs under `root` (`/` but in tests), each with
    /// what to call it.
    pub fn install_dirs(self, root: &Path) -> Vec<(PathBuf, String)> {
        let mut dirs = Vec::new();
        if self == Layout::Plain {
            return dirs;
        }
        let mut each = |parent: &str, keep: &dyn Fn(&str) -> bool, label: &str| {
            let parent = root.join(parent);
            let Ok(entries) = std::fs::read_dir(&parent) else {
                return;
            };
            let mut found: Vec<(PathBuf, String)> = entries
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().into_string().ok()?;
                    keep(&name).then(|| (entry.path().join("bin"), format!("{label} {name}")))
                })
                .collect();
            found.sort();
            dirs.extend(found);
        };
        let brew = |name: &str| {
            name == "libpq"
                || name == "postgresql"
                || name
                    .strip_prefix("postgresql@")
                    .is_some_and(|major| major.parse::<u32>().is_ok())
        };
        let version =
            |name: &str| name == "latest" || name.split('.').all(|p| p.parse::<u32>().is_ok());
        // Apple silicon's Homebrew, then Intel's.
        each("opt/homebrew/opt", &brew, "Homebrew");
        each("usr/local/opt", &brew, "Homebrew");
        each(
            "Applications/Postgres.app/Contents/Versions",
            &version,
            "Postgres.app",
        );
        each("Library/PostgreSQL", &version, "EDB installer");
        dirs
    }

    /// Where a tool was looked for, for "no psql on PATH ...".
    pub(super) fn searched(self) -> &'static str {
        match self {
            Layout::Plain => "on PATH",
            Layout::MacOs => "on PATH, in Homebrew, Postgres.app or /Library/PostgreSQL",
        }
    }

    pub(super) fn install_hint(self, major: Option<u32>) -> String {
        match (self, major) {
            (Layout::Plain, Some(major)) => format!("postgresql-client-{major}"),
            (Layout::Plain, None) => "apt-get install postgresql-client".to_string(),
            (Layout::MacOs, Some(major)) => format!("`brew install postgresql@{major}`"),
            (Layout::MacOs, None) => "`brew install libpq`".to_string(),
        }
    }
}

/// Every client `name` there is: the one `PATH` (`search`) names first, then the
/// installs `layout` knows under `root`, newest first. One binary found twice (a link on
/// `PATH` into an install) is listed once, as found on `PATH`.
pub fn find_clients(
    layout: Layout,
    root: &Path,
    search: Option<&OsStr>,
    name: &str,
) -> Vec<Client> {
    let mut candidates = Vec::new();
    if let Some(path) = find_on_path(search, name) {
        candidates.push((path, "PATH".to_string()));
    }
    for (dir, label) in layout.install_dirs(root) {
        let path = dir.join(name);
        if is_executable(&path) {
            candidates.push((path, label));
        }
    }
    // Side by side: each one's `--version` is a process start.
    let probed: Vec<Option<Client>> = std::thread::scope(|scope| {
        let probes: Vec<_> = candidates
            .into_iter()
            .map(|(path, found)| scope.spawn(move || probe_client(search, name, path, found)))
            .collect();
        probes
            .into_iter()
            .map(|p| p.join().ok().flatten())
            .collect()
    });
    let mut clients: Vec<Client> = Vec::new();
    let mut seen = HashSet::new();
    for client in probed.into_iter().flatten() {
        let real = client.path.canonicalize().unwrap_or(client.path.clone());
        if seen.insert(real) {
            clients.push(client);
        }
    }
    let on_path = usize::from(clients.first().is_some_and(|c| c.found == "PATH"));
    clients[on_path..].sort_by_key(|c| std::cmp::Reverse(c.major));
    clients
}

/// The client at `path`, from its `--version`; none when it does not run.
fn probe_client(
    search: Option<&OsStr>,
    name: &str,
    path: PathBuf,
    found: String,
) -> Option<Client> {
    let version = |path: &Path| {
        let output = Command::new(path)
            .arg("--version")
            .envs(search.map(|p| ("PATH", p)))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    // Debian's `pg_wrapper` runs the newest installed psql whatever the cluster: its choice
    // is known without starting Perl (about 60 ms) for a `--version`.
    if let Some(real) = newest_behind_wrapper(&path, name, Path::new(DEBIAN_BINROOT)) {
        if let Some(text) = version(&real) {
            if let Some(major) = parse_client_major(&text) {
                return Some(Client {
                    path: real,
                    major,
                    restricts: restricts(&text),
                    found,
                });
            }
        }
    }
    let text = version(&path)?;
    let major = parse_client_major(&text)?;
    // Debian's `pg_wrapper` (a Perl script behind /usr/bin/psql) costs about 50 ms of CPU per
    // start, and a clone starts these tools dozens of times. Run the binary it would pick.
    let path = wrapped_binary(&path, name, major)
        .filter(|real| version(real).as_deref() == Some(text.as_str()))
        .unwrap_or(path);
    Some(Client {
        path,
        major,
        restricts: restricts(&text),
        found,
    })
}

/// Whether a client of this `--version` output knows `\restrict`, psql's mode in which a
/// script can run no psql command at all: added in 13.22, 14.19, 15.14, 16.10 and 17.6.
pub fn restricts(version_output: &str) -> bool {
    let Some(version) = version_output
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))
    else {
        return false;
    };
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    match major {
        18.. => true,
        17 => minor >= 6,
        16 => minor >= 10,
        15 => minor >= 14,
        14 => minor >= 19,
        13 => minor >= 22,
        _ => false,
    }
}

/// Where Debian's packages install each major's binaries (`<binroot>/<major>/bin`).
const DEBIAN_BINROOT: &str = "/usr/lib/postgresql";

/// The psql Debian's `pg_wrapper` runs when `path` is that wrapper: for psql (and only
/// for it) the wrapper takes the newest installed major, whatever cluster the environment
/// names (but one older than 9.2, which this tool does not serve).
pub fn newest_behind_wrapper(path: &Path, name: &str, binroot: &Path) -> Option<PathBuf> {
    if name != "psql" || path.canonicalize().ok()?.file_name()? != "pg_wrapper" {
        return None;
    }
    std::fs::read_dir(binroot)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let real = entry.path().join("bin").join(name);
            is_executable(&real).then_some((major, real))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, real)| real)
}

/// The versioned binary behind Debian's `pg_wrapper`, when `path` is that wrapper.
pub fn wrapped_binary(path: &Path, name: &str, major: u32) -> Option<PathBuf> {
    let target = path.canonicalize().ok()?;
    if target.file_name()? != "pg_wrapper" {
        return None;
    }
    let real = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{name}"));
    is_executable(&real).then_some(real)
}

pub fn find_on_path(search: Option<&OsStr>, name: &str) -> Option<PathBuf> {
    env::split_paths(search?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → 15; `psql (PostgreSQL) 9.6.24` → 9.
pub fn parse_client_major(version_output: &str) -> Option<u32> {
    let version = version_output
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::tools::{
        choose::{fit_reason, pick_client},
        Need,
    };

    #[test]
    fn client_versions() {
        assert_eq!(
            parse_client_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_client_major("psql (PostgreSQL) 17.2\n"), Some(17));
        assert_eq!(
            parse_client_major("pg_dump (PostgreSQL) 18beta1\n"),
            Some(18)
        );
        assert_eq!(parse_client_major("garbage"), None);
        for (version, knows) in [
            ("psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", true),
            ("psql (PostgreSQL) 15.13", false),
            ("psql (PostgreSQL) 13.16 (Debian 13.16-0+deb11u1)", false),
            ("psql (PostgreSQL) 13.22", true),
            ("psql (PostgreSQL) 17.6", true),
            ("psql (PostgreSQL) 16.9", false),
            ("psql (PostgreSQL) 18beta1", true),
            ("psql (PostgreSQL) 12.22", false),
            ("garbage", false),
        ] {
            assert_eq!(restricts(version), knows, "{version}");
        }
    }

    #[test]
    fn debian_wrapper_resolves_to_the_versioned_binary() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("pg_wrapper");
        std::fs::write(&wrapper, "#!/bin/sh\n").unwrap();
        let link = dir.path().join("psql");
        std::os::unix::fs::symlink(&wrapper, &link).unwrap();
        let plain = dir.path().join("pg_dump");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        // A plain binary is used as it is; the wrapper only when the versioned binary exists.
        assert_eq!(wrapped_binary(&plain, "pg_dump", 15), None);
        let real = PathBuf::from("/usr/lib/postgresql/15/bin/psql");
        let expected = is_executable(&real).then_some(real);
        assert_eq!(wrapped_binary(&link, "psql", 15), expected);
        assert_eq!(wrapped_binary(&link, "psql", 999), None);
    }

    #[test]
    fn psql_behind_the_wrapper_is_the_newest_installed() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("pg_wrapper");
        std::fs::write(&wrapper, "#!/bin/sh\n").unwrap();
        let link = dir.path().join("psql");
        std::os::unix::fs::symlink(&wrapper, &link).unwrap();
        let root = dir.path().join("lib");
        for major in ["9", "13", "17", "16"] {
            fake_tool(&root.join(major).join("bin"), "psql", major);
        }
        // A directory without psql (a server-only install) does not count.
        std::fs::create_dir_all(root.join("18/bin")).unwrap();
        assert_eq!(
            newest_behind_wrapper(&link, "psql", &root),
            Some(root.join("17/bin/psql"))
        );
        // pg_dump's choice depends on the cluster: the wrapper decides it.
        let dump = dir.path().join("pg_dump");
        std::os::unix::fs::symlink(&wrapper, &dump).unwrap();
        assert_eq!(newest_behind_wrapper(&dump, "pg_dump", &root), None);
        assert_eq!(
            newest_behind_wrapper(&root.join("17/bin/psql"), "psql", &root),
            None
        );
    }

    /// A fake client `name` in `dir` that reports `version`.
    fn fake_tool(dir: &Path, name: &str, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn macos_installs_are_found_and_chosen_by_major() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // Homebrew on Apple silicon (keg-only postgresql@15 and libpq 17), Intel Homebrew's
        // postgresql@14, Postgres.app with 16 and a `latest` link to it, the EDB installer's
        // 13, and a directory that is no install.
        fake_tool(
            &r.join("opt/homebrew/opt/postgresql@15/bin"),
            "pg_dump",
            "15.14",
        );
        fake_tool(
            &r.join("opt/homebrew/opt/libpq/bin"),
            "pg_dump",
            "17.6 (Homebrew)",
        );
        fake_tool(
            &r.join("usr/local/opt/postgresql@14/bin"),
            "pg_dump",
            "14.19",
        );
        let app = r.join("Applications/Postgres.app/Contents/Versions");
        fake_tool(&app.join("16/bin"), "pg_dump", "16.10");
        std::os::unix::fs::symlink(app.join("16"), app.join("latest")).unwrap();
        fake_tool(&r.join("Library/PostgreSQL/13/bin"), "pg_dump", "13.22");
        fake_tool(&r.join("opt/homebrew/opt/openssl@3/bin"), "pg_dump", "99.0");
        // A pg_dump on PATH that is the libpq one through a link, as `brew link` makes it.
        let bin = r.join("opt/homebrew/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(
            r.join("opt/homebrew/opt/libpq/bin/pg_dump"),
            bin.join("pg_dump"),
        )
        .unwrap();

        let found = |search: Option<&OsStr>| {
            find_clients(Layout::MacOs, r, search, "pg_dump")
                .into_iter()
                .map(|c| (c.major, c.found))
                .collect::<Vec<_>>()
        };
        let listed = |list: &[(u32, &str)]| {
            list.iter()
                .map(|&(m, f)| (m, f.to_string()))
                .collect::<Vec<_>>()
        };
        // Without PATH: every install once (`latest` is 16 again), newest first.
        assert_eq!(
            found(None),
            listed(&[
                (17, "Homebrew libpq"),
                (16, "Postgres.app 16"),
                (15, "Homebrew postgresql@15"),
                (14, "Homebrew postgresql@14"),
                (13, "EDB installer 13"),
            ])
        );
        // With it: the one PATH names first, and its install is not listed again.
        let clients = find_clients(Layout::MacOs, r, Some(bin.as_os_str()), "pg_dump");
        assert_eq!(clients[0].found, "PATH");
        assert_eq!(clients[0].major, 17);
        assert_eq!(clients.len(), 5);
        assert!(clients.iter().all(|c| c.found != "Homebrew libpq"));

        let chosen = |need| pick_client(&clients, need).map(|c| (c.major, c.found.as_str()));
        assert_eq!(chosen(Need::Any), Some((17, "PATH")));
        assert_eq!(chosen(Need::AtLeast(15)), Some((17, "PATH")));
        assert_eq!(
            chosen(Need::Exact(15)),
            Some((15, "Homebrew postgresql@15"))
        );
        assert_eq!(
            chosen(Need::Prefer(14)),
            Some((14, "Homebrew postgresql@14"))
        );
        assert_eq!(chosen(Need::Prefer(12)), Some((17, "PATH")));
        assert_eq!(chosen(Need::Exact(12)), None);
        assert_eq!(chosen(Need::AtLeast(18)), None);
        // PATH's too old: the nearest newer install, not the newest.
        let old_first: Vec<Client> = {
            let mut list = clients.clone();
            list.retain(|c| c.major != 17);
            list.insert(
                0,
                Client {
                    found: "PATH".into(),
                    major: 12,
                    ..clients[0].clone()
                },
            );
            list
        };
        let pick = pick_client(&old_first, Need::AtLeast(14)).unwrap();
        assert_eq!(
            (pick.major, pick.found.as_str()),
            (14, "Homebrew postgresql@14")
        );
        let why = fit_reason(&old_first, pick, Need::AtLeast(14));
        assert!(why.starts_with("version 14, from Homebrew postgresql@14, fits PostgreSQL 14 (found 12 (PATH), 16 (Postgres.app 16)"), "{why}");

        // The Linux layout looks only at PATH (Debian's packages put every tool there).
        assert_eq!(find_clients(Layout::Plain, r, None, "pg_dump"), vec![]);
        assert_eq!(
            find_clients(Layout::Plain, r, Some(bin.as_os_str()), "pg_dump").len(),
            1
        );
    }

    #[test]
    fn tools_that_do_not_run_or_answer_are_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let broken = r.join("opt/homebrew/opt/postgresql@16/bin");
        fake_tool(&broken, "psql", "16.1");
        std::fs::write(broken.join("psql"), "#!/bin/sh\necho garbage\n").unwrap();
        let unreadable = r.join("Library/PostgreSQL/15/bin");
        fake_tool(&unreadable, "psql", "15.14");
        std::fs::set_permissions(
            unreadable.join("psql"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fake_tool(&r.join("usr/local/opt/postgresql@17/bin"), "psql", "17.6");
        let clients = find_clients(Layout::MacOs, r, None, "psql");
        assert_eq!(clients.len(), 1, "{clients:?}");
        assert_eq!((clients[0].major, clients[0].restricts), (17, true));
    }
}
