//! The `ebsim` command line, shaped like the AWS CLI v2: `ebsim <service>
//! <operation> --param value`, global options before or after the service
//! (`--region`, `--output`, `--query`, `--home`, `--cli-binary-format`,
//! `--debug`), AWS's
//! error lines and exit codes. One file per service.

/// Calls an operation (retrying throttling with backoff) and prints its response;
/// operations with an empty response print nothing.
macro_rules! exec {
    ($ctx:expr, $name:literal, $call:expr) => {{
        let r = $ctx.backoff.run(|| $call)?;
        $ctx.print($name, &r)
    }};
}

pub mod attach;
pub mod clock;
pub mod cloudtrail;
pub mod configure;
pub mod ebs;
pub mod ec2;
pub mod exit;
pub mod iam;
pub mod input;
pub mod kms;
pub mod logging;
pub mod output;
pub mod progress;
pub mod rds;
pub mod serve;

use crate::clock::{Clock, parse_time};
use crate::error::{Error, ErrorKind, Result};
use crate::home::{DEFAULT_REGION, DataRoot};
use crate::service::Backoff;
use crate::service::Caller;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Exit codes (the AWS CLI v2's):
  0    success
  252  the command line or a parameter could not be parsed
  253  the data root is missing or damaged: a store, root.key, config.json, a volume
       image or a snapshot block (docs/DATA-ROOT.md); stderr names it
  254  the service returned an error; stderr says which, as
       'An error occurred (<Code>) when calling the <Operation> operation: <message>'
  255  any other failure (I/O)
  130  interrupted (Ctrl-C); a snapshot, copy or restore undid what it had done

Environment: EBSIM_HOME (data root), EBSIM_REGION, EBSIM_OUTPUT, EBSIM_NOW (pin the
clock: RFC 3339 or Unix seconds), EBSIM_MAX_ATTEMPTS (retries when throttled),
RUST_LOG (what to log to stderr, e.g. ebsim=debug; --debug is ebsim=debug).";

#[derive(Parser, Debug)]
#[command(
    name = "ebsim",
    version,
    about = "AWS KMS and EBS-style envelope encryption, for real, on one Linux box",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub service: Service,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Globals {
    /// Region whose KMS (and later volumes) to use [default: us-east-1]
    #[arg(long, global = true, env = "EBSIM_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// Output format [default: json]
    #[arg(long, global = true, env = "EBSIM_OUTPUT", value_enum)]
    pub output: Option<output::Format>,
    /// JMESPath expression applied to the response
    #[arg(long, global = true, value_name = "JMESPATH")]
    pub query: Option<String>,
    /// Data root [default: the checkout's volumes/ folder]
    #[arg(long, global = true, env = "EBSIM_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// How inline blob parameters are read [default: base64]
    #[arg(long, global = true, value_enum)]
    pub cli_binary_format: Option<input::BinaryFormat>,
    /// Attempts per call when throttled (exponential backoff with jitter) [default: 3]
    #[arg(long, global = true, env = "EBSIM_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Act as this principal: arn:aws:iam::ACCOUNT:root|user/NAME|role/NAME or
    /// arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION [default: the account root]
    #[arg(long, global = true, env = "EBSIM_PRINCIPAL", value_name = "ARN")]
    pub principal: Option<String>,
    /// Use a named profile from the data root's config (its principal and region)
    #[arg(long, global = true, env = "EBSIM_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Log what ebsim does to stderr (debug level; RUST_LOG selects otherwise)
    #[arg(long, global = true)]
    pub debug: bool,
}

#[derive(Subcommand, Debug)]
pub enum Service {
    /// AWS Key Management Service
    Kms {
        #[command(subcommand)]
        op: kms::KmsCommand,
    },
    /// Amazon EC2: EBS volumes and the region's EBS encryption settings
    Ec2 {
        #[command(subcommand)]
        op: ec2::Ec2Command,
    },
    /// Amazon RDS: PostgreSQL DB instances on encrypted volumes
    Rds {
        #[command(subcommand)]
        op: rds::RdsCommand,
    },
    /// EBS direct APIs: read and write snapshots block by block
    Ebs {
        #[command(subcommand)]
        op: ebs::EbsCommand,
    },
    /// Linux: attach a volume, put a loop device on it, optionally mkfs, and mount it on DIR (root)
    Mount {
        /// The volume (vol-…)
        volume_id: String,
        /// Where its filesystem is mounted
        dir: std::path::PathBuf,
        /// Make a filesystem first (erases the volume's contents)
        #[arg(long, value_name = "ext4|xfs")]
        mkfs: Option<String>,
    },
    /// Linux: undo ebsim mount: umount DIR, detach the loop device, detach the volume (root)
    Unmount { dir: std::path::PathBuf },
    /// IAM: users, roles and their inline identity policies
    Iam {
        #[command(subcommand)]
        op: iam::IamCommand,
    },
    /// Named profiles (the principal and region commands run as)
    Configure {
        #[command(subcommand)]
        op: configure::ConfigureCommand,
    },
    /// CloudTrail: look up the audit log
    Cloudtrail {
        #[command(subcommand)]
        op: cloudtrail::CloudTrailCommand,
    },
    /// Serves KMS, CloudTrail, EC2, the EBS direct APIs, STS and IAM over HTTP in AWS's
    /// wire protocols, for the AWS CLI, boto3 and the SDKs (--endpoint-url
    /// http://127.0.0.1:4599)
    Serve(serve::ServeArgs),
    /// ebsim's movable clock (an ebsim extension): make a year pass in a second
    Clock {
        #[command(subcommand)]
        op: clock::ClockCommand,
    },
}

/// What every handler needs: the data root, the region, the clock, output settings.
pub struct Ctx {
    pub root: DataRoot,
    pub region: String,
    pub clock: Clock,
    pub out: output::Output,
    pub binary: input::BinaryFormat,
    pub backoff: Backoff,
    pub caller: Caller,
    /// `--profile`, if given.
    pub profile: Option<String>,
    /// The data root's services, which every operation goes through.
    pub services: crate::service::Services,
}

impl Ctx {
    /// `configuring`: for `ebsim configure`, which edits profiles and so neither
    /// needs the profile to exist nor acts as its principal. `attachment_process`:
    /// this process serves an attachment (`attach-volume --foreground`), which
    /// stop signals detach ([`attachment_stop`]).
    fn new(g: &Globals, configuring: bool, attachment_process: bool) -> Result<Self> {
        let root = DataRoot::open(
            g.home
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::home::DEFAULT_ROOT)),
        )?;
        let config = root.config()?;
        let profile = match &g.profile {
            Some(name) if configuring => config.profiles.get(name).cloned(),
            Some(name) => Some(config.profiles.get(name).cloned().ok_or_else(|| {
                Error::environment(format!(
                    "The config profile ({name}) could not be found (set it with: ebsim configure set principal ARN --profile {name})"
                ))
            })?),
            None => None,
        };
        let region = g
            .region
            .clone()
            .or_else(|| profile.as_ref().and_then(|p| p.region.clone()))
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        crate::home::validate_region(&region)?;
        let principal = g
            .principal
            .clone()
            .or_else(|| profile.as_ref().and_then(|p| p.principal.clone()));
        let clock = match std::env::var("EBSIM_NOW") {
            Ok(t) if !t.is_empty() => Clock::manual(
                parse_time(&t)
                    .map_err(|e| Error::environment(format!("EBSIM_NOW: {}", e.message())))?,
            ),
            _ => Clock::system(chrono::TimeDelta::seconds(config.clock_offset_seconds)),
        };
        let max_attempts = g.max_attempts.unwrap_or(3);
        if max_attempts == 0 {
            return Err(Error::usage("--max-attempts must be at least 1"));
        }
        let stop = attachment_process.then(attachment_stop).transpose()?;
        let services = crate::service::Services::new(root.clone(), clock.clone())
            .with_ec2_hooks(move || crate::service::Ec2Hooks {
                cancel: Some(stop.clone().unwrap_or_else(interrupted)),
                progress: progress::reporter(),
            })
            .with_launcher(attach::instance_launcher)
            .with_storage_launcher(rds::storage_launcher);
        let caller = match principal.filter(|_| !configuring) {
            None => Caller::account_root(&config.account_id),
            Some(arn) => services.caller_for(&arn)?,
        };
        Ok(Ctx {
            services,
            profile: g.profile.clone(),
            caller,
            root,
            region,
            clock,
            out: output::Output {
                format: g.output.unwrap_or_default(),
                query: g.query.clone(),
            },
            binary: g.cli_binary_format.unwrap_or_default(),
            backoff: Backoff {
                max_attempts,
                ..Backoff::default()
            },
        })
    }

    /// The context of a request made from this command line.
    pub fn request_context(&self) -> crate::service::RequestContext {
        crate::service::RequestContext::new(
            self.caller.clone(),
            &self.region,
            crate::service::Source::Cli,
        )
    }

    /// Prints a response (nothing for an empty one, unless `--query` asks).
    pub fn print<T: serde::Serialize>(&self, operation: &str, resp: &T) -> Result<()> {
        let v = serde_json::to_value(resp).expect("responses serialize");
        if v.is_null() && self.out.query.is_none() {
            return Ok(());
        }
        self.out.print(operation, v)
    }
}

