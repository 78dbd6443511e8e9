//! The streaming rewrite: rows of ruled tables in a plain dump's `COPY` blocks, changed
//! field by field. Fields no rule names keep their bytes, whatever the database's encoding.

use std::{borrow::Cow, cell::RefCell, collections::BTreeMap, rc::Rc, sync::LazyLock};

use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    redact,
    rules::{Action, Models, Rule},
};
use crate::{
    media::hex,
    plain::{
        copy::{escape, unescape, CopyHeader},
        lines::Next,
    },
};

/// Rows each rule changed (or deleted), by rule description.
pub type Counts = Rc<RefCell<BTreeMap<String, u64>>>;

/// The line editor that scrubs the rows of ruled tables, to combine with others in one pass.
pub fn scrubber(rules: &[Rule]) -> (impl FnMut(&mut Vec<u8>) -> Next, Counts) {
    let counts: Counts = Rc::default();
    let mut scrubber = Scrubber {
        rules: rules.to_vec(),
        active: None,
        counts: counts.clone(),
    };
    (move |line: &mut Vec<u8>| scrubber.process(line), counts)
}

/// The rules that apply to the COPY block being read, by column position.
struct Active {
    table: String,
    columns: Vec<String>,
    key_index: usize,
    ruled: Vec<(usize, Rule)>,
    delete: Option<Rule>,
}

struct Scrubber {
    rules: Vec<Rule>,
    active: Option<Active>,
    counts: Counts,
}

impl Scrubber {
    /// Rewrites `line` in place; an empty line means "drop it". The rows of tables no rule
    /// touches are skipped.
    fn process(&mut self, line: &mut Vec<u8>) -> Next {
        let Some(active) = &self.active else {
            if let Some(header) = CopyHeader::parse(line) {
                self.start(header.table, header.columns);
                if self.active.is_none() {
                    return Next::SkipRows;
                }
            }
            return Next::Line;
        };
        if line.as_slice() == b"\\.\n" {
            self.active = None;
            return Next::Line;
        }
        if let Some(rule) = &active.delete {
            *self.counts.borrow_mut().entry(rule.describe()).or_default() += 1;
            line.clear();
            return Next::Line;
        }
        let body = &line[..line.len() - 1];
        let fields: Vec<&[u8]> = body.split(|&b| b == b'\t').collect();
        let row = Row {
            columns: &active.columns,
            fields: &fields,
        };
        let key = fields
            .get(active.key_index)
            .map_or(Cow::Borrowed(""), |f| text(f));
        let mut replaced: Vec<(usize, Vec<u8>)> = Vec::new();
        for (index, rule) in &active.ruled {
            let Some(field) = fields.get(*index) else {
                continue;
            };
            let value = text(field);
            let scrubbed = scrub_field(&active.table, rule, &key, &value, &row);
            if scrubbed != value {
                *self.counts.borrow_mut().entry(rule.describe()).or_default() += 1;
                replaced.push((*index, bytes(field, &scrubbed)));
            }
        }
        if replaced.is_empty() {
            return Next::Line;
        }
        let mut out = Vec::with_capacity(line.len() + 64);
        for (n, field) in fields.iter().enumerate() {
            if n > 0 {
                out.push(b'\t');
            }
            match replaced.iter().find(|(index, _)| *index == n) {
                Some((_, new)) => out.extend_from_slice(new),
                None => out.extend_from_slice(field),
            }
        }
        out.push(b'\n');
        *line = out;
        Next::Line
    }

    fn start(&mut self, table: String, columns: Vec<String>) {
        let rules: Vec<&Rule> = self.rules.iter().filter(|r| r.table == table).collect();
        if rules.is_empty() {
            return;
        }
        let key_index = columns.iter().position(|c| c == "id").unwrap_or(0);
        let delete = rules
            .iter()
            .find(|r| matches!(r.action, Action::DeleteRows))
            .map(|r| (*r).clone());
        let ruled = rules
            .iter()
            .filter_map(|r| {
                let index = columns.iter().position(|c| Some(c) == r.column.as_ref())?;
                Some((index, (*r).clone()))
            })
            .collect();
        self.active = Some(Active {
            table,
            columns,
            key_index,
            ruled,
            delete,
        });
    }
}

