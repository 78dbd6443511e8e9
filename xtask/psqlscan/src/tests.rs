use super::*;

/// What the lexer made of `sql`: each statement rendered (`COPY` blocks as `<n rows>`), and
/// every refusal. Rows are handed over `step` bytes at a time.
fn read_in_steps(sql: &str, step: usize) -> (Vec<String>, Vec<Refusal>) {
    let mut lexer = Lexer::default();
    let mut out = Vec::new();
    let mut refusals = Vec::new();
    let mut rest = sql.as_bytes();
    while !rest.is_empty() {
        if lexer.in_copy() {
            let n = lexer.copy_data(&rest[..step.min(rest.len())]);
            rest = &rest[n..];
        } else {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |at| at + 1);
            if lexer.line(&rest[..end]) == LineKind::Meta {
                out.push(format!(
                    "meta {}",
                    String::from_utf8_lossy(&rest[..end]).trim_end()
                ));
            }
            rest = &rest[end..];
        }
        out.extend(lexer.take_statements().map(|s| s.render(1000)));
        if let Some(block) = lexer.take_copy_block() {
            out.push(format!("<{} rows, {:?}>", block.rows, block.end));
        }
        refusals.extend(lexer.take_refusal());
    }
    let open = lexer.finish();
    if let Some(block) = lexer.take_copy_block() {
        out.push(format!("<{} rows at the end>", block.rows));
    }
    if open.is_some() {
        out.push("<open>".into());
    }
    (out, refusals)
}

fn read(sql: &str) -> (Vec<String>, Vec<Refusal>) {
    let whole = read_in_steps(sql, usize::MAX);
    for step in [1, 2, 3, 5] {
        assert_eq!(read_in_steps(sql, step), whole, "rows in steps of {step}");
    }
    whole
}

fn statements(sql: &str) -> Vec<String> {
    let (out, refusals) = read(sql);
    assert_eq!(refusals, [], "{sql}");
    out
}

fn refused(sql: &str) -> String {
    let (_, refusals) = read(sql);
    assert!(!refusals.is_empty(), "not refused: {sql}");
    refusals[0].what.clone()
}

#[test]
fn statements_end_at_semicolons_outside_parentheses() {
    assert_eq!(
        statements("SELECT 1; SELECT (2;\n3);\nCREATE TABLE t (\n  a int\n);\n"),
        ["SELECT 1;", "SELECT (2; 3);", "CREATE TABLE t ( a int );"]
    );
    assert_eq!(statements("SELECT 1 -- not ; here\n;"), ["SELECT 1 ;"]);
    assert_eq!(statements("SELECT 1"), ["<open>"]);
    assert_eq!(statements(") ; SELECT 1;"), [") ;", "SELECT 1;"]);
}

#[test]
fn strings_as_psql_reads_them_with_standard_strings_on() {
    // A backslash is an ordinary character: `'\'` is a whole string.
    assert_eq!(
        statements("SELECT '\\'; SELECT 2;"),
        ["SELECT '\\';", "SELECT 2;"]
    );
    // Vector 3 of issue 32, read with standard_conforming_strings on: one string.
    assert_eq!(
        statements("SELECT '\\'' ; ALTER ROLE x SET y = 1 ; --';\n"),
        ["SELECT '\\'' ; ALTER ROLE x SET y = 1 ; --';"]
    );
    // E'' strings escape with backslashes.
    assert_eq!(
        statements("SELECT E'\\'; DROP TABLE t; --';\nSELECT e'a\\\\'; SELECT 3;"),
        [
            "SELECT E'\\'; DROP TABLE t; --';",
            "SELECT E'a\\\\';",
            "SELECT 3;"
        ]
    );
    // A string over lines holding what looks like a table-of-contents entry and a COPY.
    let toc = "COMMENT ON TABLE t IS 'x\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\nCOPY public.t (a) FROM stdin;\nDROP TABLE t;\n';\n";
    assert_eq!(statements(toc), [toc.trim_end()]);
    let (out, _) = read("COMMENT ON TABLE t IS 'a\nCOPY public.t (a) FROM stdin;\n';\n");
    assert_eq!(out.len(), 1, "one statement, no COPY: {out:?}");
    assert!(out[0].starts_with("COMMENT ON TABLE t IS 'a\nCOPY"));
    // Quoted names, U& strings and names, B'' and X'' strings.
    assert_eq!(
        statements("SELECT \"a;\"\"b\", U&'d;\\0061', U&\"x;\", B'01', X'1f', N'n;';"),
        ["SELECT \"a;\"\"b\", U&'d;\\0061', U&\"x;\", B'01', X'1f', N'n;';"]
    );
    // `u&` not followed by a quote is a name and an operator.
    assert_eq!(statements("SELECT u&1;"), ["SELECT u&1;"]);
}

