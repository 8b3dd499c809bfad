//! What a rollout reports as it goes (the CLI prints it, the window draws
//! its timeline from it), why a slot failed, and what a rollout achieved.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::service::Strategy;

/// Phases a slot goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum SlotPhase {
    Creating,
    Starting,
    HealthChecking,
    Routed,
    OldDraining,
    OldStopped,
    /// The slot is done: its target release runs and is routed.
    Done,
    Failed,
    /// A container beyond the new replica count was drained and stopped.
    ScaledDown,
}

/// Timings of one finished slot, for the timeline and the benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SlotTimings {
    /// From the slot's start until the next slot may start: its new
    /// container routed (start-first; the old one then drains and stops
    /// while the rollout goes on) or, stop-first, the old one stopped first.
    #[ts(type = "number")]
    pub total_ms: u64,
    /// Docker create + start, until the process runs.
    #[ts(type = "number")]
    pub start_ms: u64,
    /// From running to the first passing health check.
    #[ts(type = "number")]
    pub health_ms: u64,
    /// Everything else: routing, and for stop-first draining and stopping
    /// the old container.
    #[ts(type = "number")]
    pub overhead_ms: u64,
}

/// What a rollout reports as it goes. The CLI prints these; the GUI draws
/// its timeline from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[ts(export)]
pub enum RolloutEvent {
    Planned {
        service: String,
        from: Option<u32>,
        to: u32,
        image: String,
        slots: u32,
        /// Finishing (or undoing) a rollout another client left half done.
        resumed: bool,
        rollback: bool,
        /// Blue-green or canary: the new release starts beside `from`,
        /// which keeps the traffic.
        beside: Option<Strategy>,
    },
    Note {
        message: String,
    },
    /// A line of a service's image build (`build:`), before its rollout.
    Build {
        service: String,
        line: String,
    },
    /// An image that is not on the daemon is being pulled (before the
    /// first slot): each layer's progress so far.
    Pulling {
        progress: crate::registry::PullProgress,
    },
    Slot {
        slot: u32,
        release: u32,
        phase: SlotPhase,
        /// Milliseconds since the rollout started.
        #[ts(type = "number")]
        at_ms: u64,
        detail: Option<String>,
        timings: Option<SlotTimings>,
    },
    /// The rollout failed and the previous release is being restored.
    Restoring {
        to: Option<u32>,
    },
    Finished {
        ok: bool,
        release: Option<u32>,
        message: String,
    },
}

pub type EventSink = Arc<dyn Fn(RolloutEvent) + Send + Sync>;

/// Why a slot failed, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SlotFailure {
    pub slot: u32,
    pub release: u32,
    pub reason: String,
    pub health_output: Option<String>,
    pub logs: String,
}

impl std::fmt::Display for SlotFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "slot {} of release {}: {}",
            self.slot, self.release, self.reason
        )?;
        if let Some(h) = &self.health_output {
            write!(f, "\nlast health check: {h}")?;
        }
        if !self.logs.trim().is_empty() {
            write!(
                f,
                "\ncontainer logs (last lines):\n{}",
                self.logs.trim_end()
            )?;
        }
        Ok(())
    }
}

/// The result of a successful rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct RolloutOutcome {
    pub service: String,
    pub from: Option<u32>,
    pub release: u32,
    /// Nothing had to change.
    pub unchanged: bool,
    pub slots: Vec<SlotTimings>,
    #[ts(type = "number")]
    pub took_ms: u64,
}
