//! The subset's media: the files its rows name in their file columns (the rules' `files`),
//! read in the subset's snapshot, as paths relative to the media root.

use std::collections::BTreeSet;

use super::{
    closure::resolve,
    keys::{array, Key, BATCH},
    rules::Rules,
    Subset,
};

impl Subset {
    /// The files the included rows name, sorted, each once; a rules file's column that the
    /// source lacks is refused, the preset's passed over.
    pub fn media_files(&mut self, rules: &Rules) -> anyhow::Result<Vec<String>> {
        let mut columns = Vec::new();
        for entry in &rules.files {
            if let Some(found) = resolve(&self.graph, &entry.name, &entry.origin, true)? {
                columns.push(found);
            }
        }
        let mut files = BTreeSet::new();
        for (t, column) in columns {
            let table = &self.graph.tables[t];
            let rows = &self.closure.rows[t];
            let col = &table.column(&column).expect("resolved").quoted;
            let select = |filter: &str| {
                format!(
                    "select coalesce(jsonb_agg(distinct {col}::text), '[]') from {} where {col} <> ''{filter};",
                    table.quoted
                )
            };
            let mut queries = Vec::new();
            match (rows.whole && !rows.derived, table.id()) {
                (true, _) => queries.push(select("")),
                (false, Some(id)) => {
                    let ids: Vec<Key> = rows.ids.iter().cloned().collect();
                    for chunk in ids.chunks(BATCH) {
                        queries.push(select(&format!(
                            " and {} = any({})",
                            id.quoted,
                            array(chunk, &id.sql_type)
                        )));
                    }
                }
                (false, None) => {}
            }
            for query in queries {
                let named: Vec<String> = self.session.json(&query)?;
                files.extend(named);
            }
        }
        Ok(files.into_iter().collect())
    }
}
