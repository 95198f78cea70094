//! Values passed to statements and read from rows, the same for both backends. A type that can
//! be bound or read implements rusqlite's trait (SQLite binds and reads it directly, with no
//! copy) and says what it is as a `ValueRef` / from a `Value` (PostgreSQL converts through them).

use rusqlite::types::{FromSqlError, FromSqlResult, ToSqlOutput, ValueRef as SqliteRef};

/// A parameter's value, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl<'a> ValueRef<'a> {
    pub fn as_str(&self) -> Result<&'a str, super::Error> {
        match self {
            ValueRef::Text(text) => Ok(text),
            other => {
                Err(super::Error::Column { column: 0, message: format!("expected text, found {other:?}") })
            }
        }
    }

    /// The bytes of text or of a blob; `None` for other values.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            ValueRef::Text(text) => Some(text.as_bytes()),
            ValueRef::Blob(bytes) => Some(bytes),
            _ => None,
        }
    }

    pub fn as_blob(&self) -> Result<&'a [u8], super::Error> {
        match self {
            ValueRef::Blob(bytes) => Ok(bytes),
            other => {
                Err(super::Error::Column { column: 0, message: format!("expected bytes, found {other:?}") })
            }
        }
    }
}

/// A column's value, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// A type that can be bound to a statement's parameter.
pub trait ToSql: rusqlite::ToSql {
    fn value(&self) -> ValueRef<'_>;
}

/// A type that a column can be read as.
pub trait FromSql: rusqlite::types::FromSql {
    fn from_value(value: Value) -> Result<Self, String>;
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => SqliteRef::Null,
            Value::Integer(i) => SqliteRef::Integer(*i),
            Value::Real(r) => SqliteRef::Real(*r),
            Value::Text(t) => SqliteRef::Text(t.as_bytes()),
            Value::Blob(b) => SqliteRef::Blob(b),
        }))
    }
}

impl ToSql for Value {
    fn value(&self) -> ValueRef<'_> {
        self.as_ref()
    }
}

impl rusqlite::types::FromSql for Value {
    fn column_result(value: SqliteRef<'_>) -> FromSqlResult<Self> {
        Ok(match value {
            SqliteRef::Null => Value::Null,
            SqliteRef::Integer(i) => Value::Integer(i),
            SqliteRef::Real(r) => Value::Real(r),
            SqliteRef::Text(t) => {
                Value::Text(String::from_utf8(t.to_vec()).map_err(|e| FromSqlError::Other(Box::new(e)))?)
            }
            SqliteRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
}

impl FromSql for Value {
    fn from_value(value: Value) -> Result<Self, String> {
        Ok(value)
    }
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn value(&self) -> ValueRef<'_> {
        (**self).value()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn value(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Null, ToSql::value)
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            value => T::from_value(value).map(Some),
        }
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn value(&self) -> ValueRef<'_> {
                // Positions, counts and limits: far below i64::MAX.
                ValueRef::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
        impl FromSql for $t {
            fn from_value(value: Value) -> Result<Self, String> {
                match value {
                    Value::Integer(i) => <$t>::try_from(i).map_err(|e| e.to_string()),
                    other => Err(format!("expected an integer, found {other:?}")),
                }
            }
        }
    )*};
}
integers!(i64, i32, u32, u64, usize, u8, u16, i16);

impl ToSql for bool {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(i64::from(*self))
    }
}

impl FromSql for bool {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Integer(i) => Ok(i != 0),
            other => Err(format!("expected a boolean, found {other:?}")),
        }
    }
}

impl ToSql for f64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}

impl FromSql for f64 {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Real(r) => Ok(r),
            Value::Integer(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl ToSql for str {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToSql for String {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl FromSql for String {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Text(t) => Ok(t),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl ToSql for [u8] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl ToSql for Vec<u8> {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl FromSql for Vec<u8> {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl<const N: usize> ToSql for [u8; N] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl<const N: usize> FromSql for [u8; N] {
    fn from_value(value: Value) -> Result<Self, String> {
        let bytes = Vec::<u8>::from_value(value)?;
        let length = bytes.len();
        bytes.try_into().map_err(|_| format!("expected {N} bytes, found {length}"))
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_string())
    }
}

impl From<i64> for Value {
    fn from(integer: i64) -> Self {
        Value::Integer(integer)
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value::Blob(bytes)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}
