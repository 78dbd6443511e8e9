//! The guard a dump passes before anything is loaded (issue 32): its reading of SQL compared
//! with psql's own on adversarial input, dumps of the project's schemas by pg_dump 13, 15
//! and 17 accepted, and the five ways the issue ran SQL beyond the load refused, in bundles
//! and in fixtures, with nothing changed.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use psqlscan::{Lexer, Token};

use crate::{
    clone_prod::rewrite_sums,
    harness::{copy_tree, fixtures, run, workspace_root, xtask, Pg, Run},
    signing::{keygen, public_key, signers},
};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Imports the unsigned bundle at `bundle` into `target` on purpose (`--trust-unsigned`).
fn import_bundle(bundle: &Path, target: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "clone-prod",
        "--trust-unsigned",
        "--bundle",
        s(bundle),
        "--target",
        target,
        "--yes",
    ];
    args.extend_from_slice(extra);
    run(xtask(&args))
}

// ---------------------------------------------------------------------------------------
// The lexer and psql
// ---------------------------------------------------------------------------------------

/// The statements psql would send for `sql`, as the guard's lexer finds them (each as its
/// tokens, `COPY` rows left out), and what the lexer refused.
fn lexed(sql: &[u8]) -> (Vec<Vec<Token>>, Vec<String>) {
    let mut lexer = Lexer::default();
    let mut statements = Vec::new();
    let mut refusals = Vec::new();
    let mut rest = sql;
    while !rest.is_empty() {
        if lexer.in_copy() {
            let used = lexer.copy_data(rest);
            rest = &rest[used..];
        } else {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |at| at + 1);
            lexer.line(&rest[..end]);
            rest = &rest[end..];
        }
        statements.extend(lexer.take_statements().map(|s| s.tokens));
        refusals.extend(lexer.take_refusal().map(|r| r.what));
        lexer.take_copy_block();
    }
    statements.extend(lexer.finish().map(|s| s.tokens));
    (statements, refusals)
}

/// The tokens of a statement psql sent, read by the lexer.
fn tokens_of(query: &str) -> Vec<Token> {
    lexed(query.as_bytes()).0.concat()
}

