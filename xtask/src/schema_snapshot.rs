//! `cargo xtask schema-snapshot`: a deterministic schema-only dump, written or checked.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use xshell::Shell;

use crate::{
    atomic_file, cli,
    context::Context,
    mode::{self, Mode},
    pg::DbUrl,
    pipeline::{
        schema::{recorded_major, snapshot},
        scrub::coverage,
        source::pattern_regexes,
    },
    plain::schema_diff::{self, diagram, model::Table},
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
    /// Draw the tables of the --output file as a Mermaid diagram into FILE (Mermaid source;
    /// a ```mermaid block when FILE ends in .md), with no database. Takes --check and --dry-run.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["source", "summary"])]
    diagram: Option<PathBuf>,
    /// With --diagram: the tables to draw, as pg_dump reads table patterns (`dcim_*`,
    /// `public.dcim_site`; unqualified names are looked for in public); repeatable [default: all].
    #[arg(long = "tables", value_name = "PATTERN", requires = "diagram")]
    tables: Vec<String>,
    /// Scrub rules that extend the built-in preset, as clone-prod takes them: the scrub-coverage
    /// part of --check and --write-coverage counts their columns as scrubbed.
    #[arg(long, value_name = "FILE", conflicts_with = "diagram")]
    scrub_rules: Option<PathBuf>,
    /// The file of columns kept on purpose, each with a reason [default:
    /// fixtures/scrub-coverage.toml].
    #[arg(long, value_name = "FILE", conflicts_with = "diagram")]
    scrub_coverage: Option<PathBuf>,
    /// Add an entry to the coverage file for each column of the --output snapshot that can
    /// hold text and that no scrub rule or entry covers, with a TODO reason that --check
    /// refuses until it is replaced. Reads no database.
    #[arg(long, conflicts_with_all = ["check", "dry_run", "diagram", "source", "summary"])]
    write_coverage: bool,
}

