//! `meshwright-shop store|product|invoice|notification`: runs one of the shop's services,
//! configured by `SHOP_*` environment variables (see the crate's README.md).
//!
//! Exit codes: 0 after a graceful shutdown (SIGTERM or SIGINT), 2 for a bad command line or
//! configuration (the message names the variable), 1 when the service cannot run.

use std::io::Write as _;
use std::process::ExitCode;

use meshwright_shop::{Config, Service, serve};

const USAGE: &str = "usage: meshwright-shop store|product|invoice|notification
Runs one service of the shop; configured by SHOP_* environment variables (see shop/README.md).";

fn say(text: &str) {
    // A closed stderr must not turn into a panic.
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let service = match args.as_slice() {
        [one] if one == "--help" || one == "-h" => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        [one] => match Service::parse(one) {
            Some(service) => service,
            None => {
                say(&format!(
                    "meshwright-shop: unknown service {one:?}\n{USAGE}"
                ));
                return ExitCode::from(2);
            }
        },
        _ => {
            say(USAGE);
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env(service) {
        Ok(config) => config,
        Err(e) => {
            say(&format!("meshwright-shop {service}: {e}"));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say(&format!(
                "meshwright-shop {service}: cannot start the runtime: {e}"
            ));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(service, config, termination())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("meshwright-shop {service}: {e:#}"));
            ExitCode::from(1)
        }
    }
}

/// Completes on SIGTERM (Kubernetes) or SIGINT (a terminal).
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
