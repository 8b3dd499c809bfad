//! The real app in a real window: Xvfb, `tauri-driver` and WebKitWebDriver
//! (Debian's `webkit2gtk-driver`), driven over the W3C WebDriver protocol.
//!
//! The protocol client is a few plain JSON calls; it covers what our tests
//! use (scripts, key presses, screenshots) and nothing more.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::workspace;

/// One app window under its own X display and driver.
pub struct Gui {
    base: String,
    name: String,
    xvfb: Child,
    /// The virtual display the window is on (`:N`).
    display: String,
    driver: Child,
    started: Instant,
    /// The app's own config folder (environments added, accepted host
    /// keys), fresh for each window unless the test names one.
    _config: tempfile::TempDir,
}

/// The W3C key code for Escape.
pub const ESCAPE: &str = "\u{E00C}";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether an X server runs on `display`: its lock file names a process
/// that is alive. A server that was killed leaves its lock and socket
/// behind; they are removed, and the display is free again (otherwise a
/// machine that ran many GUI tests runs out of displays to try).
fn display_taken(display: u32) -> bool {
    let lock = format!("/tmp/.X{display}-lock");
    let socket = format!("/tmp/.X11-unix/X{display}");
    let pid = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    match pid {
        Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => true,
        // No lock, or its process is gone: whatever is left is stale.
        _ if Path::new(&lock).exists() || Path::new(&socket).exists() => {
            let removed_lock = std::fs::remove_file(&lock).is_ok() || !Path::new(&lock).exists();
            let removed_socket =
                std::fs::remove_file(&socket).is_ok() || !Path::new(&socket).exists();
            !(removed_lock && removed_socket)
        }
        _ => false,
    }
}

