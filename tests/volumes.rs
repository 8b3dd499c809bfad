//! Looking into volumes through the `changeover volume` commands, against
//! the real daemon and a second private daemon reached over its own socket
//! (nothing is read from host paths: the helper container does it all).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;

use changeover_tests::{changeover, docker, docker_at, PrivateDaemon, TestStack, TestVolume};
use serde_json::Value;

/// What the fixture script puts into `/v`.
const CONTENT: &str = r#"
set -e
cd /v
printf 'hello volume\n' > hello.txt
mkdir -p dir/sub
printf 'deep\n' > dir/sub/deep.txt
ln -s /etc/passwd link-out
ln -s dir link-in
printf 'new' > "$(printf 'new\nline')"
printf 'not utf-8 inside' > "$(printf 'bad\377name')"
printf 'only root reads this' > secret.txt
chown 1000:1000 secret.txt
chmod 600 secret.txt
dd if=/dev/zero of=big.bin bs=1024 count=3072 2>/dev/null
mkdir many
cd many
for i in $(seq 1 1200); do : > "f$i"; done
"#;

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what} must be refused: {err}");
    err
}

fn files(env: &[(&str, &str)], vol: &str, path: &str, extra: &[&str]) -> Value {
    let mut args = vec!["volume", "files", vol, path, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&changeover(&args, env), "volume files")).unwrap()
}

