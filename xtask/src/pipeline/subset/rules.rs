//! Subset rules: named subsets, tables kept whole, edges added, cut or always followed
//! down, and derived tables, read strictly from TOML (the built-in NetBox preset, then a
//! file that extends or replaces it).

use std::{collections::BTreeMap, path::Path};

use anyhow::{bail, Context};
use serde::Deserialize;

const PRESET: &str = include_str!("preset.toml");
const VERSION: u32 = 1;

/// A name as a rules file wrote it, with where (`rules.toml, line 4`, or `the preset`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub origin: String,
}

/// A generic foreign key the naming does not reveal: `table.type_column` holds a content
/// type, `table.id_column` the id of a row of the table that content type names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub table: Named,
    pub type_column: String,
    pub id_column: String,
}

/// A table whose rows are computed from others (NetBox's cable paths): not followed, kept
/// only where everything it names is in the subset, references to the rows left out
/// cleared, and rebuilt afterwards with `rebuild`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    pub table: Named,
    /// A text array column of `<content type id>:<object id>` nodes, all of which must be in.
    pub nodes: Option<String>,
    /// `table.column`: nullable columns referencing this table, cleared where they point at a
    /// row left out.
    pub clear: Vec<Named>,
    pub rebuild: Option<String>,
}

/// The rules in force.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Named subsets: `site` → `dcim_site: slug = '{}'`.
    pub named: BTreeMap<String, String>,
    pub whole: Vec<Named>,
    /// `table.column`: edges not followed, in either direction.
    pub cut: Vec<Named>,
    /// `table.column`: edges followed downward from every included row, not only from the
    /// rows that belong to a root (a cable brings all its terminations).
    pub follow_down: Vec<Named>,
    pub pairs: Vec<Pair>,
    pub derived: Vec<Derived>,
    /// `table.column`: file columns, whose files (paths under the media root) the subset's
    /// media hold for the rows included.
    pub files: Vec<Named>,
}

/// A rules file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    version: u32,
    /// false: only this file's rules, without the built-in preset.
    #[serde(default = "yes")]
    preset: bool,
    #[serde(default)]
    whole: Vec<toml::Spanned<String>>,
    /// Tables the preset keeps whole that this file wants followed like any other.
    #[serde(default)]
    not_whole: Vec<toml::Spanned<String>>,
    #[serde(default)]
    cut: Vec<toml::Spanned<String>>,
    #[serde(default)]
    follow_down: Vec<toml::Spanned<String>>,
    #[serde(default)]
    named: BTreeMap<String, toml::Spanned<String>>,
    #[serde(default)]
    pair: Vec<toml::Spanned<PairSpec>>,
    #[serde(default)]
    derived: Vec<toml::Spanned<DerivedSpec>>,
    #[serde(default)]
    files: Vec<toml::Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairSpec {
    table: String,
    type_column: String,
    id_column: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DerivedSpec {
    table: String,
    nodes: Option<String>,
    #[serde(default)]
    clear: Vec<toml::Spanned<String>>,
    rebuild: Option<String>,
}

fn yes() -> bool {
    true
}

/// The line of `text` that byte `offset` is on, counted from 1.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Rules {
    /// The preset, extended by `file` (or replaced, with `preset = false` in it).
    pub fn load(file: Option<&Path>) -> anyhow::Result<Rules> {
        let mut rules = Rules::default();
        parse(PRESET, "the built-in preset", &mut rules)?;
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read subset rules {}", file.display()))?;
            let mut extra = Rules::default();
            let keep_preset = parse(&text, &file.display().to_string(), &mut extra)?;
            if !keep_preset {
                rules = Rules::default();
            }
            rules.merge(extra);
        }
        Ok(rules)
    }

    fn merge(&mut self, other: Rules) {
        self.named.extend(other.named);
        // A file's `not_whole` arrives as whole entries marked with `!` (see `parse`).
        for entry in other.whole {
            match entry.name.strip_prefix('!') {
                Some(name) => self.whole.retain(|w| w.name != name),
                None => {
                    self.whole.retain(|w| w.name != entry.name);
                    self.whole.push(entry);
                }
            }
        }
        self.cut.extend(other.cut);
        self.follow_down.extend(other.follow_down);
        self.pairs.extend(other.pairs);
        for entry in other.files {
            if !self.files.iter().any(|f| f.name == entry.name) {
                self.files.push(entry);
            }
        }
        for derived in other.derived {
            self.derived.retain(|d| d.table.name != derived.table.name);
            self.derived.push(derived);
        }
    }

    /// A `--subset` argument: `TABLE: CONDITION`, or `NAME=VALUE` for a named subset.
    pub fn root(&self, arg: &str) -> anyhow::Result<Root> {
        let named = arg
            .split_once('=')
            .filter(|(name, _)| is_plain_name(name.trim()) && !name.contains(':'));
        if let Some((table, condition)) = arg.split_once(':') {
            let table = table.trim();
            if is_table_name(table) && named.is_none_or(|(name, _)| name.len() > table.len()) {
                return root_of(arg, table, condition);
            }
        }
        let Some((name, value)) = named else {
            bail!(
                "root {arg:?}: write TABLE: CONDITION (\"dcim_site: slug = 'ams1'\") or NAME=VALUE (site=ams1)"
            );
        };
        let name = name.trim();
        let Some(template) = self.named.get(name) else {
            let known: Vec<&str> = self.named.keys().map(String::as_str).collect();
            bail!(
                "root {arg:?}: no named subset `{name}`; the rules know {}, or write TABLE: CONDITION",
                match known.is_empty() {
                    true => "none".to_string(),
                    false => known.join(", "),
                }
            );
        };
        let filled = template.replace("'{}'", &crate::pg::sql::literal(value));
        let (table, condition) = template_parts(&filled)
            .with_context(|| format!("the named subset `{name}` = {template:?}"))?;
        let mut root = root_of(&filled, table, condition)?;
        root.shown = arg.to_string();
        Ok(root)
    }
}

