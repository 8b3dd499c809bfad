//! Registries for real: Debian's `docker-registry` on loopback (plain, and
//! with htpasswd authentication), images pushed by the `docker` CLI, the
//! `changeover` command's tags, pulls and logins against it, credentials in
//! the real Secret Service (run under scripts/with-keyring.sh), and the
//! Docker CLI's own config.json and credential helpers as they are. A
//! scripted registry shows what a hostile or rate-limiting one gets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};

use changeover_tests::docker;
use changeover_tests::home::Home;
use changeover_tests::registry::Registry;
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "changeover failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tag_names(tags: &Value) -> Vec<String> {
    tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap().to_string())
        .collect()
}

fn tag<'a>(tags: &'a Value, name: &str) -> &'a Value {
    tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == name)
        .unwrap_or_else(|| panic!("{name} is listed: {tags}"))
}

#[test]
fn tags_of_the_registry_and_the_daemon_merge_in_version_order_and_a_pull_brings_one_over() {
    let mut registry = Registry::plain();
    let host = registry.host();
    let repo = changeover_tests::unique("t-reg-app");
    registry.push(
        &repo,
        &["1.0.0", "1.2.0", "1.10.0", "latest", "1.10.0-rc.1"],
    );
    registry.forget_locally(&repo, "1.10.0");
    let home = Home::new();
    let repository = format!("{host}/{repo}");

    let tags = json(&home.run(&["image", "tags", &repository, "--json", "--digests"]));
    assert_eq!(
        tag_names(&tags),
        ["1.10.0", "1.10.0-rc.1", "1.2.0", "1.0.0", "latest"],
        "versions first, newest first: {tags}"
    );
    let only_there = tag(&tags, "1.10.0");
    assert_eq!(only_there["local"], false);
    assert_eq!(only_there["inRegistry"], true);
    assert!(
        only_there["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "a registry tag's digest comes by HEAD: {only_there}"
    );
    let both = tag(&tags, "1.2.0");
    assert_eq!(
        (both["local"].clone(), both["inRegistry"].clone()),
        (true.into(), true.into())
    );
    assert!(both["size"].as_u64().unwrap() > 0 && both["created"].as_i64().unwrap() > 0);
    assert_ne!(
        tag(&tags, "1.2.0")["digest"],
        tag(&tags, "1.0.0")["digest"],
        "each tag is its own image"
    );
    let table = home.run(&["image", "tags", &repository]);
    assert!(table.status.success());
    let table = text(&table.stdout);
    assert!(
        table.lines().nth(1).unwrap().starts_with("1.10.0 "),
        "{table}"
    );
    assert!(table.contains("local, registry"), "{table}");

    // The tag that is only in the registry comes over, with progress.
    let pulled = home.run(&["image", "pull", &format!("{repository}:1.10.0")]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    let said = text(&pulled.stderr);
    assert!(
        said.contains("Downloaded newer image") || said.contains("layers"),
        "{said}"
    );
    docker(&["image", "inspect", &format!("{repository}:1.10.0")]);
    let tags = json(&home.run(&["image", "tags", &repository, "--json"]));
    assert_eq!(tag(&tags, "1.10.0")["local"], true);

    // The JSON progress names each layer the daemon reported.
    registry.forget_locally(&repo, "1.10.0");
    let lines = home.run(&["image", "pull", &format!("{repository}:1.10.0"), "--json"]);
    assert!(lines.status.success(), "{}", text(&lines.stderr));
    let last: Value = serde_json::from_str(text(&lines.stdout).lines().last().unwrap()).unwrap();
    assert!(
        last["id"].as_str().unwrap().starts_with("sha256:"),
        "{last}"
    );

    // Wrong names get the registry's words and change nothing.
    let unknown_tag = home.run(&["image", "pull", &format!("{repository}:9.9.9")]);
    assert!(!unknown_tag.status.success());
    assert!(
        text(&unknown_tag.stderr).contains("manifest unknown"),
        "{}",
        text(&unknown_tag.stderr)
    );
    let unknown_repo = home.run(&["image", "tags", &format!("{host}/t-reg-nope")]);
    assert!(!unknown_repo.status.success());
    assert!(
        text(&unknown_repo.stderr).contains("NAME_UNKNOWN"),
        "{}",
        text(&unknown_repo.stderr)
    );
    for (bad, says) in [
        ("Bad/Name", "not a repository name"),
        (&format!("{repository}:1.0.0"), "names a tag"),
    ] {
        let out = home.run(&["image", "tags", bad]);
        assert!(!out.status.success(), "{bad} is refused");
        assert!(
            text(&out.stderr).contains(says),
            "{bad}: {}",
            text(&out.stderr)
        );
    }

    // A registry that does not answer: the daemon's tags are still listed.
    registry.stop();
    let down = json(&home.run(&["image", "tags", &repository, "--json"]));
    assert!(
        down["registryProblem"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{down}"
    );
    assert_eq!(
        tag_names(&down),
        ["1.10.0", "1.10.0-rc.1", "1.2.0", "1.0.0", "latest"],
        "the daemon's tags are still listed"
    );
}

#[test]
fn a_login_is_checked_then_kept_in_the_keyring_and_used_for_tags_and_pulls() {
    let registry = Registry::with_login("alice", "s3cret-pw");
    let host = registry.host();
    let repo = changeover_tests::unique("t-reg-private");
    registry.push(&repo, &["2.0.0"]);
    registry.forget_locally(&repo, "2.0.0");
    let home = Home::new();
    let repository = format!("{host}/{repo}");

    let anonymous = home.run(&["image", "tags", &repository]);
    assert!(!anonymous.status.success());
    assert!(
        text(&anonymous.stderr).contains("asks for credentials"),
        "{}",
        text(&anonymous.stderr)
    );

    let wrong = home.login(&host, "alice", "not-it");
    assert!(!wrong.status.success(), "a wrong password is refused");
    assert!(
        text(&wrong.stderr).contains("refused the credentials"),
        "{}",
        text(&wrong.stderr)
    );
    assert_eq!(
        home.logins(),
        serde_json::json!([]),
        "and nothing is stored"
    );
    assert!(
        !home.config.path().join("registries.json").exists()
            || !std::fs::read_to_string(home.config.path().join("registries.json"))
                .unwrap()
                .contains("alice")
    );

    let ok = home.login(&host, "alice", "s3cret-pw");
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let kept = std::fs::read_to_string(home.config.path().join("registries.json")).unwrap();
    assert!(
        kept.contains("alice") && !kept.contains("s3cret"),
        "no secret in a file: {kept}"
    );
    let logins = home.logins();
    assert_eq!(logins[0]["host"], host.as_str());
    assert_eq!(logins[0]["source"]["kind"], "keyring");
    assert_eq!(logins[0]["username"], "alice");

    let tags = json(&home.run(&["image", "tags", &repository, "--json"]));
    assert_eq!(tag_names(&tags), ["2.0.0"]);
    let pulled = home.run(&["image", "pull", &format!("{repository}:2.0.0")]);
    assert!(
        pulled.status.success(),
        "pulled with X-Registry-Auth: {}",
        text(&pulled.stderr)
    );

    let out = home.run(&["registry", "logout", &host]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(home.logins(), serde_json::json!([]));
    let again = home.run(&["registry", "logout", &host]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("not logged in"),
        "{}",
        text(&again.stderr)
    );
    let after = json(&home.run(&["image", "tags", &repository, "--json"]));
    assert!(
        after["registryProblem"]
            .as_str()
            .unwrap()
            .contains("asks for credentials"),
        "the password is gone from the keyring too; only the pulled tag is listed: {after}"
    );

    for (args, says) in [
        (
            vec![
                "registry",
                "login",
                "bad host",
                "-u",
                "a",
                "--password-stdin",
            ],
            "not a registry host",
        ),
        (
            vec!["registry", "login", &host, "--password-stdin"],
            "give the user name",
        ),
    ] {
        let out = home.run(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn what_docker_login_left_works_as_is_from_config_json_and_from_a_credential_helper() {
    let registry = Registry::with_login("bob", "hunter22");
    let host = registry.host();
    let repo = changeover_tests::unique("t-reg-docker");
    registry.push(&repo, &["3.1.0"]);
    let home = Home::new();
    let repository = format!("{host}/{repo}");

    // `docker login` (done by the kit with its own config folder) wrote
    // `auths` with the credential inline.
    let tags = json(&home.run_with(
        &["image", "tags", &repository, "--json"],
        &registry.docker_config(),
        &[],
    ));
    assert_eq!(tag_names(&tags), ["3.1.0"]);
    let logins = json(&home.run_with(
        &["registry", "ls", "--json"],
        &registry.docker_config(),
        &[],
    ));
    assert_eq!(logins[0]["source"]["kind"], "dockerConfig", "{logins}");
    assert_eq!(logins[0]["username"], "bob");
    let refused = home.run_with(
        &["registry", "logout", &host],
        &registry.docker_config(),
        &[],
    );
    assert!(
        text(&refused.stderr).contains("docker logout"),
        "{}",
        text(&refused.stderr)
    );

    // A credential helper, asked by the protocol Docker's helpers speak.
    let helpers = tempfile::tempdir().unwrap();
    let helper = helpers.path().join("docker-credential-t-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{host}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"bob\",\"Secret\":\"hunter22\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.json"),
        format!("{{\"credHelpers\": {{\"{host}\": \"t-test\"}}}}"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tags = json(&home.run_with(
        &["image", "tags", &repository, "--json"],
        config.path(),
        &[("PATH", &path)],
    ));
    assert_eq!(tag_names(&tags), ["3.1.0"]);
    let logins = json(&home.run_with(
        &["registry", "ls", "--json"],
        config.path(),
        &[("PATH", &path)],
    ));
    assert_eq!(logins[0]["source"]["helper"], "t-test", "{logins}");

    // A config.json that is not JSON is named, not ignored.
    std::fs::write(config.path().join("config.json"), "{broken").unwrap();
    let out = json(&home.run_with(
        &["image", "tags", &repository, "--json"],
        config.path(),
        &[],
    ));
    assert!(
        out["registryProblem"]
            .as_str()
            .unwrap()
            .contains("config.json"),
        "{out}"
    );
    registry.forget_locally(&repo, "3.1.0");
    let out = home.run_with(&["image", "tags", &repository], config.path(), &[]);
    assert!(
        !out.status.success(),
        "nothing local: the reason is the answer"
    );
    assert!(
        text(&out.stderr).contains("config.json"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_rollout_pulls_a_private_image_with_the_login_and_shows_the_pull() {
    let registry = Registry::with_login("carol", "rollout-pw");
    let host = registry.host();
    let repo = changeover_tests::unique("t-reg-web");
    changeover_tests::demo_images(&[]);
    let image = registry.push_image("changeover-demo:v1", &repo, "1.0.0");
    registry.forget_locally(&repo, "1.0.0");
    let home = Home::new();
    let port = changeover_tests::free_port();
    let stack = changeover_tests::TestStack::web(
        "private",
        &format!("image: {image}"),
        port,
        &[
            "health: {path: /health, interval: 500ms, timeout: 1s}",
            "deploy_timeout: 30s",
        ],
    );

    let refused = home.run(&["stack", "deploy", "-f", &stack.file()]);
    assert!(!refused.status.success(), "no login: the pull is refused");
    let said = text(&refused.stderr);
    assert!(
        said.contains("is not on the daemon") && said.contains("registry login"),
        "the registry's refusal, and what to do: {said}"
    );
    assert!(stack.containers().is_empty(), "and nothing was created");

    assert!(home.login(&host, "carol", "rollout-pw").status.success());
    let deployed = home.run(&["stack", "deploy", "-f", &stack.file()]);
    let said = text(&deployed.stderr);
    assert!(deployed.status.success(), "{said}");
    assert!(
        said.contains(&format!("pulling {image}")),
        "the pull is shown: {said}"
    );
    assert_eq!(
        changeover_tests::get(port)
            .unwrap()
            .split_whitespace()
            .next(),
        Some("v1")
    );
}

#[test]
fn a_build_from_a_private_base_image_pulls_it_with_the_login() {
    let registry = Registry::with_login("dave", "build-pw");
    let host = registry.host();
    let repo = changeover_tests::unique("t-reg-base");
    changeover_tests::demo_images(&[]);
    let base = registry.push_image("changeover-demo:v1", &repo, "1");
    registry.forget_locally(&repo, "1");
    let home = Home::new();
    let port = changeover_tests::free_port();
    let stack = changeover_tests::TestStack::web(
        "privbuild",
        "build: ./ctx",
        port,
        &[
            "health: {path: /health, interval: 500ms, timeout: 1s}",
            "deploy_timeout: 30s",
        ],
    );
    let ctx = stack.dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    // The base's host through a build arg's default, as people write it.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("ARG REGISTRY={host}\nFROM ${{REGISTRY}}/{repo}:1 AS app\nLABEL dev.changeover.test.built=yes\n"),
    )
    .unwrap();

    let refused = home.run(&["stack", "deploy", "-f", &stack.file()]);
    assert!(!refused.status.success(), "no login: the base is refused");
    let said = text(&refused.stderr);
    assert!(
        said.contains("at Step 2/3 : FROM")
            && said.contains(&format!("(log in: changeover registry login {host})")),
        "the failing step, the registry's refusal and what to do: {said}"
    );
    assert!(stack.containers().is_empty(), "and nothing was created");

    assert!(home.login(&host, "dave", "build-pw").status.success());
    let deployed = home.run(&["stack", "deploy", "-f", &stack.file()]);
    let said = text(&deployed.stderr);
    assert!(deployed.status.success(), "{said}");
    assert!(
        said.contains("Step 3/3 : LABEL"),
        "the base was pulled with the login and the build went on: {said}"
    );
    assert!(
        !said.contains("build-pw"),
        "the password is never printed: {said}"
    );
    assert_eq!(
        changeover_tests::get(port)
            .unwrap()
            .split_whitespace()
            .next(),
        Some("v1")
    );
    let record = json(&home.run(&["service", "inspect", &stack.web_service(), "--json"]));
    let built = record["record"]["releases"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        built.starts_with(&format!("{}-web:b-", stack.name)),
        "{built}"
    );
    drop(stack);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &built])
        .output();
    let _ = base;
}

#[test]
fn a_registry_that_goes_away_mid_pull_fails_the_pull_in_words_and_leaves_no_image() {
    let registry = Registry::plain();
    let repo = changeover_tests::unique("t-reg-gone");
    changeover_tests::demo_images(&[]);
    registry.push_image("changeover-demo:v1", &repo, "1");
    registry.forget_locally(&repo, "1");
    // Its blobs are held mid-way, then the registry goes away.
    let mirror = registry.with_stalled_blobs();
    let reference = format!("{}/{repo}:1", mirror.host());
    let home = Home::new();
    let mut child = changeover_tests::changeover_cmd(&["image", "pull", &reference], &home.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !said.iter().any(|l: &String| l.contains("layers")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => said.push(line),
            Err(_) => panic!("the pull never showed its layers: {said:?}"),
        }
    }
    mirror.cut();
    let status = changeover_tests::wait_for(std::time::Duration::from_secs(60), || {
        child.try_wait().unwrap()
    })
    .expect("the pull ends once the registry is gone");
    said.extend(rx.try_iter());
    let said = said.join("\n");
    assert!(!status.success(), "{said}");
    assert!(
        said.contains(&format!("{reference} could not be pulled")),
        "the pull fails in words: {said}"
    );
    let left = std::process::Command::new("docker")
        .args(["image", "inspect", &reference])
        .output()
        .unwrap();
    assert!(!left.status.success(), "no image is left: {said}");
}

/// A TLS handshake sent to a plain HTTP server of the test: answered as a
/// plain server does (400, closed), so the client falls back to HTTP.
fn refuse_tls(conn: &mut std::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    if conn.peek(&mut first).is_ok_and(|n| n == 1) && first[0] == 0x16 {
        let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
        return true;
    }
    false
}

/// A registry of the test's own on loopback: answers every request with
/// `answer` (status line, headers and body), counting the requests.
fn scripted_registry(
    answer: &'static [u8],
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if refuse_tls(&mut conn) {
                continue;
            }
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = conn.write_all(answer);
        }
    });
    (host, count)
}

#[test]
fn a_rate_limit_is_shown_with_its_wait_and_a_flood_of_an_answer_is_cut_off() {
    let home = Home::new();
    let (host, count) = scripted_registry(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 120\r\nratelimit-limit: 100;w=21600\r\nratelimit-remaining: 0;w=21600\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"You have reached your limit\"}]}",
    );
    let out = home.run(&["image", "tags", &format!("{host}/app")]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(said.contains("try again in 120 s"), "{said}");
    assert!(
        said.contains("You have reached your limit"),
        "the registry's words: {said}"
    );
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a 429 is not retried in a loop"
    );

    // 64 MiB of tags announced: read up to the bound, then refused.
    static HUGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body = HUGE.get_or_init(|| {
        let mut b = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"tags\":[".to_vec();
        b.extend(std::iter::repeat_n(b"\"a\",".as_slice(), 16 * 1024 * 1024).flatten());
        b
    });
    let (host, _) = scripted_registry(body.as_slice());
    let out = home.run(&["image", "tags", &format!("{host}/app")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at most"),
        "{}",
        text(&out.stderr)
    );
}

/// A registry that wants the token flow, as Docker Hub does: `/v2/…`
/// answers 401 with a Bearer challenge naming `/token`; `/token` gives a
/// token only for the right basic credential; the tag list is served only
/// with that token. Counts the token requests.
fn token_registry() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = format!("127.0.0.1:{port}");
    let tokens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let issued = tokens.clone();
    let realm = format!("http://{host}/token");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if refuse_tls(&mut conn) {
                continue;
            }
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut auth = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("authorization: ") {
                    auth = line[line.len() - v.len()..].trim().to_string();
                }
                line.clear();
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            // base64("erin:tok-pw")
            let good_basic = "Basic ZXJpbjp0b2stcHc=";
            let (status, extra, body) = if path.starts_with("/token") {
                if auth == good_basic && path.contains("scope=repository%3Ateam%2Fapp%3Apull") {
                    issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    ("200 OK", String::new(), r#"{"token":"t0k3n"}"#.to_string())
                } else {
                    ("401 Unauthorized", String::new(), r#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#.to_string())
                }
            } else if auth == "Bearer t0k3n" {
                (
                    "200 OK",
                    String::new(),
                    r#"{"name":"team/app","tags":["2.0","1.0"]}"#.to_string(),
                )
            } else {
                (
                    "401 Unauthorized",
                    format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"test-registry\",scope=\"repository:team/app:pull\"\r\n"),
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_string(),
                )
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (host, tokens)
}

#[test]
fn the_token_flow_gets_a_bearer_token_with_the_login_and_a_wrong_one_is_refused() {
    let (host, tokens) = token_registry();
    let home = Home::new();
    let wrong = home.login(&host, "erin", "nope");
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("incorrect username or password"),
        "the token service's words: {}",
        text(&wrong.stderr)
    );
    assert_eq!(home.logins(), serde_json::json!([]));
    let ok = home.login(&host, "erin", "tok-pw");
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let tags = json(&home.run(&["image", "tags", &format!("{host}/team/app"), "--json"]));
    assert_eq!(tag_names(&tags), ["2.0", "1.0"]);
    assert!(
        tokens.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "a token was asked for the repository's scope"
    );
}

#[test]
fn a_tag_pushed_again_elsewhere_shows_as_newer_until_it_is_pulled() {
    let registry = Registry::plain();
    let host = registry.host();
    let repo = changeover_tests::unique("t-reg-moved");
    registry.push(&repo, &["2.0.0", "next"]);
    let home = Home::new();
    let repository = format!("{host}/{repo}");
    let tags = json(&home.run(&["image", "tags", &repository, "--json"]));
    assert_eq!(tag(&tags, "2.0.0")["newerInRegistry"], false, "{tags}");

    registry.retag(&repo, "next", "2.0.0");
    let tags = json(&home.run(&["image", "tags", &repository, "--json"]));
    assert_eq!(tag(&tags, "2.0.0")["newerInRegistry"], true, "{tags}");
    let table = text(&home.run(&["image", "tags", &repository]).stdout);
    assert!(table.contains("local, newer in registry"), "{table}");

    let pulled = home.run(&["image", "pull", &format!("{repository}:2.0.0")]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    let tags = json(&home.run(&["image", "tags", &repository, "--json"]));
    assert_eq!(
        tag(&tags, "2.0.0")["newerInRegistry"],
        false,
        "the newer one is here now: {tags}"
    );
}

#[test]
fn a_registry_behind_tls_with_a_private_ca_is_trusted_only_with_that_ca() {
    let registry = Registry::with_login_and_tls("frank", "tls-pw-9");
    let host = registry.host();
    let repo = changeover_tests::unique("t-reg-tls");
    registry.push(&repo, &["1.0.0"]);
    registry.forget_locally(&repo, "1.0.0");
    let home = Home::new();
    let repository = format!("{host}/{repo}");
    let ca = registry.ca.clone().unwrap();

    // Not trusted: said, with what to do, and never skipped.
    let untrusted = home.login(&host, "frank", "tls-pw-9");
    assert!(!untrusted.status.success());
    let said = text(&untrusted.stderr);
    assert!(said.contains("--ca FILE"), "{said}");
    assert_eq!(home.logins(), serde_json::json!([]));

    let ok = home.login_with(
        &[&host, "-u", "frank", "--ca", ca.to_str().unwrap()],
        "tls-pw-9",
    );

    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let tags = json(&home.run(&["image", "tags", &repository, "--json"]));
    assert_eq!(
        tag_names(&tags),
        ["1.0.0"],
        "the CA kept with the login is trusted"
    );
    let pulled = home.run(&["image", "pull", &format!("{repository}:1.0.0")]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));

    // A CA file that is not one is refused at login, nothing kept.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "not a certificate").unwrap();
    let home2 = Home::new();
    let out = home2.login_with(
        &[&host, "-u", "frank", "--ca", bad.path().to_str().unwrap()],
        "tls-pw-9",
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("CA"), "{}", text(&out.stderr));
    assert_eq!(home2.logins(), serde_json::json!([]));
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Puts a multi-arch index under `repo:tag` in a plain registry whose one
/// entry is `repo:from`'s image relabelled as linux/arm64.
fn arm64_only(host: &str, repo: &str, from: &str, tag: &str) {
    let v2 = "application/vnd.docker.distribution.manifest.v2+json";
    let manifest: Value = serde_json::from_str(
        &ureq::get(&format!("http://{host}/v2/{repo}/manifests/{from}"))
            .set("Accept", v2)
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let mut config: Value = serde_json::from_str(
        &ureq::get(&format!("http://{host}/v2/{repo}/blobs/{config_digest}"))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    config["architecture"] = "arm64".into();
    let config = serde_json::to_vec(&config).unwrap();
    let digest = sha256(&config);
    let upload = ureq::post(&format!("http://{host}/v2/{repo}/blobs/uploads/"))
        .call()
        .unwrap();
    let location = upload.header("Location").unwrap().to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{host}{location}")
    };
    ureq::put(&format!("{location}{sep}digest={digest}"))
        .set("Content-Type", "application/octet-stream")
        .send_bytes(&config)
        .unwrap();
    let mut arm = manifest.clone();
    arm["config"]["digest"] = digest.into();
    arm["config"]["size"] = config.len().into();
    let arm = serde_json::to_vec(&arm).unwrap();
    let arm_digest = sha256(&arm);
    ureq::put(&format!("http://{host}/v2/{repo}/manifests/{arm_digest}"))
        .set("Content-Type", v2)
        .send_bytes(&arm)
        .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": v2, "size": arm.len(), "digest": arm_digest,
                       "platform": {"architecture": "arm64", "os": "linux"}}],
    });
    ureq::put(&format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .set(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send_string(&index.to_string())
        .unwrap();
}

#[test]
fn an_image_with_no_variant_for_the_daemons_platform_is_refused_in_words() {
    let registry = Registry::plain();
    let host = registry.host();
    let repo = changeover_tests::unique("t-reg-arm");
    registry.push(&repo, &["amd"]);
    arm64_only(&host, &repo, "amd", "arm");
    let home = Home::new();
    let out = home.run(&["image", "pull", &format!("{host}/{repo}:arm")]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("no matching manifest"),
        "the daemon's words: {said}"
    );
    assert!(
        said.contains("no variant for the daemon's OS and architecture"),
        "{said}"
    );
    let tags = json(&home.run(&[
        "image",
        "tags",
        &format!("{host}/{repo}"),
        "--json",
        "--digests",
    ]));
    assert!(
        tag(&tags, "arm")["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "an index is listed and its digest read like any tag: {tags}"
    );
}

#[test]
fn pull_policy_always_takes_a_tag_pushed_again_and_never_refuses_what_is_not_here() {
    let registry = Registry::plain();
    let repo = changeover_tests::unique("t-reg-policy");
    changeover_tests::demo_images(&[]);
    let image = registry.push_image("changeover-demo:v1", &repo, "latest");
    let home = Home::new();
    let port = changeover_tests::free_port();
    let stack = changeover_tests::TestStack::web(
        "pullpolicy",
        &format!("image: {image}\n    pull_policy: always"),
        port,
        &["health: {path: /health, interval: 300ms, timeout: 1s}"],
    );
    let first = home.run(&["stack", "deploy", "-f", &stack.file()]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let version = || {
        changeover_tests::get(port)
            .unwrap()
            .split_whitespace()
            .next()
            .map(str::to_string)
    };
    assert_eq!(version().as_deref(), Some("v1"));

    // The same tag pushed again: the same stack file deploys the new image.
    registry.push_image("changeover-demo:v2", &repo, "latest");
    docker(&["tag", "changeover-demo:v1", &image]);
    let again = home.run(&["stack", "deploy", "-f", &stack.file()]);
    let said = text(&again.stderr);
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains(&format!("Downloaded newer image for {image}")),
        "the pull is shown: {said}"
    );
    assert_eq!(version().as_deref(), Some("v2"), "{said}");

    // never: an image the daemon does not have is refused, not pulled.
    let absent = format!("{}/{repo}:not-here", registry.host());
    let never = changeover_tests::TestStack::web(
        "pullnever",
        &format!("image: {absent}\n    pull_policy: never"),
        changeover_tests::free_port(),
        &[],
    );
    let refused = home.run(&["stack", "deploy", "-f", &never.file()]);
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(
        said.contains(&format!(
            "{}/web: pull_policy is never, and the daemon has no image {absent}: pull it (changeover image pull {absent}) or build it first",
            never.name
        )),
        "{said}"
    );
    assert!(never.containers().is_empty());
}
