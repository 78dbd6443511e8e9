//! The statements each type of entry may hold, beyond those any entry may.

use psqlscan::{StrKind, Token};

use super::shape::{call, is, op, plain_value, Cursor, Item};

/// What may stand in any entry: the settings pg_dump changes between entries, and a change
/// of owner of an object inside the database.
pub(super) fn anywhere(c: Cursor) -> bool {
    let default_setting = c
        .kw("SET")
        .and_then(|c| c.one_of(&["default_tablespace", "default_table_access_method"]))
        .and_then(|c| c.one_of(&["=", "TO"]).or_else(|| op(c, "=")))
        .and_then(|c| match c.next() {
            Some(Item::Token(value)) if plain_value(value) || matches!(value, Token::Name(_)) => {
                Some(c.step())
            }
            _ => None,
        })
        .is_some_and(Cursor::end);
    default_setting || owner(c)
}

/// Object types whose owner pg_dump sets with `ALTER ... OWNER TO`.
pub(super) const OWNED: &[&str] = &[
    "TABLE",
    "FOREIGN TABLE",
    "SEQUENCE",
    "VIEW",
    "MATERIALIZED VIEW",
    "FUNCTION",
    "PROCEDURE",
    "AGGREGATE",
    "TYPE",
    "DOMAIN",
    "SCHEMA",
    "COLLATION",
    "CONVERSION",
    "OPERATOR CLASS",
    "OPERATOR FAMILY",
    "OPERATOR",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "STATISTICS",
    "PUBLICATION",
    "LARGE OBJECT",
];

/// `ALTER <type> <object> OWNER TO <role>`.
pub(super) fn owner(c: Cursor) -> bool {
    let Some(after) = c.kw("ALTER").and_then(|c| c.one_of(OWNED)) else {
        return false;
    };
    let rest = after.rest();
    after.one_clause()
        && rest.len() >= 3
        && matches!(
            &rest[rest.len() - 3..],
            [Item::Token(o), Item::Token(t), Item::Token(Token::Word(_) | Token::Name(_))]
                if o.is_word("owner") && t.is_word("to")
        )
}

/// What `ALTER TABLE [ONLY] <table>` may go on with, by entry type.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Sub {
    /// `ALTER COLUMN c SET STATISTICS|STORAGE|COMPRESSION|NOT NULL|(options)`
    ColumnSet,
    /// `ALTER COLUMN c SET DEFAULT ...`
    ColumnDefault,
    /// `ALTER COLUMN c ADD GENERATED ... AS IDENTITY (...)`
    Identity,
    /// `REPLICA IDENTITY FULL|NOTHING|DEFAULT`
    ReplicaIdentity,
    /// `REPLICA IDENTITY USING INDEX i`, `CLUSTER ON i`
    IndexUse,
    /// `FORCE ROW LEVEL SECURITY`
    ForceRowSecurity,
    /// `ENABLE ROW LEVEL SECURITY`
    EnableRowSecurity,
    /// `ATTACH PARTITION p FOR VALUES ...|DEFAULT`, bounds of constants only
    Attach,
    /// `ADD CONSTRAINT c ...`
    Constraint,
    /// `ENABLE [ALWAYS|REPLICA]|DISABLE TRIGGER t`
    Trigger,
    /// `ENABLE [ALWAYS|REPLICA]|DISABLE RULE r`
    Rule,
}

pub(super) fn alter_table(c: Cursor, allowed: &[Sub]) -> bool {
    let Some(c) = c
        .kw("ALTER TABLE")
        .map(|c| c.opt("IF EXISTS").opt("ONLY"))
        .and_then(Cursor::name)
    else {
        return false;
    };
    if !c.one_clause() {
        return false;
    }
    allowed.iter().any(|sub| subcommand(c, *sub))
}