/// A field's bytes as text: UTF-8 when they are, otherwise each byte as the character of
/// that number (Latin-1), so that whatever a rule leaves alone goes back byte for byte.
fn text(field: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(field) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(field.iter().map(|&b| char::from(b)).collect()),
    }
}

/// The inverse of [`text`] for a field that was read from `original`.
fn bytes(original: &[u8], scrubbed: &str) -> Vec<u8> {
    if std::str::from_utf8(original).is_ok() {
        return scrubbed.as_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(scrubbed.len());
    for c in scrubbed.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(byte) => out.push(byte),
            Err(_) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// The row a field belongs to, for templates and changelog rules that read other columns.
pub struct Row<'a> {
    pub columns: &'a [String],
    pub fields: &'a [&'a [u8]],
}

impl Row<'_> {
    pub const NONE: Row<'static> = Row {
        columns: &[],
        fields: &[],
    };

    /// The value of `column` (None when NULL or not in the row).
    fn get(&self, column: &str) -> Option<String> {
        let index = self.columns.iter().position(|c| c == column)?;
        let field = self.fields.get(index)?;
        match *field {
            b"\\N" => None,
            field => Some(unescape(&text(field))),
        }
    }
}

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{([a-z_][a-z0-9_]*)\}").expect("placeholder pattern"));

fn hash(table: &str, column: &str, key: &str) -> String {
    hex(&Sha256::digest(
        format!("netpoint-scrub:{table}.{column}:{key}").as_bytes(),
    ))
}

