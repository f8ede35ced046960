//! `type: map` — projects and computes fields.

use std::collections::BTreeMap;

use super::{OperatorError, Record, eval};
use crate::expr::Expr;
use crate::value::Value;

/// Projects (`select`), computes (`set`) and removes (`drop`) fields of each record's value.
pub struct Map {
    name: String,
    select: Vec<(String, Expr)>,
    set: Vec<(String, Expr)>,
    drop: Vec<String>,
}

impl Map {
    /// A map named `name`; see [`crate::spec::OperatorKind::Map`] for what each list does.
    pub fn new(
        name: String,
        select: Vec<(String, Expr)>,
        set: Vec<(String, Expr)>,
        drop: Vec<String>,
    ) -> Self {
        Map { name, select, set, drop }
    }

    /// Emits the record with its value reshaped. Every expression reads the input value, so
    /// the order of `set` entries does not matter.
    pub fn process(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), OperatorError> {
        let bad = OperatorError::bad_record(&self.name);
        let mut computed = Vec::with_capacity(self.select.len() + self.set.len());
        for (name, expr) in self.select.iter().chain(&self.set) {
            computed.push((name.clone(), eval(expr, &record).map_err(&bad)?));
        }
        let mut fields = match (self.select.is_empty(), record.value) {
            (true, Value::Map(fields)) => fields,
            _ => BTreeMap::new(),
        };
        fields.extend(computed);
        for name in &self.drop {
            fields.remove(name);
        }
        out.push(Record {
            key: record.key,
            value: Value::Map(fields),
            timestamp: record.timestamp,
        });
        Ok(())
    }
}
