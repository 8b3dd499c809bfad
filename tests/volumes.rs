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

    // Snapshot, diff and restore there too, the copies made by a helper on
    // that daemon: nothing of it is on the default one.
    let snap = ok(
        &changeover(&["volume", "snapshot", &vol.name, "--note", "far"], &env),
        "snapshot on the second daemon",
    )
    .trim()
    .to_string();
    changeover_tests::sh_in_volume(
        Some(&host),
        &vol.name,
        "printf 'changed\\n' > /v/there.txt && : > /v/added",
    );
    let d: Value = serde_json::from_str(&ok(
        &changeover(&["volume", "diff", &vol.name, &snap, "--json"], &env),
        "diff on the second daemon",
    ))
    .unwrap();
    assert_eq!(d["counts"]["added"], 1, "{d}");
    assert_eq!(d["counts"]["changed"], 1, "{d}");
    ok(
        &changeover(&["volume", "restore", &vol.name, &snap, "--yes"], &env),
        "restore on the second daemon",
    );
    assert_eq!(
        ok(
            &changeover(&["volume", "cat", &vol.name, "there.txt"], &env),
            "cat after the restore"
        ),
        "far away\n"
    );
    let here = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name={}", vol.name),
    ]);
    assert!(here.is_empty(), "nothing on the default daemon: {here}");
    for s in docker_at(
        Some(&host),
        &[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={}.snapshot-", vol.name),
        ],
    )
    .lines()
    {
        docker_at(Some(&host), &["volume", "rm", s]);
    }
    drop(vol);
    drop(daemon);
}

/// A volume name this test may create; removed (with its helpers) at the end.
struct Named(String);

impl Drop for Named {
    fn drop(&mut self) {
        let filter = format!("label=dev.changeover.helper=volume:{}", self.0);
        for id in docker(&["ps", "-aq", "--filter", &filter]).lines() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v", id])
                .output();
        }
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", &self.0])
            .output();
    }
}

/// A tar.gz whose entries are written as given (names unchecked, as an
/// attacker would).
fn raw_tar_gz(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    for (name, kind, link, body) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&out).unwrap();
    gz.finish().unwrap()
}

