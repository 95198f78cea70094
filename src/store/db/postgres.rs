//! The PostgreSQL side of `Connection`: tokio-postgres, driven from the calling thread.
//!
//! Every connection's socket is served by one small runtime of the store's own; a query is a
//! future that talks to it over a channel, waited for with `futures_executor::block_on`, which
//! blocks only the calling thread (as a SQLite query does) and works from any thread, a tokio
//! worker's included.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, Type, to_sql_checked};

use super::{Error, Result, ToSql, Value, ValueRef};

/// The runtime that serves the connections' sockets.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ctxd-postgres")
            .enable_all()
            .build()
            .expect("the PostgreSQL connections' runtime starts")
    })
}

/// One connection to PostgreSQL, with its prepared statements.
pub struct PgConnection {
    client: tokio_postgres::Client,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
}

impl PgConnection {
    /// Connects to `url` (a libpq URL or key=value string).
    pub fn connect(url: &str) -> Result<PgConnection> {
        let config: tokio_postgres::Config = url.parse()?;
        let client = futures_executor::block_on(runtime().spawn(async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "PostgreSQL connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        }))
        .expect("the connection task is not cancelled")?;
        Ok(PgConnection { client, statements: RefCell::new(HashMap::new()) })
    }

    /// True once the connection to the server is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(super) fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let numbered = numbered_parameters(sql);
        let statement = futures_executor::block_on(self.client.prepare(&numbered))
            .map_err(|source| Error::Prepare { source, sql: numbered })?;
        self.statements.borrow_mut().insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    pub(super) fn execute(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&dyn ToSql],
    ) -> Result<usize> {
        let values: Vec<Param<'_>> = params.iter().map(|param| Param(param.value())).collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            values.iter().map(|value| value as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let changed = futures_executor::block_on(self.client.execute(statement, &refs))?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    pub(super) fn query(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&dyn ToSql],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let values: Vec<Param<'_>> = params.iter().map(|param| Param(param.value())).collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            values.iter().map(|value| value as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        Ok(futures_executor::block_on(self.client.query(statement, &refs))?)
    }

    pub(super) fn batch(&self, sql: &str) -> Result<()> {
        Ok(futures_executor::block_on(self.client.batch_execute(sql))?)
    }
}

/// The server's message (and where it points) rather than tokio-postgres's bare "db error".
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(where_) = db.where_() {
                text.push_str(&format!("; in {where_}"));
            }
            text
        }
        None => error.to_string(),
    }
}

/// Listens on `channel` on a connection of its own: each notification's payload goes to
/// `notices`, and `None` after the connection was lost and made again (what was sent in between
/// is lost). Ends when `notices` is dropped.
pub fn listen(
    url: &str,
    channel: &'static str,
    notices: std::sync::mpsc::Sender<Option<String>>,
) -> Result<()> {
    let config: tokio_postgres::Config = url.parse()?;
    runtime().spawn(async move {
        let mut lost = false;
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            match listen_once(&config, channel, &notices, lost).await {
                Ok(true) => return,
                Ok(false) => backoff = std::time::Duration::from_millis(100),
                Err(error) => tracing::warn!(error = %describe(&error), "listening for other nodes failed"),
            }
            lost = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
        }
    });
    Ok(())
}

/// One connection's listening: `Ok(true)` once nobody reads the notices any more.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    notices: &std::sync::mpsc::Sender<Option<String>>,
    lost: bool,
) -> std::result::Result<bool, tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (messages, mut received) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(notice) = message {
                let _ = messages.send(notice.payload().to_string());
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    if lost && notices.send(None).is_err() {
        return Ok(true);
    }
    while let Some(payload) = received.recv().await {
        if notices.send(Some(payload)).is_err() {
            return Ok(true);
        }
    }
    let _ = driver.await;
    Ok(false)
}

/// SQLite's `?1` parameters as PostgreSQL's `$1` (outside quoted text).
fn numbered_parameters(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quoted = false;
    let mut next = 1;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(digit) = chars.next_if(char::is_ascii_digit) {
                        out.push(digit);
                    }
                } else {
                    out.push_str(&next.to_string());
                    next += 1;
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A parameter, written as the type PostgreSQL inferred for its place.
#[derive(Debug)]
struct Param<'a>(ValueRef<'a>);

