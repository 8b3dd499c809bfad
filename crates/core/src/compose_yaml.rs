//! The YAML of a Compose file as Compose reads it, before its keys are:
//! merge keys (`<<: *defaults`, or a list of them) resolved into the
//! mapping they are in (the mapping's own keys win; in a list the first
//! one that has a key wins), and Compose's own tags — `!reset` (the key is
//! gone, with what it inherited) and `!override` (the value as written,
//! replacing what it inherited) — applied, so the reader never sees them.
//!
//! Nesting is bounded: saphyr refuses documents nested past its recursion
//! limit and alias bombs past its node budget; this pass stops at
//! [`MAX_DEPTH`] as well.

use saphyr::{AnnotatedMapping, MarkedYaml, Scalar, YamlData};

type Node<'a> = MarkedYaml<'a>;

/// The deepest nesting read.
pub const MAX_DEPTH: usize = 128;

/// One problem found while resolving: (line, dotted key, message).
pub type Issue = (usize, String, String);

/// The node's line (1-based).
pub(crate) fn line(node: &Node) -> usize {
    node.span.start.line().max(1)
}

/// The node's scalar as text (numbers and booleans as written in YAML).
pub(crate) fn scalar(node: &Node) -> Option<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        YamlData::Representation(s, _, _) => Some(s.to_string()),
        _ => None,
    }
}

/// Compose's tag on a node: `reset`, `override`, or none.
fn compose_tag<'n, 'a>(node: &'n Node<'a>) -> Option<(&'static str, &'n Node<'a>)> {
    if let YamlData::Tagged(tag, inner) = &node.data {
        if tag.handle == "!" && tag.suffix == "reset" {
            return Some(("reset", inner));
        }
        if tag.handle == "!" && tag.suffix == "override" {
            return Some(("override", inner));
        }
    }
    None
}

/// Whether `node` is a `!reset` (its key is dropped).
pub fn is_reset(node: &Node) -> bool {
    matches!(compose_tag(node), Some(("reset", _)))
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `node` with its merge keys resolved; Compose's tags stay (an `extends`
/// reads them), a key tagged `!reset` keeping out what a merge key gives.
pub fn merge_keys<'a>(node: &Node<'a>, path: &str, issues: &mut Vec<Issue>) -> Node<'a> {
    resolve_at(node, path, 0, issues)
}

/// `node` with `!reset` keys and items gone and `!override` unwrapped.
pub fn strip_tags<'a>(node: &Node<'a>) -> Node<'a> {
    match &node.data {
        YamlData::Mapping(m) => {
            let mut out: AnnotatedMapping<'a, Node<'a>> = AnnotatedMapping::new();
            for (k, v) in m.iter() {
                if !is_reset(v) {
                    out.insert(k.clone(), strip_tags(v));
                }
            }
            MarkedYaml {
                span: node.span,
                data: YamlData::Mapping(out),
            }
        }
        YamlData::Sequence(list) => MarkedYaml {
            span: node.span,
            data: YamlData::Sequence(
                list.iter()
                    .filter(|n| !is_reset(n))
                    .map(strip_tags)
                    .collect(),
            ),
        },
        YamlData::Tagged(_, inner) if compose_tag(node).is_some() => {
            if is_reset(node) {
                MarkedYaml {
                    span: node.span,
                    data: YamlData::Value(Scalar::Null),
                }
            } else {
                strip_tags(inner)
            }
        }
        _ => node.clone(),
    }
}

