//! `procsync property …`: listing and setting runtime properties.

use std::process::ExitCode;

use anyhow::{Result, anyhow};

use super::{Connection, PropertyCommand, client, print_table};

pub async fn run(command: PropertyCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    match command {
        PropertyCommand::List { json } => {
            let properties = client.list_properties().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&properties)?);
            } else {
                let rows = properties
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.value.clone(),
                            p.default_value.clone(),
                            p.description.clone(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "VALUE", "DEFAULT", "DESCRIPTION"], rows);
            }
        }
        PropertyCommand::Get { name } => {
            let property = client
                .list_properties()
                .await?
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| {
                    anyhow!("unknown property `{name}`; `procsync property list` shows them")
                })?;
            println!("{}", property.value);
        }
        PropertyCommand::Set { name, value } => {
            let property = client.set_property(&name, &value).await?;
            println!("{} = {}", property.name, property.value);
        }
    }
    Ok(ExitCode::SUCCESS)
}
