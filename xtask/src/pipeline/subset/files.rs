//! The subset's media: the files its rows name in their file columns (the rules' `files`),
//! read in the subset's snapshot, as paths relative to the media root.

use std::{collections::BTreeSet, path::Path};

use super::{
    closure::resolve,
    keys::{array, Key, BATCH},
    rules::Rules,
    Subset,
};
use crate::media::{Entry, Kind};

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

/// Of a scanned media tree, the entries that hold the files `names` (and the directories on
/// their way); with the names that are no file of the tree.
pub fn media_entries(entries: Vec<Entry>, names: &[String]) -> (Vec<Entry>, Vec<String>) {
    let files: BTreeSet<&Path> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::File { .. }))
        .map(|e| e.rel.as_path())
        .collect();
    let (mut wanted, mut dirs, mut missing) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    for name in names {
        let rel = Path::new(name);
        match files.contains(rel) {
            true => {
                wanted.insert(rel.to_path_buf());
                dirs.extend(rel.ancestors().skip(1).map(Path::to_path_buf));
            }
            false => missing.push(name.clone()),
        }
    }
    let kept = entries
        .into_iter()
        .filter(|e| match e.kind {
            Kind::File { .. } => wanted.contains(&e.rel),
            Kind::Dir => dirs.contains(&e.rel),
            Kind::Symlink { .. } => false,
        })
        .collect();
    (kept, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_files_and_their_directories_are_kept() {
        let entry = |rel: &str, kind: Kind| Entry {
            rel: rel.into(),
            kind,
        };
        let file = Kind::File { size: 1 };
        let entries = vec![
            entry("a", Kind::Dir),
            entry("a/b", Kind::Dir),
            entry("a/b/x.png", file.clone()),
            entry("a/y.png", file.clone()),
            entry("c", Kind::Dir),
            entry(
                "c/link",
                Kind::Symlink {
                    target: "../a/y.png".into(),
                },
            ),
        ];
        let names = [
            "a/b/x.png".to_string(),
            "c/link".to_string(),
            "../z".to_string(),
        ];
        let (kept, missing) = media_entries(entries, &names);
        let kept: Vec<_> = kept.iter().map(|e| e.rel.to_str().unwrap()).collect();
        assert_eq!(kept, ["a", "a/b", "a/b/x.png"]);
        assert_eq!(missing, ["c/link", "../z"]);
    }
}
