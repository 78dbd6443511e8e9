//! The command line the commands share: the flag groups several of them take, each turned
//! into the engine's plain value; the settings a flag or else an environment variable gives;
//! and the flag or command that gives each remedy the engine can point to.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};

use crate::{
    pg::{self, url::from_env, DbUrl},
    pipeline::{scrub, subset, swap},
    remedy::Remedy,
    term,
};

/// The flags that guard a database about to be replaced.
#[derive(Debug, Clone, clap::Args)]
pub struct GuardFlags {
    /// Replace a target database that has tables without asking.
    #[arg(long)]
    pub yes: bool,
    /// Allow a target database that is not on this machine.
    #[arg(long)]
    pub allow_remote_target: bool,
    /// Load a dump of a newer PostgreSQL major into an older server.
    #[arg(long)]
    pub allow_downgrade: bool,
}

impl GuardFlags {
    pub fn guard(&self) -> swap::LoadGuard {
        swap::LoadGuard {
            yes: self.yes,
            allow_remote_target: self.allow_remote_target,
            allow_downgrade: self.allow_downgrade,
        }
    }
}

/// `--scrub-rules`, `--no-scrub` and `--strict`, for the commands that read a source.
#[derive(Debug, Clone, clap::Args)]
pub struct ScrubFlags {
    /// TOML rules that extend the built-in NetPoint preset (see README.md, "Scrubbing").
    #[arg(long, value_name = "FILE")]
    pub scrub_rules: Option<PathBuf>,
    /// Copy secrets and personal data verbatim (not recommended).
    #[arg(long, conflicts_with = "scrub_rules")]
    pub no_scrub: bool,
    /// Fail, changing nothing, when the leak scan finds credential-shaped values in columns
    /// no scrub rule covers (with --no-scrub no column is covered).
    #[arg(long)]
    pub strict: bool,
    /// The columns kept on purpose, each with a reason (see README.md, "Scrub coverage")
    /// [default: fixtures/scrub-coverage.toml].
    #[arg(long, value_name = "FILE")]
    pub scrub_coverage: Option<PathBuf>,
}

impl ScrubFlags {
    /// The engine's options, for a run that reads a source; warns when scrubbing is off.
    pub fn options(&self) -> scrub::Options {
        if self.no_scrub {
            term::warn("--no-scrub: secrets and personal data are copied verbatim");
        }
        scrub::Options {
            rules: self.scrub_rules.clone(),
            no_scrub: self.no_scrub,
            strict: self.strict,
            coverage: self.scrub_coverage.clone(),
        }
    }
}

/// `--subset`, `--subset-rules` and `--sample`: a subset of the source instead of all of it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SubsetFlags {
    /// Root rows of a subset: "TABLE: CONDITION" or NAME=VALUE from the rules, such as
    /// site=ams1 (repeatable).
    #[arg(long, value_name = "ROOT")]
    pub subset: Vec<String>,
    /// Subset rules (TOML) extending or replacing the built-in NetBox preset.
    #[arg(long, value_name = "FILE")]
    pub subset_rules: Option<PathBuf>,
    /// A deterministic share of each root's rows, such as 5%.
    #[arg(long, value_name = "PERCENT")]
    pub sample: Option<String>,
}

/// What a subset is made of, once its flags are read.
pub struct SubsetRequest {
    pub rules: subset::Rules,
    pub roots: Vec<subset::Root>,
    pub sample: Option<f64>,
    /// The definition as a bundle's manifest records it.
    pub record: crate::bundle::SubsetRecord,
}

impl SubsetFlags {
    /// The subset flags given, as typed: empty when the whole source is wanted.
    pub fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if !self.subset.is_empty() {
            given.push("--subset");
        }
        if self.subset_rules.is_some() {
            given.push("--subset-rules");
        }
        if self.sample.is_some() {
            given.push("--sample");
        }
        given
    }

    /// The subset asked for; `None` when no subset flag is given.
    pub fn request(&self) -> anyhow::Result<Option<SubsetRequest>> {
        if self.given().is_empty() {
            return Ok(None);
        }
        if self.subset.is_empty() {
            bail!("--subset-rules and --sample shape a subset: name its roots with --subset \"TABLE: CONDITION\" or NAME=VALUE");
        }
        let rules = subset::Rules::load(self.subset_rules.as_deref())?;
        let roots = self
            .subset
            .iter()
            .map(|arg| rules.root(arg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sample = self.sample.as_deref().map(parse_sample).transpose()?;
        let rules_sha256 = self
            .subset_rules
            .as_deref()
            .map(|file| {
                crate::media::hash_file(file)
                    .with_context(|| format!("cannot read subset rules {}", file.display()))
            })
            .transpose()?;
        let record = crate::bundle::SubsetRecord {
            roots: self.subset.clone(),
            sample: sample.map(|pct| format!("{pct}%")),
            rules_sha256,
        };
        Ok(Some(SubsetRequest {
            rules,
            roots,
            sample,
            record,
        }))
    }
}

/// `--sample 5%` (or `0.5%`): the share of each root's rows kept, in percent.
pub fn parse_sample(text: &str) -> anyhow::Result<f64> {
    let number = text.trim().strip_suffix('%').unwrap_or(text.trim());
    match number.parse::<f64>() {
        Ok(pct) if pct > 0.0 && pct <= 100.0 => Ok(pct),
        _ => bail!(
            "--sample {text:?}: give a share of the roots above 0% and at most 100%, such as 5%"
        ),
    }
}

/// `--pg-tools`: where the client tools come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PgTools {
    /// Host tools when they can serve the server, else the `postgres:<major>` image.
    #[default]
    Auto,
    /// Only the tools on PATH.
    Host,
    /// Only the `postgres:<major>` images, through Docker.
    Docker,
}

