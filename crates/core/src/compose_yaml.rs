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

fn line(node: &Node) -> usize {
    node.span.start.line().max(1)
}

fn key_text(node: &Node) -> Option<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
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

/// `node` with its merge keys resolved and Compose's tags applied; what
/// could not be resolved goes to `issues`.
pub fn resolve<'a>(node: &Node<'a>, path: &str, issues: &mut Vec<Issue>) -> Node<'a> {
    resolve_at(node, path, 0, issues)
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
                let name = key_text(k).unwrap_or_default();
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
                match compose_tag(v) {
                    Some(("reset", _)) => reset.push(name),
                    Some((_, inner)) => {
                        own.insert(k.clone(), resolve_at(inner, &at, depth + 1, issues));
                    }
                    None => {
                        own.insert(k.clone(), resolve_at(v, &at, depth + 1, issues));
                    }
                }
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
                            let name = key_text(&k).unwrap_or_default();
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
                    .filter(|(_, n)| !is_reset(n))
                    .map(|(i, n)| resolve_at(n, &format!("{path}[{i}]"), depth + 1, issues))
                    .collect(),
            ),
        },
        YamlData::Tagged(_, inner) if compose_tag(node).is_some() => {
            // A tag where no key holds it (a list item, the document):
            // `!override` is its value; `!reset` nothing.
            if is_reset(node) {
                MarkedYaml {
                    span: node.span,
                    data: YamlData::Value(Scalar::Null),
                }
            } else {
                resolve_at(inner, path, depth + 1, issues)
            }
        }
        _ => node.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use saphyr::LoadableYamlNode;

    fn resolved(text: &str) -> (String, Vec<Issue>) {
        let docs = MarkedYaml::load_from_str(text).unwrap();
        let mut issues = Vec::new();
        let node = resolve(&docs[0], "", &mut issues);
        (show(&node), issues)
    }

    /// A compact rendering: `{a: 1, b: [x]}`.
    fn show(node: &Node) -> String {
        match &node.data {
            YamlData::Mapping(m) => {
                let mut parts: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{}: {}", key_text(k).unwrap_or_default(), show(v)))
                    .collect();
                parts.sort();
                format!("{{{}}}", parts.join(", "))
            }
            YamlData::Sequence(s) => {
                format!("[{}]", s.iter().map(show).collect::<Vec<_>>().join(", "))
            }
            YamlData::Value(Scalar::Null) => "~".into(),
            _ => key_text(node).unwrap_or_else(|| "?".into()),
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
}
