//! `archipelago validate` (and `serve`'s config handling) as a user runs them: the built
//! binary on the fixtures under `tests/fixtures/`, checking exit codes and every line.

use std::process::{Command, Output};

/// Runs the binary from the crate root, so fixture paths in its output are relative.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archipelago"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .output()
        .expect("the archipelago binary runs")
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts exit code, stdout lines and stderr lines of one run.
fn check(args: &[&str], code: i32, stdout: &[&str], stderr: &[&str]) {
    let out = run(args);
    let (got_out, got_err) = (lines(&out.stdout), lines(&out.stderr));
    assert_eq!(got_out, stdout, "stdout of {args:?}");
    assert_eq!(got_err, stderr, "stderr of {args:?}");
    assert_eq!(out.status.code(), Some(code), "exit code of {args:?}");
}

/// The shipped catalog validates.
#[test]
fn the_shipped_catalog_validates() {
    let out = run(&["validate", "apps"]);
    assert_eq!(lines(&out.stdout), Vec::<String>::new());
    assert_eq!(out.status.code(), Some(0), "{:?}", lines(&out.stderr));
}

#[test]
fn good_catalog_passes() {
    check(
        &["validate", "tests/fixtures/good"],
        0,
        &[],
        &["3 apps, 0 problems"],
    );
    check(
        &["validate", "--apps-dir", "tests/fixtures/good"],
        0,
        &[],
        &["3 apps, 0 problems"],
    );
    check(
        &["validate", "--config", "tests/fixtures/config/good.yml"],
        0,
        &[],
        &["3 apps, 0 problems"],
    );
}

#[test]
fn bad_catalog_gives_one_line_per_problem() {
    check(
        &["validate", "tests/fixtures/bad"],
        1,
        &[
            "tests/fixtures/bad/ambiguous/manifest.yml: container.memory_limit: line 6: \"512m\" is ambiguous: write 512Mi for powers of 1024 or 512M for powers of 1000",
            "tests/fixtures/bad/both/manifest.yml: container: has both image and build: keep exactly one",
            "tests/fixtures/bad/cycle-a/manifest.yml: dependencies: dependency cycle: cycle-a -> cycle-b -> cycle-a",
            "tests/fixtures/bad/typo/manifest.yml: container.privileged: line 7: unknown field `privileged`: privileged containers are not supported",
        ],
        &["0 apps, 4 problems"],
    );
}

#[test]
fn config_default_apps_must_be_in_the_catalog() {
    check(
        &["validate", "--config", "tests/fixtures/config/missing-default.yml"],
        1,
        &["tests/fixtures/config/missing-default.yml: default_apps[1]: `electrs` is not an app of the catalog"],
        &["3 apps, 1 problem"],
    );
    // --apps-dir overrides the config's apps_dir.
    check(
        &["validate", "--config", "tests/fixtures/config/good.yml", "--apps-dir", "tests/fixtures/bad"],
        1,
        &[
            "tests/fixtures/bad/ambiguous/manifest.yml: container.memory_limit: line 6: \"512m\" is ambiguous: write 512Mi for powers of 1024 or 512M for powers of 1000",
            "tests/fixtures/bad/both/manifest.yml: container: has both image and build: keep exactly one",
            "tests/fixtures/bad/cycle-a/manifest.yml: dependencies: dependency cycle: cycle-a -> cycle-b -> cycle-a",
            "tests/fixtures/bad/typo/manifest.yml: container.privileged: line 7: unknown field `privileged`: privileged containers are not supported",
            "tests/fixtures/config/good.yml: default_apps[0]: `bitcoind` is not an app of the catalog",
            "tests/fixtures/config/good.yml: default_apps[1]: `lnd` is not an app of the catalog",
        ],
        &["0 apps, 6 problems"],
    );
}

#[test]
fn invalid_config_is_one_line_and_exit_2() {
    let want = "tests/fixtures/config/invalid.yml: reconcile_interval: line 3: invalid duration \"5x\": unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)";
    check(
        &["validate", "--config", "tests/fixtures/config/invalid.yml"],
        2,
        &[],
        &[want],
    );
    check(
        &["serve", "--config", "tests/fixtures/config/invalid.yml"],
        2,
        &[],
        &[want],
    );
    check(
        &["serve", "--config", "tests/fixtures/config/absent.yml"],
        2,
        &[],
        &["tests/fixtures/config/absent.yml: cannot read: No such file or directory (os error 2)"],
    );
}

#[test]
fn missing_apps_folder_is_a_problem() {
    check(
        &["validate", "tests/fixtures/absent"],
        1,
        &["tests/fixtures/absent: apps_dir: cannot read folder: No such file or directory (os error 2)"],
        &["0 apps, 1 problem"],
    );
}

/// A missing password file opens onboarding (tests/onboarding.rs); one that exists but
/// cannot serve (a folder, an empty first line) is refused before anything is made.
#[test]
fn serve_refuses_an_unusable_password_file_before_touching_anything() {
    for (name, make, reason) in [
        ("a-folder", "folder", "Is a directory"),
        ("empty", "empty", "the first line is empty"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join(name);
        match make {
            "folder" => std::fs::create_dir(&password).unwrap(),
            _ => std::fs::write(&password, "\n").unwrap(),
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!("apps_dir: apps\ndata_dir: data\nauth:\n  password_file: {name}\n"),
        )
        .unwrap();
        let out = run(&["serve", "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = lines(&out.stderr);
        let last = err.last().unwrap();
        assert!(
            last.contains(name) && last.contains("auth.password_file") && last.contains(reason),
            "{err:?}"
        );
        assert!(!dir.path().join("data").exists(), "data_dir created");
    }
}

/// A listen address already taken ends `serve` with exit 2 and a line naming it, not a
/// panic: the supervisor made before the web server has not run.
#[test]
fn serve_names_a_listen_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "a-password-of-some-length\n").unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!("apps_dir: apps\ndata_dir: data\nlisten: {addr}\nauth:\n  password_file: pw\n"),
    )
    .unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()]);
    let err = lines(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err:?}");
    let last = err.last().unwrap();
    assert!(
        last.contains(&format!("cannot listen on {addr}")) && last.contains("in use"),
        "{err:?}"
    );
    assert!(!err.iter().any(|l| l.contains("panicked")), "{err:?}");
}

