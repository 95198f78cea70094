//! Health, readiness, metrics and the admin token file.

use crate::helpers::spawn_app;
use crate::process::{Http, Server, ctxd, send};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let key = app.account("acme").await;
    app.call(&key, "PATCH", "/v1/account/acme/bots/s/properties", r#"{"a":1}"#).await;
    assert_eq!(app.request("GET", "/healthz", &[], "").await.json()["status"], "ok");
    let ready = app.request("GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 200);
    // Readiness needs no key: it shows no figure of the log, which is every account's.
    assert_eq!(ready.json(), serde_json::json!({"status": "ready"}));

    let metrics = app.request("GET", "/metrics", &[], "").await.body;
    for expected in [
        r#"ctxd_http_requests_total{route="/v1/account/{account}/{namespace}/{session}/properties",method="PATCH",status="204"} 1"#,
        "ctxd_events_appended_total 4",
        "ctxd_log_length 4",
        "ctxd_commit_batch_size_count",
        "ctxd_commit_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(metrics.contains(expected), "missing {expected} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_generated_admin_token_is_written_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let config = ctxd::app::ServeConfig {
        addr: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        database_url: crate::helpers::test_database(dir.path()),
        admin_token: None,
        writer: Default::default(),
        sweep_interval: std::time::Duration::from_secs(3600),
        idempotency_retention: std::time::Duration::from_secs(3600),
        signing_key: Default::default(),
        connections: Default::default(),
    };
    let app =
        ctxd::app::Application::build(&config, std::sync::Arc::new(ctxd::clock::SystemClock)).await.unwrap();
    let path = dir.path().join("admin-token");
    let token = std::fs::read_to_string(&path).unwrap();
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    app.store().shutdown().await;
}

#[tokio::test]
async fn unknown_methods_share_one_metrics_label() {
    let app = spawn_app().await;
    for method in ["FOO1", "FOO2"] {
        app.request(method, "/healthz", &[], "").await.assert_error(405);
    }
    let metrics = app.request("GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains(r#"route="/healthz",method="other",status="405"} 2"#), "{metrics}");
    assert!(!metrics.contains("FOO1"));
}

#[tokio::test]
async fn the_root_sends_a_browser_to_the_dashboard() {
    let app = spawn_app().await;
    let reply = app.request("GET", "/", &[], "").await;
    assert_eq!(reply.status, 307, "{}", reply.body);
    assert_eq!(reply.headers["location"], "/ui/");
}

/// What an operator reads in the log: where the dashboard is, and one line per request only
/// when asked for through `RUST_LOG`.
#[tokio::test]
async fn the_start_log_names_the_dashboard_and_requests_are_logged_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    for (filter, asked) in [("info", false), ("info,ctxd::requests=debug", true)] {
        let log = dir.path().join(format!("ctxd-{asked}.log"));
        let server =
            Server::start_with_log_filter(&dir.path().join(format!("data-{asked}")), Some(&log), filter);
        let id = [("x-request-id", "probe-1")];
        assert_eq!(send(&client, &server.addr, "GET", "/healthz", &id, "").await.unwrap().0, 200);
        assert_eq!(send(&client, &server.addr, "GET", "/nowhere", &id, "").await.unwrap().0, 404);
        drop(server);
        let text = std::fs::read_to_string(&log).unwrap();
        let dashboard = format!(
            "dashboard=http://{}/ui/",
            text.split("ctxd listening addr=").nth(1).unwrap().split_whitespace().next().unwrap()
        );
        assert!(text.contains(&dashboard), "{text}");
        let requests: Vec<&str> = text.lines().filter(|line| line.contains("ctxd::requests")).collect();
        if !asked {
            assert!(requests.is_empty(), "logged without being asked: {requests:?}");
            continue;
        }
        assert_eq!(requests.len(), 2, "{text}");
        for (line, (route, status)) in requests.iter().zip([("/healthz", 200), ("unmatched", 404)]) {
            for field in [
                "method=GET".to_string(),
                format!("route={route}"),
                format!("status={status}"),
                "request_id=probe-1".into(),
            ] {
                assert!(line.contains(&field), "{field} not in {line}");
            }
            assert!(line.contains(" ms="), "{line}");
        }
    }
}

#[tokio::test]
async fn the_demo_prints_the_dashboard_of_the_address_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (code, stdout, stderr) = ctxd(&data_dir, &["demo", "--services", "3", "--addr", "0.0.0.0:18123"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("open http://127.0.0.1:18123/ui/"), "{stderr}");
    assert!(stderr.contains("--addr 0.0.0.0:18123"), "{stderr}");
    assert!(stdout.trim().starts_with("ctxd_"), "the key, alone on stdout: {stdout}");
}
