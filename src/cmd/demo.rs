//! `blastnet demo`: the README's first command. An embedded broker, the
//! city-salvo scenario replayed in accelerated real time through the node
//! runtimes and the aggregator, each event printed as it is located, the
//! live map's URL printed; it ends by itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use blastnet_node::Pace;

use blastnet_lab::replay::{self, ReplayOptions};
use blastnet_lab::report::{event_line, note};

/// Arguments of `blastnet demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scenario to replay; default: the shipped recordings/city-salvo (simulated
    /// afresh into a temp folder if it is not there).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Data seconds per wall second.
    #[arg(long, default_value_t = 4.0)]
    pub speed: f64,
    /// Live map address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Seconds the live map stays up after the replay ends.
    #[arg(long, default_value_t = 20)]
    pub linger: u64,
}

/// Run the demo.
pub fn run(args: Args) -> anyhow::Result<()> {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recordings/city-salvo");
    let _tmp;
    let path = match args.scenario {
        Some(p) => p,
        None if shipped.join("manifest.json").is_file() => shipped,
        None => {
            let dir =
                tempfile::tempdir().context("creating a temp folder for the demo scenario")?;
            note(&format!(
                "recordings/city-salvo not found: simulating it into {}",
                dir.path().display()
            ));
            let spec = blastnet_simulator::preset("city-salvo", 1)?;
            blastnet_simulator::write_scenario(&spec, 1, &Default::default(), dir.path())?;
            let p = dir.path().to_path_buf();
            _tmp = dir;
            p
        }
    };
    let opts = ReplayOptions {
        path,
        broker: None,
        pace: Pace::RealTime { speed: args.speed },
        http_listen: args.http,
        start_utc: None,
        progress: false,
        linger: Duration::from_secs(args.linger),
        aggregator_config: None,
        store: None,
    };
    let scenario = replay::open_scenario(&opts)?;
    note(&format!(
        "blastnet demo: {} — {} nodes; replaying at {}x real time through an embedded MQTT broker",
        scenario.manifest.name,
        scenario.manifest.nodes.len(),
        args.speed
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = rt.block_on(replay::run(&opts, |e| {
        if e.revision == 1 || e.status == blastnet_contract::EventStatus::Final {
            println!("{}", event_line(e));
        }
    }))?;
    note(&replay::summary(&outcome));
    Ok(())
}
