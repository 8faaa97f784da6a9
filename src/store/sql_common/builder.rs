//! The name check of both SQL store builders: names are never put into SQL
//! unchecked.

/// Longest table name: the index names append `_expires_at_idx` (15
/// bytes), and PostgreSQL would silently truncate a longer result, which
/// could make the two index names collide. SQLite takes the same limit, so
/// that the index names derived from it stay short.
pub(crate) const MAX_TABLE_LEN: usize = 48;

/// `^[a-z_][a-z0-9_]{0,max-1}$`: a plain lower-case identifier, which
/// needs no escaping once quoted.
pub(crate) fn is_identifier(name: &str, max: usize) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    name.len() <= max
        && (first.is_ascii_lowercase() || first == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_must_be_plain_lower_case_names() {
        for good in [
            "sessions",
            "_s",
            "a1_b2",
            "cloakroom_sessions",
            "user",
            "order",
        ] {
            assert!(is_identifier(good, MAX_TABLE_LEN), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Sessions",
            "a-b",
            "a b",
            "a\"b",
            "sessions; DROP TABLE users",
            "s\u{e9}ssions",
            "a.b",
            "main.sessions",
        ] {
            assert!(!is_identifier(bad, MAX_TABLE_LEN), "{bad:?}");
        }
        assert!(is_identifier(&"a".repeat(48), MAX_TABLE_LEN));
        assert!(!is_identifier(&"a".repeat(49), MAX_TABLE_LEN));
    }
}
