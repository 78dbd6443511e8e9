//! `dev-db hook`: a git `post-checkout` hook that keeps a snapshot per branch. On a branch
//! switch it saves the state of the branch left and restores the one saved for the branch
//! checked out. It never blocks a checkout: a failure is one line and exit status 0.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};

use crate::media;

/// The first line after the shebang of the hook this tool writes.
const MARK: &str = "# netpoint: cargo xtask dev-db hook";
/// Where a hook that was there before ours is kept, and run first.
const CHAINED: &str = "post-checkout.netpoint-chained";

/// The snapshot name of a branch: `br-` and a short hash of the full branch name (so two
/// branches never share one), then as much of the name as fits in the name rules.
pub(super) fn snapshot_name(branch: &str) -> String {
    let hash = &media::hex(&Sha256::digest(branch.as_bytes()))[..8];
    let plain: String = branch
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') => c,
            _ => '-',
        })
        .take(30 - "br-".len() - hash.len() - 1)
        .collect();
    format!("br-{hash}-{plain}")
}

/// `git <args>` in the checkout the command was started in.
pub(super) fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The branch checked out, none on a detached HEAD.
pub(super) fn current_branch() -> Option<String> {
    git(&["symbolic-ref", "--quiet", "--short", "HEAD"])
}

fn hooks_dir() -> anyhow::Result<PathBuf> {
    let dir = git(&["rev-parse", "--git-path", "hooks"])
        .context("not in a git checkout: run `cargo xtask dev-db hook install` inside one")?;
    Ok(std::env::current_dir()?.join(dir))
}

fn is_ours(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|text| {
        text.lines()
            .nth(1)
            .is_some_and(|line| line.starts_with(MARK))
    })
}

pub(super) fn install() -> anyhow::Result<()> {
    let dir = hooks_dir()?;
    let hook = dir.join("post-checkout");
    if is_ours(&hook) {
        println!("the dev-db hook is already installed in {}", hook.display());
        return Ok(());
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let chained = dir.join(CHAINED);
    if hook.exists() {
        if chained.exists() {
            bail!(
                "{} exists: move it away (it is what `hook uninstall` would put back), then install again",
                chained.display()
            );
        }
        fs::rename(&hook, &chained).with_context(|| format!("moving {} aside", hook.display()))?;
    }
    let script = format!(
        "#!/bin/sh\n{MARK} (`hook uninstall` removes it{})\n\
         status=0\n\
         chained=\"$(dirname \"$0\")/{CHAINED}\"\n\
         if [ -x \"$chained\" ]; then \"$chained\" \"$@\" || status=$?; fi\n\
         ${{NETPOINT_XTASK:-cargo xtask}} --quiet dev-db hook run \"$@\" || true\n\
         exit $status\n",
        if chained.exists() {
            " and puts back the hook that was here"
        } else {
            ""
        }
    );
    crate::atomic_file::write_bytes(&hook, script.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755))?;
    crate::term::success(format!(
        "installed the dev-db post-checkout hook in {}{}",
        hook.display(),
        if chained.exists() {
            " (the hook that was there runs first)"
        } else {
            ""
        }
    ));
    Ok(())
}

pub(super) fn uninstall() -> anyhow::Result<()> {
    let dir = hooks_dir()?;
    let hook = dir.join("post-checkout");
    if !is_ours(&hook) {
        println!(
            "the dev-db hook is not installed in {}: nothing to do",
            dir.display()
        );
        return Ok(());
    }
    fs::remove_file(&hook).with_context(|| format!("removing {}", hook.display()))?;
    let chained = dir.join(CHAINED);
    if chained.exists() {
        fs::rename(&chained, &hook).with_context(|| format!("putting back {}", hook.display()))?;
    }
    crate::term::success(format!("removed the dev-db hook from {}", hook.display()));
    Ok(())
}

/// A branch switch the hook acts on: the branch left and the one checked out. None for a
/// file checkout, a checkout of the branch already checked out, a detached HEAD or a
/// rebase's steps.
pub(super) fn switch(flag: &str) -> Option<(String, String)> {
    // Two branches may point at one commit: the switch is told by the branch names (the
    // one checked out and the one before it), not by the commits.
    if flag != "1" {
        return None;
    }
    let rebasing = ["rebase-merge", "rebase-apply"].iter().any(|dir| {
        git(&["rev-parse", "--git-path", dir]).is_some_and(|path| Path::new(&path).exists())
    });
    if rebasing {
        return None;
    }
    let new_branch = current_branch()?;
    let old_branch = git(&["rev-parse", "--abbrev-ref", "@{-1}"])?;
    (old_branch != new_branch && old_branch != "HEAD").then_some((old_branch, new_branch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_snapshot_names_keep_the_name_rules_and_differ_per_branch() {
        let long = "feature/".to_string() + &"x".repeat(200);
        for branch in ["main", "feature/ünïcode branch", &long, "a/b", "a-b"] {
            let name = snapshot_name(branch);
            assert!(super::super::check_name(&name).is_ok(), "{branch}: {name}");
        }
        assert_ne!(snapshot_name("a/b"), snapshot_name("a-b"));
        assert_ne!(snapshot_name(&long), snapshot_name(&(long.clone() + "y")));
        assert!(
            snapshot_name("main").starts_with("br-") && snapshot_name("main").ends_with("-main")
        );
    }
}
