//! Building a service's image on the environment's daemon from its `build:`
//! context: the context packed as a tar (`.dockerignore` honoured, links
//! kept as links, never followed), its size checked before anything is
//! read, the image tagged from the content ([`changeover_core::build`]) so
//! the same context builds once, and the build log streamed line by line.

use std::path::{Path, PathBuf};

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use changeover_core::build::{build_tag, BuildSpec, Ignore};
use changeover_core::{Problem, ProblemCode};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// The largest context sent (Docker's own CLI warns long before).
pub const MAX_CONTEXT: u64 = 1 << 30;
/// Lines of build output kept for a failure's message.
const KEPT_LINES: usize = 30;

/// A packed context.
pub struct Context {
    pub tar: Vec<u8>,
    /// Over the tar and every build setting (hex).
    pub hash: String,
    pub files: usize,
    pub bytes: u64,
}

fn problem(message: String) -> Problem {
    Problem::new(ProblemCode::BuildFailed, message)
}

/// What is sent, found first so the size is known before reading a byte.
struct Entry {
    path: PathBuf,
    name: String,
    kind: Kind,
}

enum Kind {
    Dir,
    File(u64),
    Link(PathBuf),
}

fn walk(
    root: &Path,
    rel: &str,
    ignore: &Ignore,
    dockerfile: &str,
    out: &mut Vec<Entry>,
    total: &mut u64,
    limit: u64,
) -> Result<(), Problem> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| problem(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            return Err(problem(format!(
                "{} has a name that is not UTF-8; leave it out with a .dockerignore",
                e.path().display()
            )));
        };
        let rel_name = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let keep = rel_name == dockerfile || rel_name == ".dockerignore";
        let excluded = !keep && ignore.excluded(&rel_name);
        let meta = std::fs::symlink_metadata(e.path())
            .map_err(|err| problem(format!("cannot read {}: {err}", e.path().display())))?;
        if meta.is_dir() {
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            if !excluded {
                out.push(Entry {
                    path: e.path(),
                    name: rel_name.clone(),
                    kind: Kind::Dir,
                });
            }
            walk(root, &rel_name, ignore, dockerfile, out, total, limit)?;
        } else if excluded {
            continue;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(e.path())
                .map_err(|err| problem(format!("cannot read {}: {err}", e.path().display())))?;
            out.push(Entry {
                path: e.path(),
                name: rel_name,
                kind: Kind::Link(target),
            });
        } else if meta.is_file() {
            *total += meta.len();
            if *total > limit {
                return Err(problem(format!(
                    "the build context {} holds more than {} MB (at {rel_name}); leave build output, dependencies and data out with a .dockerignore",
                    root.display(),
                    limit / 1_000_000
                )));
            }
            out.push(Entry {
                path: e.path(),
                name: rel_name,
                kind: Kind::File(meta.len()),
            });
        }
        // Sockets, devices, fifos: not sent, as Docker's CLI skips them.
    }
    Ok(())
}

/// Packs the context of `spec` (its folder is `spec.context`) into a tar,
/// refusing one over `limit` bytes before reading any file.
pub fn pack(spec: &BuildSpec, limit: u64) -> Result<Context, Problem> {
    let root = Path::new(&spec.context);
    if !root.is_dir() {
        return Err(problem(format!(
            "the build context {} is not a folder that exists",
            root.display()
        )));
    }
    let ignore = match std::fs::read_to_string(root.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(problem(format!("cannot read .dockerignore: {e}"))),
    };
    let dockerfile = spec.dockerfile().trim_start_matches("./").to_string();
    if !root.join(&dockerfile).is_file() {
        return Err(problem(format!(
            "there is no {dockerfile} in the build context {}",
            root.display()
        )));
    }
    let mut entries = Vec::new();
    let mut bytes = 0;
    walk(
        root,
        "",
        &ignore,
        &dockerfile,
        &mut entries,
        &mut bytes,
        limit,
    )?;
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut files = 0;
    for e in &entries {
        let mut header = tar::Header::new_gnu();
        // Same content, same tar: times and owners are not part of it.
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let mode = std::fs::symlink_metadata(&e.path)
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o7777
            })
            .unwrap_or(0o644);
        header.set_mode(mode);
        let fail = |err: std::io::Error| problem(format!("cannot pack {}: {err}", e.name));
        match &e.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, format!("{}/", e.name), std::io::empty())
                    .map_err(fail)?;
            }
            Kind::Link(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &e.name, target)
                    .map_err(fail)?;
            }
            Kind::File(size) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(*size);
                let file = std::fs::File::open(&e.path).map_err(fail)?;
                tar.append_data(&mut header, &e.name, file.take(*size))
                    .map_err(fail)?;
                files += 1;
            }
        }
    }
    let tar = tar
        .into_inner()
        .map_err(|e| problem(format!("cannot pack the build context: {e}")))?;
    let mut h = Sha256::new();
    h.update(&tar);
    h.update(b"\0dockerfile\0");
    h.update(dockerfile.as_bytes());
    for (k, v) in &spec.args {
        h.update(b"\0arg\0");
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
    }
    h.update(b"\0target\0");
    h.update(spec.target.as_deref().unwrap_or("").as_bytes());
    let hash = h
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok(Context {
        tar,
        hash,
        files,
        bytes,
    })
}

