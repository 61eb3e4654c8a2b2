//! Checks the app catalog (`apps/*/manifest.yml`) against the table in `docs/apps.md`
//! (image, digest, memory, dependencies, ports),
//! and the catalog-wide rules: at least 30 apps, no host port published twice, a
//! dependency graph of known ids without cycles, secret references that resolve, and a
//! default core whose memory limits fit in 8 GiB.
//!
//! Manifests are read as plain `serde_yaml::Value` on purpose: this test describes the
//! catalog's data, independent of the crate's own manifest types.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// The apps a fresh node installs (config `default_apps`).
const DEFAULT_CORE: [&str; 7] = [
    "tor",
    "bitcoind",
    "lnd",
    "electrs",
    "mempool-db",
    "mempool-api",
    "mempool-web",
];

/// Upper bound for the default core's summed memory limits.
const CORE_BUDGET_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// The table header `docs/apps.md` must contain, exactly.
const TABLE_HEADER: &str = "| app | image | digest | memory | depends on | ports |";

/// What the table and the rules need from one manifest.
#[derive(Debug, Clone, PartialEq)]
struct App {
    image: String,
    memory: String,
    dependencies: Vec<String>,
    ports: Vec<String>,
    secrets: BTreeSet<String>,
    /// Every `${secret:…}` reference found anywhere in the manifest, without the braces.
    secret_refs: Vec<String>,
}

/// One row of the table, cells as written.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    image: String,
    digest: String,
    memory: String,
    depends_on: String,
    ports: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn str_list(value: Option<&Value>, path: &Path, field: &str) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .unwrap_or_else(|| panic!("{}: {field}: expected strings", path.display()))
                    .to_string()
            })
            .collect(),
        Some(_) => panic!("{}: {field}: expected a list", path.display()),
    }
}

fn collect_secret_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${secret:") {
                let after = &rest[start + "${secret:".len()..];
                let end = after
                    .find('}')
                    .unwrap_or_else(|| panic!("unterminated secret reference in {s:?}"));
                out.push(after[..end].to_string());
                rest = &after[end..];
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect_secret_refs(v, out)),
        Value::Mapping(map) => map.values().for_each(|v| collect_secret_refs(v, out)),
        Value::Tagged(tagged) => collect_secret_refs(&tagged.value, out),
        _ => {}
    }
}

fn parse_manifest(path: &Path, text: &str) -> (String, App) {
    let doc: Value = serde_yaml::from_str(text)
        .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()));
    let field = |name: &str| -> String {
        doc.get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: {name}: missing or not a string", path.display()))
            .to_string()
    };
    let id = field("id");
    let container = doc
        .get("container")
        .unwrap_or_else(|| panic!("{}: container: missing", path.display()));
    let cfield = |name: &str| -> String {
        container
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "{}: container.{name}: missing or not a string",
                    path.display()
                )
            })
            .to_string()
    };
    let secrets = match doc.get("secrets") {
        Some(Value::Mapping(map)) => map
            .keys()
            .map(|k| k.as_str().expect("secret names are strings").to_string())
            .collect(),
        _ => BTreeSet::new(),
    };
    let mut secret_refs = Vec::new();
    collect_secret_refs(&doc, &mut secret_refs);
    let app = App {
        // A built image is shown as where it is built from.
        image: if container.get("build").is_some() {
            format!("built from apps/{id}/Dockerfile")
        } else {
            cfield("image")
        },
        memory: cfield("memory_limit"),
        dependencies: str_list(doc.get("dependencies"), path, "dependencies"),
        ports: str_list(container.get("ports"), path, "container.ports"),
        secrets,
        secret_refs,
    };
    (id, app)
}

fn load_catalog() -> BTreeMap<String, App> {
    let apps_dir = root().join("apps");
    let mut apps = BTreeMap::new();
    let entries = fs::read_dir(&apps_dir)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", apps_dir.display()));
    for entry in entries {
        let dir = entry.expect("readable directory entry").path();
        let path = dir.join("manifest.yml");
        if !dir.is_dir() || !path.is_file() {
            continue;
        }
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
        let (id, app) = parse_manifest(&path, &text);
        let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(
            id,
            folder,
            "{}: id must equal the folder name",
            path.display()
        );
        apps.insert(id, app);
    }
    apps
}