#[test]
fn both_positional_and_flag_is_a_usage_error() {
    let out = run(&[
        "validate",
        "tests/fixtures/good",
        "--apps-dir",
        "tests/fixtures/bad",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        lines(&out.stderr)[0].contains("cannot be used with"),
        "{:?}",
        lines(&out.stderr)
    );
}

/// `--strict`: the catalog lint (docs/manifest.md, "Strict validation"). Each fixture under
/// `tests/fixtures/strict/` breaks one rule: plain `validate` accepts it, `--strict` names
/// every breach; the shipped catalog passes both.
#[test]
fn the_shipped_catalog_passes_strict_validation() {
    let out = run(&["validate", "--strict", "apps"]);
    assert_eq!(lines(&out.stdout), Vec::<String>::new());
    assert_eq!(out.status.code(), Some(0), "{:?}", lines(&out.stderr));
    let out = run(&["validate", "--strict", "--apps-dir", "apps"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", lines(&out.stdout));
}

#[test]
fn strict_refuses_an_image_without_a_sourced_digest_or_a_reason() {
    let dir = "tests/fixtures/strict/digest";
    check(&["validate", dir], 0, &[], &["4 apps, 0 problems"]);
    check(
        &["validate", "--strict", dir],
        1,
        &[
            "tests/fixtures/strict/digest/built/manifest.yml: container.build: a built image needs a `# digest:` comment about its Dockerfile's base image (where its digest was read, or `none, because …`)",
            "tests/fixtures/strict/digest/latest/manifest.yml: container.image: \"nginx:latest\" uses `latest`: pin a release tag instead",
            "tests/fixtures/strict/digest/unpinned/manifest.yml: container.image: \"nginx:1.27.0\" is not pinned by digest (`NAME:TAG@sha256:…`) and no `# digest: none, because …` comment says why",
            "tests/fixtures/strict/digest/unsourced/manifest.yml: container.image: \"nginx:1.27.0@sha256:0000000000000000000000000000000000000000000000000000000000000000\" is pinned by digest but no `# digest: SOURCE` comment says where the digest was read",
        ],
        &["0 apps, 4 problems"],
    );
}

#[test]
fn strict_refuses_a_probe_on_a_port_the_app_is_not_known_to_listen_on() {
    let dir = "tests/fixtures/strict/probe";
    check(&["validate", dir], 0, &[], &["2 apps, 0 problems"]);
    check(
        &["validate", "--strict", dir],
        1,
        &[
            "tests/fixtures/strict/probe/cache/manifest.yml: container.health.tcp.port: nothing shows that the app listens on 6379: publish it in `ports`, write its listen address in env or command, or name the image's default in a `# listens: 6379` comment",
            "tests/fixtures/strict/probe/web/manifest.yml: container.health.http.port: nothing shows that the app listens on 8080: publish it in `ports`, write its listen address in env or command, or name the image's default in a `# listens: 8080` comment",
        ],
        &["0 apps, 2 problems"],
    );
}

#[test]
fn strict_refuses_a_volume_whose_owner_is_unknown_or_cannot_reach_it() {
    let dir = "tests/fixtures/strict/volume-user";
    check(&["validate", dir], 0, &[], &["2 apps, 0 problems"]);
    check(
        &["validate", "--strict", dir],
        1,
        &[
            "tests/fixtures/strict/volume-user/homeless/manifest.yml: container.volumes[0]: \"/root/.homeless\" is inside /root, root's 0700 home, which user \"1000:1000\" cannot enter: mount the volume elsewhere (e.g. /data)",
            "tests/fixtures/strict/volume-user/store/manifest.yml: container.user: the app has volumes but not who owns them: set `user:` or say which user the image runs as in an `# image user: NAME` comment",
        ],
        &["0 apps, 2 problems"],
    );
}

#[test]
fn strict_refuses_dependency_files_and_addresses_nothing_makes() {
    let dir = "tests/fixtures/strict/dependency-file";
    check(&["validate", dir], 0, &[], &["3 apps, 0 problems"]);
    check(
        &["validate", "--strict", dir],
        1,
        &[
            "tests/fixtures/strict/dependency-file/shop/manifest.yml: container.env.EXPLORER_COOKIE: \"/explorer/Main/.cookie\" looks like a credential file, but no volume is mounted there, so nothing makes it: mount the volume of the app that writes it",
            "tests/fixtures/strict/dependency-file/wallet-ui/manifest.yml: container.env.MACAROON: \"/node/data/admin.macaroon\" lies in `node`'s volume `data`, but `node` does not say it makes `data/admin.macaroon` there (no `# provides: data/data/admin.macaroon` comment in its manifest)",
            "tests/fixtures/strict/dependency-file/wallet-ui/manifest.yml: container.env.NODE_ONION: ${onion:node}: `node` declares no `onion` ports, so tor never makes its address",
        ],
        &["1 app, 3 problems"],
    );
}
