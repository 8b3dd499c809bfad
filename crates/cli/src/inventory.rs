//! `changeover ps`, `changeover images`, `changeover volumes`: what is on a
//! daemon, as tables for people or `--json` for scripts.

use changeover_core::inventory::{Container, Inventory};
use changeover_core::Problem;
use serde::Serialize;

use crate::print_json;
use crate::table::{age, bytes, Table};

fn group_label(c: &Container) -> String {
    match &c.group {
        Some(g) => match &g.service {
            Some(s) => format!("{}/{}", g.name, s),
            None => g.name.clone(),
        },
        None => String::new(),
    }
}

pub fn ps(inventory: &Inventory, json: bool) -> Result<(), Problem> {
    if json {
        return print_json(&inventory.containers);
    }
    let mut t = Table::new([
        "CONTAINER ID",
        "NAME",
        "IMAGE",
        "STATE",
        "STATUS",
        "STACK/SERVICE",
    ]);
    for (_, members) in inventory.grouped() {
        for c in members {
            t.row([
                c.id.chars().take(12).collect(),
                c.name.clone(),
                c.image.clone(),
                c.state.as_str().to_string(),
                c.status.clone(),
                group_label(c),
            ]);
        }
    }
    print!("{t}");
    Ok(())
}

pub fn images(inventory: &Inventory, json: bool) -> Result<(), Problem> {
    if json {
        return print_json(&inventory.images);
    }
    let users = inventory.image_users();
    let mut t = Table::new(["IMAGE ID", "TAGS", "SIZE", "CREATED", "CONTAINERS"]);
    for i in &inventory.images {
        let tags = if i.tags.is_empty() {
            "<none>".to_string()
        } else {
            i.tags.join(", ")
        };
        t.row([
            i.id.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect(),
            tags,
            bytes(i.size),
            age(i.created),
            users.get(i.id.as_str()).copied().unwrap_or(0).to_string(),
        ]);
    }
    print!("{t}");
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeRow<'a> {
    #[serde(flatten)]
    volume: &'a changeover_core::inventory::Volume,
    used_by: Vec<&'a str>,
}

pub fn volumes(inventory: &Inventory, json: bool) -> Result<(), Problem> {
    let users = inventory.volume_users();
    let rows: Vec<VolumeRow> = inventory
        .volumes
        .iter()
        .map(|v| VolumeRow {
            volume: v,
            used_by: users.get(v.name.as_str()).cloned().unwrap_or_default(),
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    let mut t = Table::new(["NAME", "DRIVER", "USED BY", "MOUNTPOINT"]);
    for r in rows {
        t.row([
            r.volume.name.clone(),
            r.volume.driver.clone(),
            if r.used_by.is_empty() {
                "-".to_string()
            } else {
                r.used_by.join(", ")
            },
            r.volume.mountpoint.clone(),
        ]);
    }
    print!("{t}");
    Ok(())
}