impl From<PgTools> for pg::ToolSource {
    fn from(flag: PgTools) -> pg::ToolSource {
        match flag {
            PgTools::Auto => pg::ToolSource::Auto,
            PgTools::Host => pg::ToolSource::Host,
            PgTools::Docker => pg::ToolSource::Docker,
        }
    }
}

// Settings given by a flag, else by an environment variable. Not clap's `env`: a value it
// takes from the environment counts as given for `conflicts_with` and `requires`, which
// would refuse `seed-dev --refresh` and `clone-prod --out` whenever the variables are set.

/// The dev database: `--target`, else `NETPOINT_DATABASE_URL`; none when neither is set.
pub fn dev_database(target: Option<String>) -> anyhow::Result<Option<DbUrl>> {
    url_or_env(target, "NETPOINT_DATABASE_URL")
}

/// The dev database, required: `flag` (`--target`, or `--source` when it is read), else
/// `NETPOINT_DATABASE_URL`.
pub fn required_dev_database(given: Option<String>, flag: &str) -> anyhow::Result<DbUrl> {
    required_url(given, "NETPOINT_DATABASE_URL", flag)
}

/// The production database: `--source`, else `NETPOINT_PROD_DATABASE_URL`.
pub fn prod_database(source: Option<String>) -> anyhow::Result<DbUrl> {
    required_url(source, "NETPOINT_PROD_DATABASE_URL", "--source")
}

/// The dev media directory: `--target-media`, else `NETPOINT_MEDIA_ROOT`.
pub fn dev_media(target_media: Option<PathBuf>) -> Option<PathBuf> {
    path_or_env(target_media, "NETPOINT_MEDIA_ROOT")
}

/// The production media directory: `--source-media`, else `NETPOINT_PROD_MEDIA_ROOT`.
pub fn prod_media(source_media: Option<PathBuf>) -> Option<PathBuf> {
    path_or_env(source_media, "NETPOINT_PROD_MEDIA_ROOT")
}

/// A path from its flag, else from its environment variable.
pub fn path_or_env(flag: Option<PathBuf>, var: &str) -> Option<PathBuf> {
    flag.or_else(|| from_env(var).map(PathBuf::from))
}

fn url_or_env(flag: Option<String>, var: &str) -> anyhow::Result<Option<DbUrl>> {
    let text = match flag {
        Some(text) => text,
        None => match from_env(var) {
            Some(value) => value
                .into_string()
                .map_err(|_| anyhow!("{var} is not valid UTF-8: set it to a postgres:// URL"))?,
            None => return Ok(None),
        },
    };
    DbUrl::parse(&text).map(Some)
}

fn required_url(flag: Option<String>, var: &str, flag_name: &str) -> anyhow::Result<DbUrl> {
    url_or_env(flag, var)?
        .ok_or_else(|| anyhow!("no database given: pass {flag_name} URL or set {var}"))
}

