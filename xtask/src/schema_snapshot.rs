//! `cargo xtask schema-snapshot`: a deterministic schema-only dump, written or checked.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use xshell::Shell;

use crate::{
    atomic_file, cli,
    context::Context,
    mode::{self, Mode},
    pg::DbUrl,
    pipeline::schema::{recorded_major, snapshot},
    plain::schema_diff,
    term,
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
    /// Print the plan and whether the file would change; write nothing.
    #[arg(long, conflicts_with = "check")]
    dry_run: bool,
    /// With --check: also write a Markdown summary of the changes, for a pull-request comment.
    #[arg(long, value_name = "PATH", requires = "check")]
    summary: Option<PathBuf>,
}

impl SchemaSnapshot {
    pub fn run(self, cx: &Context) -> anyhow::Result<()> {
        let sh = &cx.sh;
        let mode = Mode::from_flags(self.check, self.dry_run);
        let source_from_flag = self.source.is_some();
        let source = cli::required_dev_database(self.source, "--source")?;
        let output = self
            .output
            .unwrap_or_else(|| sh.current_dir().join("fixtures/schema.sql"));
        let shown = term::display_path(sh, &output);
        refuse_directory(sh, &output, "--output", "schema.sql")?;
        if let Some(summary) = &self.summary {
            refuse_directory(sh, summary, "--summary", "schema-summary.md")?;
            if atomic_file::resolved(summary) == atomic_file::resolved(&output) {
                bail!(
                    "--summary {} is the snapshot itself, which the summary would replace: give it a path of its own, such as schema-summary.md",
                    term::display_path(sh, summary)
                );
            }
        }
        if mode == Mode::Check {
            let update = update_command(&source, source_from_flag, &shown);
            let Ok(committed) = std::fs::read_to_string(&output) else {
                bail!("{shown} does not exist: create it with `{update}`");
            };
            let live = snapshot(cx, &source, recorded_major(&committed))?;
            let changes = schema_diff::changes(&committed, &live);
            if let Some(summary) = &self.summary {
                atomic_file::write_bytes(
                    summary,
                    schema_diff::markdown(&changes, &shown).as_bytes(),
                )
                .with_context(|| format!("writing the summary {}", summary.display()))?;
            }
            if committed == live {
                mode::up_to_date(format!("schema matches {shown}"));
                return Ok(());
            }
            let diff = similar::TextDiff::from_lines(&committed, &live)
                .unified_diff()
                .context_radius(3)
                .header(&shown, &format!("{} (live)", source.masked()))
                .to_string();
            term::print_diff(&diff);
            return Err(mode::out_of_date(
                format!("the schema of {source} differs from {shown}"),
                &update,
            ));
        }
        let text = snapshot(cx, &source, None)?;
        if mode == Mode::DryRun {
            let now = match std::fs::read_to_string(&output) {
                Ok(current) if current == text => "unchanged".to_string(),
                Ok(_) => "changed".to_string(),
                Err(_) => "new".to_string(),
            };
            mode::print_plan(&[
                format!("dump the schema of {source} (pg_dump --schema-only, normalised)"),
                format!("write {shown}: {} lines, {now}", text.lines().count()),
            ]);
            return Ok(());
        }
        atomic_file::write_bytes(&output, text.as_bytes())
            .with_context(|| format!("writing {shown}"))?;
        term::success(format!("wrote {shown} ({} lines)", text.lines().count()));
        Ok(())
    }
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
            term::display_path(sh, path),
            term::display_path(sh, &path.join(example))
        );
    }
    Ok(())
}
