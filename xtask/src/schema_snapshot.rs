//! `cargo xtask schema-snapshot`: a deterministic schema-only dump, written or checked.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::Shell;

use crate::{
    atomic_file,
    db_url::{self, DbUrl},
    dump,
    pg_tools::{self, Access, Need, PgTools, Tool},
    schema_diff, term,
};

/// Write a deterministic schema-only dump of a database, or check one against it.
#[derive(Debug, clap::Args)]
pub struct SchemaSnapshot {
    /// Database to snapshot [default: $NETPOINT_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// File to write or check [default: fixtures/schema.sql].
    #[arg(long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Compare the live schema with the file instead of writing it; fails when they differ.
    #[arg(long)]
    check: bool,
    /// With --check: also write a Markdown summary of the changes, for a pull-request comment.
    #[arg(long, value_name = "PATH", requires = "check")]
    summary: Option<PathBuf>,
}

const HEADER_PREFIX: &str = "-- NetPoint schema snapshot, PostgreSQL ";

impl SchemaSnapshot {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let source_from_flag = self.source.is_some();
        let source = db_url::required_url(self.source, "NETPOINT_DATABASE_URL", "--source")?;
        let output = self
            .output
            .unwrap_or_else(|| sh.current_dir().join("fixtures/schema.sql"));
        let shown = display_path(sh, &output);
        refuse_directory(sh, &output, "--output", "schema.sql")?;
        if let Some(summary) = &self.summary {
            refuse_directory(sh, summary, "--summary", "schema-summary.md")?;
            if resolved(summary).is_some_and(|summary| Some(summary) == resolved(&output)) {
                bail!(
                    "--summary {} is the snapshot itself, which the summary would replace: give it a path of its own, such as schema-summary.md",
                    display_path(sh, summary)
                );
            }
        }
        let tools = PgTools::discover(sh);
        if self.check {
            let update = update_command(&source, source_from_flag, &shown);
            let Ok(committed) = std::fs::read_to_string(&output) else {
                bail!("{shown} does not exist: create it with `{update}`");
            };
            let live = snapshot(sh, &tools, &source, recorded_major(&committed))?;
            let changes = schema_diff::changes(&committed, &live);
            if let Some(summary) = &self.summary {
                atomic_file::write_bytes(
                    summary,
                    schema_diff::markdown(&changes, &shown).as_bytes(),
                )
                .with_context(|| format!("writing the summary {}", summary.display()))?;
            }
            if committed == live {
                println!("schema matches {shown}");
                return Ok(());
            }
            let diff = similar::TextDiff::from_lines(&committed, &live)
                .unified_diff()
                .context_radius(3)
                .header(&shown, &format!("{} (live)", source.masked()))
                .to_string();
            term::print_diff(&diff);
            bail!("the schema of {source} differs from {shown}: update it with `{update}`");
        }
        let text = snapshot(sh, &tools, &source, None)?;
        atomic_file::write_bytes(&output, text.as_bytes())
            .with_context(|| format!("writing {shown}"))?;
        term::success(format!("wrote {shown} ({} lines)", text.lines().count()));
        Ok(())
    }
}

/// A normalised schema dump of `url`, headed by the server's major version. With
/// `expected_major`, a server of another major is refused rather than diffed.
pub fn snapshot(
    sh: &Shell,
    tools: &PgTools,
    url: &DbUrl,
    expected_major: Option<u32>,
) -> anyhow::Result<String> {
    let server = tools.server(sh, url, Access::ReadOnly)?;
    if let Some(expected) = expected_major.filter(|&m| m != server.major) {
        bail!(
            "the snapshot was made from PostgreSQL {expected} but {url} runs PostgreSQL {}: \
             a diff across majors would be misleading; check against a PostgreSQL {expected} server \
             or regenerate the snapshot from this one",
            server.major
        );
    }
    // The same server dumps to the same text only with the same pg_dump major.
    let cmd = tools
        .cmd_with(
            sh,
            Tool::PgDump,
            url,
            Access::ReadOnly,
            Need::Exact(server.major),
        )?
        .args(["--schema-only", "--no-owner", "--no-privileges"])
        .ignore_status();
    pg_tools::log(&cmd, url);
    let out = cmd
        .output()
        .with_context(|| format!("running pg_dump against {url}"))?;
    if !out.status.success() {
        return Err(pg_tools::explain_failure(
            url,
            &String::from_utf8_lossy(&out.stderr),
        ))
        .context("pg_dump --schema-only failed");
    }
    let dump = String::from_utf8(out.stdout).context("pg_dump printed non-UTF-8 output")?;
    let text = dump::normalise_str(&dump).replacen(PUBLIC_SCHEMA_STANZA, "", 1);
    Ok(format!("{HEADER_PREFIX}{}\n{text}", server.major))
}

/// What `pg_dump --no-owner` prints for a `public` schema whose owner was changed (as on
/// production): an empty stanza. Dropped, so that ownership does not change the snapshot.
const PUBLIC_SCHEMA_STANZA: &str =
    "--\n-- Name: public; Type: SCHEMA; Schema: -; Owner: -\n--\n\n-- *not* creating schema, since initdb creates it\n\n\n";

/// The major version recorded on a snapshot's first line.
pub fn recorded_major(snapshot: &str) -> Option<u32> {
    snapshot
        .lines()
        .next()?
        .strip_prefix(HEADER_PREFIX)?
        .trim()
        .parse()
        .ok()
}

fn update_command(source: &DbUrl, from_flag: bool, output: &str) -> String {
    let mut command = String::from("cargo xtask schema-snapshot");
    if from_flag {
        command.push_str(&format!(" --source '{}'", source.masked()));
    }
    if output != "fixtures/schema.sql" {
        command.push_str(&format!(" --output {output}"));
    }
    command
}

/// Fails, saying what to give instead, when a file to write is an existing directory.
fn refuse_directory(sh: &Shell, path: &Path, flag: &str, example: &str) -> anyhow::Result<()> {
    if path.is_dir() {
        bail!(
            "{flag} {} is a directory: give a file path, such as {}",
            display_path(sh, path),
            display_path(sh, &path.join(example))
        );
    }
    Ok(())
}

/// Where a path leads once links and `..` are resolved: the file itself, or its directory
/// and name when it does not exist yet.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(path) = path.canonicalize() {
        return Some(path);
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(path.file_name()?))
}

/// A path as the user would type it: relative to the workspace when inside it.
pub fn display_path(sh: &Shell, path: &Path) -> String {
    let root = sh.current_dir();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_records_the_major() {
        assert_eq!(
            recorded_major("-- NetPoint schema snapshot, PostgreSQL 17\n--\n"),
            Some(17)
        );
        assert_eq!(recorded_major("--\n-- PostgreSQL database dump\n"), None);
    }
}
