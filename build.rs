//! Build facts for `siprace --version`: the git commit, the build date and
//! the enabled features. Every fact degrades to "unknown" rather than
//! failing the build (a source tarball, no git, a sandbox without a clock).

use std::process::Command;

#[path = "src/civil_date.rs"]
mod civil_date;

fn main() {
    // Only this crate's own repository counts: a source tarball unpacked
    // inside some other git checkout has no commit of its own.
    let own_repo = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
        std::fs::canonicalize(top).ok() == manifest.and_then(|m| std::fs::canonicalize(m).ok())
    });
    let commit = own_repo
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SIPRACE_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=SIPRACE_BUILD_DATE={}", build_date());

    // CARGO_FEATURE_<NAME> is set for each enabled feature of this package.
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(str::to_owned))
        .map(|f| f.to_lowercase().replace('_', "-"))
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=SIPRACE_FEATURES={features}");

    // Run again when the checked-out commit moves (not on every edit: the
    // date is the date of the commit's first build, not of each rebuild).
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/civil_date.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    for dir in [
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ]
    .into_iter()
    .flatten()
    {
        for file in ["HEAD", "packed-refs", "refs/heads"] {
            let path = std::path::Path::new(&dir).join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// `git ARGS` in the crate's directory, its trimmed output if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

/// The build date (UTC, YYYY-MM-DD): SOURCE_DATE_EPOCH for reproducible
/// builds, else the clock.
fn build_date() -> String {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse::<i64>().ok(),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok()),
    };
    match secs {
        Some(secs) => {
            let (y, m, d) = civil_date::civil_from_days(secs.div_euclid(86_400));
            format!("{y:04}-{m:02}-{d:02}")
        }
        None => "unknown".into(),
    }
}