/// A `value` template filled in for the row keyed `key`.
fn fill(
    template: &str,
    table: &str,
    column: &str,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> String {
    PLACEHOLDER
        .replace_all(template, |caps: &regex::Captures| match &caps[1] {
            "pk" => key.to_string(),
            "hash" => hash(table, column, key),
            "hash40" => hash(table, column, key)[..40].to_string(),
            other => lookup(other).unwrap_or_else(|| "none".to_string()),
        })
        .into_owned()
}

/// The scrubbed form of one COPY-escaped field of the row keyed `key`.
pub fn scrub_field(table: &str, rule: &Rule, key: &str, field: &str, row: &Row) -> String {
    let column = rule.column.as_deref().unwrap_or("");
    let null = field == "\\N";
    match &rule.action {
        Action::Null => "\\N".to_string(),
        Action::DeleteRows => field.to_string(),
        _ if null => field.to_string(),
        Action::Empty => String::new(),
        Action::EmptyObject => "{}".to_string(),
        Action::Value(template) => escape(&fill(template, table, column, &unescape(key), &|c| {
            row.get(c)
        })),
        Action::UnusablePassword => format!("!{}", &hash(table, column, key)[..40]),
        Action::FakeEmail => escape(&format!("user-{}@example.invalid", unescape(key))),
        Action::JsonbRemoveKeys(keys) => edit_json(field, |value| remove_keys(value, keys)),
        Action::RegexReplace(regex, replacement) => {
            let value = unescape(field);
            match regex.replace_all(&value, replacement.as_str()) {
                Cow::Borrowed(_) => field.to_string(),
                Cow::Owned(new) => escape(&new),
            }
        }
        Action::RedactSecrets => redact_field(field),
        Action::ChangelogSnapshot(models) => edit_json(field, |value| {
            let rules = row
                .get("changed_object_type_id")
                .and_then(|id| models.by_content_type.get(&id));
            let object = row.get("changed_object_id").unwrap_or_default();
            let mut changed = false;
            if let Some(rules) = rules {
                changed |= scrub_snapshot(rules, &object, value);
            }
            changed | redact::redact_json(value)
        }),
        Action::ChangelogRepr(models, _) => {
            let content_type = row.get("changed_object_type_id").unwrap_or_default();
            let object = row.get("changed_object_id").unwrap_or_default();
            if let Some(model) = models.hidden.get(&content_type) {
                return escape(&format!("{model} {object}"));
            }
            let Some(rules) = models.by_content_type.get(&content_type) else {
                return field.to_string();
            };
            if rules.iter().any(|r| matches!(r.action, Action::DeleteRows)) {
                return "(scrubbed)".to_string();
            }
            let named = ["name", "username"].iter().find_map(|name| {
                rules
                    .iter()
                    .find(|r| r.column.as_deref() == Some(name) && r.writes_text())
            });
            match named {
                Some(rule) => {
                    let json = Value::String(unescape(field));
                    let faked = json_value(rule, &object, json);
                    match faked {
                        Value::String(text) => escape(&text),
                        _ => field.to_string(),
                    }
                }
                None => field.to_string(),
            }
        }
    }
}

/// A free-text or JSON field with its credentials redacted.
fn redact_field(field: &str) -> String {
    match redact_string(&unescape(field)) {
        Some(new) => escape(&new),
        None => field.to_string(),
    }
}

/// A text with its credentials redacted, as JSON when it parses as an object or array, as
/// text otherwise; None when nothing changed. A live column and the same value in a
/// changelog snapshot come out alike.
fn redact_string(value: &str) -> Option<String> {
    if value.starts_with(['{', '[']) {
        if let Ok(mut json) = serde_json::from_str::<Value>(value) {
            return redact::redact_json(&mut json).then(|| jsonb_text(&json));
        }
    }
    match redact::redact_text(value) {
        Cow::Borrowed(_) => None,
        Cow::Owned(new) => Some(new),
    }
}

/// A JSON field edited in place by `edit`; unchanged (and not reformatted) when `edit`
/// changes nothing or the field is not JSON.
fn edit_json(field: &str, edit: impl FnOnce(&mut Value) -> bool) -> String {
    let Ok(mut value) = serde_json::from_str::<Value>(&unescape(field)) else {
        return field.to_string();
    };
    match edit(&mut value) {
        true => escape(&jsonb_text(&value)),
        false => field.to_string(),
    }
}

/// A model's rules applied to its fields in a changelog snapshot of the object keyed
/// `object`, so that a value hidden in the live table is hidden in its history too (and
/// faked to the same value).
fn scrub_snapshot(rules: &[Rule], object: &str, snapshot: &mut Value) -> bool {
    let Value::Object(fields) = snapshot else {
        return false;
    };
    if rules.iter().any(|r| matches!(r.action, Action::DeleteRows)) {
        let changed = !fields.is_empty();
        fields.clear();
        return changed;
    }
    let mut changed = false;
    for rule in rules {
        let Some(column) = &rule.column else { continue };
        // NetBox's snapshots hold a model's `custom_field_data` as `custom_fields`.
        let key = match column.as_str() {
            "custom_field_data" if !fields.contains_key(column) => "custom_fields",
            column => column,
        };
        if let Some(value) = fields.get_mut(key) {
            let new = json_value(rule, object, value.clone());
            if new != *value {
                *value = new;
                changed = true;
            }
        }
    }
    changed
}

/// What a rule makes of a column's value held as JSON (in a changelog snapshot).
fn json_value(rule: &Rule, key: &str, value: Value) -> Value {
    let column = rule.column.as_deref().unwrap_or("");
    let table = rule.table.as_str();
    match (&rule.action, value) {
        (Action::Null, _) => Value::Null,
        (_, Value::Null) => Value::Null,
        (Action::Empty, _) => Value::String(String::new()),
        (Action::EmptyObject, _) => Value::Object(Default::default()),
        (Action::Value(template), _) => {
            Value::String(fill(template, table, column, key, &|_| None))
        }
        (Action::UnusablePassword, _) => {
            Value::String(format!("!{}", &hash(table, column, key)[..40]))
        }
        (Action::FakeEmail, _) => Value::String(format!("user-{key}@example.invalid")),
        (Action::JsonbRemoveKeys(keys), mut value) => {
            remove_keys(&mut value, keys);
            value
        }
        (Action::RegexReplace(regex, replacement), Value::String(text)) => {
            Value::String(regex.replace_all(&text, replacement.as_str()).into_owned())
        }
        (Action::RedactSecrets, Value::String(text)) => match redact_string(&text) {
            Some(new) => Value::String(new),
            None => Value::String(text),
        },
        (Action::RedactSecrets, mut value) => {
            redact::redact_json(&mut value);
            value
        }
        (_, value) => value,
    }
}

/// Removes, at any depth, object keys that contain one of `keys` (case-insensitive).
fn remove_keys(value: &mut Value, keys: &[String]) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            let before = map.len();
            map.retain(|k, _| {
                let k = k.to_lowercase();
                !keys.iter().any(|key| k.contains(key.as_str()))
            });
            changed |= map.len() != before;
            for v in map.values_mut() {
                changed |= remove_keys(v, keys);
            }
        }
        Value::Array(items) => {
            for v in items {
                changed |= remove_keys(v, keys);
            }
        }
        _ => {}
    }
    changed
}

