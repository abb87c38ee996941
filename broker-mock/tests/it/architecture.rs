//! The module map of `broker-mock/src`, checked (docs/ARCHITECTURE.md explains it): no
//! module depends on one that depends back on it, each module uses only the layers the
//! table below allows, only the storage layer runs SQL, and each table is written by the
//! one module that owns it.
//!
//! Dependencies are read from the source: every `crate::…`, `super::…` and `self::…` path
//! (in `use` lines and in code) and every path through a child module, outside comments and
//! string literals. A new module must be given a row in [`LAYERS`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module (with everything under it) and the top-level modules it may use.
/// The crate root is exempt: it only declares modules and re-exports.
const LAYERS: &[(&str, &[&str])] = &[
    // Foundations.
    ("config", &[]),
    ("error", &[]),
    ("bucket", &["config"]),
    ("budget", &["error"]),
    ("state", &["config", "bucket", "budget"]),
    // Storage and domain: one module per table or aggregate.
    ("store", &["error", "bucket"]),
    ("db", &["store"]),
    // Flows and deliverers: the broker's side of each exchange with a peer.
    ("outbound", &["config", "error", "state", "store"]),
    ("notifier", &["error", "state", "store", "outbound"]),
    ("janitor", &["state", "store"]),
    (
        "inputs",
        &["error", "state", "store", "outbound", "notifier"],
    ),
    (
        "offers",
        &["error", "state", "store", "outbound", "notifier", "inputs"],
    ),
    (
        "intake",
        &["error", "state", "store", "outbound", "notifier"],
    ),
    // The server.
    (
        "http",
        &["error", "state", "store", "outbound", "offers", "intake"],
    ),
    ("openapi", &["http"]),
    (
        "server",
        &[
            "config", "error", "bucket", "state", "db", "http", "outbound", "notifier", "inputs",
            "janitor",
        ],
    ),
    // Beside the layers.
    ("client", &["store"]),
    ("conformance", &[]),
];

/// Which module writes each table.
const OWNERS: &[(&str, &str)] = &[
    ("users", "store::users"),
    ("groups", "store::users"),
    ("group_members", "store::users"),
    ("providers", "store::providers"),
    ("provider_keys", "store::providers"),
    ("links", "store::links"),
    ("replay", "store::replay"),
    ("used_jtis", "store::replay"),
    ("models", "store::models"),
    ("model_versions", "store::models"),
    ("credentials", "store::models"),
    ("jobs", "store::jobs"),
    ("job_events", "store::jobs"),
    ("notifications", "store::notifications"),
    ("messages", "store::messages"),
];

/// One source file: its module path (`""` for the crate root), its code without comments
/// and string literals, and its string literals.
struct Module {
    code: String,
    strings: Vec<String>,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_path(rel: &Path) -> Option<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?.strip_suffix(".rs")?.to_owned();
    match (parts.is_empty(), file.as_str()) {
        (true, "lib") => {}
        (true, "main") => return None, // the binary: its own crate
        (_, "mod") => {}
        _ => parts.push(file),
    }
    Some(parts.join("::"))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Splits Rust source into code (comments and string literals blanked) and the string
/// literals' contents.
fn split_source(src: &str) -> (String, Vec<String>) {
    let b = src.as_bytes();
    let mut code = String::with_capacity(src.len());
    let mut strings = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            i += end;
            code.push(' ');
        } else if rest.starts_with("r#") || rest.starts_with("r\"") || rest.starts_with("br") {
            // Raw string: r"…", r#"…"#, br#"…"#, …
            let start = rest.find('r').unwrap() + 1;
            let hashes = rest[start..].bytes().take_while(|c| *c == b'#').count();
            if rest.as_bytes().get(start + hashes) == Some(&b'"')
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            {
                let open = start + hashes + 1;
                let close = format!("\"{}", "#".repeat(hashes));
                let len = rest[open..].find(&close).unwrap_or(rest.len() - open);
                strings.push(rest[open..open + len].to_owned());
                i += open + len + close.len();
                code.push_str("\"\"");
            } else {
                code.push(b[i] as char);
                i += 1;
            }
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            strings.push(src[i + 1..j.min(b.len())].to_owned());
            i = j + 1;
            code.push_str("\"\"");
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\'') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let end = src[i + 2..].find('\'').map_or(b.len(), |e| i + 2 + e + 1);
                i = end;
                code.push_str("' '");
            } else if let Some(c) = src[i + 1..].chars().next()
                && src[i + 1 + c.len_utf8()..].starts_with('\'')
            {
                i += 2 + c.len_utf8();
                code.push_str("' '");
            } else {
                code.push('\'');
                i += 1;
            }
        } else {
            let c = rest.chars().next().unwrap();
            code.push(c);
            i += c.len_utf8();
        }
    }
    (code, strings)
}

/// `code` without its inline `#[cfg(test)] mod … { … }` blocks: unit tests are not part of
/// the module graph (and their `super::` is the module around them, not the file's parent).
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let Some(open) = trimmed
            .starts_with("mod ")
            .then(|| trimmed.find('{'))
            .flatten()
        else {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
            continue;
        };
        out.push_str(&rest[..at]);
        let body = &trimmed[open..];
        let mut depth = 0;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

