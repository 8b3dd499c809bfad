//! Remote environments added by the user, against real daemons: a dockerd
//! serving TLS and an sshd reaching a dockerd, each in a network namespace
//! of the test's own (`kit::remote`), and the real OS keyring (run under
//! `scripts/with-keyring.sh`: a private D-Bus session and an unlocked
//! gnome-keyring). Every case goes through the `changeover` command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use changeover_application::secrets::{tls_key_account, Keyring, SecretStore};
use changeover_tests::remote::RemoteHost;
use changeover_tests::{changeover, unique, wait_for};
use serde_json::Value;

/// `changeover` with this test's own config folder and extra variables.
fn cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = config.display().to_string();
    let mut all = vec![("CHANGEOVER_CONFIG_DIR", dir.as_str())];
    all.extend_from_slice(env);
    changeover(args, &all)
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what} must fail with 1: {err}");
    err
}

/// Every file under `dir`, as (path, bytes).
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p.display().to_string(), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A one-service stack of the demo app on `port`, in a file under `dir`;
/// a rollout waits 4 s between its two slots (long enough to try removing
/// the environment while one runs).
fn demo_stack(dir: &Path, name: &str, port: u16) -> String {
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(
        &path,
        format!(
            "name: {name}\nservices:\n  web:\n    image: changeover-demo:v1\n    ports:\n      - \"{port}:8080\"\n    deploy:\n      replicas: 2\n      update_config: {{parallelism: 1, delay: 4s}}\n    x-changeover:\n      health: {{path: /health, interval: 1s, timeout: 1s, healthy_threshold: 1}}\n      deploy_timeout: 30s\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn get(ip: &str, port: u16) -> Result<String, String> {
    ureq::get(&format!("http://{ip}:{port}/"))
        .timeout(std::time::Duration::from_secs(5))
        .call()
        .map_err(|e| e.to_string())
        .and_then(|r| r.into_string().map_err(|e| e.to_string()))
}

#[test]
fn a_tls_environment_is_added_used_for_deploys_and_removed_with_its_key_only_in_the_keyring() {
    let host = RemoteHost::start();
    let config = tempfile::tempdir().unwrap();
    let c = config.path();
    // The user's files, in a folder of their own that goes away after adding.
    let user = tempfile::tempdir().unwrap();
    let key_path = user.path().join("key.pem");
    std::fs::copy(&host.certs.client.key, &key_path).unwrap();
    let key = std::fs::read(&key_path).unwrap();
    let name = unique("tls");
    let url = host.tls_url();
    let out = cli(
        c,
        &[
            "env",
            "add",
            &name,
            "--host",
            &url,
            "--tls-ca",
            host.certs.ca.to_str().unwrap(),
            "--tls-cert",
            host.certs.client.cert.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        &[],
    );
    ok(&out, "env add");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Docker 20.") || said.contains("Docker "),
        "{said}"
    );

    // The key is in the keyring, and in no file Changeover wrote; no path to
    // the user's key file is kept either.
    let stored = Keyring.get(&tls_key_account(&name)).unwrap();
    assert_eq!(
        stored.as_ref().map(|s| s.expose().as_bytes().to_vec()),
        Some(key.clone()),
        "the key's content is in the OS keyring"
    );
    let key_body: Vec<u8> = key
        .split(|b| *b == b'\n')
        .nth(1)
        .expect("a PEM body line")
        .to_vec();
    for (path, bytes) in files_under(c) {
        assert!(!contains(&bytes, &key_body), "{path} holds the key");
        assert!(
            !contains(&bytes, key_path.to_str().unwrap().as_bytes()),
            "{path} holds the path to the user's key"
        );
    }
    drop(user); // the user's files are gone: it still connects

    let listed: Value =
        serde_json::from_str(&ok(&cli(c, &["env", "ls", "--json"], &[]), "env ls")).unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .expect("the added environment is listed");
    assert_eq!(row["source"], "added");
    assert_eq!(row["reachable"], true, "{row}");

    // Everything works there as locally: a deploy through its edge, a
    // rollout to v2, with links on the remote host's name.
    let stacks = tempfile::tempdir().unwrap();
    let stack = demo_stack(stacks.path(), "remote", 18181);
    let out = cli(c, &["--env", &name, "stack", "deploy", "-f", &stack], &[]);
    ok(&out, "stack deploy on the TLS environment");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("http://{}:18181", host.ip)),
        "the link names the remote host, not localhost: {said}"
    );
    let body = get(&host.ip, 18181).expect("the service answers on the remote host");
    assert!(body.starts_with("v1"), "{body}");
    // The rollout to v2 runs in another process (another client): while it
    // runs, removing the environment is refused, naming the service.
    let config_dir = c.display().to_string();
    let rollout = changeover_tests::changeover_cmd(
        &[
            "--env",
            &name,
            "service",
            "deploy",
            "remote/web",
            "--tag",
            "v2",
        ],
        &[("CHANGEOVER_CONFIG_DIR", config_dir.as_str())],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let started = wait_for(std::time::Duration::from_secs(30), || {
        ok(&cli(c, &["--env", &name, "ps", "--json"], &[]), "ps")
            .contains("remote-web-r2-s0")
            .then_some(())
    });
    assert!(started.is_some(), "the v2 rollout starts its first slot");
    let err = failed(
        &cli(c, &["env", "rm", &name], &[]),
        "removing an environment while a rollout runs there",
    );
    assert!(
        err.contains("a rollout of remote/web runs") && err.contains(&name),
        "{err}"
    );
    let still: Value =
        serde_json::from_str(&ok(&cli(c, &["env", "ls", "--json"], &[]), "env ls")).unwrap();
    assert!(
        still
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == name.as_str()),
        "a refused remove changes nothing"
    );
    assert!(
        Keyring.get(&tls_key_account(&name)).unwrap().is_some(),
        "a refused remove keeps the key"
    );
    let done = rollout.wait_with_output().unwrap();
    ok(&done, "service deploy v2 over TLS");
    let v2 = wait_for(std::time::Duration::from_secs(10), || {
        get(&host.ip, 18181).ok().filter(|b| b.starts_with("v2"))
    });
    assert!(v2.is_some(), "v2 answers on the remote host");
    let ps = ok(&cli(c, &["--env", &name, "ps", "--json"], &[]), "ps");
    assert!(
        ps.contains("remote-web-r2-s0"),
        "the remote containers are listed"
    );

    // Traffic verbs there: a canary of v1 beside v2, split half and half
    // (new clients see both), aborted; then a rollback to release 1.
    let run = |args: &[&str], what: &str| {
        let mut all = vec!["--env", name.as_str()];
        all.extend_from_slice(args);
        ok(&cli(c, &all, &[]), what)
    };
    run(
        &[
            "service",
            "deploy",
            "remote/web",
            "--tag",
            "v1",
            "--strategy",
            "canary",
        ],
        "a canary of v1 on the TLS environment",
    );
    run(
        &["traffic", "split", "remote/web", "--percent", "50"],
        "traffic split",
    );
    let shown: Value = serde_json::from_str(&run(
        &["traffic", "show", "remote/web", "--json"],
        "traffic show",
    ))
    .unwrap();
    let mut weighted: Vec<u64> = shown["routes"][0]["policy"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["release"].as_u64().unwrap())
        .collect();
    weighted.sort_unstable();
    assert_eq!(weighted, vec![2, 3], "both releases are weighted: {shown}");
    let bodies: std::collections::BTreeSet<String> = (0..40)
        .filter_map(|_| get(&host.ip, 18181).ok())
        .map(|b| b.chars().take(2).collect())
        .collect();
    assert_eq!(
        bodies.into_iter().collect::<Vec<_>>(),
        vec!["v1".to_string(), "v2".to_string()],
        "new clients see both releases"
    );
    run(&["traffic", "abort", "remote/web"], "traffic abort");
    assert!(
        (0..10).all(|_| get(&host.ip, 18181).is_ok_and(|b| b.starts_with("v2"))),
        "after the abort every request goes to v2"
    );
    run(&["service", "rollback", "remote/web"], "service rollback");
    let back = wait_for(std::time::Duration::from_secs(10), || {
        get(&host.ip, 18181).ok().filter(|b| b.starts_with("v1"))
    });
    assert!(
        back.is_some(),
        "the rollback serves release 1 on the remote host"
    );

    // A name that exists is refused, and nothing changes.
    let err = failed(
        &cli(
            c,
            &["env", "add", &name, "--host", "unix:///x.sock", "--force"],
            &[],
        ),
        "adding a name twice",
    );
    assert!(
        err.contains("exists already") && err.contains(&name),
        "{err}"
    );

    ok(&cli(c, &["env", "rm", &name], &[]), "env rm");
    assert_eq!(
        Keyring.get(&tls_key_account(&name)).unwrap(),
        None,
        "removing the environment removes its keyring entry"
    );
    let listed = ok(&cli(c, &["env", "ls", "--json"], &[]), "env ls");
    assert!(!listed.contains(&name), "it is gone from the list");
}

