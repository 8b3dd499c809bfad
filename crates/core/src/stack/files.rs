//! Compose's `secrets:` and `configs:`: a file of the stack's folder that a
//! service sees at `/run/secrets/NAME` (a secret) or `/NAME` (a config),
//! mounted read-only from the daemon's host as Compose does without Swarm.
//! Only `file:` can be carried so: `environment:` and `content:` would need
//! a file Changeover writes on the daemon's host, and `external:` names a
//! Swarm object; each is refused with what to write instead.

use std::collections::BTreeMap;
use std::path::Path;

use super::{entries, items, scalar, Node, Reader};
use crate::service::{Mount, MountKind};

/// A declared secret or config: the file it comes from, or why it cannot
/// be mounted.
pub(super) type Declared = BTreeMap<String, Result<String, String>>;

/// The top-level `secrets:` or `configs:` (`kind`), each by name.
pub(super) fn declared(r: &mut Reader, node: &Node, kind: &str, dir: Option<&Path>) -> Declared {
    let mut out = Declared::new();
    for (name, spec) in r.map(node, kind) {
        let key = format!("{kind}.{name}");
        let mut file = None;
        let mut refused = None;
        for (f, v) in r.map(spec, &key) {
            let k = format!("{key}.{f}");
            match f.as_str() {
                "file" => {
                    let Some(path) = r.string(v, &k) else { continue };
                    let full = match dir {
                        Some(d) if !Path::new(&path).is_absolute() => d.join(path.trim_start_matches("./")),
                        _ => Path::new(&path).to_path_buf(),
                    };
                    if dir.is_some() && !full.is_file() {
                        // Said where a service uses it.
                        refused = Some(format!("its file {} is not there", full.display()));
                        continue;
                    }
                    file = Some(full.to_string_lossy().to_string());
                }
                "environment" | "content" => {
                    refused = Some(format!(
                        "`{f}` is refused: Changeover mounts {kind} from files on the daemon's host; write it to a file beside the stack and say `file: ./{name}`"
                    ))
                }
                "external" => {
                    refused = Some(format!(
                        "an external {} is a Swarm object; Changeover mounts {kind} from files: say `file: ./{name}`",
                        kind.trim_end_matches('s')
                    ))
                }
                "name" | "labels" | "driver" | "driver_opts" | "template_driver" => {
                    r.warn(v, &k, format!("`{f}` is not applied; the file is mounted as it is"))
                }
                _ => r.error(v, &k, format!("unknown {} key `{f}` (file)", kind.trim_end_matches('s'))),
            }
        }
        let entry = match (file, refused) {
            (_, Some(why)) => Err(why),
            (Some(f), None) => Ok(f),
            (None, None) => Err(format!("{key} has no `file:`")),
        };
        out.insert(name, entry);
    }
    out
}

/// A service's `secrets:` or `configs:` (`kind`) as read-only binds of the
/// declared files.
pub(super) fn mounts(
    r: &mut Reader,
    node: &Node,
    key: &str,
    kind: &str,
    declared: &Declared,
) -> Vec<Mount> {
    let mut out = Vec::new();
    let Some(list) = items(node) else {
        r.error(node, key, format!("expected a list of {kind}"));
        return out;
    };
    for (i, item) in list.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let (source, target) = match entries(item) {
            Some(fields) => {
                let (mut source, mut target) = (None, None);
                for (f, v) in fields {
                    match f.as_str() {
                        "source" => source = r.string(v, &format!("{k}.source")),
                        "target" => target = r.string(v, &format!("{k}.target")),
                        "uid" | "gid" | "mode" => r.warn(
                            v,
                            &format!("{k}.{f}"),
                            format!("`{f}` is not applied: the file keeps its owner and mode on the daemon's host"),
                        ),
                        _ => r.error(v, &format!("{k}.{f}"), format!("unknown key `{f}` (source, target)")),
                    }
                }
                match source {
                    Some(s) => (s, target),
                    None => {
                        r.error(item, &k, "needs a `source`");
                        continue;
                    }
                }
            }
            None => match scalar(item) {
                Some(s) => (s, None),
                None => {
                    r.error(
                        item,
                        &k,
                        format!("expected the name of one of the top-level {kind}"),
                    );
                    continue;
                }
            },
        };
        let file = match declared.get(&source) {
            Some(Ok(file)) => file.clone(),
            Some(Err(why)) => {
                r.error(item, &k, format!("{kind} `{source}`: {why}"));
                continue;
            }
            None => {
                r.error(
                    item,
                    &k,
                    format!("`{source}` is not declared under the top-level `{kind}:`"),
                );
                continue;
            }
        };
        let target = match (kind, target) {
            (_, Some(t)) if t.starts_with('/') => t,
            ("secrets", Some(t)) => format!("/run/secrets/{t}"),
            ("secrets", None) => format!("/run/secrets/{source}"),
            (_, Some(t)) => {
                r.error(
                    item,
                    &format!("{k}.target"),
                    format!("{t:?} is not an absolute path in the container"),
                );
                continue;
            }
            (_, None) => format!("/{source}"),
        };
        out.push(Mount {
            kind: MountKind::Bind,
            source: file,
            target,
            read_only: true,
            options: Vec::new(),
            anonymous: false,
            volume: None,
            external: false,
        });
    }
    out
}
