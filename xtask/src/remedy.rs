//! What a user can do about a refusal of the engine. The engine names the override or fix in
//! its own terms, as a [`Remedy`]; the command line (`cli.rs`) says once, at start-up, which
//! flag or command gives each, so that every message shows the fix as the user types it.

use std::{fmt, sync::OnceLock};

/// An override or fix that an engine refusal or warning points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Confirm replacing (or removing) what holds data, without a terminal to ask on.
    Confirm,
    /// Allow a target database on another machine.
    AllowRemoteTarget,
    /// Try loading a dump of a newer PostgreSQL major into an older server.
    AllowDowngrade,
    /// Run fewer jobs side by side.
    FewerJobs,
    /// Give scrub rules for a source's tables, or copy it unscrubbed.
    ScrubRulesOrNoScrub,
    /// Give scrub rules for the columns a strict leak scan found, or leave strict mode.
    ScrubRulesOrNotStrict,
    /// Give a scrub rule for a column the leak scan found.
    ScrubRule,
    /// Name the dev database (it then needs no container).
    NameDevDatabase,
    /// Remove the dev container and its volume, to start afresh.
    DestroyDevContainer,
    /// Export the bundle again, signed.
    ResignBundle,
    /// Sign bundles the way exports sign them.
    SignBundles,
    /// Read another allowed signers file.
    OtherSigners,
    /// Name the allowed signers file.
    NameSigners,
    /// Check the source media directory, a path on the SSH host.
    SourceMediaPath,
    /// Name a bundle directory that an export wrote.
    BundleDir,
    /// Let the client tools come from Docker as well as from the host.
    ToolsFromDocker,
    /// Have the bundle signed, or load it unsigned on purpose when it is one's own.
    SignOrTrustUnsigned,
    /// Name the dev database, not a snapshot of it; or restore the snapshot.
    NotASnapshot,
    /// Draw fewer tables at once.
    FewerTables,
    /// Scrub each column with a rule or keep it with a reason in the coverage file, or leave
    /// strict mode.
    ClassifyColumns,
}

/// How the command line spells each remedy; set once by `main`.
static SPELLING: OnceLock<fn(Remedy) -> &'static str> = OnceLock::new();

/// Makes every message show each remedy as `spell` says (the flags of this command line).
pub fn spell_with(spell: fn(Remedy) -> &'static str) {
    let _ = SPELLING.set(spell);
}

impl Remedy {
    /// The remedy as the command line spells it, else in the engine's own words.
    pub fn how(self) -> &'static str {
        match SPELLING.get() {
            Some(spell) => spell(self),
            None => self.in_engine_terms(),
        }
    }

    fn in_engine_terms(self) -> &'static str {
        match self {
            Remedy::Confirm => "confirm it",
            Remedy::AllowRemoteTarget => {
                "allow a remote target if you really mean to replace a remote database"
            }
            Remedy::AllowDowngrade => {
                "allow the downgrade to try (the target stays untouched if it fails)"
            }
            Remedy::FewerJobs => "run fewer jobs",
            Remedy::ScrubRulesOrNoScrub => {
                "give rules for its tables, or turn scrubbing off to copy it as it is"
            }
            Remedy::ScrubRulesOrNotStrict => {
                "add scrub rules for these columns, or leave strict mode"
            }
            Remedy::ScrubRule => "add a scrub rule",
            Remedy::NameDevDatabase => "name the dev database",
            Remedy::DestroyDevContainer => "remove the dev container and its volume",
            Remedy::ResignBundle => "export the bundle again, signed",
            Remedy::SignBundles => "sign bundles as an export does",
            Remedy::OtherSigners => "or read another allowed signers file",
            Remedy::NameSigners => "name the allowed signers file",
            Remedy::SourceMediaPath => "check the source media directory, a path on that host",
            Remedy::BundleDir => "name the directory an export wrote",
            Remedy::ToolsFromDocker => "let the tools come from Docker too",
            Remedy::SignOrTrustUnsigned => {
                "export it signed, or trust it unsigned on purpose if you made it yourself"
            }
            Remedy::NotASnapshot => "name the dev database, or restore the snapshot",
            Remedy::FewerTables => "name fewer tables to draw",
            Remedy::ClassifyColumns => {
                "scrub each with a rule, or keep it with a reason in the coverage file; or leave strict mode"
            }
        }
    }
}

impl fmt::Display for Remedy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.how())
    }
}

/// An engine refusal: what is wrong, in the engine's terms, and the remedy that lifts it;
/// shown as "what is wrong: how to fix it".
#[derive(Debug)]
pub struct Refusal {
    pub message: String,
    pub remedy: Remedy,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.message, self.remedy)
    }
}

impl std::error::Error for Refusal {}

/// The error of a refusal that `remedy` lifts.
pub fn refuse(remedy: Remedy, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refusal {
        message: message.into(),
        remedy,
    })
}
