//! Session record decoding: the Redis hash decoder and the serde form.
//!
//! Input: a sequence of length-prefixed byte strings (one length byte, then
//! that many bytes), taken as the flat field/value list `HGETALL` returns.
#![no_main]

use cloakroom::store::SessionRecord;
use libfuzzer_sys::fuzz_target;

fn split(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut items = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        items.push(rest[..len].to_vec());
        data = &rest[len..];
    }
    items
}

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = cloakroom::fuzzing::decode_redis_record(&split(data)) {
        // Whatever decodes must be usable: no panic in the expiry rules.
        let _ = record.expires_at();
        let _ = record.is_expired(record.last_seen);
    }
    if let Ok(record) = serde_json::from_slice::<SessionRecord>(data) {
        let _ = record.expires_at();
        let json = serde_json::to_vec(&record).expect("a decoded record encodes");
        let again: SessionRecord = serde_json::from_slice(&json).expect("and decodes again");
        assert_eq!(again, record);
    }
});