/// Reads the rows of the table that follows `TABLE_HEADER`, keyed by app id.
fn parse_table(markdown: &str) -> Result<BTreeMap<String, Row>, String> {
    let mut lines = markdown.lines().skip_while(|l| l.trim() != TABLE_HEADER);
    if lines.next().is_none() {
        return Err(format!(
            "docs/apps.md: no table with header `{TABLE_HEADER}`"
        ));
    }
    match lines.next() {
        Some(sep) if sep.trim_start().starts_with("|---") => {}
        other => {
            return Err(format!(
                "docs/apps.md: separator row expected, found {other:?}"
            ))
        }
    }
    let mut rows = BTreeMap::new();
    for line in lines.take_while(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let [app, image, digest, memory, depends_on, ports] = cells[..] else {
            return Err(format!("docs/apps.md: row needs 6 cells: {line}"));
        };
        let row = Row {
            image: image.to_string(),
            digest: digest.to_string(),
            memory: memory.to_string(),
            depends_on: depends_on.to_string(),
            ports: ports.to_string(),
        };
        if rows.insert(app.to_string(), row).is_some() {
            return Err(format!("docs/apps.md: app {app}: listed twice"));
        }
    }
    Ok(rows)
}

fn joined_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "–".to_string()
    } else {
        items.join(", ")
    }
}

/// The table shows an image as `NAME:TAG` and its digest apart, shortened to
/// `sha256:` and 12 hex digits and `…`; `none` for an image pinned by tag only, `–` for a
/// built one.
fn image_and_digest(image: &str) -> (String, String) {
    if image.starts_with("built from ") {
        return (image.to_string(), "–".to_string());
    }
    match image.split_once('@') {
        Some((name, digest)) => {
            let short: String = digest.chars().take("sha256:".len() + 12).collect();
            (name.to_string(), format!("{short}…"))
        }
        None => (image.to_string(), "none".to_string()),
    }
}

/// Every disagreement between manifests and table, as `app X: column: …` lines.
fn table_problems(apps: &BTreeMap<String, App>, rows: &BTreeMap<String, Row>) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, app) in apps {
        let Some(row) = rows.get(id) else {
            problems.push(format!("app {id}: app: missing row in docs/apps.md"));
            continue;
        };
        let (image, digest) = image_and_digest(&app.image);
        let expected = [
            ("image", image, &row.image),
            ("digest", digest, &row.digest),
            ("memory", app.memory.clone(), &row.memory),
            (
                "depends on",
                joined_or_dash(&app.dependencies),
                &row.depends_on,
            ),
            ("ports", joined_or_dash(&app.ports), &row.ports),
        ];
        for (column, manifest, table) in expected {
            if &manifest != table {
                problems.push(format!(
                    "app {id}: {column}: manifest says `{manifest}`, table says `{table}`"
                ));
            }
        }
    }
    for id in rows.keys().filter(|id| !apps.contains_key(*id)) {
        problems.push(format!(
            "app {id}: app: row in docs/apps.md without a manifest"
        ));
    }
    problems
}

/// Parses a memory size the way the contract describes: plain bytes, IEC (`Ki`…`Ti`,
/// `KiB`…`TiB`) or SI (`k K M G T`, `kB`…`TB`) units, fractions allowed.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: bad number"))?;
    let factor: u64 = match unit.trim() {
        "" => 1,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        "k" | "K" | "kB" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        other => return Err(format!("{text:?}: unknown unit {other:?}")),
    };
    Ok((number * factor as f64) as u64)
}

/// `(host port, protocol)` of a `host:container[/proto]` port string.
fn host_port(spec: &str) -> Result<(u16, String), String> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    if proto != "tcp" && proto != "udp" {
        return Err(format!("{spec:?}: protocol must be tcp or udp"));
    }
    let (host, container) = ports
        .split_once(':')
        .ok_or_else(|| format!("{spec:?}: expected host:container"))?;
    container
        .parse::<u16>()
        .map_err(|_| format!("{spec:?}: bad container port"))?;
    let host = host
        .parse::<u16>()
        .map_err(|_| format!("{spec:?}: bad host port"))?;
    Ok((host, proto.to_string()))
}

