//! Reading the source of a copy: the SQLite file, opened read-only, every table in one read
//! transaction (one consistent snapshot, even while a server still writes to the file).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{Column, Rows, TABLES};
use crate::store::StoreError;

/// Every table of the file at `path`, whose schema must be this version's.
pub(super) fn read(path: &Path) -> Result<Vec<Rows>, StoreError> {
    if !path.is_file() {
        return Err(StoreError::Backend(format!("{}: no such SQLite file", path.display())));
    }
    let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current = crate::store::sqlite::schema_version();
    if version != current {
        return Err(StoreError::Backend(format!(
            "{}: its schema is at version {version}, this tollgate's at {current}; open it once with this version \
             (`tollgate store migrate` with it configured) and copy again",
            path.display()
        )));
    }
    let tx = conn.transaction()?;
    TABLES.iter().map(|spec| read_table(&tx, spec)).collect()
}

fn read_table(conn: &Connection, spec: &'static super::Spec) -> Result<Rows, StoreError> {
    let names: Vec<&str> = spec.columns.iter().map(|(name, _)| *name).collect();
    let order = names[..spec.key_columns].join(", ");
    let mut stmt = conn.prepare(&format!("SELECT {} FROM {} ORDER BY {order}", names.join(", "), spec.name))?;
    let mut columns: Vec<Column> = spec.columns.iter().map(|(_, kind)| Column::new(*kind)).collect();
    let mut rows = stmt.query([])?;
    let mut len = 0;
    while let Some(row) = rows.next()? {
        for (i, column) in columns.iter_mut().enumerate() {
            match column {
                Column::Int(v) => v.push(row.get(i)?),
                // SQLite keeps a boolean as an integer.
                Column::Bool(v) => v.push(row.get::<_, Option<i64>>(i)?.map(|b| b != 0)),
                Column::Text(v) => v.push(row.get(i)?),
                Column::Bytes(v) => v.push(row.get(i)?),
            }
        }
        len += 1;
    }
    Ok(Rows { spec, columns, len })
}
