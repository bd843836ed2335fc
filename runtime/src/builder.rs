//! Builds a flow crate into a component: `cargo build --release --target wasm32-wasip2`,
//! installing the target with rustup first if it is missing. Shared by `vox` and the tests
//! that compile guest fixtures from source.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target flows are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("{0} has no Cargo.toml; is it a flow crate? (`vox new NAME` creates one)")]
    NoManifest(PathBuf),
    #[error("could not run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error(
        "the {WASM_TARGET} Rust target is not installed and `rustup target add {WASM_TARGET}` \
         failed ({0}); install it by hand, or build the component with componentize-py/jco"
    )]
    TargetMissing(String),
    #[error("cargo build failed for {0} (compiler output above)")]
    Failed(PathBuf),
    #[error(
        "cargo built {0} but produced no .wasm cdylib; add `crate-type = [\"cdylib\"]` under [lib]"
    )]
    NoArtifact(PathBuf),
}

/// Where and how to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Override the cargo target directory (e.g. to share guest builds between crates).
    pub target_dir: Option<PathBuf>,
    /// Suppress cargo's progress output.
    pub quiet: bool,
}

/// Makes sure `wasm32-wasip2` is installed, installing it with rustup if needed.
pub fn ensure_wasm_target() -> Result<(), BuildError> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|source| BuildError::Spawn { program: "rustup".into(), source })?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    eprintln!("installing the {WASM_TARGET} Rust target (one time)...");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .map_err(|source| BuildError::Spawn { program: "rustup".into(), source })?;
    if status.success() { Ok(()) } else { Err(BuildError::TargetMissing(format!("exit {status}"))) }
}

/// Builds the flow crate in `dir` and returns the path of its component.
pub fn build_flow(dir: &Path, opts: &BuildOptions) -> Result<PathBuf, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NoManifest(dir.to_owned()));
    }
    ensure_wasm_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        WASM_TARGET,
        "--message-format=json-render-diagnostics",
    ])
    .arg("--manifest-path")
    .arg(&manifest)
    .stdout(Stdio::piped())
    .stderr(if opts.quiet { Stdio::piped() } else { Stdio::inherit() })
    // Host build settings of an enclosing cargo (tests, xtasks) must not leak into guests.
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("CARGO_BUILD_TARGET");
    if let Some(t) = &opts.target_dir {
        cmd.env("CARGO_TARGET_DIR", t);
    }
    if opts.quiet {
        cmd.arg("--quiet");
    }
    let mut child =
        cmd.spawn().map_err(|source| BuildError::Spawn { program: cargo.clone(), source })?;
    let manifest_abs = std::fs::canonicalize(&manifest).unwrap_or(manifest.clone());
    let mut artifact = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(path) = wasm_artifact(&line, &manifest_abs) {
                artifact = Some(path);
            }
        }
    }
    let output =
        child.wait_with_output().map_err(|source| BuildError::Spawn { program: cargo, source })?;
    if !output.status.success() {
        if opts.quiet {
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
        }
        return Err(BuildError::Failed(dir.to_owned()));
    }
    artifact.ok_or_else(|| BuildError::NoArtifact(dir.to_owned()))
}

/// The `.wasm` file of a `compiler-artifact` message for the package at `manifest`.
fn wasm_artifact(line: &str, manifest: &Path) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    if Path::new(msg.get("manifest_path")?.as_str()?) != manifest {
        return None;
    }
    msg.get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_cdylib_of_the_right_package() {
        let m = Path::new("/w/hello/Cargo.toml");
        let line = r#"{"reason":"compiler-artifact","manifest_path":"/w/hello/Cargo.toml","filenames":["/t/hello.wasm","/t/libhello.rlib"]}"#;
        assert_eq!(wasm_artifact(line, m), Some(PathBuf::from("/t/hello.wasm")));
        let other = line.replace("/w/hello/", "/w/dep/");
        assert_eq!(wasm_artifact(&other, m), None);
        assert_eq!(wasm_artifact(r#"{"reason":"build-finished","success":true}"#, m), None);
        assert_eq!(wasm_artifact("Compiling foo", m), None);
    }
}
