//! What a plain dump may hold, statement by statement: the session settings pg_dump 13 to 17
//! writes before the first table-of-contents entry, and for each type of entry the statements
//! it writes there (with and without owners). Anything else refuses the dump. The statements
//! are read by [`psqlscan`], as psql will read them.

mod header;
mod kinds;
mod shape;

use psqlscan::{Statement, Token};

pub use header::Header;
use kinds::{allowed, anywhere};
use shape::{Cursor, Shape};

/// Statements, by their first two words, that act beyond the database a dump loads into:
/// other databases, roles, tablespaces, the server's configuration, the session's role.
/// pg_dump writes none of them into a dump of one database without `--create`.
const FOREIGN: &[(&str, &[&str])] = &[
    (
        "CREATE",
        &["DATABASE", "ROLE", "USER", "GROUP", "TABLESPACE"],
    ),
    (
        "DROP",
        &["DATABASE", "ROLE", "USER", "GROUP", "TABLESPACE", "OWNED"],
    ),
    (
        "ALTER",
        &["DATABASE", "ROLE", "USER", "GROUP", "TABLESPACE", "SYSTEM"],
    ),
    ("REASSIGN", &["OWNED"]),
    ("SET", &["ROLE", "SESSION"]),
    ("GRANT", &[]),
    ("REVOKE", &[]),
    ("LOAD", &[]),
];

