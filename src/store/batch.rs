//! What the statements that write many rows at once share: how many rows a statement takes,
//! and how its parameters are written for each backend.

use super::Result;
use sqlx::Any;
use sqlx::any::AnyArguments;

/// Rows in one statement: well under SQLite's and PostgreSQL's limits on parameters.
pub(super) const ROWS: usize = 200;

/// Whether a statement of [`ROWS`] rows of `width` parameters stays within both backends'
/// limits (SQLite allows 32,766 parameters, PostgreSQL 65,535).
pub(super) const fn fits(width: usize) -> bool {
    ROWS * width < 32_766
}

/// A statement of `rows` rows. One of a full [`ROWS`] is kept prepared for the next batch;
/// shorter ones, whose text varies with their length, are prepared each time rather than
/// crowding the statement cache.
pub(super) fn query(sql: String, rows: usize) -> sqlx::query::Query<'static, Any, AnyArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(rows == ROWS)
}

/// How a statement numbers its parameters. SQLite resolves each `$N` by name, which costs time
/// in the number of parameters for each of them; anonymous `?` costs nothing. PostgreSQL takes
/// only `$N`.
#[derive(Clone, Copy)]
pub(super) enum Placeholders {
    Numbered,
    Anonymous,
}

impl Placeholders {
    pub(super) fn of(tx: &sqlx::AnyConnection) -> Placeholders {
        if tx.backend_name() == "SQLite" {
            Placeholders::Anonymous
        } else {
            Placeholders::Numbered
        }
    }

    /// `$first, $first+1, …` or `?, ?, …`: `n` parameters.
    pub(super) fn list(self, first: usize, n: usize) -> String {
        let list: Vec<String> = (first..first + n)
            .map(|i| match self {
                Placeholders::Numbered => format!("${i}"),
                Placeholders::Anonymous => "?".to_string(),
            })
            .collect();
        list.join(", ")
    }

    /// `($1, …, $width), ($width+1, …)`: `rows` rows of `width` parameters.
    pub(super) fn rows(self, rows: usize, width: usize) -> String {
        let list: Vec<String> = (0..rows)
            .map(|r| format!("({})", self.list(1 + r * width, width)))
            .collect();
        list.join(", ")
    }
}

/// A timeline entry waiting to be written.
pub(super) struct Entry {
    pub(super) incident_id: i64,
    pub(super) at: String,
    pub(super) kind: &'static str,
    pub(super) outcome: Option<&'static str>,
    pub(super) message: String,
    pub(super) data: Option<String>,
}

/// Appends timeline entries in order.
pub(super) async fn append_all(tx: &mut sqlx::AnyConnection, entries: Vec<Entry>) -> Result<()> {
    for chunk in entries.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO timeline (incident_id, at, kind, outcome, message, data) VALUES {}",
            Placeholders::of(tx).rows(chunk.len(), 6)
        );
        let mut query = query(sql, chunk.len());
        for e in chunk {
            query = query
                .bind(e.incident_id)
                .bind(e.at.as_str())
                .bind(e.kind)
                .bind(e.outcome)
                .bind(e.message.as_str())
                .bind(e.data.as_deref());
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_backend() {
        assert_eq!(Placeholders::Numbered.list(3, 2), "$3, $4");
        assert_eq!(
            Placeholders::Numbered.rows(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(Placeholders::Anonymous.rows(2, 2), "(?, ?), (?, ?)");
    }
}