fn tar_names(file: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("tar")
        .arg("tzf")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn volumes_are_exported_imported_and_files_go_in_and_out_safely() {
    let vol = TestVolume::new(None, "t-xfer", CONTENT);
    let v = vol.name.as_str();
    let here = tempfile::tempdir().unwrap();
    let d = here.path();

    // Export: the whole volume, links as links, odd names kept.
    let exported = d.join("vol.tar.gz");
    let out = changeover(
        &["volume", "export", v, "-o", exported.to_str().unwrap()],
        &[],
    );
    ok(&out, "volume export");
    assert!(String::from_utf8_lossy(&out.stderr).contains("kept running"));
    let names = tar_names(&exported);
    assert_eq!(names.len(), 1200 + 8 + 3, "every entry: {:?}", &names[..12]);
    assert!(names.contains(&"dir/sub/deep.txt".to_string()));
    assert!(names.contains(&"link-out".to_string()));
    let err = refused(
        &changeover(
            &["volume", "export", v, "-o", exported.to_str().unwrap()],
            &[],
        ),
        "exporting over a file",
    );
    assert!(err.contains("exists already"), "{err}");
    let err = refused(
        &changeover(
            &[
                "volume",
                "export",
                v,
                "-o",
                d.join("x.zip").to_str().unwrap(),
            ],
            &[],
        ),
        "exporting to a name that is not .tar.gz",
    );
    assert!(err.contains("must end in .tar.gz"), "{err}");

    // Import into a new volume: the same files, owners and links.
    let copy = Named(changeover_tests::unique("t-xfer-copy"));
    ok(
        &changeover(
            &["volume", "import", exported.to_str().unwrap(), &copy.0],
            &[],
        ),
        "volume import",
    );
    assert_eq!(names_of(&copy.0, "/"), names_of(v, "/"));
    assert_eq!(names_of(&copy.0, "/many").len(), 500, "a page of the 1,200");
    let secret = files(&[], &copy.0, "/", &[])["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "secret.txt")
        .cloned()
        .unwrap();
    assert_eq!(
        (secret["uid"].as_u64(), secret["mode"].as_u64()),
        (Some(1000), Some(0o600))
    );
    assert_eq!(
        ok(
            &changeover(&["volume", "cat", &copy.0, "bad\\xffname"], &[]),
            "cat"
        ),
        "not utf-8 inside"
    );
    let link = files(&[], &copy.0, "/", &[])["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "link-out")
        .cloned()
        .unwrap();
    assert_eq!(link["target"], "/etc/passwd");

    // Not into a volume that holds something, unless replaced.
    let err = refused(
        &changeover(
            &["volume", "import", exported.to_str().unwrap(), &copy.0],
            &[],
        ),
        "importing into a volume that is not empty",
    );
    assert!(
        err.contains("is not empty") && err.contains("--replace"),
        "{err}"
    );
    ok(
        &changeover(
            &[
                "volume",
                "import",
                exported.to_str().unwrap(),
                &copy.0,
                "--replace",
            ],
            &[],
        ),
        "volume import --replace",
    );
    assert_eq!(names_of(&copy.0, "/"), names_of(v, "/"));

    // Hostile archives change nothing, and a refused import makes no volume.
    let before = names_of(&copy.0, "/");
    for (what, archive, said) in [
        (
            "climbs out",
            raw_tar_gz(&[("../evil", b'0', "", b"x")]),
            "`..` is not allowed",
        ),
        (
            "absolute",
            raw_tar_gz(&[("/evil", b'0', "", b"x")]),
            "absolute path",
        ),
        (
            "writes through its own link",
            raw_tar_gz(&[("l", b'2', "/etc", b""), ("l/evil", b'0', "", b"x")]),
            "goes through a link",
        ),
        (
            "a link then a file of its name",
            raw_tar_gz(&[
                ("ok.txt", b'0', "", b"fine"),
                ("f", b'2', "/etc/passwd", b""),
                ("f", b'0', "", b"x"),
            ]),
            "twice",
        ),
        (
            "a hard link out",
            raw_tar_gz(&[("h", b'1', "../../etc/passwd", b"")]),
            "`..` is not allowed",
        ),
    ] {
        let file = d.join(format!("{}.tar.gz", what.replace(' ', "-")));
        std::fs::write(&file, &archive).unwrap();
        let err = refused(
            &changeover(
                &[
                    "volume",
                    "put",
                    &copy.0,
                    "/",
                    file.to_str().unwrap(),
                    "--unpack",
                ],
                &[],
            ),
            what,
        );
        assert!(err.contains(said), "{what}: {err}");
        assert_eq!(names_of(&copy.0, "/"), before, "{what} changed nothing");
        let fresh = Named(changeover_tests::unique("t-xfer-refused"));
        refused(
            &changeover(&["volume", "import", file.to_str().unwrap(), &fresh.0], &[]),
            what,
        );
        let gone = std::process::Command::new("docker")
            .args(["volume", "inspect", &fresh.0])
            .output()
            .unwrap();
        assert!(
            !gone.status.success(),
            "a refused import leaves no volume ({what})"
        );
    }
    let broken = d.join("broken.tar.gz");
    std::fs::write(&broken, exported_head(&exported)).unwrap();
    let err = refused(
        &changeover(
            &[
                "volume",
                "put",
                &copy.0,
                "/",
                broken.to_str().unwrap(),
                "--unpack",
            ],
            &[],
        ),
        "a truncated archive",
    );
    assert!(err.contains("archive"), "{err}");
    assert_eq!(
        names_of(&copy.0, "/"),
        before,
        "a broken upload changed nothing"
    );

    // Files in and out.
    let get = d.join("hello.txt");
    ok(
        &changeover(
            &[
                "volume",
                "get",
                v,
                "/hello.txt",
                "-o",
                get.to_str().unwrap(),
            ],
            &[],
        ),
        "volume get",
    );
    assert_eq!(std::fs::read_to_string(&get).unwrap(), "hello volume\n");
    let err = refused(
        &changeover(
            &[
                "volume",
                "get",
                v,
                "/dir",
                "-o",
                d.join("dir").to_str().unwrap(),
            ],
            &[],
        ),
        "a folder to a plain file",
    );
    assert!(
        err.contains("is a folder") && err.contains(".tar.gz"),
        "{err}"
    );
    let dir_tgz = d.join("dir.tar.gz");
    ok(
        &changeover(
            &["volume", "get", v, "/dir", "-o", dir_tgz.to_str().unwrap()],
            &[],
        ),
        "volume get a folder",
    );
    assert_eq!(tar_names(&dir_tgz), vec!["sub", "sub/deep.txt"]);
    assert!(
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().contains(".partial")),
        "no partial file is left"
    );

    let upload = d.join("up");
    std::fs::create_dir_all(upload.join("inner")).unwrap();
    std::fs::write(upload.join("inner/a.txt"), "uploaded\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", upload.join("inner/link")).unwrap();
    ok(
        &changeover(
            &["volume", "put", &copy.0, "/dir", upload.to_str().unwrap()],
            &[],
        ),
        "volume put a folder",
    );
    assert_eq!(
        ok(
            &changeover(&["volume", "cat", &copy.0, "/dir/up/inner/a.txt"], &[]),
            "cat"
        ),
        "uploaded\n"
    );
    assert_eq!(
        names_of(&copy.0, "/dir"),
        vec!["sub", "up"],
        "what was there stays"
    );
    let good = d.join("good.tar.gz");
    std::fs::write(&good, raw_tar_gz(&[("fresh.txt", b'0', "", b"new")])).unwrap();
    ok(
        &changeover(
            &[
                "volume",
                "put",
                &copy.0,
                "/",
                good.to_str().unwrap(),
                "--unpack",
            ],
            &[],
        ),
        "volume put --unpack",
    );
    assert_eq!(
        ok(
            &changeover(&["volume", "cat", &copy.0, "/fresh.txt"], &[]),
            "cat"
        ),
        "new"
    );
    let filter = format!("label=dev.changeover.helper=volume:{}", copy.0);
    let helpers = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
    assert!(
        !helpers.contains("-write-"),
        "no writing helper is left: {helpers}"
    );
}

fn names_of(vol: &str, path: &str) -> Vec<String> {
    names(&files(&[], vol, path, &[]))
}

/// The first third of an archive: a transfer cut off.
fn exported_head(file: &std::path::Path) -> Vec<u8> {
    let all = std::fs::read(file).unwrap();
    all[..all.len() / 3].to_vec()
}

fn snapshots_json(vol: &str) -> Vec<Value> {
    let out = ok(
        &changeover(&["volume", "snapshots", vol, "--json"], &[]),
        "volume snapshots",
    );
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn cat(vol: &str, path: &str) -> String {
    ok(
        &changeover(&["volume", "cat", vol, path], &[]),
        "volume cat",
    )
}

#[test]
fn snapshots_diffs_restores_and_a_rollback_with_its_data() {
    changeover_tests::fixture_image();
    let body = |v: &str| {
        format!(
            "services:\n  app:\n    image: changeover-fixture:busybox\n    environment: {{VERSION: \"{v}\"}}\n    volumes: [\"data:/data\"]\n    labels: {{dev.changeover.test: \"1\"}}\n    x-changeover:\n      snapshots: {{before_deploy: true, keep: 2}}\nvolumes:\n  data: {{}}\n"
        )
    };
    let stack = TestStack::new("vol-snap", &body("1"), &[]);
    let file = stack.file();
    let service = format!("{}/app", stack.name);
    let vol = format!("{}_data", stack.name);
    let clone = Named(format!("{vol}-clone"));
    ok(
        &changeover(&["stack", "deploy", "-f", &file], &[]),
        "deploy r1",
    );
    assert!(
        snapshots_json(&vol).is_empty(),
        "nothing to keep before the first deploy created the volume"
    );
    let r1 = format!("{}-app-r1-s0", stack.name);
    docker(&[
        "exec", &r1, "sh", "-c",
        "printf 'port=1\\nname=a\\n' > /data/config.txt && printf old > /data/old.txt && mkdir /data/d && printf x > /data/d/x",
    ]);

    // By hand, with a note; the container keeps running.
    let snap = ok(
        &changeover(
            &["volume", "snapshot", &vol, "--note", "before the edit"],
            &[],
        ),
        "volume snapshot",
    )
    .trim()
    .to_string();
    assert!(snap.starts_with(&format!("{vol}.snapshot-")), "{snap}");
    assert!(stack.containers().contains(&format!("{r1}=running")));
    let list = snapshots_json(&vol);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], snap.as_str());
    assert_eq!(list[0]["reason"], "manual");
    assert_eq!(list[0]["note"], "before the edit");
    // A snapshot is a volume: browsed like one.
    assert_eq!(cat(&snap, "old.txt"), "old");

    // Live changes, then the diff against the live volume.
    docker(&[
        "exec", &r1, "sh", "-c",
        "printf 'port=2\\nname=a\\n' > /data/config.txt && rm /data/old.txt && rm -r /data/d && printf n > /data/new.txt && chmod 600 /data/new.txt",
    ]);
    let d: Value = serde_json::from_str(&ok(
        &changeover(
            &[
                "volume",
                "diff",
                &vol,
                &snap,
                "--json",
                "--lines",
                "/config.txt",
            ],
            &[],
        ),
        "volume diff",
    ))
    .unwrap();
    let changes: Vec<String> = d["diff"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["change"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            "changed /config.txt",
            "removed /d",
            "removed /d/x",
            "added /new.txt",
            "removed /old.txt"
        ]
    );
    assert_eq!(d["diff"]["counts"]["changed"], 1);
    let lines: Vec<String> = d["lines"]["hunks"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{}{}",
                l["tag"].as_str().unwrap(),
                l["text"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(lines, ["-port=1", "+port=2", " name=a"]);
    let shown = ok(
        &changeover(&["volume", "diff", &vol, &snap], &[]),
        "diff as text",
    );
    assert!(shown.contains("~ /config.txt  (content)"), "{shown}");

    // A deploy takes its own snapshot first, labelled with both releases.
    std::fs::write(&file, format!("name: {}\n{}", stack.name, body("2"))).unwrap();
    ok(
        &changeover(&["stack", "deploy", "-f", &file], &[]),
        "deploy r2",
    );
    let auto: Vec<Value> = snapshots_json(&vol)
        .into_iter()
        .filter(|s| s["reason"] == "before-deploy")
        .collect();
    assert_eq!(auto.len(), 1, "{auto:?}");
    assert_eq!(
        (
            auto[0]["release"].as_u64(),
            auto[0]["beforeRelease"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(auto[0]["service"], service.as_str());
    let r2 = format!("{}-app-r2-s0", stack.name);
    docker(&[
        "exec",
        &r2,
        "sh",
        "-c",
        "printf 'port=3\\nname=migrated\\n' > /data/config.txt",
    ]);

    // Restoring asks first (no terminal here: refused, nothing changed).
    let err = refused(
        &changeover(&["volume", "restore", &vol, &snap], &[]),
        "restore without --yes",
    );
    assert!(
        err.contains("--yes") && err.contains(&r2),
        "names who stops: {err}"
    );
    assert_eq!(cat(&vol, "config.txt"), "port=3\nname=migrated\n");
    // Refused while a rollout of a service that mounts it runs.
    let key = format!("rollout/{}/app", stack.name);
    let held = changeover_tests::edge_ctl(&serde_json::json!({
        "op": "lock-acquire", "key": key, "owner": "someone@elsewhere (pid 1)", "ttlMs": 60000
    }));
    assert!(held.is_some());
    let err = refused(
        &changeover(&["volume", "restore", &vol, &snap, "--yes"], &[]),
        "restore during a rollout",
    );
    assert!(err.contains("rollout"), "{err}");
    changeover_tests::edge_ctl(&serde_json::json!({
        "op": "lock-release", "key": key, "owner": "someone@elsewhere (pid 1)"
    }));
    assert_eq!(cat(&vol, "config.txt"), "port=3\nname=migrated\n");

    // Code and data back together.
    ok(
        &changeover(
            &["service", "rollback", &service, "--with-data", "--yes"],
            &[],
        ),
        "rollback --with-data",
    );
    assert_eq!(
        cat(&vol, "config.txt"),
        "port=2\nname=a\n",
        "the data before r2's deploy"
    );
    assert!(
        stack.containers().contains(&format!("{r1}=running")),
        "{:?}",
        stack.containers()
    );
    let undo: Vec<Value> = snapshots_json(&vol)
        .into_iter()
        .filter(|s| s["reason"] == "before-restore")
        .collect();
    assert_eq!(undo.len(), 1, "the restore can be undone");
    let undo = undo[0]["name"].as_str().unwrap().to_string();
    assert_eq!(cat(&undo, "config.txt"), "port=3\nname=migrated\n");

    // A restore by hand, stopping and starting r1 around the copy.
    ok(
        &changeover(&["volume", "restore", &vol, &snap, "--yes"], &[]),
        "restore",
    );
    assert_eq!(cat(&vol, "config.txt"), "port=1\nname=a\n");
    assert_eq!(cat(&vol, "d/x"), "x");
    assert!(stack.containers().contains(&format!("{r1}=running")));

    // Clones, and what is refused.
    ok(
        &changeover(&["volume", "clone", &vol, &clone.0], &[]),
        "clone",
    );
    assert_eq!(cat(&clone.0, "old.txt"), "old");
    let err = refused(
        &changeover(&["volume", "clone", &vol, &clone.0], &[]),
        "clone onto a volume",
    );
    assert!(err.contains("exists already"), "{err}");
    let err = refused(
        &changeover(&["volume", "clone", &vol, "../x"], &[]),
        "bad name",
    );
    assert!(err.contains("not a volume name"), "{err}");
    let err = refused(
        &changeover(&["volume", "snapshot", &vol, "--note", "two\nlines"], &[]),
        "a note with a newline",
    );
    assert!(err.contains("one line"), "{err}");
    let err = refused(
        &changeover(&["volume", "diff", &vol, "nope"], &[]),
        "unknown snapshot",
    );
    assert!(err.contains("not a snapshot of"), "{err}");
    let err = refused(
        &changeover(&["volume", "diff", &vol, &clone.0], &[]),
        "a clone is no snapshot",
    );
    assert!(err.contains("not a snapshot of"), "{err}");

    // Removing: asked, refused while mounted, a snapshot goes.
    let err = refused(
        &changeover(&["volume", "rm", &vol, "--yes"], &[]),
        "rm in use",
    );
    assert!(err.contains(&r1), "names its user: {err}");
    docker(&["volume", "inspect", &vol]);
    let err = refused(
        &changeover(&["volume", "rm", &undo], &[]),
        "rm without --yes",
    );
    assert!(err.contains("--yes"), "{err}");
    ok(
        &changeover(&["volume", "rm", &undo, "--yes"], &[]),
        "rm a snapshot",
    );
    assert!(snapshots_json(&vol)
        .iter()
        .all(|s| s["name"] != undo.as_str()));
    let pairs: Vec<String> = docker(&["ps", "-a", "--format", "{{.Names}}"])
        .lines()
        .filter(|n| n.contains(&vol) && n.contains("-pair-"))
        .map(str::to_string)
        .collect();
    assert!(
        pairs.is_empty(),
        "no copy or diff helper is left behind: {pairs:?}"
    );
}

/// An entry of a test `.zip`.
enum Z<'a> {
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
    Dir(&'a str),
}

/// A `.zip` built in memory.
fn zip_bytes(entries: &[Z]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
    for entry in entries {
        match entry {
            Z::File(name, data) => {
                w.start_file(*name, opts).unwrap();
                w.write_all(data).unwrap();
            }
            Z::Link(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
            Z::Dir(name) => w.add_directory(*name, opts).unwrap(),
        }
    }
    w.finish().unwrap().into_inner()
}

/// A `.zip` upload is unpacked like a tar; one that leaves the folder,
/// writes through a link, or declares more than it may unpack to is refused
/// and changes nothing. An export can pause the container that writes.
#[test]
fn a_zip_is_unpacked_and_a_hostile_one_changes_nothing() {
    let vol = TestVolume::new(None, "t-zip", "echo kept > /v/keep.txt");
    let v = vol.name.as_str();
    let here = tempfile::tempdir().unwrap();
    let put = |name: &str, bytes: Vec<u8>| {
        let file = here.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        changeover(
            &["volume", "put", v, "/", file.to_str().unwrap(), "--unpack"],
            &[],
        )
    };
    let good = zip_bytes(&[
        Z::Dir("site/"),
        Z::File("site/index.html", b"<h1>zip</h1>\n"),
        Z::Link("site/latest", "index.html"),
    ]);
    ok(&put("site.zip", good), "put --unpack a .zip");
    assert_eq!(names_of(v, "/"), ["keep.txt", "site"]);
    assert_eq!(names_of(v, "/site"), ["index.html", "latest"]);
    assert_eq!(
        ok(
            &changeover(&["volume", "cat", v, "/site/index.html"], &[]),
            "cat"
        ),
        "<h1>zip</h1>\n"
    );
    let listing = files(&[], v, "/site", &[]);
    let latest = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "latest")
        .unwrap()
        .clone();
    assert_eq!(latest["kind"], "symlink", "a link stays a link: {latest}");
    assert_eq!(latest["target"], "index.html");

    let before = names_of(v, "/");
    let err = refused(
        &put("up.zip", zip_bytes(&[Z::File("../evil", b"x")])),
        "a .zip with ../",
    );
    assert!(err.contains("../evil"), "{err}");
    let err = refused(
        &put(
            "trick.zip",
            zip_bytes(&[Z::Link("out", "/etc"), Z::File("out/owned", b"x")]),
        ),
        "a .zip that writes through a link",
    );
    assert!(!err.is_empty());
    // A zip that declares 3.75 GiB in an entry of a few bytes.
    let mut bomb = zip_bytes(&[Z::File("zeros", &[0u8; 64][..])]);
    for (sig, at) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let start = bomb.windows(4).position(|w| w == sig).unwrap();
        bomb[start + at..start + at + 4].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    }
    let err = refused(&put("bomb.zip", bomb), "a zip bomb");
    assert!(err.contains("more than"), "{err}");
    assert_eq!(names_of(v, "/"), before, "nothing changed");
    assert!(names_of(v, "/site").len() == 2 && !names_of(v, "/").contains(&"out".to_string()));

    // Export pausing the container that writes to it: paused meanwhile,
    // running again after.
    let user = changeover_tests::TestContainer::new(
        &changeover_tests::unique("t-zip-user"),
        &["-v", &format!("{v}:/data")],
        true,
    );
    let out = changeover(
        &[
            "volume",
            "export",
            v,
            "-o",
            here.path().join("paused.tar.gz").to_str().unwrap(),
            "--pause",
        ],
        &[],
    );
    ok(&out, "volume export --pause");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("paused while copying"), "{said}");
    let state = docker(&["inspect", "-f", "{{.State.Status}}", &user.name]);
    assert_eq!(state, "running", "unpaused after the export");
    assert!(tar_names(&here.path().join("paused.tar.gz")).contains(&"site/index.html".to_string()));
}

/// `volume find`: names that hold a text, nearest first, case ignored,
/// links not followed; bounded; bad input refused.
#[test]
fn names_are_found_under_a_folder() {
    let vol = TestVolume::new(
        None,
        "t-find",
        "cd /v && mkdir -p a/b/c && echo 1 > Report.txt && echo 2 > a/report-2.txt && echo 3 > a/b/c/old-REPORT.csv && ln -s /etc outside && for i in $(seq 1 30); do : > a/many-$i; done && printf x > \"$(printf 'caf\\303\\251-report')\"",
    );
    let v = vol.name.as_str();
    let find = |extra: &[&str]| -> Value {
        let mut args = vec!["volume", "find", v];
        args.extend_from_slice(extra);
        args.push("--json");
        serde_json::from_str(&ok(&changeover(&args, &[]), "volume find")).unwrap()
    };
    let paths = |found: &Value| -> Vec<String> {
        found["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let dir = m["dir"].as_str().unwrap();
                let dir = if dir == "/" { "" } else { dir };
                format!("{dir}/{}", m["entry"]["name"].as_str().unwrap())
            })
            .collect()
    };
    let all = find(&["report"]);
    assert_eq!(
        paths(&all),
        [
            "/Report.txt",
            "/café-report",
            "/a/report-2.txt",
            "/a/b/c/old-REPORT.csv"
        ],
        "nearest first, names sorted within a folder: {all}"
    );
    assert_eq!(all["truncated"], false);
    assert_eq!(
        paths(&find(&["report", "--path", "/a/b"])),
        ["/a/b/c/old-REPORT.csv"]
    );
    assert!(
        paths(&find(&["passwd"])).is_empty(),
        "links are not followed"
    );
    let some = find(&["many-", "--limit", "5"]);
    assert_eq!(paths(&some).len(), 5);
    assert_eq!(some["truncated"], true);
    let text = ok(
        &changeover(&["volume", "find", v, "report"], &[]),
        "find as text",
    );
    assert!(text.contains("/a/b/c/old-REPORT.csv\n"), "{text}");

    for (args, says) in [
        (vec!["volume", "find", v, ""], "empty"),
        (vec!["volume", "find", v, "a/b"], "without '/'"),
        (vec!["volume", "find", v, &"x".repeat(300)], "at most 255"),
        (vec!["volume", "find", v, "x", "--limit", "0"], "1 to 10000"),
        (vec!["volume", "find", v, "x", "--path", "/../etc"], ".."),
        (
            vec!["volume", "find", v, "x", "--path", "/Report.txt"],
            "not a folder",
        ),
        (
            vec!["volume", "find", "t-no-such-volume-here", "x"],
            "no volume",
        ),
    ] {
        let err = refused(&changeover(&args, &[]), &format!("{args:?}"));
        assert!(err.contains(says), "{args:?} says {says:?}: {err}");
    }
}

/// A 5 GiB file is previewed cut (the first MiB, said so), never loaded;
/// `cat` without `--bytes` stops at its bound and says so.
#[test]
fn a_huge_file_is_previewed_cut() {
    let vol = TestVolume::new(
        None,
        "t-huge",
        "dd if=/dev/zero of=/v/huge.log bs=1 count=0 seek=5368709120 2>/dev/null && printf 'start of it\\n' | dd of=/v/huge.log conv=notrunc 2>/dev/null",
    );
    let env = changeover_tests::default_environment();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let p = rt
        .block_on(changeover_application::volumes::preview(
            &env,
            &vol.name,
            "/huge.log",
        ))
        .unwrap();
    assert_eq!(p.size, 5 * 1024 * 1024 * 1024);
    assert!(p.cut, "said to be cut");
    let shown =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &p.data).unwrap();
    assert_eq!(shown.len() as u64, changeover_core::volume::PREVIEW_BYTES);
    assert!(shown.starts_with(b"start of it\n"));
    let out = changeover(&["volume", "cat", &vol.name, "/huge.log"], &[]);
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 64 * 1024 * 1024, "cat stops at 64 MiB");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("5368709120"), "says it is cut: {said}");
}

