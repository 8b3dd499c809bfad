//! The record of a service on its environment (definition, releases,
//! pending rollout, candidate), stored as a document on the edge with a
//! revision for compare-and-set writes.

use super::{expect_ok, Deployer, EdgeControl, Runtime};
use crate::edge::{service_doc_key, Request, Response};
use crate::problem::{Problem, ProblemCode};
use crate::service::ServiceRecord;

impl<R: Runtime, E: EdgeControl> Deployer<R, E> {
    /// The stored record of a service and its revision (0: none yet).
    pub async fn load(
        &self,
        stack: &str,
        service: &str,
    ) -> Result<(Option<ServiceRecord>, u64), Problem> {
        load_record(&self.edge, stack, service).await
    }

    pub(super) async fn save(
        &self,
        record: &ServiceRecord,
        revision: &mut u64,
    ) -> Result<(), Problem> {
        let value = serde_json::to_value(record)
            .map_err(|e| Problem::new(ProblemCode::EdgeError, e.to_string()))?;
        match self
            .edge_call(Request::DocPut {
                key: service_doc_key(&record.spec.stack, &record.spec.name),
                value,
                expect: Some(*revision),
            })
            .await?
        {
            Response::Doc { revision: r, .. } => {
                *revision = r;
                Ok(())
            }
            other => Err(Problem::new(
                ProblemCode::EdgeError,
                format!("unexpected answer from the edge: {other:?}"),
            )),
        }
    }
}

/// The stored record of `stack/service` on an edge and its revision (0: none
/// yet).
pub async fn load_record<E: EdgeControl>(
    edge: &E,
    stack: &str,
    service: &str,
) -> Result<(Option<ServiceRecord>, u64), Problem> {
    match expect_ok(
        edge.call(Request::DocGet {
            key: service_doc_key(stack, service),
        })
        .await?,
    )? {
        Response::Doc {
            value: Some(v),
            revision,
        } => serde_json::from_value(v)
            .map(|r| (Some(r), revision))
            .map_err(|e| {
                Problem::new(
                    ProblemCode::EdgeError,
                    format!("the stored record of {stack}/{service} is unreadable: {e}"),
                )
            }),
        Response::Doc { value: None, .. } => Ok((None, 0)),
        other => Err(Problem::new(
            ProblemCode::EdgeError,
            format!("unexpected answer from the edge: {other:?}"),
        )),
    }
}
