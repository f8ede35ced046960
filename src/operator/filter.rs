//! `type: filter` — keeps the records for which a condition holds.

use super::{OperatorError, Record, eval_bool};
use crate::expr::Expr;

/// Keeps records for which `where` is true.
pub struct Filter {
    name: String,
    where_: Expr,
}

impl Filter {
    /// A filter named `name` keeping records for which `where_` is true.
    pub fn new(name: String, where_: Expr) -> Self {
        Filter { name, where_ }
    }

    /// Passes `record` on when the condition holds.
    pub fn process(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), OperatorError> {
        let keep =
            eval_bool(&self.where_, &record).map_err(OperatorError::bad_record(&self.name))?;
        if keep {
            out.push(record);
        }
        Ok(())
    }
}