fn names(listing: &Value) -> Vec<String> {
    listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_volume_is_browsed_read_and_sized_without_following_links_out() {
    let vol = TestVolume::new(None, "t-vol", CONTENT);
    let v = vol.name.as_str();
    let root = files(&[], v, "/", &[]);
    assert_eq!(
        names(&root),
        vec![
            "bad\\xffname",
            "big.bin",
            "dir",
            "hello.txt",
            "link-in",
            "link-out",
            "many",
            "new\\x0aline",
            "secret.txt"
        ],
        "sorted by name bytes, odd names escaped"
    );
    let entry = |name: &str| -> Value {
        root["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry("dir")["kind"], "dir");
    assert_eq!(entry("hello.txt")["size"], 13);
    let out = entry("link-out");
    assert_eq!(out["kind"], "symlink");
    assert_eq!(out["target"], "/etc/passwd");
    assert_eq!(out["targetOutside"], true);
    assert_eq!(entry("link-in")["targetOutside"], false);
    let secret = entry("secret.txt");
    assert_eq!(
        (secret["uid"].as_u64(), secret["mode"].as_u64()),
        (Some(1000), Some(0o600))
    );

    // Contents, also of a file only its owner may read and of odd names.
    let cat = |path: &str| changeover(&["volume", "cat", v, path], &[]);
    assert_eq!(ok(&cat("/hello.txt"), "cat"), "hello volume\n");
    assert_eq!(ok(&cat("/dir/sub/deep.txt"), "cat deep"), "deep\n");
    assert_eq!(ok(&cat("secret.txt"), "cat secret"), "only root reads this");
    assert_eq!(ok(&cat("bad\\xffname"), "cat bad name"), "not utf-8 inside");
    assert_eq!(ok(&cat("new\\x0aline"), "cat newline name"), "new");
    let part = changeover(&["volume", "cat", v, "/big.bin", "--bytes", "1000"], &[]);
    assert_eq!(ok(&part, "cat --bytes").len(), 1000);
    assert!(String::from_utf8_lossy(&part.stderr).contains("1000 of the file's 3145728 bytes"));

    // Links are shown, never followed; paths never climb out.
    let err = refused(&cat("/link-out"), "reading through a link");
    assert!(err.contains("/link-out is a link to /etc/passwd"), "{err}");
    let err = refused(
        &changeover(&["volume", "files", v, "/link-in"], &[]),
        "listing through a link",
    );
    assert!(err.contains("does not follow"), "{err}");
    for bad in ["../../etc", "/dir/../../x", "a\\x00b", "\\q"] {
        let err = refused(
            &changeover(&["volume", "files", v, bad], &[]),
            "a path that is not allowed",
        );
        assert!(err.contains(bad), "{bad}: {err}");
    }
    let err = refused(
        &changeover(&["volume", "files", v, "/hello.txt"], &[]),
        "a file listed",
    );
    assert!(err.contains("is a file, not a folder"), "{err}");
    let err = refused(&cat("/nope.txt"), "a missing file");
    assert!(err.contains("nothing at /nope.txt"), "{err}");
    let err = refused(&cat("/dir"), "a folder read");
    assert!(err.contains("/dir is not a file"), "{err}");
    let err = refused(
        &changeover(&["volume", "files", "no-such-volume-here", "/"], &[]),
        "an unknown volume",
    );
    assert!(err.contains("no volume \"no-such-volume-here\""), "{err}");
    let err = refused(
        &changeover(&["volume", "files", v, "/", "--limit", "0"], &[]),
        "an empty page",
    );
    assert!(err.contains("1 to 5000"), "{err}");

    // A folder of 1,200 entries in pages: all of them, once each, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut extra = vec!["--limit", "500"];
        if let Some(a) = &after {
            extra.extend(["--after", a.as_str()]);
        }
        let page = files(&[], v, "/many", &extra);
        assert_eq!(page["total"], 1200);
        seen.extend(names(&page));
        match page["nextAfter"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 1200);
    assert_eq!(seen, sorted, "pages come in order, none twice");

    // Sizes, counted as `du` does.
    let walk: Value = serde_json::from_str(&ok(
        &changeover(&["volume", "du", v, "--json"], &[]),
        "volume du",
    ))
    .unwrap();
    assert_eq!(walk["done"], true);
    // 5 files and 2 links at the root, one file in dir/sub, 1,200 in many.
    assert_eq!(walk["files"], 1200 + 8, "{walk}");
    assert_eq!(walk["dirs"], 4, "{walk}");
    let du = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{v}:/v"),
        changeover_tests::fixture_image(),
        "du",
        "-s",
        "-k",
        "/v",
    ]);
    let kib: u64 = du.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(
        walk["diskBytes"].as_u64().unwrap() / 1024,
        kib,
        "{walk} vs du {du}"
    );

    // One helper, kept: no network, the volume read-only, nothing else.
    let helpers = vol.helpers();
    assert_eq!(helpers.len(), 1, "one helper serves every question");
    let inspect: Value = serde_json::from_str(&docker(&["inspect", &helpers[0]])).unwrap();
    let c = &inspect[0];
    assert_eq!(c["HostConfig"]["NetworkMode"], "none");
    assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(c["HostConfig"]["AutoRemove"], true);
    assert_eq!(c["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
    let mounts = c["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "only the volume: {mounts:?}");
    assert_eq!(mounts[0]["Name"], v);
    assert_eq!(mounts[0]["RW"], false);
}

#[test]
fn who_uses_a_volume_and_which_releases_mounted_it() {
    let stack = TestStack::new(
        "vol-lineage",
        "services:\n  app:\n    image: changeover-fixture:busybox\n    volumes: [\"data:/data\"]\n    labels: {dev.changeover.test: \"1\"}\nvolumes:\n  data: {}\n",
        &[],
    );
    changeover_tests::fixture_image();
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "stack deploy",
    );
    let vol = format!("{}_data", stack.name);
    let d: Value = serde_json::from_str(&ok(
        &changeover(&["volume", "inspect", &vol, "--json"], &[]),
        "volume inspect",
    ))
    .unwrap();
    let users = d["users"].as_array().unwrap();
    assert_eq!(users.len(), 1, "{d}");
    assert_eq!(users[0]["target"], "/data");
    assert_eq!(users[0]["running"], true);
    let lineage = d["lineage"].as_array().unwrap();
    assert_eq!(lineage.len(), 1, "{d}");
    assert_eq!(lineage[0]["service"], format!("{}/app", stack.name));
    assert_eq!(lineage[0]["release"], 1);
    assert_eq!(lineage[0]["current"], true);
    let listed = ok(&changeover(&["volume", "ls", "--json"], &[]), "volume ls");
    assert!(listed.contains(&vol), "{listed}");
}

#[test]
fn a_second_daemon_over_its_own_socket_is_browsed_the_same() {
    let daemon = PrivateDaemon::start();
    let host = daemon.host();
    let vol = TestVolume::new(
        Some(&host),
        "t-vol-remote",
        "printf 'far away\\n' > /v/there.txt",
    );
    let env = [
        ("DOCKER_HOST", host.as_str()),
        ("CHANGEOVER_VOLUME_HELPER_IDLE", "2"),
    ];
    let root = files(&env, &vol.name, "/", &[]);
    assert_eq!(names(&root), vec!["there.txt"]);
    assert_eq!(
        ok(
            &changeover(&["volume", "cat", &vol.name, "there.txt"], &env),
            "cat on the second daemon"
        ),
        "far away\n"
    );
    assert_eq!(vol.helpers().len(), 1, "the helper runs on that daemon");
    // Idle, it removes itself (here after 2 s; two minutes by default).
    let gone = changeover_tests::wait_for(std::time::Duration::from_secs(15), || {
        vol.helpers().is_empty().then_some(())
    });
    assert!(gone.is_some(), "the idle helper removed itself");
    docker_at(Some(&host), &["volume", "inspect", &vol.name]);
    let err = refused(
        &changeover(&["volume", "files", &vol.name, "/"], &[]),
        "the same volume on the default daemon",
    );
    assert!(err.contains("no volume"), "{err}");
    drop(vol);
    drop(daemon);
}
