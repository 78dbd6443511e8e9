//! The source's graph: its tables with their primary keys and columns, every foreign key,
//! and the generic foreign keys (a content type and an object id) Django's naming reveals
//! or the rules declare, read in one catalog query plus the content types.

use std::collections::HashMap;

use anyhow::bail;
use serde::Deserialize;

use super::{rules::Rules, session::Session};

#[derive(Clone, Debug, Deserialize)]
pub struct Column {
    pub name: String,
    /// `quote_ident(name)`, as pg_dump writes it.
    pub quoted: String,
    /// `format_type`: `bigint`, `character varying(40)`, ...
    #[serde(rename = "type")]
    pub sql_type: String,
    /// One of PostgreSQL's integer types.
    pub int: bool,
    pub nullable: bool,
    /// A generated column, which pg_dump leaves out of `COPY`.
    pub generated: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// `schema.name`, each part quoted as needed.
    pub quoted: String,
    /// The primary key's columns, in key order (empty without one).
    pub pk: Vec<String>,
    pub columns: Vec<Column>,
}

impl Table {
    /// The table as rules and output name it: `name` in `public`, `schema.name` elsewhere.
    pub fn key(&self) -> String {
        match self.schema.as_str() {
            "public" => self.name.clone(),
            _ => format!("{}.{}", self.schema, self.name),
        }
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The single-column primary key the subset's id sets are kept by.
    pub fn id(&self) -> Option<&Column> {
        match self.pk.as_slice() {
            [one] => self.column(one),
            _ => None,
        }
    }
}

/// A foreign key: `child (columns)` references `parent (refs)`.
#[derive(Clone, Debug, Deserialize)]
pub struct Fk {
    pub child: usize,
    pub columns: Vec<String>,
    pub parent: usize,
    pub refs: Vec<String>,
    /// Checked when the transaction commits, where a load asks for that.
    #[serde(default)]
    pub deferrable: bool,
}

/// A generic foreign key: `child.type_column` holds a content type, `child.id_column` the
/// id of a row of the table it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generic {
    pub child: usize,
    pub type_column: String,
    pub id_column: String,
    /// The id is stored as text (`django_admin_log.object_id`): compared as text.
    pub text_ids: bool,
}

pub struct Graph {
    pub tables: Vec<Table>,
    pub fks: Vec<Fk>,
    pub generics: Vec<Generic>,
    /// Content type id → the table it names (content types of proxy models or removed
    /// apps name no table and are left out).
    pub content_types: HashMap<i64, usize>,
    by_key: HashMap<String, usize>,
}

const CATALOG: &str = "\
with t as (
  select c.oid, n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.relkind in ('r', 'p') and not c.relispartition
    and n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%'
    and not exists (select from pg_depend d where d.classid = 'pg_class'::regclass
                    and d.objid = c.oid and d.deptype = 'e')
), numbered as (select oid, nspname, relname, row_number() over (order by nspname, relname) - 1 as i from t)
select jsonb_build_object(
  'tables', coalesce((select jsonb_agg(jsonb_build_object(
      'schema', x.nspname, 'name', x.relname,
      'quoted', quote_ident(x.nspname) || '.' || quote_ident(x.relname),
      'pk', coalesce((select jsonb_agg(a.attname order by k.ord)
             from pg_index i, unnest(i.indkey) with ordinality k(attnum, ord), pg_attribute a
             where i.indrelid = x.oid and i.indisprimary and a.attrelid = x.oid and a.attnum = k.attnum), '[]'),
      'columns', (select jsonb_agg(jsonb_build_object('name', a.attname, 'quoted', quote_ident(a.attname),
             'type', format_type(a.atttypid, a.atttypmod),
             'int', a.atttypid in ('int2'::regtype, 'int4'::regtype, 'int8'::regtype),
             'nullable', not a.attnotnull, 'generated', a.attgenerated <> '') order by a.attnum)
             from pg_attribute a where a.attrelid = x.oid and a.attnum > 0 and not a.attisdropped)
    ) order by x.i) from numbered x), '[]'),
  'fks', coalesce((select jsonb_agg(jsonb_build_object(
      'child', ch.i, 'parent', pa.i,
      'columns', (select jsonb_agg(a.attname order by k.ord) from unnest(con.conkey) with ordinality k(attnum, ord)
                  join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum),
      'refs', (select jsonb_agg(a.attname order by k.ord) from unnest(con.confkey) with ordinality k(attnum, ord)
               join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum),
      'deferrable', con.condeferrable
    ) order by ch.i, con.conname)
    from pg_constraint con join numbered ch on ch.oid = con.conrelid join numbered pa on pa.oid = con.confrelid
    where con.contype = 'f'), '[]'))";

