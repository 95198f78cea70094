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

/// `url`'s settings, with bounds on a dead network unless the URL sets its own: a connection
/// attempt gives up after 5 s, and TCP keepalives find a peer that vanished within about 30 s
/// (a node must answer 503 during a failover, not hang).
fn config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(5));
    }
    // A server that vanished without closing its sockets (a machine lost, not a process
    // killed) while a request was unanswered at the TCP level: give up after 15 s rather than
    // the kernel's 15 minutes of retransmissions.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(std::time::Duration::from_secs(15));
    }
    if config.get_keepalives() && config.get_keepalives_idle() == std::time::Duration::from_secs(2 * 60 * 60)
    {
        config.keepalives_idle(std::time::Duration::from_secs(10));
        config.keepalives_interval(std::time::Duration::from_secs(5));
        config.keepalives_retries(4);
    }
    Ok(config)
}

/// One connection to PostgreSQL, with its prepared statements.
pub struct PgConnection {
    client: tokio_postgres::Client,
    driver: Driver,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
    /// Writes whose answers nobody waits for (`execute_later`): sent together, ahead of the
    /// next statement that is waited for, so that a group's writes cost one round trip.
    pending: RefCell<Vec<(tokio_postgres::Statement, Vec<Value>)>>,
    /// Whether `execute_later` defers (the writer's connection) or runs at once.
    defer: std::cell::Cell<bool>,
    /// Set by `abandon`: the server ended the connection.
    abandoned: std::cell::Cell<bool>,
}

/// Who reads and writes the connection's socket.
enum Driver {
    /// The shared runtime's thread; a query waits for it (any thread may query).
    Shared,
    /// The thread that queries, while it waits for its query: no other thread is woken for a
    /// query, which halves the writer's cost of a statement. Only for a thread of its own (the
    /// writer's), never a tokio worker.
    Caller(Box<CallerDriver>),
}

/// The runtime and the connection's own future of a `Driver::Caller`.
struct CallerDriver {
    runtime: tokio::runtime::Runtime,
    /// `None` once the connection ended.
    connection: RefCell<Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>>,
}

impl PgConnection {
    /// Connects to `url` (a libpq URL or key=value string).
    pub fn connect(url: &str) -> Result<PgConnection> {
        let config = config(url)?;
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
        Ok(PgConnection::new(client, Driver::Shared))
    }

