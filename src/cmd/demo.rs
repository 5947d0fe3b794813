//! `blastnet demo` (issue #7).

/// Arguments of `blastnet demo`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `blastnet demo`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`blastnet demo` is not built yet (issue #7)")
}
