//! What a rollout needs from the world: the daemon ([`Runtime`]) and the
//! edge ([`EdgeControl`]). The docker crate implements both; the tests use
//! fakes.

use std::future::Future;

use crate::edge::{Request, Response};
use crate::problem::Problem;
use crate::service::{Release, ServiceSpec};

/// A container of a service, as read from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotContainer {
    pub id: String,
    pub name: String,
    pub release: u32,
    pub slot: u32,
    pub running: bool,
    /// Exit code when it is not running and has run.
    pub exit_code: Option<i64>,
    /// IP on the stack's default network, when running.
    pub ip: Option<String>,
    /// Docker HEALTHCHECK status (`starting`, `healthy`, `unhealthy`), when it has one.
    pub health: Option<String>,
    /// Output of the last Docker health check.
    pub health_output: Option<String>,
}

/// Container name of a release's slot.
pub fn container_name(spec: &ServiceSpec, release: u32, slot: u32) -> String {
    format!("{}-{}-r{release}-s{slot}", spec.stack, spec.name)
}

/// What the rollout needs from the daemon.
pub trait Runtime: Send + Sync {
    /// The image ID of `image`, pulling it when it is not on the daemon.
    fn resolve_image(&self, image: &str) -> impl Future<Output = Result<String, Problem>> + Send;
    /// Creates the stack's networks and the service's volumes when missing.
    fn prepare(&self, spec: &ServiceSpec) -> impl Future<Output = Result<(), Problem>> + Send;
    /// Every container of the service, any release, running or not.
    fn containers(
        &self,
        stack: &str,
        service: &str,
    ) -> impl Future<Output = Result<Vec<SlotContainer>, Problem>> + Send;
    /// Creates (not starts) slot `slot` of `release`.
    fn create(
        &self,
        release: &Release,
        slot: u32,
    ) -> impl Future<Output = Result<String, Problem>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<(), Problem>> + Send;
    fn inspect(&self, id: &str) -> impl Future<Output = Result<SlotContainer, Problem>> + Send;
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), Problem>> + Send;
    /// Removes a container, never its named volumes.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), Problem>> + Send;
    /// The last lines of a container's output.
    fn logs(&self, id: &str, lines: usize) -> impl Future<Output = String> + Send;
    /// Copies each named volume of `spec` that exists into a snapshot,
    /// labelled as taken while `from` ran, before the deploy of `to`, and
    /// drops the snapshots `spec.snapshots.keep` no longer covers. Answers
    /// what it did, one line per volume. A runtime without volumes takes
    /// none.
    fn snapshot_volumes(
        &self,
        _spec: &ServiceSpec,
        _from: Option<u32>,
        _to: u32,
    ) -> impl Future<Output = Result<Vec<String>, Problem>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// What the rollout needs from the edge: one request, one answer.
pub trait EdgeControl: Send + Sync {
    fn call(&self, request: Request) -> impl Future<Output = Result<Response, Problem>> + Send;
}
