//! `cargo xtask dev-db` with ready spares: a restore renames the snapshot's spare into place
//! and a detached run prepares the next one; a spare that is missing, still being prepared
//! or killed halfway never stops a restore.

use std::{fs, os::unix::fs::MetadataExt, process::Stdio, thread, time::Duration};

use crate::{
    dev_db::DevEnv,
    harness::{run, wait_for},
};

impl DevEnv {
    /// The word `list` shows for the spare of snapshot `name`.
    fn spare_word(&self, name: &str) -> String {
        let listed = run(self.xtask_with_spares(&["dev-db", "list"])).ok();
        let line = listed
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed: {}", listed.stdout))
            .to_string();
        // `preparing` comes with its progress: `preparing 42%`.
        let preparing = line.split("  preparing ").nth(1).map(|rest| {
            let figure = rest.split('%').next().unwrap_or_default();
            assert!(
                rest.contains('%') && figure.parse::<u8>().is_ok_and(|p| p < 100),
                "no progress in: {line}"
            );
        });
        if preparing.is_some() {
            return "preparing".to_string();
        }
        ["ready", "missing"]
            .into_iter()
            .find(|word| line.contains(&format!("  {word}  ")))
            .unwrap_or_else(|| panic!("no spare state in: {line}"))
            .to_string()
    }

    fn wait_ready(&self, name: &str) {
        wait_for(
            &format!("the spare of {name} ready"),
            Duration::from_secs(120),
            || self.spare_word(name) == "ready",
        );
    }

    fn spare_dbs(&self) -> Vec<String> {
        self.pg
            .databases()
            .into_iter()
            .filter(|d| d.starts_with("npspare_"))
            .collect()
    }

    fn spare_dirs(&self) -> Vec<String> {
        self.store_names()
            .into_iter()
            .filter(|n| n.contains("npspare_"))
            .collect()
    }

    fn damage(&self) {
        self.dev_psql(
            "update dcim_site set name = name || ' (changed)'; create table junk (id int)",
        );
        fs::write(self.media.join("added.txt"), b"new").unwrap();
    }
}

