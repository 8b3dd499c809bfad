//! What runs on one daemon, as plain data, and how live changes apply to it.
//!
//! The daemon is the source of truth: an [`Inventory`] is a snapshot read
//! from it, kept current by [`InventoryChange`]s that the Docker adapter makes
//! from the daemon's event stream. A change always carries the object as the
//! daemon now reports it (or its removal), so applying one twice is harmless
//! and a reconnect simply replaces the whole snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Label Docker Compose puts on every container of a project.
pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";
/// Label Docker Compose puts on every container of a service.
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";
/// Label Changeover puts on every container of a stack.
pub const STACK_LABEL: &str = "dev.changeover.stack";
/// Label Changeover puts on every container of a service.
pub const SERVICE_LABEL: &str = "dev.changeover.service";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(export)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Unknown,
}

impl ContainerState {
    pub fn parse(s: &str) -> Self {
        match s {
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "removing" => Self::Removing,
            "exited" => Self::Exited,
            "dead" => Self::Dead,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Exited => "exited",
            Self::Dead => "dead",
            Self::Unknown => "unknown",
        }
    }
}

/// Who a container belongs to, read from its labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Group {
    pub kind: GroupKind,
    pub name: String,
    pub service: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(export)]
pub enum GroupKind {
    /// A Changeover stack.
    Stack,
    /// A Docker Compose project.
    Compose,
}