fn port_problems(apps: &BTreeMap<String, App>) -> Vec<String> {
    let mut owners: BTreeMap<(u16, String), &str> = BTreeMap::new();
    let mut problems = Vec::new();
    for (id, app) in apps {
        for spec in &app.ports {
            match host_port(spec) {
                Err(e) => problems.push(format!("app {id}: ports: {e}")),
                Ok(key) => {
                    if let Some(other) = owners.insert(key.clone(), id) {
                        problems.push(format!(
                            "app {id}: ports: host port {}/{} already published by {other}",
                            key.0, key.1
                        ));
                    }
                }
            }
        }
    }
    problems
}

fn graph_problems(apps: &BTreeMap<String, App>) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, app) in apps {
        for dep in &app.dependencies {
            if !apps.contains_key(dep) {
                problems.push(format!("app {id}: dependencies: unknown app {dep}"));
            }
        }
    }
    // Depth-first search with three colours; a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Grey,
        Black,
    }
    fn visit<'a>(
        id: &'a str,
        apps: &'a BTreeMap<String, App>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        problems: &mut Vec<String>,
    ) {
        match marks.get(id) {
            Some(Mark::Black) => return,
            Some(Mark::Grey) => {
                problems.push(format!("dependency cycle: {} -> {id}", path.join(" -> ")));
                return;
            }
            None => {}
        }
        marks.insert(id, Mark::Grey);
        path.push(id);
        if let Some(app) = apps.get(id) {
            for dep in &app.dependencies {
                if apps.contains_key(dep) {
                    visit(dep, apps, marks, path, problems);
                }
            }
        }
        path.pop();
        marks.insert(id, Mark::Black);
    }
    let mut marks = BTreeMap::new();
    for id in apps.keys() {
        visit(id, apps, &mut marks, &mut Vec::new(), &mut problems);
    }
    problems
}

fn secret_problems(apps: &BTreeMap<String, App>) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, app) in apps {
        for reference in &app.secret_refs {
            let (owner, name) = reference.split_once('/').unwrap_or((id, reference));
            if owner != id && !app.dependencies.iter().any(|d| d == owner) {
                problems.push(format!(
                    "app {id}: secrets: ${{secret:{reference}}} points at {owner}, which is not a dependency"
                ));
                continue;
            }
            let declared = apps.get(owner).is_some_and(|o| o.secrets.contains(name));
            if !declared {
                problems.push(format!(
                    "app {id}: secrets: ${{secret:{reference}}}: {owner} declares no secret {name}"
                ));
            }
        }
    }
    problems
}

fn assert_none(kind: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{kind}:\n{}", problems.join("\n"));
}

#[test]
fn table_in_docs_matches_every_manifest() {
    let apps = load_catalog();
    let markdown = fs::read_to_string(root().join("docs/apps.md")).expect("docs/apps.md exists");
    let rows = parse_table(&markdown).unwrap_or_else(|e| panic!("{e}"));
    assert_none(
        "docs/apps.md disagrees with apps/",
        table_problems(&apps, &rows),
    );
}

#[test]
fn catalog_has_at_least_thirty_apps() {
    let apps = load_catalog();
    assert!(apps.len() >= 30, "only {} apps in apps/", apps.len());
}

#[test]
fn no_host_port_is_published_twice() {
    assert_none("port clashes", port_problems(&load_catalog()));
}

#[test]
fn dependencies_are_known_and_acyclic() {
    assert_none("dependency graph", graph_problems(&load_catalog()));
}

#[test]
fn secret_references_resolve() {
    assert_none("secret references", secret_problems(&load_catalog()));
}

#[test]
fn default_core_fits_in_eight_gib() {
    let apps = load_catalog();
    let mut total = 0;
    for id in DEFAULT_CORE {
        let app = apps
            .get(id)
            .unwrap_or_else(|| panic!("core app {id} has no manifest"));
        total += parse_size(&app.memory).unwrap_or_else(|e| panic!("app {id}: memory: {e}"));
    }
    assert!(
        total <= CORE_BUDGET_BYTES,
        "default core needs {total} bytes, more than 8 GiB"
    );
}

// The checks above must be able to fail: feed them broken data and assert the message.

fn sample_app(image: &str, deps: &[&str], ports: &[&str]) -> App {
    App {
        image: image.to_string(),
        memory: "1GiB".to_string(),
        dependencies: deps.iter().map(|s| s.to_string()).collect(),
        ports: ports.iter().map(|s| s.to_string()).collect(),
        secrets: BTreeSet::new(),
        secret_refs: Vec::new(),
    }
}