#[test]
fn bad_tls_and_tcp_input_is_refused_with_the_value_named_and_nothing_saved() {
    let host = RemoteHost::start();
    let config = tempfile::tempdir().unwrap();
    let c = config.path();
    let certs = &host.certs;
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // Servers the failures need: plain HTTP where TLS is expected, and TLS
    // with an expired certificate.
    let mut plain = host.spawn(
        "busybox",
        &[
            "httpd",
            "-f",
            "-p",
            &format!("{}:2375", host.ip),
            "-h",
            "/tmp",
        ],
    );
    let expired = &certs.expired_server;
    let mut expired_server = host.spawn(
        "openssl",
        &[
            "s_server",
            "-quiet",
            "-accept",
            &format!("{}:2377", host.ip),
            "-cert",
            &s(&expired.cert),
            "-key",
            &s(&expired.key),
        ],
    );
    for port in [2375, 2377] {
        let addr = format!("{}:{port}", host.ip);
        wait_for(std::time::Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "the test's server on {addr} does not listen ({:?} {:?}): {} {}",
                plain.0.try_wait(),
                expired_server.0.try_wait(),
                std::fs::read_to_string(host.dir.path().join("busybox.log")).unwrap_or_default(),
                std::fs::read_to_string(host.dir.path().join("openssl.log")).unwrap_or_default()
            )
        });
    }
    let tls_url = host.tls_url();
    let good = [s(&certs.ca), s(&certs.client.cert), s(&certs.client.key)];
    let tls = |ca: &str, cert: &str, key: &str| {
        vec![
            "--tls-ca".to_string(),
            ca.to_string(),
            "--tls-cert".to_string(),
            cert.to_string(),
            "--tls-key".to_string(),
            key.to_string(),
        ]
    };
    // (host, TLS arguments, what the message must say)
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (
            "tcp://nowhere.invalid:2376".into(),
            vec![],
            "tcp://nowhere.invalid:2376: the host name does not resolve",
        ),
        (
            format!("tcp://{}:1", host.ip),
            vec![],
            ":1: nothing listens there",
        ),
        (
            format!("tcp://{}:2375", host.ip),
            tls(&good[0], &good[1], &good[2]),
            "does not speak TLS",
        ),
        (
            tls_url.clone(),
            vec![],
            "speaks TLS: add the environment with its CA",
        ),
        (
            tls_url.clone(),
            tls(&s(&certs.other_ca), &good[1], &good[2]),
            "the CA given did not sign",
        ),
        (
            tls_url.clone(),
            tls(&good[0], &s(&certs.stranger.cert), &s(&certs.stranger.key)),
            "refused the client certificate",
        ),
        (
            format!("tcp://{}:2377", host.ip),
            tls(&good[0], &good[1], &good[2]),
            "shows an expired certificate",
        ),
        (
            tls_url.clone(),
            tls(&good[0], &good[1], "/no/such/key.pem"),
            "/no/such/key.pem",
        ),
        (
            tls_url.clone(),
            tls(&good[0], &good[1], &good[0]),
            "client key",
        ),
        ("tcp//broken".into(), vec![], "tcp//broken"),
    ];
    for (url, extra, says) in cases {
        let name = unique("bad");
        let mut args = vec!["env", "add", name.as_str(), "--host", url.as_str()];
        args.extend(extra.iter().map(String::as_str));
        let err = failed(&cli(c, &args, &[]), &format!("env add {url} {extra:?}"));
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(says),
            "{url} {extra:?}: the message says {says:?}: {err}"
        );
        assert!(!err.contains("BEGIN"), "no PEM content in a message: {err}");
        assert_eq!(
            Keyring.get(&tls_key_account(&name)).unwrap(),
            None,
            "nothing in the keyring for a refused add"
        );
    }
    assert!(
        !c.join("environments.json").exists(),
        "nothing was saved by any refused add"
    );
    // "default" belongs to the local daemon.
    let err = failed(
        &cli(c, &["env", "add", "default", "--host", &tls_url], &[]),
        "env add default",
    );
    assert!(err.contains("\"default\""), "{err}");
    let err = failed(&cli(c, &["env", "rm", "default"], &[]), "env rm default");
    assert!(err.contains("default"), "{err}");
    // Saving anyway keeps an environment that does not answer now.
    let name = unique("later");
    ok(
        &cli(
            c,
            &[
                "env",
                "add",
                &name,
                "--host",
                "tcp://nowhere.invalid:2375",
                "--force",
            ],
            &[],
        ),
        "env add --force",
    );
    let err = failed(&cli(c, &["--env", &name, "ps"], &[]), "ps on it");
    assert!(err.contains("nowhere.invalid"), "{err}");
}

