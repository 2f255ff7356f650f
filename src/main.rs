use clap::Parser;
use keyhole::cli::{Cli, run};

// mimalloc: the hot path allocates many small, short-lived buffers across worker threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyhole: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