pub(super) fn subcommand(c: Cursor, sub: Sub) -> bool {
    fn column(c: Cursor<'_>) -> Option<Cursor<'_>> {
        c.kw("ALTER")
            .map(|c| c.opt("COLUMN"))
            .and_then(Cursor::name)
    }
    fn enable(c: Cursor<'_>) -> Option<Cursor<'_>> {
        c.kw("DISABLE")
            .or_else(|| c.kw("ENABLE").map(|c| c.opt("ALWAYS").opt("REPLICA")))
    }
    match sub {
        Sub::ColumnSet => column(c).and_then(|c| c.kw("SET")).is_some_and(|c| {
            c.one_of(&["STATISTICS", "STORAGE", "COMPRESSION", "NOT NULL"])
                .is_some()
                || c.group().is_some_and(|(c, _)| c.end())
        }),
        Sub::ColumnDefault => column(c).and_then(|c| c.kw("SET DEFAULT")).is_some(),
        Sub::Identity => column(c)
            .and_then(|c| c.kw("ADD GENERATED"))
            .and_then(|c| c.one_of(&["ALWAYS", "BY DEFAULT"]))
            .and_then(|c| c.kw("AS IDENTITY"))
            .is_some_and(|c| c.end() || c.group().is_some_and(|(c, _)| c.end())),
        Sub::ReplicaIdentity => c
            .kw("REPLICA IDENTITY")
            .and_then(|c| c.one_of(&["FULL", "NOTHING", "DEFAULT"]))
            .is_some_and(Cursor::end),
        Sub::IndexUse => c
            .kw("REPLICA IDENTITY USING INDEX")
            .or_else(|| c.kw("CLUSTER ON"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        Sub::ForceRowSecurity => c.kw("FORCE ROW LEVEL SECURITY").is_some_and(Cursor::end),
        Sub::EnableRowSecurity => c.kw("ENABLE ROW LEVEL SECURITY").is_some_and(Cursor::end),
        Sub::Attach => c
            .kw("ATTACH PARTITION")
            .and_then(Cursor::name)
            .is_some_and(partition_bound),
        Sub::Constraint => c.kw("ADD CONSTRAINT").and_then(Cursor::name).is_some(),
        Sub::Trigger => enable(c)
            .and_then(|c| c.kw("TRIGGER"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        Sub::Rule => enable(c)
            .and_then(|c| c.kw("RULE"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
    }
}

/// `DEFAULT`, or `FOR VALUES IN (...)`, `FROM (...) TO (...)`, `WITH (MODULUS n,
/// REMAINDER n)` of constants, as pg_dump writes bounds: nothing in them is evaluated.
pub(super) fn partition_bound(c: Cursor) -> bool {
    if c.kw("DEFAULT").is_some_and(Cursor::end) {
        return true;
    }
    let Some(c) = c.kw("FOR VALUES") else {
        return false;
    };
    fn constants(tokens: &[Token]) -> bool {
        tokens.iter().all(|token| match token {
            Token::Str {
                kind: StrKind::Standard,
                ..
            }
            | Token::Number(_) => true,
            Token::Op(o) => o == "," || o == "-",
            Token::Word(w) => [
                "MINVALUE",
                "MAXVALUE",
                "TRUE",
                "FALSE",
                "NULL",
                "MODULUS",
                "REMAINDER",
            ]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k)),
            _ => false,
        })
    }
    fn group(c: Cursor<'_>) -> Option<Cursor<'_>> {
        c.group()
            .filter(|(_, inner)| constants(inner))
            .map(|(c, _)| c)
    }
    c.kw("IN")
        .or_else(|| c.kw("WITH"))
        .and_then(group)
        .or_else(|| {
            c.kw("FROM")
                .and_then(group)
                .and_then(|c| c.kw("TO"))
                .and_then(group)
        })
        .is_some_and(Cursor::end)
}

/// The statements pg_dump writes into an entry of type `kind`, besides [`anywhere`]'s.
pub(super) fn allowed(kind: &str, c: Cursor, tokens: &[Token]) -> bool {
    use Sub::*;
    let create = |what: &[&str]| {
        c.kw("CREATE")
            .map(|c| c.opt("OR REPLACE"))
            .and_then(|c| c.one_of(what))
    };
    let alter_named = |what: &str, then: &str| {
        c.kw(what)
            .and_then(Cursor::name)
            .and_then(|c| c.kw(then))
            .is_some_and(|c| c.one_clause())
    };
    match kind {
        "TABLE" => {
            create(&["TABLE", "UNLOGGED TABLE"])
                .and_then(Cursor::name)
                // CREATE TABLE ... AS runs a query; PARTITION OF evaluates its bounds.
                .is_some_and(|c| !c.has("AS") && !c.has_pair("PARTITION", "OF"))
                || alter_table(c, &[ColumnSet, ReplicaIdentity, ForceRowSecurity, Attach])
        }
        "TABLE ATTACH" => alter_table(c, &[Attach]),
        "DEFAULT" => {
            alter_table(c, &[ColumnDefault])
                || c.kw("ALTER VIEW")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("ALTER"))
                    .map(|c| c.opt("COLUMN"))
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("SET DEFAULT"))
                    .is_some_and(|c| c.one_clause())
        }
        "SEQUENCE" => {
            create(&["SEQUENCE", "UNLOGGED SEQUENCE"])
                .and_then(Cursor::name)
                .is_some_and(|c| {
                    c.rest().iter().all(|item| {
                        matches!(item, Item::Token(Token::Word(_) | Token::Number(_)))
                            || matches!(item, Item::Token(t) if t.is_op("-"))
                    })
                })
                || alter_table(c, &[Identity])
        }
        "SEQUENCE OWNED BY" => c
            .kw("ALTER SEQUENCE")
            .and_then(Cursor::name)
            .and_then(|c| c.kw("OWNED BY"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "SEQUENCE SET" => {
            call(tokens, "setval", &["'text'", "-0-9", "true"])
                || call(tokens, "setval", &["'text'", "-0-9", "false"])
        }
        "INDEX" => {
            create(&["INDEX", "UNIQUE INDEX"])
                .and_then(Cursor::name)
                .and_then(|c| c.kw("ON"))
                .map(|c| c.opt("ONLY"))
                .and_then(Cursor::name)
                .is_some()
                || alter_table(c, &[IndexUse])
                || c.kw("ALTER INDEX")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("ALTER"))
                    .map(|c| c.opt("COLUMN"))
                    .and_then(|c| match c.next() {
                        Some(Item::Token(Token::Number(_))) => Some(c.step()),
                        _ => None,
                    })
                    .and_then(|c| c.kw("SET STATISTICS"))
                    .is_some()
        }
        "INDEX ATTACH" => c
            .kw("ALTER INDEX")
            .and_then(Cursor::name)
            .and_then(|c| c.kw("ATTACH PARTITION"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" => {
            alter_table(c, &[Constraint, IndexUse]) || alter_named("ALTER DOMAIN", "ADD CONSTRAINT")
        }
        "VIEW" => create(&["VIEW", "RECURSIVE VIEW"])
            .and_then(Cursor::name)
            .is_some(),
        "MATERIALIZED VIEW" => {
            // With data, CREATE MATERIALIZED VIEW runs its query; pg_dump fills it later.
            create(&["MATERIALIZED VIEW"])
                .and_then(Cursor::name)
                .is_some_and(|c| {
                    let rest = c.rest();
                    rest.len() >= 3
                        && matches!(&rest[rest.len() - 3..], [Item::Token(w), Item::Token(n), Item::Token(d)]
                            if w.is_word("with") && n.is_word("no") && d.is_word("data"))
                })
                || c.kw("ALTER MATERIALIZED VIEW")
                    .and_then(Cursor::name)
                    .map(|c| subcommand(c, ColumnSet) && c.one_clause())
                    .unwrap_or(false)
        }
        "MATERIALIZED VIEW DATA" => c
            .kw("REFRESH MATERIALIZED VIEW")
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "FUNCTION" | "PROCEDURE" | "AGGREGATE" => {
            create(&["FUNCTION", "PROCEDURE", "AGGREGATE"])
                .and_then(Cursor::name)
                .and_then(Cursor::group)
                .is_some()
                || c.one_of(&["ALTER FUNCTION", "ALTER PROCEDURE"])
                    .and_then(Cursor::name)
                    .and_then(Cursor::group)
                    .and_then(|(c, _)| c.kw("DEPENDS ON EXTENSION"))
                    .and_then(Cursor::name)
                    .is_some_and(Cursor::end)
        }
        "OPERATOR" | "OPERATOR CLASS" | "OPERATOR FAMILY" => {
            c.kw("CREATE OPERATOR").is_some()
                || c.kw("ALTER OPERATOR FAMILY")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("USING"))
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("ADD"))
                    .is_some()
        }
        "CAST" => c.kw("CREATE CAST").and_then(Cursor::group).is_some(),
        "CONVERSION" => c
            .kw("CREATE")
            .map(|c| c.opt("DEFAULT"))
            .and_then(|c| c.kw("CONVERSION"))
            .is_some(),
        "TYPE" | "SHELL TYPE" => c.kw("CREATE TYPE").and_then(Cursor::name).is_some(),
        "DOMAIN" => c.kw("CREATE DOMAIN").and_then(Cursor::name).is_some(),
        "COLLATION" => c.kw("CREATE COLLATION").and_then(Cursor::name).is_some(),
        // Schema elements (`CREATE SCHEMA s CREATE TABLE ...`) are not written.
        "SCHEMA" => c
            .kw("CREATE SCHEMA")
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "EXTENSION" => c
            .kw("CREATE EXTENSION")
            .map(|c| c.opt("IF NOT EXISTS"))
            .and_then(Cursor::name)
            .map(|c| c.opt("WITH"))
            .map(|c| c.kw("SCHEMA").and_then(Cursor::name).unwrap_or(c))
            .is_some_and(Cursor::end),
        "COMMENT" => c
            .kw("COMMENT ON")
            .filter(|c| {
                c.one_of(&["DATABASE", "ROLE", "TABLESPACE", "SUBSCRIPTION"])
                    .is_none()
            })
            .is_some_and(|c| {
                let rest = c.rest();
                rest.len() >= 2
                    && match &rest[rest.len() - 2..] {
                        [Item::Token(is), Item::Token(value)] => {
                            is.is_word("is")
                                && (value.is_word("null")
                                    || matches!(
                                        value,
                                        Token::Str {
                                            kind: StrKind::Standard,
                                            ..
                                        }
                                    ))
                        }
                        _ => false,
                    }
            }),
        "TEXT SEARCH CONFIGURATION"
        | "TEXT SEARCH DICTIONARY"
        | "TEXT SEARCH PARSER"
        | "TEXT SEARCH TEMPLATE" => {
            c.kw("CREATE TEXT SEARCH").is_some()
                || c.kw("ALTER TEXT SEARCH CONFIGURATION")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("ADD MAPPING FOR"))
                    .is_some()
        }
        "TRIGGER" => {
            create(&["TRIGGER", "CONSTRAINT TRIGGER"])
                .and_then(Cursor::name)
                .is_some()
                || alter_table(c, &[Trigger])
        }
        "RULE" => {
            create(&["RULE"]).and_then(Cursor::name).is_some()
                || c.kw("CREATE OR REPLACE VIEW")
                    .and_then(Cursor::name)
                    .is_some()
                || alter_table(c, &[Rule])
        }
        "POLICY" => c.kw("CREATE POLICY").and_then(Cursor::name).is_some(),
        "ROW SECURITY" => alter_table(c, &[EnableRowSecurity]),
        "PUBLICATION" => c.kw("CREATE PUBLICATION").and_then(Cursor::name).is_some(),
        "PUBLICATION TABLE" => alter_named("ALTER PUBLICATION", "ADD TABLE"),
        "PUBLICATION TABLES IN SCHEMA" => c
            .kw("ALTER PUBLICATION")
            .and_then(Cursor::name)
            .and_then(|c| c.kw("ADD TABLES IN SCHEMA"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "STATISTICS" => {
            c.kw("CREATE STATISTICS").and_then(Cursor::name).is_some()
                || c.kw("ALTER STATISTICS")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("SET STATISTICS"))
                    .is_some()
        }
        // A large object made, then its contents written in a transaction of their own.
        "BLOB" | "BLOB METADATA" | "LARGE OBJECT" => call(tokens, "lo_create", &["'0-9'"]),
        "BLOBS" | "LARGE OBJECTS" => {
            is(tokens, &["BEGIN", ";"])
                || is(tokens, &["COMMIT", ";"])
                || call(tokens, "lo_open", &["'0-9'", "131072"])
                || call(tokens, "lowrite", &["0", "'text'"])
                || call(tokens, "lo_close", &["0"])
        }
        _ => false,
    }
}
