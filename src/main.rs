//! Thin: parse the command line, resolve config, dispatch, map errors to exit codes.

/// `println!` for what the binary prints: a closed stdout (`lightgen … | head -2`) is not a
/// crash. Writes after the reader has gone are dropped and the work goes on, so every stage
/// still finishes (or a kill leaves it resumable) and the process exits as it would have.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` with the same rule as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod cli;
mod commands;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command};
use commands::{data, misc};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let progress = !cli.quiet;
    match run(cli.command, progress) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain, one line each; a cause that its message already quotes
            // (`path: {source}`) is not printed twice.
            let mut last = e.to_string();
            eprintln!("error: {last}");
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !last.contains(&c) {
                    eprintln!("  caused by: {c}");
                }
                last = c;
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, progress: bool) -> Result<()> {
    match command {
        Command::Expand(args) => data::expand_cmd(args, progress),
        Command::Generate(args) => data::generate_cmd(args, progress),
        Command::Curate(args) => data::curate_cmd(args, progress),
        Command::Encode(args) => data::encode_cmd(args, progress),
        Command::Manifest(c) => data::manifest_cmd(c, progress),
        Command::Distill(a) => data::distill_cmd(a, progress),
        Command::Report(c) => data::report_cmd(c),
        Command::Taxonomy { taxonomy, json } => data::taxonomy_cmd(taxonomy, json),
        Command::Serve { config, addr, queue, workers, chaos, chaos_seed, chaos_delay_ms } => {
            data::serve_cmd(config, addr, queue, workers, chaos, chaos_seed, chaos_delay_ms)
        }
        Command::Train(a) => commands::train::train_cmd(a, progress),
        Command::Sample(a) => commands::sample::sample_cmd(a, progress),
        Command::Eval(a) => commands::sample::eval_cmd(a, progress),
        Command::Probe(a) => commands::sample::probe_cmd(a),
        Command::Inpaint(a) => commands::sample::inpaint_cmd(a, progress),
        Command::Dpo(a) => commands::dpo::dpo_cmd(a, progress),
        Command::Study(cli::StudyCommand::DiversityVsVolume(a)) => commands::study::study_cmd(a, progress),
        Command::Study(cli::StudyCommand::Dpo(a)) => commands::study::study_dpo_cmd(a, progress),
        Command::Demo { n, steps } => misc::demo(n, steps, progress),
        Command::TrainCheck { preset, steps, batch, grid, device, precision } => {
            commands::train::train_check(&preset, steps, batch, grid, &device, &precision)
        }
        Command::Doctor => misc::doctor(),
        Command::Schema { out } => misc::schema(out),
    }
}
