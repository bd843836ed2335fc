//! Content-addressed cache of compiled components (flows, strategies) on disk.
//!
//! A component is compiled by Cranelift once; the artifact is stored as
//! `<dir>/<sha256>-<engine>.cwasm`, where `<engine>` hashes wasmtime's compatibility key
//! (version, target, settings) so an upgraded host never loads an incompatible artifact.
//! Loading an artifact is an mmap (well under a millisecond) instead of a compile (hundreds).

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{LoadError, LoadSource, compile};

/// `sha256:<hex>` of the bytes: the identity of a flow (or strategy) version.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn engine_tag(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

pub(crate) fn compile_cached(
    engine: &Engine,
    dir: &Path,
    digest: &str,
    bytes: &[u8],
) -> Result<(Component, LoadSource), LoadError> {
    let hex = digest.trim_start_matches("sha256:");
    let path = dir.join(format!("{hex}-{}.cwasm", engine_tag(engine)));
    if path.exists() {
        // SAFETY: the file is one we wrote ourselves with `Component::serialize` into the
        // host's private cache directory, named by the source digest and this engine's
        // compatibility hash. wasmtime still checks the header and version on load.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok((component, LoadSource::DiskCache)),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}");
            }
        }
    }
    let component = compile(engine, bytes)?;
    let artifact = component
        .serialize()
        .map_err(|e| LoadError::Cache(format!("serializing compiled component: {e:#}")))?;
    write_atomic(dir, &path, &artifact)
        .map_err(|e| LoadError::Cache(format!("writing {}: {e}", path.display())))?;
    Ok((component, LoadSource::Compiled))
}

/// Write to a temporary file then rename, so a crash never leaves a torn artifact. The
/// temporary name is unique per process and write, so concurrent loads of the same new flow
/// (in this process or another) each rename a complete file over the same name.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