/// Proxy models whose rows live in another model's table: NetBox's user proxies (`NetBoxUser`,
/// `AdminUser`) keep their users in `auth_user` (NetBox 3), or in `users_user` once NetBox 4
/// made `users.user` the model itself; the first of these tables that the database has wins.
const PROXIES: &[(&str, &str, &[&str])] = &[
    ("users", "netboxuser", &["auth_user", "users_user"]),
    ("users", "adminuser", &["auth_user", "users_user"]),
];

/// The tables Django may keep a model's rows in, most likely first: `<app_label>_<model>`,
/// or the concrete tables of a known proxy.
fn model_tables(app: &str, model: &str) -> Vec<String> {
    match PROXIES.iter().find(|(a, m, _)| *a == app && *m == model) {
        Some((_, _, tables)) => tables.iter().map(|t| t.to_string()).collect(),
        None => vec![format!("{app}_{model}")],
    }
}

/// The rules of each model by content type id, from `django_content_type` rows
/// (`id`, `app_label`, `model`): Django names a model's table `<app_label>_<model>`.
pub fn models(rules: &[Rule], schema: &str, content_types: &[(i64, String, String)]) -> Models {
    let mut by_content_type = std::collections::HashMap::new();
    for (id, app, model) in content_types {
        let of_table = |table: &str| -> Vec<Rule> {
            let table = format!("{schema}.{table}");
            rules
                .iter()
                .filter(|r| r.table == table)
                .filter(|r| {
                    !matches!(
                        r.action,
                        Action::ChangelogSnapshot(_) | Action::ChangelogRepr(..)
                    )
                })
                .cloned()
                .collect()
        };
        let of_model = model_tables(app, model)
            .iter()
            .map(|table| of_table(table))
            .find(|found| !found.is_empty())
            .unwrap_or_default();
        if !of_model.is_empty() {
            by_content_type.insert(id.to_string(), of_model);
        }
    }
    let hide: Vec<&String> = rules
        .iter()
        .filter_map(|r| match &r.action {
            Action::ChangelogRepr(_, hide) => Some(hide),
            _ => None,
        })
        .flatten()
        .collect();
    let hidden = content_types
        .iter()
        .filter(|(_, app, model)| {
            model_tables(app, model).iter().any(|table| {
                hide.iter()
                    .any(|h| *h == table || **h == format!("{schema}.{table}"))
            })
        })
        .map(|(id, _, model)| (id.to_string(), model.clone()))
        .collect();
    Models {
        by_content_type,
        hidden,
    }
}

/// A JSON value as PostgreSQL prints a jsonb: object keys ordered by length then bytes,
/// `", "` and `": "` separators. Dumps of the loaded value then read the same.
pub fn jsonb_text(value: &Value) -> String {
    let mut out = String::new();
    write_jsonb(value, &mut out);
    out
}

