//! Removing a service: what it would take away first (nothing changed),
//! then, holding its rollout lock (refused while a rollout runs), its
//! routes on the edge (listeners close, requests in flight finish), the
//! containers of every release, and its record. Named volumes are never
//! removed here: the removal names the ones its releases mounted, for the
//! caller to remove only on the user's explicit word.

use super::{routes_of, Deployer, EdgeControl, Runtime};
use crate::edge::{Request, Response};
use crate::problem::{Problem, ProblemCode};
use crate::service::{MountKind, ServiceRecord};

/// What removing a service takes away (or took away).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Removal {
    /// `stack/service`.
    pub service: String,
    /// Its containers, of every release, by name.
    pub containers: Vec<String>,
    /// The host ports its routes listen on.
    pub routes: Vec<u16>,
    /// Whether its record (definition and releases) is stored.
    pub record: bool,
    /// The Docker volumes any of its releases mounted (not the external
    /// ones, which were never the stack's); left in place.
    pub volumes: Vec<String>,
}

fn volumes_of(record: Option<&ServiceRecord>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(r) = record else { return out };
    let specs = std::iter::once(&r.spec).chain(r.releases.iter().map(|rel| &rel.spec));
    for spec in specs {
        for m in &spec.mounts {
            let name = m.docker_volume(&spec.stack);
            if m.kind == MountKind::Volume && !m.external && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

impl<R: Runtime, E: EdgeControl> Deployer<R, E> {
    /// What removing `stack/service` would take away; nothing changes. A
    /// service with no record, no container and no route is unknown.
    pub async fn removal(&self, stack: &str, service: &str) -> Result<Removal, Problem> {
        let qualified = format!("{stack}/{service}");
        let (record, _) = self.load(stack, service).await?;
        let mut containers: Vec<String> = self
            .runtime
            .containers(stack, service)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        containers.sort();
        let mut routes: Vec<u16> = routes_of(&self.edge, &qualified)
            .await?
            .into_iter()
            .map(|r| r.spec.port)
            .collect();
        routes.sort_unstable();
        if record.is_none() && containers.is_empty() && routes.is_empty() {
            return Err(Problem::new(
                ProblemCode::UnknownService,
                format!("no service {qualified} on this environment"),
            ));
        }
        Ok(Removal {
            service: qualified,
            volumes: volumes_of(record.as_ref()),
            record: record.is_some(),
            containers,
            routes,
        })
    }

    /// Removes `stack/service` (see the module doc): refused while a
    /// rollout of it runs; what it took away.
    pub async fn remove_service(&self, stack: &str, service: &str) -> Result<Removal, Problem> {
        self.locked(stack, service, async {
            let removal = self.removal(stack, service).await?;
            for port in &removal.routes {
                self.edge_call(Request::RouteRemove { port: *port }).await?;
                self.note(format!("route on port {port} removed"));
            }
            for c in self.runtime.containers(stack, service).await? {
                if c.running {
                    self.runtime.stop(&c.id).await?;
                }
                self.runtime.remove(&c.id).await?;
                self.note(format!("container {} removed", c.name));
            }
            if removal.record {
                let (_, revision) = self.load(stack, service).await?;
                match self
                    .edge_call(Request::DocDelete {
                        key: crate::edge::service_doc_key(stack, service),
                        expect: Some(revision),
                    })
                    .await?
                {
                    Response::Ok => {}
                    other => {
                        return Err(Problem::new(
                            ProblemCode::EdgeError,
                            format!("unexpected answer from the edge: {other:?}"),
                        ))
                    }
                }
                self.note(format!("the record of {stack}/{service} removed"));
            }
            Ok(removal)
        })
        .await
    }
}