/// Checks a statement of an entry of pg_dump's type `kind` (`TABLE`, `INDEX`, ...); `Err`
/// says what was found.
pub fn entry_statement(kind: &str, statement: &Statement) -> Result<(), String> {
    let tokens = &statement.tokens;
    let words: Vec<String> = tokens
        .iter()
        .take(2)
        .map_while(|t| match t {
            Token::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        })
        .collect();
    let foreign = FOREIGN.iter().find(|(verb, objects)| {
        words.first().is_some_and(|w| w == verb)
            && (objects.is_empty() || words.get(1).is_some_and(|o| objects.contains(&o.as_str())))
    });
    if let Some((_, objects)) = foreign {
        let words = words[..if objects.is_empty() { 1 } else { 2 }].join(" ");
        let article = match words.starts_with(['A', 'E', 'I', 'O', 'U']) {
            true => "an",
            false => "a",
        };
        if objects.is_empty() && matches!(words.as_str(), "GRANT" | "REVOKE") {
            return Err(format!(
                "a {words} statement, which changes roles' privileges and which a dump made with --no-privileges (as bundles and fixtures are) never holds"
            ));
        }
        return Err(format!(
            "{article} {words} statement, which acts beyond the database and which pg_dump never writes into a dump"
        ));
    }
    if statement.too_long {
        return Err(format!(
            "a statement of more than {} tokens (`{}`), longer than pg_dump writes",
            psqlscan::MAX_TOKENS,
            statement.render(40)
        ));
    }
    let shape = Shape::of(tokens);
    let cursor = Cursor {
        items: &shape.items,
        at: 0,
    };
    let routine_body = statement.atomic_body && matches!(kind, "FUNCTION" | "PROCEDURE");
    if (!statement.atomic_body || routine_body)
        && !statement.copy_in
        && (anywhere(cursor) || allowed(kind, cursor, tokens))
    {
        return Ok(());
    }
    if statement.copy_in && kind == "TABLE DATA" {
        return Ok(());
    }
    if tokens.first().is_some_and(|t| t.is_word("copy")) && !statement.copy_in {
        return Err(format!(
            "`{}`: a COPY other than the `COPY ... FROM stdin` of a table's rows, a COPY to or from a file or program, which pg_dump never writes",
            statement.render(60)
        ));
    }
    Err(format!(
        "`{}`, which pg_dump never writes into a {kind} entry",
        statement.render(60)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements of `sql`, read as psql reads them.
    pub fn parse(sql: &str) -> Vec<Statement> {
        let mut lexer = psqlscan::Lexer::default();
        for line in sql.split_inclusive('\n') {
            lexer.line(line.as_bytes());
        }
        assert_eq!(lexer.take_refusal(), None, "{sql}");
        lexer.take_statements().collect()
    }

    fn check(kind: &str, sql: &str) -> Result<(), String> {
        let statements = parse(sql);
        assert_eq!(statements.len(), 1, "{sql}");
        entry_statement(kind, &statements[0])
    }

    #[test]
    fn entries_hold_what_pg_dump_writes_for_their_type() {
        for (kind, sql) in [
            ("TABLE", "CREATE TABLE public.t (\n    id integer NOT NULL,\n    d text DEFAULT 'a;b'::text\n)\nPARTITION BY RANGE (id);"),
            ("TABLE", "CREATE UNLOGGED TABLE s.\"T\" (k text) WITH (fillfactor='80');"),
            ("TABLE", "CREATE TABLE extra.typed OF extra.pair;"),
            ("TABLE", "ALTER TABLE ONLY extra.site ALTER COLUMN score SET (n_distinct=100);"),
            ("TABLE", "ALTER TABLE ONLY extra.site ALTER COLUMN note SET STATISTICS 500;"),
            ("TABLE", "ALTER TABLE ONLY extra.site REPLICA IDENTITY FULL;"),
            ("TABLE", "ALTER TABLE extra.site OWNER TO postgres;"),
            ("TABLE", "ALTER TABLE ONLY extra.event ATTACH PARTITION extra.event_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"),
            ("TABLE ATTACH", "ALTER TABLE ONLY extra.bucket ATTACH PARTITION extra.bucket_0 FOR VALUES WITH (modulus 2, remainder 0);"),
            ("TABLE ATTACH", "ALTER TABLE ONLY extra.event ATTACH PARTITION extra.event_rest DEFAULT;"),
            ("TABLE", "SET default_tablespace = '';"),
            ("COMMENT", "SET default_table_access_method = heap;"),
            ("DEFAULT", "ALTER TABLE ONLY public.t ALTER COLUMN id SET DEFAULT nextval('public.t_id_seq'::regclass);"),
            ("DEFAULT", "ALTER TABLE ONLY public.t ALTER COLUMN a SET DEFAULT ARRAY['x', 'y'];"),
            ("SEQUENCE", "CREATE SEQUENCE public.s\n    START WITH 1\n    INCREMENT BY 1\n    NO MINVALUE\n    NO MAXVALUE\n    CACHE 1;"),
            ("SEQUENCE", "ALTER TABLE public.t ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (\n    SEQUENCE NAME public.t_id_seq\n    START WITH 1\n);"),
            ("SEQUENCE OWNED BY", "ALTER SEQUENCE public.s OWNED BY public.t.id;"),
            ("SEQUENCE SET", "SELECT pg_catalog.setval('public.t_id_seq', 7, true);"),
            ("SEQUENCE SET", "SELECT pg_catalog.setval('public.\"Odd\"', -3, false);"),
            ("INDEX", "CREATE INDEX i ON ONLY public.t USING btree (lower(name)) WHERE (a > 1);"),
            ("INDEX", "CREATE UNIQUE INDEX i ON public.t USING btree (a, b);"),
            ("INDEX", "ALTER TABLE public.t CLUSTER ON i;"),
            ("INDEX ATTACH", "ALTER INDEX public.p_idx ATTACH PARTITION public.p_1_idx;"),
            ("CONSTRAINT", "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);"),
            ("FK CONSTRAINT", "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_fk FOREIGN KEY (a) REFERENCES public.u(id) DEFERRABLE INITIALLY DEFERRED;"),
            ("CHECK CONSTRAINT", "ALTER DOMAIN extra.label\n    ADD CONSTRAINT label_short CHECK ((length(VALUE) < 100)) NOT VALID;"),
            ("VIEW", "CREATE VIEW public.v AS\n SELECT t.a,\n    'a;b'::text AS odd,\n    tags[1:2] AS first\n   FROM public.t;"),
            ("MATERIALIZED VIEW", "CREATE MATERIALIZED VIEW extra.m AS\n SELECT 1 AS one\n  WITH NO DATA;"),
            ("MATERIALIZED VIEW DATA", "REFRESH MATERIALIZED VIEW extra.m;"),
            ("FUNCTION", "CREATE FUNCTION public.f(p bigint) RETURNS integer\n    LANGUAGE sql STABLE\n    AS $$ SELECT 1; $$;"),
            ("FUNCTION", "CREATE FUNCTION extra.s(a integer) RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT (a + 1);\nEND;"),
            ("PROCEDURE", "CREATE PROCEDURE extra.p(IN k text)\n    LANGUAGE sql\n    BEGIN ATOMIC\n INSERT INTO t (k) VALUES (p.k);\n SELECT CASE WHEN true THEN 1 ELSE 2 END AS \"case\";\nEND;"),
            ("AGGREGATE", "CREATE AGGREGATE extra.total(integer) (\n    SFUNC = extra.add,\n    STYPE = integer\n);"),
            ("OPERATOR", "CREATE OPERATOR extra.=== (\n    FUNCTION = extra.pair_eq\n);"),
            ("CAST", "CREATE CAST (extra.pair AS text) WITH FUNCTION extra.pair_text(extra.pair);"),
            ("TYPE", "CREATE TYPE extra.status AS ENUM (\n    'a',\n    'b'\n);"),
            ("DOMAIN", "CREATE DOMAIN extra.positive AS integer\n\tCONSTRAINT c CHECK ((VALUE > 0));"),
            ("COLLATION", "CREATE COLLATION public.natural_sort (provider = icu, locale = 'und-u-kn-true');"),
            ("SCHEMA", "CREATE SCHEMA extra;"),
            ("SCHEMA", "ALTER SCHEMA extra OWNER TO postgres;"),
            ("EXTENSION", "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;"),
            ("COMMENT", "COMMENT ON TABLE public.t IS 'sites; with a ''quote''';"),
            ("COMMENT", "COMMENT ON FUNCTION public.f(p bigint) IS 'x';"),
            ("COMMENT", "COMMENT ON LARGE OBJECT 424242 IS 'a greeting';"),
            ("TEXT SEARCH CONFIGURATION", "ALTER TEXT SEARCH CONFIGURATION extra.e\n    ADD MAPPING FOR asciiword WITH english_stem;"),
            ("TRIGGER", "CREATE TRIGGER t BEFORE UPDATE ON extra.site FOR EACH ROW EXECUTE FUNCTION extra.touch();"),
            ("TRIGGER", "ALTER TABLE extra.rack DISABLE TRIGGER rack_check;"),
            ("RULE", "CREATE RULE r AS\n    ON DELETE TO extra.scratch DO INSTEAD NOTHING;"),
            ("POLICY", "CREATE POLICY p ON extra.rack USING (true) WITH CHECK ((units < 100));"),
            ("ROW SECURITY", "ALTER TABLE extra.rack ENABLE ROW LEVEL SECURITY;"),
            ("PUBLICATION", "CREATE PUBLICATION p WITH (publish = 'insert, update');"),
            ("PUBLICATION TABLE", "ALTER PUBLICATION p ADD TABLE ONLY extra.rack;"),
            ("STATISTICS", "CREATE STATISTICS extra.s (dependencies) ON site_id, units FROM extra.rack;"),
            ("BLOB", "SELECT pg_catalog.lo_create('424242');"),
            ("BLOB METADATA", "ALTER LARGE OBJECT 424242 OWNER TO postgres;"),
            ("BLOBS", "BEGIN;"),
            ("BLOBS", "SELECT pg_catalog.lo_open('424242', 131072);"),
            ("BLOBS", "SELECT pg_catalog.lowrite(0, '\\x68656c6c6f');"),
            ("BLOBS", "SELECT pg_catalog.lo_close(0);"),
            ("BLOBS", "COMMIT;"),
        ] {
            assert_eq!(check(kind, sql), Ok(()), "{kind}: {sql}");
        }
        let copy = parse("COPY public.t (id) FROM stdin;\n");
        assert_eq!(entry_statement("TABLE DATA", &copy[0]), Ok(()));
    }

    #[test]
    fn anything_else_is_refused_and_named() {
        for (kind, sql, found) in [
            (
                "TABLE",
                "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$;",
                "`DO $$",
            ),
            (
                "TABLE",
                "SELECT 1;",
                "`SELECT 1;`, which pg_dump never writes into a TABLE entry",
            ),
            ("TABLE", "CREATE TABLE t AS SELECT f();", "TABLE entry"),
            (
                "TABLE",
                "CREATE TABLE t (a int) AS SELECT 1;",
                "TABLE entry",
            ),
            (
                "TABLE",
                "CREATE TABLE p1 PARTITION OF p FOR VALUES IN (f());",
                "TABLE entry",
            ),
            (
                "TABLE",
                "ALTER TABLE t ALTER COLUMN a TYPE int USING f(a);",
                "TABLE entry",
            ),
            (
                "TABLE",
                "ALTER TABLE t OWNER TO x, ALTER COLUMN a TYPE int USING f(a);",
                "TABLE entry",
            ),
            (
                "TABLE ATTACH",
                "ALTER TABLE ONLY p ATTACH PARTITION c FOR VALUES IN (f());",
                "ATTACH",
            ),
            (
                "TABLE",
                "SELECT pg_catalog.set_config('search_path', 'evil', false);",
                "set_config",
            ),
            (
                "TABLE",
                "SET standard_conforming_strings = off;",
                "SET standard",
            ),
            ("TABLE", "SET client_encoding = 'SJIS';", "client_encoding"),
            ("TABLE", "RESET ALL;", "RESET"),
            (
                "TABLE",
                "DROP DATABASE IF EXISTS victim WITH (FORCE);",
                "a DROP DATABASE statement, which acts beyond the database",
            ),
            (
                "INDEX",
                "ALTER ROLE dev SET search_path = evil;",
                "an ALTER ROLE statement",
            ),
            (
                "TABLE",
                "GRANT ALL ON TABLE t TO public;",
                "a GRANT statement",
            ),
            (
                "ACL",
                "REVOKE ALL ON SCHEMA public FROM PUBLIC;",
                "a REVOKE statement",
            ),
            ("TABLE", "SET ROLE admin;", "SET ROLE"),
            ("TABLE", "SET SESSION AUTHORIZATION admin;", "SET SESSION"),
            (
                "TABLE",
                "COPY public.t TO '/tmp/out';",
                "a COPY to or from a file or program",
            ),
            (
                "TABLE",
                "COPY public.t FROM PROGRAM 'id';",
                "a COPY to or from a file or program",
            ),
            ("INDEX", "COPY public.t (id) FROM stdin;", "INDEX entry"),
            (
                "SEQUENCE SET",
                "SELECT pg_catalog.setval('s', 1, true); ",
                "",
            ),
            (
                "SEQUENCE SET",
                "SELECT pg_catalog.setval('s', f(), true);",
                "SEQUENCE SET",
            ),
            (
                "SEQUENCE SET",
                "SELECT public.setval('s', 1, true);",
                "SEQUENCE SET",
            ),
            (
                "SEQUENCE SET",
                "SELECT pg_catalog.setval(E's', 1, true);",
                "SEQUENCE SET",
            ),
            (
                "BLOBS",
                "SELECT pg_catalog.lo_export(0, '/tmp/x');",
                "BLOBS",
            ),
            (
                "BLOB",
                "SELECT pg_catalog.lo_create('1'), pg_catalog.pg_sleep(1);",
                "BLOB",
            ),
            (
                "MATERIALIZED VIEW",
                "CREATE MATERIALIZED VIEW m AS SELECT f();",
                "MATERIALIZED VIEW",
            ),
            (
                "SCHEMA",
                "CREATE SCHEMA s CREATE TABLE t (a int);",
                "SCHEMA",
            ),
            ("COMMENT", "COMMENT ON DATABASE postgres IS 'x';", "COMMENT"),
            ("EXTENSION", "CREATE EXTENSION dblink;", ""),
            ("FUNCTION", "CALL extra.bump(1);", "CALL"),
            (
                "TABLE",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;",
                "TABLE entry",
            ),
            (
                "EVENT TRIGGER",
                "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f();",
                "EVENT TRIGGER entry",
            ),
        ] {
            let result = check(kind, sql);
            if found.is_empty() {
                assert_eq!(result, Ok(()), "{kind}: {sql}");
                continue;
            }
            let what = result.expect_err(sql);
            assert!(what.contains(found), "{kind}: {sql}: {what}");
        }
    }

    #[test]
    fn the_header_holds_settings_pg_dump_writes_once_each() {
        let mut header = Header::default();
        for sql in [
            "SET statement_timeout = 0;",
            "SET transaction_timeout = 0;",
            "SET client_encoding = 'UTF8';",
            "SET standard_conforming_strings = on;",
            "SELECT pg_catalog.set_config('search_path', '', false);",
            "SET check_function_bodies = false;",
            "SET xmloption = content;",
            "SET client_min_messages = warning;",
            "SET row_security = off;",
        ] {
            assert_eq!(header.statement(&parse(sql)[0]), Ok(()), "{sql}");
        }
        assert_eq!(header.finish(), Ok(()));
        assert_eq!(header.client_encoding.as_deref(), Some("UTF8"));
        for (sql, found) in [
            (
                "SET standard_conforming_strings = off;",
                "standard_conforming_strings = on",
            ),
            (
                "SET client_encoding = 'SJIS';",
                "not an encoding a PostgreSQL server has",
            ),
            ("SET client_encoding = 'sjis';", "not an encoding"),
            ("SET client_encoding = 'BIG5';", "not an encoding"),
            ("SET client_encoding = E'UTF8';", "only session settings"),
            ("SET search_path = evil;", "only session settings"),
            ("SET ROLE postgres;", "only session settings"),
            (
                "CREATE ROLE netpoint_injected;",
                "holds `CREATE ROLE netpoint_injected;` before its first table-of-contents entry",
            ),
            (
                "SELECT pg_catalog.set_config('search_path', 'evil', false);",
                "only session settings",
            ),
            (
                "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);",
                "only session settings",
            ),
            ("DO $$ BEGIN END $$;", "only session settings"),
        ] {
            let mut header = Header::default();
            let what = header.statement(&parse(sql)[0]).expect_err(sql);
            assert!(what.contains(found), "{sql}: {what}");
        }
        let mut twice = Header::default();
        let set = &parse("SET client_encoding = 'UTF8';")[0];
        assert_eq!(twice.statement(set), Ok(()));
        assert!(twice.statement(set).unwrap_err().contains("a second time"));
        let mut without = Header::default();
        assert_eq!(without.statement(set), Ok(()));
        assert!(without
            .finish()
            .unwrap_err()
            .contains("standard_conforming_strings"));
    }
}