fn write_jsonb(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| {
                a.len()
                    .cmp(&b.len())
                    .then_with(|| a.as_bytes().cmp(b.as_bytes()))
            });
            out.push('{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_jsonb(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read, sync::Arc};

    use super::*;

    const DUMP: &str = "COPY public.users_user (id, password, username, first_name, email, \"time\") FROM stdin;\n\
        7\tpbkdf2_sha256$600000$salt$hash\tjane\tJane\talice@corp.example\t2024\n\
        8\t!already\tbob\t\\N\t\\N\t2024\n\
        \\.\n\
        COPY public.django_session (session_key, session_data, expire_date) FROM stdin;\n\
        abc\tdata\t2030\n\
        \\.\n\
        COPY public.core_datasource (id, source_url, parameters) FROM stdin;\n\
        1\thttps://bot:glpat-SECRET@git.example.com/x.git?private_token=pt&ref=main\t{\"pass\": \"S3\", \"nested\": [{\"Token\": \"t\", \"ok\": 1}]}\n\
        \\.\n\
        COPY public.dcim_site (id, name) FROM stdin;\n\
        1\tuntouched\n\
        \\.\n";

    /// The preset, planned for tables in `public`.
    fn preset() -> Vec<Rule> {
        crate::pipeline::scrub::preset_in("public")
    }

    fn scrub(input: &[u8], rules: &[Rule]) -> (Vec<u8>, BTreeMap<String, u64>) {
        let (scrub, counts) = scrubber(rules);
        let mut reader = crate::plain::lines::edit_lines(input, scrub);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        let counts = counts.borrow().clone();
        (out, counts)
    }

    #[test]
    fn preset_scrubs_deterministically() {
        let rules = preset();
        let (out, counts) = scrub(DUMP.as_bytes(), &rules);
        let out = String::from_utf8(out).unwrap();
        for secret in [
            "pbkdf2",
            "alice@",
            "glpat",
            "S3",
            "jane",
            "Jane",
            "private_token",
            "Token",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(
            out.contains("7\t!") && out.contains("\tuser-7\tDev\tuser-7@example.invalid\t2024"),
            "{out}"
        );
        assert!(
            out.contains("\tuser-8\t\\N\t\\N\t2024") && !out.contains("!already"),
            "NULL stays NULL: {out}"
        );
        assert!(!out.contains("abc\tdata"), "sessions deleted");
        assert!(
            out.contains("https://git.example.com/x.git?ref=main"),
            "{out}"
        );
        assert!(out.contains("[{\"ok\": 1}]"), "{out}");
        assert!(out.contains("1\tuntouched\n"), "{out}");
        assert_eq!(counts["public.django_session: delete-rows"], 1);
        assert_eq!(counts["public.users_user.email: fake-email"], 1);
        assert_eq!(
            scrub(DUMP.as_bytes(), &rules).0,
            out.as_bytes(),
            "same input, same bytes"
        );
    }

    #[test]
    fn fields_no_rule_names_keep_their_bytes_in_any_encoding() {
        // LATIN1: "Zürich" and "Ærø" as single bytes, which are not UTF-8.
        let mut input =
            b"COPY public.users_user (id, username, email, first_name) FROM stdin;\n".to_vec();
        input.extend_from_slice(b"3\tZ\xfcrich\tz\xfc@corp.example\t\xc6r\xf8 \\\\ \\t\n\\.\n");
        let (out, _) = scrub(&input, &preset());
        let mut expected =
            b"COPY public.users_user (id, username, email, first_name) FROM stdin;\n".to_vec();
        expected.extend_from_slice(b"3\tuser-3\tuser-3@example.invalid\tDev\n\\.\n");
        assert_eq!(out, expected);
        // A rule that edits a non-UTF-8 value in place keeps the bytes around the edit.
        let rule = Rule {
            table: "public.t".into(),
            column: Some("note".into()),
            action: Action::RedactSecrets,
        };
        let input = b"COPY public.t (id, note) FROM stdin;\n1\tsee https://u:pw@h.example/\xe9t\xe9 \xfc\n\\.\n";
        let (out, _) = scrub(input, &[rule]);
        assert_eq!(
            out,
            b"COPY public.t (id, note) FROM stdin;\n1\tsee https://h.example/\xe9t\xe9 \xfc\n\\.\n"
        );
    }

    #[test]
    fn the_changelog_is_scrubbed_by_the_rules_of_the_model_it_records() {
        let mut rules = preset();
        let models = Arc::new(models(
            &rules,
            "public",
            &[
                (4, "extras".into(), "webhook".into()),
                (5, "users".into(), "user".into()),
                (6, "users".into(), "token".into()),
                (7, "dcim".into(), "site".into()),
                (8, "tenancy".into(), "contactassignment".into()),
            ],
        ));
        for rule in &mut rules {
            match &mut rule.action {
                Action::ChangelogSnapshot(of) | Action::ChangelogRepr(of, _) => {
                    *of = models.clone()
                }
                _ => {}
            }
        }
        let input = "COPY public.extras_objectchange (id, user_id, user_name, changed_object_type_id, changed_object_id, object_repr, prechange_data, postchange_data) FROM stdin;\n\
            1\t9\tjane\t4\t2\thook\t\\N\t{\"secret\": \"s1\", \"payload_url\": \"https://u:pw@h.example/x?token=t\", \"additional_headers\": \"X-Key: k\", \"name\": \"hook\"}\n\
            2\t9\tjane\t5\t9\tjane\t{\"email\": \"jane@corp.example\", \"first_name\": \"Jane\"}\t{\"email\": \"jane@corp.example\", \"first_name\": \"Janet\", \"password\": \"pbkdf2\"}\n\
            3\t\\N\t\\N\t6\t1\tabc123\t\\N\t{\"key\": \"0123456789abcdef0123456789abcdef01234567\", \"user\": 9}\n\
            4\t9\tjane\t7\t1\tSite 1\t\\N\t{\"name\": \"Site 1\", \"comments\": \"ok\"}\n\
            5\t9\tjane\t8\t3\tJane Doe -> Site 1\t\\N\t{\"contact\": 2}\n\
            6\t9\tjane\t4\t2\thook\t\\N\t{\"body_template\": \"{\\\\\"token\\\\\": \\\\\"t0k3n\\\\\", \\\\\"text\\\\\": \\\\\"x\\\\\"}\"}\n\
            \\.\n";
        let (out, _) = scrub(input.as_bytes(), &rules);
        let out = String::from_utf8(out).unwrap();
        for secret in [
            "s1",
            "u:pw",
            "token=t",
            "X-Key",
            "jane",
            "Jane",
            "pbkdf2",
            "0123456789abcdef",
            "t0k3n",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        // The history shows the fakes the live rows get.
        assert!(out.contains("\"name\": \"hook\""), "{out}");
        assert!(
            out.contains("\"payload_url\": \"https://h.example/x\""),
            "{out}"
        );
        assert!(
            out.contains(
                "\t9\tuser-9\t{\"email\": \"user-9@example.invalid\", \"first_name\": \"Dev\"}"
            ),
            "{out}"
        );
        assert!(
            out.contains("3\t\\N\t\\N\t6\t1\t(scrubbed)\t\\N\t{}\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "4\t9\tuser-9\t7\t1\tSite 1\t\\N\t{\"name\": \"Site 1\", \"comments\": \"ok\"}\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("5\t9\tuser-9\t8\t3\tcontactassignment 3\t"),
            "{out}"
        );
        // A JSON text in a snapshot is redacted as the live column is: the key goes.
        assert!(
            out.contains("6\t9\tuser-9\t4\t2\thook\t\\N\t{\"body_template\": \"{\\\\\"text\\\\\": \\\\\"x\\\\\"}\"}\n"),
            "{out}"
        );
    }

    #[test]
    fn jsonb_text_matches_postgres() {
        let value: Value =
            serde_json::from_str(r#"{"bb": [1, 2.50], "a": {"ccc": null, "d": "x\"y"}}"#).unwrap();
        assert_eq!(
            jsonb_text(&value),
            r#"{"a": {"d": "x\"y", "ccc": null}, "bb": [1, 2.50]}"#
        );
    }
}
