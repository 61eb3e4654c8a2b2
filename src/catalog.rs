//! The catalog: every app of `apps_dir`, loaded, validated and checked against each other.
//!
//! [`Catalog::load`] reads each `<apps_dir>/<id>/manifest.yml`, runs the single-app rules
//! of [`crate::manifest`], then the rules that span apps: dependencies exist, no
//! dependency cycles, no two apps publish the same host port, references to a
//! dependency's secrets name a secret it has. An app with any problem is left out of the
//! catalog, and so is every app that depends on it (each gets one problem saying so), so
//! that what remains is consistent: every dependency of a catalog app is in the catalog.
//! This module reads manifests only; it never touches the engine or the data folder.
//!
//! Over 600 lines only with its table tests; the catalog itself is about 410.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use petgraph::graphmap::DiGraphMap;

use crate::manifest::{secret_refs, AppId, AppManifest, Problem};

/// The name of an app's manifest inside its folder.
pub const MANIFEST_FILE: &str = "manifest.yml";

/// One app of the catalog with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogApp {
    pub manifest: AppManifest,
    /// The app's folder, `<apps_dir>/<id>`: build contexts resolve against it.
    pub dir: PathBuf,
    /// The manifest file, `<apps_dir>/<id>/manifest.yml`.
    pub path: PathBuf,
}

/// The apps that passed every rule, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub apps: BTreeMap<AppId, CatalogApp>,
}