impl SchemaSnapshot {
    pub fn run(self, cx: &Context) -> anyhow::Result<()> {
        let sh = &cx.sh;
        let mode = Mode::from_flags(self.check, self.dry_run);
        if let Some(file) = &self.diagram {
            return draw(sh, mode, self.output.as_deref(), file, &self.tables);
        }
        let coverage_file = self
            .scrub_coverage
            .clone()
            .unwrap_or_else(|| sh.current_dir().join(coverage::PROJECT_FILE));
        if self.write_coverage {
            return write_coverage(
                sh,
                self.output.as_deref(),
                &coverage_file,
                self.scrub_rules.as_deref(),
            );
        }
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
            let gaps = coverage_gaps(sh, &live, &coverage_file, self.scrub_rules.as_deref())?;
            if let Some(summary) = &self.summary {
                let mut text = schema_diff::markdown(&committed, &live, &shown);
                text.push_str(&gaps_markdown(&gaps));
                atomic_file::write_bytes(summary, text.as_bytes())
                    .with_context(|| format!("writing the summary {}", summary.display()))?;
            }
            // Findings are data, on stdout after the diff; the one error line follows.
            let print_gaps = || {
                for line in &gaps {
                    println!("scrub coverage: {line}");
                }
            };
            if committed == live {
                print_gaps();
                if !gaps.is_empty() {
                    bail!(
                        "{} column(s) or entries of the scrub coverage need a decision (each line above says how); the schema matches {shown}",
                        gaps.len()
                    );
                }
                mode::up_to_date(format!("schema matches {shown}"));
                return Ok(());
            }
            let diff = similar::TextDiff::from_lines(&committed, &live)
                .unified_diff()
                .context_radius(3)
                .header(&shown, &format!("{} (live)", source.masked()))
                .to_string();
            term::print_diff(&diff);
            print_gaps();
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

/// `--diagram`: the committed snapshot's tables drawn, written or checked; nothing else.
fn draw(
    sh: &Shell,
    mode: Mode,
    output: Option<&Path>,
    file: &Path,
    patterns: &[String],
) -> anyhow::Result<()> {
    let output = output.map_or_else(
        || sh.current_dir().join("fixtures/schema.sql"),
        Path::to_path_buf,
    );
    let shown = term::display_path(sh, &output);
    let file_shown = term::display_path(sh, file);
    refuse_directory(sh, file, "--diagram", "schema.mmd")?;
    if atomic_file::resolved(file) == atomic_file::resolved(&output) {
        bail!("--diagram {file_shown} is the snapshot itself: give the diagram a path of its own, such as schema.mmd");
    }
    let Ok(text) = std::fs::read_to_string(&output) else {
        bail!("{shown} does not exist: create it with `cargo xtask schema-snapshot`, or name it with --output");
    };
    let tables = diagram::tables(&text);
    let mut selected: BTreeSet<Table> = BTreeSet::new();
    if patterns.is_empty() {
        selected.extend(tables.iter().cloned());
    }
    for pattern in patterns {
        let parts = pattern_regexes(pattern)
            .and_then(|parts| {
                parts
                    .iter()
                    .map(|part| regex::Regex::new(part).map_err(anyhow::Error::from))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .with_context(|| format!("--tables `{pattern}`"))?;
        let matches = |table: &&Table| match &parts[..] {
            [name] => table.schema == "public" && name.is_match(&table.name),
            [schema, name] => schema.is_match(&table.schema) && name.is_match(&table.name),
            _ => false,
        };
        let found: Vec<&Table> = tables.iter().filter(matches).collect();
        if found.is_empty() {
            bail!("--tables `{pattern}` matches no table of {shown}: give a pattern such as `dcim_*` or `public.dcim_site`");
        }
        selected.extend(found.into_iter().cloned());
    }
    let source = diagram::of_tables(&text, &selected)?;
    let content = if file.extension().is_some_and(|e| e == "md") {
        format!("```mermaid\n{source}```\n")
    } else {
        source
    };
    let mut update = String::from("cargo xtask schema-snapshot");
    if shown != "fixtures/schema.sql" {
        update.push_str(&format!(" --output {shown}"));
    }
    update.push_str(&format!(" --diagram {file_shown}"));
    for pattern in patterns {
        update.push_str(&format!(" --tables '{pattern}'"));
    }
    let current = std::fs::read_to_string(file).ok();
    match mode {
        Mode::Check => {
            let Some(current) = current else {
                bail!("{file_shown} does not exist: create it with `{update}`");
            };
            if current == content {
                mode::up_to_date(format!("{file_shown} is the diagram of {shown}"));
                return Ok(());
            }
            let diff = similar::TextDiff::from_lines(&current, &content)
                .unified_diff()
                .context_radius(3)
                .header(&file_shown, &format!("{file_shown} (drawn from {shown})"))
                .to_string();
            term::print_diff(&diff);
            Err(mode::out_of_date(
                format!("{file_shown} is not the diagram of {shown}"),
                &update,
            ))
        }
        Mode::DryRun => {
            let now = match current {
                Some(current) if current == content => "unchanged",
                Some(_) => "changed",
                None => "new",
            };
            mode::print_plan(&[
                format!("read {shown} (no database)"),
                format!(
                    "draw {} of its {} tables and their neighbours: {} characters of Mermaid",
                    selected.len(),
                    tables.len(),
                    content.len()
                ),
                format!("write {file_shown}: {now}"),
            ]);
            Ok(())
        }
        Mode::Write => {
            atomic_file::write_bytes(file, content.as_bytes())
                .with_context(|| format!("writing {file_shown}"))?;
            term::success(format!(
                "wrote {file_shown} ({} of {} tables, and their neighbours)",
                selected.len(),
                tables.len()
            ));
            Ok(())
        }
    }
}

/// The scrub-coverage check of a schema: one line per column no rule or entry covers, per
/// stale entry and per entry whose reason is still a TODO, each saying how to fix it.
fn coverage_gaps(
    sh: &Shell,
    schema: &str,
    file: &Path,
    rules: Option<&Path>,
) -> anyhow::Result<Vec<String>> {
    let shown = term::display_path(sh, file);
    let kept = coverage::load(file, &shown)?;
    let report = coverage::check(&coverage::columns(schema), &coverage::rules(rules)?, &kept);
    let mut lines = Vec::new();
    for column in &report.uncovered {
        lines.push(format!(
            "{}.{}.{} ({}) would be copied verbatim into dev copies: scrub it with a rule (--scrub-rules FILE), or keep it in {shown} with a reason: \"{}\" = \"why its values may be copied\"",
            column.schema, column.table, column.name, column.data_type, column.entry_name()
        ));
    }
    for entry in &report.unreasoned {
        lines.push(format!(
            "\"{}\" ({}) has no reason yet: say why its values may be copied verbatim, or scrub it with a rule and remove the entry",
            entry.name, entry.at
        ));
    }
    for entry in &report.stale {
        lines.push(format!(
            "\"{}\" ({}) names no column of the schema: remove it from {shown}",
            entry.name, entry.at
        ));
    }
    Ok(lines)
}

/// The coverage problems under a heading of their own, for the pull request's summary.
fn gaps_markdown(gaps: &[String]) -> String {
    if gaps.is_empty() {
        return String::new();
    }
    let mut text = String::from("\n### Scrub coverage: columns to classify\n\n");
    for line in gaps {
        text.push_str(&format!("- {line}\n"));
    }
    text
}

/// `--write-coverage`: an entry with a TODO reason for each uncovered column of the snapshot.
fn write_coverage(
    sh: &Shell,
    output: Option<&Path>,
    file: &Path,
    rules: Option<&Path>,
) -> anyhow::Result<()> {
    let output = output.map_or_else(
        || sh.current_dir().join("fixtures/schema.sql"),
        Path::to_path_buf,
    );
    let (shown, file_shown) = (
        term::display_path(sh, &output),
        term::display_path(sh, file),
    );
    refuse_directory(sh, file, "--scrub-coverage", "scrub-coverage.toml")?;
    let Ok(schema) = std::fs::read_to_string(&output) else {
        bail!("{shown} does not exist: create it with `cargo xtask schema-snapshot`, or name it with --output");
    };
    let kept = coverage::load(file, &file_shown)?;
    let report = coverage::check(&coverage::columns(&schema), &coverage::rules(rules)?, &kept);
    if report.uncovered.is_empty() {
        mode::up_to_date(format!(
            "every column of {shown} that can hold text is covered; {file_shown} is unchanged"
        ));
        return Ok(());
    }
    let current = std::fs::read_to_string(file).ok();
    let text = coverage::with_entries(current.as_deref(), &report.uncovered)
        .with_context(|| format!("adding entries to {file_shown}"))?;
    atomic_file::write_bytes(file, text.as_bytes())
        .with_context(|| format!("writing {file_shown}"))?;
    term::success(format!(
        "added {} entries to {file_shown}, each with a TODO reason: replace each with why its values may be copied, or scrub the column with a rule and remove its entry",
        report.uncovered.len()
    ));
    Ok(())
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