#[test]
fn comments_nest_and_hide_semicolons() {
    assert_eq!(
        statements("SELECT /* a; /* b; */ c; */ 1; SELECT 2 -- c; d\n;"),
        ["SELECT 1;", "SELECT 2 ;"]
    );
    assert_eq!(
        statements("/* leading */ SELECT 1;\nSELECT 1 +/* x; */2;\nSELECT 1 *-- x;\n 2;"),
        ["SELECT 1;", "SELECT 1 + 2;", "SELECT 1 * 2;"]
    );
    assert_eq!(statements("/* open\n; still comment"), ["<open>"]);
}

#[test]
fn dollar_quotes_tags_parameters_and_dollars_in_names() {
    assert_eq!(
        statements("SELECT $$a;$$; SELECT $t$ $$; $u$ $t$; SELECT $1, a$b, $a b;"),
        [
            "SELECT $$a;$$;",
            "SELECT $$ $$; $u$ $$;",
            "SELECT $1, a$b, $a b;"
        ]
    );
    // A name may hold `$`: `a$$` is a name, not a name and a dollar quote.
    assert_eq!(
        statements("SELECT a$$; SELECT 2;"),
        ["SELECT a$$;", "SELECT 2;"]
    );
    // A tag cannot start with a digit: `$1$` is a parameter and a `$`.
    assert_eq!(statements("SELECT $1$;"), ["SELECT $1$;"]);
    // The closing tag may start inside what looks like another tag.
    assert_eq!(
        statements("SELECT $a$ x $b$a$ ; SELECT 2;"),
        ["SELECT $$ x $b$$ ;", "SELECT 2;"]
    );
    assert_eq!(
        statements(
            "CREATE FUNCTION f() RETURNS int AS $body$\nBEGIN\n RETURN 1; -- x\nEND\n$body$;\n"
        ),
        ["CREATE FUNCTION f() RETURNS int AS $$\nBEGIN\n RETURN 1; -- x\nEND\n$$;"]
    );
}

#[test]
fn begin_atomic_bodies_keep_their_semicolons() {
    let body = "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql\n    BEGIN ATOMIC\n SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END;\n SELECT (a + 1);\nEND;\nSELECT 2;\n";
    let out = statements(body);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].ends_with("SELECT (a + 1); END;"), "{out:?}");
    let mut lexer = Lexer::default();
    for line in body.split_inclusive('\n') {
        lexer.line(line.as_bytes());
    }
    let first = lexer.take_statements().next().unwrap();
    assert!(first.atomic_body);
    assert_eq!(
        statements("CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END;"),
        ["CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END;"]
    );
    // Outside CREATE FUNCTION, BEGIN is a statement of its own.
    assert_eq!(statements("BEGIN; COMMIT;"), ["BEGIN;", "COMMIT;"]);
    // Where psql's count of BEGIN and END is not the server's, the text is refused.
    for odd in [
        "CREATE FUNCTION public.begin() RETURNS int LANGUAGE sql AS 'select 1'; ALTER ROLE x SET y = 1; end;",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS case; END; ALTER ROLE x SET y = 1; END;",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT t.case FROM t; ALTER ROLE x SET y = 1; END; END;",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN SELECT 1; END;",
        // A column's label without AS: the server reads no CASE, psql counts one.
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 case; END; ALTER ROLE x SET y = 1; END;",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 'x' case, (1) case; END; ALTER ROLE x SET y = 1; END; END;",
        "CREATE FUNCTION f() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1) RETURNING by case; END; ALTER ROLE x SET y = 1; END;",
        "CREATE FUNCTION f() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC SELECT return case FROM t; END; ALTER ROLE x SET y = 1; END;",
        "CREATE FUNCTION f() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC SELECT s.where case FROM s; END; ALTER ROLE x SET y = 1; END;",
        "CREATE FUNCTION f() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC SELECT s.* case FROM s; END; ALTER ROLE x SET y = 1; END;",
    ] {
        assert!(refused(odd).contains("BEGIN"), "{odd}");
    }
    // A CASE expression after a reserved word or an operator, as pg_dump writes them.
    let cases = "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC RETURN CASE WHEN a > 0 THEN CASE a WHEN 1 THEN 1 END ELSE 2 END; SELECT a, CASE WHEN true THEN 1 END FROM t WHERE CASE WHEN a IS NULL THEN true END GROUP BY CASE WHEN true THEN 1 END ORDER BY CASE WHEN a = 1 THEN 1 END; UPDATE t SET a = CASE WHEN true THEN 1 END RETURNING CASE WHEN true THEN 1 END; END;";
    assert_eq!(statements(cases).len(), 1);
}

