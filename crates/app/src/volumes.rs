//! Volumes: what is in them, who uses them, which releases mounted them.
//! Everything goes through the environment's one Docker connection and the
//! volume helper (`changeover_docker::volumes`), never through host paths.

use base64::Engine;
use changeover_core::inventory::Volume;
use changeover_core::volume::{
    preview_kind, unescape, FilePreview, Listing, ReadHead, SizeWalk, VolumeDetail, VolumePath,
    VolumeUse, DEFAULT_PAGE, MAX_PAGE, PREVIEW_BYTES,
};
use changeover_core::{Problem, ProblemCode};
use changeover_docker::runtime::volume_name;
use changeover_docker::volumes as dv;

use crate::environments::Environment;

fn helper_problem(message: String) -> Problem {
    Problem::new(ProblemCode::VolumeHelper, message)
}

/// A volume with who uses it now and its lineage.
pub async fn inspect(env: &Environment, name: &str) -> Result<VolumeDetail, Problem> {
    let docker = env.docker().await?;
    let v = dv::inspect(&docker, name).await?;
    let users = dv::users(&docker, name).await?;
    let lineage = lineage(env, name).await?;
    Ok(VolumeDetail {
        name: v.name,
        driver: v.driver,
        created_at: v.created_at,
        labels: v.labels.into_iter().collect(),
        users,
        lineage,
    })
}

/// The releases whose services mounted `name`, from the service records.
async fn lineage(env: &Environment, name: &str) -> Result<Vec<VolumeUse>, Problem> {
    let mut out = Vec::new();
    for view in crate::services::services(env).await? {
        let record = &view.record;
        for r in &record.releases {
            for m in &r.spec.mounts {
                if m.kind == changeover_core::service::MountKind::Volume
                    && volume_name(&r.spec.stack, &m.source) == name
                {
                    out.push(VolumeUse {
                        service: view.name.clone(),
                        release: r.number,
                        image: r.image.clone(),
                        deployed_ms: r.created_ms,
                        target: m.target.clone(),
                        current: record.current == Some(r.number),
                    });
                }
            }
        }
    }
    out.sort_by_key(|u| (u.deployed_ms, u.release));
    Ok(out)
}

/// Every volume, from the live inventory.
pub async fn list(env: &Environment) -> Result<Vec<Volume>, Problem> {
    let docker = env.docker().await?;
    Ok(changeover_docker::read::inventory(&docker).await?.volumes)
}

/// One page of the folder `path` (escaped, as typed) in `volume`; `after`
/// is the `next_after` of the page before.
pub async fn files(
    env: &Environment,
    volume: &str,
    path: &str,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<Listing, Problem> {
    let path = VolumePath::parse(path)?;
    let mut args = vec!["list".to_string(), path.to_hex()];
    if let Some(a) = after {
        let raw = unescape(a).map_err(|why| {
            Problem::new(
                ProblemCode::InvalidPath,
                format!("\"{a}\" is not a file name: {why}"),
            )
        })?;
        let name = VolumePath::root()
            .join(&raw)
            .map_err(|why| Problem::new(ProblemCode::InvalidPath, why))?;
        args.extend(["--after".to_string(), name.to_hex()]);
    }
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::new(
            ProblemCode::InvalidPath,
            format!("a page holds 1 to {MAX_PAGE} entries, not {limit}"),
        ));
    }
    args.extend(["--limit".to_string(), limit.to_string()]);
    let docker = env.docker().await?;
    let out = dv::ask(&docker, volume, &args, dv::MAX_ANSWER).await?;
    serde_json::from_slice(&out)
        .map_err(|e| helper_problem(format!("the helper's listing does not read: {e}")))
}

/// Up to `length` bytes of the file `path` from `offset`.
pub async fn read(
    env: &Environment,
    volume: &str,
    path: &str,
    offset: u64,
    length: u64,
) -> Result<(ReadHead, Vec<u8>), Problem> {
    let path = VolumePath::parse(path)?;
    let args = vec![
        "read".to_string(),
        path.to_hex(),
        "--offset".to_string(),
        offset.to_string(),
        "--length".to_string(),
        length.to_string(),
    ];
    let docker = env.docker().await?;
    let out = dv::ask(&docker, volume, &args, dv::MAX_ANSWER).await?;
    let split = out
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| helper_problem("the helper's answer has no head".into()))?;
    let head: ReadHead = serde_json::from_slice(&out[..split])
        .map_err(|e| helper_problem(format!("the helper's answer does not read: {e}")))?;
    let body = out[split + 1..].to_vec();
    if body.len() as u64 != head.length {
        return Err(helper_problem(format!(
            "the helper sent {} bytes of the {} it announced",
            body.len(),
            head.length
        )));
    }
    Ok((head, body))
}

/// The start of a file, as the preview shows it (text up to 1 MB, images,
/// hex for the rest).
pub async fn preview(env: &Environment, volume: &str, path: &str) -> Result<FilePreview, Problem> {
    let (head, bytes) = read(env, volume, path, 0, PREVIEW_BYTES).await?;
    let parsed = VolumePath::parse(path)?;
    let name = parsed.display();
    Ok(FilePreview {
        path: name.clone(),
        size: head.size,
        kind: preview_kind(&name, &bytes),
        cut: head.size > head.length,
        data: base64::engine::general_purpose::STANDARD.encode(&bytes),
    })
}

/// Walks the folder `path` and counts what is in it, telling `progress`
/// about every 200 ms; answers the last count.
pub async fn size(
    env: &Environment,
    volume: &str,
    path: &str,
    mut progress: impl FnMut(&SizeWalk),
) -> Result<SizeWalk, Problem> {
    let path = VolumePath::parse(path)?;
    let docker = env.docker().await?;
    let mut pending = Vec::new();
    let mut last = None;
    dv::ask_streaming(
        &docker,
        volume,
        &["du".to_string(), path.to_hex()],
        |piece| {
            pending.extend_from_slice(piece);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let walk: SizeWalk = serde_json::from_slice(&line).map_err(|e| {
                    helper_problem(format!("the helper's count does not read: {e}"))
                })?;
                progress(&walk);
                last = Some(walk);
            }
            if pending.len() > 64 * 1024 {
                return Err(helper_problem("the helper's count line is too long".into()));
            }
            Ok(())
        },
    )
    .await?;
    last.filter(|w| w.done)
        .ok_or_else(|| helper_problem("the size walk ended before it was done".into()))
}