fn spares_restore(major: u32) {
    let env = DevEnv::start(major);
    let before = env.state();
    let saved = run(env.xtask_with_spares(&["dev-db", "save", "base"])).ok();
    assert!(
        saved.stderr.contains("preparing the spare of `base`"),
        "{}",
        saved.stderr
    );
    env.wait_ready("base");
    assert_eq!(env.spare_dbs().len(), 1, "PostgreSQL {major}");
    // The spare's media are copies, never links to the snapshot's files.
    let dirs = env.spare_dirs();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let spare_media = env.stores().join(&dirs[0]).join("media");
    for file in walk(&spare_media) {
        let meta = fs::metadata(&file).unwrap();
        assert_eq!(meta.nlink(), 1, "{}", file.display());
    }

    for round in ["first", "second"] {
        env.damage();
        assert_ne!(env.state(), before);
        let restored = run(env.xtask_with_spares(&["dev-db", "restore", "base", "--yes"])).ok();
        assert!(
            restored
                .stderr
                .contains("renamed the ready spare of `base`"),
            "{round}: {}",
            restored.stderr
        );
        assert_eq!(env.state(), before, "PostgreSQL {major}, {round} restore");
        assert_eq!(
            env.dev_psql(
                "select pg_get_userbyid(datdba) from pg_database where datname = current_database()"
            ),
            "dev"
        );
        env.wait_ready("base");
        // The previous dev database was dropped by the detached run.
        wait_for(
            "the previous database dropped",
            Duration::from_secs(60),
            || env.pg.temp_dbs().is_empty(),
        );
    }

    // A missing spare: the restore copies, and says so in one line.
    let spare = env.spare_dbs().remove(0);
    env.pg
        .psql("postgres", &format!("drop database \"{spare}\""));
    assert_eq!(env.spare_word("base"), "missing");
    env.damage();
    let restored = run(env.xtask_with_spares(&["dev-db", "restore", "base", "--yes"])).ok();
    let lines: Vec<&str> = restored
        .stderr
        .lines()
        .filter(|l| l.contains("no ready spare"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", restored.stderr);
    assert_eq!(env.state(), before, "PostgreSQL {major}, restore by copy");
    env.wait_ready("base");

    run(env.xtask_with_spares(&["dev-db", "drop", "base", "--yes"])).ok();
    assert!(env.spare_dbs().is_empty());
    assert!(env.spare_dirs().is_empty(), "{:?}", env.store_names());
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn restore_renames_a_ready_spare_in_and_prepares_the_next_on_13_15_and_17() {
    thread::scope(|scope| {
        let runs: Vec<_> = [13, 15, 17]
            .into_iter()
            .map(|major| scope.spawn(move || spares_restore(major)))
            .collect();
        for run in runs {
            run.join().unwrap();
        }
    });
}

#[test]
fn a_spare_preparation_killed_halfway_is_cleaned_up_and_listed_as_missing() {
    let env = DevEnv::start(15);
    let before = env.state();
    run(env.xtask_with_spares(&["dev-db", "save", "base"])).ok();
    env.wait_ready("base");
    let snapshot = env.snapshots().remove(0);

    // A session that holds a lock on the snapshot's database: the next spare's copy waits.
    let mut blocker = env
        .pg
        .psql_cmd("postgres")
        .args([
            "-c",
            &format!(
                "begin; comment on database \"{snapshot}\" is 'x'; select pg_sleep(300); rollback"
            ),
        ])
        .env("PGAPPNAME", "blocker")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the blocker", Duration::from_secs(30), || {
        env.sessions_of("blocker") == 1
    });
    env.damage();
    let restored = run(env.xtask_with_spares(&["dev-db", "restore", "base", "--yes"])).ok();
    assert!(
        restored.stderr.contains("renamed the ready spare"),
        "{}",
        restored.stderr
    );
    wait_for(
        "the next spare being prepared",
        Duration::from_secs(30),
        || env.spare_word("base") == "preparing",
    );

    // A restore while the spare is being prepared copies the snapshot instead (and waits,
    // like the spare's copy, for the blocker).
    env.damage();
    let second = env
        .xtask_with_spares(&["dev-db", "restore", "base", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("both copies waiting", Duration::from_secs(60), || {
        env.pg.psql(
            "postgres",
            "select count(*) from pg_stat_activity where query ilike 'create database%'",
        ) == "2"
    });

    // kill -9 of the detached run halfway through: `list` says the spare is missing.
    let holders = env.pg.psql(
        "postgres",
        "select application_name from pg_stat_activity where application_name like 'cargo xtask pid %'",
    );
    let pid: i32 = holders
        .lines()
        .filter_map(|h| h.split_whitespace().nth(3)?.parse().ok())
        .find(|pid| *pid != second.id() as i32)
        .unwrap_or_else(|| panic!("no detached run among: {holders}"));
    // SAFETY: kill signals the detached run this test started through xtask.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for(
        "the spare listed as missing",
        Duration::from_secs(30),
        || env.spare_word("base") == "missing",
    );
    assert!(fs::read_dir(env.stores()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("npspare_")));

    env.pg.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'blocker'",
    );
    let _ = blocker.wait();
    let second = crate::harness::output_of(second);
    assert!(second.status.success(), "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("is still being prepared: copying the snapshot instead"),
        "{}",
        second.stderr
    );
    assert_eq!(env.state(), before);

    // What the killed run left is removed and a new spare is prepared.
    env.wait_ready("base");
    assert_eq!(env.spare_dbs().len(), 1);
    assert_eq!(env.spare_dirs().len(), 1, "{:?}", env.store_names());
    env.damage();
    let restored = run(env.xtask_with_spares(&["dev-db", "restore", "base", "--yes"])).ok();
    assert!(
        restored.stderr.contains("renamed the ready spare"),
        "{}",
        restored.stderr
    );
    assert_eq!(env.state(), before);

    // --no-spare keeps today's behaviour: no spare, restores copy without a word about it.
    run(env.xtask_with_spares(&["dev-db", "save", "plain", "--no-spare"])).ok();
    assert_eq!(env.spare_word("plain"), "missing");
    let restored = run(env.xtask_with_spares(&["dev-db", "restore", "plain", "--yes"])).ok();
    assert!(!restored.stderr.contains("spare"), "{}", restored.stderr);
    assert_eq!(env.spare_dbs().len(), 1);
}

/// `git` in `repo`, with the hook's environment: the dev database, its media, and this
/// build of xtask in place of `cargo xtask`.
fn git_in(env: &DevEnv, repo: &std::path::Path, args: &[&str]) -> crate::harness::Run {
    let xtask = env.xtask_with_spares(&[]);
    let mut git = std::process::Command::new("git");
    git.args([
        "-c",
        "user.name=dev",
        "-c",
        "user.email=dev@example.invalid",
    ])
    .args(args)
    .current_dir(repo)
    .stdin(Stdio::null())
    .env("NETPOINT_XTASK", crate::harness::xtask_bin());
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("GIT_")) {
        git.env_remove(key);
    }
    for (key, value) in xtask.get_envs() {
        match value {
            Some(value) => git.env(key, value),
            None => git.env_remove(key),
        };
    }
    run(git).ok()
}

