//! The tests' Python: `TOLLGATE_SDK_PYTHON`, or a virtualenv under `target/sdk-venv` made on first use (and made
//! again when a pinned version changes) with the official SDKs (`tests/sdk/requirements.txt`) and the browser
//! driver for the dashboard's tests (`tests/dashboard/requirements.txt`: Playwright's Python package, which drives
//! the system's Chromium and downloads no browser).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const REQUIREMENTS: [&str; 2] = [
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/requirements.txt"),
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard/requirements.txt"),
];

/// One test at a time makes the virtualenv.
static MAKING: Mutex<()> = Mutex::new(());

pub fn test_python() -> PathBuf {
    if let Some(python) = std::env::var_os("TOLLGATE_SDK_PYTHON") {
        return PathBuf::from(python);
    }
    let _making = MAKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let pinned: String = REQUIREMENTS.iter().map(|r| std::fs::read_to_string(r).unwrap()).collect();
    // CARGO_TARGET_TMPDIR is <target>/tmp; the venv sits beside it, where .ci/run makes it too.
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../sdk-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("tollgate-requirements.txt");
    if python.exists() && std::fs::read_to_string(&marker).is_ok_and(|m| m == pinned) {
        return python;
    }
    let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).output().unwrap_or_else(|e| {
        panic!(
            "the official SDK clients and the dashboard's browser tests need Python 3 with venv (`apt-get install \
             python3 python3-venv`): python3 could not run ({e}); set TOLLGATE_SKIP_SDK=1 and \
             TOLLGATE_SKIP_BROWSER=1 to skip them"
        )
    });
    assert!(
        made.status.success(),
        "python3 -m venv {} failed (Debian needs python3-venv): {}",
        venv.display(),
        String::from_utf8_lossy(&made.stderr)
    );
    let mut install = Command::new(&python);
    install.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]);
    for requirements in REQUIREMENTS {
        install.args(["-r", requirements]);
    }
    let installed = install.output().unwrap();
    assert!(
        installed.status.success(),
        "installing the tests' Python packages into {} failed: {}",
        venv.display(),
        String::from_utf8_lossy(&installed.stderr)
    );
    std::fs::write(&marker, pinned).unwrap();
    python
}
