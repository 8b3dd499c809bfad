//! The real app in a real window: Xvfb, `tauri-driver` and WebKitWebDriver
//! (Debian's `webkit2gtk-driver`), driven over WebDriver with fantoccini.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

use crate::workspace;

/// One app window under its own X display and driver.
pub struct Gui {
    pub client: Client,
    name: String,
    xvfb: Child,
    driver: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start_xvfb() -> (Child, String) {
    for n in 0..50 {
        let display = 90 + (std::process::id() % 400) + n;
        if Path::new(&format!("/tmp/.X11-unix/X{display}")).exists() {
            continue;
        }
        let mut child = Command::new("Xvfb")
            .arg(format!(":{display}"))
            .args(["-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb runs (scripts/setup.sh installs xvfb)");
        let ready = crate::wait_for(Duration::from_secs(10), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            Path::new(&format!("/tmp/.X11-unix/X{display}"))
                .exists()
                .then_some(true)
        });
        if ready == Some(true) {
            return (child, format!(":{display}"));
        }
        let _ = child.kill();
    }
    panic!("no X display could be started");
}

impl Gui {
    /// Launches `app` with extra environment variables and waits until its
    /// page has loaded. `name` names failure screenshots.
    pub async fn launch(name: &str, app: &Path, env: &[(&str, &str)]) -> Gui {
        assert!(
            app.exists(),
            "{} is missing: build the app first (`make app`)",
            app.display()
        );
        let (xvfb, display) = start_xvfb();
        let port = free_port();
        let native_port = free_port();
        let mut cmd = Command::new("tauri-driver");
        cmd.args(["--port", &port.to_string()])
            .args(["--native-port", &native_port.to_string()])
            .env("DISPLAY", &display)
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let driver = cmd
            .spawn()
            .expect("tauri-driver runs (scripts/setup.sh installs it)");
        crate::wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("tauri-driver listens");

        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("wry"));
        caps.insert(
            "tauri:options".into(),
            json!({ "application": app.to_string_lossy() }),
        );
        let client = ClientBuilder::native()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with the app");
        let gui = Gui {
            client,
            name: name.to_string(),
            xvfb,
            driver,
        };
        gui.wait_js(
            "return document.readyState === 'complete' && !!document.querySelector('nav')",
            Duration::from_secs(20),
            "the app's page loads",
        )
        .await;
        gui
    }

    /// Runs a script and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something truthy, and returns that.
    /// On time-out, keeps a screenshot for diagnosis and panics with `what`.
    pub async fn wait_js(&self, script: &str, within: Duration, what: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(script).await;
            let truthy =
                !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let shot = self.keep_failure_screenshot().await;
                panic!(
                    "timed out after {within:?} waiting until {what}; screenshot: {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes a PNG of the window.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    async fn keep_failure_screenshot(&self) -> PathBuf {
        let path = workspace()
            .join("docs/screenshots/failures")
            .join(format!("{}.png", self.name));
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::create_dir_all(path.parent().unwrap());
            let _ = std::fs::write(&path, png);
        }
        path
    }

    /// Types into the element that has focus.
    pub async fn type_keys(&self, text: &str) {
        self.client
            .active_element()
            .await
            .expect("a focused element")
            .send_keys(text)
            .await
            .expect("typing");
    }

    /// Presses one key on the page body (for shortcuts like `/`).
    pub async fn press_on_body(&self, key: &str) {
        let body = self
            .client
            .find(fantoccini::Locator::Css("body"))
            .await
            .expect("a body");
        body.send_keys(key).await.expect("a key press");
    }

    /// Ends the session (closing the app) and stops the display and driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        // `Drop` stops the driver and the display.
    }
}

fn stop_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

impl Drop for Gui {
    fn drop(&mut self) {
        stop_group(&mut self.driver);
        let _ = self.xvfb.kill();
        let _ = self.xvfb.wait();
    }
}