/// What psql sent to the server for `sql`, read from its session log (`-L`): one entry per
/// query, `COPY` rows not included. `exec` runs psql in the server's own container (its
/// major's psql), otherwise the host's psql runs; `stop` stops it at the first error, as a
/// load does.
fn psql_sent(pg: &Pg, db: &str, sql: &[u8], exec: bool, stop: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let on_error_stop = format!("ON_ERROR_STOP={}", u8::from(stop));
    let log_text = if exec {
        let log = format!("/tmp/{db}.log");
        let mut child = Command::new("docker")
            .args([
                "exec",
                "-i",
                pg.container_id(),
                "psql",
                "-X",
                "-q",
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-v", &on_error_stop, "-L", &log, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running docker exec psql");
        child.stdin.take().unwrap().write_all(sql).unwrap();
        child.wait().unwrap();
        let out = Command::new("docker")
            .args(["exec", pg.container_id(), "cat", &log])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        let input = dir.path().join("in.sql");
        let log = dir.path().join("log");
        fs::write(&input, sql).unwrap();
        pg.psql_cmd(db)
            .args(["-v", &on_error_stop, "-L", s(&log), "-f", s(&input)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned()
    };
    // psql 17 frames each query as an SQL comment, earlier ones with stars alone.
    let (open, close) = match log_text.contains("/******** QUERY *********/\n") {
        true => (
            "/******** QUERY *********/\n",
            "\n/************************/\n",
        ),
        false => (
            "********* QUERY **********\n",
            "\n**************************\n",
        ),
    };
    log_text
        .split(open)
        .skip(1)
        .map(|part| part.split(close).next().unwrap().to_string())
        .collect()
}

struct Case {
    name: &'static str,
    sql: &'static [u8],
    /// What the lexer refuses, if anything.
    refused: Option<&'static str>,
    /// Whether psql sends the statements the lexer finds (false where psql changes the text).
    agrees: bool,
    /// The server runs `CREATE TABLE pwned` that psql's statements hide in a string.
    pwned: bool,
    /// Needs psql 14 or later (`BEGIN ATOMIC`).
    atomic: bool,
}

const fn case(name: &'static str, sql: &'static [u8]) -> Case {
    Case {
        name,
        sql,
        refused: None,
        agrees: true,
        pwned: false,
        atomic: false,
    }
}

const fn refused(name: &'static str, sql: &'static [u8], what: &'static str) -> Case {
    Case {
        refused: Some(what),
        ..case(name, sql)
    }
}

/// Adversarial input: the issue's vectors as the lexer meets them, and every rule of psql's
/// reading a guard could get wrong.
const CORPUS: &[Case] = &[
    case(
        "vector 1: rows ended by \\. and a carriage return, SQL after them",
        b"COPY t FROM stdin;\nrow\n\\.\r\nSELECT 'after the rows';\nSELECT 2;\n",
    ),
    case(
        "vector 2: a string holding a COPY line and SQL",
        b"COMMENT ON TABLE t IS 'x\nCOPY t (a) FROM stdin;\nSELECT 1;\n';\nSELECT 2;\n",
    ),
    case(
        "vector 3 with standard strings: a backslash before a quote",
        b"SELECT '\\'' ; SELECT 'not run' ; --';\nSELECT 2;\n",
    ),
    case(
        "vector 4's reading: E'' strings escape a quote",
        b"SELECT E'\\'; SELECT 1; --';\nSELECT E'a\\\\'; SELECT 3;\n",
    ),
    case(
        "vector 5: a DO block",
        b"DO $$ BEGIN EXECUTE 'SELECT 1'; END $$;\nSELECT 2;\n",
    ),
    case(
        "strings over lines holding table-of-contents headers",
        b"COMMENT ON TABLE t IS 'x\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\nSELECT 1;\n';\nSELECT 2;\n",
    ),
    case(
        "nested comments",
        b"SELECT /* a; /* b; */ c; */ 1;\n/* over\n; lines */ SELECT 2; SELECT 3 -- x; y\n;\n",
    ),
    case(
        "dollar quotes with tags",
        b"SELECT $a$ $$; $b$ ; $a$;\nSELECT $_$x;$_$ || $$y;$$;\nSELECT $a$ x $b$a$;\n",
    ),
    case(
        "$1, a$b and a$$",
        b"PREPARE p(int) AS SELECT $1 + 1;\nSELECT 1 AS a$b;\nSELECT a$$ FROM (SELECT 1 AS a$$) s;\n",
    ),
    case(
        "parentheses around a semicolon",
        b"SELECT (1;\n2);\nSELECT ')' ; SELECT ((3));\n",
    ),
    case(
        "casts and array slices",
        b"SELECT '1'::int, (ARRAY[1,2,3])[1:2];\n",
    ),
    case(
        "quoted names, U&, B, X and N strings",
        b"SELECT U&'d\\0061t;' AS \"x;y\", U&\"a;b\" FROM (SELECT 1 AS \"a;b\") s;\nSELECT B'01', X'1F', N'n;';\n",
    ),
    Case {
        atomic: true,
        ..case(
            "a BEGIN ATOMIC body",
            b"CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END;\n SELECT a + 1;\nEND;\nSELECT f(1);\n",
        )
    },
    Case {
        atomic: true,
        pwned: true,
        ..refused(
            "a routine body psql counts otherwise than the server",
            b"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS case; END; CREATE TABLE pwned (); END;\n",
            "BEGIN",
        )
    },
    Case {
        pwned: true,
        ..refused(
            "a string continued on the next line",
            b"SELECT E'a'\n'\\' ' ; CREATE TABLE pwned (); --'\n;\n",
            "continued",
        )
    },
    Case {
        pwned: true,
        ..refused(
            "a carriage return ending a -- comment",
            b"SELECT 1; -- x\rCREATE TABLE pwned ();\n",
            "carriage return",
        )
    },
    Case {
        agrees: false,
        ..refused("psql variables", b"SELECT :'USER', :USER;\n", "variable")
    },
    Case {
        agrees: false,
        ..refused(
            "\\; sends two statements as one",
            b"SELECT 1 \\; SELECT 2;\n",
            "`\\;`",
        )
    },
    Case {
        agrees: false,
        ..refused(
            "a NUL byte",
            b"SELECT 'a\0'; SELECT 'b';\nSELECT 2;\n",
            "NUL",
        )
    },
    refused(
        "a number run into a name",
        b"SELECT 1abc;\nSELECT 2;\n",
        "number",
    ),
    case(
        "U& strings and names with UESCAPE `!`, `'`, `\\` and `\"`",
        b"SELECT U&'d!0061t;' UESCAPE '!', U&'d''0061;' UESCAPE '''';\nSELECT U&'a\\' UESCAPE '\\' ; SELECT '; SELECT 3; --';\nSELECT 1 AS U&\"d!0061t;\" UESCAPE '!', 2 AS U&\"d\"\"0061;\" UESCAPE '\"';\n",
    ),
    case(
        "dollar quotes with UTF-8 tags, $1$, $a$$, a$$b, after a name and after a number",
        b"SELECT $\xc3\xa9$ ; $\xc3$ ; $\xc3\xa9$ || $\xc3\xbc$x;$\xc3\xbc$;\nSELECT $1$ ; SELECT $a$$ ; $a$, $_1$;$_1$;\nSELECT a$$b FROM (SELECT 1 AS a$$b) s;\nSELECT 1 AS x$$; SELECT 2;$$;\nSELECT 1$$; SELECT 3;$$;\n",
    ),
    case(
        "backslashes in standard, E, e, N, B and X strings",
        b"SELECT '\\'; SELECT E'\\\\'; SELECT E'\\''; SELECT 2;\nSELECT e'a\\'' || 'b;', n'c;', N'd\\', B'01', b'1', X'1f', x'2F';\nSELECT E'\\\n' ; SELECT 3;\n",
    ),
    Case {
        pwned: true,
        ..refused(
            "a B string continued on the next line",
            b"SELECT B'0'\n'1' ; CREATE TABLE pwned (); --'\n;\n",
            "continued",
        )
    },
    case(
        "comments: /*/, nested, -- inside /* */, /* inside --, ; and ' inside, unclosed at the end",
        b"SELECT /* /* */ */ 1; /*/ ; */ SELECT 2;\n/* -- ; */ SELECT 3; -- /* '\nSELECT 4 /* ' ; */; SELECT 5 +/* c */ 6; SELECT 7 */* c */ 8;\nSELECT 9;/*/*/*/ ; */ ; */ ; */ SELECT 10; SELECT 11 ---\n;\nSELECT 12; /* unclosed ;\n SELECT 13;\n",
    ),
    case(
        "parentheses and brackets around a semicolon, an unbalanced )",
        b"SELECT (;) ; SELECT ARRAY[1;2]; SELECT (1)[;];\nSELECT 1 ) ; SELECT 2 )) (3;\n4);\n",
    ),
    Case {
        atomic: true,
        ..case(
            "CASE expressions in a body after RETURN, SELECT, WHERE, ORDER BY and THEN; END IF in PL/pgSQL",
            b"CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC RETURN CASE WHEN a > 0 THEN CASE a WHEN 1 THEN 1 END ELSE 2 END; END;\nCREATE FUNCTION g() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN a IS NULL THEN 1 END FROM t WHERE CASE WHEN a IS NULL THEN true END ORDER BY CASE WHEN a = 'x' THEN 1 END, a; END;\nCREATE FUNCTION h() RETURNS int LANGUAGE plpgsql AS $$ BEGIN IF true THEN RETURN 1; END IF; END $$;\nSELECT f(1), h();\n",
        )
    },
    Case {
        atomic: true,
        pwned: true,
        ..refused(
            "a body's `case` as a column's label without AS",
            b"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 case; END; CREATE TABLE pwned (); END;\n",
            "BEGIN",
        )
    },
    Case {
        atomic: true,
        pwned: true,
        ..refused(
            "a body's `case` labelling a column named by an unreserved word, in RETURNING",
            b"CREATE TABLE s (by int);\nCREATE FUNCTION f() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC INSERT INTO s VALUES (1) RETURNING by case; END; CREATE TABLE pwned (); END;\n",
            "BEGIN",
        )
    },
    case(
        "a body's `end` as a label: psql ends the statement early",
        b"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 end; END; SELECT 2;\n",
    ),
    case(
        "COPY: \\. at the end without a newline",
        b"copy t from STDIN;\nrow\n\\.",
    ),
    case(
        "COPY: \\. followed by a space, \\\\., CSV with \\. inside quotes, FROM /* */ stdin",
        b"COPY t FROM stdin;\nrow\n\\. \n\\\\.\nSELECT 'a row';\n\\.\nCOPY t FROM stdin WITH (FORMAT csv);\n\"a\n\\.\nSELECT 'run';\n\"\n\\.\nCOPY t FROM /* x */ stdin;\nrow\r\n\\.\r\nSELECT 2;\n",
    ),
    case(
        "COPY in a line of statements, lowercase, FROM \"stdin\" and pstdin",
        b"SELECT 1; copy t (a) from STDIN;\nrow\n\\.\nCOPY t FROM \"stdin\";\nCOPY t FROM pstdin;\nSELECT 2;\n",
    ),
    refused(
        "COPY ... FROM stdin; then a comment on its line",
        b"COPY t FROM stdin; -- c\nrow\n\\.\nSELECT 2;\n",
        "text after",
    ),
    Case {
        agrees: false,
        ..refused(
            "COPY ... FROM stdin; then a statement on its line",
            b"COPY t FROM stdin; SELECT 1;\nrow\n\\.\nSELECT 2;\n",
            "text after",
        )
    },
    Case {
        agrees: false,
        ..refused(
            "a binary COPY, which psql feeds to the end of the file",
            b"COPY t FROM stdin (FORMAT binary);\nrow\n\\.\nSELECT 2;\n",
            "binary",
        )
    },
    Case {
        agrees: false,
        ..refused(
            "psql variables :\"foo\" and :{?foo}",
            b"SELECT :\"foo\", :{?foo};\nSELECT 2;\n",
            "variable",
        )
    },
    refused(
        "a slice a[x:y], where :y is a psql variable",
        b"SELECT (ARRAY[1,2,3])[a:b] FROM (SELECT 1 a, 2 b) s;\n",
        "variable",
    ),
    Case {
        agrees: false,
        ..refused("\\: sends a colon", b"SELECT 1 \\: 2;\nSELECT 2;\n", "`\\:`")
    },
    case(
        ":= outside dollar quotes, slices [1 :2], [:2] and [2:]",
        b"DO $$ DECLARE x int; BEGIN x := 1; END $$;\nSELECT a := 1;\nSELECT (ARRAY[1,2,3])[1 :2], (ARRAY[1,2,3])[:2], (ARRAY[1,2,3])[2:];\n",
    ),
    case(
        "UTF-8 and LATIN1 bytes before a backslash and a quote",
        b"SELECT '\xc3\xa9\\'; SELECT E'\xe2\x80\\\\'; SELECT 2;\nSET client_encoding = 'LATIN1';\nSELECT '\xe9\\'; SELECT E'\xe9\\''; SELECT 3; --';\n",
    ),
];

/// Rows of a `COPY` at and around psql's 8 KiB read buffer, each block ended by `\.`, and
/// rows ending in `\.` at those lengths.
fn rows_at_the_buffer_edges() -> Case {
    let mut sql = Vec::new();
    for len in [8189, 8190, 8191, 8192, 8193, 8194, 8195, 16383, 16384] {
        sql.extend_from_slice(b"COPY t FROM stdin;\n");
        sql.extend(std::iter::repeat_n(b'x', len - 1));
        sql.extend_from_slice(b"\n\\.\n");
        sql.extend_from_slice(b"COPY t FROM stdin;\n");
        sql.extend(std::iter::repeat_n(b'y', len - 3));
        sql.extend_from_slice(b"\\.\nSELECT 'a row';\n\\.\nSELECT 2;\n");
    }
    Case {
        // A test binary runs once: the bytes may live to its end.
        sql: Box::leak(sql.into_boxed_slice()),
        ..case("COPY rows at psql's 8 KiB buffer", b"")
    }
}

#[test]
fn the_guard_reads_statements_where_psql_13_15_and_17_do() {
    let servers: Vec<Pg> = thread::scope(|scope| {
        let started: Vec<_> = [13, 15, 17]
            .map(|major| scope.spawn(move || Pg::start(major)))
            .into_iter()
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let edges = rows_at_the_buffer_edges();
    for pg in &servers {
        for (n, case) in CORPUS.iter().chain([&edges]).enumerate() {
            let what = format!("psql {}: {}", pg.major, case.name);
            let db = format!("case{n}");
            pg.create_db(&db);
            pg.psql(&db, "create table t (a text)");
            // psql 13 knows no BEGIN ATOMIC and sends a body up to its first `;`, which every
            // server refuses; a load stops there.
            if case.atomic && pg.major < 14 {
                let sent = psql_sent(pg, &db, case.sql, true, true);
                assert!(
                    sent.last()
                        .is_some_and(|last| last.starts_with("CREATE FUNCTION")),
                    "{what}: psql sent {sent:#?}"
                );
                let pwned = pg.psql(&db, "select count(*) from pg_class where relname = 'pwned'");
                assert_eq!(pwned, "0", "{what}: the server ran what psql hid");
                continue;
            }
            let (ours, refusals) = lexed(case.sql);
            let sent = psql_sent(pg, &db, case.sql, pg.major != 15, false);
            let theirs: Vec<Vec<Token>> = sent.iter().map(|q| tokens_of(q)).collect();
            assert!(!sent.is_empty(), "{what}: psql sent nothing");
            match case.agrees {
                true => assert_eq!(ours, theirs, "{what}: psql sent {sent:#?}"),
                false => assert_ne!(ours, theirs, "{what}: psql sent {sent:#?}"),
            }
            match case.refused {
                Some(expected) => assert!(
                    refusals.first().is_some_and(|r| r.contains(expected)),
                    "{what}: expected a refusal naming `{expected}`, got {refusals:?}"
                ),
                None => assert_eq!(refusals, Vec::<String>::new(), "{what}"),
            }
            let pwned = pg.psql(&db, "select count(*) from pg_class where relname = 'pwned'");
            assert_eq!(
                pwned == "1",
                case.pwned,
                "{what}: the server ran what psql hid"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bundles: manifests recomputed as the issue's attacker did
// ---------------------------------------------------------------------------------------

/// Entries and rows of a dump as a line-by-line reader counts them: every `-- Name:` header
/// after a `--` line, every line between a `COPY ... FROM stdin;` line and `\.`.
fn line_counts(sql: &[u8]) -> (u64, BTreeMap<String, u64>) {
    let mut entries = 0;
    let mut rows = BTreeMap::new();
    let mut table: Option<String> = None;
    let mut after_dashes = false;
    for line in sql.split_inclusive(|&b| b == b'\n') {
        if let Some(name) = &table {
            if line == b"\\.\n" {
                table = None;
            } else {
                *rows.entry(name.clone()).or_insert(0) += 1;
            }
            continue;
        }
        let text = String::from_utf8_lossy(line);
        if let Some(rest) = text.strip_prefix("COPY ") {
            if let Some(head) = rest.strip_suffix(" FROM stdin;\n") {
                let name = head.split(" (").next().unwrap().trim_end().to_string();
                rows.entry(name.clone()).or_insert(0);
                table = Some(name);
                continue;
            }
        }
        if after_dashes
            && (text.starts_with("-- Name: ") || text.starts_with("-- Data for Name: "))
            && text.contains("; Type: ")
        {
            entries += 1;
        }
        after_dashes = line == b"--\n";
    }
    (entries, rows)
}

/// Writes `sql` as the dump of the bundle (or fixtures) at `dir`, with the manifest and
/// `SHA256SUMS` made to match it, as someone who can write the bundle can.
fn plant(dir: &Path, sql: &[u8], excluded: Option<&[&str]>) {
    fs::write(dir.join("netpoint.sql"), sql).unwrap();
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let (entries, rows) = line_counts(sql);
    manifest["entries"] = entries.into();
    manifest["rows"] = serde_json::to_value(rows).unwrap();
    if manifest.get("sql_bytes").is_some() {
        manifest["sql_bytes"] = (sql.len() as u64).into();
    }
    if let Some(excluded) = excluded {
        manifest["excluded_table_data"] = serde_json::to_value(excluded).unwrap();
    }
    fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    rewrite_sums(dir, "netpoint.sql");
    rewrite_sums(dir, "manifest.json");
}

/// A copy of the bundle (or fixtures) at `from`, at `to`, holding `sql` as its dump.
fn planted_copy(from: &Path, to: &Path, sql: &[u8]) -> PathBuf {
    let _ = fs::remove_dir_all(to);
    copy_tree(from, to);
    plant(to, sql, None);
    to.to_path_buf()
}

// ---------------------------------------------------------------------------------------
// pg_dump 13, 15 and 17
// ---------------------------------------------------------------------------------------

/// `pg_dump` of `major` (the server's own) run in the server's container.
fn container_dump(pg: &Pg, db: &str, flags: &[&str]) -> Vec<u8> {
    let out = Command::new("docker")
        .args([
            "exec",
            pg.container_id(),
            "pg_dump",
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .args(flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump {} {db}: {}",
        pg.major,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn dumps_by_pg_dump_13_15_and_17_of_our_schemas_pass_the_guard() {
    let every_object = workspace_root().join("tests/it/sql/every_object.sql");
    let netbox = Command::new("python3")
        .arg(workspace_root().join("scripts/netbox_shape.py"))
        .arg("0.002")
        .output()
        .unwrap();
    assert!(netbox.status.success());
    let dir = tempfile::tempdir().unwrap();
    let netbox_sql = dir.path().join("netbox.sql");
    fs::write(&netbox_sql, &netbox.stdout).unwrap();
    for major in [13, 15, 17] {
        let pg = Pg::start(major);
        pg.load_fixture("netpoint");
        pg.psql_file("netpoint", &every_object);
        pg.create_db("netbox");
        pg.psql_file("netbox", &netbox_sql);
        // The export, with the flags it uses, by pg_dump of the server's major (the loads use
        // any psql that fits: psql 13.16 of the image is older than `\restrict`).
        let bundle = dir.path().join(format!("bundle{major}"));
        run(xtask(&[
            "clone-prod",
            "--source",
            &pg.url("netpoint"),
            "--out",
            s(&bundle),
            "--pg-tools",
            "docker",
        ]))
        .ok();
        import_bundle(&bundle, &pg.url("from_export"), &[]).ok();
        // Plain dumps, with owners and without, of both schemas.
        for (db, flags) in [
            ("netpoint", &[][..]),
            ("netbox", &[][..]),
            ("netbox", &["--no-owner", "--no-privileges"][..]),
        ] {
            let what = format!("pg_dump {major} {flags:?} {db}");
            let sql = container_dump(&pg, db, flags);
            let copy = dir.path().join(format!("plain{major}"));
            let _ = fs::remove_dir_all(&copy);
            copy_tree(&bundle, &copy);
            plant(&copy, &sql, Some(&[]));
            let target = pg.url(&format!("plain_{db}"));
            let import = import_bundle(&copy, &target, &[]);
            assert!(import.status.success(), "{what}:\n{}", import.output());
        }
        assert_eq!(
            pg.row_counts_fast("plain_netbox"),
            pg.row_counts_fast("netbox")
        );
    }
}

// ---------------------------------------------------------------------------------------
// The five vectors of issue 32
// ---------------------------------------------------------------------------------------

/// What the vectors would change: another database and the target dropped, the loading
/// role's and the target database's settings.
const PAYLOAD: &str =
    "DROP DATABASE IF EXISTS victim WITH (FORCE); ALTER ROLE postgres SET work_mem = 7777; \
    ALTER DATABASE netpoint SET work_mem = 7777; DROP DATABASE IF EXISTS netpoint WITH (FORCE)";

fn insert_after(sql: &[u8], anchor: &str, text: &[u8]) -> Vec<u8> {
    let at = sql
        .windows(anchor.len())
        .position(|w| w == anchor.as_bytes())
        .unwrap_or_else(|| panic!("`{anchor}` not in the dump"))
        + anchor.len();
    [&sql[..at], text, &sql[at..]].concat()
}

fn replace_once(sql: &[u8], from: &str, to: &[u8]) -> Vec<u8> {
    let at = sql
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("`{from}` not in the dump"));
    [&sql[..at], to, &sql[at + from.len()..]].concat()
}

/// The five vectors planted in `sql` (a bundle's or the fixtures' dump), each with the part
/// of the guard's message that names it.
fn vectors(sql: &[u8]) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let payload = PAYLOAD.replace("; ", ";\n") + ";\n";
    let first_entry_statement =
        "CREATE COLLATION public.natural_sort (provider = icu, locale = 'und-u-kn-true');\n";
    // The rows of a table with their lines ended by `\r\n`, as the server then expects of
    // the `\.` that ends them; after that `\.`, psql reads SQL, a line reader more rows.
    let rows_then_sql = {
        let copy = "COPY public.dcim_site ";
        let at = sql
            .windows(copy.len())
            .position(|w| w == copy.as_bytes())
            .unwrap();
        let rows = at + sql[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
        let end = rows + sql[rows..].windows(3).position(|w| w == b"\\.\n").unwrap();
        let crlf: Vec<u8> = sql[rows..end]
            .iter()
            .flat_map(|&b| match b {
                b'\n' => vec![b'\r', b'\n'],
                b => vec![b],
            })
            .collect();
        [
            &sql[..rows],
            &crlf,
            b"\\.\r\nCOMMIT;\n",
            payload.as_bytes(),
            &sql[end..],
        ]
        .concat()
    };
    let string_with_copy = insert_after(
        sql,
        "COMMENT ON TABLE public.dcim_site IS ",
        format!(
            "'a site';\nCOMMENT ON TABLE public.dcim_site IS 'x\nCOPY public.dcim_site (id) FROM stdin;\n';\n{payload}\\.\nCOMMENT ON TABLE public.dcim_site IS "
        )
        .as_bytes(),
    );
    let standard_strings_off = insert_after(
        &replace_once(
            sql,
            "SET standard_conforming_strings = on;",
            b"SET standard_conforming_strings = off;",
        ),
        first_entry_statement,
        format!("SELECT '\\'' ; {PAYLOAD} ; --';\n").as_bytes(),
    );
    let sjis = insert_after(
        &replace_once(
            sql,
            "SET client_encoding = 'UTF8';",
            b"SET client_encoding = 'SJIS';",
        ),
        first_entry_statement,
        &[
            &b"SELECT E'\x95\\' ; "[..],
            PAYLOAD.as_bytes(),
            b" ; --';\n",
        ]
        .concat(),
    );
    let do_block = {
        let table = "CREATE TABLE public.dcim_site (";
        let at = sql
            .windows(table.len())
            .position(|w| w == table.as_bytes())
            .unwrap();
        let end = at + sql[at..].windows(2).position(|w| w == b";\n").unwrap() + 2;
        [
            &sql[..end],
            b"DO $$ BEGIN EXECUTE 'ALTER ROLE postgres SET work_mem = 7777'; EXECUTE 'ALTER DATABASE netpoint SET work_mem = 7777'; END $$;\n",
            &sql[end..],
        ]
        .concat()
    };
    vec![
        (
            "rows ended by \\. and a carriage return, SQL after them",
            rows_then_sql,
            "ended by `\\.` and a carriage return",
        ),
        (
            "a string holding a COPY line, SQL after it",
            string_with_copy,
            "reads as `COPY ... FROM stdin;` inside a statement",
        ),
        (
            "standard_conforming_strings off, then a backslash before a quote",
            standard_strings_off,
            "standard_conforming_strings = on",
        ),
        (
            "client_encoding SJIS, then a character ending in a backslash",
            sjis,
            "not an encoding a PostgreSQL server has",
        ),
        ("a DO block in a table's entry", do_block, "`DO $$"),
    ]
}

/// Signs the bundle's `SHA256SUMS` with `key` as `ssh-keygen -Y sign` does by hand.
fn sign_by_hand(bundle: &Path, key: &Path) {
    let _ = fs::remove_file(bundle.join("SHA256SUMS.sig"));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "netpoint-bundle", "-f"])
        .arg(key)
        .arg(bundle.join("SHA256SUMS"))
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen (openssh-client)");
    assert!(status.success(), "ssh-keygen -Y sign");
}

#[test]
fn the_five_vectors_of_issue_32_are_refused_with_nothing_changed() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    pg.load_fixture("netpoint");
    pg.create_db("victim");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--out",
        s(&bundle),
    ]))
    .ok();
    let target = pg.url("netpoint");
    let media = dir.path().join("media");
    let before = pg.fingerprint("netpoint");
    let exported = fs::read(bundle.join("netpoint.sql")).unwrap();
    // A signer the importer trusts does not make the SQL trusted: the guard reads it all the same.
    let key = keygen(dir.path(), "ci", "");
    let allowed = signers(
        dir.path(),
        "allowed_signers",
        &[format!("ci@netpoint {}", public_key(&key))],
    );
    for (what, sql, message) in vectors(&exported) {
        for (jobs, signed) in [("1", false), ("2", false), ("1", true), ("2", true)] {
            let copy = planted_copy(&bundle, &dir.path().join("planted"), &sql);
            let import = match signed {
                false => import_bundle(&copy, &target, &["--jobs", jobs]),
                true => {
                    sign_by_hand(&copy, &key);
                    run(xtask(&[
                        "clone-prod",
                        "--bundle",
                        s(&copy),
                        "--allowed-signers",
                        s(&allowed),
                        "--target",
                        &target,
                        "--yes",
                        "--jobs",
                        jobs,
                    ]))
                }
            };
            let trust = match signed {
                true => "signed by an allowed key",
                false => "--trust-unsigned",
            };
            let what = format!("bundle {trust}, --jobs {jobs}: {what}");
            assert!(
                !import.status.success(),
                "{what}: imported\n{}",
                import.output()
            );
            assert!(
                import.stderr.contains(message),
                "{what}:\n{}",
                import.output()
            );
            assert!(
                import.stderr.contains("nothing was changed"),
                "{what}:\n{}",
                import.output()
            );
            pg.assert_unchanged("netpoint", &before, &what);
        }
    }
    let committed = fs::read(fixtures().join("netpoint.sql")).unwrap();
    for (what, sql, message) in vectors(&committed) {
        let copy = planted_copy(&fixtures(), &dir.path().join("fixtures"), &sql);
        let seed = run(xtask(&[
            "seed-dev",
            "--fixtures",
            s(&copy),
            "--target",
            &target,
            "--target-media",
            s(&media),
            "--yes",
        ]));
        let what = format!("fixtures: {what}");
        assert!(!seed.status.success(), "{what}: seeded\n{}", seed.output());
        assert!(seed.stderr.contains(message), "{what}:\n{}", seed.output());
        pg.assert_unchanged("netpoint", &before, &what);
        assert!(!media.exists(), "{what}: media were written");
    }
    // The bundle and the fixtures as written still load.
    import_bundle(&bundle, &target, &[]).ok();
    run(xtask(&[
        "seed-dev",
        "--fixtures",
        s(&fixtures()),
        "--target",
        &target,
        "--target-media",
        s(&media),
        "--yes",
    ]))
    .ok();
    assert!(pg.has_db("victim"));
}