fn resolve_at<'a>(node: &Node<'a>, path: &str, depth: usize, issues: &mut Vec<Issue>) -> Node<'a> {
    if depth > MAX_DEPTH {
        issues.push((
            line(node),
            path.to_string(),
            format!("nested more than {MAX_DEPTH} levels deep; a Compose file never is"),
        ));
        return MarkedYaml {
            span: node.span,
            data: YamlData::Value(Scalar::Null),
        };
    }
    match &node.data {
        YamlData::Mapping(m) => {
            let mut own: AnnotatedMapping<'a, Node<'a>> = AnnotatedMapping::new();
            let mut merged: Vec<&Node<'a>> = Vec::new();
            let mut reset: Vec<String> = Vec::new();
            for (k, v) in m.iter() {
                let name = scalar(k).unwrap_or_default();
                if name == "<<"
                    && !matches!(
                        k.data,
                        YamlData::Representation(
                            _,
                            saphyr::ScalarStyle::SingleQuoted | saphyr::ScalarStyle::DoubleQuoted,
                            _
                        )
                    )
                {
                    merged.push(v);
                    continue;
                }
                let at = join(path, &name);
                if is_reset(v) {
                    reset.push(name);
                }
                own.insert(k.clone(), resolve_at(v, &at, depth + 1, issues));
            }
            for v in merged {
                let sources: Vec<&Node<'a>> = match &v.data {
                    YamlData::Mapping(_) => vec![v],
                    YamlData::Sequence(list)
                        if list.iter().all(|n| matches!(n.data, YamlData::Mapping(_))) =>
                    {
                        list.iter().collect()
                    }
                    _ => {
                        issues.push((
                            line(v),
                            join(path, "<<"),
                            "a merge key takes a mapping (an alias like *defaults) or a list of them".into(),
                        ));
                        continue;
                    }
                };
                for source in sources {
                    let resolved = resolve_at(source, path, depth + 1, issues);
                    if let YamlData::Mapping(extra) = resolved.data {
                        for (k, v) in extra {
                            let name = scalar(&k).unwrap_or_default();
                            if !own.contains_key(&k) && !reset.contains(&name) {
                                own.insert(k, v);
                            }
                        }
                    }
                }
            }
            MarkedYaml {
                span: node.span,
                data: YamlData::Mapping(own),
            }
        }
        YamlData::Sequence(list) => MarkedYaml {
            span: node.span,
            data: YamlData::Sequence(
                list.iter()
                    .enumerate()
                    .map(|(i, n)| resolve_at(n, &format!("{path}[{i}]"), depth + 1, issues))
                    .collect(),
            ),
        },
        YamlData::Tagged(tag, inner) if compose_tag(node).is_some() => MarkedYaml {
            span: node.span,
            data: YamlData::Tagged(
                tag.clone(),
                Box::new(resolve_at(inner, path, depth + 1, issues)),
            ),
        },
        _ => node.clone(),
    }
}

/// A deep copy of `node` that borrows nothing, every span `at` (a node
/// read from another file is shown where the `extends:` that brought it
/// is).
pub fn owned<'a>(node: &MarkedYaml<'_>, at: &MarkedYaml<'_>) -> Node<'a> {
    use std::borrow::Cow;
    let data = match &node.data {
        YamlData::Representation(text, style, tag) => YamlData::Representation(
            Cow::Owned(text.to_string()),
            *style,
            tag.as_ref().map(|t| Cow::Owned(t.as_ref().clone())),
        ),
        YamlData::Value(v) => YamlData::Value(match v {
            Scalar::Null => Scalar::Null,
            Scalar::Boolean(b) => Scalar::Boolean(*b),
            Scalar::Integer(i) => Scalar::Integer(*i),
            Scalar::FloatingPoint(f) => Scalar::FloatingPoint(*f),
            Scalar::String(s) => Scalar::String(Cow::Owned(s.to_string())),
        }),
        YamlData::Sequence(list) => YamlData::Sequence(list.iter().map(|n| owned(n, at)).collect()),
        YamlData::Mapping(m) => {
            let mut out: AnnotatedMapping<'a, Node<'a>> = AnnotatedMapping::new();
            for (k, v) in m.iter() {
                out.insert(owned(k, at), owned(v, at));
            }
            YamlData::Mapping(out)
        }
        YamlData::Tagged(tag, inner) => {
            YamlData::Tagged(Cow::Owned(tag.as_ref().clone()), Box::new(owned(inner, at)))
        }
        YamlData::Alias(i) => YamlData::Alias(*i),
        YamlData::BadValue => YamlData::BadValue,
    };
    MarkedYaml {
        span: at.span,
        data,
    }
}

fn text_node<'a>(text: &str, at: &MarkedYaml<'_>) -> Node<'a> {
    MarkedYaml {
        span: at.span,
        data: YamlData::Value(Scalar::String(std::borrow::Cow::Owned(text.to_string()))),
    }
}

/// Keys whose list replaces the inherited one instead of adding to it.
const REPLACED_LISTS: &[&str] = &["command", "entrypoint", "test"];
/// Keys that are mappings written as `KEY=value` lists too.
const KEY_VALUE_LISTS: &[&str] = &[
    "environment",
    "labels",
    "args",
    "annotations",
    "sysctls",
    "extra_hosts",
];

