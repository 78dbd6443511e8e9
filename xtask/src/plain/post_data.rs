//! The post-data part of a plain dump (indexes, constraints, triggers) as jobs: what each
//! statement locks, and which may run side by side.

use std::collections::HashMap;

use crate::plain::toc;

/// A post-data statement (index, constraint, trigger...) and what it locks.
#[derive(Debug)]
pub struct PostJob {
    pub sql: String,
    /// Jobs run stage by stage: 0 indexes and keys, 1 partition index attachments,
    /// 2 foreign keys, 3 everything else in dump order.
    pub stage: u8,
    /// Tables the statement locks; `None` when unknown, so it runs alone.
    pub tables: Option<Vec<String>>,
    /// Whether it locks its tables against every other statement (ALTER TABLE does,
    /// CREATE INDEX does not).
    pub exclusive: bool,
    /// Bytes of data behind it: the largest indexes start first.
    pub weight: u64,
}

impl PostJob {
    pub fn conflicts(&self, other: &PostJob) -> bool {
        let (Some(mine), Some(theirs)) = (&self.tables, &other.tables) else {
            return true;
        };
        (self.exclusive || other.exclusive) && mine.iter().any(|t| theirs.contains(t))
    }
}

/// Splits the post-data part of a plain dump into jobs. `script` is a header followed by
/// entries; `sizes` gives data bytes by table name as the dump writes it (`public.t`).
pub fn post_jobs(script: &str, sizes: &HashMap<String, u64>) -> (String, Vec<PostJob>) {
    let toc = toc::scan(script.as_bytes()).expect("reading memory");
    let header = script[..toc.header_end as usize].to_string();
    let jobs = toc
        .entries
        .iter()
        .map(|entry| {
            let text = &script[entry.start as usize..entry.end as usize];
            let statement = statement_of(text);
            let (stage, tables, exclusive) = match entry.kind.as_str() {
                "INDEX" => (0, after_keyword(statement, " ON ").map(|t| vec![t]), false),
                "CONSTRAINT" => (
                    0,
                    after_keyword(statement, "ALTER TABLE ").map(|t| vec![t]),
                    true,
                ),
                "INDEX ATTACH" => (1, None, true),
                "FK CONSTRAINT" => {
                    let tables = after_keyword(statement, "ALTER TABLE ")
                        .zip(after_keyword(statement, " REFERENCES "))
                        .map(|(a, b)| vec![a, b]);
                    (2, tables, true)
                }
                _ => (3, None, true),
            };
            let weight = tables
                .as_ref()
                .map(|t| t.iter().filter_map(|t| sizes.get(t)).sum())
                .unwrap_or(0);
            let mut sql: String = entry.settings.concat();
            sql.push_str(text);
            PostJob {
                sql,
                stage,
                tables,
                exclusive,
                weight,
            }
        })
        .collect();
    (header, jobs)
}

/// The entry without its comment lines.
pub fn statement_of(text: &str) -> &str {
    let mut rest = text;
    while rest.starts_with("--") || rest.starts_with('\n') {
        rest = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
    }
    rest
}

