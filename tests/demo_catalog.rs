//! The demo that `scripts/demo.sh` runs: `archipelago validate` accepts its catalog
//! (`config/demo-apps`) and its config (`config/demo.yml`) without a problem.

use std::process::Command;

/// Runs `archipelago validate ARGS` from the crate root and returns exit code and stderr.
fn validate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_archipelago"))
        .arg("validate")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .output()
        .expect("the archipelago binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_catalog_and_config_pass_validate() {
    let cases: [&[&str]; 3] = [
        &["config/demo-apps"],
        &["--apps-dir", "config/demo-apps"],
        &["--config", "config/demo.yml"],
    ];
    for args in cases {
        let (code, stdout, stderr) = validate(args);
        assert_eq!(stdout, "", "problems of validate {args:?}");
        assert_eq!(
            stderr.trim(),
            "3 apps, 0 problems",
            "summary of validate {args:?}"
        );
        assert_eq!(code, Some(0), "exit code of validate {args:?}");
    }
}
