//! `tongban`: the one binary. Parsing and telemetry set-up only; every
//! command lives in the `tongban_cli` library.

use std::process::ExitCode;

use clap::Parser;

/// The request path allocates many small, short-lived buffers (HTTP/2
/// frames, protobuf messages); under load the system allocator alone took
/// about a quarter of the exchange's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = tongban_cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporters run on the runtime: set up inside it.
    let guard = {
        let _rt = runtime.enter();
        match tongban_telemetry::init(tongban_cli::telemetry_options(&cli)) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("error: telemetry: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let telemetry = tongban_cli::ProcessTelemetry::from_guard(&guard);
    let code = match runtime.block_on(tongban_cli::run_with(cli, telemetry)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Flushes spans and metrics (bounded) while the runtime still runs.
    if let Err(e) = guard.shutdown() {
        eprintln!("warning: telemetry did not flush: {e}");
    }
    code
}