use std::io::Read as _;

/// What a build did.
pub struct Built {
    /// `REPO:b-HASH`.
    pub reference: String,
    /// Already on the daemon: nothing was built.
    pub cached: bool,
}

/// The largest Dockerfile read for its base images.
const MAX_DOCKERFILE: u64 = 1 << 20;

/// The images `spec`'s Dockerfile builds from
/// ([`changeover_core::build::base_images`]), read from the context.
fn base_images(spec: &BuildSpec) -> Result<Vec<String>, Problem> {
    let path = Path::new(&spec.context).join(spec.dockerfile());
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_DOCKERFILE).read_to_string(&mut text))
        .map_err(|e| problem(format!("cannot read {}: {e}", path.display())))?;
    Ok(changeover_core::build::base_images(&text, &spec.args))
}

/// The registries `spec`'s base images come from, each once; none when
/// the Dockerfile cannot be read (the build says why).
pub fn base_hosts(spec: &BuildSpec) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for image in base_images(spec).unwrap_or_default() {
        if let Ok(i) = changeover_core::image::ImageRef::parse(&image) {
            let host = changeover_core::registry::Repository::of(&i).host;
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    hosts
}

/// Builds `spec` on the daemon as `repository:b-HASH` unless that image is
/// there already; each line of the build's output goes to `line`. The
/// daemon pulls the base images (from `hosts`, [`base_hosts`]) with
/// `credentials` (`X-Registry-Config`, by registry). A failed build is a
/// problem naming the failing step with the output before it.
pub async fn build(
    docker: &Docker,
    spec: &BuildSpec,
    repository: &str,
    hosts: &[String],
    credentials: std::collections::HashMap<String, bollard::auth::DockerCredentials>,
    mut line: impl FnMut(&str),
) -> Result<Built, Problem> {
    let spec_owned = spec.clone();
    let context = tokio::task::spawn_blocking(move || pack(&spec_owned, MAX_CONTEXT))
        .await
        .map_err(|e| problem(format!("packing the build context failed: {e}")))??;
    let reference = format!("{repository}:{}", build_tag(&context.hash));
    if docker.inspect_image(&reference).await.is_ok() {
        return Ok(Built {
            reference,
            cached: true,
        });
    }
    line(&format!(
        "sending the build context: {} files, {} bytes",
        context.files, context.bytes
    ));
    let args: std::collections::HashMap<String, String> = spec.args.clone().into_iter().collect();
    let mut options = BuildImageOptionsBuilder::new()
        .dockerfile(spec.dockerfile())
        .t(&reference)
        .buildargs(&args)
        .rm(true)
        .forcerm(true);
    if let Some(t) = &spec.target {
        options = options.target(t);
    }
    let body = bollard::body_full(context.tar.into());
    let credentials = (!credentials.is_empty()).then_some(credentials);
    let mut stream = docker.build_image(options.build(), credentials, Some(body));
    let mut kept: std::collections::VecDeque<String> = Default::default();
    let mut step = None::<String>;
    let mut pending = String::new();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e) => {
                if let Some(said) = crate::connect::daemon_words(&e) {
                    return Err(failure(&reference, hosts, step.as_deref(), &kept, said));
                }
                return Err(crate::connect::daemon_problem(
                    &format!("building {reference}"),
                    &e,
                ));
            }
        };
        if let Some(message) = info.error_detail.and_then(|d| d.message) {
            return Err(failure(&reference, hosts, step.as_deref(), &kept, &message));
        }
        if let Some(text) = info.stream {
            pending.push_str(&text);
            while let Some(i) = pending.find('\n') {
                let l: String = pending[..i].trim_end().chars().take(2000).collect();
                pending.drain(..=i);
                if l.is_empty() {
                    continue;
                }
                if l.starts_with("Step ") {
                    step = Some(l.clone());
                }
                line(&l);
                kept.push_back(l);
                if kept.len() > KEPT_LINES {
                    kept.pop_front();
                }
            }
            if pending.len() > 64 * 1024 {
                pending.clear();
            }
        }
    }
    if docker.inspect_image(&reference).await.is_err() {
        return Err(failure(
            &reference,
            hosts,
            step.as_deref(),
            &kept,
            "the daemon ended the build without an image",
        ));
    }
    Ok(Built {
        reference,
        cached: false,
    })
}