/// A `KEY=value` list as the mapping it means (`KEY` alone: null).
fn as_mapping<'a>(node: &Node<'a>) -> Node<'a> {
    let YamlData::Sequence(list) = &node.data else {
        return node.clone();
    };
    let mut out: AnnotatedMapping<'a, Node<'a>> = AnnotatedMapping::new();
    for item in list {
        let text = scalar(item).unwrap_or_default();
        let (k, v) = match text.split_once('=') {
            Some((k, v)) => (k.to_string(), text_node(v, item)),
            None => (
                text.clone(),
                MarkedYaml {
                    span: item.span,
                    data: YamlData::Value(Scalar::Null),
                },
            ),
        };
        out.insert(text_node(&k, item), v);
    }
    MarkedYaml {
        span: node.span,
        data: YamlData::Mapping(out),
    }
}

/// `child` over `base` as Compose's `extends` merges them: mappings key by
/// key, lists added to (`command`, `entrypoint`, a healthcheck's `test`
/// replaced), scalars replaced, `!reset` dropping the inherited value and
/// `!override` replacing it whole. The child's own `extends` is gone.
pub fn merge_over<'a>(base: &Node<'a>, child: &Node<'a>) -> Node<'a> {
    let (YamlData::Mapping(b), YamlData::Mapping(c)) = (&base.data, &child.data) else {
        return child.clone();
    };
    let mut out: AnnotatedMapping<'a, Node<'a>> = AnnotatedMapping::new();
    for (k, v) in b.iter() {
        if scalar(k).as_deref() != Some("extends") {
            out.insert(k.clone(), v.clone());
        }
    }
    for (k, cv) in c.iter() {
        let name = scalar(k).unwrap_or_default();
        if name == "extends" {
            continue;
        }
        if is_reset(cv) {
            out.remove(k);
            continue;
        }
        if let Some(("override", inner)) = compose_tag(cv) {
            out.insert(k.clone(), (*inner).clone());
            continue;
        }
        let merged = match out.get(k) {
            None => cv.clone(),
            Some(bv) => {
                let keyed = KEY_VALUE_LISTS.contains(&name.as_str());
                match (&bv.data, &cv.data) {
                    _ if keyed => merge_over(&as_mapping(bv), &as_mapping(cv)),
                    (YamlData::Mapping(_), YamlData::Mapping(_)) => merge_over(bv, cv),
                    (YamlData::Sequence(bl), YamlData::Sequence(cl))
                        if !REPLACED_LISTS.contains(&name.as_str()) =>
                    {
                        let mut all = bl.clone();
                        for item in cl {
                            if !all.iter().any(|x| x.data == item.data) {
                                all.push(item.clone());
                            }
                        }
                        MarkedYaml {
                            span: cv.span,
                            data: YamlData::Sequence(all),
                        }
                    }
                    _ => cv.clone(),
                }
            }
        };
        out.insert(k.clone(), merged);
    }
    MarkedYaml {
        span: child.span,
        data: YamlData::Mapping(out),
    }
}

/// How many `extends` may chain.
pub const MAX_EXTENDS: usize = 10;

