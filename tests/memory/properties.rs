//! Property tests for the cookie codec and the key ring, and for the layer
//! under arbitrary `Cookie` headers.

use std::convert::Infallible;

use cloakroom::test_suite::CountingStore;
use cloakroom::{
    id::InvalidCookie, id::SessionId, Key, KeyRing, MemoryStore, Session, SessionLayer,
};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response};
use proptest::prelude::*;
use tower::{service_fn, Layer, ServiceExt};

fn key(bytes: [u8; 32]) -> Key {
    Key::from_bytes(&bytes).expect("32-byte key")
}

fn id(bytes: [u8; 16]) -> SessionId {
    SessionId::from_bytes(bytes)
}

/// Strings near the valid cookie shape: valid cookies with edits, and
/// strings from the cookie alphabet of about the right length.
fn near_valid() -> impl Strategy<Value = String> {
    let edited = (
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        0usize..66,
        any::<u8>(),
        0u8..3,
    )
        .prop_map(|(id_bytes, key_bytes, at, byte, how)| {
            let mut value = KeyRing::new(key(key_bytes))
                .sign(&id(id_bytes))
                .into_bytes();
            match how {
                0 => value[at] = byte,
                1 => {
                    value.remove(at);
                }
                _ => value.insert(at, byte),
            }
            String::from_utf8_lossy(&value).into_owned()
        });
    // Exactly the cookie's 66 bytes, with multi-byte characters anywhere.
    let exact_length_unicode =
        "[A-Za-z0-9é€ക🎟.]{17,66}".prop_filter_map("66 bytes", |s: String| {
            let mut s = s;
            while s.len() < 66 {
                s.push('A');
            }
            (s.len() == 66).then_some(s)
        });
    prop_oneof![
        edited,
        "[A-Za-z0-9_.=-]{60,70}",
        "[A-Za-z0-9_-]{22}\\.[A-Za-z0-9_-]{43}",
        exact_length_unicode,
    ]
}

/// Whether `value` has the cookie's shape, judged independently of the
/// codec: 16 bytes in unpadded base64url, a dot, 32 bytes in unpadded
/// base64url, each in its one canonical spelling.
fn well_formed(value: &str) -> bool {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let bytes = value.as_bytes();
    let decodes_to = |part: &[u8], len: usize| {
        URL_SAFE_NO_PAD.decode(part).is_ok_and(|decoded| {
            decoded.len() == len && URL_SAFE_NO_PAD.encode(&decoded).as_bytes() == part
        })
    };
    bytes.len() == 66
        && bytes[22] == b'.'
        && decodes_to(&bytes[..22], 16)
        && decodes_to(&bytes[23..], 32)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_signed_id_verifies_to_itself(id_bytes in any::<[u8; 16]>(), key_bytes in any::<[u8; 32]>()) {
        let ring = KeyRing::new(key(key_bytes));
        let value = ring.sign(&id(id_bytes));
        prop_assert_eq!(ring.verify(&value), Ok(id(id_bytes)));
    }

    /// Any string is either rejected, or is exactly the cookie the ring
    /// makes for the ID it yields: one ID, one accepted encoding.
    #[test]
    fn any_string_is_rejected_or_round_trips(
        value in prop_oneof![any::<String>(), near_valid()],
        key_bytes in any::<[u8; 32]>(),
    ) {
        let ring = KeyRing::new(key(key_bytes));
        match ring.verify(&value) {
            Ok(found) => prop_assert_eq!(ring.sign(&found), value),
            // A value of the cookie's shape is refused for its signature,
            // anything else for its form.
            Err(InvalidCookie::BadSignature) => prop_assert!(well_formed(&value), "{value:?}"),
            Err(InvalidCookie::Malformed) => prop_assert!(!well_formed(&value), "{value:?}"),
            Err(other) => prop_assert!(false, "unexpected rejection {other:?} of {value:?}"),
        }
    }

    #[test]
    fn a_tag_from_one_key_never_verifies_under_another(
        id_bytes in any::<[u8; 16]>(),
        a in any::<[u8; 32]>(),
        b in any::<[u8; 32]>(),
    ) {
        prop_assume!(a != b);
        let value = KeyRing::new(key(a)).sign(&id(id_bytes));
        prop_assert_eq!(
            KeyRing::new(key(b)).verify(&value),
            Err(InvalidCookie::BadSignature)
        );
    }

    /// Rotation: a cookie verifies while its key is anywhere in the ring,
    /// and stops verifying the moment its key leaves.
    #[test]
    fn rotation_keeps_old_cookies_until_their_key_leaves(
        id_bytes in any::<[u8; 16]>(),
        keys in proptest::collection::vec(any::<[u8; 32]>(), 2..5),
        signer in 0usize..4,
    ) {
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        prop_assume!(unique.len() == keys.len());
        let signer = signer % keys.len();
        let value = KeyRing::new(key(keys[signer])).sign(&id(id_bytes));
        let ring = |members: &[[u8; 32]]| {
            KeyRing::from_keys(members.iter().map(|k| key(*k))).expect("non-empty")
        };
        prop_assert_eq!(ring(&keys).verify(&value), Ok(id(id_bytes)));
        let without: Vec<[u8; 32]> =
            keys.iter().enumerate().filter(|(i, _)| *i != signer).map(|(_, k)| *k).collect();
        prop_assert_eq!(ring(&without).verify(&value), Err(InvalidCookie::BadSignature));
        // New cookies are signed by the front key only.
        let resigned = ring(&keys).sign(&id(id_bytes));
        prop_assert_eq!(ring(&keys[..1]).verify(&resigned), Ok(id(id_bytes)));
    }
}

/// Arbitrary `Cookie` header values through the real layer: never a panic,
/// never an error status, never a cookie set, never a store call.
#[test]
fn arbitrary_cookie_headers_are_anonymous_and_cost_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = CountingStore::new(MemoryStore::new());
    // The plain name (no prefix without `Secure`), which the generated
    // headers use.
    let layer = SessionLayer::builder(store.clone())
        .key(key([1; 32]))
        .secure(false)
        .build()
        .unwrap();
    assert_eq!(layer.cookie_name(), "id");
    let service = layer.layer(service_fn(|request: Request<String>| async move {
        let session = request.extensions().get::<Session>().cloned().unwrap();
        let user = session.user_id().await;
        let status = if user.is_ok() { 200 } else { 500 };
        Ok::<_, Infallible>(
            Response::builder()
                .status(status)
                .body(format!("{user:?}"))
                .unwrap(),
        )
    }));
    let header_bytes = proptest::collection::vec(
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "(id=[ -~]{0,80}; ?){1,6}".prop_map(String::into_bytes),
            near_valid().prop_map(|v| format!("id={v}").into_bytes()),
        ],
        1..4,
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
    runner
        .run(&header_bytes, |headers| {
            let mut request = Request::new(String::new());
            for bytes in &headers {
                // Bytes a client could not send as a header are not a case.
                if let Ok(value) = HeaderValue::from_bytes(bytes) {
                    request.headers_mut().append(COOKIE, value);
                }
            }
            let response = runtime.block_on(service.clone().oneshot(request)).unwrap();
            prop_assert_eq!(response.status(), 200);
            prop_assert_eq!(response.body().as_str(), "Ok(None)");
            prop_assert!(response.headers().get(SET_COOKIE).is_none());
            prop_assert_eq!(store.calls().total(), 0);
            Ok(())
        })
        .unwrap();
}