#[test]
fn psql_variables_and_commands_are_refused() {
    for (sql, what) in [
        ("SELECT :x;", "`:x`"),
        ("SELECT :'USER';", "`:'USER'`"),
        ("SELECT :\"USER\";", "`:\"USER\"`"),
        ("SELECT :{?x};", "`:{?x}`"),
        ("SELECT 1 :::x;", "`:x`"),
        ("SELECT 1; \\! id\n", "`\\!`"),
        ("SELECT 1 \\; SELECT 2;", "`\\;`"),
        ("\\set x 1\n", "`\\set`"),
        ("SELECT 1 \\restrict abc\n", "`\\restrict`"),
    ] {
        let what_found = refused(sql);
        assert!(what_found.contains(what), "{sql}: {what_found}");
    }
    // Casts, assignments and array slices are not variables.
    assert_eq!(
        statements("SELECT a::text, b[1:2], f(x := 1), ':x', \":x\";"),
        ["SELECT a::text, b[1:2], f(x := 1), ':x', \":x\";"]
    );
    // pg_dump's own psql commands, on lines of their own between statements.
    assert_eq!(
        statements("\\restrict Ab1\nSELECT 1;\n\\unrestrict Ab1\n"),
        ["meta \\restrict Ab1", "SELECT 1;", "meta \\unrestrict Ab1"]
    );
}

#[test]
fn copy_rows_end_where_psql_ends_them() {
    let sql = "COPY public.t (a) FROM stdin;\nrow 1\n\\.x\n\\\\.\n\\.\nSELECT 1;\n";
    assert_eq!(
        statements(sql),
        ["COPY public.t (a) FROM stdin;", "<3 rows, Lf>", "SELECT 1;"]
    );
    // `\.` with a carriage return ends the rows too; what follows is SQL (vector 1).
    let (out, refusals) = read("COPY t FROM stdin;\nrow\n\\.\r\nCOMMIT; DROP DATABASE d;\n\\.\n");
    assert_eq!(
        out,
        [
            "COPY t FROM stdin;",
            "<1 rows, CrLf>",
            "COMMIT;",
            "DROP DATABASE d;"
        ]
    );
    assert!(refusals[0].what.contains("`\\.`"), "{refusals:?}");
    // Rows run to the end of the input when no `\.` comes.
    assert_eq!(
        statements("copy t from STDIN;\na\nb"),
        ["copy t from STDIN;", "<2 rows at the end>"]
    );
    // Only what psql would send as rows: a COPY to stdout, or one that names a file, is
    // followed by SQL.
    assert_eq!(
        statements("COPY t TO stdout;\nSELECT 1;\nCOPY t FROM '/x';\nSELECT 2;\n"),
        [
            "COPY t TO stdout;",
            "SELECT 1;",
            "COPY t FROM '/x';",
            "SELECT 2;"
        ]
    );
    assert!(refused("COPY t FROM stdin; SELECT 1;\n\\.\n").contains("after `COPY"));
    // psql sends the rest of the file as a binary COPY's data, `\.` or not.
    for binary in [
        "COPY t FROM stdin (FORMAT binary);\n\\.\n",
        "COPY t FROM stdin WITH (FORMAT 'BINARY');\n\\.\n",
        "COPY BINARY t FROM stdin;\n\\.\n",
        "COPY t FROM stdin BINARY;\n\\.\n",
    ] {
        assert!(refused(binary).contains("binary"), "{binary}");
    }
    assert_eq!(
        statements("COPY t (\"binary\") FROM stdin;\n\\.\n"),
        ["COPY t (\"binary\") FROM stdin;", "<0 rows, Lf>"]
    );
    assert_eq!(
        statements("COPY t FROM stdin; \t\n\\.\n"),
        ["COPY t FROM stdin;", "<0 rows, Lf>"]
    );
}

