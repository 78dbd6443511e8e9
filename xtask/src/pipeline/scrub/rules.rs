//! Scrub rules: what to rewrite in which column, read strictly from TOML.

use std::{collections::HashMap, path::Path, sync::Arc};

use anyhow::{bail, Context};
use serde::Deserialize;

const PRESET: &str = include_str!("preset.toml");

#[derive(Debug, Clone)]
pub enum Action {
    Null,
    Empty,
    /// An empty JSON object, `{}`: for JSON columns whose every key may be personal
    /// (custom fields of a person, a login provider's profile).
    EmptyObject,
    /// A template: `{pk}`, `{hash}`, `{hash40}`, or `{column}` for another column of the row.
    Value(String),
    UnusablePassword,
    FakeEmail,
    DeleteRows,
    JsonbRemoveKeys(Vec<String>),
    RegexReplace(regex::Regex, String),
    /// URL user information, secret query parameters, secret JSON keys, credential pairs,
    /// bearer tokens, private keys and well-known token prefixes.
    RedactSecrets,
    /// A changelog snapshot (`prechange_data`, `postchange_data`), scrubbed by the rules of
    /// the model its row records.
    ChangelogSnapshot(Arc<Models>),
    /// A changelog row's `object_repr`, faked as the model's name rule fakes the name, or
    /// shown as `<model> <id>` for the tables listed (whose names embed other rows' names).
    ChangelogRepr(Arc<Models>, Vec<String>),
}

/// The rules of each model a changelog row may record, by content type id.
#[derive(Debug, Default)]
pub struct Models {
    pub by_content_type: HashMap<String, Vec<Rule>>,
    /// Content types whose `object_repr` is hidden, with the model's name.
    pub hidden: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// `schema.table` once planned; as the file wrote it (maybe unqualified) before.
    pub table: String,
    /// None for whole-row actions.
    pub column: Option<String>,
    pub action: Action,
}

impl Rule {
    pub fn action_name(&self) -> &'static str {
        match &self.action {
            Action::Null => "null",
            Action::Empty => "empty",
            Action::EmptyObject => "empty-object",
            Action::Value(_) => "value",
            Action::UnusablePassword => "unusable-password",
            Action::FakeEmail => "fake-email",
            Action::DeleteRows => "delete-rows",
            Action::JsonbRemoveKeys(_) => "jsonb-remove-keys",
            Action::RegexReplace(..) => "regex-replace",
            Action::RedactSecrets => "redact-secrets",
            Action::ChangelogSnapshot(_) => "changelog-snapshot",
            Action::ChangelogRepr(..) => "changelog-repr",
        }
    }

    pub fn describe(&self) -> String {
        match &self.column {
            Some(column) => format!("{}.{column}: {}", self.table, self.action_name()),
            None => format!("{}: {}", self.table, self.action_name()),
        }
    }

    /// Whether the action writes a text value, which only a string column can take.
    pub fn writes_text(&self) -> bool {
        matches!(
            self.action,
            Action::Empty | Action::UnusablePassword | Action::FakeEmail | Action::Value(_)
        )
    }
}

fn yes() -> bool {
    true
}

/// A rules file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    /// false: the built-in preset is not in force, only this file's rules.
    #[serde(default = "yes")]
    preset: bool,
    /// Each rule read on its own (see [`parse`]), so that an error names its line.
    #[serde(default)]
    rule: Vec<toml::Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
enum RuleSpec {
    Null {
        table: String,
        column: String,
    },
    Empty {
        table: String,
        column: String,
    },
    EmptyObject {
        table: String,
        column: String,
    },
    Value {
        table: String,
        column: String,
        value: String,
    },
    UnusablePassword {
        table: String,
        column: String,
    },
    FakeEmail {
        table: String,
        column: String,
    },
    DeleteRows {
        table: String,
    },
    JsonbRemoveKeys {
        table: String,
        column: String,
        keys: Vec<String>,
    },
    RegexReplace {
        table: String,
        column: String,
        pattern: String,
        replacement: String,
    },
    RedactSecrets {
        table: String,
        column: String,
    },
    ChangelogSnapshot {
        table: String,
        column: String,
    },
    ChangelogRepr {
        table: String,
        column: String,
        /// Tables whose rows' `object_repr` is replaced by `<model> <id>`.
        #[serde(default)]
        hide: Vec<String>,
    },
}

