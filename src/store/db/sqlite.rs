//! Binding parameters to a SQLite statement: directly, through rusqlite's own trait.

use super::ToSql;

pub(super) fn params<'p>(params: &'p [&'p dyn ToSql]) -> impl rusqlite::Params + 'p {
    rusqlite::params_from_iter(params.iter().map(|param| *param as &dyn rusqlite::ToSql))
}