    /// Connects to `url`, the calling thread driving the connection while it waits for its
    /// queries (`Driver::Caller`): for a thread of its own, not one of tokio's.
    pub fn connect_here(url: &str) -> Result<PgConnection> {
        let config = config(url)?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| {
                Error::Column { column: 0, message: format!("a runtime for the connection: {error}") }
            })?;
        let (client, connection) = runtime.block_on(config.connect(tokio_postgres::NoTls))?;
        let connection: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "PostgreSQL connection ended");
                }
            });
        let driver =
            Driver::Caller(Box::new(CallerDriver { runtime, connection: RefCell::new(Some(connection)) }));
        Ok(PgConnection::new(client, driver))
    }

    /// Waits for `query`, driving the connection meanwhile if this thread is its driver.
    fn wait<T>(
        &self,
        query: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> std::result::Result<T, tokio_postgres::Error> {
        let Driver::Caller(caller) = &self.driver else {
            return futures_executor::block_on(query);
        };
        let CallerDriver { runtime, connection } = &**caller;
        let mut connection = connection.borrow_mut();
        runtime.block_on(async {
            let mut query = std::pin::pin!(query);
            if let Some(driving) = connection.as_mut() {
                tokio::select! {
                    biased;
                    answer = &mut query => return answer,
                    () = driving.as_mut() => {}
                }
                // The connection ended: the query fails (or finished just before).
                *connection = None;
            }
            query.await
        })
    }

    fn new(client: tokio_postgres::Client, driver: Driver) -> PgConnection {
        PgConnection {
            client,
            driver,
            statements: RefCell::new(HashMap::new()),
            pending: RefCell::new(Vec::new()),
            defer: std::cell::Cell::new(false),
            abandoned: std::cell::Cell::new(false),
        }
    }

    /// Lets `execute_later` defer writes (true) or makes it run them at once (false).
    pub fn set_deferred(&self, defer: bool) {
        self.defer.set(defer);
    }

    /// Forgets deferred writes (their transaction is rolled back).
    pub(super) fn discard_pending(&self) {
        self.pending.borrow_mut().clear();
    }

    /// Runs `statement` now, or with the next statement waited for when deferring.
    pub(super) fn execute_later(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&dyn ToSql],
    ) -> Result<()> {
        if !self.defer.get() {
            return self.execute(statement, params).map(drop);
        }
        let values = params.iter().map(|param| owned(param.value())).collect();
        self.pending.borrow_mut().push((statement.clone(), values));
        Ok(())
    }

    /// Waits for `query`, the deferred writes sent ahead of it (in order, on one round trip).
    fn run<T>(
        &self,
        query: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return Ok(self.wait(query)?);
        }
        let writes = pending.iter().map(|(statement, values)| async move {
            let params: Vec<Param<'_>> = values.iter().map(|value| Param(value.as_ref())).collect();
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|param| param as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            self.client.execute(statement, &refs).await
        });
        let both = async {
            // `join` polls the writes first: they are sent before the query.
            let (written, answer) =
                futures_util::future::join(futures_util::future::join_all(writes), query).await;
            Ok((written, answer))
        };
        let (written, answer) = self.wait(both)?;
        if let Some(Err(error)) = written.into_iter().find(Result::is_err) {
            return Err(Error::Deferred(error));
        }
        Ok(answer?)
    }

    /// Marks the connection gone (`Connection::abandon`): a connection this thread drives is
    /// dropped, closing its socket; one the shared runtime drives ends when the server's end
    /// reaches it, and is counted gone meanwhile.
    pub fn abandon(&self) {
        self.abandoned.set(true);
        if let Driver::Caller(caller) = &self.driver {
            caller.connection.borrow_mut().take();
        }
    }

    /// True once the connection to the server is gone, or was given up (`abandon`).
    pub fn is_closed(&self) -> bool {
        self.abandoned.get() || self.client.is_closed()
    }

    pub(super) fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let numbered = numbered_parameters(sql);
        let statement = self.run(self.client.prepare(&numbered)).map_err(|error| match error {
            Error::Postgres(source) => Error::Prepare { source, sql: numbered.clone() },
            other => other,
        })?;
        self.statements.borrow_mut().insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    pub(super) fn execute(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&dyn ToSql],
    ) -> Result<usize> {
        let changed = bound(params, |refs| self.run(self.client.execute(statement, refs)))?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    pub(super) fn query(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&dyn ToSql],
    ) -> Result<Vec<tokio_postgres::Row>> {
        bound(params, |refs| self.run(self.client.query(statement, refs)))
    }

    /// The rows of `statement` for each set of parameters, the statements sent together: one
    /// round trip for all.
    pub(super) fn query_each(
        &self,
        statement: &tokio_postgres::Statement,
        sets: &[Vec<Value>],
    ) -> Result<Vec<Vec<tokio_postgres::Row>>> {
        let queries = sets.iter().map(|values| async move {
            let params: Vec<Param<'_>> = values.iter().map(|value| Param(value.as_ref())).collect();
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|param| param as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            self.client.query(statement, &refs).await
        });
        let all = self.run(async { Ok(futures_util::future::join_all(queries).await) })?;
        all.into_iter().map(|rows| rows.map_err(Error::from)).collect()
    }

    /// The rows of `statement`, received as they are read (`next_row`), not gathered first: a
    /// rebuild's fold reads a whole log through it.
    pub(super) fn query_stream(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&dyn ToSql],
    ) -> Result<std::pin::Pin<Box<tokio_postgres::RowStream>>> {
        Ok(Box::pin(bound(params, |refs| self.run(self.client.query_raw(statement, refs.iter().copied())))?))
    }

    /// The next row of a `query_stream`.
    pub(super) fn next_row(
        &self,
        stream: &mut std::pin::Pin<Box<tokio_postgres::RowStream>>,
    ) -> Result<Option<tokio_postgres::Row>> {
        use futures_util::StreamExt;
        Ok(self.wait(async { stream.next().await.transpose() })?)
    }

    pub(super) fn batch(&self, sql: &str) -> Result<()> {
        self.run(self.client.batch_execute(sql))
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
/// `notices`, and `None` each time it starts listening, the first included (what was sent
/// before, or while the connection was lost, is to be read again). Ends when `notices` is dropped.
pub fn listen(
    url: &str,
    channel: &'static str,
    notices: std::sync::mpsc::Sender<Option<String>>,
) -> Result<()> {
    let config = config(url)?;
    runtime().spawn(async move {
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            match listen_once(&config, channel, &notices).await {
                Ok(true) => return,
                Ok(false) => backoff = std::time::Duration::from_millis(100),
                Err(error) => tracing::warn!(error = %describe(&error), "listening for other nodes failed"),
            }
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
    if notices.send(None).is_err() {
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

/// `params` as tokio-postgres binds them, for `f`.
fn bound<R>(params: &[&dyn ToSql], f: impl FnOnce(&[&(dyn tokio_postgres::types::ToSql + Sync)]) -> R) -> R {
    let values: Vec<Param<'_>> = params.iter().map(|param| Param(param.value())).collect();
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        values.iter().map(|value| value as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
    f(&refs)
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
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(format!("text cannot be bound as {ty}").into()),
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

/// A parameter's value, kept until its deferred write is sent.
fn owned(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(t.to_string()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
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
