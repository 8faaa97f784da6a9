//! Decoding [`SqliteStore`](super::SqliteStore) rows: each column as SQLite
//! stores it, for the shared decoding in `sql_common::row`, without
//! panicking on values edited by hand.

use std::net::IpAddr;

use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::store::sql_common::row::{column, corrupt, SessionRow};
use crate::store::StoreError;

impl SessionRow for SqliteRow {
    fn text(&self, name: &str) -> Result<Option<String>, StoreError> {
        column(self, name)
    }

    fn integer(&self, name: &str) -> Result<i64, StoreError> {
        column(self, name)
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        column(self, name)
    }

    /// JSON text.
    fn data(&self) -> Result<Map<String, Value>, StoreError> {
        let text: String = column(self, "data")?;
        serde_json::from_str(&text).map_err(|_| corrupt("data is not a JSON object"))
    }

    /// Unix seconds; a value `time` cannot hold is [`StoreError::Corrupt`].
    fn timestamp(&self, name: &str) -> Result<OffsetDateTime, StoreError> {
        let seconds: i64 = column(self, name)?;
        OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| corrupt("timestamp out of range"))
    }

    /// An integer that must be 0 or 1.
    fn persistent(&self) -> Result<bool, StoreError> {
        let flag: i64 = column(self, "persistent")?;
        match flag {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupt("persistent is neither 0 nor 1")),
        }
    }

    /// Text; an address that does not parse (a row edited by hand) is
    /// [`StoreError::Corrupt`].
    fn client_ip(&self) -> Result<Option<IpAddr>, StoreError> {
        let ip: Option<String> = column(self, "client_ip")?;
        ip.map(|text| text.parse::<IpAddr>())
            .transpose()
            .map_err(|_| corrupt("client_ip is not an IP address"))
    }
}
