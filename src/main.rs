use clap::Parser;
use keyhole::cli::{Cli, run};

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
