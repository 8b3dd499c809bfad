//! Reading the inventory from a daemon, and turning bollard's types into
//! core's.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerSummary, ImageSummary};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptions, ListVolumesOptions,
};
use bollard::Docker;
use changeover_core::inventory::{
    Container, ContainerState, DaemonInfo, Group, Image, Inventory, Mount, Network, PortMapping,
    Volume,
};
use changeover_core::Problem;

use crate::connect::daemon_problem;

/// The daemon's version and platform.
pub async fn daemon_info(docker: &Docker) -> Result<DaemonInfo, Problem> {
    let v = docker
        .version()
        .await
        .map_err(|e| daemon_problem("reading the daemon's version", &e))?;
    let info = docker
        .info()
        .await
        .map_err(|e| daemon_problem("reading the daemon's info", &e))?;
    Ok(DaemonInfo {
        version: v.version.unwrap_or_default(),
        api_version: v.api_version.unwrap_or_default(),
        os: v.os.unwrap_or_default(),
        arch: v.arch.unwrap_or_default(),
        name: info.name.unwrap_or_default(),
    })
}

/// Everything at once. Each list is read in full; a failed read fails the
/// snapshot rather than showing a partial picture as if it were whole.
pub async fn inventory(docker: &Docker) -> Result<Inventory, Problem> {
    let (containers, images, volumes, networks) = tokio::try_join!(
        containers(docker, None),
        images(docker),
        volumes(docker),
        networks(docker)
    )?;
    Ok(Inventory {
        containers,
        images,
        volumes,
        networks,
    })
}