/// Each remedy as this command line gives it (see [`crate::remedy`]).
pub fn spell(remedy: Remedy) -> &'static str {
    match remedy {
        Remedy::Confirm => "pass --yes to confirm",
        Remedy::AllowRemoteTarget => {
            "pass --allow-remote-target if you really mean to replace a remote database"
        }
        Remedy::AllowDowngrade => {
            "pass --allow-downgrade to try (the target stays untouched if it fails)"
        }
        Remedy::FewerJobs => "lower --jobs",
        Remedy::ScrubRulesOrNoScrub => {
            "give rules for its tables with --scrub-rules, or pass --no-scrub to copy it as it is"
        }
        Remedy::ScrubRulesOrNotStrict => {
            "add scrub rules for these columns with --scrub-rules FILE, or drop --strict"
        }
        Remedy::ScrubRule => "add a rule with --scrub-rules FILE",
        Remedy::NameDevDatabase => "set NETPOINT_DATABASE_URL (or pass --target URL)",
        Remedy::DestroyDevContainer => "run `cargo xtask seed-dev --destroy --yes`",
        Remedy::ResignBundle => "export the bundle again with --sign-key",
        Remedy::SignBundles => {
            "sign bundles with `cargo xtask clone-prod --out DIR --sign-key KEY`"
        }
        Remedy::OtherSigners => "or pass --allowed-signers FILE",
        Remedy::NameSigners => "pass --allowed-signers FILE or set NETPOINT_ALLOWED_SIGNERS",
        Remedy::SourceMediaPath => "check --source-media, a path on that host",
        Remedy::BundleDir => "pass the directory written by `cargo xtask clone-prod --out`",
        Remedy::ToolsFromDocker => "drop `--pg-tools host`",
        Remedy::SignOrTrustUnsigned => {
            "export it with `--sign-key KEY`, or pass --trust-unsigned if you made it yourself"
        }
        Remedy::NotASnapshot => "name the dev database, or use `cargo xtask dev-db restore`",
        Remedy::FewerTables => "name the tables to draw with --tables PATTERN",
        Remedy::ClassifyColumns => {
            "scrub each with a rule (--scrub-rules FILE) or keep it with a reason in fixtures/scrub-coverage.toml \
             (`cargo xtask schema-snapshot --write-coverage` adds them); or drop --strict"
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::spell;
    use crate::{remedy::Remedy, Cli};

    /// Every command and subcommand, built.
    fn commands() -> Vec<clap::Command> {
        let mut cli = Cli::command();
        cli.build();
        let mut pending = vec![cli];
        let mut all = Vec::new();
        while let Some(cmd) = pending.pop() {
            pending.extend(cmd.get_subcommands().cloned());
            all.push(cmd);
        }
        all
    }

    /// A flag clap fills from the environment counts as given for `conflicts_with` and
    /// `requires`: with NETPOINT_DATABASE_URL exported, `seed-dev --refresh` (which conflicts
    /// with --target) would be refused. The settings are read by the helpers above instead;
    /// only the global flags, which conflict with nothing, take `env`.
    #[test]
    fn no_command_flag_is_filled_from_the_environment() {
        for cmd in commands() {
            for arg in cmd.get_arguments().filter(|a| a.get_env().is_some()) {
                let long = arg.get_long().unwrap_or_default();
                assert!(
                    arg.is_global_set() && ["pg-tools", "jobs"].contains(&long),
                    "{}: --{long} takes {:?}",
                    cmd.get_name(),
                    arg.get_env()
                );
            }
        }
    }

    #[test]
    fn samples_are_percentages() {
        assert_eq!(super::parse_sample("5%").unwrap(), 5.0);
        assert_eq!(super::parse_sample("0.5").unwrap(), 0.5);
        for bad in ["0%", "101%", "five", "-1%"] {
            let message = super::parse_sample(bad).unwrap_err().to_string();
            assert!(message.contains("such as 5%"), "{message}");
        }
    }

    #[test]
    fn each_remedy_names_flags_the_command_line_has() {
        let flags: Vec<String> = commands()
            .iter()
            .flat_map(|cmd| cmd.get_arguments().filter_map(|a| a.get_long()))
            .map(|long| format!("--{long}"))
            .collect();
        let all = [
            Remedy::Confirm,
            Remedy::AllowRemoteTarget,
            Remedy::AllowDowngrade,
            Remedy::FewerJobs,
            Remedy::ScrubRulesOrNoScrub,
            Remedy::ScrubRulesOrNotStrict,
            Remedy::ScrubRule,
            Remedy::NameDevDatabase,
            Remedy::DestroyDevContainer,
            Remedy::ResignBundle,
            Remedy::SignBundles,
            Remedy::OtherSigners,
            Remedy::NameSigners,
            Remedy::SourceMediaPath,
            Remedy::BundleDir,
            Remedy::ToolsFromDocker,
            Remedy::FewerTables,
            Remedy::ClassifyColumns,
        ];
        for remedy in all {
            let text = spell(remedy);
            let named: Vec<&str> = text
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|word| word.starts_with("--"))
                .collect();
            assert!(!named.is_empty(), "{remedy:?}: {text}");
            for flag in named {
                assert!(
                    flags.iter().any(|f| f == flag),
                    "{remedy:?}: {flag} in {text}"
                );
            }
        }
    }
}
