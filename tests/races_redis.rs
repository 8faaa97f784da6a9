//! Races on a real Redis server and a real Redis Cluster: concurrent
//! writers, logout against in-flight writes, logout-everywhere against
//! logins.
#![cfg(feature = "redis")]

mod common;

mod standalone {
    use super::common;
    crate::race_tests!(common::redis::store().await);
}

mod cluster {
    use super::common;
    crate::race_tests!(common::redis::cluster_store().await);
}