/// A volume removed while it is browsed (its idle helper removed first, as
/// `docker rm -f` would): the next question gets a clear answer, and no
/// helper is started for a volume that is gone.
#[test]
fn a_volume_removed_while_it_is_browsed_is_said_to_be_gone() {
    let vol = TestVolume::new(None, "t-gone", "echo x > /v/x");
    let v = vol.name.clone();
    assert_eq!(names(&files(&[], &v, "/", &[])), ["x"]);
    for h in vol.helpers() {
        docker(&["rm", "-f", &h]);
    }
    docker(&["volume", "rm", &v]);
    let err = refused(
        &changeover(&["volume", "files", &v, "/"], &[]),
        "files of a removed volume",
    );
    assert!(err.contains(&format!("no volume \"{v}\"")), "{err}");
    assert!(
        vol.helpers().is_empty(),
        "no helper for a volume that is gone"
    );
}

/// The daemon going away in the middle of a download: a clear error, no
/// file (not even a partial one) where it was going, and once the daemon
/// is back no helper is left.
#[test]
fn the_daemon_going_away_mid_download_leaves_nothing_behind() {
    let mut daemon = PrivateDaemon::start();
    let host = daemon.host();
    let vol = TestVolume::new(
        Some(&host),
        "t-vol-away",
        "dd if=/dev/urandom of=/v/noise bs=1048576 count=400 2>/dev/null",
    );
    let here = tempfile::tempdir().unwrap();
    let dest = here.path().join("noise.tar.gz");
    let get = changeover_tests::changeover_cmd(
        &[
            "volume",
            "get",
            &vol.name,
            "/",
            "-o",
            dest.to_str().unwrap(),
        ],
        &[("DOCKER_HOST", host.as_str())],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Under way: megabytes written aside, nothing at the destination yet.
    assert!(
        changeover_tests::written_into(here.path(), 2 << 20),
        "the download started"
    );
    daemon.stop();
    let out = get.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the download fails: {err}");
    assert!(!err.trim().is_empty() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("daemon closed the connection") || err.contains("nothing listens"),
        "{err}"
    );
    let left = changeover_tests::names_in(here.path());
    assert!(
        left.is_empty(),
        "nothing is left where it was going: {left:?}"
    );

    daemon.resume();
    // Connecting again sweeps what the helper left.
    ok(
        &changeover(
            &["volume", "files", &vol.name, "/"],
            &[("DOCKER_HOST", host.as_str())],
        ),
        "browse after the daemon is back",
    );
    let helpers = docker_at(
        Some(&host),
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label=dev.changeover.helper=volume:{}", vol.name),
            "--format",
            "{{.Names}} {{.Status}}",
        ],
    );
    assert!(
        helpers.lines().all(|l| l.contains(" Up ")) && helpers.lines().count() <= 1,
        "only the helper of the new question, none from before: {helpers}"
    );
    drop(vol);
    drop(daemon);
}