impl Group {
    /// Changeover's own labels win over Compose's: a stack deployed by
    /// Changeover from a Compose file is a stack.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Group> {
        let pick = |kind, project: &str, service: &str| {
            labels
                .get(project)
                .filter(|p| !p.is_empty())
                .map(|name| Group {
                    kind,
                    name: name.clone(),
                    service: labels.get(service).cloned(),
                })
        };
        pick(GroupKind::Stack, STACK_LABEL, SERVICE_LABEL).or_else(|| {
            pick(
                GroupKind::Compose,
                COMPOSE_PROJECT_LABEL,
                COMPOSE_SERVICE_LABEL,
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct PortMapping {
    pub private_port: u16,
    pub public_port: Option<u16>,
    pub ip: Option<String>,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Mount {
    /// `volume`, `bind`, `tmpfs`, …
    pub kind: String,
    /// The volume's name for volume mounts.
    pub name: Option<String>,
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub command: String,
    /// Unix seconds.
    #[ts(type = "number")]
    pub created: i64,
    pub state: ContainerState,
    /// Docker's human status ("Up 3 minutes", "Exited (0) 2 hours ago").
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub group: Option<Group>,
    pub ports: Vec<PortMapping>,
    pub networks: Vec<String>,
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Image {
    pub id: String,
    /// Every `repo:tag` pointing at this image; empty for dangling images.
    pub tags: Vec<String>,
    /// The same tags, parsed (the UI groups tags by repository from these).
    pub refs: Vec<crate::image::ImageRef>,
    pub digests: Vec<String>,
    /// Bytes.
    #[ts(type = "number")]
    pub size: i64,
    /// Unix seconds.
    #[ts(type = "number")]
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: String,
    /// RFC 3339 as the daemon reports it, when it does.
    pub created_at: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    pub internal: bool,
}

/// Facts about the daemon itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct DaemonInfo {
    pub version: String,
    pub api_version: String,
    pub os: String,
    pub arch: String,
    pub name: String,
}

/// One daemon's containers, images, volumes and networks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Inventory {
    pub containers: Vec<Container>,
    pub images: Vec<Image>,
    pub volumes: Vec<Volume>,
    pub networks: Vec<Network>,
}

/// One change read from the daemon. Images, volumes and networks are few and
/// change rarely, so they travel as whole lists; containers travel one by one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[ts(export)]
pub enum InventoryChange {
    ContainerUpserted { container: Box<Container> },
    ContainerRemoved { id: String },
    Images { images: Vec<Image> },
    Volumes { volumes: Vec<Volume> },
    Networks { networks: Vec<Network> },
}

impl Inventory {
    /// Applies a change. Idempotent: the same change twice leaves the same
    /// inventory, so replayed events cannot duplicate a container.
    pub fn apply(&mut self, change: InventoryChange) {
        match change {
            InventoryChange::ContainerUpserted { container } => {
                match self.containers.iter_mut().find(|c| c.id == container.id) {
                    Some(existing) => *existing = *container,
                    None => self.containers.push(*container),
                }
            }
            InventoryChange::ContainerRemoved { id } => self.containers.retain(|c| c.id != id),
            InventoryChange::Images { images } => self.images = images,
            InventoryChange::Volumes { volumes } => self.volumes = volumes,
            InventoryChange::Networks { networks } => self.networks = networks,
        }
    }

    /// Names of the containers that mount each volume, by volume name.
    pub fn volume_users(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in &self.containers {
            for m in &c.mounts {
                if let Some(name) = m.name.as_deref().filter(|_| m.kind == "volume") {
                    users.entry(name).or_default().push(c.name.as_str());
                }
            }
        }
        users
    }

    /// How many containers use each image, by image id.
    pub fn image_users(&self) -> BTreeMap<&str, usize> {
        let mut users: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &self.containers {
            *users.entry(c.image_id.as_str()).or_default() += 1;
        }
        users
    }

    /// Containers by group, groups sorted (stacks first, then Compose
    /// projects, by name), ungrouped ones last under `None`.
    pub fn grouped(&self) -> Vec<(Option<GroupKey>, Vec<&Container>)> {
        let mut groups: BTreeMap<Option<GroupKey>, Vec<&Container>> = BTreeMap::new();
        for c in &self.containers {
            let key = c.group.as_ref().map(|g| GroupKey {
                kind: g.kind,
                name: g.name.clone(),
            });
            groups.entry(key).or_default().push(c);
        }
        let mut out: Vec<_> = groups.into_iter().collect();
        // `None` sorts first in a BTreeMap; ungrouped containers go last.
        let ungrouped_first = out.first().is_some_and(|(k, _)| k.is_none());
        out.rotate_left(usize::from(ungrouped_first));
        for (_, members) in &mut out {
            members.sort_by(|a, b| a.name.cmp(&b.name));
        }
        out
    }
}

/// A group's identity without its service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub kind: GroupKind,
    pub name: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn container(id: &str, name: &str, labels: &[(&str, &str)]) -> Container {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Container {
            id: id.into(),
            name: name.into(),
            image: "fixture:1".into(),
            image_id: "sha256:img".into(),
            command: "sleep 1".into(),
            created: 0,
            state: ContainerState::Running,
            status: "Up".into(),
            group: Group::from_labels(&labels),
            labels,
            ports: vec![],
            networks: vec!["bridge".into()],
            mounts: vec![],
        }
    }

    #[test]
    fn changeover_labels_win_over_compose_labels() {
        let c = container(
            "1",
            "web-1",
            &[
                (COMPOSE_PROJECT_LABEL, "shop"),
                (STACK_LABEL, "shop-stack"),
                (SERVICE_LABEL, "web"),
            ],
        );
        let g = c.group.expect("labelled container has a group");
        assert_eq!(g.kind, GroupKind::Stack);
        assert_eq!(g.name, "shop-stack");
        assert_eq!(g.service.as_deref(), Some("web"));
        assert!(Group::from_labels(&BTreeMap::new()).is_none());
    }

    #[test]
    fn applying_a_change_twice_does_not_duplicate() {
        let mut inv = Inventory::default();
        let up = InventoryChange::ContainerUpserted {
            container: Box::new(container("a", "one", &[])),
        };
        inv.apply(up.clone());
        inv.apply(up);
        assert_eq!(
            inv.containers.len(),
            1,
            "an upsert replayed must not duplicate"
        );

        let mut stopped = container("a", "one", &[]);
        stopped.state = ContainerState::Exited;
        inv.apply(InventoryChange::ContainerUpserted {
            container: Box::new(stopped),
        });
        assert_eq!(inv.containers[0].state, ContainerState::Exited);

        inv.apply(InventoryChange::ContainerRemoved { id: "a".into() });
        inv.apply(InventoryChange::ContainerRemoved { id: "a".into() });
        assert!(inv.containers.is_empty());
    }

    #[test]
    fn groups_come_sorted_with_ungrouped_last() {
        let inv = Inventory {
            containers: vec![
                container("1", "loose", &[]),
                container("2", "b-web", &[(COMPOSE_PROJECT_LABEL, "blog")]),
                container("3", "a-db", &[(COMPOSE_PROJECT_LABEL, "blog")]),
                container("4", "edge", &[(STACK_LABEL, "zeta")]),
            ],
            ..Default::default()
        };
        let groups = inv.grouped();
        let keys: Vec<Option<&str>> = groups
            .iter()
            .map(|(k, _)| k.as_ref().map(|k| k.name.as_str()))
            .collect();
        assert_eq!(
            keys,
            [Some("zeta"), Some("blog"), None],
            "stacks, then compose, then loose"
        );
        let blog: Vec<&str> = groups[1].1.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(blog, ["a-db", "b-web"], "members sorted by name");
    }

    #[test]
    fn volume_users_follow_volume_mounts_only() {
        let mut a = container("1", "db", &[]);
        a.mounts = vec![
            Mount {
                kind: "volume".into(),
                name: Some("data".into()),
                source: "/var/lib/docker/volumes/data/_data".into(),
                destination: "/data".into(),
            },
            Mount {
                kind: "bind".into(),
                name: None,
                source: "/etc".into(),
                destination: "/host-etc".into(),
            },
        ];
        let inv = Inventory {
            containers: vec![a, container("2", "idle", &[])],
            ..Default::default()
        };
        let users = inv.volume_users();
        assert_eq!(users.get("data"), Some(&vec!["db"]));
        assert_eq!(users.len(), 1, "bind mounts are not volumes");
        assert_eq!(inv.image_users().get("sha256:img"), Some(&2));
    }
}
