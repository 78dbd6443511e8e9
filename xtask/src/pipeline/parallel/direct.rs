//! The parallel direct clone: schema, data from one snapshot on several sessions, then
//! indexes and constraints side by side.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    process::Child,
    sync::{atomic::Ordering, mpsc, Mutex},
};

use indicatif::ProgressBar;

use crate::{
    context::Context,
    pg::DbUrl,
    pipeline::budget::{jobs_within_limits, Sessions},
    pipeline::{dump, leak_scan, load, scrub, scrub::Action, snapshot::Snapshot},
    plain::post_data::post_jobs,
    term,
};

use super::{
    file::phase_done,
    schedule::{feed_data, run_post_data, Event, Failure, PostData, Stoppable},
    straight::{balance, relations_to_copy, Relation, Straight, STRAIGHT_MIN},
};

/// What the parallel direct clone is given.
pub struct DirectClone<'a> {
    pub source: &'a DbUrl,
    pub patterns: &'a [String],
    pub excluded: &'a [(String, i64)],
    pub drop_settings: Vec<&'static str>,
    pub rules: &'a [scrub::Rule],
    pub bar: &'a ProgressBar,
    /// The load replaces an existing database (see [`spawn_flush`]).
    pub replaces: bool,
    /// The source database's encoding, which the temporary database was created with.
    pub encoding: &'a str,
    /// The leak scan, done on the rows as they pass.
    pub scan: Option<&'a leak_scan::Scanner>,
}

/// One piece of a direct clone's data, taken from a queue by the data sessions.
pub enum DataPiece {
    /// A `pg_dump --data-only` of a group of relations, normalised, scrubbed and marked on
    /// its way into its psql.
    Dump {
        dump: Child,
        psql: Child,
    },
    Straight(Box<Straight>),
}

impl DataPiece {
    pub fn run(
        self,
        clone: &DirectClone<'_>,
        temp: &DbUrl,
        failure: &Failure,
        tx: &mpsc::Sender<Event>,
        counts: &Mutex<BTreeMap<String, u64>>,
    ) -> anyhow::Result<()> {
        match self {
            DataPiece::Dump { dump, psql } => {
                let (_, scrubbed) = dump::pump_dump(
                    dump,
                    clone.source,
                    clone.drop_settings.clone(),
                    clone.rules,
                    clone.scan,
                    true,
                    |reader| {
                        let mut reader = Stoppable {
                            inner: reader,
                            failure,
                        };
                        feed_data(temp, psql, &mut reader, clone.bar, tx)
                    },
                )?;
                let mut counts = counts.lock().unwrap();
                for (rule, n) in scrubbed {
                    *counts.entry(rule).or_default() += n;
                }
            }
            DataPiece::Straight(mut straight) => {
                straight.run(clone.source, temp, failure, clone.scan)?;
                clone.bar.inc(straight.bytes);
                let _ = tx.send(Event::Loaded(straight.table));
            }
        }
        Ok(())
    }
}

