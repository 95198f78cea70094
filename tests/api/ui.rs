//! The dashboard in a real browser: headless Chromium loads `/ui/` against a server with demo
//! data, and the numbers it shows must be the API's. A screenshot is saved under `target/`.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::browser::Browser;
use crate::helpers::spawn_app;

/// Runs headless Chromium on `url` with `extra` arguments and returns its standard output.
pub(crate) fn headless(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(crate::browser::chromium())
        .args(crate::browser::HEADLESS)
        .args(["--virtual-time-budget=10000", "--window-size=1400,2200"])
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

/// Runs a blocking browser call on the test's worker without stopping the server's tasks.
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(call)
}

/// The page rendered, without its script (which holds the templates).
fn rendered(browser: &mut Browser) -> String {
    let html = blocking(|| browser.html());
    html[..html.find("<script").unwrap_or(html.len())].to_string()
}

/// Whether the page's script has drawn everything after the last change.
const LOADED: &str = "document.body.dataset.loaded === 'true' && document.getElementById('abandoned').dataset.loaded === 'true'";

/// The service ids the abandoned list shows, in order.
fn listed(dom: &str) -> Vec<String> {
    dom.split(r#"<tr class="clickable" data-service=""#)
        .skip(1)
        .map(|row| row[..row.find('"').unwrap()].to_string())
        .collect()
}

/// The service ids of a page of `analytics/abandoned`, in order.
pub(crate) fn ids(page: &Value) -> Vec<String> {
    page["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
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

    // A link that carries a key (in its query or its fragment) is not obeyed: the key is dropped
    // from the address, not used.
    let base = format!("http://{}/ui/", app.addr);
    let mut browser = blocking(|| Browser::start(1400, 2400));
    blocking(|| browser.open(&format!("{base}?key={key}#account=acme&key={key}")));
    assert_eq!(blocking(|| browser.eval("document.getElementById('key').value")), "");
    assert!(!blocking(|| browser.eval("location.href")).as_str().unwrap().contains(&key));
    assert!(blocking(|| browser.text_of("document.getElementById('notice')")).contains("not used"));

    // The user pastes the key (kept in sessionStorage), then opens a link to the last three days
    // beside the three before, the funnel with a window and split by channel, its steps left to
    // the page (the demo spans the last seven days).
    let from = (chrono::Utc::now() - chrono::Duration::days(3)).format("%Y-%m-%d").to_string();
    let to = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let to_hour = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%dT00:00:00Z");
    let filter = format!("from={from}T00:00:00Z&to={to_hour}");
    let view = format!("from={from}&to={to}&compare=previous&window=3600&breakdown=media_type");
    blocking(|| {
        browser.eval(&format!(
            "sessionStorage.setItem('ctxd.key', '{key}'); sessionStorage.setItem('ctxd.account', 'acme')"
        ));
        browser.open(&format!("{base}#{view}"));
        browser.wait_for(LOADED, "the dashboard's data");
    });
    let href = blocking(|| browser.eval("location.href")).as_str().unwrap().to_string();
    assert!(
        !href.contains(&key) && href.contains("compare=previous"),
        "the address keeps the view, never the key: {href}"
    );
    let dom = rendered(&mut browser);
    assert!(!dom.contains("<img"), "markup in a state type stays text");
    assert!(dom.contains("&lt;img src=x"), "the markup state type is shown as text");

    // Menus: the names analytics/dimensions lists.
    let dims = app.call(&key, "GET", "/v1/account/acme/analytics/dimensions", "").await.json();
    for (menu, names) in [("service_type", "service_types"), ("media_type", "media_types")] {
        let shown = blocking(|| {
            browser.eval(&format!("[...document.getElementById('{menu}').options].map(o => o.value)"))
        });
        let mut expected = vec![Value::from("")];
        expected.extend(dims[names].as_array().unwrap().iter().filter(|n| *n != "").cloned());
        assert_eq!(shown, Value::Array(expected), "the {menu} menu");
    }

    // Totals, now and in the period before, and drop-off by step and by channel.
    let path = format!("/v1/account/acme/analytics/dropoff?{filter}&breakdown=media_type&compare=previous");
    let api = app.call(&key, "GET", &path, "").await.json();
    let started = api["totals"]["started"].as_i64().unwrap();
    assert!(started > 0 && started < 300, "three days leave some journeys out: {started}");
    assert!(
        api["previous"]["totals"]["started"].as_i64().unwrap() > 0,
        "the three days before have journeys"
    );
    for figure in ["started", "completed", "abandoned", "active"] {
        let shown = figure_after(&dom, &format!(r#"data-figure="totals.{figure}""#)).unwrap();
        assert_eq!(shown, api["totals"][figure].to_string(), "totals.{figure}");
        let before = figure_after(&dom, &format!(r#"data-figure="previous.totals.{figure}""#)).unwrap();
        assert_eq!(before, api["previous"]["totals"][figure].to_string(), "previous.totals.{figure}");
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
    let step_figures = |states: &Value| -> BTreeMap<String, Vec<String>> {
        states
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let figures =
                    ["entered", "left_onward", "abandoned_here"].iter().map(|f| s[f].to_string()).collect();
                (s["state_type"].as_str().unwrap().to_string(), figures)
            })
            .collect()
    };
    let expected = step_figures(&api["states"]);
    assert!(!expected.is_empty());
    assert_eq!(rows, expected, "drop-off by step");
    let channels = api["by_media_type"].as_array().unwrap();
    assert!(channels.len() >= 2, "the demo has voice and chat: {api}");
    for channel in channels {
        let media = channel["media_type"].as_str().unwrap();
        let mut shown = BTreeMap::new();
        for row in dom.split(r#"data-channel-of=""#).skip(1) {
            if attribute(&row[..row.find('>').unwrap()], "data-media").as_deref() != Some(media) {
                continue;
            }
            let figures: Vec<String> = ["entered", "left_onward", "abandoned_here"]
                .iter()
                .map(|f| figure_after(row, &format!(r#"data-figure="{f}""#)).unwrap())
                .collect();
            shown.insert(unescape(&row[..row.find('"').unwrap()]), figures);
        }
        assert_eq!(shown, step_figures(&channel["states"]), "drop-off by step on {media}");
    }

    // The time series, split by channel.
    let path = format!("/v1/account/acme/analytics/timeseries?{filter}&interval=day&breakdown=media_type");
    let series = app.call(&key, "GET", &path, "").await.json();
    for channel in series["by_media_type"].as_array().unwrap() {
        for figure in ["started", "abandoned"] {
            let sum: i64 =
                channel["buckets"].as_array().unwrap().iter().map(|b| b[figure].as_i64().unwrap()).sum();
            let marker = format!(
                r#"data-figure="series.{figure}" data-media="{}""#,
                channel["media_type"].as_str().unwrap()
            );
            assert_eq!(figure_after(&dom, &marker), Some(sum.to_string()), "{marker}");
        }
    }

    // The flow: every transition drawn and labelled with its count, every step named in full.
    let path = format!("/v1/account/acme/analytics/transitions?{filter}");
    let transitions = app.call(&key, "GET", &path, "").await.json();
    for t in transitions["transitions"].as_array().unwrap() {
        let (from, to) = (escape(t["from"].as_str().unwrap()), escape(t["to"].as_str().unwrap()));
        let link = format!(r#"data-from="{from}" data-to="{to}" data-count=""#);
        let shown = dom.split(&link).nth(1).map(|rest| rest[..rest.find('"').unwrap()].to_string());
        assert_eq!(shown, Some(t["count"].to_string()), "transition {link}");
        let label = format!(r#"data-link-count="{}" data-from="{from}" data-to="{to}""#, t["count"]);
        assert!(dom.contains(&label), "the link's count is written on it: {label}");
        for node in [&from, &to] {
            let name = figure_after(&dom, &format!(r#"data-node="{node}""#)).unwrap();
            assert!(name.starts_with(&format!("{node} · ")), "the step is named in full: {name}");
        }
    }
    assert!(
        dom.contains(r#"data-from="queue" data-to="queue" data-count="1""#),
        "the queue → queue loop is drawn"
    );

    // The funnel: the page picks the most frequent path, which starts where most journeys start;
    // what it shows for those steps is the API's answer, overall, per channel and before.
    let panel = &dom[dom.find(r#"id="funnel""#).unwrap()..];
    let panel_tag = &panel[..panel.find('>').unwrap()];
    let steps = attribute(panel_tag, "data-steps")
        .unwrap_or_else(|| panic!("the funnel panel shows no funnel: {}", &panel[..panel.len().min(1000)]));
    // The steps most journeys start with (the page takes one of them when several tie).
    let busiest_starts = |transitions: &Value| -> Vec<String> {
        let first_steps: Vec<&Value> = transitions["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["from"] == "(start)")
            .collect();
        let most = first_steps.iter().filter_map(|t| t["count"].as_i64()).max().unwrap();
        first_steps
            .iter()
            .filter(|t| t["count"] == most)
            .map(|t| t["to"].as_str().unwrap().to_string())
            .collect()
    };
    let first = steps.split(',').next().unwrap().to_string();
    assert!(busiest_starts(&transitions).contains(&first), "the default steps: {steps}");
    assert!((2..=5).contains(&steps.split(',').count()), "the default steps: {steps}");
    assert_eq!(attribute(panel_tag, "data-window").as_deref(), Some("3600"));
    assert_eq!(attribute(panel_tag, "data-breakdown").as_deref(), Some("media_type"));
    let path = format!(
        "/v1/account/acme/analytics/funnel?steps={steps}&window=3600&breakdown=media_type&compare=previous&{filter}"
    );
    let funnel = app.call(&key, "GET", &path, "").await.json();
    assert_eq!(figure_after(panel, r#"data-figure="funnel.started""#), Some(funnel["started"].to_string()));
    assert_eq!(
        figure_after(panel, r#"data-figure="previous.funnel.started""#),
        Some(funnel["previous"]["started"].to_string())
    );
    for channel in funnel["by_media_type"].as_array().unwrap() {
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
    for (index, step) in funnel["previous"]["steps"].as_array().unwrap().iter().enumerate() {
        let row = panel.split(&format!(r#"<tr data-funnel-step="{index}""#)).nth(1).unwrap();
        assert_eq!(figure_after(row, r#"data-figure="previous.reached""#), Some(step["reached"].to_string()));
    }

    // The abandoned journeys: the API's pages, newest first, 25 a page, with channel, step and
    // time in step; "older" shows the next page.
    let path = format!("/v1/account/acme/analytics/abandoned?limit=25&{filter}");
    let first = app.call(&key, "GET", &path, "").await.json();
    assert_eq!(listed(&dom), ids(&first), "the first page");
    let row = dom.split(r#"<tr class="clickable" data-service=""#).nth(1).unwrap();
    let top = &first["services"][0];
    assert_eq!(figure_after(row, r#"data-figure="step""#).as_deref(), top["dropoff_state_type"].as_str());
    let channel = top["dropoff"]["media_type"].as_str().or(top["media_type"].as_str()).unwrap();
    assert_eq!(figure_after(row, r#"data-figure="channel""#).as_deref(), Some(channel));
    assert!(
        figure_after(row, r#"data-figure="time_in_step""#).unwrap().ends_with(" s")
            || top["dropoff"]["time_in_step_ms"].as_u64().unwrap() >= 60_000
    );
    let context = figure_after(row, r#"data-figure="context""#).unwrap();
    if let Some((namespace, properties)) = top["context"].as_object().and_then(|c| c.iter().next()) {
        let (name, _) = properties.as_object().unwrap().iter().next().unwrap();
        assert!(
            context.contains(&format!("{namespace}: ")) && context.contains(&format!("{name}=")),
            "{context}"
        );
    }
    assert!(!first["next"].is_null(), "more than a page abandoned");
    blocking(|| {
        browser.eval("document.getElementById('abandoned_older').click()");
        browser.wait_for("document.getElementById('abandoned').dataset.page === '2' && document.getElementById('abandoned').dataset.loaded === 'true'", "page 2");
    });
    let after = first["next"].as_str().unwrap().replace('|', "%7C").replace(':', "%3A");
    let second = app.call(&key, "GET", &format!("{path}&after={after}"), "").await.json();
    assert_eq!(listed(&rendered(&mut browser)), ids(&second), "the second page");

    // A drop-off step clicked filters the list to it.
    let state = api["states"][0]["state_type"].as_str().unwrap().to_string();
    blocking(|| {
        browser.eval(&format!("document.querySelector('#dropoff tr[data-state=\"{state}\"]').click()"));
        browser.wait_for(&format!("document.getElementById('abandoned').dataset.loaded === 'true' && document.querySelector('[data-filter=\"{state}\"]')"), "the filtered list");
    });
    let path = format!("/v1/account/acme/analytics/abandoned?limit=25&state_type={state}&{filter}");
    let only = app.call(&key, "GET", &path, "").await.json();
    assert!(!ids(&only).is_empty());
    assert_eq!(listed(&rendered(&mut browser)), ids(&only), "abandoned at {state}");

    // The CSV download holds the whole list under the filters: the API's CSV.
    let downloads = tempfile::tempdir().unwrap();
    blocking(|| {
        browser.allow_downloads(downloads.path());
        browser.eval("document.getElementById('abandoned_csv').click()");
        browser.wait_for("document.getElementById('abandoned_csv').dataset.rows !== undefined", "the CSV");
    });
    let file = downloads.path().join("abandoned-acme.csv");
    for _ in 0..100 {
        if file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let csv =
        app.call(&key, "GET", &format!("{path}&format=csv").replace("limit=25", "limit=1000"), "").await.body;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), csv, "the downloaded CSV");

    // A journey clicked opens beside the list as it was when the customer left: its steps as of
    // the end, the conversation's context and its story.
    let top = &only["services"][0];
    let service = top["service_id"].as_str().unwrap();
    blocking(|| {
        browser.eval(&format!("document.querySelector('#abandoned tr[data-service=\"{service}\"]').click()"));
        browser.wait_for(&format!("document.getElementById('journey').dataset.service === '{service}' && document.getElementById('journey').dataset.loaded === 'true'"), "the journey");
    });
    let journey = rendered(&mut browser);
    let journey = &journey[journey.find(r#"id="journey""#).unwrap()..];
    assert!(journey.contains(r#"class="tag abandoned""#), "labelled abandoned");
    let as_of = top["recorded_at"].as_str().unwrap().replace(':', "%3A");
    let then = app
        .call(
            &key,
            "GET",
            &format!(
                "/genesys/1/cs/services/{service}?as_of={as_of}&active_states=true&completed_states=true"
            ),
            "",
        )
        .await
        .json();
    let states =
        then["completed_states"].as_array().unwrap().len() + then["active_states"].as_array().unwrap().len();
    assert_eq!(journey.matches("data-state-id=").count(), states, "the steps as of the end");
    let last = journey.split(r#"class="last""#).nth(1).unwrap();
    assert!(
        last[..last.find("</li>").unwrap()].contains(&format!(">{state} · ")),
        "the last step is where it was left"
    );
    let conversation = top["conversation_id"].as_str().unwrap();
    let story = app
        .call(&key, "GET", &format!("/v1/account/acme/audit/conversations/{conversation}?limit=20"), "")
        .await
        .json();
    let seqs: Vec<String> = story["story"].as_array().unwrap().iter().map(|e| e["seq"].to_string()).collect();
    let shown: Vec<String> =
        journey.split(r#"<tr data-seq=""#).skip(1).map(|r| r[..r.find('"').unwrap()].to_string()).collect();
    assert_eq!(shown, seqs, "the conversation's story");
    for (namespace, properties) in top["context"].as_object().unwrap() {
        for name in properties.as_object().unwrap().keys() {
            assert!(
                journey.contains(&format!("<dt>{namespace} · {name}</dt>")),
                "context {namespace}.{name}"
            );
        }
    }
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    blocking(|| browser.screenshot(&shots.join("ui-journey.png")));

    // The auditor's view of one conversation: #conversation=<id>, the whole story.
    blocking(|| {
        browser.eval("document.querySelector('[data-open-conversation]').click()");
        browser.wait_for(
            "document.getElementById('conversation').dataset.loaded === 'true'",
            "the conversation",
        );
    });
    let whole = app
        .call(&key, "GET", &format!("/v1/account/acme/audit/conversations/{conversation}?limit=1000"), "")
        .await
        .json();
    let dom = rendered(&mut browser);
    let panel = &dom[dom.find(r#"id="conversation""#).unwrap()..dom.find(r#"id="totals""#).unwrap()];
    let shown = panel.matches(r#"<tr data-seq=""#).count();
    assert_eq!(shown, whole["story"].as_array().unwrap().len(), "the whole story");
    blocking(|| browser.screenshot(&shots.join("ui-conversation.png")));

    // Another channel chosen: the funnel's default steps are chosen again under it; a typed step
    // never recorded is flagged.
    blocking(|| {
        browser.eval("document.getElementById('conversation_close').click()");
        browser.eval("const m = document.getElementById('media_type'); m.value = 'chat'; m.dispatchEvent(new Event('change'))");
        browser.wait_for(
            &format!("{LOADED} && document.getElementById('funnel').dataset.steps"),
            "the chat view",
        );
    });
    let menu =
        blocking(|| browser.eval("[...document.getElementById('media_type').options].map(o => o.value)"));
    assert!(menu.as_array().unwrap().contains(&Value::from("voice")), "the menu keeps every channel: {menu}");
    let path = format!("/v1/account/acme/analytics/transitions?{filter}&media_type=chat");
    let chat = app.call(&key, "GET", &path, "").await.json();
    let steps = blocking(|| browser.eval("document.getElementById('funnel').dataset.steps"));
    let first = steps.as_str().unwrap().split(',').next().unwrap().to_string();
    assert!(busiest_starts(&chat).contains(&first), "chat's default steps: {steps}");
    blocking(|| {
        browser.eval("const s = document.getElementById('funnel_steps'); s.value = 'ivr|bot, queuex'; s.dispatchEvent(new Event('change'))");
        browser.wait_for(
            "document.getElementById('funnel').dataset.steps === 'ivr|bot,queuex'",
            "the typed funnel",
        );
    });
    let dom = rendered(&mut browser);
    assert!(dom.contains(r#"class="warnings" data-warnings="1""#), "the unknown step is warned about");
    assert!(
        dom.contains(r#"<tr data-funnel-step="1" class="unknown">"#),
        "the unknown step's row is flagged"
    );

    blocking(|| {
        browser.open(&format!("{base}#{view}"));
        browser.wait_for(LOADED, "the dashboard again");
        browser.screenshot(&shots.join("ui-dashboard.png"));
    });
    assert!(
        std::fs::metadata(shots.join("ui-dashboard.png")).unwrap().len() > 10_000,
        "a screenshot of the dashboard"
    );

    // With a key of role read, the figures show; a journey's as-of read and its story say which
    // role they need.
    let body = serde_json::json!({"name": "wallboard", "role": "read"}).to_string();
    let issued = app.admin("POST", "/admin/accounts/acme/keys", &body).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    let read_key = issued.json()["key"].as_str().unwrap().to_string();
    blocking(|| {
        browser.eval(&format!("sessionStorage.setItem('ctxd.key', '{read_key}')"));
        browser.open(&format!("{base}#{view}"));
        browser.wait_for(LOADED, "the dashboard with a read key");
        browser.eval("document.querySelector('#abandoned tr.clickable').click()");
        browser.wait_for(
            "document.getElementById('journey').dataset.loaded === 'true'",
            "the journey with a read key",
        );
    });
    let steps = blocking(|| browser.text_of("document.getElementById('journey_states')"));
    assert!(steps.starts_with("403") && steps.contains("'audit'"), "the as-of read needs audit: {steps}");
    let story = blocking(|| browser.text_of("document.getElementById('journey_story')"));
    assert!(story.contains("needs a key of role audit"), "the story needs audit: {story}");
}

#[tokio::test]
async fn the_dashboard_is_served_by_the_binary_with_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let page = app.request("GET", "/ui/", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    // Only the page's own script runs (the browser test shows it does): named by its hash.
    let scripts = policy.split(';').find(|part| part.trim().starts_with("script-src")).unwrap();
    assert!(scripts.contains("'sha256-") && !scripts.contains("unsafe-inline"), "{policy}");
    assert!(!page.body.contains("http://") && !page.body.contains("https://"), "no external resource");
    assert_eq!(app.request("GET", "/ui", &[], "").await.status, 308);
}
