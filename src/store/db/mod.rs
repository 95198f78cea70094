//! One connection type for both backends: the storage seam. Queries, the writer, the projections
//! and the CLI talk to a `Connection`; whether SQLite or PostgreSQL answers is known only here
//! and in each backend's module (`sqlite.rs`, `postgres.rs`).
//!
//! Its surface is the small part of rusqlite's that ctxd uses (prepare a cached statement, run
//! it for one row, for rows, or for a count), so that a query reads the same on both backends.
//! SQL is written with numbered parameters (`?1`); the PostgreSQL side rewrites them to `$1`
//! once per statement. SQL that the two dialects spell differently is given per backend
//! (`Connection::dialect`).

mod postgres;
mod sqlite;
mod value;

pub use postgres::{PgConnection, listen as postgres_listen};
pub use value::{FromSql, ToSql, Value, ValueRef};

/// Errors of either backend, and of reading a column as the wrong type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    #[error("postgres: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres: {}; preparing: {sql}", postgres::describe(.source))]
    Prepare { source: tokio_postgres::Error, sql: String },
    /// A write sent ahead of a later statement failed (`Statement::execute_later`): which
    /// command made it is not known.
    #[error("postgres: {}; in a deferred write", postgres::describe(.0))]
    Deferred(tokio_postgres::Error),
    #[error("the query returned no row")]
    NoRows,
    #[error("column {column}: {message}")]
    Column { column: usize, message: String },
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        match error {
            rusqlite::Error::QueryReturnedNoRows => Error::NoRows,
            error => Error::Sqlite(error),
        }
    }
}

