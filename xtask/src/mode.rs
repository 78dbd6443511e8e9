//! The one mode every command runs in: write what it makes, check it against what is there,
//! or only print the plan. A check that finds a difference reports the same way in every
//! command: the differences on stdout, and an error naming the exact command that fixes it.

use std::fmt::Display;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Do the work.
    Write,
    /// Compare what would be written with what is there; change nothing.
    Check,
    /// Print the plan; change nothing.
    DryRun,
}

impl Mode {
    /// The mode of `--check` and `--dry-run`, which clap keeps from being given together.
    pub fn from_flags(check: bool, dry_run: bool) -> Mode {
        match (check, dry_run) {
            (_, true) => Mode::DryRun,
            (true, false) => Mode::Check,
            (false, false) => Mode::Write,
        }
    }
}

/// Prints the steps a run would take, for `--dry-run`.
pub fn print_plan(steps: &[String]) {
    println!("dry run, nothing will be changed. Plan:");
    for (n, step) in steps.iter().enumerate() {
        println!("  {}. {step}", n + 1);
    }
}

/// What a check says when everything matches.
pub fn up_to_date(message: impl Display) {
    println!("{message}");
}

/// What a check says when something differs, after the differences were printed: `found`
/// names what is out of date, `fix` is the command that brings it up to date.
pub fn out_of_date(found: impl Display, fix: &str) -> anyhow::Error {
    anyhow::anyhow!("{found}: update it with `{fix}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_one_mode() {
        assert_eq!(Mode::from_flags(false, false), Mode::Write);
        assert_eq!(Mode::from_flags(true, false), Mode::Check);
        assert_eq!(Mode::from_flags(false, true), Mode::DryRun);
        let err = out_of_date("fixtures/schema.sql differs", "cargo xtask schema-snapshot");
        assert_eq!(
            err.to_string(),
            "fixtures/schema.sql differs: update it with `cargo xtask schema-snapshot`"
        );
    }
}