#[derive(Deserialize)]
struct Catalog {
    tables: Vec<Table>,
    fks: Vec<Fk>,
}

impl Graph {
    /// Reads the catalog and the content types, and finds the generic foreign keys.
    pub fn read(session: &mut Session, rules: &Rules) -> anyhow::Result<Graph> {
        let catalog: Catalog = session.json(&format!("{CATALOG};"))?;
        let mut graph = Graph::new(catalog.tables, catalog.fks);
        if let Some(ct) = graph.content_type_table() {
            let sql = format!(
                "select coalesce(jsonb_agg(jsonb_build_array(id, app_label || '_' || model)), '[]') from {};",
                graph.tables[ct].quoted
            );
            let types: Vec<(i64, String)> = session.json(&sql)?;
            graph.content_types = types
                .into_iter()
                .filter_map(|(id, table)| Some((id, graph.find(&table)?)))
                .collect();
        }
        graph.generics = generic_pairs(&graph.tables, &graph.fks, graph.content_type_table());
        for pair in &rules.pairs {
            let origin = &pair.table.origin;
            let Some(child) = graph.find(&pair.table.name) else {
                bail!(
                    "subset rules {origin}: the [[pair]] names the table `{}`, which {} does not have",
                    pair.table.name,
                    "the source"
                );
            };
            let table = &graph.tables[child];
            for column in [&pair.type_column, &pair.id_column] {
                if table.column(column).is_none() {
                    bail!(
                        "subset rules {origin}: the [[pair]] names the column `{}.{column}`, which the source does not have",
                        table.key()
                    );
                }
            }
            let generic = Generic {
                child,
                type_column: pair.type_column.clone(),
                id_column: pair.id_column.clone(),
                text_ids: !table.column(&pair.id_column).is_some_and(|c| c.int),
            };
            if !graph.generics.contains(&generic) {
                graph.generics.push(generic);
            }
        }
        Ok(graph)
    }

