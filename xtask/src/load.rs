//! `cargo xtask load`: shoppers against the shop (meshwright_testbed::shoppers), with a progress
//! line and a summary by route.

use crate::args::Args;
use crate::say;
use anyhow::{Result, bail};
use meshwright_testbed::shoppers::{self, Options};
use std::io::Write;
use std::time::Duration;

pub fn load(mut args: Args) -> Result<()> {
    let mut opts = Options::default();
    if let Some(u) = args.value("--url")? {
        opts.url = u;
    }
    if let Some(s) = args.parsed::<u64>("--duration")? {
        opts.duration = Duration::from_secs(s);
    }
    if let Some(n) = args.parsed("--shoppers")? {
        opts.shoppers = n;
    }
    if let Some(n) = args.parsed("--bad-actors")? {
        opts.bad_actors = n;
    }
    if let Some(ms) = args.parsed::<u64>("--think-ms")? {
        opts.think = Duration::from_millis(ms);
    }
    if let Some(s) = args.parsed("--seed")? {
        opts.seed = s;
    }
    args.finish()?;
    // The IdP redirects browsers to 127.0.0.1; `localhost` may mean ::1 to this client.
    opts.url = opts.url.replace("//localhost:", "//127.0.0.1:");
    say(&format!(
        "{} shoppers and {} bad actors against {} for {} s",
        opts.shoppers,
        opts.bad_actors,
        opts.url,
        opts.duration.as_secs()
    ));
    let total = opts.duration;
    let report = tokio::runtime::Runtime::new()?.block_on(shoppers::run(&opts, |r, elapsed| {
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r[{:>3}/{} s] {} requests ({:.1}/s), {} orders, {} server errors   ",
            elapsed.as_secs(),
            total.as_secs(),
            r.requests(),
            r.requests() as f64 / elapsed.as_secs_f64().max(0.001),
            r.orders,
            r.server_errors()
        );
        let _ = err.flush();
    }))?;
    eprintln!();
    say(&report.table());
    if report.signed_in == 0 {
        bail!("no shopper could sign in at {}", opts.url);
    }
    Ok(())
}
