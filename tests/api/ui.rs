//! The dashboard in a real browser: headless Chromium loads `/ui/` against a server with demo
//! data, and the numbers it shows must be the API's. A screenshot is saved under `target/`.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::helpers::spawn_app;

/// Chromium, installed by `.ci/run` when missing.
fn chromium() -> String {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| Command::new("which").arg(name).output().is_ok_and(|out| out.status.success()))
        .expect(
            "the dashboard test needs Chromium: run .ci/run, which installs it, or apt-get install chromium",
        )
        .to_string()
}

/// Runs headless Chromium on `url` with `extra` arguments and returns its standard output.
pub(crate) fn headless(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--window-size=1400,2200",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The text of the first element after `marker` in `html`.
fn figure_after(html: &str, marker: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    let rest = &html[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')?;
    Some(rest[open..open + close].trim().to_string())
}

/// The value of the first `name="…"` attribute in `html`.
fn attribute(html: &str, name: &str) -> Option<String> {
    let marker = format!(r#" {name}=""#);
    let start = html.find(&marker)? + marker.len();
    Some(html[start..start + html[start..].find('"')?].to_string())
}

/// Text as the DOM dump writes it in an attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Text as it was before HTML escaping (what the page's `esc` and the DOM dump write).
fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The funnel figures the page shows for a step, overall or for one channel.
const FUNNEL_FIGURES: [&str; 4] = ["reached", "dropped", "conversion_from_first", "conversion_from_previous"];

/// Whether `shown` is how the page writes the API's `figure`: a count as it is, a rate as a
/// percentage to 0.1, no figure as a dash.
fn shows(shown: &str, figure: &Value) -> bool {
    match figure {
        Value::Null => shown == "—",
        Value::Number(n) if n.is_i64() => shown == n.to_string(),
        Value::Number(rate) => shown
            .strip_suffix('%')
            .and_then(|percent| percent.parse::<f64>().ok())
            .is_some_and(|percent| (percent - 100.0 * rate.as_f64().unwrap()).abs() <= 0.05 + 1e-9),
        _ => false,
    }
}

/// A funnel row: its step's index, and its channel (empty for all channels).
type FunnelRow = (usize, String);

/// The funnel figures the panel shows, per row, as text.
fn funnel_shown(panel: &str) -> BTreeMap<FunnelRow, Vec<String>> {
    let mut shown = BTreeMap::new();
    for row in panel.split(r#"<tr data-funnel-step=""#).skip(1) {
        let row = &row[..row.find("</tr>").unwrap()];
        let index = row[..row.find('"').unwrap()].parse().unwrap();
        let media = attribute(&row[..row.find('>').unwrap()], "data-media").unwrap_or_default();
        let figures = FUNNEL_FIGURES
            .iter()
            .map(|f| figure_after(row, &format!(r#"data-figure="{f}""#)).unwrap())
            .collect();
        shown.insert((index, media), figures);
    }
    shown
}

/// The same figures in the API's funnel answer, per row.
fn funnel_answered(funnel: &Value) -> BTreeMap<FunnelRow, Vec<Value>> {
    let mut answered = BTreeMap::new();
    let mut add = |media: &str, figures: &Value| {
        for (index, step) in figures["steps"].as_array().unwrap().iter().enumerate() {
            let values = FUNNEL_FIGURES.iter().map(|f| step[f].clone()).collect();
            answered.insert((index, media.to_string()), values);
        }
    };
    add("", funnel);
    for channel in funnel["by_media_type"].as_array().unwrap() {
        add(channel["media_type"].as_str().unwrap(), channel);
    }
    answered
}

#[tokio::test]
async fn the_dashboard_shows_the_same_numbers_as_the_api() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    let report = ctxd::demo::load(&app.store, "acme", 300, 16).await.unwrap();
    assert_eq!(report.services, 300);
    // One more journey, now: a step repeated (queue → queue, a loop in the flow diagram) and a
    // state type that is markup, which the page must show as text.
    let cs = crate::journeys::Cs { app: &app, key: key.clone() };
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let start = serde_json::json!({"customer_id": "odd", "service_type": "billing", "media_type": "voice", "timestamp": now});
    let s = cs.start_service(start).await;
    let queue = cs.start_state(&s, serde_json::json!({"state_type": "queue", "timestamp": now})).await;
    let again = cs.transition(&s, queue, "queue", serde_json::json!({"timestamp": now})).await;
    cs.transition(&s, again, "<img src=x onerror=alert(1)>", serde_json::json!({"timestamp": now})).await;

    // The page is linked to with a first day (the demo spans the last seven days), and the funnel
    // with a window and split by channel; its steps are left to the page.
    let day = (chrono::Utc::now() - chrono::Duration::days(3)).format("%Y-%m-%d");
    let filter = format!("from={day}T00:00:00Z");
    let url =
        format!("http://{}/ui/#account=acme&key={key}&from={day}&window=3600&breakdown=media_type", app.addr);
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || headless(&url, &["--dump-dom"])
    })
    .await
    .unwrap();
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page did not load its data: {}",
        &dom[..dom.len().min(2000)]
    );
    // What the page rendered, without its script (which holds the templates).
    let dom = dom[..dom.find("<script").unwrap_or(dom.len())].to_string();
    assert!(!dom.contains("<img"), "markup in a state type stays text");
    assert!(dom.contains("&lt;img src=x"), "the markup state type is shown as text");
    assert!(
        dom.contains(r#"data-from="queue" data-to="queue" data-count="1""#),
        "the queue → queue loop is drawn"
    );

    let api = app.call(&key, "GET", &format!("/v1/account/acme/analytics/dropoff?{filter}"), "").await.json();
    let started = api["totals"]["started"].as_i64().unwrap();
    assert!(started > 0 && started < 300, "the first day leaves some journeys out: {started}");
    for figure in ["started", "completed", "abandoned", "active"] {
        let shown = figure_after(&dom, &format!(r#"data-figure="totals.{figure}""#)).unwrap();
        assert_eq!(shown, api["totals"][figure].to_string(), "totals.{figure}");
    }
    let mut rows = BTreeMap::new();
    for row in dom.split(r#"<tr data-state=""#).skip(1) {
        let state = unescape(&row[..row.find('"').unwrap()]);
        let figures: Vec<String> = ["entered", "left_onward", "abandoned_here"]
            .iter()
            .map(|f| figure_after(row, &format!(r#"data-figure="{f}""#)).unwrap())
            .collect();
        rows.insert(state, figures);
    }
    let expected: BTreeMap<String, Vec<String>> = api["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let figures =
                ["entered", "left_onward", "abandoned_here"].iter().map(|f| s[f].to_string()).collect();
            (s["state_type"].as_str().unwrap().to_string(), figures)
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(rows, expected, "drop-off by step");

    let path = format!("/v1/account/acme/analytics/transitions?{filter}");
    let transitions = app.call(&key, "GET", &path, "").await.json();
    for t in transitions["transitions"].as_array().unwrap() {
        let marker = format!(
            r#"data-from="{}" data-to="{}" data-count=""#,
            escape(t["from"].as_str().unwrap()),
            escape(t["to"].as_str().unwrap())
        );
        let shown = dom.split(&marker).nth(1).map(|rest| rest[..rest.find('"').unwrap()].to_string());
        assert_eq!(shown, Some(t["count"].to_string()), "transition {marker}");
    }

    // The funnel: the page picks the most frequent path, which starts where most journeys start;
    // what it shows for those steps is the API's answer, overall and per channel.
    let panel = &dom[dom.find(r#"id="funnel""#).unwrap()..];
    let panel_tag = &panel[..panel.find('>').unwrap()];
    let steps = attribute(panel_tag, "data-steps")
        .unwrap_or_else(|| panic!("the funnel panel shows no funnel: {}", &panel[..panel.len().min(1000)]));
    let first_steps =
        transitions["transitions"].as_array().unwrap().iter().filter(|t| t["from"] == "(start)");
    let busiest_start = first_steps.max_by_key(|t| t["count"].as_i64()).unwrap();
    assert_eq!(steps.split(',').next(), busiest_start["to"].as_str(), "the default steps: {steps}");
    assert!((2..=5).contains(&steps.split(',').count()), "the default steps: {steps}");
    assert_eq!(attribute(panel_tag, "data-window").as_deref(), Some("3600"));
    assert_eq!(attribute(panel_tag, "data-breakdown").as_deref(), Some("media_type"));
    let path =
        format!("/v1/account/acme/analytics/funnel?steps={steps}&window=3600&breakdown=media_type&{filter}");
    let funnel = app.call(&key, "GET", &path, "").await.json();
    assert_eq!(figure_after(panel, r#"data-figure="funnel.started""#), Some(funnel["started"].to_string()));
    let channels = funnel["by_media_type"].as_array().unwrap();
    assert!(channels.len() >= 2, "the demo has voice and chat: {funnel}");
    for channel in channels {
        let marker = format!(
            r#"data-figure="funnel.started" data-media="{}""#,
            channel["media_type"].as_str().unwrap()
        );
        assert_eq!(figure_after(panel, &marker), Some(channel["started"].to_string()), "{marker}");
    }
    let (shown, answered) = (funnel_shown(panel), funnel_answered(&funnel));
    assert_eq!(shown.keys().collect::<Vec<_>>(), answered.keys().collect::<Vec<_>>(), "funnel rows");
    for (row, values) in &answered {
        for ((name, value), text) in FUNNEL_FIGURES.iter().zip(values).zip(&shown[row]) {
            assert!(shows(text, value), "funnel row {row:?} {name}: shown {text}, the API says {value}");
        }
    }

    // The abandoned journeys the page lists are the API's under the same filter (the page asks
    // for 50): not the demo's total, which the first day leaves partly out.
    let path = format!("/v1/account/acme/analytics/abandoned?limit=50&{filter}");
    let abandoned = app.call(&key, "GET", &path, "").await.json();
    let listed = abandoned["services"].as_array().unwrap().len();
    assert!(listed > 0 && listed as u64 <= report.abandoned, "{abandoned}");
    assert_eq!(dom.matches(r#"class="clickable""#).count(), listed);

    let screenshot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-dashboard.png");
    let argument = format!("--screenshot={}", screenshot.display());
    tokio::task::spawn_blocking(move || headless(&url, &[&argument])).await.unwrap();
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "a screenshot of the dashboard");
}

#[tokio::test]
async fn the_dashboard_is_served_by_the_binary_with_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let page = app.request("GET", "/ui/", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'self'"));
    assert!(!page.body.contains("http://") && !page.body.contains("https://"), "no external resource");
    assert_eq!(app.request("GET", "/ui", &[], "").await.status, 308);
}