impl Catalog {
    /// Loads every app folder of `apps_dir` (hidden entries and plain files are ignored)
    /// and checks single-app and cross-app rules. Returns the apps without problems and
    /// every problem found, sorted by path (a file's problems keep their order).
    pub fn load(apps_dir: &Path) -> (Catalog, Vec<Problem>) {
        let mut problems = Vec::new();
        let entries = match std::fs::read_dir(apps_dir) {
            Ok(entries) => entries,
            Err(err) => {
                let problem =
                    Problem::new(apps_dir, "apps_dir", format!("cannot read folder: {err}"));
                return (Catalog::default(), vec![problem]);
            }
        };
        let mut folders: Vec<PathBuf> = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => folders.push(entry.path()),
                Err(err) => problems.push(Problem::new(
                    apps_dir,
                    "apps_dir",
                    format!("cannot read folder: {err}"),
                )),
            }
        }
        folders.sort();

        let mut loaded = Vec::new();
        let mut present = BTreeSet::new();
        for dir in folders {
            let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if name.starts_with('.') || !dir.is_dir() {
                continue;
            }
            let id = match name.parse::<AppId>() {
                Ok(id) => id,
                Err(err) => {
                    problems.push(Problem::new(&dir, "id", format!("folder name: {err}")));
                    continue;
                }
            };
            let path = dir.join(MANIFEST_FILE);
            if !path.is_file() {
                problems.push(Problem::new(
                    &path,
                    "file",
                    "missing: every folder of the apps folder holds one app's manifest.yml",
                ));
                continue;
            }
            present.insert(id);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(err) => {
                    problems.push(Problem::new(&path, "file", format!("cannot read: {err}")));
                    continue;
                }
            };
            match AppManifest::from_yaml(&path, &text) {
                Ok(manifest) => loaded.push(CatalogApp {
                    manifest,
                    dir,
                    path,
                }),
                Err(found) => problems.extend(found),
            }
        }

        let (catalog, found) = Catalog::from_apps(loaded, &present);
        problems.extend(found);
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        (catalog, problems)
    }

    /// Checks parsed apps (single-app and cross-app rules) and keeps those without
    /// problems. `present` names apps whose manifest exists but did not parse: depending
    /// on one of them leaves the dependent out without calling the dependency unknown.
    pub fn from_apps(apps: Vec<CatalogApp>, present: &BTreeSet<AppId>) -> (Catalog, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut bad: BTreeSet<AppId> = BTreeSet::new();
        let mut all: BTreeMap<AppId, CatalogApp> = BTreeMap::new();
        for app in apps {
            let found = app.manifest.validate(&app.path, &app.dir);
            if !found.is_empty() {
                bad.insert(app.manifest.id.clone());
                problems.extend(found);
            }
            if let Some(twin) = all.get(&app.manifest.id) {
                problems.push(Problem::new(
                    &app.path,
                    "id",
                    format!(
                        "`{}` is also the id of {}",
                        app.manifest.id,
                        twin.path.display()
                    ),
                ));
                bad.insert(app.manifest.id.clone());
                continue;
            }
            all.insert(app.manifest.id.clone(), app);
        }

        // Dependencies exist.
        for (id, app) in &all {
            for (i, dep) in app.manifest.dependencies.iter().enumerate() {
                if !all.contains_key(dep) && !present.contains(dep) {
                    problems.push(Problem::new(
                        &app.path,
                        format!("dependencies[{i}]"),
                        format!("unknown app `{dep}`: no {dep}/{MANIFEST_FILE} in the apps folder"),
                    ));
                    bad.insert(id.clone());
                }
            }
        }

        // No cycles: one problem per cycle, on the app whose id sorts first.
        for component in strongly_connected(&all) {
            if component.len() < 2 {
                continue;
            }
            let start = component
                .iter()
                .next()
                .expect("a component of two or more has a first id");
            let cycle = shortest_cycle(&all, start, &component);
            let names: Vec<&str> = cycle.iter().map(AppId::as_str).collect();
            problems.push(Problem::new(
                &all[start].path,
                "dependencies",
                format!("dependency cycle: {}", names.join(" -> ")),
            ));
            bad.extend(component);
        }

        // Host ports: the first app by id keeps a port, later ones get the problem.
        let mut published = BTreeMap::new();
        for (id, app) in &all {
            for (i, port) in app.manifest.container.ports.iter().enumerate() {
                match published.get(&(port.host, port.protocol)) {
                    Some(owner) if owner != id => {
                        problems.push(Problem::new(
                            &app.path,
                            format!("container.ports[{i}]"),
                            format!(
                                "host port {}/{} is also published by `{owner}`",
                                port.host, port.protocol
                            ),
                        ));
                        bad.insert(id.clone());
                    }
                    Some(_) => {} // the same app twice: a single-app rule
                    None => {
                        published.insert((port.host, port.protocol), id.clone());
                    }
                }
            }
        }

        // A dependency's secrets exist (the dependency rule itself is single-app).
        for (id, app) in &all {
            for (field, value) in app.manifest.secret_ref_sites() {
                let Ok(refs) = secret_refs(value) else {
                    continue;
                };
                for r in refs {
                    let Some(owner) = r.app.as_ref().filter(|a| *a != id) else {
                        continue;
                    };
                    let Some(dep) = all.get(owner) else { continue };
                    if app.manifest.dependencies.contains(owner)
                        && !dep.manifest.secrets.contains_key(&r.name)
                    {
                        problems.push(Problem::new(
                            &app.path,
                            field.clone(),
                            format!(
                                "${{secret:{owner}/{}}}: `{owner}` has no secret `{}`",
                                r.name, r.name
                            ),
                        ));
                        bad.insert(id.clone());
                    }
                }
            }
        }

        // A dependency's volume exists: the dependency declares it as its own.
        for (id, app) in &all {
            for (i, volume) in app.manifest.container.volumes.iter().enumerate() {
                let Some(owner) = &volume.app else { continue };
                let Some(dep) = all.get(owner) else { continue };
                let declared = dep
                    .manifest
                    .container
                    .volumes
                    .iter()
                    .any(|v| v.is_own() && v.name == volume.name);
                if app.manifest.dependencies.contains(owner) && !declared {
                    problems.push(Problem::new(
                        &app.path,
                        format!("container.volumes[{i}]"),
                        format!("`{owner}` has no volume `{}`", volume.name),
                    ));
                    bad.insert(id.clone());
                }
            }
        }

        // Leave out dependents of left-out apps, one problem each, until nothing changes.
        let failed = |dep: &AppId, bad: &BTreeSet<AppId>| {
            bad.contains(dep) || (present.contains(dep) && !all.contains_key(dep))
        };
        loop {
            let mut newly = Vec::new();
            for (id, app) in &all {
                if bad.contains(id) {
                    continue;
                }
                if let Some((i, dep)) = app
                    .manifest
                    .dependencies
                    .iter()
                    .enumerate()
                    .find(|(_, d)| failed(d, &bad))
                {
                    newly.push(Problem::new(
                        &app.path,
                        format!("dependencies[{i}]"),
                        format!("`{dep}` has problems, so this app is left out too"),
                    ));
                    bad.insert(id.clone());
                }
            }
            if newly.is_empty() {
                break;
            }
            problems.extend(newly);
        }

        all.retain(|id, _| !bad.contains(id));
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        (Catalog { apps: all }, problems)
    }

    /// The app with this id.
    pub fn get(&self, id: &AppId) -> Option<&CatalogApp> {
        self.apps.get(id)
    }

    /// Every app, dependencies before their dependents; ties in id order.
    ///
    /// Hand-written (Kahn's algorithm over a sorted ready set) rather than petgraph's
    /// `toposort`: that one orders ties by its depth-first walk, not by id, and this order
    /// is the one app actors are spawned in at boot and walked in on a catalog reload.
    pub fn topo_order(&self) -> Vec<AppId> {
        let mut waiting: BTreeMap<&AppId, usize> = BTreeMap::new();
        for (id, app) in &self.apps {
            let deps = app
                .manifest
                .dependencies
                .iter()
                .filter(|d| self.apps.contains_key(*d))
                .count();
            waiting.insert(id, deps);
        }
        let mut ready: BTreeSet<&AppId> = waiting
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| *id)
            .collect();
        let mut order = Vec::with_capacity(self.apps.len());
        while let Some(id) = ready.pop_first() {
            order.push(id.clone());
            for dependent in self.dependents(id) {
                if let Some((key, n)) = waiting.get_key_value(&dependent).map(|(k, n)| (*k, *n)) {
                    waiting.insert(key, n - 1);
                    if n == 1 {
                        ready.insert(key);
                    }
                }
            }
        }
        order
    }

    /// The apps that list `id` among their dependencies, in id order.
    pub fn dependents(&self, id: &AppId) -> Vec<AppId> {
        self.apps
            .iter()
            .filter(|(_, app)| app.manifest.dependencies.contains(id))
            .map(|(dependent, _)| dependent.clone())
            .collect()
    }

    /// One problem for each of `ids` missing from the catalog; `path` and `field` name
    /// where the list came from (e.g. the config file and `default_apps`).
    pub fn check_listed(&self, path: &Path, field: &str, ids: &[AppId]) -> Vec<Problem> {
        ids.iter()
            .enumerate()
            .filter(|(_, id)| !self.apps.contains_key(*id))
            .map(|(i, id)| {
                Problem::new(
                    path,
                    format!("{field}[{i}]"),
                    format!("`{id}` is not an app of the catalog"),
                )
            })
            .collect()
    }
}