impl Error {
    /// A constraint of the schema refused the statement (a unique key, a check, a trigger).
    pub fn is_constraint_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                failure.code == rusqlite::ErrorCode::ConstraintViolation
            }
            Error::Postgres(error) | Error::Prepare { source: error, .. } | Error::Deferred(error) => {
                error.code().is_some_and(|code| {
                    code.code().starts_with("23") || *code == tokio_postgres::error::SqlState::RAISE_EXCEPTION
                })
            }
            _ => false,
        }
    }

    /// Another transaction was in the way (PostgreSQL: a deadlock, a serialization failure):
    /// running the same transaction again may succeed.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Postgres(error) | Error::Deferred(error) => error.code().is_some_and(|code| {
                *code == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                    || *code == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
            }),
            _ => false,
        }
    }

    /// A lock was not granted within `lock_timeout` (PostgreSQL).
    pub fn is_lock_timeout(&self) -> bool {
        match self {
            Error::Postgres(error) | Error::Deferred(error) => {
                error.code().is_some_and(|code| *code == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
            }
            _ => false,
        }
    }

    /// The server ended the connection (PostgreSQL: the socket closed or failed, a connection
    /// exception, or the server shutting down, crashing or terminating this backend — whose
    /// message can arrive before the socket's end): nothing more can be sent on it.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Postgres(error) | Error::Deferred(error) | Error::Prepare { source: error, .. } => {
                let socket =
                    std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>());
                error.is_closed()
                    || socket
                    || error.code().is_some_and(|code| {
                        let code = code.code();
                        code.starts_with("08") || code.starts_with("57P")
                    })
            }
            _ => false,
        }
    }

    /// The disk the database writes to is full (SQLite: `SQLITE_FULL`, or no room to grow its
    /// shared-memory index; PostgreSQL: `disk_full`): nothing was written, and the same write
    /// succeeds once space is freed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                failure.code == rusqlite::ErrorCode::DiskFull
                    || failure.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE
            }
            Error::Postgres(error) | Error::Deferred(error) | Error::Prepare { source: error, .. } => {
                error.code().is_some_and(|code| *code == tokio_postgres::error::SqlState::DISK_FULL)
            }
            _ => false,
        }
    }

    /// The database could not be reached or opened just now: the request may be retried.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                failure.code == rusqlite::ErrorCode::CannotOpen
            }
            Error::Postgres(error) | Error::Deferred(error) => {
                error.is_closed()
                    || error
                        .code()
                        .is_none_or(|code| *code == tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS)
            }
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Ok(None)` for a query that found no row.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(Error::NoRows) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// Which SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// An open connection to either backend.
pub enum Connection {
    Sqlite(rusqlite::Connection),
    Postgres(PgConnection),
}

impl From<rusqlite::Connection> for Connection {
    fn from(conn: rusqlite::Connection) -> Self {
        Connection::Sqlite(conn)
    }
}

impl Connection {
    /// A scratch SQLite database in memory (as-of snapshots, tests).
    pub fn open_in_memory() -> Result<Connection> {
        Ok(Connection::Sqlite(rusqlite::Connection::open_in_memory()?))
    }

    /// Begins a transaction (deferred on SQLite), rolled back when dropped uncommitted.
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        self.begin("BEGIN")
    }

    /// Begins a read-only transaction in which every statement sees one snapshot (PostgreSQL:
    /// `REPEATABLE READ`; a SQLite read transaction always does).
    pub fn snapshot(&self) -> Result<Transaction<'_>> {
        self.begin(self.sql("BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
    }

    /// Begins a transaction that writes: on SQLite it takes the write lock at once (`IMMEDIATE`),
    /// so that it never fails half-way because another connection wrote first.
    pub fn write_transaction(&self) -> Result<Transaction<'_>> {
        self.begin(self.sql("BEGIN IMMEDIATE", "BEGIN"))
    }

    fn begin(&self, sql: &str) -> Result<Transaction<'_>> {
        self.prepare_cached(sql)?.execute([])?;
        Ok(Transaction { conn: self, done: false })
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Connection::Sqlite(_) => Dialect::Sqlite,
            Connection::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Picks the SQL spelled for this connection's backend.
    pub fn sql<'s>(&self, sqlite: &'s str, postgres: &'s str) -> &'s str {
        match self.dialect() {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }

    /// SQL for the text of field `name` of the JSON object in text column `column`, compared
    /// bytewise on both backends (as SQLite compares, and as the index on customers' services
    /// is built).
    pub fn json_field(&self, column: &str, name: &str) -> String {
        match self.dialect() {
            Dialect::Sqlite => format!("json_extract({column}, '$.{name}')"),
            Dialect::Postgres => format!("((CAST({column} AS JSONB) ->> '{name}') COLLATE \"C\")"),
        }
    }

    /// Lets the writer's PostgreSQL connection defer writes (`Statement::execute_later`).
    pub fn set_deferred(&self, defer: bool) {
        if let Connection::Postgres(conn) = self {
            conn.set_deferred(defer);
        }
    }

    /// True once the server closed a PostgreSQL connection: it is not given out again.
    pub fn is_broken(&self) -> bool {
        match self {
            Connection::Sqlite(_) => false,
            Connection::Postgres(conn) => conn.is_closed(),
        }
    }

    /// Gives up a connection the server has ended (`Error::is_connection_lost`), so that
    /// `is_broken` says so from now on, before its socket has told.
    pub fn abandon(&self) {
        if let Connection::Postgres(conn) = self {
            conn.abandon();
        }
    }

    /// A statement prepared once per connection and kept.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement(match self {
            Connection::Sqlite(conn) => Inner::SqliteCached(conn.prepare_cached(sql)?),
            Connection::Postgres(conn) => Inner::Postgres(conn, conn.prepare(sql)?),
        }))
    }

    /// A statement prepared for this use only (SQL built at run time).
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement(match self {
            Connection::Sqlite(conn) => Inner::Sqlite(conn.prepare(sql)?),
            Connection::Postgres(conn) => Inner::Postgres(conn, conn.prepare(sql)?),
        }))
    }

    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Runs statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Connection::Postgres(conn) => conn.batch(sql),
        }
    }
}

/// An open transaction: `commit` ends it; dropping it rolls it back.
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl Transaction<'_> {
    /// Commits; if the commit fails (a deferred write sent with it, a lost connection), the
    /// transaction is rolled back when `self` drops, so the connection never stays in a failed one.
    pub fn commit(mut self) -> Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.done = true;
        Ok(())
    }

    pub fn rollback(mut self) -> Result<()> {
        self.done = true;
        if let Connection::Postgres(conn) = self.conn {
            conn.discard_pending();
        }
        self.conn.prepare_cached("ROLLBACK")?.execute([])?;
        Ok(())
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if let Connection::Postgres(conn) = self.conn {
            conn.discard_pending();
        }
        // SQLite may have rolled the transaction back itself (on a full disk, say).
        let open = match self.conn {
            Connection::Sqlite(conn) => !conn.is_autocommit(),
            Connection::Postgres(_) => true,
        };
        if !self.done
            && open
            && let Err(error) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(%error, "rolling back a dropped transaction failed");
        }
    }
}

/// A prepared statement of either backend.
pub struct Statement<'c>(Inner<'c>);

enum Inner<'c> {
    SqliteCached(rusqlite::CachedStatement<'c>),
    Sqlite(rusqlite::Statement<'c>),
    Postgres(&'c PgConnection, tokio_postgres::Statement),
}

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match &mut self.0 {
            Inner::SqliteCached(statement) => Some(statement),
            Inner::Sqlite(statement) => Some(statement),
            Inner::Postgres(..) => None,
        }
    }

    /// Runs the statement; answers the number of rows it changed.
    pub fn execute(&mut self, params: impl Params) -> Result<usize> {
        if let Inner::Postgres(conn, statement) = &self.0 {
            return params.with(|params| conn.execute(statement, params));
        }
        let statement = self.sqlite().expect("a SQLite statement");
        params.with(|params| Ok(statement.execute(sqlite::params(params))?))
    }

    /// The first row, mapped by `f`; `Error::NoRows` when there is none.
    pub fn query_row<T>(&mut self, params: impl Params, f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        if let Inner::Postgres(conn, statement) = &self.0 {
            let rows = params.with(|params| conn.query(statement, params))?;
            return f(&Row::Postgres(rows.first().ok_or(Error::NoRows)?));
        }
        let statement = self.sqlite().expect("a SQLite statement");
        params.with(|params| {
            let mut rows = statement.query(sqlite::params(params))?;
            match rows.next()? {
                Some(row) => f(&Row::Sqlite(row)),
                None => Err(Error::NoRows),
            }
        })
    }

    /// Every row, mapped by `f` as the iteration reaches it.
    pub fn query_map<T, F>(&mut self, params: impl Params, f: F) -> Result<MappedRows<'_, F>>
    where
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let rows = match &mut self.0 {
            Inner::Postgres(conn, statement) => {
                Rows::Postgres(params.with(|params| conn.query(statement, params))?.into_iter())
            }
            Inner::SqliteCached(statement) => {
                Rows::Sqlite(params.with(|params| statement.query(sqlite::params(params)))?)
            }
            Inner::Sqlite(statement) => {
                Rows::Sqlite(params.with(|params| statement.query(sqlite::params(params)))?)
            }
        };
        Ok(MappedRows { rows, f })
    }

    /// The rows, read one at a time (`QueryRows::next`). PostgreSQL's are received whole first;
    /// SQLite reads as the loop goes, so a loop that stops early reads no further.
    pub fn query(&mut self, params: impl Params) -> Result<QueryRows<'_>> {
        Ok(QueryRows { rows: self.query_map(params, |_| Ok(()))?.rows, current: None })
    }

    /// The rows, read one at a time as they arrive on both backends, for a scan of a whole log
    /// (rebuild, verify, export) that must not be held in memory. No other statement may run on
    /// the connection until the rows are read to their end or dropped: PostgreSQL's answers come
    /// in order, and the next one would wait behind the unread rows.
    pub fn query_streamed(&mut self, params: impl Params) -> Result<QueryRows<'_>> {
        if let Inner::Postgres(conn, statement) = &self.0 {
            let stream = params.with(|params| conn.query_stream(statement, params))?;
            return Ok(QueryRows { rows: Rows::PostgresStream(conn, stream), current: None });
        }
        self.query(params)
    }

    /// Runs the statement, whose answer nobody needs: on the writer's PostgreSQL connection, it
    /// is sent with the next statement waited for (an error then shows there, as
    /// `Error::Deferred`); elsewhere it runs at once.
    pub fn execute_later(&mut self, params: impl Params) -> Result<()> {
        if let Inner::Postgres(conn, statement) = &self.0 {
            return params.with(|params| conn.execute_later(statement, params));
        }
        self.execute(params).map(drop)
    }

    /// The rows of the statement for each set of parameters, mapped by `f`: on PostgreSQL sent
    /// together (one round trip), on SQLite one after the other.
    pub fn query_each<T>(
        &mut self,
        sets: &[Vec<Value>],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<Vec<T>>> {
        if let Inner::Postgres(conn, statement) = &self.0 {
            let answers = conn.query_each(statement, sets)?;
            return answers
                .iter()
                .map(|rows| rows.iter().map(|row| f(&Row::Postgres(row))).collect())
                .collect();
        }
        let mut all = Vec::with_capacity(sets.len());
        for set in sets {
            all.push(self.query_map(params_from_iter(set.iter()), &mut f)?.collect::<Result<Vec<T>>>()?);
        }
        Ok(all)
    }

    /// True when the query returns a row.
    pub fn exists(&mut self, params: impl Params) -> Result<bool> {
        self.query_row(params, |_| Ok(())).optional().map(|found| found.is_some())
    }

    /// Number of columns of the statement's result.
    pub fn column_count(&self) -> usize {
        match &self.0 {
            Inner::SqliteCached(statement) => statement.column_count(),
            Inner::Sqlite(statement) => statement.column_count(),
            Inner::Postgres(_, statement) => statement.columns().len(),
        }
    }
}

/// The rows of a query, each mapped by the query's function.
pub struct MappedRows<'s, F> {
    rows: Rows<'s>,
    f: F,
}

enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres(std::vec::IntoIter<tokio_postgres::Row>),
    PostgresStream(&'s PgConnection, std::pin::Pin<Box<tokio_postgres::RowStream>>),
}

impl<T, F> Iterator for MappedRows<'_, F>
where
    F: FnMut(&Row<'_>) -> Result<T>,
{
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        match &mut self.rows {
            Rows::Sqlite(rows) => match rows.next() {
                Ok(Some(row)) => Some((self.f)(&Row::Sqlite(row))),
                Ok(None) => None,
                Err(error) => Some(Err(error.into())),
            },
            Rows::Postgres(rows) => rows.next().map(|row| (self.f)(&Row::Postgres(&row))),
            Rows::PostgresStream(conn, stream) => match conn.next_row(stream) {
                Ok(row) => row.map(|row| (self.f)(&Row::Postgres(&row))),
                Err(error) => Some(Err(error)),
            },
        }
    }
}

/// The rows of `Statement::query`.
pub struct QueryRows<'s> {
    rows: Rows<'s>,
    current: Option<tokio_postgres::Row>,
}

impl QueryRows<'_> {
    /// The next row, or `None` past the last. Not an `Iterator`: the row borrows the rows.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match &mut self.rows {
            Rows::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            Rows::Postgres(rows) => {
                self.current = rows.next();
                Ok(self.current.as_ref().map(Row::Postgres))
            }
            Rows::PostgresStream(conn, stream) => {
                self.current = conn.next_row(stream)?;
                Ok(self.current.as_ref().map(Row::Postgres))
            }
        }
    }
}

/// A row of a query's result.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `index` (from 0) as a `T`.
    pub fn get<T: FromSql>(&self, index: usize) -> Result<T> {
        match self {
            Row::Sqlite(row) => Ok(row.get(index)?),
            Row::Postgres(row) => T::from_value(postgres::column(row, index)?)
                .map_err(|message| Error::Column { column: index, message }),
        }
    }

    /// Column `index` as whatever the database holds, borrowed from the row.
    pub fn get_ref(&self, index: usize) -> Result<ValueRef<'_>> {
        match self {
            Row::Sqlite(row) => Ok(match row.get_ref(index)? {
                rusqlite::types::ValueRef::Null => ValueRef::Null,
                rusqlite::types::ValueRef::Integer(i) => ValueRef::Integer(i),
                rusqlite::types::ValueRef::Real(r) => ValueRef::Real(r),
                rusqlite::types::ValueRef::Text(t) => ValueRef::Text(
                    std::str::from_utf8(t)
                        .map_err(|e| Error::Column { column: index, message: e.to_string() })?,
                ),
                rusqlite::types::ValueRef::Blob(b) => ValueRef::Blob(b),
            }),
            Row::Postgres(row) => postgres::column_ref(row, index),
        }
    }

    pub fn column_count(&self) -> usize {
        match self {
            Row::Sqlite(row) => row.as_ref().column_count(),
            Row::Postgres(row) => row.len(),
        }
    }
}

/// The parameters of a statement: `params![…]`, an array, or `params_from_iter`.
pub trait Params {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R;
}

impl Params for &[&dyn ToSql] {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(self)
    }
}

impl Params for [&dyn ToSql; 0] {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(&[])
    }
}

macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
                let refs: [&dyn ToSql; $n] = std::array::from_fn(|i| &self[i] as &dyn ToSql);
                f(&refs)
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8);

macro_rules! tuple_params {
    ($(($($t:ident $i:tt),+)),*) => {$(
        impl<$($t: ToSql),+> Params for ($($t,)+) {
            fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
                f(&[$(&self.$i as &dyn ToSql),+])
            }
        }
    )*};
}
tuple_params!(
    (A 0),
    (A 0, B 1),
    (A 0, B 1, C 2),
    (A 0, B 1, C 2, D 3),
    (A 0, B 1, C 2, D 3, E 4),
    (A 0, B 1, C 2, D 3, E 4, F 5),
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6)
);

/// Parameters from an iterator of values of one type.
pub struct ParamsFromIter<I>(I);

pub fn params_from_iter<I>(values: I) -> ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    ParamsFromIter(values)
}

impl<I> Params for ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        let values: Vec<I::Item> = self.0.into_iter().collect();
        let refs: Vec<&dyn ToSql> = values.iter().map(|value| value as &dyn ToSql).collect();
        f(&refs)
    }
}

/// `params![a, b, c]`: the parameters of a statement, of any types.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::store::db::ToSql] };
    ($($param:expr),+ $(,)?) => { &[$(&$param as &dyn $crate::store::db::ToSql),+] as &[&dyn $crate::store::db::ToSql] };
}
pub use crate::params;
