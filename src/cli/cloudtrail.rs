//! `ebsim cloudtrail lookup-events`: CloudTrail's LookupEvents over the region's audit log
//! (the KMS's and EC2's records; src/kms/audit.rs).

use super::{Ctx, input};
use crate::clock::parse_time;
use crate::error::Result;
use crate::service::cloudtrail::{CloudTrailRequest, LookupEventsRequest};
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand, Debug)]
pub enum CloudTrailCommand {
    /// Looks up KMS and EC2 management events (newest first) by one attribute and a time range
    LookupEvents {
        /// AttributeKey=EventName,AttributeValue=Decrypt (keys: EventId, EventName,
        /// ReadOnly, Username, ResourceType, ResourceName, EventSource, AccessKeyId)
        #[arg(long, num_args = 1..)]
        lookup_attributes: Vec<String>,
        #[arg(long)]
        start_time: Option<String>,
        #[arg(long)]
        end_time: Option<String>,
        /// Events per page (1-50); given alone, one page is printed with its NextToken
        #[arg(long)]
        max_results: Option<u32>,
        #[arg(long)]
        next_token: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: CloudTrailCommand) -> Result<()> {
    match cmd {
        CloudTrailCommand::LookupEvents {
            lookup_attributes,
            start_time,
            end_time,
            max_results,
            next_token,
        } => {
            let attributes = if lookup_attributes.is_empty() {
                Vec::new()
            } else {
                input::structs("lookup-attributes", &lookup_attributes)?
            };
            let mut q = LookupEventsRequest {
                lookup_attributes: attributes,
                start_time: start_time.map(|t| parse_time(&t)).transpose()?,
                end_time: end_time.map(|t| parse_time(&t)).transpose()?,
                max_results,
                next_token,
            };
            let rc = ctx.request_context();
            let lookup = |q: &LookupEventsRequest| {
                ctx.services
                    .cloudtrail(&rc, CloudTrailRequest::LookupEvents(q.clone()))
            };
            if max_results.is_some() || q.next_token.is_some() {
                return ctx.out.print("LookupEvents", lookup(&q)?);
            }
            // Auto-paginate, as the AWS CLI does.
            let mut all = Vec::new();
            loop {
                let mut page = lookup(&q)?;
                if let Some(Value::Array(ev)) = page.get_mut("Events").map(Value::take) {
                    all.extend(ev);
                }
                match page.get("NextToken").and_then(Value::as_str) {
                    Some(t) => q.next_token = Some(t.to_string()),
                    None => break,
                }
            }
            ctx.out
                .print("LookupEvents", serde_json::json!({ "Events": all }))
        }
    }
}
