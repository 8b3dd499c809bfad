//! What the application layer pushes to the desktop app: live inventory
//! updates, every service of an environment whenever one changes, and the
//! traffic of the services whose Traffic panel is open (at least once a
//! second). The shell forwards each as a scoped event to the window; no view
//! polls for them.

use std::sync::Arc;

use changeover_core::live::LiveUpdate;
use changeover_core::service::{ServiceView, TrafficView};
use changeover_core::Problem;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Every service of one environment, as it stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ServicesUpdate {
    pub environment: String,
    pub services: Vec<ServiceView>,
    /// Why the services could not be read (the last list is then stale).
    pub problem: Option<Problem>,
}

/// One service's traffic, as the edge counts it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct TrafficUpdate {
    pub environment: String,
    /// `stack/service`.
    pub service: String,
    pub traffic: Option<TrafficView>,
    pub problem: Option<Problem>,
}

/// A watched service the app redeployed by itself (or tried to), while it
/// is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct RedeployUpdate {
    pub environment: String,
    pub check: crate::redeploy::RedeployCheck,
}

/// One push to the app.
#[derive(Debug, Clone)]
pub enum AppEvent {
    Live(LiveUpdate),
    Services(ServicesUpdate),
    Traffic(TrafficUpdate),
    Redeploy(RedeployUpdate),
}

/// Where pushes go. Decoupled from Tauri, so tests collect them.
pub type AppSink = Arc<dyn Fn(AppEvent) + Send + Sync>;
