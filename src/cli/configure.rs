//! `ebsim configure …`: named profiles in the data root's config.json, as the AWS
//! CLI keeps them in ~/.aws/config. A profile names the principal commands run as
//! (`--profile NAME`) and, optionally, their region.

use super::Ctx;
use crate::error::{Error, Result};
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum ConfigureCommand {
    /// Sets a profile's setting: principal (an ARN) or region
    Set {
        /// principal or region
        setting: String,
        value: String,
    },
    /// Prints a profile's setting
    Get { setting: String },
    /// Lists the profiles
    ListProfiles,
}

pub fn run(ctx: &Ctx, cmd: ConfigureCommand) -> Result<()> {
    let mut config = ctx.root.config()?;
    let name = ctx.profile.clone().unwrap_or_else(|| "default".into());
    match cmd {
        ConfigureCommand::Set { setting, value } => {
            let profile = config.profiles.entry(name).or_default();
            match setting.as_str() {
                "principal" => {
                    crate::iam::Principal::parse(&value)?;
                    profile.principal = Some(value);
                }
                "region" => {
                    crate::home::validate_region(&value)?;
                    profile.region = Some(value);
                }
                other => return Err(Error::usage(format!("unknown setting '{other}' (principal, region)"))),
            }
            ctx.root.save_config(&config)
        }
        ConfigureCommand::Get { setting } => {
            let p = config.profiles.get(&name).cloned().unwrap_or_default();
            let v = match setting.as_str() {
                "principal" => p.principal,
                "region" => p.region,
                other => return Err(Error::usage(format!("unknown setting '{other}' (principal, region)"))),
            };
            match v {
                Some(v) => {
                    println!("{v}");
                    Ok(())
                }
                None => Err(Error::usage(format!("profile {name} has no {setting}"))),
            }
        }
        ConfigureCommand::ListProfiles => ctx.out.print(
            "ListProfiles",
            json!({"Profiles": config.profiles.iter().map(|(n, p)| json!({"Name": n, "Principal": p.principal, "Region": p.region})).collect::<Vec<_>>()}),
        ),
    }
}