fn load() -> BTreeMap<String, Module> {
    let root = src_dir();
    let mut files = Vec::new();
    collect(&root, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let Some(path) = module_path(file.strip_prefix(&root).unwrap()) else {
            continue;
        };
        let (code, strings) = split_source(&std::fs::read_to_string(&file).unwrap());
        out.insert(
            path,
            Module {
                code: without_test_modules(&code),
                strings,
            },
        );
    }
    out
}

fn join(base: &str, seg: &str) -> String {
    if base.is_empty() {
        seg.to_owned()
    } else {
        format!("{base}::{seg}")
    }
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_owned())
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits a `{a, b::{c, d}, e}` group body on its top-level commas.
fn split_group(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(body[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(body[start..].trim());
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The deepest known module a path reaches from `base`, following `tail` (`a::b::{c, d}`).
fn resolve(known: &BTreeSet<String>, base: &str, tail: &str, out: &mut BTreeSet<String>) {
    let mut here = base.to_owned();
    let mut rest = tail.trim();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.rfind('}').unwrap_or(group.len())];
            for item in split_group(body) {
                if item == "self" {
                    out.insert(here.clone());
                } else {
                    resolve(known, &here, item, out);
                }
            }
            return;
        }
        let seg: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        let next = join(&here, &seg);
        if seg.is_empty() || !known.contains(&next) {
            out.insert(here);
            return;
        }
        here = next;
        match rest[seg.len()..].strip_prefix("::") {
            Some(r) => rest = r,
            None => {
                out.insert(here);
                return;
            }
        }
    }
}

/// The text of a path starting at byte `at`: segments, `::` and one brace group (with
/// nested groups).
fn path_text(code: &str, at: usize) -> &str {
    let b = code.as_bytes();
    let mut i = at;
    let mut depth = 0;
    while i < b.len() {
        let c = b[i] as char;
        if depth > 0 {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return &code[at..=i];
                    }
                }
                _ => {}
            }
        } else if c == '{' && code[..i].ends_with("::") {
            depth = 1;
        } else if !(is_ident(c) || c == ':') {
            break;
        }
        i += 1;
    }
    &code[at..i]
}

