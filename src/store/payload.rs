//! Compressed JSON texts on SQLite. An event's payload (`events.data`) and a service's document
//! (`services.document`) are most of the store's bytes, and small JSON texts compress badly on
//! their own: their keys and shapes repeat from row to row, not within one. So SQLite keeps
//! them as a BLOB: one byte naming the format ([`ZSTD_V1`]), then a zstd frame compressed
//! against a fixed dictionary of ctxd's JSON shapes (`payload.dict`, written by hand from
//! docs/EVENTS.md: keys and shapes, no tenant's data).
//!
//! A column holding TEXT holds the JSON itself: rows written before compression, values it does
//! not shrink, payloads SQL reads fields of (`log::stored_payload`), and everything on
//! PostgreSQL, whose columns are text and which compresses large values itself (TOAST).
//! Hashes and signatures are always over the JSON text, never over the stored bytes.
//!
//! The dictionary is part of the format: a value written with it can only be read with it, so
//! it never changes. A better one would be a new format byte beside this one.

use std::borrow::Cow;
use std::cell::RefCell;

use super::db::{Dialect, Error, Value, ValueRef};

/// The dictionary of format [`ZSTD_V1`].
const DICTIONARY: &[u8] = include_bytes!("payload.dict");

/// Format byte: a zstd frame against [`DICTIONARY`].
const ZSTD_V1: u8 = 1;

/// zstd's level: its fastest standard one, since the writer compresses inside its commit step.
/// Level 3 made the demo's payloads and documents 2–3 % smaller (its time not measured).
const LEVEL: i32 = 1;

/// No JSON text the store keeps is larger (a session's properties are capped far below), so a
/// frame that claims more is corrupt, not a reason to allocate it.
const LARGEST_TEXT: u64 = 256 << 20;

thread_local! {
    static COMPRESSOR: RefCell<zstd::bulk::Compressor<'static>> = RefCell::new(
        zstd::bulk::Compressor::with_dictionary(LEVEL, DICTIONARY).expect("zstd loads the payload dictionary"),
    );
    static DECOMPRESSOR: RefCell<zstd::bulk::Decompressor<'static>> = RefCell::new(
        zstd::bulk::Decompressor::with_dictionary(DICTIONARY).expect("zstd loads the payload dictionary"),
    );
}

/// How `text` is stored in a compressible column of a store of `dialect`.
pub fn stored(dialect: Dialect, text: &str) -> Value {
    match dialect {
        Dialect::Postgres => Value::Text(text.to_owned()),
        Dialect::Sqlite => match compress(text) {
            Some(bytes) => Value::Blob(bytes),
            None => Value::Text(text.to_owned()),
        },
    }
}

/// `text` in format [`ZSTD_V1`], when that is shorter.
fn compress(text: &str) -> Option<Vec<u8>> {
    let frame = COMPRESSOR
        .with(|compressor| compressor.borrow_mut().compress(text.as_bytes()))
        .expect("zstd compresses into memory");
    if frame.len() + 1 >= text.len() {
        return None;
    }
    let mut stored = Vec::with_capacity(frame.len() + 1);
    stored.push(ZSTD_V1);
    stored.extend_from_slice(&frame);
    Some(stored)
}

/// The JSON text of a value read from a compressible column. A damaged value is an error of
/// the column's, as a value of the wrong type is.
pub fn text(value: ValueRef<'_>) -> Result<Cow<'_, str>, Error> {
    match value {
        ValueRef::Text(text) => Ok(Cow::Borrowed(text)),
        ValueRef::Blob(bytes) => decompress(bytes).map(Cow::Owned),
        other => Err(damaged(format!("expected a JSON text, found {other:?}"))),
    }
}

/// The text of a stored BLOB.
pub fn decompress(stored: &[u8]) -> Result<String, Error> {
    let corrupt = |why: String| damaged(format!("compressed text: {why}"));
    let Some((&ZSTD_V1, frame)) = stored.split_first() else {
        return Err(corrupt(format!("unknown format {:?}", stored.first())));
    };
    let length = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(length)) if length <= LARGEST_TEXT => length as usize,
        other => return Err(corrupt(format!("frame without a plausible length ({other:?})"))),
    };
    let bytes = DECOMPRESSOR
        .with(|decompressor| decompressor.borrow_mut().decompress(frame, length))
        .map_err(|error| corrupt(error.to_string()))?;
    String::from_utf8(bytes).map_err(|error| corrupt(error.to_string()))
}

fn damaged(message: String) -> Error {
    Error::Column { column: 0, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn texts_come_back_as_written_and_shapes_shrink() {
        let payload = r#"{"service_id":"9ef4cb19-4c83-4da5-81ac-07ac9387bba7","state_id":3,"state_type":"queue","previous_state_id":2,"opening":{"est_duration":30,"started":{"timestamp":"2026-11-25T08:28:46.119Z","channel":{"media_type":"voice"}}}}"#;
        let Value::Blob(stored) = stored(Dialect::Sqlite, payload) else { panic!("not compressed") };
        assert!(stored.len() * 2 < payload.len(), "{} bytes of {}", stored.len(), payload.len());
        assert_eq!(text(ValueRef::Blob(&stored)).unwrap(), payload);
        // PostgreSQL keeps text; so does SQLite when compressing would not help.
        assert_eq!(super::stored(Dialect::Postgres, payload), Value::Text(payload.into()));
        assert_eq!(super::stored(Dialect::Sqlite, "{}"), Value::Text("{}".into()));
        assert_eq!(text(ValueRef::Text("{}")).unwrap(), "{}");
    }

    #[test]
    fn damaged_values_are_corrupt_not_a_panic() {
        let original = format!("{{\"a\":\"{}\"}}", "b".repeat(500));
        let Value::Blob(mut stored) = stored(Dialect::Sqlite, &original) else { panic!("not compressed") };
        for damaged in [vec![], vec![ZSTD_V1], vec![2, 0, 0], stored[..stored.len() / 2].to_vec()] {
            assert!(matches!(decompress(&damaged), Err(Error::Column { .. })), "{damaged:?}");
        }
        let last = stored.len() - 1;
        stored[last] ^= 0xff;
        assert_ne!(decompress(&stored).ok(), Some(original), "a changed frame reads as something else");
    }

    /// Values written with the dictionary are read with it: it must never change.
    #[test]
    fn the_dictionary_is_the_one_values_were_written_with() {
        assert_eq!(
            hex::encode(Sha256::digest(DICTIONARY)),
            "856f3df1d32141d0e6948fe38ee69f23541690810f3346eab29cae407265b33a"
        );
    }
}
