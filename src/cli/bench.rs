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
    /// Only these scenarios (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Where to write `<UTC timestamp>/`.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// The lab's name (its namespaces are sr-NAME-*); a stale lab of this name is removed first.
    #[arg(long, default_value = "bench")]
    pub lab: String,
    /// Also copy the summary to `<out>/README.md` (for a full run of the default set).
    #[arg(long)]
    pub publish: bool,
    /// Also run every selected scenario over SCTP (cases `<name>/sctp`). Needs a
    /// kernel with SCTP, such as the VM of netns-scripts/sctp-vm.sh
    /// (`--script netns-scripts/sctp-vm/bench.sh`).
    #[arg(long)]
    pub sctp: bool,
}

impl BenchArgs {
    /// The benchmark's configuration from the flags.
    pub fn config(self) -> BenchConfig {
        BenchConfig {
            quick: self.quick,
            scenarios: self.scenarios,
            only: self.only,
            out: self.out,
            lab: self.lab,
            publish: self.publish,
            sctp: self.sctp,
        }
    }
}
