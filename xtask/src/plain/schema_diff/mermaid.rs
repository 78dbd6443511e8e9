//! What Mermaid's `erDiagram` grammar takes, and PostgreSQL's names and types mapped into it.
//! Attribute types and names are single words of letters, digits and `_-()[].,*`, not starting
//! with a digit, and `PK`, `FK` and `UK` are keywords there; entity names are words of letters,
//! digits and `_`, and a few words (`end`, `one`, `style`, ...) are keywords; quoted text may
//! hold neither `"` nor, in an entity's label, `%` or `\`.

/// Words that Mermaid's diagram grammar reads as keywords where an entity name stands.
const KEYWORDS: &[&str] = &[
    "erdiagram",
    "style",
    "classdef",
    "class",
    "subgraph",
    "end",
    "one",
    "only",
    "many",
    "zero",
    "to",
    "optionally",
    "u",
    "direction",
    "acctitle",
    "accdescr",
];

/// A column type as one attribute word: PostgreSQL's long names in their short form
/// (`character varying(150)` is `varchar(150)`), remaining spaces as `_`.
pub fn data_type(pg: &str) -> String {
    const SHORT: &[(&str, &str)] = &[
        ("character varying", "varchar"),
        ("timestamp with time zone", "timestamptz"),
        ("timestamp without time zone", "timestamp"),
        ("time with time zone", "timetz"),
        ("time without time zone", "time"),
        ("double precision", "float8"),
        ("bit varying", "varbit"),
        ("character", "char"),
    ];
    let mut text = pg.to_string();
    for (long, short) in SHORT {
        if let Some(rest) = text.strip_prefix(long) {
            text = format!("{short}{rest}");
            break;
        }
    }
    let word = word(&text.replace("pg_catalog.", ""));
    if word.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{word}")
    } else {
        word
    }
}

/// An attribute name Mermaid takes, and whether it had to be changed to be one (then the
/// real name goes into the attribute's comment).
pub fn attribute_name(name: &str) -> (String, bool) {
    let mut word = word(name);
    if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') || word.is_empty() {
        word.insert(0, '_');
    }
    if ["pk", "fk", "uk"].contains(&word.to_ascii_lowercase().as_str()) {
        word.push('_');
    }
    let changed = word != name;
    (word, changed)
}

/// An entity name: letters, digits and `_`, never a keyword nor starting with a digit.
pub fn entity_name(label: &str) -> String {
    let mut name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || KEYWORDS.contains(&name.to_ascii_lowercase().as_str())
    {
        name.insert(0, '_');
    }
    name
}

/// Text for inside double quotes: a comment, a relationship's label or (`label` true) an
/// entity's label, which takes fewer characters.
pub fn quoted(text: &str, label: bool) -> String {
    let inner: String = text
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '%' | '\\' if label => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    format!("\"{inner}\"")
}

/// Letters, digits and the few signs an attribute word may hold; anything else as `_`.
fn word(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() || "_-()[].,*".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types_fit_the_grammar() {
        assert_eq!(data_type("character varying(150)"), "varchar(150)");
        assert_eq!(data_type("timestamp with time zone"), "timestamptz");
        assert_eq!(data_type("numeric(10,2)"), "numeric(10,2)");
        assert_eq!(data_type("public.\"Mood\"[]"), "public._Mood_[]");
        assert_eq!(data_type("character(2)"), "char(2)");
        assert_eq!(attribute_name("site_id"), ("site_id".to_string(), false));
        assert_eq!(
            attribute_name("first name"),
            ("first_name".to_string(), true)
        );
        assert_eq!(attribute_name("2fa"), ("_2fa".to_string(), true));
        assert_eq!(attribute_name("PK"), ("PK_".to_string(), true));
        assert_eq!(entity_name("dcim-site.v2"), "dcim_site_v2");
        assert_eq!(entity_name("end"), "_end");
        assert_eq!(entity_name("9lives"), "_9lives");
        assert_eq!(quoted("a \"b\" 50%", true), "\"a 'b' 50_\"");
        assert_eq!(quoted("a \"b\" 50%", false), "\"a 'b' 50%\"");
    }
}