#[test]
fn an_ssh_environment_asks_once_for_its_host_key_works_and_refuses_a_changed_key() {
    let mut host = RemoteHost::start();
    let (url, agent) = host.start_sshd();
    let config = tempfile::tempdir().unwrap();
    let c = config.path();
    let with_agent = [("SSH_AUTH_SOCK", agent.as_str())];
    let name = unique("ssh");

    // Unknown host key: refused with its fingerprint, nothing saved.
    let err = failed(
        &cli(c, &["env", "add", &name, "--host", &url], &with_agent),
        "env add with an unknown host key",
    );
    let real = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(host.dir.path().join("ssh_host_ed25519_key.pub"))
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout);
    let fingerprint = real.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        err.contains(&fingerprint) && err.contains("--accept-host-key"),
        "the message shows the host's fingerprint {fingerprint} and how to accept it: {err}"
    );
    assert!(!c.join("environments.json").exists(), "nothing saved");

    // A fingerprint that is not the host's accepts nothing.
    let err = failed(
        &cli(
            c,
            &[
                "env",
                "add",
                &name,
                "--host",
                &url,
                "--accept-host-key",
                "SHA256:nottheone",
            ],
            &with_agent,
        ),
        "accepting a wrong fingerprint",
    );
    assert!(err.contains("SHA256:nottheone"), "{err}");

    let out = cli(
        c,
        &[
            "env",
            "add",
            &name,
            "--host",
            &url,
            "--accept-host-key",
            &fingerprint,
        ],
        &with_agent,
    );
    ok(&out, "env add with the accepted key");
    let known = std::fs::read_to_string(c.join("known_hosts")).unwrap();
    assert!(
        known.contains(&host.ip),
        "the accepted key is kept: {known}"
    );

    // Deploys over SSH, links on the host's name.
    let stacks = tempfile::tempdir().unwrap();
    let stack = demo_stack(stacks.path(), "overssh", 18182);
    let out = cli(
        c,
        &["--env", &name, "stack", "deploy", "-f", &stack],
        &with_agent,
    );
    ok(&out, "stack deploy over ssh");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("http://{}:18182", host.ip)));
    let body = get(&host.ip, 18182).expect("the service answers");
    assert!(body.starts_with("v1"), "{body}");
    let inspect = ok(
        &cli(
            c,
            &[
                "--env",
                &name,
                "service",
                "inspect",
                "overssh/web",
                "--json",
            ],
            &with_agent,
        ),
        "service inspect over ssh",
    );
    assert!(inspect.contains("overssh-web-r1-s1"), "{inspect}");

    // A login the host refuses.
    let stranger_key = host.dir.path().join("stranger_ed25519");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger_key)
        .status()
        .unwrap();
    let stranger = host.agent_with(&[&stranger_key]);
    let err = failed(
        &cli(
            c,
            &["env", "add", &unique("ssh-other"), "--host", &url],
            &[("SSH_AUTH_SOCK", stranger.as_str())],
        ),
        "env add with a key the host refuses",
    );
    assert!(err.contains("refused the SSH login"), "{err}");

    // The host's key changes: refused, never replaced.
    let agent = host.change_host_key();
    let err = failed(
        &cli(
            c,
            &["--env", &name, "ps"],
            &[("SSH_AUTH_SOCK", agent.as_str())],
        ),
        "ps after the host key changed",
    );
    assert!(err.contains("has changed"), "{err}");
    let after = std::fs::read_to_string(c.join("known_hosts")).unwrap();
    assert_eq!(after, known, "the known key is not replaced");
}