/// Ctrl-C in the middle of a download or of an export that paused the
/// container writing to the volume: stopped with a clear word, no file
/// left, and the container running again (not left paused).
#[test]
fn ctrl_c_stops_a_transfer_and_leaves_nothing_paused_or_partial() {
    let vol = TestVolume::new(
        None,
        "t-ctrl-c",
        "dd if=/dev/urandom of=/v/noise bs=1048576 count=300 2>/dev/null",
    );
    let user = changeover_tests::TestContainer::new(
        &changeover_tests::unique("t-ctrl-c-user"),
        &["-v", &format!("{}:/data", vol.name)],
        true,
    );
    let here = tempfile::tempdir().unwrap();
    for (what, extra) in [("get", &[][..]), ("export", &["--pause"][..])] {
        let dest = here.path().join(format!("{what}.tar.gz"));
        let mut args = match what {
            "get" => vec![
                "volume",
                "get",
                &vol.name,
                "/",
                "-o",
                dest.to_str().unwrap(),
            ],
            _ => vec!["volume", "export", &vol.name, "-o", dest.to_str().unwrap()],
        };
        args.extend_from_slice(extra);
        let child = changeover_tests::changeover_cmd(&args, &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        assert!(
            changeover_tests::written_into(here.path(), 1 << 20),
            "{what} started"
        );
        if what == "export" {
            let state = docker(&["inspect", "-f", "{{.State.Status}}", &user.name]);
            assert_eq!(state, "paused", "paused while it copies");
        }
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains("was stopped (Ctrl-C): nothing was written"),
            "{what}: {err}"
        );
        let left = changeover_tests::names_in(here.path());
        assert!(left.is_empty(), "{what} left nothing: {left:?}");
        let state = docker(&["inspect", "-f", "{{.State.Status}}", &user.name]);
        assert_eq!(state, "running", "{what}: the container goes on");
    }
}