/// Root rows: a table and the SQL condition that picks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub table: String,
    pub condition: String,
    /// As the user wrote it, for messages.
    pub shown: String,
}

fn template_parts(filled: &str) -> anyhow::Result<(&str, &str)> {
    let (table, condition) = filled
        .split_once(':')
        .filter(|(table, _)| is_table_name(table.trim()))
        .context("a template is TABLE: CONDITION with '{}' where the value goes")?;
    Ok((table.trim(), condition))
}

fn root_of(shown: &str, table: &str, condition: &str) -> anyhow::Result<Root> {
    let condition = condition.trim();
    if condition.is_empty() {
        bail!("root {shown:?}: no condition after `{table}:`; write `{table}: true` for every row");
    }
    Ok(Root {
        table: table.to_string(),
        condition: condition.to_string(),
        shown: shown.to_string(),
    })
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_table_name(name: &str) -> bool {
    let mut parts = name.split('.');
    let ok = |part: Option<&str>| {
        part.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        })
    };
    ok(parts.next()) && {
        let rest: Vec<&str> = parts.collect();
        rest.is_empty() || (rest.len() == 1 && ok(Some(rest[0])))
    }
}

/// Parses one rules text into `rules`; returns whether the preset stays in force.
fn parse(text: &str, what: &str, rules: &mut Rules) -> anyhow::Result<bool> {
    let hint = "see README.md, \"Subsets\", for the keys of a subset rules file";
    let file: RulesFile = toml::from_str(text).map_err(|err| {
        let message = err.message().replace('\n', " ");
        match err.span() {
            Some(span) => anyhow::anyhow!(
                "subset rules {what}, line {}: {message}; {hint}",
                line_of(text, span.start)
            ),
            None => anyhow::anyhow!("subset rules {what}: {message}; {hint}"),
        }
    })?;
    if file.version != VERSION {
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("version"))
            .map_or(1, |n| n + 1);
        bail!(
            "subset rules {what}, line {line}: version {} is not one this xtask reads (it reads version {VERSION})",
            file.version
        );
    }
    let at = |span: std::ops::Range<usize>| format!("{what}, line {}", line_of(text, span.start));
    let named = |spanned: toml::Spanned<String>, key: &str, dotted: bool| {
        let origin = at(spanned.span());
        let name = spanned.into_inner();
        let ok = match dotted {
            true => name
                .rsplit_once('.')
                .is_some_and(|(t, c)| is_table_name(t) && !c.is_empty()),
            false => is_table_name(&name),
        };
        match ok {
            true => Ok(Named { name, origin }),
            false => Err(anyhow::anyhow!(
                "subset rules {origin}: `{key}` entry {name:?} is not {}",
                match dotted {
                    true => "TABLE.COLUMN",
                    false => "a table name",
                }
            )),
        }
    };
    for entry in file.whole {
        rules.whole.push(named(entry, "whole", false)?);
    }
    for entry in file.not_whole {
        let mut entry = named(entry, "not_whole", false)?;
        entry.name = format!("!{}", entry.name);
        rules.whole.push(entry);
    }
    for entry in file.cut {
        rules.cut.push(named(entry, "cut", true)?);
    }
    for entry in file.follow_down {
        rules.follow_down.push(named(entry, "follow_down", true)?);
    }
    for entry in file.files {
        rules.files.push(named(entry, "files", true)?);
    }
    for (name, template) in file.named {
        let origin = at(template.span());
        let template = template.into_inner();
        if !is_plain_name(&name) {
            bail!("subset rules {origin}: the named subset {name:?} must be a plain name (letters, digits, `_`, `-`)");
        }
        if !template.contains("'{}'") || template_parts(&template).is_err() {
            bail!("subset rules {origin}: the named subset `{name}` must read TABLE: CONDITION with '{{}}' where the value goes, as in \"dcim_site: slug = '{{}}'\"");
        }
        rules.named.insert(name, template);
    }
    for pair in file.pair {
        let origin = at(pair.span());
        let pair = pair.into_inner();
        if !is_table_name(&pair.table) || pair.type_column.is_empty() || pair.id_column.is_empty() {
            bail!(
                "subset rules {origin}: a [[pair]] names a table, a type_column and an id_column"
            );
        }
        rules.pairs.push(Pair {
            table: Named {
                name: pair.table,
                origin,
            },
            type_column: pair.type_column,
            id_column: pair.id_column,
        });
    }
    for derived in file.derived {
        let origin = at(derived.span());
        let derived = derived.into_inner();
        if !is_table_name(&derived.table) {
            bail!(
                "subset rules {origin}: a [[derived]] table {:?} is not a table name",
                derived.table
            );
        }
        let mut clear = Vec::new();
        for entry in derived.clear {
            clear.push(named(entry, "clear", true)?);
        }
        rules.derived.push(Derived {
            table: Named {
                name: derived.table,
                origin,
            },
            nodes: derived.nodes,
            clear,
            rebuild: derived.rebuild,
        });
    }
    Ok(file.preset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        let mut rules = Rules::default();
        format!(
            "{:#}",
            parse(text, "rules.toml", &mut rules).expect_err(text)
        )
    }

    #[test]
    fn the_preset_parses_and_names_netbox_tables() {
        let rules = Rules::load(None).unwrap();
        assert!(rules.named.contains_key("site") && rules.named.contains_key("tenant"));
        for table in [
            "django_content_type",
            "django_migrations",
            "users_user",
            "extras_tag",
        ] {
            assert!(rules.whole.iter().any(|w| w.name == table), "{table}");
        }
        for edge in [
            "dcim_cabletermination.cable_id",
            "extras_taggeditem.object_id",
            "dcim_interfacetemplate.device_type_id",
            "dcim_frontporttemplate.module_type_id",
            "dcim_inventoryitemtemplate.device_type_id",
        ] {
            assert!(rules.follow_down.iter().any(|f| f.name == edge), "{edge}");
        }
        let cache = rules
            .derived
            .iter()
            .find(|d| d.table.name == "extras_cachedvalue")
            .unwrap();
        assert_eq!(cache.rebuild.as_deref(), Some("manage.py reindex"));
        let path = rules
            .derived
            .iter()
            .find(|d| d.table.name == "dcim_cablepath")
            .unwrap();
        assert!(path
            .clear
            .iter()
            .any(|c| c.name == "dcim_interface._path_id"));
        assert_eq!(path.nodes.as_deref(), Some("_nodes"));
        for column in ["extras_imageattachment.image", "dcim_devicetype.rear_image"] {
            assert!(rules.files.iter().any(|f| f.name == column), "{column}");
        }
    }

    #[test]
    fn roots_are_conditions_or_named_subsets() {
        let rules = Rules::load(None).unwrap();
        let root = rules.root("dcim_site: slug = 'ams1'").unwrap();
        assert_eq!(
            (root.table.as_str(), root.condition.as_str()),
            ("dcim_site", "slug = 'ams1'")
        );
        let root = rules
            .root("public.dcim_device: name::text = 'a=b'")
            .unwrap();
        assert_eq!(root.table, "public.dcim_device");
        let root = rules.root("site=o'hare").unwrap();
        assert_eq!(root.table, "dcim_site");
        assert_eq!(root.condition, "slug = 'o''hare'");
        assert_eq!(root.shown, "site=o'hare");
        let unknown = format!("{:#}", rules.root("galaxy=m31").unwrap_err());
        assert!(
            unknown.contains("no named subset `galaxy`") && unknown.contains("site"),
            "{unknown}"
        );
        let neither = format!("{:#}", rules.root("just words").unwrap_err());
        assert!(neither.contains("TABLE: CONDITION"), "{neither}");
        let empty = format!("{:#}", rules.root("dcim_site:  ").unwrap_err());
        assert!(empty.contains("dcim_site: true"), "{empty}");
    }

    #[test]
    fn typos_are_refused_with_file_line_and_key() {
        let key = error_of("version = 1\n\nwhole = [\"a\"]\nholw = [\"b\"]\n");
        assert!(
            key.contains("rules.toml, line 4") && key.contains("holw"),
            "{key}"
        );
        let pair =
            error_of("version = 1\n[[pair]]\ntable = \"t\"\ntype_column = \"k\"\nid = \"i\"\n");
        assert!(pair.contains("line 5") && pair.contains("`id`"), "{pair}");
        let version = error_of("version = 2\n");
        assert!(
            version.contains("line 1") && version.contains("version 2"),
            "{version}"
        );
        assert!(error_of("whole = []\n").contains("version"));
        let files = error_of("version = 1\nfiles = [\"photo\"]\n");
        assert!(
            files.contains("line 2") && files.contains("`files`"),
            "{files}"
        );
        let cut = error_of("version = 1\ncut = [\n  \"nocolumn\",\n]\n");
        assert!(
            cut.contains("line 3") && cut.contains("TABLE.COLUMN"),
            "{cut}"
        );
        let template = error_of("version = 1\n[named]\nrack = \"dcim_rack: name = {}\"\n");
        assert!(
            template.contains("line 3") && template.contains("'{}'"),
            "{template}"
        );
    }

    #[test]
    fn files_extend_or_replace_the_preset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(
            &file,
            "version = 1\nwhole = [\"my_settings\"]\nnot_whole = [\"extras_tag\"]\n[named]\nrack = \"dcim_rack: name = '{}'\"\n",
        )
        .unwrap();
        let rules = Rules::load(Some(&file)).unwrap();
        assert!(rules
            .whole
            .iter()
            .any(|w| w.name == "my_settings" && w.origin == format!("{}, line 2", file.display())));
        assert!(!rules
            .whole
            .iter()
            .any(|w| w.name == "extras_tag" || w.name.starts_with('!')));
        assert!(rules.named.contains_key("rack") && rules.named.contains_key("site"));
        std::fs::write(&file, "version = 1\npreset = false\nwhole = [\"t\"]\n").unwrap();
        let rules = Rules::load(Some(&file)).unwrap();
        assert_eq!(rules.whole.len(), 1);
        assert!(rules.named.is_empty() && rules.derived.is_empty());
    }
}
