//! Cookie parsing and verification: any bytes as `Cookie` header values
//! (one header per line) and as a bare cookie value.
#![no_main]

use cloakroom::{Key, KeyRing};
use libfuzzer_sys::fuzz_target;

/// The key the seed corpus was signed with: 32 bytes of 0x42.
fn ring() -> KeyRing {
    KeyRing::new(Key::from_bytes(&[0x42; 32]).expect("32-byte key"))
}

fuzz_target!(|data: &[u8]| {
    let ring = ring();
    // A bare value: rejected, or exactly the signature of the ID it yields.
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = ring.verify(&text) {
        assert_eq!(ring.sign(&id), text, "a second encoding was accepted");
    }
    // Whole headers, as the layer reads them.
    let values: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    if let Some(id) = cloakroom::fuzzing::session_id_from_cookie_headers(&values, &ring) {
        let signed = ring.sign(&id);
        assert!(
            text.contains(&signed),
            "an ID was found that no header carried in signed form"
        );
    }
});
