//! The rules `main.rs` and CONTRIBUTING.md state about the crate, kept by a test that reads
//! `xtask/src` as code (comments and doc links do not count):
//!
//! - no cycle between sibling modules, at any level;
//! - no command module refers to another command;
//! - no engine module refers to a command or to the command line, or defines clap flags;
//! - no source file is over 600 lines outside its tests.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::{spanned::Spanned, visit::Visit};

/// The commands, one a module under the crate root.
const COMMANDS: &[&str] = &[
    "clone_prod",
    "dev_db",
    "schema_snapshot",
    "seed_dev",
    "subset_plan",
];
/// The flag groups the commands share, beside `main.rs`: the commands' own, like a command.
const COMMAND_LINE: &[&str] = &["cli"];
/// The engine the commands share, and the knowledge it is built of.
const ENGINE: &[&str] = &["pipeline", "pg", "media", "bundle", "ssh", "plain"];
/// What a run of any command carries (the shell, the client tools, the mode): it knows the
/// engine's plumbing, and like the engine no command and no flag.
const SHARED: &[&str] = &["context", "mode"];
/// What the engine and the commands stand on; it knows neither.
const PLUMBING: &[&str] = &["atomic_file", "process", "remedy", "term"];
const MAX_LINES: usize = 600;

type ModPath = Vec<String>;

/// A module path as the messages show it.
fn shown(path: &[String]) -> String {
    match path.is_empty() {
        true => "crate".to_string(),
        false => path.join("::"),
    }
}

/// Where a file's module sits: `a/b.rs` and `a/b/mod.rs` are `a::b`, `main.rs` the root.
fn module_of(file: &Path) -> ModPath {
    let mut parts: ModPath = file
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last);
    if !(stem == "mod" || (parts.is_empty() && stem == "main")) {
        parts.push(stem.to_string());
    }
    parts
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

/// A reference from code in `from` to the path `to`, as written.
struct Reference {
    from: ModPath,
    to: Vec<String>,
    line: usize,
}

/// What one file holds, read as code.
#[derive(Default)]
struct Scan {
    references: Vec<Reference>,
    /// Modules this file declares, inline or as files, and whether only tests build them.
    modules: Vec<(ModPath, bool)>,
    /// Where clap defines flags: derives and attributes, with their line.
    clap: Vec<(String, usize)>,
    /// Lines inside `#[cfg(test)]` items.
    test_lines: usize,
}

struct Visitor {
    module: ModPath,
    scan: Scan,
}

