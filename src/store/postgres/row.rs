//! Decoding [`PostgresStore`](super::PostgresStore) rows: each column as
//! PostgreSQL stores it, for the shared decoding in
//! `sql_common::row`, without panicking on values edited by hand.

use std::net::IpAddr;

use serde_json::{Map, Value};
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::clock::truncate_to_seconds;
use crate::store::sql_common::row::{column, CorruptRow, SessionRow};
use crate::store::StoreError;

impl SessionRow for PgRow {
    fn text(&self, name: &str) -> Result<Option<String>, StoreError> {
        column(self, name)
    }

    fn integer(&self, name: &str) -> Result<i64, StoreError> {
        column(self, name)
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        column(self, name)
    }

    fn data(&self) -> Result<Map<String, Value>, StoreError> {
        let Json(data) = column(self, "data")?;
        Ok(data)
    }

    fn timestamp(&self, name: &str) -> Result<OffsetDateTime, StoreError> {
        let Timestamp(time) = column(self, name)?;
        Ok(time)
    }

    fn persistent(&self) -> Result<bool, StoreError> {
        column(self, "persistent")
    }

    /// An `inet` that names a network rather than one address (a row
    /// edited by hand) cannot be decoded, and is [`StoreError::Corrupt`].
    fn client_ip(&self) -> Result<Option<IpAddr>, StoreError> {
        column(self, "client_ip")
    }
}

/// A `timestamptz` column, decoded without panicking.
///
/// sqlx's own decoder for `time` adds the stored offset to PostgreSQL's
/// epoch with plain `+`, which panics for `infinity` or years past 9999;
/// a row edited by hand must be [`StoreError::Corrupt`], not a crash.
struct Timestamp(OffsetDateTime);

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix microseconds.
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl sqlx::Type<sqlx::Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        if value.format() != PgValueFormat::Binary {
            // Prepared statements return binary values; text would mean a
            // code path this store does not use.
            return Err(Box::new(CorruptRow("timestamp not in binary format")));
        }
        // The binary form is microseconds since PostgreSQL's epoch.
        let micros = <i64 as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
        let unix_micros = micros
            .checked_add(POSTGRES_EPOCH_UNIX_MICROS)
            .ok_or(CorruptRow("timestamp out of range"))?;
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_micros) * 1000)
            .map_err(|_| CorruptRow("timestamp out of range"))?;
        Ok(Self(truncate_to_seconds(time)))
    }
}
