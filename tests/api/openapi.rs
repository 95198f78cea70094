//! The OpenAPI description at `/openapi.json` and the reference at `/docs/`: the description is
//! OpenAPI 3.1 whose references resolve, it names every route the server serves (and the server
//! serves every route it names), every operation declares what its family answers, and the
//! reference shows it without reaching beyond this server.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

async fn description(app: &TestApp) -> Value {
    let reply = app.request("GET", "/openapi.json", &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type").as_deref(), Some("application/json"));
    reply.json()
}

/// Every (method, path, operation) of the description.
fn operations(api: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in api["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    found
}

/// Every `$ref` anywhere under `value`.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get("$ref") {
                out.push(target.clone());
            }
            object.values().for_each(|inner| references(inner, out));
        }
        Value::Array(items) => items.iter().for_each(|inner| references(inner, out)),
        _ => {}
    }
}

/// `value` itself, or what its `$ref` points to.
fn resolved<'a>(api: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(target) => api.pointer(target.trim_start_matches('#')).expect("a reference resolves"),
        None => value,
    }
}

#[tokio::test]
async fn the_description_is_openapi_3_1_whose_references_all_resolve() {
    let app = spawn_app().await;
    let api = description(&app).await;
    assert_eq!(api["openapi"], "3.1.0");
    assert_eq!(api["info"]["title"], "ctxd");
    let mut targets = Vec::new();
    references(&api, &mut targets);
    assert!(targets.len() > 100, "the description shares its schemas and responses by reference");
    for target in targets {
        assert!(target.starts_with("#/"), "{target} is not in the description itself");
        assert!(api.pointer(&target[1..]).is_some(), "{target} does not resolve");
    }
    let mut ids = BTreeSet::new();
    for (method, path, operation) in operations(&api) {
        let id = operation["operationId"].as_str().unwrap_or_default().to_string();
        assert!(ids.insert(id.clone()), "operationId {id} of {method} {path} is not unique");
        for (status, response) in operation["responses"].as_object().unwrap() {
            let response = resolved(&api, response);
            let text = response["description"].as_str().unwrap_or_default();
            assert!(!text.is_empty(), "{method} {path} {status} has no description");
        }
        // Each `{name}` of the path is a path parameter of the operation, and no other is.
        let in_template: BTreeSet<&str> =
            path.split('{').skip(1).filter_map(|rest| rest.split('}').next()).collect();
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|parameter| resolved(&api, parameter))
            .filter(|parameter| parameter["in"] == "path")
            .map(|parameter| parameter["name"].as_str().unwrap())
            .collect();
        assert_eq!(in_template, declared, "{method} {path}: path parameters");
    }
}

#[tokio::test]
async fn every_described_route_is_served() {
    let app = spawn_app().await;
    let api = description(&app).await;
    let operations = operations(&api);
    assert!(operations.len() >= 90, "only {} operations described", operations.len());
    for (method, path, _) in operations {
        // Any value for each parameter: the route must be there, whatever the answer.
        let concrete: String = path
            .split('/')
            .map(|segment| if segment.starts_with('{') { "1" } else { segment })
            .collect::<Vec<_>>()
            .join("/");
        let reply = app.request(&method, &concrete, &[], "").await;
        let unrouted = reply.status == 405 || reply.body.contains("no such route");
        assert!(!unrouted, "{method} {path} is described but not served: {} {}", reply.status, reply.body);
    }
}

/// Route registrations in `src/http` that do not go through `routes!`, by file: the one allowed
/// is the journeys API's `BASE/`, which is no route but an error answer in that family's shape.
const UNDESCRIBED_REGISTRATIONS: &[(&str, usize)] = &[("src/http/journeys/mod.rs", 1)];