/// The mapping's value of `key`.
fn get<'n, 'a>(node: &'n Node<'a>, key: &str) -> Option<&'n Node<'a>> {
    match &node.data {
        YamlData::Mapping(m) => m
            .iter()
            .find(|(k, _)| scalar(k).as_deref() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Reads another Compose file for an `extends: {file: …}`.
pub type FileReader<'r> = &'r dyn Fn(&std::path::Path) -> Result<String, String>;

/// Every service of `services` (a mapping, merge keys resolved, tags
/// kept) with its `extends` applied, from this file or another one
/// (`dir` is where relative files are); what cannot be resolved goes to
/// `issues`.
pub fn apply_extends<'a>(
    services: &Node<'a>,
    dir: Option<&std::path::Path>,
    read: FileReader<'_>,
    issues: &mut Vec<Issue>,
) -> Node<'a> {
    let YamlData::Mapping(m) = &services.data else {
        return services.clone();
    };
    let mut out: AnnotatedMapping<'a, Node<'a>> = AnnotatedMapping::new();
    for (k, v) in m.iter() {
        let name = scalar(k).unwrap_or_default();
        let mut chain = vec![name.clone()];
        let merged = extended(services, v, &name, dir, read, &mut chain, issues);
        out.insert(k.clone(), merged);
    }
    MarkedYaml {
        span: services.span,
        data: YamlData::Mapping(out),
    }
}

fn extended<'a>(
    services: &Node<'a>,
    node: &Node<'a>,
    name: &str,
    dir: Option<&std::path::Path>,
    read: FileReader<'_>,
    chain: &mut Vec<String>,
    issues: &mut Vec<Issue>,
) -> Node<'a> {
    let Some(ext) = get(node, "extends") else {
        return node.clone();
    };
    let key = format!("services.{name}.extends");
    let (base_name, file) = match (&ext.data, scalar(ext)) {
        (YamlData::Mapping(_), _) => (
            get(ext, "service").and_then(scalar),
            get(ext, "file").and_then(scalar),
        ),
        (_, Some(s)) => (Some(s), None),
        _ => (None, None),
    };
    let Some(base_name) = base_name else {
        issues.push((
            line(ext),
            key,
            "give the service to extend: `extends: NAME` or `extends: {service: NAME, file: FILE}`"
                .into(),
        ));
        return node.clone();
    };
    if chain.len() > MAX_EXTENDS {
        issues.push((
            line(ext),
            key,
            format!("extends chains more than {MAX_EXTENDS} services deep"),
        ));
        return node.clone();
    }
    let link = format!(
        "{}{base_name}",
        file.as_deref().map(|f| format!("{f}:")).unwrap_or_default()
    );
    if chain.contains(&link) {
        issues.push((
            line(ext),
            key,
            format!(
                "extends goes round in a circle: {} → {link}",
                chain.join(" → ")
            ),
        ));
        return node.clone();
    }
    chain.push(link);
    let base: Option<Node<'a>> = match &file {
        None => match get(services, &base_name) {
            Some(b) => Some(extended(services, b, &base_name, dir, read, chain, issues)),
            None => {
                issues.push((
                    line(ext),
                    key.clone(),
                    format!("there is no service `{base_name}` in this file to extend"),
                ));
                None
            }
        },
        Some(f) => {
            let path = match dir {
                Some(d) if std::path::Path::new(f).is_relative() => d.join(f),
                _ => std::path::PathBuf::from(f),
            };
            match read(&path) {
                Err(why) => {
                    issues.push((line(ext), key.clone(), why));
                    None
                }
                Ok(text) => match <MarkedYaml as saphyr::LoadableYamlNode>::load_from_str(&text) {
                    Err(e) => {
                        issues.push((
                            line(ext),
                            key.clone(),
                            format!(
                                "{} is not valid YAML: {} (line {})",
                                path.display(),
                                e.info(),
                                e.marker().line()
                            ),
                        ));
                        None
                    }
                    Ok(docs) => {
                        let mut inner = Vec::new();
                        let root = docs.first().map(|r| merge_keys(r, "", &mut inner));
                        let other = root.as_ref().and_then(|r| get(r, "services"));
                        match other.and_then(|s| get(s, &base_name).map(|b| (s, b))) {
                            None => {
                                issues.push((
                                    line(ext),
                                    key.clone(),
                                    format!(
                                        "there is no service `{base_name}` in {}",
                                        path.display()
                                    ),
                                ));
                                None
                            }
                            Some((other_services, b)) => {
                                let there = path.parent();
                                let merged = extended(
                                    other_services,
                                    b,
                                    &base_name,
                                    there,
                                    read,
                                    chain,
                                    &mut inner,
                                );
                                for (_, k, m) in inner {
                                    issues.push((
                                        line(ext),
                                        key.clone(),
                                        format!("in {}: {k}: {m}", path.display()),
                                    ));
                                }
                                Some(owned(&merged, ext))
                            }
                        }
                    }
                },
            }
        }
    };
    chain.pop();
    match base {
        Some(b) => merge_over(&b, node),
        None => node.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use saphyr::LoadableYamlNode;

    fn resolved(text: &str) -> (String, Vec<Issue>) {
        let docs = MarkedYaml::load_from_str(text).unwrap();
        let mut issues = Vec::new();
        let node = strip_tags(&merge_keys(&docs[0], "", &mut issues));
        (show(&node), issues)
    }

    /// A compact rendering: `{a: 1, b: [x]}`.
    fn show(node: &Node) -> String {
        match &node.data {
            YamlData::Mapping(m) => {
                let mut parts: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{}: {}", scalar(k).unwrap_or_default(), show(v)))
                    .collect();
                parts.sort();
                format!("{{{}}}", parts.join(", "))
            }
            YamlData::Sequence(s) => {
                format!("[{}]", s.iter().map(show).collect::<Vec<_>>().join(", "))
            }
            YamlData::Value(Scalar::Null) => "~".into(),
            _ => scalar(node).unwrap_or_else(|| "?".into()),
        }
    }

    #[test]
    fn merge_keys_fill_in_what_the_mapping_does_not_say() {
        let (out, issues) = resolved(
            "x-defaults: &defaults {restart: always, labels: {team: a}, image: base}\n\
             x-more: &more {image: other, user: app}\n\
             web:\n  <<: *defaults\n  image: web:1\n\
             api:\n  <<: [*more, *defaults]\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert!(
            out.contains("web: {image: web:1, labels: {team: a}, restart: always}"),
            "{out}"
        );
        assert!(
            out.contains("api: {image: other, labels: {team: a}, restart: always, user: app}"),
            "the first of the list wins: {out}"
        );
    }

    #[test]
    fn reset_drops_and_override_replaces() {
        let (out, issues) = resolved(
            "x: &d {ports: [\"80:80\"], environment: {A: 1}, command: run}\n\
             web:\n  <<: *d\n  ports: !reset []\n  environment: !override {B: 2}\n\
             list: [a, !reset b, c]\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert!(
            out.contains("web: {command: run, environment: {B: 2}}"),
            "{out}"
        );
        assert!(out.contains("list: [a, c]"), "{out}");
    }

    #[test]
    fn a_merge_key_of_a_scalar_is_named() {
        let (_, issues) = resolved("web:\n  <<: nope\n  image: x\n");
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].0, 2);
        assert_eq!(issues[0].1, "web.<<");
        assert!(issues[0].2.contains("takes a mapping"), "{issues:?}");
    }

    fn extended_services(text: &str, dir: Option<&std::path::Path>) -> (String, Vec<Issue>) {
        let docs = MarkedYaml::load_from_str(text).unwrap();
        let mut issues = Vec::new();
        let root = merge_keys(&docs[0], "", &mut issues);
        let services = get(&root, "services").unwrap();
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let out = strip_tags(&apply_extends(services, dir, &read, &mut issues));
        (show(&out), issues)
    }

    #[test]
    fn extends_merges_as_compose_does() {
        let (out, issues) = extended_services(
            "services:\n  base:\n    image: app:1\n    environment: [A=1, B=2]\n    ports: [\"80:80\"]\n    command: [run, --slow]\n    labels: {team: a}\n  web:\n    extends: base\n    environment: {B: 3, C: 4}\n    ports: [\"81:81\"]\n    command: [run]\n  lean:\n    extends: {service: web}\n    ports: !reset []\n    labels: !override {only: me}\n",
            None,
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert!(
            out.contains("web: {command: [run], environment: {A: 1, B: 3, C: 4}, image: app:1, labels: {team: a}, ports: [80:80, 81:81]}"),
            "{out}"
        );
        assert!(
            out.contains("lean: {command: [run], environment: {A: 1, B: 3, C: 4}, image: app:1, labels: {only: me}}"),
            "a chain, !reset and !override: {out}"
        );
    }

    #[test]
    fn extends_from_another_file_and_its_mistakes() {
        let dir = std::env::temp_dir().join(format!("changeover-extends-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("common.yml"),
            "services:\n  app:\n    image: common:2\n    environment: {MODE: prod}\n",
        )
        .unwrap();
        let (out, issues) = extended_services(
            "services:\n  web:\n    extends: {file: common.yml, service: app}\n    ports: [\"80:80\"]\n",
            Some(&dir),
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert!(
            out.contains("web: {environment: {MODE: prod}, image: common:2, ports: [80:80]}"),
            "{out}"
        );
        let (_, issues) = extended_services(
            "services:\n  a:\n    extends: b\n  b:\n    extends: a\n  c:\n    extends: nope\n  d:\n    extends: {file: missing.yml, service: x}\n",
            Some(&dir),
        );
        let said: Vec<String> = issues
            .iter()
            .map(|(l, k, m)| format!("{l} {k}: {m}"))
            .collect();
        assert!(
            said.iter()
                .any(|m| m.starts_with("3 services.a.extends: extends goes round in a circle")),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|m| m
                    == "7 services.c.extends: there is no service `nope` in this file to extend"),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|m| m.starts_with("9 services.d.extends: cannot read")),
            "{said:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
