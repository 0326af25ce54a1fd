//! The management API is not a door: a web page cannot drive it (cross-site
//! requests, non-JSON bodies, DNS rebinding), and credentials in a
//! backend's URL are used, never shown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use drover_tests::{ClusterBuilder, chat_body, lmstudio};
use http::Method;

fn spec(url: &str) -> Bytes {
    Bytes::from(serde_json::json!({"kind": "lmstudio", "url": url}).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_web_page_could_send_are_refused() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .start()
        .await;
    let c = &cluster.client;
    let evil = spec("http://127.0.0.1:9/steal");
    let cases: [(&[(&str, &str)], u16); 5] = [
        // A cross-site "simple" POST: text/plain needs no preflight.
        (
            &[
                ("content-type", "text/plain"),
                ("origin", "http://evil.example"),
            ],
            403,
        ),
        (
            &[
                ("content-type", "application/json"),
                ("origin", "http://evil.example"),
            ],
            403,
        ),
        (
            &[
                ("content-type", "application/json"),
                ("sec-fetch-site", "cross-site"),
            ],
            403,
        ),
        // No browser marks, but not JSON either.
        (&[("content-type", "text/plain")], 415),
        // DNS rebinding: the page's own name, resolved to loopback.
        (
            &[
                ("content-type", "application/json"),
                ("host", "evil.example:8700"),
            ],
            403,
        ),
    ];
    for (headers, status) in cases {
        let r = c
            .call(Method::POST, "/admin/backends", headers, evil.clone())
            .await;
        assert_eq!(r.status, status, "{headers:?}: {}", r.text());
    }
    let r = c
        .call(
            Method::GET,
            "/admin/backends",
            &[("host", "evil.example")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let list = c.get("/admin/backends").await.json();
    assert_eq!(list["backends"].as_array().unwrap().len(), 1, "{list}");

    // The hub's own pages (same origin) and the CLI still work.
    let own = format!("http://{}", cluster.hub.addr());
    let r = c
        .call(
            Method::POST,
            "/admin/backends",
            &[("content-type", "application/json"), ("origin", &own)],
            spec("http://127.0.0.1:9"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_a_backend_url_are_never_shown() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .start()
        .await;
    let sim_url = cluster.sim("studio").url();
    let with_secret = sim_url.replacen("http://", "http://user:s3cret-pw@", 1);
    cluster.client.delete("/admin/backends/studio").await;
    let r = cluster
        .client
        .call(
            Method::POST,
            "/admin/backends",
            &[("content-type", "application/json")],
            spec(&with_secret),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!r.text().contains("s3cret"), "{}", r.text());
    let name = r.json()["name"].as_str().unwrap().to_string();
    drover_tests::wait_until("the backend is discovered", || {
        cluster.hub.inspect(|s| s.fleet().knows_model("m"))
    })
    .await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), name);
    for path in ["/v1/models", "/admin/backends", "/metrics"] {
        let text = cluster.client.get(path).await.text();
        assert!(!text.contains("s3cret"), "{path}: {text}");
        assert!(text.contains(&name), "{path}: {text}");
    }
    assert!(!name.contains("user"), "{name}");
    cluster.shutdown().await;
}

/// Every management route the hub documents asks for the admin key: the
/// door is a layer in front of them all, so a route added without a check
/// of its own is still behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_needs_the_admin_key() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .hub(|c| c.admin_key = Some("the-admin-key".into()))
        .start()
        .await;
    let c = &cluster.client;
    let doc = c.get("/openapi.json").await.json();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/admin") {
            continue;
        }
        // Path parameters filled with names that exist.
        let path = path
            .replace("{name}", "studio")
            .replace("{model}", "m")
            .replace("{id}", "nobody");
        for method in item.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let body = if method == Method::POST {
                Bytes::from_static(b"{}")
            } else {
                Bytes::new()
            };
            for auth in [None, Some("Bearer wrong")] {
                let headers: Vec<(&str, &str)> =
                    auth.map(|a| ("authorization", a)).into_iter().collect();
                let r = c.call(method.clone(), &path, &headers, body.clone()).await;
                assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {}", r.text());
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} admin requests checked");
    // And with the key, one of them answers.
    let r = c
        .call(
            Method::GET,
            "/admin/backends",
            &[("authorization", "Bearer the-admin-key")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    cluster.shutdown().await;
}