/// `volume tables`: a SQLite file's tables and row counts, read from its
/// bytes through the helper; a file that is not one is refused.
#[test]
fn a_sqlite_file_shows_its_tables_and_rows() {
    let vol = TestVolume::new(None, "t-sqlite", "echo not a database > /v/notes.txt");
    let fixture = changeover_tests::workspace().join("crates/core/tests/fixtures/shop.sqlite");
    ok(
        &changeover(
            &["volume", "put", &vol.name, "/", fixture.to_str().unwrap()],
            &[],
        ),
        "put the database",
    );
    let info: Value = serde_json::from_str(&ok(
        &changeover(
            &["volume", "tables", &vol.name, "/shop.sqlite", "--json"],
            &[],
        ),
        "volume tables",
    ))
    .unwrap();
    let rows: Vec<String> = info["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}={}", t["name"].as_str().unwrap(), t["rows"]))
        .collect();
    assert_eq!(
        rows,
        [
            "users=1000",
            "notes=3",
            "kv=200",
            "wide=1",
            "empty=0",
            "recent=null"
        ]
    );
    assert_eq!(info["cut"], false);
    let text = ok(
        &changeover(&["volume", "tables", &vol.name, "/shop.sqlite"], &[]),
        "tables as text",
    );
    assert!(
        text.contains("users") && text.contains("1000 rows"),
        "{text}"
    );
    let err = refused(
        &changeover(&["volume", "tables", &vol.name, "/notes.txt"], &[]),
        "a text file",
    );
    assert!(err.contains("cannot be read as SQLite"), "{err}");
}

