//! `build:` for real: stack files whose services are built on the daemon
//! from a context the CLI packs (`.dockerignore` honoured), tagged from
//! their content, built once per content, rolled out; a failing step named
//! with its output and nothing deployed; bad contexts refused before
//! anything is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;

use changeover_tests::{changeover, docker, fixture_image, free_port, get, TestStack};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A stack whose one service `web` is built from `ctx` (a folder next to
/// the stack file), with `build` as its `build:` value.
fn built_stack(prefix: &str, build: &str, port: u16) -> TestStack {
    TestStack::web(
        prefix,
        &format!("build: {build}"),
        port,
        &[
            "health: {path: /health, interval: 500ms, timeout: 1s}",
            "deploy_timeout: 30s",
        ],
    )
}

fn deploy(stack: &TestStack) -> Output {
    changeover(&["stack", "deploy", "-f", &stack.file()], &[])
}

/// The image the service's current release runs.
fn current_image(stack: &TestStack) -> String {
    let out = changeover(
        &[
            "service",
            "inspect",
            &format!("{}/web", stack.name),
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let current = v["record"]["current"].as_u64().unwrap();
    v["record"]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["number"].as_u64() == Some(current))
        .unwrap()["image"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The files in an image (from `docker export` of a container of it).
fn files_in(image: &str) -> Vec<String> {
    let id = docker(&["create", image]);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {id} | tar -t"))
        .output()
        .unwrap();
    docker(&["rm", &id]);
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn a_service_is_built_from_its_context_once_per_content_and_rolled_out() {
    changeover_tests::demo_images(&[]);
    let port = free_port();
    let stack = built_stack("build", "{context: ./ctx, args: {GREETING: hello}}", port);
    let ctx = stack.dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM changeover-demo:v1\nARG GREETING\nLABEL dev.changeover.test.greeting=$GREETING\nCOPY msg /msg\nCOPY . /ctx/\n",
    )
    .unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secret.txt\n*.log\n").unwrap();
    std::fs::write(ctx.join("msg"), "one").unwrap();
    std::fs::write(ctx.join("secret.txt"), "never sent").unwrap();
    std::fs::write(ctx.join("build.log"), "never sent").unwrap();

    let out = deploy(&stack);
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "build {}/web | Step 1/5 : FROM changeover-demo:v1",
            stack.name
        )),
        "the build log streams: {said}"
    );
    let first = current_image(&stack);
    let repo = format!("{}-web:b-", stack.name);
    assert!(first.starts_with(&repo), "tagged from its content: {first}");
    assert_eq!(get(port).unwrap().split_whitespace().next(), Some("v1"));
    let files = files_in(&first);
    assert!(files.iter().any(|f| f == "msg"), "{files:?}");
    assert!(files.iter().any(|f| f == "ctx/Dockerfile"), "{files:?}");
    assert!(
        !files
            .iter()
            .any(|f| f.contains("secret.txt") || f.ends_with(".log")),
        ".dockerignore keeps them out: {files:?}"
    );
    let label = docker(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"dev.changeover.test.greeting\"}}",
        &first,
    ]);
    assert_eq!(label, "hello", "build args reach the build");

    // Nothing changed (an ignored file did): not built again.
    std::fs::write(ctx.join("build.log"), "changed, but ignored").unwrap();
    let out = deploy(&stack);
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("is built already"), "{said}");
    assert!(!said.contains("| Step 1/5"), "no build ran: {said}");
    assert_eq!(current_image(&stack), first);

    // The context changed: a new image, a new release.
    std::fs::write(ctx.join("msg"), "two").unwrap();
    let out = deploy(&stack);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = current_image(&stack);
    assert!(
        second.starts_with(&repo) && second != first,
        "{first} → {second}"
    );
    for image in [&first, &second] {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", image])
            .output();
    }
}

#[test]
fn a_failing_step_is_named_with_its_output_and_nothing_is_deployed() {
    fixture_image();
    let port = free_port();
    let stack = built_stack("buildfail", "./ctx", port);
    let ctx = stack.dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo about to fail && exit 3\n",
            changeover_tests::FIXTURE_IMAGE
        ),
    )
    .unwrap();
    let out = deploy(&stack);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("failed at Step 2/2 : RUN echo about to fail && exit 3"),
        "{said}"
    );
    assert!(said.contains("non-zero code: 3"), "{said}");
    assert!(said.contains("about to fail"), "the step's output: {said}");
    assert!(stack.containers().is_empty(), "nothing was deployed");
}

#[test]
fn bad_build_contexts_are_refused_before_anything_is_sent() {
    let port = free_port();
    // No such folder: the stack file's own error, with its line.
    let stack = built_stack("buildbad", "./nowhere", port);
    let out = deploy(&stack);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("stack.yml:4 services.web.build")
            && said.contains("is not a folder that exists"),
        "{said}"
    );
    // A Dockerfile that is not there, and one outside the context.
    let stack = built_stack(
        "buildbad",
        "{context: ., dockerfile: nope.Dockerfile}",
        port,
    );
    let said = text(&deploy(&stack).stderr);
    assert!(said.contains("there is no nope.Dockerfile"), "{said}");
    let stack = built_stack("buildbad", "{context: ., dockerfile: ../Dockerfile}", port);
    let said = text(&deploy(&stack).stderr);
    assert!(said.contains("must be a path inside the context"), "{said}");
    let stack = built_stack("buildbad", "https://example.test/repo.git", port);
    let said = text(&deploy(&stack).stderr);
    assert!(said.contains("from a URL is not supported"), "{said}");

    // Over 1 GB (a sparse file: nothing is read, the size says it).
    let stack = built_stack("buildbig", "./ctx", port);
    let ctx = stack.dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
    std::fs::File::create(ctx.join("huge.bin"))
        .unwrap()
        .set_len(1_100_000_000)
        .unwrap();
    let out = deploy(&stack);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("holds more than 1073 MB") && said.contains(".dockerignore"),
        "{said}"
    );
    assert!(stack.containers().is_empty());
}