/// Set by the first Ctrl-C (SIGINT) or SIGTERM: long EC2 operations (snapshots,
/// copies, restores) stop at their next block, undo what they did and exit with
/// 130. A second signal ends the process at once (what it leaves is recovered by
/// the next command). Installed when the first EC2 service is opened.
pub fn interrupted() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    static FLAG: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
        std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // Order matters: the exit check runs first, so it sees the flag as the
            // previous signal left it.
            let _ = signal_hook::flag::register_conditional_shutdown(
                sig,
                exit::INTERRUPTED,
                flag.clone(),
            );
            let _ = signal_hook::flag::register(sig, flag.clone());
        }
        flag
    })
    .clone()
}

/// The stop flag of an attachment process: set by SIGINT, SIGTERM or SIGHUP. It
/// stops a snapshot in progress for a control client, and is also what
/// `host::serve` waits for to detach; unlike a command's, a second signal does
/// not end the process at once, which must unmount and flush first.
fn attachment_stop() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, flag.clone())
            .map_err(|e| Error::io("cannot install signal handlers", e))?;
    }
    Ok(flag)
}

/// `encrypt` → `Encrypt`, `re-encrypt` → `ReEncrypt`.
pub fn operation_name(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|w| {
            if w == "db" {
                // RDS's names: `describe-db-instances` → DescribeDBInstances.
                return "DB".to_string();
            }
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// Runs the command line; returns the process exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    // `kms encrypt` → Encrypt; a command without operations (`mount`) → Mount.
    let operation = matches
        .subcommand()
        .and_then(|(_, m)| m.subcommand_name())
        .or(matches.subcommand_name())
        .map(operation_name)
        .unwrap_or_default();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return exit::USAGE;
        }
    };
    let attachment_process = matches!(
        &cli.service,
        Service::Ec2 {
            op: ec2::Ec2Command::AttachVolume {
                foreground: true,
                ..
            }
        } | Service::Rds {
            op: rds::RdsCommand::ServeStorage { .. }
        }
    );
    logging::init(cli.globals.debug, attachment_process);
    match run(cli, attachment_process) {
        Ok(()) => exit::OK,
        Err(e) => {
            report(&e, &operation);
            exit::code(e.kind())
        }
    }
}

