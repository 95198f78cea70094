//! Health, readiness, metrics and the admin token file.

use crate::helpers::spawn_app;

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