#[test]
fn every_route_is_registered_with_its_description() {
    let mut found = BTreeMap::new();
    let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/http")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let count = [".route(", ".route_service(", ".nest_service("]
                    .iter()
                    .map(|call| text.matches(call).count())
                    .sum::<usize>();
                if count > 0 {
                    let relative = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
                    found.insert(relative.display().to_string(), count);
                }
            }
        }
    }
    let allowed: BTreeMap<String, usize> =
        UNDESCRIBED_REGISTRATIONS.iter().map(|(file, count)| (file.to_string(), *count)).collect();
    assert_eq!(
        found, allowed,
        "register routes with `.routes(routes!(handler))` and a `#[utoipa::path]` on the handler, so that \
         /openapi.json describes them"
    );
}

#[tokio::test]
async fn every_operation_declares_what_its_family_answers() {
    let app = spawn_app().await;
    let api = description(&app).await;
    for (method, path, operation) in operations(&api) {
        let responses = operation["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        assert!(has("414") && has("431"), "{method} {path}: the request head limits");
        let writes = method != "GET";
        let tenant = path.starts_with("/v1/") || path.starts_with("/genesys/");
        if writes {
            for status in ["400", "403", "413", "422", "503", "507"] {
                assert!(has(status), "{method} {path} writes and does not declare {status}");
            }
            assert_eq!(has("429"), tenant, "{method} {path}: 429 where writes are rate-limited");
        }
        if tenant || path.starts_with("/admin/") {
            assert!(has("403") && operation["security"].is_array(), "{method} {path}: its credentials");
        }
        // The journeys API answers errors with `exception`; the others with `{"message"}` only.
        for (status, response) in responses.iter().filter(|(status, _)| status.starts_with('4')) {
            let schema = &resolved(&api, response)["content"]["application/json"]["schema"]["$ref"];
            let journeys = path.starts_with("/genesys/");
            let expected = match (journeys, status.as_str()) {
                (true, _) => "#/components/schemas/JourneysError",
                (false, "412") => "#/components/schemas/VersionConflict",
                (false, _) => "#/components/schemas/Message",
            };
            assert_eq!(schema, expected, "{method} {path} {status}");
        }
    }
}

#[tokio::test]
async fn the_reference_at_docs_is_served_from_this_server_alone() {
    let app = spawn_app().await;
    let redirect = app.request("GET", "/docs", &[], "").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location").as_deref(), Some("/docs/"));
    let page = app.request("GET", "/docs/", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    let initializer = app.request("GET", "/docs/swagger-initializer.js", &[], "").await;
    assert_eq!(initializer.status, 200);
    assert!(initializer.body.contains(r#""url": "/openapi.json""#), "{}", initializer.body);
    assert!(initializer.body.contains(r#""validatorUrl": "none""#), "no badge fetched from elsewhere");
    // Every file the page loads is this server's, and is served.
    let assets: Vec<&str> = page
        .body
        .split(['"', '\''])
        .filter(|part| [".js", ".css"].iter().any(|end| part.ends_with(end)))
        .collect();
    assert!(assets.len() >= 4, "{}", page.body);
    for asset in assets {
        assert!(!asset.contains("//"), "the page loads {asset} from elsewhere");
        let file = app.request("GET", &format!("/docs/{}", asset.trim_start_matches("./")), &[], "").await;
        assert_eq!(file.status, 200, "{asset}");
    }
    for text in [&page.body, &initializer.body] {
        assert!(!text.contains("http://") && !text.contains("https://"), "an external address: {text}");
    }
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let missing = app.request("GET", "/docs/nothing.js", &[], "").await;
    assert_eq!(missing.assert_error(404), "the reference has no file 'nothing.js'");
}

#[tokio::test]
async fn the_reference_renders_every_family_in_a_browser() {
    let app = spawn_app().await;
    let url = format!("http://{}/docs/", app.addr);
    let dom = tokio::task::spawn_blocking(move || crate::ui::headless(&url, &["--dump-dom"])).await.unwrap();
    for tag in ["context", "journeys", "analytics", "audit", "admin", "operations"] {
        assert!(
            dom.contains(&format!(r#"data-tag="{tag}""#)),
            "no {tag} section: {}",
            &dom[..dom.len().min(3000)]
        );
    }
    assert!(
        dom.contains("/v1/account/{account}/{namespace}/{session}/properties"),
        "the operations are listed"
    );
}