/// The modules `module` depends on.
fn deps(known: &BTreeSet<String>, module: &str, code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let children: Vec<&String> = known
        .iter()
        .filter(|k| *k != module && parent(k) == module)
        .collect();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let at_word = i == 0 || !(is_ident(b[i - 1] as char) || b[i - 1] == b':');
        if !at_word || !is_ident(b[i] as char) {
            i += 1;
            continue;
        }
        let text = path_text(code, i);
        let word: String = text.chars().take_while(|c| is_ident(*c)).collect();
        if let Some(tail) = text.strip_prefix(&format!("{word}::")) {
            match word.as_str() {
                "crate" => resolve(known, "", tail, &mut out),
                "self" => resolve(known, module, tail, &mut out),
                "super" => {
                    let mut base = parent(module);
                    let mut tail = tail;
                    while let Some(t) = tail.strip_prefix("super::") {
                        base = parent(&base);
                        tail = t;
                    }
                    resolve(known, &base, tail, &mut out);
                }
                w if children.iter().any(|c| **c == join(module, w)) => {
                    resolve(known, module, text, &mut out);
                }
                _ => {}
            }
        }
        i += text.len().max(1);
    }
    out.remove(module);
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = load();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(m, src)| (m.clone(), deps(&known, m, &src.code)))
        .collect()
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Modules whose inner layout the cycle check leaves alone: the conformance runner is
/// self-contained (its `mod.rs` holds the types its parts share and re-exports them), and
/// is held only to using nothing else of the crate (see [`LAYERS`]).
const INNER_LAYOUT_UNCHECKED: &[&str] = &["conformance"];

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    // What the graph is, for whoever reads the test output (`-- --nocapture`).
    for (m, ds) in &graph {
        let name = if m.is_empty() { "(crate root)" } else { m };
        println!(
            "{name} -> {}",
            ds.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(graph.len() > 30, "read too few modules: {:?}", graph.keys());
    let checked: BTreeMap<&str, Vec<&str>> = graph
        .iter()
        .map(|(m, ds)| {
            let inner = |d: &str| INNER_LAYOUT_UNCHECKED.contains(&top(m)) && top(d) == top(m);
            (
                m.as_str(),
                ds.iter()
                    .map(String::as_str)
                    .filter(|d| !inner(d))
                    .collect(),
            )
        })
        .collect();
    // Depth-first search; an edge back into the path closes a cycle.
    fn visit<'a>(
        g: &BTreeMap<&'a str, Vec<&'a str>>,
        m: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(pos) = path.iter().position(|s| *s == m) {
            panic!("import cycle: {} -> {m}", path[pos..].join(" -> "));
        }
        path.push(m);
        for d in g.get(m).into_iter().flatten() {
            visit(g, d, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in checked.keys() {
        visit(&checked, m, &mut Vec::new(), &mut done);
    }
}

#[test]
fn each_module_uses_only_the_layers_below_it() {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (m, ds) in graph() {
        if m.is_empty() {
            continue; // the crate root declares and re-exports
        }
        let Some(allowed) = layers.get(top(&m)) else {
            wrong.push(format!("{m} has no row in LAYERS"));
            continue;
        };
        for d in ds {
            let ok = top(&d) == top(&m) || allowed.contains(&top(&d));
            if !ok {
                wrong.push(format!(
                    "{m} uses {}",
                    if d.is_empty() { "the crate root" } else { &d }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

/// The tables a piece of SQL writes and reads.
fn tables(sql: &str) -> (Vec<String>, Vec<String>) {
    let words: Vec<String> = sql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let (mut written, mut read) = (Vec::new(), Vec::new());
    for (i, w) in words.iter().enumerate() {
        let Some(next) = words.get(i + 1) else {
            break;
        };
        let before = i.checked_sub(1).map(|b| words[b].as_str());
        match w.as_str() {
            // `ON CONFLICT … DO UPDATE SET` updates the row just inserted.
            "update" if before == Some("do") => {}
            // `FROM (SELECT …)`: a subquery, whose own `FROM` names the table.
            "from" | "join" if next == "select" => {}
            "into" | "update" => written.push(next.clone()),
            "from" if before == Some("delete") => written.push(next.clone()),
            "from" | "join" => read.push(next.clone()),
            _ => {}
        }
    }
    (written, read)
}

fn is_sql(s: &str) -> bool {
    let s = s.trim_start().to_ascii_uppercase();
    ["SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WITH "]
        .iter()
        .any(|k| s.starts_with(k))
}

#[test]
fn only_the_storage_layer_runs_sql_and_each_table_has_one_writer() {
    let owners: BTreeMap<&str, &str> = OWNERS.iter().copied().collect();
    let mut wrong = Vec::new();
    let mut writes_seen = BTreeSet::new();
    for (m, src) in load() {
        for sql in src.strings.iter().filter(|s| is_sql(s)) {
            let (written, read) = tables(sql);
            if top(&m) != "store" {
                wrong.push(format!("{m} runs SQL: {}", sql.trim()));
                continue;
            }
            for t in written {
                match owners.get(t.as_str()) {
                    Some(owner) if *owner == m => {
                        writes_seen.insert(t);
                    }
                    Some(owner) => wrong.push(format!("{m} writes {t}, owned by {owner}")),
                    None => wrong.push(format!("{m} writes {t}, which has no owner in OWNERS")),
                }
            }
            for t in read {
                if !owners.contains_key(t.as_str()) {
                    wrong.push(format!("{m} reads {t}, which has no owner in OWNERS"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The check saw the writes it is about (so a change in how SQL is written cannot make
    // it pass vacuously).
    for t in ["jobs", "job_events", "users", "messages", "notifications"] {
        assert!(writes_seen.contains(t), "no write of {t} found");
    }
}

#[test]
fn the_reader_of_the_source_sees_paths_strings_and_comments_as_rust_does() {
    let (code, strings) = split_source(
        "use crate::a::{b, c::d}; // crate::x\nlet s = \"crate::y // not a comment\"; let c = '\"'; fn f<'a>() {}\n/* crate::z */ let r = r#\"UPDATE jobs\"#;",
    );
    assert!(code.contains("crate::a::{b, c::d}"));
    assert!(!code.contains("crate::x") && !code.contains("crate::y") && !code.contains("crate::z"));
    assert!(code.contains("fn f<'a>()"));
    assert_eq!(strings, ["crate::y // not a comment", "UPDATE jobs"]);
    let known: BTreeSet<String> = ["a", "a::c", "a::c::d", "e", "e::f", "g"]
        .into_iter()
        .map(String::from)
        .collect();
    let found = deps(&known, "e", &code);
    assert_eq!(
        found,
        ["a", "a::c::d"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    let found = deps(
        &known,
        "e",
        &without_test_modules(
            "fn x() { f::go(); super::g::h(); }\n#[cfg(test)]\nmod tests { use super::*; fn t() { crate::a::c(); } }",
        ),
    );
    assert_eq!(
        found,
        ["e::f", "g"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        tables("INSERT INTO jobs (a) SELECT b FROM models m JOIN users u ON x"),
        (
            vec!["jobs".to_owned()],
            vec!["models".to_owned(), "users".to_owned()]
        )
    );
    assert_eq!(
        tables("INSERT INTO links (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = excluded.a"),
        (vec!["links".to_owned()], vec![])
    );
    assert_eq!(
        tables("DELETE FROM provider_keys WHERE x"),
        (vec!["provider_keys".to_owned()], vec![])
    );
    assert_eq!(
        tables("SELECT a FROM (SELECT a FROM jobs WHERE x) WHERE y"),
        (vec![], vec!["jobs".to_owned()])
    );
}
