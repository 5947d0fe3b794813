//! `blastnet`: one binary for the field node, the aggregator, replay,
//! simulation and the demo. Each subcommand lives in `src/cmd/<name>.rs`.

mod cmd;

use clap::{Parser, Subcommand};

/// Acoustic and seismic blast-detection sensor network.
#[derive(Parser)]
#[command(name = "blastnet", version, about, long_about = None)]
struct Cli {
    /// Log lines as text (colour only on a terminal) or as JSON objects,
    /// one a line (for journald and log shippers). `RUST_LOG` sets the level.
    #[arg(long, global = true, value_enum, default_value_t = cmd::LogFormat::Text)]
    log_format: cmd::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a field node: capture (or replay), detect, publish over MQTT.
    Node(cmd::node::Args),
    /// Run the aggregator: subscribe, associate, locate, publish, store, serve.
    Aggregator(cmd::aggregator::Args),
    /// Replay a scenario folder or a bare WAV through the node and aggregator pipeline.
    Replay(cmd::replay::Args),
    /// Write a synthetic scenario folder (manifest with truth, WAV files).
    Simulate(cmd::simulate::Args),
    /// Run the demo: embedded broker, city-salvo replayed, events printed and mapped.
    Demo(cmd::demo::Args),
    /// Convert a third-party recording release into scenario folders.
    Import(cmd::import::Args),
    /// Evaluate detection and location quality on scenarios with truth.
    Eval(cmd::eval::Args),
    /// Run the embedded MQTT broker (rumqttd) on 127.0.0.1.
    Broker(cmd::broker::Args),
    /// Measure processing speed.
    Bench(cmd::bench::Args),
    /// Plan a deployment: CRLB accuracy map and coverage for a node layout.
    Plan(cmd::plan::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let service = matches!(
        cli.command,
        Command::Node(_) | Command::Aggregator(_) | Command::Broker(_)
    );
    let cli_json = cli.log_format == cmd::LogFormat::Json;
    cmd::init_tracing(service, cli.log_format);
    let result = match cli.command {
        Command::Node(a) => cmd::node::run(a),
        Command::Aggregator(a) => cmd::aggregator::run(a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Simulate(a) => cmd::simulate::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Broker(a) => cmd::broker::run(a),
        Command::Plan(a) => cmd::plan::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if cli_json {
                tracing::error!(target: blastnet_lab::report::REPORT_TARGET, "{e:#}");
            } else {
                eprintln!("blastnet: error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