impl tokio_postgres::types::ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound as {ty}").into()),
            },
            ValueRef::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (r as f32).to_sql(ty, out),
                _ => Err(format!("a number cannot be bound as {ty}").into()),
            },
            ValueRef::Text(t) => match *ty {
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
                Type::BYTEA => Err("text cannot be bound as bytea".into()),
                _ => {
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
            },
            ValueRef::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(format!("bytes cannot be bound as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column's value whatever its type: what `Row::get` converts from.
struct Column(Value);

impl<'a> tokio_postgres::types::FromSql<'a> for Column {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Column(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Integer(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            // `sum()` of BIGINTs: SQLite answers an integer, and so does this.
            Type::NUMERIC => numeric(raw)?,
            Type::JSONB => Value::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?.to_string()),
            _ => Value::Text(std::str::from_utf8(raw)?.to_string()),
        }))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Column(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Column `index` of `row`.
pub(super) fn column(row: &tokio_postgres::Row, index: usize) -> Result<Value> {
    let Column(value) = row.try_get(index)?;
    Ok(value)
}

/// A NUMERIC in PostgreSQL's binary form (base-10000 digits): an integer when it has no
/// fraction and fits, else the nearest float.
fn numeric(raw: &[u8]) -> std::result::Result<Value, Box<dyn std::error::Error + Sync + Send>> {
    let word = |index: usize| -> std::result::Result<i16, Box<dyn std::error::Error + Sync + Send>> {
        let bytes = raw.get(index * 2..index * 2 + 2).ok_or("a truncated numeric")?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let (digits, weight, sign, scale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let negative = sign == 0x4000;
    let mut integer: Option<i64> = (scale == 0).then_some(0);
    let mut real = 0f64;
    for index in 0..digits.max(0) as usize {
        let digit = word(4 + index)?;
        let power = i32::from(weight) - index as i32;
        real += f64::from(digit) * 10000f64.powi(power);
        integer = match (integer, u32::try_from(power)) {
            (Some(sum), Ok(power)) => 10000i64
                .checked_pow(power)
                .and_then(|unit| unit.checked_mul(i64::from(digit)))
                .and_then(|term| sum.checked_add(term)),
            _ => None,
        };
    }
    Ok(match integer {
        Some(value) => Value::Integer(if negative { -value } else { value }),
        None => Value::Real(if negative { -real } else { real }),
    })
}

/// A column's bytes as the server sent them.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Column `index` of `row`, borrowed where it is text or bytes.
pub(super) fn column_ref(row: &tokio_postgres::Row, index: usize) -> Result<ValueRef<'_>> {
    let Raw(raw) = row.try_get(index)?;
    let Some(raw) = raw else { return Ok(ValueRef::Null) };
    let ty = row.columns()[index].type_();
    let bad = |message: String| Error::Column { column: index, message };
    Ok(match *ty {
        Type::BYTEA => ValueRef::Blob(raw),
        Type::JSONB => ValueRef::Text(
            std::str::from_utf8(raw.get(1..).unwrap_or_default()).map_err(|e| bad(e.to_string()))?,
        ),
        Type::INT8
        | Type::INT4
        | Type::INT2
        | Type::OID
        | Type::BOOL
        | Type::FLOAT8
        | Type::FLOAT4
        | Type::NUMERIC => match column(row, index)? {
            Value::Integer(i) => ValueRef::Integer(i),
            Value::Real(r) => ValueRef::Real(r),
            other => return Err(bad(format!("unexpected {other:?}"))),
        },
        _ => ValueRef::Text(std::str::from_utf8(raw).map_err(|e| bad(e.to_string()))?),
    })
}

impl From<Error> for std::io::Error {
    fn from(error: Error) -> Self {
        std::io::Error::other(error)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numerics_read_as_integers_when_whole() {
        // 1234567 = 123·10000 + 4567; -2.5 = -(2 + 5000/10000), scale 1.
        let whole = [0, 2, 0, 1, 0, 0, 0, 0, 0, 123, 0x11, 0xD7];
        assert_eq!(super::numeric(&whole).unwrap(), super::Value::Integer(1_234_567));
        let half = [0, 2, 0, 0, 0x40, 0, 0, 1, 0, 2, 0x13, 0x88];
        assert_eq!(super::numeric(&half).unwrap(), super::Value::Real(-2.5));
        assert_eq!(super::numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), super::Value::Integer(0));
    }

    #[test]
    fn parameters_are_numbered_as_postgres_numbers_them() {
        assert_eq!(super::numbered_parameters("SELECT ?1, '?2', ?12"), "SELECT $1, '?2', $12");
        assert_eq!(super::numbered_parameters("VALUES (?, ?)"), "VALUES ($1, $2)");
    }
}
