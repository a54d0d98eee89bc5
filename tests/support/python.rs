//! The Python virtualenv of the published clients and schemathesis
//! (tests/clients/venv.sh: pinned, built on first use, cached).

use std::path::PathBuf;
use std::process::Command;

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The clients' virtualenv, built on first use.
pub async fn venv() -> PathBuf {
    let script = repo().join("tests/clients/venv.sh");
    let out = tokio::task::spawn_blocking(move || Command::new(script).output())
        .await
        .expect("venv.sh ran")
        .expect("start venv.sh");
    assert!(
        out.status.success(),
        "venv.sh failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
}
