//! The live picture of every environment, as the shells hold it: one
//! [`EnvironmentView`] per environment, changed only by [`LiveUpdate`]s.
//!
//! The GUI backend keeps a [`LiveViews`] and forwards each update to the
//! window, which applies the same updates to its own copy; a window that opens
//! late asks for the views first and then follows the updates. Updates carry
//! whole objects, so applying one twice or out of a race is harmless.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::environment::{ConnectionState, EnvironmentList, EnvironmentSpec};
use crate::inventory::{Inventory, InventoryChange};

/// One environment as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct EnvironmentView {
    pub spec: EnvironmentSpec,
    pub is_default: bool,
    /// The host name links to published ports use (`localhost` for a local
    /// daemon, the remote host's name otherwise).
    pub link_host: String,
    pub state: ConnectionState,
    /// The last inventory read; kept (and shown as stale) while disconnected.
    pub inventory: Option<Inventory>,
}

impl EnvironmentView {
    /// An environment not connected yet.
    pub fn new(spec: &EnvironmentSpec, is_default: bool) -> Self {
        Self {
            spec: spec.clone(),
            is_default,
            link_host: spec
                .endpoint
                .as_ref()
                .map(|e| e.link_host())
                .unwrap_or_else(|| "localhost".into()),
            state: ConnectionState::Connecting,
            inventory: None,
        }
    }
}

/// A change to one environment's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[ts(export)]
pub enum LiveUpdate {
    State {
        environment: String,
        state: ConnectionState,
    },
    /// Replaces the environment's whole inventory.
    Snapshot {
        environment: String,
        inventory: Inventory,
    },
    /// One burst of daemon events, in order.
    Changes {
        environment: String,
        changes: Vec<InventoryChange>,
    },
    /// The user added an environment (or changed one: it replaces the old).
    Added { view: Box<EnvironmentView> },
    /// The user removed an environment.
    Removed { environment: String },
}

impl LiveUpdate {
    pub fn environment(&self) -> &str {
        match self {
            LiveUpdate::State { environment, .. }
            | LiveUpdate::Snapshot { environment, .. }
            | LiveUpdate::Changes { environment, .. }
            | LiveUpdate::Removed { environment } => environment,
            LiveUpdate::Added { view } => &view.spec.name,
        }
    }
}

/// Every environment's view, by name.
#[derive(Debug, Clone, Default)]
pub struct LiveViews {
    views: BTreeMap<String, EnvironmentView>,
}

impl LiveViews {
    pub fn new(list: &EnvironmentList) -> Self {
        let views = list
            .environments
            .iter()
            .map(|spec| {
                let view = EnvironmentView::new(spec, spec.name == list.default);
                (spec.name.clone(), view)
            })
            .collect();
        Self { views }
    }

    /// Applies an update; one for an unknown environment is ignored.
    pub fn apply(&mut self, update: &LiveUpdate) {
        match update {
            LiveUpdate::Added { view } => {
                self.views.insert(view.spec.name.clone(), (**view).clone());
                return;
            }
            LiveUpdate::Removed { environment } => {
                self.views.remove(environment);
                return;
            }
            _ => {}
        }
        let Some(view) = self.views.get_mut(update.environment()) else {
            return;
        };
        match update {
            LiveUpdate::State { state, .. } => view.state = state.clone(),
            LiveUpdate::Snapshot { inventory, .. } => view.inventory = Some(inventory.clone()),
            LiveUpdate::Changes { changes, .. } => {
                let inventory = view.inventory.get_or_insert_with(Inventory::default);
                for change in changes {
                    inventory.apply(change.clone());
                }
            }
            LiveUpdate::Added { .. } | LiveUpdate::Removed { .. } => {}
        }
    }

    pub fn get(&self, name: &str) -> Option<&EnvironmentView> {
        self.views.get(name)
    }

    /// Default environment first, then by name.
    pub fn all(&self) -> Vec<EnvironmentView> {
        let mut out: Vec<EnvironmentView> = self.views.values().cloned().collect();
        out.sort_by_key(|v| (!v.is_default, v.spec.name.clone()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::{discover, DiscoveryInput};
    use crate::inventory::tests::container;

    #[test]
    fn updates_change_only_their_environment_and_snapshots_replace() {
        let mut views = LiveViews::new(&discover(&DiscoveryInput::default()));
        views.apply(&LiveUpdate::Snapshot {
            environment: "default".into(),
            inventory: Inventory {
                containers: vec![container("a", "old", &[])],
                ..Default::default()
            },
        });
        views.apply(&LiveUpdate::Changes {
            environment: "default".into(),
            changes: vec![InventoryChange::ContainerUpserted {
                container: Box::new(container("b", "new", &[])),
            }],
        });
        views.apply(&LiveUpdate::Changes {
            environment: "elsewhere".into(),
            changes: vec![InventoryChange::ContainerRemoved { id: "b".into() }],
        });
        let names = |v: &LiveViews| -> Vec<String> {
            v.get("default")
                .unwrap()
                .inventory
                .as_ref()
                .unwrap()
                .containers
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(
            names(&views),
            ["old", "new"],
            "an update for another environment changes nothing here"
        );

        // after a reconnect the snapshot is the whole truth: nothing stale stays
        views.apply(&LiveUpdate::Snapshot {
            environment: "default".into(),
            inventory: Inventory {
                containers: vec![container("b", "new", &[])],
                ..Default::default()
            },
        });
        assert_eq!(names(&views), ["new"]);
        assert!(views.all()[0].is_default);
    }
}
