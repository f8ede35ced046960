//! `type: rekey` — gives each record a new key; what it emits is repartitioned by that key.

use super::{OperatorError, Record, eval};
use crate::expr::Expr;
use crate::value::Value;

/// Replaces each record's key with the value of an expression.
pub struct Rekey {
    name: String,
    key: Expr,
    keep_key_as: Option<String>,
}

impl Rekey {
    /// A rekey named `name`, keying records by `key`; with `keep_key_as`, the old key is kept
    /// in that field of the value.
    pub fn new(name: String, key: Expr, keep_key_as: Option<String>) -> Self {
        Rekey { name, key, keep_key_as }
    }

    /// Emits the record under its new key.
    pub fn process(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), OperatorError> {
        let key = eval(&self.key, &record).map_err(OperatorError::bad_record(&self.name))?;
        let Record { key: old, mut value, timestamp } = record;
        if let (Some(field), Value::Map(fields)) = (&self.keep_key_as, &mut value) {
            fields.insert(field.clone(), old);
        }
        out.push(Record { key, value, timestamp });
        Ok(())
    }
}