    pub fn new(tables: Vec<Table>, fks: Vec<Fk>) -> Graph {
        let by_key = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.key(), i))
            .collect();
        Graph {
            tables,
            fks,
            generics: Vec::new(),
            content_types: HashMap::new(),
            by_key,
        }
    }

    /// The tables in an order that puts every table after those its foreign keys that
    /// cannot be deferred point at, ties in catalog order; `None` when such keys form a
    /// cycle. A key of a table to itself is checked when its `COPY` ends, so it never
    /// orders anything.
    pub fn load_order(&self) -> Option<Vec<usize>> {
        let n = self.tables.len();
        let mut waiting = vec![0usize; n];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut edges = std::collections::HashSet::new();
        for fk in &self.fks {
            if !fk.deferrable && fk.child != fk.parent && edges.insert((fk.child, fk.parent)) {
                waiting[fk.child] += 1;
                children[fk.parent].push(fk.child);
            }
        }
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
            .filter(|&t| waiting[t] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut order = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse(t)) = ready.pop() {
            order.push(t);
            for &child in &children[t] {
                waiting[child] -= 1;
                if waiting[child] == 0 {
                    ready.push(std::cmp::Reverse(child));
                }
            }
        }
        (order.len() == n).then_some(order)
    }

    /// [`Graph::load_order`], or the catalog's order where there is none.
    pub fn load_order_or_catalog(&self) -> Vec<usize> {
        self.load_order()
            .unwrap_or_else(|| (0..self.tables.len()).collect())
    }

    /// A table named as a user would: `name` (in `public`, else in the one schema that has
    /// it) or `schema.name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        let name = name.strip_prefix("public.").unwrap_or(name);
        if let Some(&i) = self.by_key.get(name) {
            return Some(i);
        }
        let mut matches = self
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| t.name == name);
        match (matches.next(), matches.next()) {
            (Some((i, _)), None) if !name.contains('.') => Some(i),
            _ => None,
        }
    }

    fn content_type_table(&self) -> Option<usize> {
        self.find("django_content_type")
    }

    /// The content type ids that name table `t`.
    pub fn types_of(&self, t: usize) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .content_types
            .iter()
            .filter(|(_, &table)| table == t)
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// The generic foreign keys Django's naming reveals: a column referencing the content types
/// named `X_type_id` with a sibling `X_id`, or `content_type_id` with a sibling `object_id`.
pub fn generic_pairs(tables: &[Table], fks: &[Fk], content_types: Option<usize>) -> Vec<Generic> {
    let Some(ct) = content_types else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    for fk in fks.iter().filter(|fk| fk.parent == ct) {
        let [column] = fk.columns.as_slice() else {
            continue;
        };
        let sibling = match column.as_str() {
            "content_type_id" => "object_id".to_string(),
            other => match other.strip_suffix("_type_id") {
                Some(stem) if !stem.is_empty() => format!("{stem}_id"),
                _ => continue,
            },
        };
        let table = &tables[fk.child];
        let Some(id) = table.column(&sibling) else {
            continue;
        };
        pairs.push(Generic {
            child: fk.child,
            type_column: column.clone(),
            id_column: sibling,
            text_ids: !id.int,
        });
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, columns: &[(&str, bool)]) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            quoted: format!("public.{name}"),
            pk: vec!["id".into()],
            columns: std::iter::once(&("id", true))
                .chain(columns)
                .map(|&(name, int)| Column {
                    name: name.into(),
                    quoted: name.into(),
                    sql_type: if int { "bigint" } else { "text" }.into(),
                    int,
                    nullable: true,
                    generated: false,
                })
                .collect(),
        }
    }

    fn fk(child: usize, column: &str, parent: usize) -> Fk {
        Fk {
            child,
            columns: vec![column.into()],
            parent,
            refs: vec!["id".into()],
            deferrable: false,
        }
    }

    #[test]
    fn parents_load_before_children_unless_their_keys_wait_for_the_commit() {
        let tables = ["a", "b", "c"]
            .map(|n| table(n, &[("x_id", true)]))
            .to_vec();
        // c -> b -> a: loaded a, b, c.
        let graph = Graph::new(tables.clone(), vec![fk(2, "x_id", 1), fk(1, "x_id", 0)]);
        assert_eq!(graph.load_order(), Some(vec![0, 1, 2]));
        // a -> c: reversed. A key of a table to itself orders nothing.
        let graph = Graph::new(tables.clone(), vec![fk(0, "x_id", 2), fk(1, "x_id", 1)]);
        assert_eq!(graph.load_order(), Some(vec![1, 2, 0]));
        // a -> b -> a cannot be ordered, unless one of the two waits for the commit.
        let cycle = vec![fk(0, "x_id", 1), fk(1, "x_id", 0)];
        assert_eq!(Graph::new(tables.clone(), cycle.clone()).load_order(), None);
        assert_eq!(
            Graph::new(tables.clone(), cycle.clone()).load_order_or_catalog(),
            vec![0, 1, 2]
        );
        let mut deferred = cycle;
        deferred[0].deferrable = true;
        assert_eq!(
            Graph::new(tables, deferred).load_order(),
            Some(vec![0, 1, 2])
        );
    }

    #[test]
    fn pairs_come_from_the_naming() {
        let tables = vec![
            table("django_content_type", &[]),
            table(
                "ipam_ipaddress",
                &[
                    ("assigned_object_type_id", true),
                    ("assigned_object_id", true),
                ],
            ),
            table(
                "extras_taggeditem",
                &[("content_type_id", true), ("object_id", true)],
            ),
            table(
                "django_admin_log",
                &[("content_type_id", true), ("object_id", false)],
            ),
            // No sibling, a sibling under another name, and a type column that is no FK.
            table("auth_permission", &[("content_type_id", true)]),
            table("odd", &[("kind_type_id", true), ("kind_ref", true)]),
            table("loose", &[("thing_type_id", true), ("thing_id", true)]),
        ];
        let fks = vec![
            fk(1, "assigned_object_type_id", 0),
            fk(2, "content_type_id", 0),
            fk(3, "content_type_id", 0),
            fk(4, "content_type_id", 0),
            fk(5, "kind_type_id", 0),
        ];
        let pairs = generic_pairs(&tables, &fks, Some(0));
        let found: Vec<(&str, &str, &str, bool)> = pairs
            .iter()
            .map(|p| {
                (
                    tables[p.child].name.as_str(),
                    p.type_column.as_str(),
                    p.id_column.as_str(),
                    p.text_ids,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (
                    "ipam_ipaddress",
                    "assigned_object_type_id",
                    "assigned_object_id",
                    false
                ),
                ("extras_taggeditem", "content_type_id", "object_id", false),
                ("django_admin_log", "content_type_id", "object_id", true),
            ]
        );
        assert!(generic_pairs(&tables, &fks, None).is_empty());
    }

    #[test]
    fn tables_are_found_as_users_name_them() {
        let mut other = table("dcim_site", &[]);
        other.schema = "archive".into();
        let graph = Graph::new(
            vec![table("dcim_site", &[]), other, table("only", &[])],
            vec![],
        );
        assert_eq!(graph.find("dcim_site"), Some(0));
        assert_eq!(graph.find("public.dcim_site"), Some(0));
        assert_eq!(graph.find("archive.dcim_site"), Some(1));
        assert_eq!(graph.find("only"), Some(2));
        assert_eq!(graph.find("missing"), None);
    }
}
