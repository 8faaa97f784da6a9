//! A session record as the fields of a Redis hash, and back.
//!
//! The layout (one-letter metadata and device fields, `d:<key>` data
//! fields holding JSON) is described on [`RedisStore`](super::RedisStore).
//! Everything here is pure: it turns records into script arguments, and
//! the replies of `HGETALL`, `HMGET` and the scripts into records, listing
//! entries and [`Deleted`] answers. Malformed input is a
//! [`StoreError::Corrupt`], never a panic.

use std::fmt;
use std::net::IpAddr;

use redis::Value;
use serde_json::Map;
use time::OffsetDateTime;

use crate::device::Device;
use crate::id::StoreKey;
use crate::record::{stored_idle_timeout, whole_seconds, SessionInfo, SessionRecord};
use crate::store::{Deleted, StoreError};

/// The prefix of a data field: data key `k` is stored under `d:k`.
const DATA_PREFIX: &[u8] = b"d:";

/// The metadata fields a count reads, in this order.
pub(super) const META_FIELDS: [&str; 6] = ["c", "s", "i", "a", "p", "u"];

/// The fields a listing reads, in this order: the metadata, then the
/// device's (`b` the User-Agent, `r` the client address, each as text and
/// absent when none was kept).
pub(super) const LISTED_FIELDS: [&str; 8] = ["c", "s", "i", "a", "p", "u", "b", "r"];

/// Field/value pairs for a whole record.
pub(super) fn encode_record(record: &SessionRecord) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(12 + 2 * record.data.len());
    let mut meta = |field: &str, value: String| {
        args.push(field.as_bytes().to_vec());
        args.push(value.into_bytes());
    };
    meta("c", record.created_at.unix_timestamp().to_string());
    meta("s", record.last_seen.unix_timestamp().to_string());
    meta("i", whole_seconds(record.idle_timeout).to_string());
    meta("a", record.absolute_deadline.unix_timestamp().to_string());
    meta("p", u8::from(record.persistent).to_string());
    if let Some(user) = &record.user_id {
        meta("u", user.clone());
    }
    // The device is written with the record and never by a save: a field
    // left out here is absent from the new hash, since `create` replaces
    // any expired hash whole.
    if let Some(agent) = &record.device.user_agent {
        meta("b", agent.clone());
    }
    if let Some(ip) = record.device.ip {
        meta("r", ip.to_string());
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

/// What a record key holds, as `HGETALL` found it.
#[derive(Debug, PartialEq)]
pub(super) enum Stored {
    /// Nothing: no such key (`HGETALL` answers an empty hash).
    Nothing,
    /// A forward left by `retire` (`f` without a session's `s`, `i`, `a`):
    /// no session to load.
    Forward,
    /// A session, whether live or not (the caller decides with its time).
    Session(SessionRecord),
}

/// Decodes the reply of `HGETALL` on a record key: a flat field/value array
/// (RESP2) or a map (RESP3). A hash that is neither a session nor a forward
/// is [`StoreError::Corrupt`].
pub(super) fn decode_stored(reply: Value) -> Result<Stored, StoreError> {
    let flat = match reply {
        Value::Nil => Vec::new(),
        Value::Array(items) => items
            .into_iter()
            .map(reply_bytes)
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(pairs) => {
            let mut flat = Vec::with_capacity(2 * pairs.len());
            for (field, value) in pairs {
                flat.push(reply_bytes(field)?);
                flat.push(reply_bytes(value)?);
            }
            flat
        }
        _ => return Err(unexpected_reply()),
    };
    stored_from_flat(&flat)
}

/// One field name or value of a hash reply.
fn reply_bytes(value: Value) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        _ => Err(unexpected_reply()),
    }
}

/// A reply no hash read gives: the server (or something in between) is
/// not answering as Redis does; nothing says the stored data is bad.
fn unexpected_reply() -> StoreError {
    StoreError::backend(DecodeError(
        "HGETALL answered something other than a hash".into(),
    ))
}