/// The strongly connected components of the dependency graph (petgraph's Tarjan; edges
/// to unknown apps and self-edges are ignored), each as a sorted set, in order.
fn strongly_connected(apps: &BTreeMap<AppId, CatalogApp>) -> Vec<BTreeSet<AppId>> {
    let mut graph = DiGraphMap::<&AppId, ()>::new();
    for (id, app) in apps {
        graph.add_node(id);
        for dep in app.manifest.dependencies.iter().filter(|d| *d != id) {
            if let Some((dep, _)) = apps.get_key_value(dep) {
                graph.add_edge(id, dep, ());
            }
        }
    }
    let mut out: Vec<BTreeSet<AppId>> = petgraph::algo::tarjan_scc(&graph)
        .into_iter()
        .map(|component| component.into_iter().cloned().collect())
        .collect();
    out.sort();
    out
}

/// Hand-written rather than petgraph's: no petgraph algorithm answers the shortest cycle
/// through one node, and this breadth-first walk names the same cycle on every run.
/// The shortest dependency path from `start` back to itself inside `component`,
/// e.g. `[a, b, a]`; breadth-first, neighbours in id order, so it is deterministic.
fn shortest_cycle(
    apps: &BTreeMap<AppId, CatalogApp>,
    start: &AppId,
    component: &BTreeSet<AppId>,
) -> Vec<AppId> {
    let mut parent: BTreeMap<&AppId, &AppId> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        let mut deps: Vec<&AppId> = apps[v]
            .manifest
            .dependencies
            .iter()
            .filter(|d| component.contains(*d))
            .collect();
        deps.sort();
        for w in deps {
            if w == start {
                let mut path = vec![start.clone()];
                let mut at = v;
                while at != start {
                    path.push(at.clone());
                    at = parent[at];
                }
                path[1..].reverse();
                path.push(start.clone());
                return path;
            }
            if w != v && !parent.contains_key(w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    // A component of two or more always has a cycle through each member.
    vec![start.clone(), start.clone()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes apps as `(folder, manifest text)`; `{}` in the text is replaced by the folder name.
    fn write_apps(root: &Path, apps: &[(&str, &str)]) {
        for (folder, text) in apps {
            let dir = root.join(folder);
            std::fs::create_dir_all(&dir).expect("create app folder");
            if !text.is_empty() {
                std::fs::write(dir.join(MANIFEST_FILE), text.replace("{}", folder))
                    .expect("write manifest");
            }
        }
    }

    fn app(extra: &str) -> String {
        format!("id: {{}}\nname: X\nversion: '1'\n{extra}container:\n  image: busybox\n  memory_limit: 64Mi\n")
    }

    fn deps(list: &str) -> String {
        app(&format!("dependencies: [{list}]\n"))
    }

    fn ids(list: &[&str]) -> Vec<AppId> {
        list.iter()
            .map(|id| id.parse().expect("valid id"))
            .collect()
    }

    fn load(apps: &[(&str, &str)]) -> (Catalog, Vec<String>) {
        let dir = tempfile::tempdir().expect("temp dir");
        write_apps(dir.path(), apps);
        let (catalog, problems) = Catalog::load(dir.path());
        let prefix = format!("{}/", dir.path().display());
        let lines = problems
            .iter()
            .map(|p| p.to_string().replace(&prefix, ""))
            .collect();
        (catalog, lines)
    }

    /// (name, apps as (folder, manifest), apps kept, problem lines)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a [&'a str], Vec<&'a str>);

    #[test]
    fn checks_cross_app_rules() {
        let with_port =
            |port: &str| app("").replace("  image:", &format!("  ports: [\"{port}\"]\n  image:"));
        let with_env = |deps: &str, value: &str, secrets: &str| {
            let secrets = if secrets.is_empty() {
                String::new()
            } else {
                format!("secrets: {{{secrets}}}\n")
            };
            app(&format!("dependencies: [{deps}]\n{secrets}"))
                .replace("  image:", &format!("  env: {{X: \"{value}\"}}\n  image:"))
        };
        let with_volume = |deps: &str, volume: &str| {
            app(&format!("dependencies: [{deps}]\n"))
                .replace("  image:", &format!("  volumes: [\"{volume}\"]\n  image:"))
        };
        let cases: Vec<Case> = vec![
            ("fine", vec![("a", app("")), ("b", deps("a"))], &["a", "b"], vec![]),
            (
                "missing dependency",
                vec![("a", deps("ghost"))],
                &[],
                vec!["a/manifest.yml: dependencies[0]: unknown app `ghost`: no ghost/manifest.yml in the apps folder"],
            ),
            (
                "cycle of two",
                vec![("a", deps("b")), ("b", deps("a")), ("c", app(""))],
                &["c"],
                vec!["a/manifest.yml: dependencies: dependency cycle: a -> b -> a"],
            ),
            (
                "cycle of three with a dependent",
                vec![("x", deps("y")), ("y", deps("z")), ("z", deps("x")), ("w", deps("x"))],
                &[],
                vec![
                    "w/manifest.yml: dependencies[0]: `x` has problems, so this app is left out too",
                    "x/manifest.yml: dependencies: dependency cycle: x -> y -> z -> x",
                ],
            ),
            (
                "same host port",
                vec![("a", with_port("8080:80")), ("b", with_port("8080:81")), ("c", with_port("8080:80/udp"))],
                &["a", "c"],
                vec!["b/manifest.yml: container.ports[0]: host port 8080/tcp is also published by `a`"],
            ),
            (
                "dependency's secret exists",
                vec![("a", with_env("", "x", "pw: {kind: password}")), ("b", with_env("a", "${secret:a/pw}", ""))],
                &["a", "b"],
                vec![],
            ),
            (
                "dependency's secret missing",
                vec![("a", app("")), ("b", with_env("a", "${secret:a/pw}", ""))],
                &["a"],
                vec!["b/manifest.yml: container.env.X: ${secret:a/pw}: `a` has no secret `pw`"],
            ),
            (
                "dependency's volume exists",
                vec![("a", with_volume("", "data:/data")), ("b", with_volume("a", "a/data:/a:ro"))],
                &["a", "b"],
                vec![],
            ),
            (
                "dependency's volume missing",
                vec![("a", app("")), ("b", with_volume("a", "a/nope:/a:ro"))],
                &["a"],
                vec!["b/manifest.yml: container.volumes[0]: `a` has no volume `nope`"],
            ),
            (
                "secret of a non-dependency",
                vec![("a", app("secrets: {pw: {kind: hex}}\n")), ("b", with_env("", "${secret:a/pw}", ""))],
                &["a"],
                vec!["b/manifest.yml: container.env.X: ${secret:a/pw} refers to `a`, which is not a dependency of this app"],
            ),
            (
                "broken dependency",
                vec![("a", "id: a\nnope: 1\n".to_string()), ("b", deps("a")), ("c", deps("b"))],
                &[],
                vec![
                    "a/manifest.yml: nope: line 2: unknown field `nope`, expected one of `id`, `name`, `version`, `description`, `dependencies`, `container`, `hooks`, `secrets`, `ui`, `onion`, `backup`",
                    "b/manifest.yml: dependencies[0]: `a` has problems, so this app is left out too",
                    "c/manifest.yml: dependencies[0]: `b` has problems, so this app is left out too",
                ],
            ),
            (
                "folders",
                vec![("empty", String::new()), (".hidden", String::new()), ("Bad_Name", app("")), ("ok", app(""))],
                &["ok"],
                vec![
                    "Bad_Name: id: folder name: invalid app id \"Bad_Name\": use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit",
                    "empty/manifest.yml: file: missing: every folder of the apps folder holds one app's manifest.yml",
                ],
            ),
        ];
        for (name, apps, want_apps, want) in cases {
            let apps: Vec<(&str, &str)> = apps.iter().map(|(f, t)| (*f, t.as_str())).collect();
            let (catalog, got) = load(&apps);
            assert_eq!(got, want, "{name}");
            let kept: Vec<AppId> = catalog.apps.keys().cloned().collect();
            assert_eq!(kept, ids(want_apps), "{name}");
        }
    }

    #[test]
    fn orders_dependencies_first() {
        let (catalog, problems) = load(&[
            ("tor", &app("")),
            ("bitcoind", &deps("tor")),
            ("lnd", &deps("bitcoind, tor")),
            ("electrs", &deps("bitcoind")),
            ("web", &deps("lnd, electrs")),
            ("alone", &app("")),
        ]);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            catalog.topo_order(),
            ids(&["alone", "tor", "bitcoind", "electrs", "lnd", "web"])
        );
        let bitcoind = "bitcoind".parse().expect("valid id");
        assert_eq!(catalog.dependents(&bitcoind), ids(&["electrs", "lnd"]));
        assert_eq!(
            catalog
                .get(&bitcoind)
                .map(|a| a.manifest.dependencies.clone()),
            Some(ids(&["tor"]))
        );
        assert_eq!(
            catalog
                .check_listed(Path::new("c.yml"), "default_apps", &ids(&["tor", "ghost"]))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["c.yml: default_apps[1]: `ghost` is not an app of the catalog"]
        );
    }

    #[test]
    fn reports_an_unreadable_apps_folder() {
        let (catalog, problems) = Catalog::load(Path::new("/nonexistent/apps"));
        assert!(catalog.apps.is_empty());
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec!["/nonexistent/apps: apps_dir: cannot read folder: No such file or directory (os error 2)"]
        );
    }
}
