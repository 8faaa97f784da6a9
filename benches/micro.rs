//! Criterion micro-benchmarks of the per-request costs.
//!
//! Run with: `cargo bench --features test-suite --bench micro`

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::COOKIE;
use http::{HeaderValue, Request, Response};
use tower::{service_fn, Layer, Service, ServiceExt};

use cloakroom::test_suite::CountingStore;
use cloakroom::{id::SessionId, Key, KeyRing, MemoryStore, Session, SessionLayer};

fn ring() -> KeyRing {
    KeyRing::new(Key::from_bytes(&[5; 32]).expect("key"))
}

fn codec(c: &mut Criterion) {
    let ring = ring();
    let id = SessionId::generate().expect("id");
    let valid = ring.sign(&id);
    let mut tampered = valid.clone().into_bytes();
    tampered[40] ^= 1;
    let tampered = String::from_utf8(tampered).expect("ascii");

    c.bench_function("id_generate_and_sign", |b| {
        b.iter(|| ring.sign(&SessionId::generate().expect("id")))
    });
    c.bench_function("cookie_verify_valid", |b| {
        b.iter(|| ring.verify(black_box(&valid)))
    });
    c.bench_function("cookie_verify_tampered", |b| {
        b.iter(|| ring.verify(black_box(&tampered)))
    });
    c.bench_function("cookie_verify_junk", |b| {
        b.iter(|| ring.verify(black_box("not-a-session-cookie")))
    });
    c.bench_function("store_key_sha256", |b| {
        b.iter(|| black_box(&id).store_key())
    });
}

/// Whole requests through the layer around a trivial service, on the
/// memory store: the layer's own cost per request.
fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = CountingStore::new(MemoryStore::new());
    let layer = SessionLayer::builder(store.clone())
        .key(Key::from_bytes(&[5; 32]).expect("key"))
        .build()
        .expect("layer");
    let service = layer.layer(service_fn(|request: Request<String>| async move {
        let session = request.extensions().get::<Session>().cloned();
        let path = request.uri().path().to_owned();
        if let Some(session) = session {
            match path.as_str() {
                "/read" => {
                    black_box(session.get::<String>("user").await.ok());
                }
                "/write" => {
                    let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0);
                    session.insert("n", n + 1).await.ok();
                }
                _ => {}
            }
        }
        Ok::<_, Infallible>(Response::new(String::new()))
    }));

    // One logged-in session to read and write.
    let cookie = runtime.block_on(async {
        let mut service = service.clone();
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(
                Request::builder()
                    .uri("/write")
                    .body(String::new())
                    .expect("request"),
            )
            .await
            .expect("response");
        let set = response.headers()[http::header::SET_COOKIE]
            .to_str()
            .expect("ascii");
        HeaderValue::from_str(set.split(';').next().expect("pair")).expect("header")
    });

    let request = |path: &str, with_cookie: bool| {
        let mut request = Request::builder()
            .uri(path)
            .body(String::new())
            .expect("request");
        if with_cookie {
            request.headers_mut().insert(COOKIE, cookie.clone());
        }
        request
    };
    for (name, path, with_cookie) in [
        ("layer_anonymous_untouched", "/none", false),
        ("layer_cookie_untouched", "/none", true),
        ("layer_authenticated_read", "/read", true),
        ("layer_write_one_key", "/write", true),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let service = service.clone();
                let request = request(path, with_cookie);
                async move { service.oneshot(request).await.expect("response") }
            })
        });
    }

    // Hostile cookies on a route that reads the session: each is rejected
    // by the codec, so the read finds an anonymous session and the store
    // is never asked.
    let valid = cookie.to_str().expect("ascii").to_owned();
    let mut tampered = valid.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = HeaderValue::from_bytes(&tampered).expect("header");
    let junk = HeaderValue::from_static("__Host-id=not-a-session-cookie; theme=dark");
    store.reset();
    for (name, header) in [
        ("layer_read_junk_cookie", junk),
        ("layer_read_tampered_cookie", tampered),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let service = service.clone();
                let mut request = Request::builder()
                    .uri("/read")
                    .body(String::new())
                    .expect("request");
                request.headers_mut().insert(COOKIE, header.clone());
                async move { service.oneshot(request).await.expect("response") }
            })
        });
    }
    assert_eq!(
        store.calls().total(),
        0,
        "a rejected cookie never reaches the store"
    );
}

criterion_group!(benches, codec, layer);
criterion_main!(benches);
