//! `procsync remote invite | join | remove`: enrolling an edge into a
//! hub's group with a one-time join code, and unlinking it.

use std::process::ExitCode;

use anyhow::Result;

use super::{AdminClient, RemoteCommand};

pub async fn run(command: RemoteCommand, client: &mut AdminClient) -> Result<ExitCode> {
    match command {
        RemoteCommand::Invite {
            group,
            name,
            expires,
            endpoint,
            json,
        } => {
            let invited = client
                .invite_remote(&group, &name, expires, &endpoint)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&invited)?);
            } else {
                eprintln!(
                    "Invitation to group `{}`, usable once until {}. On the edge, run:",
                    invited.group, invited.expires_on
                );
                println!("procsync remote join {}", invited.code);
            }
        }
        RemoteCommand::Join {
            code,
            name,
            endpoint,
            json,
        } => {
            let joined = client.join_remote(&code, &name, &endpoint).await?;
            let ok = joined.problems.is_empty() && joined.hub_problems.is_empty();
            if json {
                println!("{}", serde_json::to_string_pretty(&joined)?);
            } else {
                let hub = &joined.remote_system;
                println!(
                    "joined group `{}` of hub `{}` as `{}`: outbound {}, inbound {}",
                    joined.group, hub.name, joined.member, hub.outbound_state, hub.inbound_state
                );
                for problem in &joined.problems {
                    eprintln!("  - here: {problem}");
                }
                for problem in &joined.hub_problems {
                    eprintln!("  - on the hub: {problem}");
                }
                if !ok {
                    eprintln!(
                        "the link is made but not valid yet; fix the above and run `procsync remote validate {}` (and on the hub, `procsync remote validate {}`)",
                        hub.name, joined.member
                    );
                }
            }
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        RemoteCommand::Remove { name, json } => {
            let unlinked = client.remove_remote(&name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&unlinked)?);
            } else if unlinked.peer_removed {
                println!("removed `{name}` here and at the peer");
            } else {
                println!(
                    "removed `{name}` here; the peer was not told ({}): run `procsync remote remove` there too",
                    unlinked.peer_error
                );
            }
        }
        _ => unreachable!("only enrolment commands come here"),
    }
    Ok(ExitCode::SUCCESS)
}