fn start_xvfb() -> (Child, String) {
    for n in 0..50 {
        let display = 90 + (std::process::id() % 400) + n;
        if display_taken(display) {
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

/// The driver's and the app's own output: hidden unless
/// `CHANGEOVER_GUI_DEBUG` is set, for diagnosing a test.
fn driver_log() -> Stdio {
    if std::env::var_os("CHANGEOVER_GUI_DEBUG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

fn call(method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let req = agent.request(method, url);
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match resp {
        Ok(r) => r
            .into_json::<Value>()
            .map(|v| v["value"].clone())
            .map_err(|e| e.to_string()),
        Err(ureq::Error::Status(code, r)) => {
            Err(format!("{code}: {}", r.into_string().unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    }
}

impl Gui {
    /// Launches `app` with extra environment variables and waits until its
    /// page has loaded. `name` names failure screenshots.
    pub fn launch(name: &str, app: &Path, env: &[(&str, &str)]) -> Gui {
        assert!(
            app.exists(),
            "{} is missing: build the app first (`make app`)",
            app.display()
        );
        let (xvfb, display) = start_xvfb();
        let port = free_port();
        let native_port = free_port();
        let config = tempfile::tempdir().expect("a config folder for the app");
        let mut cmd = Command::new("tauri-driver");
        cmd.env("CHANGEOVER_CONFIG_DIR", config.path());
        cmd.args(["--port", &port.to_string()])
            .args(["--native-port", &native_port.to_string()])
            .env("DISPLAY", &display)
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(driver_log())
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let driver = cmd
            .spawn()
            .expect("tauri-driver runs (scripts/setup.sh installs it)");
        // tauri-driver answers before the WebKitWebDriver behind it does; a
        // session asked for in between gets an empty reply.
        crate::wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .and_then(|_| std::net::TcpStream::connect(("127.0.0.1", native_port)))
                .ok()
        })
        .expect("tauri-driver and WebKitWebDriver listen");

        let started = Instant::now();
        let mut gui = Gui {
            display: display.clone(),
            base: String::new(),
            name: name.to_string(),
            xvfb,
            driver,
            started,
            _config: config,
        };
        let ask = || {
            call(
                "POST",
                &format!("http://127.0.0.1:{port}/session"),
                Some(json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "wry",
                        "tauri:options": { "application": app.to_string_lossy() }
                    }}
                })),
            )
        };
        // The driver can drop the very first request while it settles.
        let session = ask()
            .or_else(|_| {
                std::thread::sleep(Duration::from_millis(500));
                ask()
            })
            .unwrap_or_else(|e| panic!("no WebDriver session with the app: {e}"));
        let id = session["sessionId"]
            .as_str()
            .expect("the session has an id")
            .to_string();
        gui.base = format!("http://127.0.0.1:{port}/session/{id}");
        gui.wait_js(
            "return document.readyState === 'complete' && !!document.querySelector('nav')",
            Duration::from_secs(30),
            "the app's page loads",
        );
        gui
    }

    /// The process group of the driver, WebKitWebDriver, the app and its
    /// WebKit processes (for memory figures).
    pub fn process_group(&self) -> u32 {
        self.driver.id()
    }

    /// When the session was requested (the app's start).
    pub fn started(&self) -> Instant {
        self.started
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(method, &format!("{}{path}", self.base), body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} failed: {e}"))
    }

    /// Runs a script and returns its value.
    pub fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Polls `script` until it returns something truthy, and returns that.
    /// WebKitWebDriver now and then fails a script while the page redraws
    /// ("Could not parse script result"): that poll counts as not yet.
    /// On time-out, keeps a screenshot for diagnosis and panics with `what`.
    pub fn wait_js(&self, script: &str, within: Duration, what: &str) -> Value {
        let deadline = Instant::now() + within;
        let mut failed: Option<String> = None;
        loop {
            let v = call(
                "POST",
                &format!("{}/execute/sync", self.base),
                Some(json!({ "script": script, "args": [] })),
            )
            .unwrap_or_else(|e| {
                failed = Some(e);
                Value::Null
            });
            let truthy =
                !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let shot = self.keep_failure_screenshot();
                panic!(
                    "timed out after {within:?} waiting until {what}; screenshot: {}{}",
                    shot.display(),
                    failed
                        .map(|e| format!("; the last script failed: {e}"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|id| id.as_str())
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// The titles of the top-level windows on the window's display (native
    /// dialogs open beside the webview, out of WebDriver's reach).
    pub fn window_titles(&self) -> Vec<String> {
        let out = Command::new("xwininfo")
            .args(["-root", "-tree", "-display", &self.display])
            .output()
            .expect("xwininfo runs (scripts/setup.sh installs x11-utils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .collect()
    }

    /// Clicks `css` once it is there (waiting up to 30 s, saying `what`
    /// when it is not).
    pub fn click_when(&self, css: &str, what: &str) {
        self.wait_js(
            &format!("return document.querySelector({})", json!(css)),
            std::time::Duration::from_secs(30),
            what,
        );
        self.click(css);
    }

    /// Types keys into the element matching `css` as a user would.
    pub fn send_keys(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Types keys into whatever has focus (for shortcuts like `/`).
    pub fn press(&self, text: &str) {
        let actions: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.cmd(
            "POST",
            "/actions",
            Some(json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] })),
        );
    }

    /// Resizes the app's window as a user dragging its corner would.
    pub fn resize_window(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    fn screenshot_png(&self) -> Option<Vec<u8>> {
        let v = call("GET", &format!("{}/screenshot", self.base), None).ok()?;
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str()?)
            .ok()
    }

    /// Writes a PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        let png = self.screenshot_png().expect("a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    fn keep_failure_screenshot(&self) -> PathBuf {
        let path = workspace()
            .join("docs/screenshots/failures")
            .join(format!("{}.png", self.name));
        if let Some(png) = self.screenshot_png() {
            let _ = std::fs::create_dir_all(path.parent().unwrap());
            let _ = std::fs::write(&path, png);
        }
        path
    }
}

/// Kills the driver's whole process group: tauri-driver, WebKitWebDriver and
/// the app. tauri-driver does not exit on SIGTERM, so this is SIGKILL.
fn stop_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

impl Drop for Gui {
    fn drop(&mut self) {
        // Ends the session (closing the app), then the driver and display.
        if !self.base.is_empty() {
            let _ = call("DELETE", &self.base, None);
        }
        stop_group(&mut self.driver);
        let _ = self.xvfb.kill();
        let _ = self.xvfb.wait();
    }
}
