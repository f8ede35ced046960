//! `type: rekey` — gives each record a new key; what it emits is repartitioned by that key.

use super::{OperatorError, Record, eval};
use crate::expr::Expr;

/// Replaces each record's key with the value of an expression.
pub struct Rekey {
    name: String,
    key: Expr,
}

impl Rekey {
    /// A rekey named `name`, keying records by `key`.
    pub fn new(name: String, key: Expr) -> Self {
        Rekey { name, key }
    }

    /// Emits the record under its new key.
    pub fn process(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), OperatorError> {
        let key = eval(&self.key, &record).map_err(OperatorError::bad_record(&self.name))?;
        out.push(Record { key, ..record });
        Ok(())
    }
}
