//! The `changeover` command against the real daemon: tables for people,
//! stable JSON for scripts, and one-line reasons with a non-zero exit code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use changeover_tests::{changeover, docker, unique, TestContainer};
use serde_json::Value;

fn ok_json(args: &[&str]) -> Value {
    let out = changeover(args, &[]);
    assert!(
        out.status.success(),
        "changeover {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

#[test]
fn ps_json_lists_containers_with_their_stack_and_service() {
    let name = unique("cli-ps");
    let _c = TestContainer::new(
        &name,
        &[
            "--label",
            "dev.changeover.stack=shop",
            "--label",
            "dev.changeover.service=web",
        ],
        true,
    );
    let all = ok_json(&["ps", "--json"]);
    let row = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .expect("the new container is listed");
    assert_eq!(row["state"], "running");
    assert_eq!(row["group"]["kind"], "stack");
    assert_eq!(row["group"]["name"], "shop");
    assert_eq!(row["group"]["service"], "web");
    assert_eq!(row["labels"]["dev.changeover.stack"], "shop");

    let table = changeover(&["ps"], &[]);
    let text = String::from_utf8(table.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&name))
        .expect("the table lists it");
    assert!(
        line.contains("shop/web"),
        "the table shows stack/service: {line}"
    );
}

#[test]
fn images_json_lists_every_tag_of_an_image() {
    let image = changeover_tests::fixture_image();
    let extra_tag = format!("{}-alias:{}", "changeover-fixture", unique("t"));
    docker(&["tag", image, &extra_tag]);
    let all = ok_json(&["images", "--json"]);
    docker(&["rmi", &extra_tag]);
    let row = all
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tags"].as_array().unwrap().iter().any(|t| t == image))
        .expect("the fixture image is listed");
    let tags: Vec<&str> = row["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&extra_tag.as_str()),
        "both tags of one image are on one row: {tags:?}"
    );
    assert!(row["size"].as_i64().unwrap() > 0);
}

#[test]
fn volumes_json_says_which_containers_use_a_volume() {
    let volume = unique("cli-vol");
    let name = unique("cli-vol-user");
    docker(&[
        "volume",
        "create",
        "--label",
        changeover_tests::TEST_LABEL,
        &volume,
    ]);
    let mount = format!("{volume}:/data");
    let _c = TestContainer::new(&name, &["-v", &mount], false);
    let all = ok_json(&["volumes", "--json"]);
    docker(&["rm", "-f", &name]);
    docker(&["volume", "rm", &volume]);
    let row = all
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .expect("the volume is listed");
    assert_eq!(row["driver"], "local");
    assert_eq!(row["usedBy"], serde_json::json!([name]));
}

#[test]
fn env_ls_shows_the_local_daemon_as_default_and_connected() {
    // A fresh daemon holds no image: give it one to count.
    changeover_tests::fixture_image();
    let all = ok_json(&["env", "ls", "--json"]);
    let default = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["isDefault"] == true)
        .expect("one environment is the default");
    assert_eq!(default["name"], "default");
    assert_eq!(default["reachable"], true, "{default}");
    assert!(default["daemon"]["version"].as_str().unwrap().len() > 1);
    assert!(
        default["counts"]["images"].as_u64().unwrap() >= 1,
        "the fixture image this test built is counted: {default}"
    );
}

#[test]
fn failures_exit_non_zero_with_one_line_that_names_the_problem() {
    // (arguments, environment variables, what the message must name)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&["ps"], &[("DOCKER_HOST", "tcp//x")], "DOCKER_HOST=tcp//x"),
        (
            &["ps"],
            &[("DOCKER_HOST", "unix:///no/such.sock")],
            "unix:///no/such.sock",
        ),
        (
            &["--env", "nowhere", "images"],
            &[],
            "no environment is named \"nowhere\"",
        ),
        (
            &["volumes"],
            &[("DOCKER_HOST", "tcp://127.0.0.1:1")],
            "tcp://127.0.0.1:1",
        ),
    ];
    for (args, env, expected) in cases {
        let out = changeover(args, env);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} {env:?} must fail with 1: {err}"
        );
        assert!(out.stdout.is_empty(), "nothing on stdout when failing");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(expected),
            "{args:?} {env:?}: the message names {expected:?}: {err}"
        );
    }

    // env ls stays usable with a broken DOCKER_HOST: it lists the problem.
    let out = changeover(&["env", "ls"], &[("DOCKER_HOST", "tcp//x")]);
    assert!(
        out.status.success(),
        "env ls lists environments even when one is broken"
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("is not a Docker address"));
}

#[test]
fn docker_contexts_are_environments_and_the_current_one_is_the_default() {
    let config = tempfile::tempdir().unwrap();
    let dir = config.path().to_str().unwrap();
    let name = unique("ctx");
    docker(&[
        "--config",
        dir,
        "context",
        "create",
        &name,
        "--docker",
        "host=unix:///var/run/docker.sock",
    ]);
    docker(&["--config", dir, "context", "use", &name]);

    let out = changeover(&["env", "ls", "--json"], &[("DOCKER_CONFIG", dir)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ctx = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .expect("the Docker context is listed as an environment");
    assert_eq!(ctx["source"], "docker-context");
    assert_eq!(
        ctx["isDefault"], true,
        "`docker context use` makes it the default"
    );
    assert_eq!(ctx["reachable"], true, "{ctx}");

    // --env picks it by name, and DOCKER_HOST still wins over the context.
    let out = changeover(
        &["--env", &name, "images", "--json"],
        &[("DOCKER_CONFIG", dir)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = changeover(
        &["ps"],
        &[
            ("DOCKER_CONFIG", dir),
            ("DOCKER_HOST", "unix:///no/such.sock"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "DOCKER_HOST beats the current context"
    );
}
