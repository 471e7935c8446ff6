//! `ebsim serve`: the data root's services over HTTP, in AWS's wire protocols
//! (docs/SERVER.md). The global `--region` is the region of requests whose
//! credential scope names none (`aws-global`); every other request runs in the
//! region it was signed for.

use super::Ctx;
use crate::error::{Error, Result};
use crate::server::{Config, Limits, ServeLock};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is printed)
    #[arg(long, default_value = crate::server::DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// The account a fresh data root simulates (saved in its config.json); a data
    /// root with state keeps its own and refuses another
    #[arg(long, value_name = "ID")]
    pub account_id: Option<String>,
    /// Accept any signed request as the account root, without checking its
    /// secret (for tools with made-up credentials; never on a shared machine)
    #[arg(long)]
    pub accept_any_credentials: bool,
    /// Allow a non-loopback --listen address (plain HTTP: use a trusted network)
    #[arg(long)]
    pub allow_remote: bool,
    /// Microseconds a worker keeps polling its sockets after an answer before it
    /// sleeps, so a client's next request finds it awake (0: sleep at once)
    #[arg(long, value_name = "MICROSECONDS", default_value_t = crate::server::DEFAULT_BUSY_POLL_US)]
    pub busy_poll_us: u64,
}

pub fn run(ctx: Ctx, args: ServeArgs) -> Result<()> {
    let mut config = ctx.root.config()?;
    if let Some(id) = &args.account_id
        && *id != config.account_id
    {
        // A fresh data root takes the account; one with state keeps its own
        // (its stores, keys and access keys belong to it).
        let stores = ctx.root.registered_stores()?;
        if ctx.root.path().join("config.json").exists() || !stores.is_empty() {
            return Err(Error::usage(format!(
                "--account-id {id}: the data root {} belongs to account {}{}; use another --home for another account",
                ctx.root.path().display(),
                config.account_id,
                if stores.is_empty() {
                    String::new()
                } else {
                    format!(" (it holds {})", stores.join(", "))
                }
            )));
        }
        config.account_id = id.clone();
        ctx.root.save_config(&config)?;
    }
    let server = Config {
        listen: args.listen,
        allow_remote: args.allow_remote,
        accept_any_credentials: args.accept_any_credentials,
        account_id: config.account_id.clone(),
        region: ctx.region.clone(),
        limits: Limits::default(),
        busy_poll: std::time::Duration::from_micros(args.busy_poll_us),
    };
    server.check()?;
    let lock = ServeLock::acquire(&ctx.root)?;
    if args.accept_any_credentials {
        eprintln!(
            "ebsim serve: WARNING: --accept-any-credentials: every signed request acts as the root of account {}, whatever its secret",
            config.account_id
        );
    }
    let root = ctx.root.path().display().to_string();
    let region = ctx.region.clone();
    let account = config.account_id.clone();
    crate::server::run(ctx.services, server, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "ebsim serve: listening on http://{addr} (data root {root}, account {account}, region {region})"
        );
        let _ = out.flush();
    })
    .map_err(|e: Error| e)?;
    drop(lock);
    eprintln!("ebsim serve: stopped");
    Ok(())
}
