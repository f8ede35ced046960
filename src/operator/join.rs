//! `type: join` — enriches each record with the row a table holds for a key.
//!
//! The table is a key-value store loaded from the table's topic (see `task`), holding the
//! latest row per key in the binary [`Value`] encoding. The join looks the row up by the value
//! of its `on` expression: an inner join drops records without a row, a left join keeps them
//! with null table fields.

use super::{Context, OperatorError, Record, eval};
use crate::expr::Expr;
use crate::spec::JoinMode;
use crate::value::Value;

/// Stream–table enrichment.
pub struct Join {
    name: String,
    store: usize,
    on: Expr,
    mode: JoinMode,
    fields: Vec<(String, String)>,
    as_: String,
    key: Vec<u8>,
}

impl Join {
    /// A join named `name` looking rows up in table store `store` by `on`; `fields` copies
    /// row fields (output name, row field), or when empty the row is nested under `as_`.
    pub fn new(
        name: String,
        store: usize,
        on: Expr,
        mode: JoinMode,
        fields: Vec<(String, String)>,
        as_: String,
    ) -> Self {
        Join { name, store, on, mode, fields, as_, key: Vec::new() }
    }

    /// Emits the record enriched with its row, or (left join) with nulls, or nothing (inner).
    pub fn process(
        &mut self,
        record: Record,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let on = eval(&self.on, &record).map_err(OperatorError::bad_record(&self.name))?;
        let row = if on.is_null() {
            None
        } else {
            self.key.clear();
            on.encode(&mut self.key);
            let stored = ctx
                .stores
                .kv(self.store)
                .get(&self.key)
                .map_err(OperatorError::state(&self.name))?;
            stored
                .map(|bytes| Value::from_bytes(&bytes))
                .transpose()
                .map_err(OperatorError::corrupt(&self.name))?
        };
        if row.is_none() && self.mode == JoinMode::Inner {
            return Ok(());
        }
        let Record { key, value, timestamp } = record;
        let mut fields = match value {
            Value::Map(fields) => fields,
            other => [("value".to_owned(), other)].into_iter().collect(),
        };
        if self.fields.is_empty() {
            fields.insert(self.as_.clone(), row.unwrap_or(Value::Null));
        } else {
            for (name, row_field) in &self.fields {
                let value = row.as_ref().and_then(|row| row.get(row_field)).cloned();
                fields.insert(name.clone(), value.unwrap_or(Value::Null));
            }
        }
        out.push(Record { key, value: Value::Map(fields), timestamp });
        Ok(())
    }
}
