//! Fuzzes manifest parsing and validation: any text gives a manifest or problems, never a
//! panic or a hang.
#![no_main]

use std::path::Path;

use archipelago::manifest::AppManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/fuzz/manifest.yml");
    if let Ok(manifest) = AppManifest::from_yaml(path, text) {
        let _ = manifest.validate(path, Path::new("/nonexistent/fuzz"));
        let _ = manifest.secret_ref_sites();
    }
});