/// A Docker volume plugin of the test's own: a unix socket in `dir` (a
/// private daemon's plugin folder, never the default daemon's: a daemon
/// that once used a plugin asks it about every unknown volume name, and
/// waits 30 s for one that is gone) answering the VolumeDriver protocol,
/// whose volumes are folders of a temporary directory. The daemon's
/// disk-usage API knows no size for them (it measures only `local`'s).
struct TestPlugin {
    name: String,
    socket: std::path::PathBuf,
    _root: tempfile::TempDir,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestPlugin {
    fn start(dir: &std::path::Path) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let name = changeover_tests::unique("t-plugin");
        let socket = dir.join(format!("{name}.sock"));
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let root = tempfile::tempdir().unwrap();
        let base = root.path().to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let op = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let vol = req["Name"].as_str().unwrap_or("").to_string();
                let at = base.join(&vol);
                let mountpoint = at.display().to_string();
                let answer = match op.as_str() {
                    "/Plugin.Activate" => serde_json::json!({"Implements": ["VolumeDriver"]}),
                    "/VolumeDriver.Capabilities" => {
                        serde_json::json!({"Capabilities": {"Scope": "local"}})
                    }
                    "/VolumeDriver.Create" => {
                        let _ = std::fs::create_dir_all(&at);
                        serde_json::json!({"Err": ""})
                    }
                    "/VolumeDriver.Remove" => {
                        let _ = std::fs::remove_dir_all(&at);
                        serde_json::json!({"Err": ""})
                    }
                    "/VolumeDriver.Mount" | "/VolumeDriver.Path" => {
                        serde_json::json!({"Mountpoint": mountpoint, "Err": ""})
                    }
                    "/VolumeDriver.Unmount" => serde_json::json!({"Err": ""}),
                    "/VolumeDriver.Get" if at.is_dir() => serde_json::json!({
                        "Volume": {"Name": vol, "Mountpoint": mountpoint}, "Err": ""
                    }),
                    "/VolumeDriver.Get" => serde_json::json!({"Err": "no such volume"}),
                    "/VolumeDriver.List" => {
                        let volumes: Vec<Value> = std::fs::read_dir(&base)
                            .into_iter()
                            .flatten()
                            .flatten()
                            .map(|e| {
                                serde_json::json!({
                                    "Name": e.file_name().to_string_lossy(),
                                    "Mountpoint": e.path().display().to_string()
                                })
                            })
                            .collect();
                        serde_json::json!({"Volumes": volumes, "Err": ""})
                    }
                    _ => serde_json::json!({"Err": format!("{op} is not supported")}),
                };
                let text = answer.to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Self {
            name,
            socket,
            _root: root,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::os::unix::net::UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A volume of a driver that reports no size: "unknown", never 0, and it
/// is browsed like any other (the helper mounts it through the plugin).
#[test]
fn a_volume_of_a_driver_with_no_size_is_said_unknown_and_browsed() {
    let plugins = tempfile::tempdir().unwrap();
    let plugin = TestPlugin::start(plugins.path());
    let daemon = PrivateDaemon::with_plugins(plugins.path());
    let host = daemon.host();
    let env = [("DOCKER_HOST", host.as_str())];
    let v = changeover_tests::unique("t-plugin-vol");
    docker_at(Some(&host), &["volume", "create", "-d", &plugin.name, &v]);
    changeover_tests::sh_in_volume(Some(&host), &v, "echo through the plugin > /v/hello.txt");
    let d: Value = serde_json::from_str(&ok(
        &changeover(&["volume", "inspect", &v, "--json"], &env),
        "inspect",
    ))
    .unwrap();
    assert_eq!(d["driver"], plugin.name.as_str());
    assert_eq!(d["size"], Value::Null, "no size, not 0: {d}");
    let text = ok(
        &changeover(&["volume", "inspect", &v], &env),
        "inspect as text",
    );
    assert!(text.contains("size      unknown"), "{text}");
    let listed = ok(&changeover(&["volume", "ls", "--size"], &env), "ls --size");
    let row = listed
        .lines()
        .find(|l| l.starts_with(&v))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("unknown"), "{row}");
    assert_eq!(names(&files(&env, &v, "/", &[])), ["hello.txt"]);
    assert_eq!(
        ok(
            &changeover(&["volume", "cat", &v, "/hello.txt"], &env),
            "cat"
        ),
        "through the plugin\n"
    );
    // The daemon goes first (it still asks the plugin while it stops).
    drop(daemon);
    drop(plugin);
}