fn failure(
    reference: &str,
    hosts: &[String],
    step: Option<&str>,
    kept: &std::collections::VecDeque<String>,
    message: &str,
) -> Problem {
    let at = step.map(|s| format!(" at {s}")).unwrap_or_default();
    let mut text = format!("the build of {reference} failed{at}: {}", message.trim());
    // A base image the registry would not give: say how to log in to it
    // (the registry the daemon named, or the only one the file pulls from).
    if step.is_some_and(|s| s.to_ascii_uppercase().contains(" : FROM ")) {
        let named = hosts.iter().find(|h| message.contains(h.as_str()));
        let host = named.or(if hosts.len() == 1 {
            hosts.first()
        } else {
            None
        });
        if let Some(host) = host {
            let pulled = crate::images::pull_problem(reference, host, message);
            if pulled.code == ProblemCode::RegistryUnauthorized {
                text.push_str(&format!(" (log in: changeover registry login {host})"));
            }
        }
    }
    // The output of the failing step (what followed its `Step` line).
    let tail: Vec<&String> = match kept.iter().rposition(|l| l.starts_with("Step ")) {
        Some(i) => kept.iter().skip(i + 1).collect(),
        None => kept.iter().collect(),
    };
    for l in tail {
        text.push_str("\n  ");
        text.push_str(l);
    }
    problem(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> BuildSpec {
        BuildSpec {
            context: dir.display().to_string(),
            dockerfile: None,
            args: Default::default(),
            target: None,
        }
    }

    fn names(tar: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn the_context_honours_dockerignore_and_its_hash_follows_content_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
        std::fs::write(d.join(".dockerignore"), "target\n*.log\n!keep.log\n").unwrap();
        std::fs::create_dir_all(d.join("target/debug")).unwrap();
        std::fs::write(d.join("target/debug/big"), vec![0u8; 4096]).unwrap();
        std::fs::write(d.join("app.log"), "x").unwrap();
        std::fs::write(d.join("keep.log"), "k").unwrap();
        std::fs::create_dir(d.join("src")).unwrap();
        std::fs::write(d.join("src/main.rs"), "fn main() {}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        let first = pack(&spec(d), MAX_CONTEXT).unwrap();
        assert_eq!(
            names(&first.tar),
            [
                ".dockerignore",
                "Dockerfile",
                "keep.log",
                "link",
                "src/",
                "src/main.rs"
            ]
        );
        let again = pack(&spec(d), MAX_CONTEXT).unwrap();
        assert_eq!(first.hash, again.hash, "the same context, the same hash");
        // Touching a file changes nothing; changing one does.
        std::fs::write(d.join("src/main.rs"), "fn main() {}").unwrap();
        assert_eq!(pack(&spec(d), MAX_CONTEXT).unwrap().hash, first.hash);
        std::fs::write(d.join("app.log"), "ignored, so no change").unwrap();
        assert_eq!(pack(&spec(d), MAX_CONTEXT).unwrap().hash, first.hash);
        std::fs::write(d.join("src/main.rs"), "fn main() { }").unwrap();
        let changed = pack(&spec(d), MAX_CONTEXT).unwrap();
        assert_ne!(changed.hash, first.hash);
        let mut with_arg = spec(d);
        with_arg.args.insert("V".into(), "2".into());
        assert_ne!(pack(&with_arg, MAX_CONTEXT).unwrap().hash, changed.hash);

        let over = pack(&spec(d), 10).err().unwrap();
        assert!(over.message.contains("more than"), "{}", over.message);
        let mut missing = spec(d);
        missing.dockerfile = Some("nope.Dockerfile".into());
        assert!(pack(&missing, MAX_CONTEXT)
            .err()
            .unwrap()
            .message
            .contains("no nope.Dockerfile"));
    }
}