impl DirectClone<'_> {
    /// Copies the source into the empty database `temp` on `cx.jobs` sessions: the schema,
    /// then table data from one shared snapshot, then indexes and constraints side by side.
    /// Large tables go [`Straight`]; the rest, and every scrubbed table, in balanced groups,
    /// each a `pg_dump --data-only` streamed through xtask into its own psql. The sessions
    /// take the pieces largest first. Returns `None`, having changed nothing, when `cx.jobs` is
    /// below 2 or the source needs the single stream.
    pub fn run(&self, cx: &Context, temp: &DbUrl) -> anyhow::Result<Option<BTreeMap<String, u64>>> {
        if cx.jobs < 2 {
            return Ok(None);
        }
        let relations = match relations_to_copy(cx, self.source, self.excluded)? {
            Ok(relations) => relations,
            Err(why) => {
                term::detail(format!("copying in one stream: {why}"));
                return Ok(None);
            }
        };
        // At most on the source: the snapshot holder, a pg_dump per group (up to one per job)
        // and a straight copy per job; on the target: a psql per group, a straight copy per
        // job, a post-data session per job and the checkpoint session.
        let sessions = jobs_within_limits(
            cx,
            cx.jobs,
            &[
                Sessions {
                    url: self.source,
                    per_job: 2,
                    fixed: 1,
                },
                Sessions {
                    url: temp,
                    per_job: 3,
                    fixed: 1,
                },
            ],
        );
        if sessions < 2 {
            return Ok(None);
        }
        let mut snapshot = match Snapshot::export(cx, self.source) {
            Ok(snapshot) => snapshot,
            Err(err) => {
                term::detail(format!("copying in one stream: {err:#}"));
                return Ok(None);
            }
        };
        // A table whose rows the scrub deletes is not read: its rows are counted in the
        // snapshot, for the report, and it arrives empty (with its sequence, as below).
        let mut relations = relations;
        let mut deleted = BTreeMap::<String, u64>::new();
        let mut rows_left_out = Vec::new();
        for relation in relations.iter_mut().filter(|r| r.has_data) {
            let Some(rule) = delete_rule(self.rules, relation) else {
                continue;
            };
            deleted.insert(
                rule.describe(),
                snapshot.count(self.source, &relation.pattern)?,
            );
            rows_left_out.push(relation.pattern.clone());
            relation.has_data = false;
            relation.bytes = 0;
        }
        let sizes: HashMap<String, u64> = relations
            .iter()
            .map(|r| (r.dumped_as.clone(), r.bytes))
            .collect();
        let loading: HashSet<String> = relations
            .iter()
            .filter(|r| r.has_data)
            .map(|r| r.dumped_as.clone())
            .collect();
        let (straight, mut rest): (Vec<Relation>, Vec<Relation>) =
            relations.into_iter().partition(|r| {
                r.has_data
                    && r.bytes >= STRAIGHT_MIN
                    && !r.columns.is_empty()
                    && !self.rules.iter().any(|rule| rule.table == r.name)
            });
        // pg_dump sets an identity sequence only along with its table: the straight tables
        // stay in the dumps, without their rows.
        let mut patterns = self.patterns.to_vec();
        patterns.extend(rows_left_out);
        for relation in &straight {
            patterns.push(relation.pattern.clone());
            rest.push(Relation {
                bytes: 0,
                has_data: false,
                ..relation.clone()
            });
        }
        let rest_bytes: u64 = rest.iter().map(|r| r.bytes).sum();
        let groups = balance(
            rest,
            sessions.min((rest_bytes / STRAIGHT_MIN).max(1) as usize),
        );
        let snap = format!("--snapshot={}", snapshot.id);
        let section = |name: &str| -> anyhow::Result<Child> {
            dump::spawn_dump(
                cx,
                self.source,
                &[],
                &[snap.clone(), format!("--section={name}")],
            )
        };
        let post = section("post-data")?;
        let pre = section("pre-data")?;
        let mut dumps = Vec::new();
        for group in &groups {
            let mut args = vec![snap.clone(), "--data-only".to_string()];
            for relation in group {
                args.push(format!("--table={}", relation.pattern));
            }
            let dump = dump::spawn_dump(cx, self.source, &patterns, &args)?;
            dumps.push((group.iter().map(|r| r.bytes).sum::<u64>(), dump));
        }
        let source = self.source.clone();
        let drop_settings = self.drop_settings.clone();
        let post_text = std::thread::spawn(move || {
            dump::pump_dump(post, &source, drop_settings, &[], None, false, |reader| {
                let mut text = String::new();
                reader.read_to_string(&mut text)?;
                Ok(text)
            })
        });

        let started = std::time::Instant::now();
        self.bar.set_message("schema");
        let psql = load::spawn_psql_load(cx, temp)?;
        dump::pump_dump(
            pre,
            self.source,
            self.drop_settings.clone(),
            &[],
            None,
            false,
            |reader| load::feed_psql(temp, psql, reader, &|n| self.bar.inc(n)),
        )?;

        phase_done("schema", &started);
        let text = post_text
            .join()
            .map_err(|_| anyhow::anyhow!("reading the post-data dump failed"))??
            .0;
        let (header, jobs) = post_jobs(&text, &sizes);

        self.bar.set_message("data");
        let mut loads = Vec::new();
        for (bytes, dump) in dumps {
            let psql = load::spawn_psql_load(cx, temp)?;
            loads.push((bytes, DataPiece::Dump { dump, psql }));
        }
        for relation in &straight {
            let straight =
                Straight::new(cx, self.source, self.encoding, temp, &snapshot.id, relation)?;
            loads.push((relation.bytes, DataPiece::Straight(Box::new(straight))));
        }
        loads.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        let streams = sessions.min(loads.len());
        let queue = Mutex::new(
            loads
                .into_iter()
                .map(|(_, load)| load)
                .collect::<VecDeque<_>>(),
        );
        let post = PostData {
            header,
            jobs,
            loading,
            streams,
            flush: self.replaces,
        };
        let failure = Failure::default();
        let counts = Mutex::new(deleted);
        let (tx, rx) = mpsc::channel();
        let post_result = std::thread::scope(|scope| {
            for _ in 0..streams {
                let (failure, counts, queue, tx) = (&failure, &counts, &queue, tx.clone());
                scope.spawn(move || {
                    while !failure.failed.load(Ordering::SeqCst) {
                        let Some(load) = queue.lock().unwrap().pop_front() else {
                            break;
                        };
                        if let Err(err) = load.run(self, temp, failure, &tx, counts) {
                            failure.record(err);
                        }
                    }
                    let _ = tx.send(Event::StreamEnded);
                });
            }
            let result = run_post_data(cx, temp, post, sessions, (tx, rx), &failure);
            if let Err(err) = &result {
                failure.record(anyhow::anyhow!("{err:#}"));
            }
            result
        });
        drop(snapshot);
        failure.into_result()?;
        post_result?;
        phase_done("data, indexes and constraints", &started);
        Ok(Some(counts.into_inner().unwrap()))
    }
}

/// The `delete-rows` rule of a relation, if it has one.
fn delete_rule<'r>(rules: &'r [scrub::Rule], relation: &Relation) -> Option<&'r scrub::Rule> {
    rules
        .iter()
        .find(|rule| rule.table == relation.name && matches!(rule.action, Action::DeleteRows))
}