/// Prints an error the way the AWS CLI does.
pub fn report(e: &Error, operation: &str) {
    if e.kind().is_service_error() {
        eprintln!(
            "\nAn error occurred ({}) when calling the {operation} operation: {}",
            e.code(),
            e.message()
        );
    } else if e.kind() == ErrorKind::Usage {
        eprintln!("\n{}", e.message());
    } else if e.kind().is_damage() {
        eprintln!("ebsim: {} ({}): {}", operation, e.code(), e.message());
    } else {
        eprintln!("ebsim: {}", e.message());
    }
}

fn run(cli: Cli, attachment_process: bool) -> Result<()> {
    let ctx = Ctx::new(
        &cli.globals,
        matches!(cli.service, Service::Configure { .. }),
        attachment_process,
    )?;
    match cli.service {
        Service::Kms { op } => kms::run(&ctx, op),
        Service::Iam { op } => iam::run(&ctx, op),
        Service::Ec2 { op } => ec2::run(&ctx, op),
        Service::Ebs { op } => ebs::run(&ctx, op),
        Service::Rds { op } => rds::run(&ctx, op),
        Service::Mount {
            volume_id,
            dir,
            mkfs,
        } => attach::mount(&ctx, &volume_id, &dir, mkfs.as_deref()),
        Service::Unmount { dir } => attach::unmount(&ctx, &dir),
        Service::Configure { op } => configure::run(&ctx, op),
        Service::Cloudtrail { op } => cloudtrail::run(&ctx, op),
        Service::Clock { op } => clock::run(&ctx, op),
        Service::Serve(args) => serve::run(ctx, args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names() {
        assert_eq!(operation_name("encrypt"), "Encrypt");
        assert_eq!(operation_name("re-encrypt"), "ReEncrypt");
        assert_eq!(
            operation_name("describe-db-instances"),
            "DescribeDBInstances"
        );
        assert_eq!(
            operation_name("generate-data-key-without-plaintext"),
            "GenerateDataKeyWithoutPlaintext"
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
