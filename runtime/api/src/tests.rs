//! Every route through the real router (`oneshot`), on a real store: SQLite, and Postgres when
//! `VOXIDE_TEST_POSTGRES` names a server (required in CI). Components are the sample flows'
//! and hostile fixtures' real bytes where a valid one is needed, and hand-made bytes for the
//! invalid cases.

#![allow(clippy::unwrap_used)]

use super::*;
use axum::http::Method;
use http_body_util::BodyExt;
use tower::ServiceExt;
use voxide_runtime::admission::OriginateLimits;
use voxide_runtime::flows::FlowEngineConfig;

/// A component built from this repository's source (`dir` relative to the repository root),
/// into the target directory the runtime's tests use for guests.
fn guest(dir: &str) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let opts = voxide_runtime::builder::BuildOptions {
        target_dir: Some(root.join("target/guests")),
        quiet: true,
    };
    let wasm = voxide_runtime::builder::build_flow(&root.join(dir), &opts)
        .unwrap_or_else(|e| panic!("building {dir} (needs the wasm32-wasip2 target): {e}"));
    std::fs::read(wasm).unwrap()
}

fn hello_component() -> Vec<u8> {
    guest("sample-flows/hello")
}

struct Env {
    app: axum::Router,
    state: ApiState,
    admin: String,
    /// The SQLite file and the engine's cache, shared by every env of one test.
    _dir: std::sync::Arc<tempfile::TempDir>,
}

async fn envs() -> Vec<Env> {
    let mut urls = Vec::new();
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    urls.push(format!("sqlite://{}", dir.path().join("api.db").display()));
    match std::env::var("VOXIDE_TEST_POSTGRES") {
        Ok(admin) => urls.push(postgres_database(&admin).await),
        Err(_) => assert!(std::env::var_os("CI").is_none(), "CI must test Postgres"),
    }
    let engine = FlowEngine::new(FlowEngineConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..Default::default()
    })
    .unwrap();
    let mut out = Vec::new();
    for url in &urls {
        let store = Store::open(url).await.unwrap();
        let (_, key) = store.bootstrap().await.unwrap().unwrap();
        let mut state = ApiState::new(store, engine.clone());
        state.max_upload = 1 << 20;
        out.push(Env { app: router(state.clone()), state, admin: key.secret, _dir: dir.clone() });
    }
    out
}

/// A fresh database on the Postgres server at `admin`.
async fn postgres_database(admin: &str) -> String {
    voxide_store::create_postgres_database(admin, "voxide_api_test").await.unwrap()
}

async fn call(
    env: &Env,
    method: Method,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let response = env.app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, json)
}

async fn get(env: &Env, path: &str, key: &str) -> (StatusCode, serde_json::Value) {
    call(env, Method::GET, path, Some(key), None, Vec::new()).await
}

async fn post_json(
    env: &Env,
    method: Method,
    path: &str,
    key: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    call(env, method, path, Some(key), Some("application/json"), body.to_string().into_bytes())
        .await
}

/// Points `hello`'s `live` alias at `version`.
async fn move_live(env: &Env, key: &str, version: i64) -> (StatusCode, serde_json::Value) {
    let body = serde_json::json!({ "version": version });
    post_json(env, Method::PUT, "/api/v1/flows/hello/aliases/live", key, body).await
}

/// The route a call to `hello` (its `live` alias, or `version`) runs, as the API builds it.
async fn hello_route(
    env: &Env,
    tenant: &str,
    version: Option<i64>,
) -> voxide_runtime::calls::Route {
    let target =
        calls::FlowTarget { flow: "hello".into(), alias: None, version, vars: Default::default() };
    calls::load_target(&env.state, tenant, &target).await.unwrap()
}

async fn upload(
    env: &Env,
    flow: &str,
    key: &str,
    bytes: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    call(
        env,
        Method::POST,
        &format!("/api/v1/flows/{flow}/versions"),
        Some(key),
        Some("application/wasm"),
        bytes,
    )
    .await
}

fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

#[tokio::test]
async fn every_route_needs_a_valid_key() {
    for env in envs().await {
        let routes = [
            (Method::GET, "/api/v1/whoami"),
            (Method::GET, "/api/v1/openapi.json"),
            (Method::GET, "/api/v1/flows"),
            (Method::GET, "/api/v1/flows/x/versions"),
            (Method::POST, "/api/v1/flows/x/versions"),
            (Method::GET, "/api/v1/flows/x/versions/1"),
            (Method::DELETE, "/api/v1/flows/x/versions/1"),
            (Method::GET, "/api/v1/flows/x/aliases"),
            (Method::PUT, "/api/v1/flows/x/aliases/live"),
            (Method::GET, "/api/v1/routes"),
            (Method::POST, "/api/v1/routes"),
            (Method::DELETE, "/api/v1/routes/rt_1"),
            (Method::GET, "/api/v1/calls"),
            (Method::POST, "/api/v1/calls"),
            (Method::GET, "/api/v1/calls/CA1"),
            (Method::POST, "/api/v1/calls/CA1/hangup"),
            (Method::POST, "/api/v1/calls/CA1/redirect"),
            (Method::POST, "/api/v1/calls/CA1/play"),
            (Method::POST, "/api/v1/calls/CA1/say"),
            (Method::GET, "/api/v1/cdrs"),
            (Method::GET, "/api/v1/cdrs/CA1"),
            (Method::GET, "/api/v1/recordings"),
            (Method::GET, "/api/v1/recordings/rec-1"),
            (Method::GET, "/api/v1/recordings/rec-1/audio"),
            (Method::DELETE, "/api/v1/recordings/rec-1"),
            (Method::GET, "/api/v1/events"),
            (Method::GET, "/api/v1/events/log"),
            (Method::GET, "/api/v1/webhooks"),
            (Method::POST, "/api/v1/webhooks"),
            (Method::DELETE, "/api/v1/webhooks/wh_1"),
            (Method::GET, "/api/v1/webhooks/wh_1/deliveries"),
        ];
        for (method, path) in routes {
            for key in [None, Some("vox_not-a-key"), Some("")] {
                let (status, body) = call(&env, method.clone(), path, key, None, Vec::new()).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {key:?}: {body}"
                );
                assert_eq!(code(&body), "unauthorized");
            }
        }
        let (status, body) = get(&env, "/api/v1/whoami", &env.admin).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["role"], "admin");
        let (status, body) = get(&env, "/api/v1/nowhere", &env.admin).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    }
}

