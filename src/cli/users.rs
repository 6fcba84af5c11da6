//! `procsync user …`: adding users, tokens and roles.

use std::process::ExitCode;

use anyhow::Result;

use super::{Connection, UserCommand, client, print_table};

pub async fn run(command: UserCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    match command {
        UserCommand::Add {
            name,
            roles,
            domain,
        } => {
            let roles: Vec<String> = roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect();
            let (user, token) = client.add_user(&name, &roles, &domain).await?;
            println!("{token}");
            eprintln!(
                "added user `{}` (roles: {}; domain: {}); the token above is shown once",
                user.name,
                user.roles.join(","),
                user.domain
            );
        }
        UserCommand::List { json } => {
            let users = client.list_users().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                let rows = users
                    .iter()
                    .map(|u| vec![u.name.clone(), u.roles.join(","), u.domain.clone()])
                    .collect();
                print_table(&["NAME", "ROLES", "DOMAIN"], rows);
            }
        }
        UserCommand::Token { name } => {
            let token = client.issue_token(&name).await?;
            println!("{token}");
            eprintln!("issued a new token for `{name}`; its previous tokens no longer work");
        }
        UserCommand::Roles { name, roles } => {
            let user = client.set_roles(&name, &roles).await?;
            println!("{} {}", user.name, user.roles.join(","));
        }
    }
    Ok(ExitCode::SUCCESS)
}