#[test]
fn the_branch_hook_makes_the_database_follow_git_branches_and_compares_migrations() {
    let env = DevEnv::start(15);
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    let add_migration = |name: &str| {
        let file = dir.join("netpoint/branchapp/migrations").join(name);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, "# migration\n").unwrap();
    };
    git_in(&env, dir, &["init", "-q", "-b", "main"]);
    add_migration("0001_initial.py");
    git_in(&env, dir, &["add", "."]);
    git_in(&env, dir, &["commit", "-q", "-m", "main"]);
    // A hook of the developer's own: chained, not replaced, and put back by uninstall.
    let own = "#!/bin/sh\necho \"$3\" >> \"$(git rev-parse --git-dir)/own-hook-ran\"\n";
    let hook = dir.join(".git/hooks/post-checkout");
    fs::write(&hook, own).unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut install = env.xtask_with_spares(&["dev-db", "hook", "install"]);
    install.current_dir(dir);
    run(install).ok();

    env.dev_psql(
        "insert into django_migrations (app, name, applied) values ('branchapp', '0001_initial', now())",
    );
    let main_state = env.state();
    let created = git_in(&env, dir, &["checkout", "-q", "-b", "feature"]);
    assert!(
        created.stderr.contains("saved branch main as `br-")
            && created
                .stderr
                .contains("branch feature has no snapshot yet"),
        "{}",
        created.stderr
    );
    add_migration("0002_rack.py");
    git_in(&env, dir, &["add", "."]);
    git_in(&env, dir, &["commit", "-q", "-m", "feature"]);
    env.dev_psql(
        "create table branch_rack (id int); \
         insert into django_migrations (app, name, applied) values ('branchapp', '0002_rack', now())",
    );
    let feature_state = env.state();
    assert_ne!(feature_state, main_state);

    let back = git_in(&env, dir, &["checkout", "-q", "main"]);
    let lines: Vec<&str> = back
        .stderr
        .lines()
        .filter(|l| l.starts_with("dev-db:"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", back.stderr);
    assert!(
        lines[0].contains("saved branch feature") && lines[0].contains("of branch main"),
        "{}",
        back.stderr
    );
    assert_eq!(env.state(), main_state);
    assert_eq!(
        env.dev_psql("select to_regclass('branch_rack') is null"),
        "t"
    );

    // list: the branch of each snapshot, the one checked out marked, and the feature
    // snapshot's migration that this checkout (main) does not have.
    let mut list = env.xtask_with_spares(&["dev-db", "list"]);
    list.current_dir(dir);
    let listed = run(list).ok().stdout;
    assert!(
        listed.lines().any(|l| l.starts_with("br-")
            && l.ends_with("(branch checked out)")
            && l.contains(" main @ ")),
        "{listed}"
    );
    assert!(
        listed.contains("the snapshot has migrations this checkout lacks: branchapp.0002_rack"),
        "{listed}"
    );

    let forth = git_in(&env, dir, &["checkout", "-q", "feature"]);
    assert!(
        forth.stderr.contains("of branch feature"),
        "{}",
        forth.stderr
    );
    assert_eq!(env.state(), feature_state);

    // A restore of main's snapshot on the feature checkout says what it lacks.
    let main_snapshot = created
        .stderr
        .split('`')
        .nth(1)
        .expect("the snapshot's name")
        .to_string();
    let mut restore = env.xtask_with_spares(&["dev-db", "restore", &main_snapshot, "--yes"]);
    restore.current_dir(dir);
    let restored = run(restore).ok();
    assert!(
        restored.stderr.contains(
            "this checkout has migrations the snapshot has not applied: branchapp.0002_rack"
        ),
        "{}",
        restored.stderr
    );

    // File checkouts and a detached HEAD leave the database alone.
    env.dev_psql("create table untouched (id int)");
    let file = git_in(&env, dir, &["checkout", "main", "--", "netpoint"]);
    let detached = git_in(&env, dir, &["checkout", "-q", "--detach"]);
    assert!(!file.stderr.contains("dev-db:") && !detached.stderr.contains("dev-db:"));
    assert_eq!(
        env.dev_psql("select to_regclass('untouched') is not null"),
        "t"
    );

    let ran = fs::read_to_string(dir.join(".git/own-hook-ran")).unwrap();
    assert_eq!(ran.lines().filter(|l| *l == "1").count(), 4, "{ran}");
    let mut uninstall = env.xtask_with_spares(&["dev-db", "hook", "uninstall"]);
    uninstall.current_dir(dir);
    run(uninstall).ok();
    assert_eq!(fs::read_to_string(&hook).unwrap(), own);
}

#[test]
fn a_hook_whose_save_fails_restores_nothing_and_never_blocks_the_checkout() {
    let env = DevEnv::start(15);
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git_in(&env, dir, &["init", "-q", "-b", "main"]);
    fs::write(dir.join("README"), "main\n").unwrap();
    git_in(&env, dir, &["add", "."]);
    git_in(&env, dir, &["commit", "-q", "-m", "main"]);
    let mut install = env.xtask_with_spares(&["dev-db", "hook", "install"]);
    install.current_dir(dir);
    run(install).ok();

    // main saved, feature changed, then back on main: each branch has its snapshot.
    let created = git_in(&env, dir, &["checkout", "-q", "-b", "feature"]);
    let main_snapshot = created
        .stderr
        .split('`')
        .nth(1)
        .expect("the snapshot's name")
        .to_string();
    env.dev_psql("create table feature_only (id int)");
    git_in(&env, dir, &["checkout", "-q", "main"]);
    assert_eq!(
        env.dev_psql("select to_regclass('feature_only') is null"),
        "t"
    );

    // The next save of main cannot finish: a database that is no snapshot holds the name
    // its snapshot gets.
    let main_db = env
        .pg
        .databases()
        .into_iter()
        .find(|d| d.starts_with("npsnap_") && d.ends_with(&format!("_{main_snapshot}")))
        .expect("the snapshot database of main");
    run(env.xtask_with_spares(&["dev-db", "drop", &main_snapshot, "--yes"])).ok();
    env.pg
        .psql("postgres", &format!("create database \"{main_db}\""));
    env.dev_psql("create table main_marker (id int)");

    let switched = git_in(&env, dir, &["checkout", "-q", "feature"]);
    let lines: Vec<&str> = switched
        .stderr
        .lines()
        .filter(|l| l.starts_with("dev-db:"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", switched.stderr);
    assert!(
        lines[0].contains("could not save branch main, so nothing was restored"),
        "{}",
        switched.stderr
    );
    assert_eq!(
        git_in(&env, dir, &["rev-parse", "--abbrev-ref", "HEAD"])
            .stdout
            .trim(),
        "feature"
    );
    // The dev database is main's, as it was: feature's snapshot was not restored.
    assert_eq!(
        env.dev_psql(
            "select to_regclass('main_marker') is not null and to_regclass('feature_only') is null"
        ),
        "t"
    );
}