#[tokio::test]
async fn upload_list_alias_route_and_delete_a_flow() {
    let hello = hello_component();
    for env in envs().await {
        let k = env.admin.as_str();
        let changes = env.state.changes.subscribe();
        let (status, v1) = upload(&env, "hello", k, hello.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{v1}");
        assert_eq!((v1["version"].as_i64(), v1["created"].as_bool()), (Some(1), Some(true)));
        assert!(v1["digest"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(v1["world"], "voxide:flow/handler@0.1.0");
        assert_eq!(v1["size"].as_u64(), Some(hello.len() as u64));
        assert!(changes.has_changed().unwrap(), "the SIP side hears of it");
        // Same bytes: the same version, 200.
        let (status, again) = upload(&env, "hello", k, hello.clone()).await;
        assert_eq!(
            (status, again["version"].as_i64(), again["created"].as_bool()),
            (StatusCode::OK, Some(1), Some(false))
        );
        // A package with a manifest.
        let boundary = "XyZ";
        let mut body = Vec::new();
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\ndescription = \"hi\"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"component\"; filename=\"f.wasm\"\r\nContent-Type: application/wasm\r\n\r\n").as_bytes());
        body.extend_from_slice(&hello);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let (status, pkg) = call(
            &env,
            Method::POST,
            "/api/v1/flows/greeter/versions",
            Some(k),
            Some(&format!("multipart/form-data; boundary={boundary}")),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{pkg}");
        assert_eq!(pkg["manifest"], "description = \"hi\"");

        let (_, flows) = get(&env, "/api/v1/flows", k).await;
        let names: Vec<&str> =
            flows.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["greeter", "hello"]);
        let (status, versions) = get(&env, "/api/v1/flows/hello/versions", k).await;
        assert_eq!((status, versions.as_array().unwrap().len()), (StatusCode::OK, 1));
        let (status, one) = get(&env, "/api/v1/flows/hello/versions/1", k).await;
        assert_eq!((status, one["version"].as_i64()), (StatusCode::OK, Some(1)));

        let (status, alias) = move_live(&env, k, 1).await;
        assert_eq!((status, alias["version"].as_i64()), (StatusCode::OK, Some(1)), "{alias}");
        let (_, aliases) = get(&env, "/api/v1/flows/hello/aliases", k).await;
        assert_eq!(aliases[0]["name"], "live");
        let (status, route) = post_json(
            &env,
            Method::POST,
            "/api/v1/routes",
            k,
            serde_json::json!({
                "pattern": "+15550100", "targets": [{"flow": "hello", "alias": "live"}]
            }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{route}");
        assert_eq!(route["targets"][0]["weight"], 100);
        let (_, routes) = get(&env, "/api/v1/routes", k).await;
        assert_eq!(routes.as_array().unwrap().len(), 1);
        // In use: refused; after the route goes, the alias still holds it; moved... deleted.
        let (status, body) =
            call(&env, Method::DELETE, "/api/v1/flows/hello/versions/1", Some(k), None, Vec::new())
                .await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
        assert!(body["error"]["message"].as_str().unwrap().contains("+15550100"), "{body}");
        let id = route["id"].as_str().unwrap();
        let (status, _) =
            call(&env, Method::DELETE, &format!("/api/v1/routes/{id}"), Some(k), None, Vec::new())
                .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(
            &env,
            Method::DELETE,
            "/api/v1/flows/greeter/versions/1",
            Some(k),
            None,
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = get(&env, "/api/v1/flows/greeter/versions/1", k).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    }
}

#[tokio::test]
async fn bad_uploads_say_what_is_wrong_and_store_nothing() {
    let hello = hello_component();
    // A core module (not a component): the wasm magic with version 1 and layer 0.
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    // A valid component of another world: a WASI command.
    let wrong_world = guest("runtime/tests/guests/not-a-flow");
    for env in envs().await {
        let k = env.admin.as_str();
        let cases: Vec<(&str, Vec<u8>, StatusCode, &str, &str)> = vec![
            (
                "not wasm",
                b"hello, world".to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_component",
                "not a WebAssembly",
            ),
            (
                "core module",
                core_module.clone(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_component",
                "core WebAssembly module",
            ),
            (
                "wrong world",
                wrong_world.clone(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_component",
                "does not export voxide:flow/handler@0.1.0",
            ),
            (
                "truncated",
                hello[..hello.len() / 2].to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_component",
                "invalid component",
            ),
            (
                "over size",
                vec![0u8; (1 << 20) + 1],
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "1 MiB",
            ),
        ];
        for (what, bytes, status, error_code, says) in cases {
            let (got, body) = upload(&env, "hello", k, bytes).await;
            assert_eq!((got, code(&body)), (status, error_code), "{what}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{what}: {message}");
        }
        // Wrong content type, bad names, an unknown capability in the manifest.
        let (status, body) = call(
            &env,
            Method::POST,
            "/api/v1/flows/hello/versions",
            Some(k),
            Some("text/plain"),
            hello.clone(),
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        );
        let (status, body) = upload(&env, "Bad%20Name", k, hello.clone()).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid"));
        let boundary = "b";
        let mut package = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n[capabilities]\nsmtp = true\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"component\"\r\n\r\n").into_bytes();
        package.extend_from_slice(&hello);
        package.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let (status, body) = call(
            &env,
            Method::POST,
            "/api/v1/flows/hello/versions",
            Some(k),
            Some("multipart/form-data; boundary=b"),
            package,
        )
        .await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_component"));
        assert!(body["error"]["message"].as_str().unwrap().contains("smtp"), "{body}");
        // Nothing was stored by any of them.
        let (_, flows) = get(&env, "/api/v1/flows", k).await;
        assert_eq!(flows, serde_json::json!([]), "a failed upload left something behind");
    }
}

#[tokio::test]
async fn another_tenants_objects_are_404_and_roles_limit_keys() {
    let hello = hello_component();
    for env in envs().await {
        let store = &env.state.store;
        let other = store.create_tenant("other").await.unwrap();
        let theirs = store.create_key(&other.id, "theirs", Role::Admin).await.unwrap().secret;
        let (status, v) = upload(&env, "hello", &theirs, hello.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        let (status, _) = move_live(&env, &theirs, 1).await;
        assert_eq!(status, StatusCode::OK);
        let (status, route) = post_json(
            &env,
            Method::POST,
            "/api/v1/routes",
            &theirs,
            serde_json::json!({"pattern": "+4420", "targets": [{"flow": "hello", "version": 1}]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{route}");
        // The default tenant's admin sees none of it, and cannot touch it.
        let k = env.admin.as_str();
        for path in [
            "/api/v1/flows/hello/versions",
            "/api/v1/flows/hello/versions/1",
            "/api/v1/flows/hello/aliases",
        ] {
            let (status, body) = get(&env, path, k).await;
            assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{path}");
        }
        let (_, flows) = get(&env, "/api/v1/flows", k).await;
        assert_eq!(flows, serde_json::json!([]));
        let (_, routes) = get(&env, "/api/v1/routes", k).await;
        assert_eq!(routes, serde_json::json!([]));
        let id = route["id"].as_str().unwrap();
        let (status, _) =
            call(&env, Method::DELETE, &format!("/api/v1/routes/{id}"), Some(k), None, Vec::new())
                .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) =
            call(&env, Method::DELETE, "/api/v1/flows/hello/versions/1", Some(k), None, Vec::new())
                .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = move_live(&env, k, 1).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Routing to their flow from here is as if it did not exist.
        let (status, _) = post_json(
            &env,
            Method::POST,
            "/api/v1/routes",
            k,
            serde_json::json!({"pattern": "+4421", "targets": [{"flow": "hello", "version": 1}]}),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // A read key reads but cannot change anything.
        let read = store.create_key(&other.id, "ro", Role::Read).await.unwrap().secret;
        let (status, _) = get(&env, "/api/v1/flows", &read).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = upload(&env, "hello", &read, hello.clone()).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
        let (status, _) = move_live(&env, &read, 1).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = call(
            &env,
            Method::DELETE,
            &format!("/api/v1/routes/{id}"),
            Some(&read),
            None,
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn bad_json_and_bad_routes_answer_in_the_error_shape() {
    for env in envs().await {
        let k = env.admin.as_str();
        let (status, body) = call(
            &env,
            Method::POST,
            "/api/v1/routes",
            Some(k),
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid"));
        let (status, body) = post_json(
            &env,
            Method::POST,
            "/api/v1/routes",
            k,
            serde_json::json!({"pattern": "a b", "targets": []}),
        )
        .await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid"));
        let (status, body) = post_json(
            &env,
            Method::PUT,
            "/api/v1/flows/x/aliases/live",
            k,
            serde_json::json!({"version": "one"}),
        )
        .await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid"));
        let (status, body) = get(&env, "/api/v1/flows/x/versions/zero", k).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid"));
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_the_router_serves() {
    let env = envs().await.remove(0);
    let (status, doc) = get(&env, "/api/v1/openapi.json", &env.admin).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<String> = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            listed.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    listed.sort();
    let expected = [
        "DELETE /api/v1/dnc/{number}",
        "DELETE /api/v1/flows/{name}/versions/{version}",
        "DELETE /api/v1/kb/documents/{name}",
        "DELETE /api/v1/recordings/{id}",
        "DELETE /api/v1/routes/{id}",
        "DELETE /api/v1/webhooks/{id}",
        "GET /api/v1/calls",
        "GET /api/v1/calls/{id}",
        "GET /api/v1/campaigns",
        "GET /api/v1/campaigns/{name}",
        "GET /api/v1/campaigns/{name}/attempts",
        "GET /api/v1/campaigns/{name}/leads",
        "GET /api/v1/campaigns/{name}/stats",
        "GET /api/v1/campaigns/{name}/stats/stream",
        "GET /api/v1/cdrs",
        "GET /api/v1/cdrs/{id}",
        "GET /api/v1/dnc",
        "GET /api/v1/events",
        "GET /api/v1/events/log",
        "GET /api/v1/flows",
        "GET /api/v1/flows/{name}/aliases",
        "GET /api/v1/flows/{name}/versions",
        "GET /api/v1/flows/{name}/versions/{version}",
        "GET /api/v1/kb/documents",
        "GET /api/v1/kb/search",
        "GET /api/v1/recordings",
        "GET /api/v1/recordings/{id}",
        "GET /api/v1/recordings/{id}/audio",
        "GET /api/v1/routes",
        "GET /api/v1/webhooks",
        "GET /api/v1/webhooks/{id}/deliveries",
        "GET /api/v1/whoami",
        "POST /api/v1/calls",
        "POST /api/v1/calls/{id}/hangup",
        "POST /api/v1/calls/{id}/play",
        "POST /api/v1/calls/{id}/redirect",
        "POST /api/v1/calls/{id}/say",
        "POST /api/v1/campaigns",
        "POST /api/v1/campaigns/{name}/leads",
        "POST /api/v1/campaigns/{name}/pause",
        "POST /api/v1/campaigns/{name}/start",
        "POST /api/v1/campaigns/{name}/stop",
        "POST /api/v1/dnc",
        "POST /api/v1/flows/{name}/versions",
        "POST /api/v1/routes",
        "POST /api/v1/webhooks",
        "PUT /api/v1/flows/{name}/aliases/{alias}",
        "PUT /api/v1/kb/documents/{name}",
    ];
    assert_eq!(listed, expected);
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // Campaign settings are documented field by field, the nested ones too.
    let schemas = &doc["components"]["schemas"];
    let settings = &schemas["Settings"]["properties"];
    for field in ["agents", "agent_queue", "flow", "lines", "answering_machine", "trunks"] {
        assert!(settings[field].is_object(), "Settings.{field} is not documented: {settings}");
    }
    let amd = &schemas["MachineDetection"]["properties"];
    for field in ["detect", "on_machine", "machine_flow", "false_positive_estimate"] {
        assert!(amd[field].is_object(), "MachineDetection.{field} is not documented: {amd}");
    }
}

/// An env whose API has a call hub (no SIP: calls are registered by hand, as the SIP side
/// would) and writes what calls report, like `vox serve`.
async fn envs_with_calls() -> Vec<(Env, Arc<CallHub>, String)> {
    envs_with_limited_calls(OriginateLimits::default()).await
}

/// [`envs_with_calls`] whose hub lets each tenant originate within `limits`.
async fn envs_with_limited_calls(limits: OriginateLimits) -> Vec<(Env, Arc<CallHub>, String)> {
    let mut out = Vec::new();
    for mut env in envs().await {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let hub = CallHub::with_limits(tx, limits.clone());
        env.state.hub = Some(hub.clone());
        let recordings = env._dir.path().join(format!("recordings-{}", out.len()));
        std::fs::create_dir_all(&recordings).unwrap();
        env.state.recordings_dir = Some(recordings);
        tokio::spawn(record_activity(env.state.store.clone(), rx, env.state.events.clone()));
        env.app = router(env.state.clone());
        let tenant = env.state.store.authenticate(&env.admin).await.unwrap().unwrap().tenant_id;
        out.push((env, hub, tenant));
    }
    out
}

/// Polls `path` until `ready` holds for its JSON (what calls report is written in the
/// background).
async fn eventually(
    env: &Env,
    path: &str,
    key: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..200 {
        let (status, body) = get(env, path, key).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        if ready(&body) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{path} never got there");
}

/// The server's `[originate]` limits: a destination outside the allow list is 403, a burst over
/// the per-second rate 429 with `Retry-After`, a tenant at its calls-at-once limit 429.
#[tokio::test]
async fn originating_beyond_the_servers_limits_is_refused_with_403_or_429() {
    let limits = OriginateLimits {
        max_calls: 1,
        // One call per 10 s: the second request is over the rate however slow this machine.
        per_second: 0.1,
        allow: vec!["sip:*@trunk.example.com:*".into()],
    };
    for (env, hub, tenant) in envs_with_limited_calls(limits).await {
        let k = env.admin.as_str();
        upload(&env, "hello", k, hello_component()).await;
        move_live(&env, k, 1).await;
        let place = |to: &str| {
            let body = serde_json::json!({"to": to, "flow": "hello"}).to_string();
            Request::builder()
                .method(Method::POST)
                .uri("/api/v1/calls")
                .header(header::AUTHORIZATION, format!("Bearer {k}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap()
        };
        let answer = |response: axum::response::Response| async move {
            let status = response.status();
            let retry = response.headers().get(header::RETRY_AFTER).cloned();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            (status, body, retry)
        };
        // Premium-rate numbers through another carrier: refused before anything is sent.
        let response = env.app.clone().oneshot(place("sip:+1900555@premium.example.net")).await;
        let (status, body, _) = answer(response.unwrap()).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"), "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("originate.allow"), "{body}");
        // Allowed: admitted (this node has no SIP, so it then answers 503)…
        let response = env.app.clone().oneshot(place("sip:bob@trunk.example.com")).await;
        let (status, body, _) = answer(response.unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        // …and the second within the same second is over the rate.
        let response = env.app.clone().oneshot(place("sip:bob@trunk.example.com")).await;
        let (status, body, retry) = answer(response.unwrap()).await;
        assert_eq!((status, code(&body)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
        let retry: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
        assert!((1..=10).contains(&retry), "Retry-After {retry}: {body}");
        // A tenant with an outbound call in progress is at its limit of one (checked first).
        let route = hello_route(&env, &tenant, None).await;
        let live = hub.start(&tenant, "outbound", "voxide".into(), "sip:a@trunk".into(), &route);
        let response = env.app.clone().oneshot(place("sip:bob@trunk.example.com")).await;
        let (status, body, _) = answer(response.unwrap()).await;
        assert_eq!((status, code(&body)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
        assert!(body["error"]["message"].as_str().unwrap().contains("max_calls"), "{body}");
        hub.finish(&live, live.record("completed", String::new(), 0));
    }
}

#[tokio::test]
async fn calls_cdrs_recordings_and_events_are_tenant_scoped_and_recorded() {
    let hello = hello_component();
    for (env, hub, tenant) in envs_with_calls().await {
        let k = env.admin.as_str();
        let other = env.state.store.create_tenant("other").await.unwrap();
        let stranger =
            env.state.store.create_key(&other.id, "x", Role::Admin).await.unwrap().secret;
        let reader = env.state.store.create_key(&tenant, "r", Role::Read).await.unwrap().secret;
        upload(&env, "hello", k, hello.clone()).await;
        move_live(&env, k, 1).await;

        // Placing a call: the flow must exist; this node has no SIP.
        let new_call = |flow: &str| serde_json::json!({"to": "sip:bob@127.0.0.1:9", "flow": flow});
        let (status, body) =
            post_json(&env, Method::POST, "/api/v1/calls", k, new_call("nope")).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
        let (status, body) =
            post_json(&env, Method::POST, "/api/v1/calls", k, new_call("hello")).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            "{body}"
        );
        let (status, body) =
            post_json(&env, Method::POST, "/api/v1/calls", &reader, new_call("hello")).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));

        // A call as the SIP side registers it.
        let route = hello_route(&env, &tenant, None).await;
        assert_eq!(route.label, "hello v1 via live");
        let live = hub.start(
            &tenant,
            "inbound",
            "sip:alice@client.test".into(),
            "+15550100".into(),
            &route,
        );
        let (_, list) = get(&env, "/api/v1/calls", k).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(
            (list[0]["id"].as_str(), list[0]["state"].as_str()),
            (Some(live.id.as_str()), Some("ringing"))
        );
        assert_eq!(list[0]["label"], "hello v1 via live");
        let path = format!("/api/v1/calls/{}", live.id);
        let (status, one) = get(&env, &path, &reader).await;
        assert_eq!((status, one["legs"][0]["role"].as_str()), (StatusCode::OK, Some("caller")));
        // Another tenant sees nothing of it.
        let (_, theirs) = get(&env, "/api/v1/calls", &stranger).await;
        assert_eq!(theirs, serde_json::json!([]));
        for (method, suffix, body) in [
            (Method::GET, "", serde_json::Value::Null),
            (Method::POST, "/hangup", serde_json::Value::Null),
            (Method::POST, "/redirect", serde_json::json!({"flow": "hello"})),
            (Method::POST, "/play", serde_json::json!({"media": "beep"})),
            (Method::POST, "/say", serde_json::json!({"text": "hi"})),
        ] {
            let (status, body) =
                post_json(&env, method.clone(), &format!("{path}{suffix}"), &stranger, body).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::NOT_FOUND, "not_found"),
                "{method} {suffix}"
            );
        }
        // This node has no media engine: nothing can be played into its calls.
        for (suffix, body) in [
            ("play", serde_json::json!({"media": "beep.wav"})),
            ("say", serde_json::json!({"text": "hello"})),
        ] {
            let (status, body) =
                post_json(&env, Method::POST, &format!("{path}/{suffix}"), k, body).await;
            assert_eq!((status, code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        }
        live.answered();
        live.event(
            "flow.event",
            serde_json::json!({"name": "menu.choice", "payload": {"digit": "1"}}),
        );
        let wav = env.state.recordings_dir.as_ref().unwrap().join(format!("rec-{}-1.wav", live.id));
        std::fs::write(&wav, b"RIFF....WAVE").unwrap();
        live.recorded(voxide_runtime::hub::RecordingInfo {
            id: format!("rec-{}-1", live.id),
            file: format!("rec-{}-1.wav", live.id),
            duration_ms: 1500,
            channels: 1,
        });
        hub.finish(&live, live.record("trapped", "trapped: wasm trap: unreachable".into(), 4));
        let (_, list) = get(&env, "/api/v1/calls", k).await;
        assert_eq!(list, serde_json::json!([]), "an ended call is no longer live");

        // Its CDR, with the flow outcome; filters narrow.
        let cdrs =
            eventually(&env, "/api/v1/cdrs", k, |b| b.as_array().is_some_and(|a| !a.is_empty()))
                .await;
        let cdr = &cdrs[0];
        assert_eq!(
            (cdr["id"].as_str(), cdr["outcome"].as_str()),
            (Some(live.id.as_str()), Some("trapped"))
        );
        assert_eq!(
            (cdr["flow"].as_str(), cdr["version"].as_i64(), cdr["actions"].as_i64()),
            (Some("hello"), Some(1), Some(4))
        );
        assert!(
            cdr["answered_at"].is_i64() && cdr["detail"].as_str().unwrap().contains("unreachable")
        );
        for (query, n) in [
            ("?outcome=trapped", 1),
            ("?outcome=completed", 0),
            ("?number=%2B15550100", 1),
            ("?number=alice", 1),
            ("?flow=menu", 0),
            ("?since=9999999999999", 0),
            ("?limit=1", 1),
        ] {
            let (_, found) = get(&env, &format!("/api/v1/cdrs{query}"), k).await;
            assert_eq!(found.as_array().unwrap().len(), n, "{query}");
        }
        let (status, _) = get(&env, &format!("/api/v1/cdrs/{}", live.id), &reader).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get(&env, &format!("/api/v1/cdrs/{}", live.id), &stranger).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, theirs) = get(&env, "/api/v1/cdrs", &stranger).await;
        assert_eq!(theirs, serde_json::json!([]));

        // The events, in order, from the outbox.
        let log = eventually(&env, "/api/v1/events/log", k, |b| {
            b.as_array().is_some_and(|a| a.len() == 5)
        })
        .await;
        let kinds: Vec<&str> =
            log.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "call.ringing",
                "call.answered",
                "flow.event",
                "recording.completed",
                "call.completed"
            ]
        );
        assert_eq!(log[2]["data"]["payload"]["digit"], "1");
        assert_eq!(log[4]["data"]["outcome"], "trapped");
        let (_, theirs) = get(&env, "/api/v1/events/log", &stranger).await;
        assert_eq!(theirs, serde_json::json!([]));

        // The recording: metadata, audio, deletion (with the file).
        let rec = format!("/api/v1/recordings/rec-{}-1", live.id);
        let (_, recs) = get(&env, "/api/v1/recordings", k).await;
        assert_eq!(
            (recs[0]["call_id"].as_str(), recs[0]["duration_ms"].as_i64()),
            (Some(live.id.as_str()), Some(1500))
        );
        let (status, _) = get(&env, &rec, &stranger).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let req = Request::get(format!("{rec}/audio"))
            .header(header::AUTHORIZATION, format!("Bearer {k}"))
            .body(Body::empty())
            .unwrap();
        let response = env.app.clone().oneshot(req).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "audio/wav");
        assert_eq!(&response.into_body().collect().await.unwrap().to_bytes()[..], b"RIFF....WAVE");
        let (status, body) =
            call(&env, Method::DELETE, &rec, Some(&reader), None, Vec::new()).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
        let (status, _) = call(&env, Method::DELETE, &rec, Some(k), None, Vec::new()).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(!wav.exists(), "the file went with it");
        let (status, _) = get(&env, &rec, k).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn webhooks_are_admin_managed_and_show_their_deliveries() {
    for (env, hub, tenant) in envs_with_calls().await {
        let k = env.admin.as_str();
        let deployer = env.state.store.create_key(&tenant, "d", Role::Deploy).await.unwrap().secret;
        let other = env.state.store.create_tenant("other").await.unwrap();
        let stranger =
            env.state.store.create_key(&other.id, "x", Role::Admin).await.unwrap().secret;
        let hook = serde_json::json!({"url": "http://127.0.0.1:9/hook"});
        let (status, body) =
            post_json(&env, Method::POST, "/api/v1/webhooks", &deployer, hook.clone()).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
        let (status, body) = post_json(
            &env,
            Method::POST,
            "/api/v1/webhooks",
            k,
            serde_json::json!({"url": "file:///etc/passwd"}),
        )
        .await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid"));
        let (status, created) = post_json(&env, Method::POST, "/api/v1/webhooks", k, hook).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let secret = created["secret"].as_str().unwrap();
        let id = created["id"].as_str().unwrap();
        let (_, list) = get(&env, "/api/v1/webhooks", &deployer).await;
        assert_eq!(list[0]["id"], id);
        assert!(
            list[0].get("secret").is_none()
                && secret.starts_with(list[0]["secret_prefix"].as_str().unwrap())
        );
        // An event from now on is due to it.
        let hello = calls::FlowTarget {
            flow: "hello".into(),
            alias: None,
            version: Some(1),
            vars: Default::default(),
        };
        upload(&env, "hello", k, hello_component()).await;
        let route = calls::load_target(&env.state, &tenant, &hello).await.unwrap();
        hub.start(&tenant, "inbound", "sip:a@b".into(), "hello".into(), &route);
        let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
        let found =
            eventually(&env, &deliveries, k, |b| b.as_array().is_some_and(|a| !a.is_empty())).await;
        assert_eq!(
            (found[0]["event_type"].as_str(), found[0]["status"].as_str()),
            (Some("call.ringing"), Some("pending"))
        );
        let (status, body) = get(&env, &format!("{deliveries}?status=lost"), k).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid"));
        let (status, _) = get(&env, &deliveries, &stranger).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(
            &env,
            Method::DELETE,
            &format!("/api/v1/webhooks/{id}"),
            Some(&stranger),
            None,
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(
            &env,
            Method::DELETE,
            &format!("/api/v1/webhooks/{id}"),
            Some(k),
            None,
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, list) = get(&env, "/api/v1/webhooks", k).await;
        assert_eq!(list, serde_json::json!([]));
    }
}

#[tokio::test]
async fn the_event_stream_replays_the_outbox_then_follows_live_events() {
    for (env, hub, tenant) in envs_with_calls().await {
        let k = env.admin.as_str();
        upload(&env, "hello", k, hello_component()).await;
        let route = hello_route(&env, &tenant, Some(1)).await;
        let first = hub.start(&tenant, "inbound", "sip:a@b".into(), "hello".into(), &route);
        eventually(&env, "/api/v1/events/log", k, |b| b.as_array().is_some_and(|a| a.len() == 1))
            .await;
        // From the start of the outbox: the stored event, then one that happens later.
        let req = Request::get("/api/v1/events?after=0")
            .header(header::AUTHORIZATION, format!("Bearer {k}"))
            .body(Body::empty())
            .unwrap();
        let response = env.app.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut body = response.into_body();
        let mut text = String::new();
        let mut next_frame = async || {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
        };
        text.push_str(&next_frame().await);
        assert!(text.contains("event: call.ringing") && text.contains(&first.id), "{text}");
        first.answered();
        while !text.contains("event: call.answered") {
            text.push_str(&next_frame().await);
        }
        let ids: Vec<i64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(ids[0] < ids[1], "{text}");
        // Another tenant's stream, from the start of the outbox, shows nothing of it.
        let other = env.state.store.create_tenant("other").await.unwrap();
        let stranger = env.state.store.create_key(&other.id, "x", Role::Read).await.unwrap().secret;
        let req = Request::get("/api/v1/events?after=0")
            .header(header::AUTHORIZATION, format!("Bearer {stranger}"))
            .body(Body::empty())
            .unwrap();
        let mut theirs = env.app.clone().oneshot(req).await.unwrap().into_body();
        first.event("call.dtmf", serde_json::json!({"digit": "7"}));
        let frame =
            tokio::time::timeout(std::time::Duration::from_millis(700), theirs.frame()).await;
        assert!(frame.is_err(), "another tenant's stream got {frame:?}");
        let (_, log) = get(&env, "/api/v1/events/log", &stranger).await;
        assert_eq!(log, serde_json::json!([]));
    }
}

/// What the test receiver got: (event id, signature header, body).
type Received = Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A webhook receiver on loopback that answers 500 to its first `fail_first` requests.
async fn receiver(fail_first: usize) -> (String, Received) {
    let got: Received = Arc::default();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let got = got.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| async move {
                if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let h = |n: &str| headers[n].to_str().unwrap().to_owned();
                got.lock().unwrap().push((
                    h("voxide-event-id"),
                    h("voxide-signature"),
                    body.to_vec(),
                ));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Checks a `Voxide-Signature` the way a receiver would.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header.split_once(',') else { return false };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else { return false };
    let Ok(t) = t.parse::<i64>() else { return false };
    let age = voxide_runtime::hub::now_ms() / 1000 - t;
    (0..300).contains(&age) && signature(secret, t, body) == format!("t={t},v1={v1}")
}

#[tokio::test]
async fn webhooks_arrive_exactly_once_after_dedupe_with_valid_signatures_despite_failures() {
    const FAIL_FIRST: usize = 7;
    for (env, hub, tenant) in envs_with_calls().await {
        let k = env.admin.as_str();
        let (url, got) = receiver(FAIL_FIRST).await;
        let (_, hook) =
            post_json(&env, Method::POST, "/api/v1/webhooks", k, serde_json::json!({"url": url}))
                .await;
        let secret = hook["secret"].as_str().unwrap().to_owned();
        let policy =
            RetryPolicy { base: std::time::Duration::from_millis(20), ..RetryPolicy::default() };
        let dispatcher = tokio::spawn(deliver_webhooks(
            env.state.store.clone(),
            env.state.events.clone(),
            policy,
        ));
        upload(&env, "hello", k, hello_component()).await;
        let route = hello_route(&env, &tenant, Some(1)).await;
        for i in 0..5 {
            let live = hub.start(
                &tenant,
                "inbound",
                format!("sip:caller{i}@test"),
                "hello".into(),
                &route,
            );
            live.answered();
            live.event("call.dtmf", serde_json::json!({"digit": "5"}));
            hub.finish(&live, live.record("completed", "completed".into(), 2));
        }
        // 5 calls × (ringing, answered, dtmf, completed).
        let log = eventually(&env, "/api/v1/events/log", k, |b| {
            b.as_array().is_some_and(|a| a.len() == 20)
        })
        .await;
        let expected: std::collections::BTreeSet<String> =
            log.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        let deliveries = format!("/api/v1/webhooks/{}/deliveries", hook["id"].as_str().unwrap());
        let status = eventually(&env, &deliveries, k, |b| {
            b.as_array()
                .is_some_and(|a| a.len() == 20 && a.iter().all(|d| d["status"] == "delivered"))
        })
        .await;
        let retried =
            status.as_array().unwrap().iter().filter(|d| d["attempts"].as_i64() > Some(1)).count();
        assert!(retried >= 1, "the first {FAIL_FIRST} attempts failed, so some were retried");
        dispatcher.abort();
        let got = got.lock().unwrap().clone();
        let mut ids = std::collections::BTreeSet::new();
        for (id, sig, body) in &got {
            assert!(verify(&secret, sig, body), "signature of {id} verifies");
            assert!(!verify("whsec_not-the-secret", sig, body));
            let event: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(event["id"].as_str(), Some(id.as_str()), "header and body agree");
            ids.insert(id.clone());
        }
        assert_eq!(ids, expected, "every event arrived (dedupe by id leaves each exactly once)");
        let completed: std::collections::BTreeSet<&str> = got
            .iter()
            .filter(|(_, _, b)| String::from_utf8_lossy(b).contains("\"call.completed\""))
            .map(|(id, _, _)| id.as_str())
            .collect();
        assert_eq!(completed.len(), 5, "each call's CDR event once");
    }
}

#[tokio::test]
async fn campaigns_leads_and_dnc_are_tenant_scoped_validated_and_keep_good_rows() {
    for env in envs().await {
        let store = &env.state.store;
        let other = store.create_tenant("other").await.unwrap();
        let theirs = store.create_key(&other.id, "theirs", Role::Admin).await.unwrap().secret;
        let reader = store.create_key(&other.id, "reader", Role::Read).await.unwrap().secret;
        let spec = |name: &str, ring: u64| {
            serde_json::json!({"name": name, "settings": {
                "agents": ["alice"], "ring_timeout_secs": ring,
                "trunks": [{"prefix": "+1", "uri": "sip:{number}@carrier.test"}]}})
        };
        // Every problem at once; nothing stored.
        let bad = serde_json::json!({"name": "x", "strategy": "greedy", "abandon_target": 0.2,
            "settings": {"agents": [], "trunks": []}});
        let (status, v) = post_json(&env, Method::POST, "/api/v1/campaigns", &env.admin, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        for needle in ["strategy", "abandon_target", "agents", "trunks"] {
            assert!(message.contains(needle), "{message}");
        }
        let (status, v) =
            post_json(&env, Method::POST, "/api/v1/campaigns", &env.admin, spec("spring", 10))
                .await;
        assert!(status == StatusCode::BAD_REQUEST && code(&v) == "invalid", "{v}");
        let (status, v) =
            post_json(&env, Method::POST, "/api/v1/campaigns", &reader, spec("spring", 20)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        let (status, v) =
            post_json(&env, Method::POST, "/api/v1/campaigns", &env.admin, spec("spring", 20))
                .await;
        assert_eq!((status, v["state"].as_str()), (StatusCode::CREATED, Some("draft")), "{v}");

        // CSV: good rows kept, bad ones listed with their line.
        let csv = "number,tz,first\n+12125550100,America/New_York,Ann\nnot a number,,x\n\
                   +12125550100,,dup\n+12125550101,Mars/Base,Bo\n+12125550102,,\"Cy\"\n";
        let (status, report) = call(
            &env,
            Method::POST,
            "/api/v1/campaigns/spring/leads",
            Some(&env.admin),
            Some("text/csv"),
            csv.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["added"], 2, "{report}");
        let lines: Vec<i64> = report["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["line"].as_i64().unwrap())
            .collect();
        assert_eq!(lines, [3, 4, 5], "{report}");
        // JSON: a number already in the campaign is a rejection, not an error.
        let (status, report) = post_json(
            &env,
            Method::POST,
            "/api/v1/campaigns/spring/leads",
            &env.admin,
            serde_json::json!([{"number": "+1 212 555 0102"}, {"number": "+1 212 555 0103", "vars": {"a": "b"}}]),
        )
        .await;
        assert_eq!((status, report["added"].as_i64()), (StatusCode::OK, Some(1)), "{report}");
        let (_, leads) = get(&env, "/api/v1/campaigns/spring/leads", &env.admin).await;
        assert_eq!(leads.as_array().unwrap().len(), 3);
        assert_eq!(leads[0]["vars"]["first"], "Ann");
        assert_eq!(leads[0]["status"], "new");

        // Another tenant sees none of it, and cannot start or fill it.
        for path in ["/api/v1/campaigns/spring", "/api/v1/campaigns/spring/leads"] {
            let (status, _) = get(&env, path, &theirs).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
        let (status, _) = post_json(
            &env,
            Method::POST,
            "/api/v1/campaigns/spring/start",
            &theirs,
            serde_json::Value::Null,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, list) = get(&env, "/api/v1/campaigns", &theirs).await;
        assert_eq!(list, serde_json::json!([]));

        // Life cycle through the API.
        let (status, v) = post_json(
            &env,
            Method::POST,
            "/api/v1/campaigns/spring/start",
            &env.admin,
            serde_json::Value::Null,
        )
        .await;
        assert_eq!((status, v["state"].as_str()), (StatusCode::OK, Some("running")), "{v}");
        post_json(
            &env,
            Method::POST,
            "/api/v1/campaigns/spring/stop",
            &env.admin,
            serde_json::Value::Null,
        )
        .await;
        let (status, v) = post_json(
            &env,
            Method::POST,
            "/api/v1/campaigns/spring/start",
            &env.admin,
            serde_json::Value::Null,
        )
        .await;
        assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "conflict"), "{v}");
        let (_, stats) = get(&env, "/api/v1/campaigns/spring/stats", &env.admin).await;
        assert_eq!(
            (stats["state"].as_str(), stats["leads_open"].as_i64()),
            (Some("finished"), Some(3))
        );

        // DNC: numbers normalised, bad ones rejected, per tenant.
        let (status, v) = post_json(
            &env,
            Method::POST,
            "/api/v1/dnc",
            &env.admin,
            serde_json::json!({"numbers": ["+1 (212) 555-0100", "0800 FREE"], "reason": "asked"}),
        )
        .await;
        assert_eq!(
            (status, v["added"].as_i64(), v["rejected"][0]["line"].as_i64()),
            (StatusCode::OK, Some(1), Some(2)),
            "{v}"
        );
        let (_, mine) = get(&env, "/api/v1/dnc", &env.admin).await;
        assert_eq!(mine[0]["number"], "+12125550100");
        let (_, none) = get(&env, "/api/v1/dnc", &theirs).await;
        assert_eq!(none, serde_json::json!([]));
        let (status, _) = call(
            &env,
            Method::DELETE,
            "/api/v1/dnc/%2B12125550100",
            Some(&theirs),
            None,
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(
            &env,
            Method::DELETE,
            "/api/v1/dnc/%2B12125550100",
            Some(&env.admin),
            None,
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn an_uploaded_strategy_is_versioned_never_routed_and_pinned_by_the_campaigns_using_it() {
    let strategy = guest("runtime/tests/guests/hostile-strategy");
    for env in envs().await {
        let k = env.admin.as_str();
        let (status, v) = upload(&env, "pacer", k, strategy.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        assert_eq!(v["world"], "voxide:dialer/pacer@0.1.0", "{v}");
        // One name holds one kind of component.
        let (status, v) = upload(&env, "pacer", k, hello_component()).await;
        assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "conflict"), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("under another name"), "{v}");
        let (status, v) = upload(&env, "hello", k, hello_component()).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        let body = serde_json::json!({ "version": 1 });
        let (status, v) =
            post_json(&env, Method::PUT, "/api/v1/flows/pacer/aliases/live", k, body).await;
        assert!(status.is_success(), "{v}");
        // A strategy cannot take calls, by version or by alias.
        for target in [
            serde_json::json!({"flow": "pacer", "version": 1}),
            serde_json::json!({"flow": "pacer", "alias": "live"}),
        ] {
            let route = serde_json::json!({ "pattern": "+1555*", "targets": [target] });
            let (status, v) = post_json(&env, Method::POST, "/api/v1/routes", k, route).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
            assert!(v["error"]["message"].as_str().unwrap().contains("cannot be routed"), "{v}");
        }
        let campaign = |name: &str, strategy: &str| {
            serde_json::json!({"name": name, "strategy": strategy, "settings": {
                "agents": ["alice"], "trunks": [{"prefix": "+1", "uri": "sip:{number}@carrier.test"}]}})
        };
        // An alias is pinned to its version when the campaign is created.
        let (status, v) =
            post_json(&env, Method::POST, "/api/v1/campaigns", k, campaign("a", "pacer@live"))
                .await;
        assert_eq!((status, v["strategy"].as_str()), (StatusCode::CREATED, Some("pacer@1")), "{v}");
        let (status, v) =
            post_json(&env, Method::POST, "/api/v1/campaigns", k, campaign("b", "hello@1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("not a pacing strategy"), "{v}");
        let (status, v) =
            post_json(&env, Method::POST, "/api/v1/campaigns", k, campaign("c", "pacer@7")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        // A flow campaign pins its flow: the version stays while the campaign is not finished.
        let flow_campaign = serde_json::json!({"name": "d", "settings": {"flow": "hello@1",
            "trunks": [{"prefix": "+1", "uri": "sip:{number}@carrier.test"}]}});
        let (status, v) =
            post_json(&env, Method::POST, "/api/v1/campaigns", k, flow_campaign).await;
        assert_eq!(
            (status, v["settings"]["flow"].as_str()),
            (StatusCode::CREATED, Some("hello@1")),
            "{v}"
        );
        let (status, v) =
            call(&env, Method::DELETE, "/api/v1/flows/hello/versions/1", Some(k), None, vec![])
                .await;
        assert_eq!(status, StatusCode::CONFLICT, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("pinned by campaign(s) d"), "{v}");
    }
}

#[tokio::test]
async fn knowledge_base_documents_are_tenant_scoped_replaced_whole_and_searched_by_bm25() {
    for env in envs().await {
        let store = &env.state.store;
        let other = store.create_tenant("other").await.unwrap();
        let theirs = store.create_key(&other.id, "theirs", Role::Admin).await.unwrap().secret;
        let reader = store.create_key(&other.id, "reader", Role::Read).await.unwrap().secret;
        let k = env.admin.as_str();
        let put = |name: &str, key: &str, body: &[u8]| {
            let path = format!("/api/v1/kb/documents/{name}");
            let (key, body) = (key.to_owned(), body.to_vec());
            let env = &env;
            async move { call(env, Method::PUT, &path, Some(&key), Some("text/markdown"), body).await }
        };
        let faq = b"# Opening hours\n\nOpen Monday to Friday, 9 to 5.\n\n# Prices\n\nA consultation costs 40 euros.\n";
        let (status, v) = put("faq", k, faq).await;
        assert_eq!((status, v["name"].as_str()), (StatusCode::CREATED, Some("faq")), "{v}");
        let (status, _) = put("faq", k, faq).await;
        assert_eq!(status, StatusCode::OK, "a second PUT replaces");
        let (status, v) = put("Bad_Name", k, b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        let (status, v) = put("bin", k, b"\xff\xfe").await;
        assert!(
            status == StatusCode::BAD_REQUEST
                && v["error"]["message"].as_str().unwrap().contains("UTF-8"),
            "{v}"
        );
        let (status, _) = put("mine", &reader, b"text").await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let (status, hits) =
            get(&env, "/api/v1/kb/search?q=how%20much%20is%20a%20consultation&k=2", k).await;
        assert_eq!(status, StatusCode::OK, "{hits}");
        assert_eq!(
            (hits[0]["document"].as_str(), hits[0]["heading"].as_str()),
            (Some("faq"), Some("Prices")),
            "{hits}"
        );
        assert!(hits[0]["text"].as_str().unwrap().contains("40 euros"), "{hits}");
        // Another tenant sees none of it.
        let (_, theirs_hits) = get(&env, "/api/v1/kb/search?q=consultation", &theirs).await;
        assert_eq!(theirs_hits, serde_json::json!([]));
        let (_, docs) = get(&env, "/api/v1/kb/documents", &theirs).await;
        assert_eq!(docs, serde_json::json!([]));
        let (status, _) = get(&env, "/api/v1/kb/search?q=%20", k).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) =
            call(&env, Method::DELETE, "/api/v1/kb/documents/faq", Some(&theirs), None, vec![])
                .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "another tenant's document does not exist for them"
        );
        let (status, _) =
            call(&env, Method::DELETE, "/api/v1/kb/documents/faq", Some(k), None, vec![]).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, docs) = get(&env, "/api/v1/kb/documents", k).await;
        assert_eq!(docs, serde_json::json!([]));
    }
}