#[test]
fn what_psql_and_the_server_read_differently_is_refused() {
    for (sql, what) in [
        (
            "SELECT E'a'\n'\\' ' ; ALTER ROLE x SET y = 1; --';",
            "continued",
        ),
        ("SELECT 'a' -- c\n\n'b';", "continued"),
        ("SELECT 1;\r\nSELECT 2;", "carriage return"),
        ("SELECT 1; -- x\rDROP TABLE t;\n", "carriage return"),
        ("SELECT 1\0;", "NUL"),
        ("COPY t FROM stdin;\na\0b\n\\.\n", "NUL"),
        ("SELECT 1abc;", "number run into a name"),
        ("SELECT 0x1F;", "number run into a name"),
        ("SELECT $1a;", "parameter run into a name"),
    ] {
        let found = refused(sql);
        assert!(found.contains(what), "{sql}: {found}");
    }
    // A string and a string after something else are two tokens for everyone.
    assert_eq!(
        statements("SELECT 'a', 'b' || 'c';"),
        ["SELECT 'a', 'b' || 'c';"]
    );
    // Carriage returns inside strings and dollar quotes are text.
    assert_eq!(statements("SELECT 'a\r\nb', $$\r$$;").len(), 1);
}

#[test]
fn refusals_name_their_line() {
    let mut lexer = Lexer::default();
    for line in ["SELECT 1;\n", "SELECT\n", "  :x;\n"] {
        lexer.line(line.as_bytes());
    }
    assert_eq!(lexer.take_refusal().map(|r| r.line), Some(3));
    let mut lexer = Lexer::default();
    lexer.line(b"COPY t FROM stdin;\n");
    lexer.copy_data(b"a\nb\nc\0\n");
    assert_eq!(lexer.take_refusal().map(|r| r.line), Some(4));
}

#[test]
fn statements_know_where_they_are() {
    let mut lexer = Lexer::default();
    lexer.line(b"SELECT 1; /* c */\n");
    lexer.line(b"SELECT\n");
    lexer.line(b" 2;\n");
    let found: Vec<(u64, u64, u64)> = lexer
        .take_statements()
        .map(|s| (s.line, s.start, s.end))
        .collect();
    assert_eq!(found, [(1, 0, 9), (1, 10, 28)]);
    assert!(lexer.at_statement_start());
}

#[test]
fn long_text_is_cut_in_tokens_but_read_whole() {
    let long = "x".repeat(MAX_TEXT * 2);
    let mut lexer = Lexer::default();
    lexer.line(format!("SELECT '{long}'; SELECT 2;\n").as_bytes());
    let found: Vec<Statement> = lexer.take_statements().collect();
    assert_eq!(found.len(), 2);
    match &found[0].tokens[1] {
        Token::Str { text, whole, .. } => assert!(text.len() == MAX_TEXT && !whole),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_byte_of_a_multibyte_utf8_character_is_ascii() {
    // The lexer reads bytes, as psql does for an encoding a server may have: a quote, a
    // backslash or a `$` inside a character would be read as one.
    let mut buf = [0u8; 4];
    for c in ('\u{80}'..=char::MAX).filter(|c| c.len_utf8() > 1) {
        assert!(c.encode_utf8(&mut buf).bytes().all(|b| b >= 0x80), "{c:?}");
    }
}