/// What a hash given as a flat field/value list holds: nothing (empty), a
/// forward (it has `f` and lacks one of `s`, `i`, `a`), or else a session,
/// decoded by [`decode_record`].
pub(super) fn stored_from_flat<F: AsRef<[u8]>>(flat: &[F]) -> Result<Stored, StoreError> {
    if flat.is_empty() {
        return Ok(Stored::Nothing);
    }
    let has = |name: &[u8]| flat.chunks_exact(2).any(|pair| pair[0].as_ref() == name);
    // An odd list is no hash at all: `decode_record` says so.
    if flat.len() % 2 == 0 && has(b"f") && !(has(b"s") && has(b"i") && has(b"a")) {
        return Ok(Stored::Forward);
    }
    decode_record(flat).map(Stored::Session)
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
    let mut device = Device::default();
    let mut data = Map::new();
    for pair in flat.chunks_exact(2) {
        let (field, value) = (pair[0].as_ref(), pair[1].as_ref());
        match field {
            b"c" => created = Some(timestamp("c", value)?),
            b"s" => last_seen = Some(timestamp("s", value)?),
            b"i" => idle = Some(number("i", value)?),
            b"a" => absolute = Some(timestamp("a", value)?),
            b"p" => persistent = value == b"1",
            b"u" => {
                user_id = Some(
                    String::from_utf8(value.to_vec()).map_err(|_| corrupt("user is not UTF-8"))?,
                )
            }
            b"b" => device.user_agent = Some(user_agent(value)?),
            b"r" => device.ip = Some(ip(value)?),
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
    let idle_secs = idle.ok_or_else(|| missing("i"))?;
    let last_seen = last_seen.ok_or_else(|| missing("s"))?;
    let absolute_deadline = absolute.ok_or_else(|| missing("a"))?;
    // Guard the deadline arithmetic against absurd stored values; a
    // negative timeout is none at all.
    let idle_timeout = stored_idle_timeout(idle_secs, last_seen)
        .ok_or_else(|| corrupt("idle deadline out of range"))?;
    Ok(SessionRecord {
        data,
        user_id,
        created_at: created.ok_or_else(|| missing("c"))?,
        last_seen,
        idle_timeout,
        absolute_deadline,
        persistent,
        device,
    })
}

fn user_agent(value: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(value.to_vec()).map_err(|_| corrupt("user agent is not UTF-8"))
}

fn ip(value: &[u8]) -> Result<IpAddr, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| corrupt("client address is not an IP address"))
}