/// The rules in force: the preset, extended (or replaced per column) by a file.
pub fn load_rules(file: Option<&Path>) -> anyhow::Result<Vec<Rule>> {
    let mut rules = parse(PRESET, "the built-in NetPoint preset")?.1;
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read scrub rules {}", file.display()))?;
        let (preset, extra) = parse(&text, &file.display().to_string())?;
        if !preset {
            rules.clear();
        }
        for rule in extra {
            rules.retain(|r| !(r.table == rule.table && r.column == rule.column));
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// How many lines into `rule` (the text of one `[[rule]]`) its `key` is set.
fn key_line(rule: &str, key: &str) -> Option<usize> {
    rule.lines().position(|line| {
        line.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

/// The line of `text` that byte `offset` is on, counted from 1.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a rules file; returns whether the preset stays in force (`preset = false` drops it).
fn parse(text: &str, what: &str) -> anyhow::Result<(bool, Vec<Rule>)> {
    let file: RulesFile = toml::from_str(text).map_err(|err| {
        let message = err
            .message()
            .replace('\n', " ")
            .replace("unknown variant", "unknown action");
        match err.span() {
            Some(span) => anyhow::anyhow!(
                "scrub rules {what}, line {}: {message}; see README.md, \"Scrubbing\", for the keys of a [[rule]]",
                line_of(text, span.start)
            ),
            None => anyhow::anyhow!("scrub rules {what}: {message}"),
        }
    })?;
    let mut rules = Vec::new();
    for spanned in file.rule {
        let span = spanned.span();
        let line = line_of(text, span.start);
        let at = || format!("scrub rules {what}, line {line}");
        // The line of one of this rule's keys, else of the rule.
        let key_at = |key: &str| {
            // From its header to the next table's: the span covers the header alone.
            let rule = &text[span.start..];
            let rule = &rule[..rule.find("\n[").unwrap_or(rule.len())];
            let line = key_line(rule, key).map_or(line, |n| line + n);
            format!("scrub rules {what}, line {line}")
        };
        let spec: RuleSpec = spanned
            .into_inner()
            .try_into()
            .map_err(|err: toml::de::Error| {
                let message = err
                    .message()
                    .replace('\n', " ")
                    .replace("unknown variant", "unknown action");
                let key = message
                    .split('`')
                    .nth(1)
                    .filter(|_| message.starts_with("unknown field"));
                let key = match message.contains("unknown action") {
                    true => Some("action"),
                    false => key,
                };
                anyhow::anyhow!(
                    "{}: {message}; see README.md, \"Scrubbing\", for the keys of a [[rule]]",
                    key.map_or_else(at, key_at)
                )
            })?;
        let rule = match spec {
            RuleSpec::Null { table, column } => rule(table, column, Action::Null),
            RuleSpec::Empty { table, column } => rule(table, column, Action::Empty),
            RuleSpec::EmptyObject { table, column } => rule(table, column, Action::EmptyObject),
            RuleSpec::Value {
                table,
                column,
                value,
            } => rule(table, column, Action::Value(value)),
            RuleSpec::UnusablePassword { table, column } => {
                rule(table, column, Action::UnusablePassword)
            }
            RuleSpec::FakeEmail { table, column } => rule(table, column, Action::FakeEmail),
            RuleSpec::DeleteRows { table } => Rule {
                table,
                column: None,
                action: Action::DeleteRows,
            },
            RuleSpec::JsonbRemoveKeys {
                table,
                column,
                keys,
            } => {
                if keys.is_empty() {
                    bail!("{}: `keys` lists no key to remove", at());
                }
                let keys = keys.iter().map(|k| k.to_lowercase()).collect();
                rule(table, column, Action::JsonbRemoveKeys(keys))
            }
            RuleSpec::RegexReplace {
                table,
                column,
                pattern,
                replacement,
            } => {
                let regex = regex::Regex::new(&pattern).map_err(|err| {
                    anyhow::anyhow!("{}: invalid `pattern`: {err}", key_at("pattern"))
                })?;
                rule(table, column, Action::RegexReplace(regex, replacement))
            }
            RuleSpec::RedactSecrets { table, column } => rule(table, column, Action::RedactSecrets),
            RuleSpec::ChangelogSnapshot { table, column } => {
                rule(table, column, Action::ChangelogSnapshot(Arc::default()))
            }
            RuleSpec::ChangelogRepr {
                table,
                column,
                hide,
            } => rule(table, column, Action::ChangelogRepr(Arc::default(), hide)),
        };
        if rule.table.is_empty() || rule.column.as_deref() == Some("") {
            bail!("{}: `table` and `column` must not be empty", at());
        }
        rules.push(rule);
    }
    Ok((file.preset, rules))
}

fn rule(table: String, column: String, action: Action) -> Rule {
    Rule {
        table,
        column: Some(column),
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        format!("{:#}", parse(text, "rules.toml").expect_err(text))
    }

    #[test]
    fn the_preset_parses() {
        let rules = load_rules(None).unwrap();
        assert!(rules.len() > 20, "{}", rules.len());
        assert!(rules
            .iter()
            .any(|r| r.describe() == "users_token: delete-rows"));
    }

    #[test]
    fn typos_are_refused_with_file_and_line() {
        let plural =
            error_of("preset = false\n\n[[rules]]\ntable = \"x\"\naction = \"delete-rows\"\n");
        assert!(
            plural.contains("rules.toml, line 3") && plural.contains("unknown field `rules`"),
            "{plural}"
        );
        let key = error_of(
            "[[rule]]\ntable = \"x\"\ncolumn = \"c\"\naction = \"regex-replace\"\npattern = \"a\"\nreplacment = \"b\"\n",
        );
        assert!(
            key.contains("line 6") && key.contains("replacment"),
            "{key}"
        );
        let rule = "[[rule]]\ntable = \"t\"\ncolumn = \"c\"\naction = \"empty\"\n\n";
        let third = error_of(&format!("# mine\n{rule}{rule}{rule}colour = \"red\"\n"));
        assert!(
            third.contains("line 17") && third.contains("unknown field `colour`"),
            "{third}"
        );
        let missing = error_of(
            "[[rule]]\ntable = \"x\"\ncolumn = \"c\"\naction = \"regex-replace\"\npattern = \"a\"\n",
        );
        assert!(missing.contains("replacement"), "{missing}");
        let action = error_of("\n[[rule]]\ntable = \"x\"\ncolumn = \"c\"\naction = \"shred\"\n");
        assert!(
            action.contains("line 5") && action.contains("shred"),
            "{action}"
        );
        let column = error_of("[[rule]]\ntable = \"x\"\naction = \"null\"\n");
        assert!(column.contains("column"), "{column}");
        let pattern = error_of(
            "[[rule]]\ntable = \"x\"\ncolumn = \"c\"\naction = \"regex-replace\"\npattern = \"(\"\nreplacement = \"\"\n",
        );
        assert!(
            pattern.contains("line 5") && pattern.contains("invalid `pattern`"),
            "{pattern}"
        );
        assert!(error_of("not toml [").contains("rules.toml"));
        assert!(error_of("preset = \"no\"\n").contains("line 1"));
    }

    #[test]
    fn files_extend_or_replace_the_preset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(&file, "[[rule]]\ntable = \"dcim_site\"\ncolumn = \"name\"\naction = \"value\"\nvalue = \"site-{pk}\"\n").unwrap();
        let rules = load_rules(Some(&file)).unwrap();
        assert!(rules.len() > 20 && rules.iter().any(|r| r.table == "dcim_site"));
        std::fs::write(
            &file,
            "preset = false\n[[rule]]\ntable = \"x\"\naction = \"delete-rows\"\n",
        )
        .unwrap();
        assert_eq!(load_rules(Some(&file)).unwrap().len(), 1);
    }
}
