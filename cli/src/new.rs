//! `vox new`: scaffold a flow crate from one of the sample flows.
//!
//! Templates are the sample flows themselves (embedded at build time), so a new flow starts
//! from code and scenarios that CI proves build and pass.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// Answer, greet, hang up.
    Hello,
    /// Menu with sales (dial), support (queue), voicemail and business hours.
    IvrMenu,
    /// Greeting, recording, `voicemail.created` event.
    Voicemail,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Template::Hello => "hello",
            Template::IvrMenu => "ivr-menu",
            Template::Voicemail => "voicemail",
        })
    }
}

const HELLO: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../sample-flows/hello/src/lib.rs")),
    ("tests/basic.toml", include_str!("../../sample-flows/hello/tests/basic.toml")),
    (
        "tests/custom-greeting.toml",
        include_str!("../../sample-flows/hello/tests/custom-greeting.toml"),
    ),
    (
        "tests/caller-hangs-up.toml",
        include_str!("../../sample-flows/hello/tests/caller-hangs-up.toml"),
    ),
];
const IVR_MENU: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../sample-flows/ivr-menu/src/lib.rs")),
    ("tests/after-hours.toml", include_str!("../../sample-flows/ivr-menu/tests/after-hours.toml")),
    ("tests/basic.toml", include_str!("../../sample-flows/ivr-menu/tests/basic.toml")),
    (
        "tests/caller-hangs-up.toml",
        include_str!("../../sample-flows/ivr-menu/tests/caller-hangs-up.toml"),
    ),
    (
        "tests/invalid-then-sales.toml",
        include_str!("../../sample-flows/ivr-menu/tests/invalid-then-sales.toml"),
    ),
    ("tests/no-input.toml", include_str!("../../sample-flows/ivr-menu/tests/no-input.toml")),
    ("tests/sales-busy.toml", include_str!("../../sample-flows/ivr-menu/tests/sales-busy.toml")),
    (
        "tests/sales-no-answer.toml",
        include_str!("../../sample-flows/ivr-menu/tests/sales-no-answer.toml"),
    ),
    (
        "tests/support-queue.toml",
        include_str!("../../sample-flows/ivr-menu/tests/support-queue.toml"),
    ),
    ("tests/voicemail.toml", include_str!("../../sample-flows/ivr-menu/tests/voicemail.toml")),
];
const VOICEMAIL: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../sample-flows/voicemail/src/lib.rs")),
    ("tests/basic.toml", include_str!("../../sample-flows/voicemail/tests/basic.toml")),
    (
        "tests/hangup-while-recording.toml",
        include_str!("../../sample-flows/voicemail/tests/hangup-while-recording.toml"),
    ),
    ("tests/no-message.toml", include_str!("../../sample-flows/voicemail/tests/no-message.toml")),
    ("tests/silence.toml", include_str!("../../sample-flows/voicemail/tests/silence.toml")),
];

impl Template {
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Template::Hello => HELLO,
            Template::IvrMenu => IVR_MENU,
            Template::Voicemail => VOICEMAIL,
        }
    }
}

/// Where the guest SDK lives: `VOXIDE_GUEST_SDK`, else the source tree `vox` was built from.
fn guest_sdk_path() -> PathBuf {
    std::env::var_os("VOXIDE_GUEST_SDK")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("guest-sdk"))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64
}

pub fn scaffold(name: &str, template: Template, dir: &Path) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!(
            "{name:?} is not a valid flow name: use lowercase letters, digits, '-' and '_', starting with a letter"
        );
    }
    if dir.exists() && dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose another name or --path", dir.display());
    }
    let sdk = guest_sdk_path();
    let sdk = std::fs::canonicalize(&sdk).with_context(|| {
        format!(
            "the voxide-guest SDK was not found at {}; set VOXIDE_GUEST_SDK to its directory",
            sdk.display()
        )
    })?;
    let sdk_toml = sdk.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let cargo_toml = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
voxide-guest = {{ path = "{sdk_toml}" }}

# Small, fast-to-instantiate components: a flow is ~150 KB instead of ~2.5 MB.
[profile.release]
opt-level = "s"
lto = true
strip = true
panic = "abort"
codegen-units = 1

# A flow is its own workspace, even when created inside another cargo project.
[workspace]
"#
    );
    let readme = format!(
        "# {name}\n\nA Voxide call flow, created from the `{template}` template.\n\n\
         - `src/lib.rs` is the flow: `handle` runs once per call.\n\
         - `tests/*.toml` are scenarios: a scripted caller and the steps the flow must take.\n\n\
         ```sh\nvox test          # build and run every scenario against a simulated caller\n\
         vox build         # build the component (target/wasm32-wasip2/release/*.wasm)\n```\n\n\
         Scenario format: see `docs/scenarios.md` in the Voxide repository.\n"
    );
    let mut files: Vec<(&str, String)> = vec![
        ("Cargo.toml", cargo_toml),
        ("README.md", readme),
        (".gitignore", "target/\n*.wasm\n".into()),
    ];
    files.extend(template.files().iter().map(|(p, c)| (*p, (*c).to_owned())));
    for (rel, content) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_has_a_flow_and_a_basic_scenario() {
        for t in [Template::Hello, Template::IvrMenu, Template::Voicemail] {
            let names: Vec<&str> = t.files().iter().map(|(p, _)| *p).collect();
            assert!(names.contains(&"src/lib.rs"), "{t}");
            assert!(names.contains(&"tests/basic.toml"), "{t}");
        }
    }

    #[test]
    fn refuses_bad_names_and_non_empty_directories() {
        let tmp = std::env::temp_dir().join(format!("vox-new-{}", std::process::id()));
        assert!(scaffold("Bad Name", Template::Hello, &tmp).is_err());
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("keep"), "x").unwrap();
        let e = scaffold("demo", Template::Hello, &tmp).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        assert!(tmp.join("keep").exists(), "nothing was overwritten");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