const SAMPLE_TABLE: &str =
    "intro\n\n| app | image | digest | memory | depends on | ports |\n|---|---|---|---|---|---|\n\
| a | img/a:1 | none | 1GiB | – | 1:1/tcp |\n| b | img/b:2 | sha256:abcdef012345… | 1GiB | a | – |\n\nnotes\n";

#[test]
fn table_check_names_app_and_column_of_each_disagreement() {
    let mut apps = BTreeMap::new();
    apps.insert("a".to_string(), sample_app("img/a:1", &[], &["1:1/tcp"]));
    let pinned = format!("img/b:2@sha256:abcdef012345{}", "6".repeat(52));
    apps.insert("b".to_string(), sample_app(&pinned, &["a"], &[]));
    let rows = parse_table(SAMPLE_TABLE).expect("sample table parses");
    assert_eq!(table_problems(&apps, &rows), Vec::<String>::new());

    let cases = [
        ("| a | img/a:1 |", "| a | img/a:9 |", "app a: image:"),
        (
            "| a | img/a:1 | none |",
            "| a | img/a:1 | sha256:0… |",
            "app a: digest:",
        ),
        ("| sha256:abcdef012345… |", "| none |", "app b: digest:"),
        ("| 1GiB | a |", "| 2GiB | a |", "app b: memory:"),
        ("| 1GiB | a |", "| 1GiB | – |", "app b: depends on:"),
        ("| 1:1/tcp |", "| 1:1/udp |", "app a: ports:"),
        (
            "| b | img/b:2 | sha256:abcdef012345… | 1GiB | a | – |\n",
            "",
            "app b: app: missing row",
        ),
    ];
    for (from, to, expected) in cases {
        let broken = SAMPLE_TABLE.replacen(from, to, 1);
        let rows = parse_table(&broken).expect("broken sample still parses");
        let problems = table_problems(&apps, &rows);
        assert!(
            problems.len() == 1 && problems[0].starts_with(expected),
            "{from:?} -> {to:?}: {problems:?}"
        );
    }

    let extra = SAMPLE_TABLE.replacen(
        "\n\nnotes",
        "\n| c | img/c:3 | none | 1GiB | – | – |\n\nnotes",
        1,
    );
    let problems = table_problems(&apps, &parse_table(&extra).expect("parses"));
    assert_eq!(
        problems,
        vec!["app c: app: row in docs/apps.md without a manifest"]
    );
}

#[test]
fn rule_checks_report_clashes_cycles_unknown_ids_and_bad_secrets() {
    let mut apps = BTreeMap::new();
    apps.insert(
        "a".to_string(),
        sample_app("x", &["b"], &["80:80", "53:53/udp"]),
    );
    apps.insert(
        "b".to_string(),
        sample_app("x", &["a", "ghost"], &["80:8080/tcp"]),
    );
    apps.insert("c".to_string(), sample_app("x", &[], &["53:53/tcp"]));
    assert_eq!(
        port_problems(&apps),
        vec!["app b: ports: host port 80/tcp already published by a"]
    );
    let graph = graph_problems(&apps);
    assert!(graph.contains(&"app b: dependencies: unknown app ghost".to_string()));
    assert!(
        graph
            .iter()
            .any(|p| p.starts_with("dependency cycle: a -> b -> a")),
        "{graph:?}"
    );

    let mut owner = sample_app("x", &[], &[]);
    owner.secrets.insert("pw".to_string());
    apps.insert("c".to_string(), owner);
    let mut user = sample_app("x", &["c"], &[]);
    user.secret_refs = vec!["c/pw".into(), "c/nope".into(), "a/pw".into()];
    apps.insert("d".to_string(), user);
    let secrets = secret_problems(&apps);
    assert_eq!(secrets.len(), 2, "{secrets:?}");
    assert!(secrets[0].contains("c declares no secret nope"));
    assert!(secrets[1].contains("points at a, which is not a dependency"));
}

#[test]
fn sizes_parse_in_iec_and_si_units() {
    let cases = [
        ("512MiB", Ok(512 << 20)),
        ("2GiB", Ok(2 << 30)),
        ("1.5Gi", Ok(3 << 29)),
        ("128Mi", Ok(128 << 20)),
        ("1G", Ok(1_000_000_000)),
        ("500M", Ok(500_000_000)),
        ("4096", Ok(4096)),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_size(text), expected, "{text}");
    }
    assert!(parse_size("512m").is_err());
    assert!(parse_size("lots").is_err());
}