/// The (possibly schema-qualified, possibly quoted) name after `keyword`, skipping `ONLY`.
pub fn after_keyword(statement: &str, keyword: &str) -> Option<String> {
    let rest = &statement[statement.find(keyword)? + keyword.len()..];
    let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
    let mut name = String::new();
    let mut chars = rest.chars().peekable();
    loop {
        match chars.next()? {
            '"' => {
                name.push('"');
                loop {
                    let c = chars.next()?;
                    name.push(c);
                    if c == '"' {
                        if chars.peek() == Some(&'"') {
                            name.push(chars.next()?);
                        } else {
                            break;
                        }
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                name.push(c);
                while let Some(&c) = chars.peek() {
                    if !(c.is_alphanumeric() || c == '_' || c == '$') {
                        break;
                    }
                    name.push(c);
                    chars.next();
                }
            }
            _ => return None,
        }
        match chars.peek() {
            Some('.') => name.push(chars.next()?),
            _ => break,
        }
    }
    let rest: String = chars.take(1).collect();
    matches!(rest.as_str(), "" | " " | "\n" | "(" | ";").then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &str = "SET statement_timeout = 0;\n\n\
--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n\n\
SET default_tablespace = fast;\n\n\
--\n-- Name: big_name_idx; Type: INDEX; Schema: public; Owner: -\n--\n\nCREATE INDEX big_name_idx ON public.\"Big \"\"One\"\"\" USING btree (name);\n\n\n\
--\n-- Name: p_idx; Type: INDEX; Schema: public; Owner: -\n--\n\nCREATE INDEX p_idx ON ONLY public.p USING btree (id);\n\n\n\
--\n-- Name: p_1_idx; Type: INDEX ATTACH; Schema: public; Owner: -\n--\n\nALTER INDEX public.p_idx ATTACH PARTITION public.p_1_idx;\n\n\n\
--\n-- Name: t t_tr; Type: TRIGGER; Schema: public; Owner: -\n--\n\nCREATE TRIGGER t_tr AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();\n\n\n\
--\n-- Name: t t_big_fk; Type: FK CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_big_fk FOREIGN KEY (big_id) REFERENCES public.\"Big \"\"One\"\"\"(id) DEFERRABLE INITIALLY DEFERRED;\n\n\n";

    #[test]
    fn post_data_jobs_know_their_tables_and_stages() {
        let sizes = HashMap::from([("public.\"Big \"\"One\"\"\"".to_string(), 1000)]);
        let (header, jobs) = post_jobs(POST, &sizes);
        assert_eq!(header, "SET statement_timeout = 0;\n\n");
        let summary: Vec<(u8, Option<Vec<&str>>, bool, u64)> = jobs
            .iter()
            .map(|j| {
                let tables = j
                    .tables
                    .as_ref()
                    .map(|t| t.iter().map(String::as_str).collect());
                (j.stage, tables, j.exclusive, j.weight)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, Some(vec!["public.t"]), true, 0),
                (0, Some(vec!["public.\"Big \"\"One\"\"\""]), false, 1000),
                (0, Some(vec!["public.p"]), false, 0),
                (1, None, true, 0),
                (3, None, true, 0),
                (
                    2,
                    Some(vec!["public.t", "public.\"Big \"\"One\"\"\""]),
                    true,
                    1000
                ),
            ]
        );
        assert!(jobs[1]
            .sql
            .starts_with("SET default_tablespace = fast;\n--\n-- Name: big_name_idx"));
        assert!(
            jobs[0].sql.starts_with("--\n-- Name: t t_pkey"),
            "{}",
            jobs[0].sql
        );
    }

    #[test]
    fn only_lock_sharing_statements_run_together() {
        let (_, jobs) = post_jobs(POST, &HashMap::new());
        let (pkey, big_index, p_index, attach, fk) =
            (&jobs[0], &jobs[1], &jobs[2], &jobs[3], &jobs[5]);
        assert!(!big_index.conflicts(p_index), "indexes on different tables");
        assert!(
            !big_index.conflicts(big_index),
            "two indexes on one table share its lock"
        );
        assert!(pkey.conflicts(fk), "both alter public.t");
        assert!(
            big_index.conflicts(fk),
            "the key references the indexed table"
        );
        assert!(!pkey.conflicts(p_index));
        assert!(attach.conflicts(p_index), "unknown tables run alone");
    }

    #[test]
    fn names_after_keywords() {
        assert_eq!(
            after_keyword("CREATE INDEX i ON public.t USING btree (a)", " ON "),
            Some("public.t".into())
        );
        assert_eq!(
            after_keyword("ALTER TABLE ONLY \"s\"\"x\".t\n    ADD", "ALTER TABLE "),
            Some("\"s\"\"x\".t".into())
        );
        assert_eq!(
            after_keyword("REFERENCES public.t(id)", "REFERENCES "),
            Some("public.t".into())
        );
        assert_eq!(after_keyword("CREATE INDEX i ON public.t+x", " ON "), None);
        assert_eq!(after_keyword("CREATE INDEX i", " ON "), None);
        assert_eq!(
            crate::plain::copy::copy_target(b"COPY public.\"a (b\" (id) FROM stdin;\n"),
            Some("public.\"a (b\"".into())
        );
        assert_eq!(
            crate::plain::copy::copy_target(b"COPY public.t FROM stdin;\n"),
            Some("public.t".into())
        );
    }
}
