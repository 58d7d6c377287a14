//! The shape of the crate, held to docs/ARCHITECTURE.md: which folder of `src/` may use which, no file over
//! 600 lines, no function over 80. It reads the source as text: `crate::<folder>` paths outside comments are
//! the imports, and a function's length runs from its `fn` line to the brace that closes its body.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;
/// Literal tables, exempt from the function length: the OpenAPI document is JSON literals, and the error
/// table (`ProxyError::spec`, with the tests' list of one of each variant) is one match with a row per
/// variant, which splitting would only scatter.
const LITERAL_TABLES: &[&str] =
    &["src/admin/openapi/mod.rs", "src/admin/openapi/key_kinds.rs", "src/error.rs", "src/error/tests.rs"];

/// What each top-level part of `src/` may use. A part missing from the map may use nothing; `lib` and
/// `main` (the roots) may use everything.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    const BELOW_APP: &[&str] =
        &["providers", "config", "clock", "error", "auth", "metering", "upstream", "telemetry", "store"];
    BTreeMap::from([
        ("providers", &[][..]),
        ("clock", &[][..]),
        ("config", &["providers", "auth"][..]),
        ("auth", &["providers", "clock"][..]),
        ("metering", &["providers", "config", "clock", "auth"][..]),
        ("error", &["providers", "metering"][..]),
        ("telemetry", &["providers", "error", "auth"][..]),
        ("store", &["auth", "clock", "config"][..]),
        ("upstream", &["providers", "config", "error"][..]),
        ("app", BELOW_APP),
        ("proxy", &["app", "providers", "config", "clock", "error", "auth", "metering", "upstream", "telemetry"][..]),
        (
            "admin",
            &["app", "proxy", "providers", "config", "clock", "error", "auth", "metering", "telemetry", "store"][..],
        ),
        ("dashboard", &["proxy"][..]),
        ("server", &["app", "admin", "dashboard", "proxy", "config", "error", "auth", "telemetry"][..]),
    ])
}

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(&root.join("src"), &mut out);
    out.sort();
    out
}

/// `src/metering/limits/mod.rs` → `metering`; `src/app.rs` → `app`; `src/cli/…` is part of `main`.
fn part_of(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&root).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    let part = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    if part == "cli" { "main".to_owned() } else { part }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_string_lossy().into_owned()
}

/// The code of a line without its `//` comment (a `//` inside a string literal is rare enough in this crate's
/// `use` and path lines to be ignored).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

/// The parts of the crate a file's code uses. Test modules (from `#[cfg(test)]` on, and files named
/// `tests.rs`) are left out: a test may reach anything.
fn imports(text: &str) -> BTreeSet<String> {
    let mut parts = BTreeSet::new();
    for line in text.lines().take_while(|l| l.trim() != "#[cfg(test)]") {
        let code = code_of(line);
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                parts.insert(name);
            }
            rest = after;
        }
    }
    parts
}

#[test]
fn each_folder_uses_only_what_the_architecture_allows() {
    let allowed = allowed();
    let mut wrong = Vec::new();
    for path in sources() {
        let part = part_of(&path);
        if part == "lib" || part == "main" {
            continue;
        }
        let may: &[&str] = allowed.get(part.as_str()).copied().unwrap_or(&[]);
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for used in imports(&text) {
            if used != part && !may.contains(&used.as_str()) {
                wrong.push(format!("{} uses crate::{used}", relative(&path)));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against docs/ARCHITECTURE.md:\n{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).unwrap().lines().count();
            (lines > MAX_FILE_LINES).then(|| format!("{}: {lines} lines", relative(path)))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_FILE_LINES} lines:\n{}", long.join("\n"));
}

/// Whether a line starts a function item (`fn`, with any visibility and qualifiers).
fn starts_fn(line: &str) -> bool {
    let mut words = line.split_whitespace();
    for word in words.by_ref() {
        match word {
            "pub" | "async" | "const" | "unsafe" | "extern" | "\"C\"" | "default" => continue,
            w if w.starts_with("pub(") => continue,
            "fn" => return true,
            _ => return false,
        }
    }
    false
}

/// Net `{` minus `}` of a line's code, skipping string and char literals.
fn brace_balance(code: &str) -> i64 {
    let bytes = code.as_bytes();
    let (mut depth, mut i) = (0i64, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            // A char literal ('{', '\'', '\n'); a lifetime ('a) has no closing quote two or three bytes on.
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\\') && bytes.get(i + 3) == Some(&b'\'') => i += 3,
            b'{' => depth += 1,
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    depth
}

/// Every function of `text` longer than `max` lines, as (name line, length).
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        if !starts_fn(line) {
            continue;
        }
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, body_line) in lines[start..].iter().enumerate() {
            let code = code_of(body_line);
            if !opened && code.trim_end().ends_with(';') && !code.contains('{') {
                break; // a declaration without a body
            }
            depth += brace_balance(code);
            opened |= code.contains('{');
            if opened && depth <= 0 {
                let length = offset + 1;
                if length > max {
                    long.push((line.trim().to_owned(), length));
                }
                break;
            }
        }
    }
    long
}

#[test]
fn no_function_is_over_80_lines() {
    let mut long = Vec::new();
    for path in sources() {
        let rel = relative(&path);
        if LITERAL_TABLES.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (name, length) in long_functions(&text, MAX_FN_LINES) {
            long.push(format!("{rel}: {length} lines: {name}"));
        }
    }
    assert!(long.is_empty(), "functions over {MAX_FN_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_function_scanner_measures_what_it_should() {
    let text = "fn short() {\n    let c = '{';\n    let s = \"}}\";\n}\n\npub(crate) async fn f<'a>(x: &'a str) {\n    if x.is_empty() {\n        return;\n    }\n}\nfn decl(&self);\n";
    assert_eq!(long_functions(text, 4), vec![("pub(crate) async fn f<'a>(x: &'a str) {".to_owned(), 5)]);
    assert!(long_functions(text, 5).is_empty());
    assert_eq!(
        imports("use crate::a::b;\n// crate::c\nlet x = crate::d::e(); // crate::f"),
        BTreeSet::from(["a".to_owned(), "d".to_owned()])
    );
}

#[test]
fn the_allowed_uses_have_no_cycle() {
    let allowed = allowed();
    // Repeatedly take out a part that uses nothing left; a cycle leaves parts that can never go.
    let mut left: BTreeSet<&str> = allowed.keys().copied().collect();
    while let Some(&leaf) =
        left.iter().find(|part| allowed[*part].iter().all(|used| !left.contains(used) || used == *part))
    {
        left.remove(leaf);
    }
    assert!(left.is_empty(), "these parts use each other in a circle: {left:?}");
}