/// The listing entry for one index member, from the fields read by
/// `HMGET`: those of [`META_FIELDS`], or of [`LISTED_FIELDS`] for an entry
/// with its device (in that order). `None` when the record is gone, a
/// forward, another user's, or expired at `now`.
pub(super) fn listed_session(
    fields: &[Option<Vec<u8>>],
    user_id: &str,
    member: &str,
    now: OffsetDateTime,
) -> Result<Option<SessionInfo>, StoreError> {
    let (meta, device) = fields.split_at(fields.len().min(META_FIELDS.len()));
    let [Some(c), Some(s), Some(i), Some(a), p, Some(u)] = meta else {
        return Ok(None);
    };
    if u.as_slice() != user_id.as_bytes() {
        return Ok(None);
    }
    let mut flat: Vec<&[u8]> = vec![b"c", c, b"s", s, b"i", i, b"a", a];
    let device_fields = LISTED_FIELDS[META_FIELDS.len()..].iter().copied();
    let optional = [("p", p)].into_iter().chain(device_fields.zip(device));
    for (field, value) in optional {
        if let Some(value) = value {
            flat.extend([field.as_bytes(), value]);
        }
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
        let mut r = SessionRecord::new(
            now,
            std::time::Duration::from_secs(30 * 60),
            std::time::Duration::from_secs(12 * 3600),
        );
        r.user_id = Some("alice".into());
        r.data.insert("k".into(), serde_json::json!({"n": [1, 2]}));
        r.data.insert("".into(), serde_json::json!(null));
        r.device = Device {
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) ✓".into()),
            ip: Some("2001:db8::1".parse().unwrap()),
        };
        r
    }

    /// The value of `field` in an encoded record.
    fn field<'a>(flat: &'a [Vec<u8>], field: &str) -> Option<&'a [u8]> {
        flat.chunks_exact(2)
            .find(|pair| pair[0] == field.as_bytes())
            .map(|pair| pair[1].as_slice())
    }

    #[test]
    fn encoded_record_decodes_to_itself() {
        let r = record();
        assert_eq!(decode_record(&encode_record(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn the_device_is_two_text_fields_absent_when_not_kept() {
        let mut r = record();
        let flat = encode_record(&r).unwrap();
        assert_eq!(
            field(&flat, "b"),
            Some("Mozilla/5.0 (X11; Linux x86_64) ✓".as_bytes())
        );
        assert_eq!(field(&flat, "r"), Some(b"2001:db8::1".as_slice()));

        r.device.user_agent = None;
        r.device.ip = Some("192.0.2.7".parse().unwrap());
        let flat = encode_record(&r).unwrap();
        assert_eq!(field(&flat, "b"), None);
        assert_eq!(field(&flat, "r"), Some(b"192.0.2.7".as_slice()));
        assert_eq!(decode_record(&flat).unwrap(), r);

        r.device = Device::default();
        let flat = encode_record(&r).unwrap();
        assert_eq!((field(&flat, "b"), field(&flat, "r")), (None, None));
        assert_eq!(decode_record(&flat).unwrap(), r);
    }

    /// `HGETALL`'s reply for an encoded record: RESP2's flat array, or
    /// RESP3's map.
    fn hgetall_reply(flat: &[Vec<u8>], resp3: bool) -> Value {
        let bulk = |bytes: &Vec<u8>| Value::BulkString(bytes.clone());
        if resp3 {
            Value::Map(
                flat.chunks_exact(2)
                    .map(|pair| (bulk(&pair[0]), bulk(&pair[1])))
                    .collect(),
            )
        } else {
            Value::Array(flat.iter().map(bulk).collect())
        }
    }

    #[test]
    fn hgetall_replies_decode_to_what_the_key_holds() {
        let r = record();
        let session = encode_record(&r).unwrap();
        let forward = vec![
            b"f".to_vec(),
            some_key().to_hex().into_bytes(),
            b"w".to_vec(),
            b"1700000300".to_vec(),
        ];
        for resp3 in [false, true] {
            assert_eq!(
                decode_stored(hgetall_reply(&session, resp3)).unwrap(),
                Stored::Session(r.clone())
            );
            assert_eq!(
                decode_stored(hgetall_reply(&forward, resp3)).unwrap(),
                Stored::Forward
            );
            assert_eq!(
                decode_stored(hgetall_reply(&[], resp3)).unwrap(),
                Stored::Nothing
            );
        }
        assert_eq!(decode_stored(Value::Nil).unwrap(), Stored::Nothing);
        // Simple strings are bytes too; read as a session (no `f`), the
        // missing fields make this one corrupt.
        let text = Value::Array(vec![
            Value::SimpleString("c".into()),
            Value::BulkString(b"1".to_vec()),
        ]);
        assert!(matches!(decode_stored(text), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_hash_that_is_neither_session_nor_forward_is_corrupt() {
        let good = encode_record(&record()).unwrap();
        // No `f`, and a session field missing: no forward either.
        let mut cases = vec![good[2..].to_vec(), vec![b"w".to_vec(), b"1".to_vec()]];
        // A session's fields beside `f`: read as the session, and bad.
        let mut with_forward = good.clone();
        with_forward.extend([b"f".to_vec(), b"ab".to_vec(), b"s".to_vec(), b"x".to_vec()]);
        cases.push(with_forward);
        for case in cases {
            assert!(
                matches!(stored_from_flat(&case), Err(StoreError::Corrupt(_))),
                "{case:?}"
            );
        }
    }

    #[test]
    fn replies_that_are_no_hash_are_backend_errors_not_panics() {
        for reply in [
            Value::Int(1),
            Value::Okay,
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Map(vec![(Value::Nil, Value::BulkString(b"x".to_vec()))]),
        ] {
            assert!(
                matches!(decode_stored(reply.clone()), Err(StoreError::Backend(_))),
                "{reply:?}"
            );
        }
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
        for absurd in [i64::MAX, -1, i64::MIN] {
            let mut case = good.clone();
            case.extend([b"i".to_vec(), absurd.to_string().into_bytes()]);
            cases.push(case);
        }
        let mut not_utf8 = good.clone();
        not_utf8.extend([b"d:\xff".to_vec(), b"1".to_vec()]);
        cases.push(not_utf8);
        let mut agent_not_utf8 = good.clone();
        agent_not_utf8.extend([b"b".to_vec(), b"Mozilla\xff".to_vec()]);
        cases.push(agent_not_utf8);
        for bad_ip in [&b"10.0.0.0/8"[..], b"localhost", b"", b"\xff"] {
            let mut case = good.clone();
            case.extend([b"r".to_vec(), bad_ip.to_vec()]);
            cases.push(case);
        }
        for case in cases {
            assert!(
                matches!(decode_record(&case), Err(StoreError::Corrupt(_))),
                "{case:?}"
            );
        }
    }

    /// What `HMGET` of `fields` gives for the record.
    fn read(record: &SessionRecord, fields: &[&str]) -> Vec<Option<Vec<u8>>> {
        let flat = encode_record(record).unwrap();
        fields
            .iter()
            .map(|name| field(&flat, name).map(<[u8]>::to_vec))
            .collect()
    }

    /// What a count reads.
    fn meta(record: &SessionRecord) -> Vec<Option<Vec<u8>>> {
        read(record, &META_FIELDS)
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    fn some_key() -> StoreKey {
        crate::id::SessionId::generate().unwrap().store_key()
    }

    #[test]
    fn a_live_session_of_the_user_is_listed_with_its_device() {
        let mut r = record();
        let key = some_key();
        for device in [
            r.device.clone(),
            Device {
                user_agent: None,
                ip: Some("192.0.2.7".parse().unwrap()),
            },
            Device {
                user_agent: Some("curl/8.5.0".into()),
                ip: None,
            },
            Device::default(),
        ] {
            r.device = device;
            let info = listed_session(&read(&r, &LISTED_FIELDS), "alice", &key.to_hex(), at(1))
                .unwrap()
                .expect("listed");
            assert_eq!(info, r.info(key));
        }

        // Read without the device fields (as a count does), the entry has
        // none.
        let info = listed_session(&meta(&record()), "alice", &key.to_hex(), at(1))
            .unwrap()
            .expect("listed");
        assert_eq!(info.device, Device::default());
        assert_eq!(info.expires_at, record().expires_at());
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
        let mut bad_ip = read(&r, &LISTED_FIELDS);
        bad_ip[7] = Some(b"not-an-ip".to_vec());
        assert!(matches!(
            listed_session(&bad_ip, "alice", &some_key().to_hex(), at(1)),
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
