//! A service on the edge: its routes (one per published port), their
//! targets (the containers) and traffic policies.
//!
//! [`routes_of`] is the one reader of a service's routes; an answer that is
//! not routes is an error, never "no routes".

use std::collections::BTreeSet;

use super::{Deployer, EdgeControl, Runtime};
use crate::edge::{
    EdgeErrorCode, Request, Response, RouteSpec, RouteStatus, Share, TargetSpec, TargetState,
    TrafficPolicy, Udp,
};
use crate::problem::{Problem, ProblemCode};
use crate::service::ServiceSpec;

fn edge_problem(code: EdgeErrorCode, message: String) -> Problem {
    let code = match code {
        EdgeErrorCode::PortInUse => ProblemCode::PortInUse,
        EdgeErrorCode::Conflict => ProblemCode::RolloutInProgress,
        _ => ProblemCode::EdgeError,
    };
    Problem::new(code, message)
}

/// Turns an error answer into a problem.
pub fn expect_ok(response: Response) -> Result<Response, Problem> {
    match response {
        Response::Error { code, message } => Err(edge_problem(code, message)),
        other => Ok(other),
    }
}

/// The routes of `service` (`stack/service`) on the edge.
pub async fn routes_of<E: EdgeControl>(
    edge: &E,
    service: &str,
) -> Result<Vec<RouteStatus>, Problem> {
    match expect_ok(
        edge.call(Request::Routes {
            service: Some(service.to_string()),
        })
        .await?,
    )? {
        Response::Routes { routes } => Ok(routes),
        other => Err(Problem::new(
            ProblemCode::EdgeError,
            format!("the edge answered {other:?} when asked for the routes of {service}"),
        )),
    }
}

impl<R: Runtime, E: EdgeControl> Deployer<R, E> {
    pub(super) async fn edge_call(&self, request: Request) -> Result<Response, Problem> {
        expect_ok(self.edge.call(request).await?)
    }

