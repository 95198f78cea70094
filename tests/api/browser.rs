//! Headless Chromium driven over the DevTools protocol, for the dashboard's browser test: load a
//! page, run script in it (to read what it shows, to click, to keep a key in sessionStorage as a
//! user's paste would), let it download, take screenshots. The browser is killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Chromium, installed by `.ci/run` when missing.
pub fn chromium() -> String {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| Command::new("which").arg(name).output().is_ok_and(|out| out.status.success()))
        .expect(
            "the dashboard test needs Chromium: run .ci/run, which installs it, or apt-get install chromium",
        )
        .to_string()
}

/// How every test runs Chromium: headless, and talking to nothing but the page's server.
pub const HEADLESS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// One page of a headless browser of its own.
pub struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// How long one protocol call may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Browser {
    /// Starts the browser with a blank page of `width` × `height` pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium())
            .args(HEADLESS)
            .args(["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // It names its DevTools address on stderr; the rest of stderr is drained so that it never
        // blocks on a full pipe.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = loop {
            let line = lines.next().expect("chromium names its DevTools address").unwrap();
            if let Some(at) = line.find("ws://") {
                break line[at..].trim().to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        let (socket, _) = tungstenite::connect(address.as_str()).expect("the DevTools socket opens");
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
        }
        let mut browser = Browser { child, socket, session: String::new(), next_id: 0, _profile: profile };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached =
            browser.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}));
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.page("Page.enable", json!({}));
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// A call to the browser itself.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A call to the page.
    pub fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket.send(Message::Text(message.to_string().into())).unwrap();
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < CALL_TIMEOUT, "{method} had no answer");
            let Message::Text(text) = self.socket.read().unwrap_or_else(|e| panic!("{method}: {e}")) else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).unwrap();
            if answer["id"] == json!(id) {
                assert!(answer.get("error").is_none(), "{method}: {}", answer["error"]);
                return answer["result"].clone();
            }
        }
    }

    /// Opens `url` as a new document (by way of a blank page, so that a link differing from the
    /// current address only in its fragment loads anew too) and waits until it has loaded.
    pub fn open(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": "about:blank"}));
        self.wait_for(
            "location.href === 'about:blank' && document.readyState === 'complete'",
            "a blank page",
        );
        self.page("Page.navigate", json!({"url": url}));
        self.wait_for("document.readyState === 'complete'", "the page loads");
    }

    /// The value of a script run in the page (a promise is awaited).
    pub fn eval(&mut self, script: &str) -> Value {
        let result = self.page(
            "Runtime.evaluate",
            json!({"expression": script, "awaitPromise": true, "returnByValue": true, "userGesture": true}),
        );
        assert!(result.get("exceptionDetails").is_none(), "{script}: {}", result["exceptionDetails"]);
        result["result"]["value"].clone()
    }

    /// Waits up to 20 s for `condition` (a script) to be true in the page.
    pub fn wait_for(&mut self, condition: &str, what: &str) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            // While a document loads, its body may not exist yet: not true yet, rather than an error.
            let check = format!(
                "(() => {{ try {{ return Boolean({condition}); }} catch (_) {{ return false; }} }})()"
            );
            if self.eval(&check) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let errors = self.eval(
            "[...document.querySelectorAll('#error, #notice, .failed')].map(e => e.id + ': ' + e.innerText).join(' | ')",
        );
        panic!(
            "waited 20 s for {what} ({condition}); errors shown: {errors}; the page shows: {}",
            self.text_of("document.body")
        );
    }

    /// The page's markup, as it is now.
    pub fn html(&mut self) -> String {
        self.eval("document.documentElement.outerHTML").as_str().unwrap().to_string()
    }

    /// The visible text of the element `selector` (a script expression) names.
    pub fn text_of(&mut self, element: &str) -> String {
        let text = self.eval(&format!("({element}) ? ({element}).innerText : '(no such element)'"));
        text.as_str().unwrap_or_default().chars().take(3000).collect()
    }

    /// Lets the page download into `dir`.
    pub fn allow_downloads(&mut self, dir: &Path) {
        self.call(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": dir.display().to_string()}),
        );
    }

    /// Saves a PNG of the whole page to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let size = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]");
        let clip = json!({"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1});
        let shot = self.page(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true, "clip": clip}),
        );
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
