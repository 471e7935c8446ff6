//! `ebsim clock …` (an ebsim extension): move the data root's clock so rotation
//! schedules and deletion windows can be watched without waiting. The offset is
//! kept in config.json and applies to every later command on that data root;
//! `EBSIM_NOW` overrides it for one command.

use super::Ctx;
use crate::clock::{epoch_seconds, iso8601, parse_time};
use crate::error::{Error, Result};
use chrono::TimeDelta;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum ClockCommand {
    /// Prints the data root's current time and offset
    Show,
    /// Moves the clock forward (or back, with negative values)
    Advance {
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        days: i64,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        hours: i64,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        seconds: i64,
    },
    /// Sets the clock to a time (ISO 8601 or Unix seconds)
    Set {
        #[arg(long)]
        time: String,
    },
    /// Puts the clock back on the wall clock
    Reset,
}

pub fn run(ctx: &Ctx, cmd: ClockCommand) -> Result<()> {
    let mut config = ctx.root.config()?;
    let offset = match cmd {
        ClockCommand::Show => None,
        ClockCommand::Advance {
            days,
            hours,
            seconds,
        } => {
            let add = days
                .checked_mul(86_400)
                .and_then(|d| d.checked_add(hours.checked_mul(3600)?))
                .and_then(|d| d.checked_add(seconds))
                .ok_or_else(|| Error::usage("clock advance: the amount is out of range"))?;
            Some(config.clock_offset_seconds.saturating_add(add))
        }
        ClockCommand::Set { time } => {
            let at = parse_time(&time)?;
            Some((at - chrono::Utc::now()).num_seconds())
        }
        ClockCommand::Reset => Some(0),
    };
    if let Some(o) = offset {
        config.clock_offset_seconds = o;
        ctx.root.save_config(&config)?;
    }
    let now = match std::env::var("EBSIM_NOW") {
        Ok(t) if !t.is_empty() => parse_time(&t)?,
        _ => chrono::Utc::now() + TimeDelta::seconds(config.clock_offset_seconds),
    };
    ctx.out.print(
        "Clock",
        serde_json::json!({
            "Now": iso8601(&now),
            "NowEpochSeconds": epoch_seconds(&now),
            "OffsetSeconds": config.clock_offset_seconds,
            "Pinned": std::env::var("EBSIM_NOW").is_ok_and(|t| !t.is_empty()),
        }),
    )
}