    /// Refuses a service whose host ports the edge cannot listen on.
    pub async fn check_ports(&self, spec: &ServiceSpec) -> Result<(), Problem> {
        for p in spec.routes() {
            self.edge_call(Request::PortCheck {
                port: p.host,
                service: spec.qualified(),
                udp: p.udp,
            })
            .await
            .map_err(|e| {
                Problem::new(
                    e.code,
                    format!(
                        "{}: cannot publish port {}: {}",
                        spec.qualified(),
                        p.label(),
                        e.message
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// The service's routes on the edge.
    pub(crate) async fn routes(&self, spec: &ServiceSpec) -> Result<Vec<RouteStatus>, Problem> {
        routes_of(&self.edge, &spec.qualified()).await
    }

    /// Changes the traffic policy of every route of the service with
    /// `change` (where that changes anything).
    pub(crate) async fn set_policy(
        &self,
        spec: &ServiceSpec,
        change: impl Fn(&mut TrafficPolicy),
    ) -> Result<(), Problem> {
        if spec.ports.is_empty() {
            return Ok(());
        }
        let routes = self.routes(spec).await?;
        self.apply(&routes, change).await
    }

    /// Changes the policy of each of `routes` with `change`, where that
    /// changes anything (one `traffic-set` per route).
    pub(crate) async fn apply(
        &self,
        routes: &[RouteStatus],
        change: impl Fn(&mut TrafficPolicy),
    ) -> Result<(), Problem> {
        for r in routes {
            let mut policy = r.policy.clone();
            change(&mut policy);
            if policy != r.policy {
                self.edge_call(Request::TrafficSet {
                    port: r.spec.port,
                    policy,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Creates or updates one route per published port; the first also
    /// answers the service's `hosts` on the shared ports, with its
    /// certificate sent first when it is given as files.
    pub(super) async fn set_routes(&self, spec: &ServiceSpec) -> Result<(), Problem> {
        if let Some(tls) = spec.tls.as_ref().filter(|_| !spec.hosts.is_empty()) {
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                let read = |path: &str| {
                    crate::stack::read_pem_file(path).map_err(|e| {
                        Problem::new(
                            ProblemCode::InvalidStack,
                            format!("{}: x-changeover.tls: {e}", spec.qualified()),
                        )
                    })
                };
                let (cert_pem, key_pem) = (read(cert)?, read(key)?);
                self.edge_call(Request::CertPut {
                    service: spec.qualified(),
                    cert_pem,
                    key_pem: crate::edge::SecretPem(key_pem),
                })
                .await
                .map_err(|e| {
                    Problem::new(
                        e.code,
                        format!("{}: x-changeover.tls: {}", spec.qualified(), e.message),
                    )
                })?;
            }
        }
        let routes = spec.routes();
        // The first route with HTTP answers the hosts.
        let site_at = routes
            .iter()
            .position(|r| r.udp != Udp::Only && r.protocol == crate::edge::Protocol::Http);
        for (i, p) in routes.into_iter().enumerate() {
            let site = site_at == Some(i);
            let mut health = spec.health.clone();
            // Datagrams alone: a Docker HEALTHCHECK is the better judge
            // than a TCP connect to a port that may not take one.
            health.docker = p.udp == Udp::Only && spec.healthcheck.is_some();
            // A relayed port (PostgreSQL beside the service's HTTP) is
            // checked by connecting: it answers no HTTP path.
            if p.protocol == crate::edge::Protocol::Tcp {
                health.path = None;
            }
            self.edge_call(Request::RouteSet {
                route: RouteSpec {
                    port: p.host,
                    service: spec.qualified(),
                    health,
                    drain_timeout_ms: spec.drain_timeout_ms,
                    protocol: p.protocol,
                    udp: p.udp,
                    timeouts: spec.timeouts,
                    trusted_proxies: spec.trusted_proxies.clone(),
                    hosts: if site { spec.hosts.clone() } else { Vec::new() },
                    tls: spec.tls.as_ref().filter(|_| site).map(|t| t.site()),
                },
            })
            .await?;
        }
        Ok(())
    }

    pub(super) async fn restore_routes(&self, spec: &ServiceSpec) -> Result<(), Problem> {
        if spec.ports.is_empty() {
            return Ok(());
        }
        // Routed means routed at the container's address now: one that
        // restarted with another IP is routed again.
        let routed: BTreeSet<String> = self
            .routes(spec)
            .await?
            .into_iter()
            .flat_map(|r| r.targets)
            .filter(|t| t.state != TargetState::Draining)
            .map(|t| format!("{}@{}", t.spec.id, t.spec.addr))
            .collect();
        for c in self.runtime.containers(&spec.stack, &spec.name).await? {
            let Some(ip) = c.ip.as_ref().filter(|_| c.running) else {
                continue;
            };
            if spec
                .ports
                .iter()
                .all(|p| routed.contains(&format!("{}@{ip}:{}", c.name, p.container)))
            {
                continue;
            }
            for p in spec.routes() {
                self.edge_call(Request::TargetAdd {
                    port: p.host,
                    target: TargetSpec {
                        id: c.name.clone(),
                        addr: format!("{ip}:{}", p.container),
                        release: c.release,
                    },
                    wait_healthy_ms: Some(spec.health.interval_ms.max(1000) * 2),
                })
                .await?;
            }
            self.note(format!("routed {} again (release {})", c.name, c.release));
        }
        Ok(())
    }

    /// Takes off the service's routes every target whose container is gone,
    /// runs no more, or answers at another address now (it restarted with
    /// a new IP, or the daemon gave its IP to another container): no request
    /// may go to a target that is not the container it names. Answers the
    /// names it removed.
    pub async fn prune_gone(&self, spec: &ServiceSpec) -> Result<Vec<String>, Problem> {
        if spec.ports.is_empty() {
            return Ok(Vec::new());
        }
        // Routes first: a target on them was added after its container
        // started, so the containers read next show it running unless it
        // really stopped — a rollout adding targets meanwhile loses none.
        let routes = self.routes(spec).await?;
        let running: std::collections::BTreeMap<String, Option<String>> = self
            .runtime
            .containers(&spec.stack, &spec.name)
            .await?
            .into_iter()
            .filter(|c| c.running)
            .map(|c| (c.name, c.ip))
            .collect();
        let mut removed = Vec::new();
        for r in routes {
            for t in &r.targets {
                let port = t.spec.addr.rsplit(':').next().unwrap_or_default();
                let here = running
                    .get(&t.spec.id)
                    .and_then(|ip| ip.as_ref())
                    .is_some_and(|ip| t.spec.addr == format!("{ip}:{port}"));
                if here {
                    continue;
                }
                self.edge_call(Request::TargetRemove {
                    port: r.spec.port,
                    id: t.spec.id.clone(),
                })
                .await?;
                if !removed.contains(&t.spec.id) {
                    removed.push(t.spec.id.clone());
                }
            }
        }
        if !removed.is_empty() {
            self.note(format!(
                "took {} off the routes of {}: no such running container any more",
                removed.join(", "),
                spec.qualified()
            ));
        }
        Ok(removed)
    }

    /// Names of the service's targets that are not draining.
    pub(crate) async fn routed_ids(&self, spec: &ServiceSpec) -> Result<BTreeSet<String>, Problem> {
        Ok(self
            .routes(spec)
            .await?
            .into_iter()
            .flat_map(|r| r.targets)
            .filter(|t| t.state != TargetState::Draining)
            .map(|t| t.spec.id)
            .collect())
    }
}

/// Every healthy target alike, whatever its release: no shares, no guard,
/// no preview (maintenance stays as it is).
pub(crate) fn even(p: &mut TrafficPolicy) {
    p.weights.clear();
    p.guard = None;
    p.tripped = None;
    p.preview = None;
}

/// `[(release, weight)]` as shares, leaving out absent releases.
pub(crate) fn shares(pairs: &[(Option<u32>, u32)]) -> Vec<Share> {
    pairs
        .iter()
        .filter_map(|(r, weight)| {
            r.map(|release| Share {
                release,
                weight: *weight,
            })
        })
        .collect()
}