/// All containers, or those whose id is in `ids`.
pub async fn containers(
    docker: &Docker,
    ids: Option<&[String]>,
) -> Result<Vec<Container>, Problem> {
    let mut options = ListContainersOptionsBuilder::new().all(true);
    if let Some(ids) = ids {
        let filters: HashMap<&str, Vec<String>> = HashMap::from([("id", ids.to_vec())]);
        options = options.filters(&filters);
    }
    let list = docker
        .list_containers(Some(options.build()))
        .await
        .map_err(|e| daemon_problem("listing containers", &e))?;
    let mut out: Vec<Container> = list.into_iter().map(container_from).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub async fn images(docker: &Docker) -> Result<Vec<Image>, Problem> {
    let list = docker
        .list_images(Some(ListImagesOptionsBuilder::new().all(false).build()))
        .await
        .map_err(|e| daemon_problem("listing images", &e))?;
    let mut out: Vec<Image> = list.into_iter().map(image_from).collect();
    out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// The images with a tag in `repository` (`reg:5000/team/app`), as the
/// daemon filters them (cheaper than every image).
pub async fn images_of(docker: &Docker, repository: &str) -> Result<Vec<Image>, Problem> {
    let mut filters = HashMap::new();
    filters.insert("reference".to_string(), vec![repository.to_string()]);
    let list = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new()
                .all(false)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| daemon_problem(&format!("listing the images of {repository}"), &e))?;
    Ok(list.into_iter().map(image_from).collect())
}

pub async fn volumes(docker: &Docker) -> Result<Vec<Volume>, Problem> {
    let list = docker
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .map_err(|e| daemon_problem("listing volumes", &e))?;
    let mut out: Vec<Volume> = list
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| Volume {
            name: v.name,
            driver: v.driver,
            mountpoint: v.mountpoint,
            created_at: v.created_at,
            labels: sorted(v.labels),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub async fn networks(docker: &Docker) -> Result<Vec<Network>, Problem> {
    let list = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(|e| daemon_problem("listing networks", &e))?;
    let mut out: Vec<Network> = list
        .into_iter()
        .map(|n| Network {
            id: n.id.unwrap_or_default(),
            name: n.name.unwrap_or_default(),
            driver: n.driver.unwrap_or_default(),
            scope: n.scope.unwrap_or_default(),
            internal: n.internal.unwrap_or(false),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn sorted(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn container_from(c: ContainerSummary) -> Container {
    let labels = sorted(c.labels.unwrap_or_default());
    let name = c
        .names
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let mut ports: Vec<PortMapping> = c
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| PortMapping {
            private_port: p.private_port,
            public_port: p.public_port,
            ip: p.ip.filter(|ip| !ip.is_empty()),
            protocol: p.typ.map(|t| t.to_string()).unwrap_or_else(|| "tcp".into()),
        })
        .collect();
    ports.sort_by_key(|p| (p.private_port, p.public_port, p.ip.clone()));
    ports.dedup();
    let mut networks: Vec<String> = c
        .network_settings
        .and_then(|n| n.networks)
        .map(|n| n.into_keys().collect())
        .unwrap_or_default();
    networks.sort();
    let mounts = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| Mount {
            kind: m.typ.unwrap_or_default(),
            name: m.name.filter(|n| !n.is_empty()),
            source: m.source.unwrap_or_default(),
            destination: m.destination.unwrap_or_default(),
        })
        .collect();
    Container {
        id: c.id.unwrap_or_default(),
        name,
        image: c.image.unwrap_or_default(),
        image_id: c.image_id.unwrap_or_default(),
        command: c.command.unwrap_or_default(),
        created: c.created.unwrap_or_default(),
        state: c
            .state
            .map(|s| ContainerState::parse(s.as_ref()))
            .unwrap_or(ContainerState::Unknown),
        status: c.status.unwrap_or_default(),
        group: Group::from_labels(&labels),
        labels,
        ports,
        networks,
        mounts,
    }
}

fn image_from(i: ImageSummary) -> Image {
    let mut tags: Vec<String> = i
        .repo_tags
        .into_iter()
        .filter(|t| t != "<none>:<none>")
        .collect();
    tags.sort();
    Image {
        id: i.id,
        refs: tags
            .iter()
            .filter_map(|t| changeover_core::image::ImageRef::parse(t).ok())
            .collect(),
        tags,
        digests: i
            .repo_digests
            .into_iter()
            .filter(|d| d != "<none>@<none>")
            .collect(),
        size: i.size,
        created: i.created,
    }
}

/// Every container (running or not) matching all of `values` for the
/// daemon's filter `key` (`label`, `volume`, …); `context` says what the
/// listing was for in an error.
pub async fn containers_filtered(
    docker: &Docker,
    key: &str,
    values: Vec<String>,
    context: &str,
) -> Result<Vec<ContainerSummary>, Problem> {
    let filters = HashMap::from([(key.to_string(), values)]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| daemon_problem(context, &e))
}

/// One of Changeover's slot containers (it carries a release label), by
/// its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLabels {
    pub stack: String,
    pub service: String,
    pub running: bool,
}

/// Changeover's slot containers, of `stack` or of every stack.
pub async fn slot_containers(
    docker: &Docker,
    stack: Option<&str>,
) -> Result<Vec<SlotLabels>, Problem> {
    use changeover_core::edge::labels;
    let wanted = match stack {
        Some(s) => format!("{}={s}", labels::STACK),
        None => labels::STACK.to_string(),
    };
    let list = containers_filtered(
        docker,
        "label",
        vec![wanted],
        "listing the stacks' containers",
    )
    .await?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let l = c.labels.as_ref()?;
            l.get(labels::RELEASE)?;
            Some(SlotLabels {
                stack: l.get(labels::STACK)?.clone(),
                service: l.get(labels::SERVICE)?.clone(),
                running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
            })
        })
        .collect())
}

/// The networks Changeover made for `stack`, sorted.
pub async fn stack_networks(docker: &Docker, stack: &str) -> Result<Vec<String>, Problem> {
    use changeover_core::edge::labels;
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={stack}", labels::STACK),
            format!("{}=true", labels::MANAGED),
        ],
    )]);
    let mut names: Vec<String> = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| daemon_problem("listing the stack's networks", &e))?
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Removes a network (one already gone is fine).
pub async fn remove_network(docker: &Docker, name: &str) -> Result<(), Problem> {
    match docker.remove_network(name).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(daemon_problem(&format!("removing network {name}"), &e)),
    }
}
