//! `blastnet broker`: the embedded MQTT broker (rumqttd) as its own process,
//! for a zero-set-up deployment on one machine and for tests that must stop
//! and restart a broker.

use std::time::Duration;

/// Arguments of `blastnet broker`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// TCP port on 127.0.0.1.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
}

/// Run the broker until killed.
pub fn run(args: Args) -> anyhow::Result<()> {
    let broker = blastnet_broker::EmbeddedBroker::start(args.port)?;
    blastnet_lab::report::note(&format!("blastnet broker: listening on {}", broker.url()));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