impl Visitor {
    fn reference(&mut self, to: Vec<String>, line: usize) {
        self.scan.references.push(Reference {
            from: self.module.clone(),
            to,
            line,
        });
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let line = name.ident.span().start().line;
                let mut to = prefix.clone();
                if name.ident != "self" {
                    to.push(name.ident.to_string());
                }
                self.reference(to, line);
            }
            syn::UseTree::Rename(rename) => {
                let line = rename.ident.span().start().line;
                let mut to = prefix.clone();
                if rename.ident != "self" {
                    to.push(rename.ident.to_string());
                }
                self.reference(to, line);
            }
            syn::UseTree::Glob(glob) => {
                self.reference(prefix.clone(), glob.star_token.span.start().line);
            }
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Visitor {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            _ => &[],
        };
        let test = is_cfg_test(attrs);
        if let syn::Item::Mod(module) = item {
            let mut path = self.module.clone();
            path.push(module.ident.to_string());
            self.scan.modules.push((path, test));
        }
        if test {
            let span = item.span();
            self.scan.test_lines += span.end().line + 1 - span.start().line;
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        self.module.push(module.ident.to_string());
        syn::visit::visit_item_mod(self, module);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let to = path
            .segments
            .iter()
            .map(|segment| segment.ident.to_string())
            .collect();
        self.reference(to, path.span().start().line);
        syn::visit::visit_path(self, path);
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(crate)` and `pub(super)` name modules but refer to nothing.
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        let line = attr.span().start().line;
        let path = attr.path();
        if path.is_ident("derive") {
            let _ = attr.parse_nested_meta(|meta| {
                let name = meta.path.segments.last().map(|s| s.ident.to_string());
                let from_clap = meta
                    .path
                    .segments
                    .first()
                    .is_some_and(|s| s.ident == "clap");
                if let Some(name) = name {
                    if from_clap || ["Parser", "Args", "Subcommand", "ValueEnum"].contains(&&*name)
                    {
                        self.scan.clap.push((format!("derive({name})"), line));
                    }
                }
                Ok(())
            });
        } else if ["arg", "command", "clap", "value", "group"]
            .iter()
            .any(|name| path.is_ident(name))
        {
            let name = path.get_ident().map(|i| i.to_string()).unwrap_or_default();
            self.scan.clap.push((format!("#[{name}(...)]"), line));
        }
        // Doc comments are attributes too: their text is never read as code.
    }
}

/// A file of the tree, with what its code refers to.
struct File {
    path: PathBuf,
    module: ModPath,
    lines: usize,
    scan: Scan,
}

/// Reads `files` (paths relative to `src/`, and their text) and returns every broken rule, a
/// line each.
fn check(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for (path, text) in files {
        let module = module_of(path);
        let syntax = match syn::parse_file(text) {
            Ok(syntax) => syntax,
            Err(err) => {
                problems.push(format!("{}: does not parse: {err}", path.display()));
                continue;
            }
        };
        let mut visitor = Visitor {
            module: module.clone(),
            scan: Scan::default(),
        };
        visitor.visit_file(&syntax);
        parsed.push(File {
            path: path.clone(),
            module,
            lines: text.lines().count(),
            scan: visitor.scan,
        });
    }
    // Every module, and those only tests build (with all below them).
    let mut modules: BTreeSet<ModPath> = BTreeSet::from([Vec::new()]);
    let mut test_only: Vec<ModPath> = Vec::new();
    for file in &parsed {
        modules.insert(file.module.clone());
        for (module, test) in &file.scan.modules {
            modules.insert(module.clone());
            if *test {
                test_only.push(module.clone());
            }
        }
    }
    let in_tests = |module: &[String]| test_only.iter().any(|t| module.starts_with(t));
    for module in modules.iter().filter(|m| m.len() == 1 && !in_tests(m)) {
        let name = module[0].as_str();
        if ![COMMANDS, COMMAND_LINE, SHARED, ENGINE, PLUMBING]
            .iter()
            .any(|layer| layer.contains(&name))
        {
            problems.push(format!(
                "module {name} is in no layer: add it to one of the lists at the top of tidy.rs"
            ));
        }
    }

    // Edges between siblings: parent -> (child from, child to) -> first place seen.
    let mut edges: BTreeMap<ModPath, BTreeMap<(String, String), String>> = BTreeMap::new();
    for file in parsed.iter().filter(|f| !in_tests(&f.module)) {
        let place = |line: usize| format!("{}:{line}", file.path.display());
        if file.lines - file.scan.test_lines > MAX_LINES {
            problems.push(format!(
                "{}: {} lines outside its tests, over {MAX_LINES}: split it by topic",
                file.path.display(),
                file.lines - file.scan.test_lines
            ));
        }
        let top = file.module.first().map(String::as_str).unwrap_or("");
        if ENGINE.contains(&top) || SHARED.contains(&top) {
            for (what, line) in &file.scan.clap {
                problems.push(format!(
                    "{}: the engine ({top}) defines clap flags ({what}): flags belong to the commands (cli.rs for shared ones)",
                    place(*line)
                ));
            }
        }
        for reference in &file.scan.references {
            if in_tests(&reference.from) {
                continue;
            }
            let Some(target) = resolve(&modules, &reference.from, &reference.to) else {
                continue;
            };
            let to_top = target.first().map(String::as_str).unwrap_or("");
            let from_top = reference.from.first().map(String::as_str).unwrap_or("");
            let at = place(reference.line);
            if COMMANDS.contains(&from_top) && COMMANDS.contains(&to_top) && from_top != to_top {
                problems.push(format!(
                    "{at}: command {from_top} refers to command {to_top} ({}): move what they share into the engine",
                    shown(&target)
                ));
            }
            if (ENGINE.contains(&from_top) || SHARED.contains(&from_top))
                && (COMMANDS.contains(&to_top)
                    || COMMAND_LINE.contains(&to_top)
                    || target.is_empty())
            {
                problems.push(format!(
                    "{at}: the engine ({from_top}) refers to {}: the engine knows no command and no flag, take a plain value instead",
                    shown(&target)
                ));
            }
            if PLUMBING.contains(&from_top)
                && (ENGINE.contains(&to_top)
                    || COMMANDS.contains(&to_top)
                    || COMMAND_LINE.contains(&to_top))
            {
                problems.push(format!(
                    "{at}: {from_top} is plumbing, and refers to {}: plumbing knows neither the engine nor the commands",
                    shown(&target)
                ));
            }
            let common = reference
                .from
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < reference.from.len() && common < target.len() {
                edges
                    .entry(target[..common].to_vec())
                    .or_default()
                    .entry((reference.from[common].clone(), target[common].clone()))
                    .or_insert(at);
            }
        }
    }
    for (parent, graph) in &edges {
        for cycle in cycles(graph) {
            let places: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(a, b)| format!("{a} -> {b} ({})", graph[&(a.clone(), b.clone())]))
                .collect();
            problems.push(format!(
                "a cycle between modules of {}: {}",
                shown(parent),
                places.join(", ")
            ));
        }
    }
    problems
}

/// The module a path names: `crate::`, `super::` and `self::` resolved, or a child of the
/// current module; then the longest prefix that is a module. Paths into other crates, and
/// names brought in by a `use` (counted where they were imported), give `None`.
fn resolve(modules: &BTreeSet<ModPath>, from: &[String], to: &[String]) -> Option<ModPath> {
    let mut base: ModPath;
    let mut rest = to;
    match to.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &to[1..];
        }
        Some("self") | Some("super") => {
            base = from.to_vec();
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "self" => {}
                    "super" => {
                        base.pop();
                    }
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        Some(first) => {
            let mut child = from.to_vec();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            base = from.to_vec();
        }
        None => return None,
    }
    for segment in rest {
        base.push(segment.clone());
        if !modules.contains(&base) {
            base.pop();
            break;
        }
    }
    Some(base)
}

/// The cycles of a directed graph: each strongly connected part of more than one node, as
/// one closed walk through it, in order.
fn cycles(graph: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in graph.keys() {
        next.entry(a).or_default().push(b);
    }
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::from([from]);
        let mut stack = vec![from];
        while let Some(node) = stack.pop() {
            for &n in next.get(node).into_iter().flatten() {
                if n == to {
                    return true;
                }
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        false
    };
    let mut found = Vec::new();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    for &node in next.keys() {
        if placed.contains(node) || !reaches(node, node) {
            continue;
        }
        // The shortest way back to `node`, found breadth first.
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([node]);
        let mut walk = vec![node.to_string()];
        'search: while let Some(at) = queue.pop_front() {
            for &n in next.get(at).into_iter().flatten() {
                if n == node {
                    let mut back = vec![];
                    let mut step = at;
                    while step != node {
                        back.push(step.to_string());
                        step = came_from[step];
                    }
                    back.reverse();
                    walk.extend(back);
                    break 'search;
                }
                if !came_from.contains_key(n) && n != node {
                    came_from.insert(n, at);
                    queue.push_back(n);
                }
            }
        }
        for part in next.keys() {
            if reaches(node, part) && reaches(part, node) {
                placed.insert(part);
            }
        }
        found.push(walk);
    }
    found
}

fn read_tree(src: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = walkdir::WalkDir::new(src)
        .sort_by_file_name()
        .into_iter()
        .map(|entry| entry.expect("reading xtask/src"))
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "rs"))
        .map(|entry| {
            let text = std::fs::read_to_string(entry.path()).expect("reading a source file");
            let path = entry
                .path()
                .strip_prefix(src)
                .expect("under src")
                .to_path_buf();
            (path, text)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_crate_keeps_its_stated_rules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check(&read_tree(&src));
    assert!(
        problems.is_empty(),
        "xtask/src breaks {} of its rules (CONTRIBUTING.md, \"The crate\"):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[cfg(test)]
fn tree(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|(path, text)| (PathBuf::from(path), text.to_string()))
        .collect()
}

#[test]
fn a_cycle_between_siblings_is_found_at_any_level() {
    let problems = check(&tree(&[
        ("main.rs", "mod pipeline; mod term;"),
        ("term.rs", "pub fn step() {}"),
        ("pipeline/mod.rs", "mod dump; mod parallel;"),
        ("pipeline/dump.rs", "use super::parallel::Snapshot;\nfn f() { crate::term::step(); }"),
        ("pipeline/parallel/mod.rs", "mod direct; mod straight; pub struct Snapshot;"),
        ("pipeline/parallel/direct.rs", "fn f() { super::super::dump::run(); }\nuse super::straight::Straight;"),
        ("pipeline/parallel/straight.rs", "pub struct Straight;\n// use super::direct::DirectClone;\n/// [`super::direct`]\nfn g() {}"),
    ]));
    assert_eq!(
        problems,
        ["a cycle between modules of pipeline: dump -> parallel (pipeline/dump.rs:1), parallel -> dump (pipeline/parallel/direct.rs:1)"]
    );
}

#[test]
fn commands_stay_apart_and_the_engine_knows_none() {
    let problems = check(&tree(&[
        ("main.rs", "mod cli; mod dev_db; mod seed_dev; mod pg; mod pipeline;"),
        ("cli.rs", "#[derive(clap::Args)] pub struct Guard { #[arg(long)] yes: bool }"),
        ("seed_dev.rs", "pub mod container;"),
        ("seed_dev/container.rs", "pub struct DevContainer;"),
        ("dev_db.rs", "use crate::{pg, seed_dev::container::DevContainer};"),
        ("pg.rs", "#[derive(Clone, clap::ValueEnum)]\nenum Tools { Host }"),
        ("pipeline/mod.rs", "pub mod swap;"),
        ("pipeline/swap.rs", "fn f(_: &crate::cli::Guard) {}\nconst M: &str = crate::dev_db::MARK;\n#[cfg(test)]\nmod tests { use crate::seed_dev; }"),
    ]));
    assert_eq!(
        problems,
        [
            "dev_db.rs:1: command dev_db refers to command seed_dev (seed_dev::container): move what they share into the engine",
            "pg.rs:1: the engine (pg) defines clap flags (derive(ValueEnum)): flags belong to the commands (cli.rs for shared ones)",
            "pipeline/swap.rs:1: the engine (pipeline) refers to cli: the engine knows no command and no flag, take a plain value instead",
            "pipeline/swap.rs:2: the engine (pipeline) refers to dev_db: the engine knows no command and no flag, take a plain value instead",
        ]
    );
}

#[test]
fn long_files_count_their_lines_outside_tests() {
    let body = "fn f() {}\n".repeat(MAX_LINES);
    let tests = format!("#[cfg(test)]\nmod tests {{\n{body}}}\n");
    let fits = format!("{body}{tests}");
    let over = format!("fn g() {{}}\n{fits}");
    let problems = check(&tree(&[
        ("main.rs", "mod term; mod process; #[cfg(test)] mod tests;"),
        ("term.rs", &fits),
        ("process.rs", &over),
        ("tests.rs", &body.repeat(2)),
    ]));
    assert_eq!(
        problems,
        [format!(
            "process.rs: {} lines outside its tests, over {MAX_LINES}: split it by topic",
            MAX_LINES + 1
        )]
    );
}
