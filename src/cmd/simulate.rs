//! `blastnet simulate` (issue #3).

/// Arguments of `blastnet simulate`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `blastnet simulate`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`blastnet simulate` is not built yet (issue #3)")
}
