//! `siprace bench`: its flags, which fill the library's [`BenchConfig`].

use std::path::PathBuf;

use siprace::bench::BenchConfig;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The reduced set (scenarios marked `quick`, few dials): under 90 s.
    #[arg(long)]
    pub quick: bool,
    /// Where the scenario files are.
    #[arg(long, default_value = "bench-scenarios")]
    pub scenarios: PathBuf,
    /// Only these scenarios (comma-separated names); with --census, only
    /// these clients (e.g. `sipp-uac,siprace:rfc8305`).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Where to write `<UTC timestamp>/` (default: $TMPDIR/siprace-bench, or
    /// results/ with --publish: a run leaves nothing in the source tree
    /// unless it is meant to be published).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The lab's name (its namespaces are sr-NAME-*); a stale lab of this name is removed first.
    #[arg(long, default_value = "bench")]
    pub lab: String,
    /// Publish: write to results/ (unless --out says otherwise) and copy the
    /// summary to `<out>/README.md` (for a full run of the default set).
    #[arg(long)]
    pub publish: bool,
    /// Also run every selected scenario over SCTP (cases `<name>/sctp`). Needs a
    /// kernel with SCTP, such as the VM of netns-scripts/sctp-vm.sh
    /// (`--script netns-scripts/sctp-vm/bench.sh`).
    #[arg(long)]
    pub sctp: bool,
    /// The census of SIP clients' dual-stack behaviour instead of the
    /// scenarios (long: about 30 min; with --quick a small sanity subset).
    /// Writes `<out>/<UTC>/census.md`, `census.json` and sweep plots. The
    /// lab name is that of the timing lab; worker labs add 2..5 to it.
    #[arg(long)]
    pub census: bool,
}

impl BenchArgs {
    /// The benchmark's configuration from the flags.
    pub fn config(self) -> BenchConfig {
        BenchConfig {
            quick: self.quick,
            scenarios: self.scenarios,
            only: self.only,
            out: self.out.unwrap_or_else(|| default_out(self.publish)),
            lab: self.lab,
            publish: self.publish,
            sctp: self.sctp,
            census: self.census,
        }
    }
}

/// Where results go without `--out`: the tracked `results/` only when
/// publishing, else a directory under the system's temporary directory.
fn default_out(publish: bool) -> PathBuf {
    if publish {
        PathBuf::from("results")
    } else {
        std::env::temp_dir().join("siprace-bench")
    }
}
