//! A session record as the fields of a Redis hash, and back.
//!
//! The layout (one-letter metadata fields, `d:<key>` data fields holding
//! JSON) is described on [`RedisStore`](super::RedisStore). Everything here
//! is pure: it turns records into script arguments and script replies into
//! records, listing entries and [`Deleted`] answers. Malformed input is a
//! [`StoreError::Corrupt`], never a panic.

use std::fmt;

use serde_json::Map;
use time::OffsetDateTime;

use crate::id::StoreKey;
use crate::record::{SessionInfo, SessionRecord};
use crate::store::{Deleted, StoreError};

/// The prefix of a data field: data key `k` is stored under `d:k`.
const DATA_PREFIX: &[u8] = b"d:";

/// The metadata fields a count or a listing reads, in this order.
pub(super) const META_FIELDS: [&str; 6] = ["c", "s", "i", "a", "p", "u"];

/// Field/value pairs for a whole record.
pub(super) fn encode_record(record: &SessionRecord) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(12 + 2 * record.data.len());
    let mut meta = |field: &str, value: String| {
        args.push(field.as_bytes().to_vec());
        args.push(value.into_bytes());
    };
    meta("c", record.created_at.unix_timestamp().to_string());
    meta("s", record.last_seen.unix_timestamp().to_string());
    meta("i", record.idle_timeout.whole_seconds().to_string());
    meta("a", record.absolute_deadline.unix_timestamp().to_string());
    meta("p", u8::from(record.persistent).to_string());
    if let Some(user) = &record.user_id {
        meta("u", user.clone());
    }
    for (key, value) in &record.data {
        args.push(data_field(key));
        args.push(serde_json::to_vec(value).map_err(StoreError::backend)?);
    }
    Ok(args)
}

/// The hash field that holds data key `key`.
pub(super) fn data_field(key: &str) -> Vec<u8> {
    let mut field = DATA_PREFIX.to_vec();
    field.extend_from_slice(key.as_bytes());
    field
}

/// Why a stored hash could not be decoded.
#[derive(Debug)]
struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored session hash: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::corrupt(DecodeError(what.into()))
}

fn number(field: &str, value: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| corrupt(format!("field {field} is not an integer")))
}

fn timestamp(field: &str, value: &[u8]) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(number(field, value)?)
        .map_err(|_| corrupt(format!("field {field} is out of range")))
}

/// Decodes the packed reply of the load script: a msgpack array of the
/// hash's fields and values, borrowed from `packed` without copying.
pub(super) fn decode_packed_record(packed: &[u8]) -> Result<SessionRecord, StoreError> {
    let flat: Vec<&[u8]> = rmp_serde::from_slice(packed).map_err(StoreError::corrupt)?;
    decode_record(&flat)
}

/// Decodes a session hash given as a flat field/value list, as `HGETALL`
/// returns it. Unknown fields are ignored; missing or malformed metadata
/// is an error, never a panic.
pub(crate) fn decode_record<F: AsRef<[u8]>>(flat: &[F]) -> Result<SessionRecord, StoreError> {
    if flat.len() % 2 != 0 {
        return Err(corrupt("odd number of hash elements"));
    }
    let (mut created, mut last_seen, mut idle, mut absolute) = (None, None, None, None);
    let mut persistent = false;
    let mut user_id = None;
    let mut data = Map::new();
    for pair in flat.chunks_exact(2) {
        let (field, value) = (pair[0].as_ref(), pair[1].as_ref());
        match field {
            b"c" => created = Some(timestamp("c", value)?),
            b"s" => last_seen = Some(timestamp("s", value)?),
            b"i" => idle = Some(time::Duration::seconds(number("i", value)?)),
            b"a" => absolute = Some(timestamp("a", value)?),
            b"p" => persistent = value == b"1",
            b"u" => {
                user_id = Some(
                    String::from_utf8(value.to_vec()).map_err(|_| corrupt("user is not UTF-8"))?,
                )
            }
            _ => {
                if let Some(name) = field.strip_prefix(DATA_PREFIX) {
                    let name = String::from_utf8(name.to_vec())
                        .map_err(|_| corrupt("data key is not UTF-8"))?;
                    let value = serde_json::from_slice(value).map_err(StoreError::corrupt)?;
                    data.insert(name, value);
                }
            }
        }
    }
    let missing = |f: &str| corrupt(format!("field {f} is missing"));
    let idle_timeout = idle.ok_or_else(|| missing("i"))?;
    let last_seen = last_seen.ok_or_else(|| missing("s"))?;
    let absolute_deadline = absolute.ok_or_else(|| missing("a"))?;
    // Guard the deadline arithmetic against absurd stored values.
    last_seen
        .checked_add(idle_timeout)
        .ok_or_else(|| corrupt("idle deadline out of range"))?;
    Ok(SessionRecord {
        data,
        user_id,
        created_at: created.ok_or_else(|| missing("c"))?,
        last_seen,
        idle_timeout,
        absolute_deadline,
        persistent,
        // Not persisted yet: TODO(devices) hash fields.
        device: Default::default(),
    })
}

/// The listing entry for one index member, from the metadata fields read
/// by `HMGET` (in [`META_FIELDS`] order): `None` when the record is gone,
/// a forward, another user's, or expired at `now`.
pub(super) fn listed_session(
    fields: &[Option<Vec<u8>>],
    user_id: &str,
    member: &str,
    now: OffsetDateTime,
) -> Result<Option<SessionInfo>, StoreError> {
    let [Some(c), Some(s), Some(i), Some(a), p, Some(u)] = fields else {
        return Ok(None);
    };
    if u.as_slice() != user_id.as_bytes() {
        return Ok(None);
    }
    let mut flat: Vec<&[u8]> = vec![b"c", c, b"s", s, b"i", i, b"a", a];
    if let Some(p) = p {
        flat.extend([b"p".as_slice(), p]);
    }
    let record = decode_record(&flat)?;
    if record.is_expired(now) {
        return Ok(None);
    }
    let key = member
        .parse::<StoreKey>()
        .map_err(|_| corrupt("index member is not a store key"))?;
    Ok(Some(record.info(key)))
}

/// What the delete script found: its `{what, user, successor}` reply.
pub(super) fn deleted_from_reply(
    what: i64,
    successor: Option<&str>,
) -> Result<Deleted, StoreError> {
    match (what, successor) {
        (1, _) => Ok(Deleted::Session),
        (2, Some(hex)) => hex
            .parse::<StoreKey>()
            .map(Deleted::Forward)
            .map_err(|_| corrupt("forward names no store key")),
        _ => Ok(Deleted::Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut r = SessionRecord::new(now, time::Duration::minutes(30), time::Duration::hours(12));
        r.user_id = Some("alice".into());
        r.data.insert("k".into(), serde_json::json!({"n": [1, 2]}));
        r.data.insert("".into(), serde_json::json!(null));
        r
    }

    #[test]
    fn encoded_record_decodes_to_itself() {
        let r = record();
        assert_eq!(decode_record(&encode_record(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn a_packed_reply_decodes_like_the_flat_list() {
        let r = record();
        let flat = encode_record(&r).unwrap();
        let packed =
            rmp_serde::to_vec(&flat.iter().map(|f| serde_bytes_like(f)).collect::<Vec<_>>())
                .unwrap();
        assert_eq!(decode_packed_record(&packed).unwrap(), r);
        assert!(matches!(
            decode_packed_record(b"\xc1"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_packed_record(b""),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// What Redis's `cmsgpack` produces for a Lua string: a msgpack `str`.
    fn serde_bytes_like(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn malformed_hashes_are_corrupt_not_panics() {
        let good = encode_record(&record()).unwrap();
        let mut cases: Vec<Vec<Vec<u8>>> = vec![
            vec![],
            vec![b"c".to_vec()],
            good[2..].to_vec(),
            vec![b"c".to_vec(), b"x".to_vec(), b"s".to_vec(), b"1".to_vec()],
        ];
        let mut bad_json = good.clone();
        bad_json.extend([b"d:x".to_vec(), b"{".to_vec()]);
        cases.push(bad_json);
        let mut huge = good.clone();
        huge.extend([b"i".to_vec(), i64::MAX.to_string().into_bytes()]);
        cases.push(huge);
        let mut not_utf8 = good;
        not_utf8.extend([b"d:\xff".to_vec(), b"1".to_vec()]);
        cases.push(not_utf8);
        for case in cases {
            assert!(
                matches!(decode_record(&case), Err(StoreError::Corrupt(_))),
                "{case:?}"
            );
        }
    }

    fn meta(record: &SessionRecord) -> Vec<Option<Vec<u8>>> {
        let flat = encode_record(record).unwrap();
        META_FIELDS
            .iter()
            .map(|name| {
                flat.chunks_exact(2)
                    .find(|pair| pair[0] == name.as_bytes())
                    .map(|pair| pair[1].clone())
            })
            .collect()
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    fn some_key() -> StoreKey {
        crate::SessionId::generate().unwrap().store_key()
    }

    #[test]
    fn a_live_session_of_the_user_is_listed_from_its_metadata() {
        let r = record();
        let key = some_key();
        let info = listed_session(&meta(&r), "alice", &key.to_hex(), at(1))
            .unwrap()
            .expect("listed");
        assert_eq!(info, r.info(key));
    }

    #[test]
    fn gone_forwarded_foreign_and_expired_sessions_are_not_listed() {
        let r = record();
        let member = some_key().to_hex();
        let gone = vec![None; META_FIELDS.len()];
        assert_eq!(
            listed_session(&gone, "alice", &member, at(1)).unwrap(),
            None
        );
        // A forward has none of the metadata fields.
        assert_eq!(listed_session(&[], "alice", &member, at(1)).unwrap(), None);
        assert_eq!(
            listed_session(&meta(&r), "bob", &member, at(1)).unwrap(),
            None
        );
        let mut anonymous = r.clone();
        anonymous.user_id = None;
        assert_eq!(
            listed_session(&meta(&anonymous), "alice", &member, at(1)).unwrap(),
            None
        );
        assert_eq!(
            listed_session(&meta(&r), "alice", &member, r.expires_at()).unwrap(),
            None
        );
    }

    #[test]
    fn bad_metadata_or_members_are_corrupt_not_panics() {
        let r = record();
        let mut bad = meta(&r);
        bad[1] = Some(b"soon".to_vec());
        assert!(matches!(
            listed_session(&bad, "alice", &some_key().to_hex(), at(1)),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            listed_session(&meta(&r), "alice", "not-a-key", at(1)),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn delete_replies_decode_to_what_was_there() {
        let successor = some_key();
        assert_eq!(deleted_from_reply(1, None).unwrap(), Deleted::Session);
        assert_eq!(deleted_from_reply(0, None).unwrap(), Deleted::Nothing);
        assert_eq!(
            deleted_from_reply(2, Some(&successor.to_hex())).unwrap(),
            Deleted::Forward(successor)
        );
        assert!(matches!(
            deleted_from_reply(2, Some("zz")),
            Err(StoreError::Corrupt(_))
        ));
    }
}
