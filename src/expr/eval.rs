//! Evaluation of a compiled expression against one record, directly on [`Value`]s.
//!
//! Values are borrowed from the record, the extras and the expression's constants wherever
//! possible ([`Cow`]), so reading a field or comparing it with a literal copies nothing; only
//! new values (arithmetic, string functions, list literals, macro results) allocate. Macro
//! variables live in a list on the stack, so binding one allocates nothing either.
//!
//! Evaluation never trusts the static types: a record may not match its schema (JSON), and
//! `any` defers every check to here, so each operation checks the values it is given.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::EvalError;
use super::node::{BinaryOp, Func, MacroKind, Node, brief, described};
use crate::value::Value;

static NULL: Value = Value::Null;

/// What identifiers refer to during one evaluation.
#[derive(Clone, Copy)]
pub(super) struct Env<'a> {
    value: &'a Value,
    extras: &'a [&'a Value],
    locals: Option<&'a Local<'a>>,
}

/// A macro's variable bound to one element, and the variables of the macros around it.
struct Local<'a> {
    value: &'a Value,
    outer: Option<&'a Local<'a>>,
}

impl<'a> Env<'a> {
    /// The record `value` and the extras' values, in scope order.
    pub(super) fn new(value: &'a Value, extras: &'a [&'a Value]) -> Self {
        Env { value, extras, locals: None }
    }

    fn with<'b>(self, local: &'b Local<'b>) -> Env<'b>
    where
        'a: 'b,
    {
        Env { value: self.value, extras: self.extras, locals: Some(local) }
    }
}

type Eval<'a> = Result<Cow<'a, Value>, EvalError>;

fn fail<T>(message: String) -> Result<T, EvalError> {
    Err(EvalError { message })
}

fn boolean<'a>(b: bool) -> Cow<'a, Value> {
    Cow::Owned(Value::Bool(b))
}

impl Node {
    /// The value of this node for the record and extras of `env`.
    pub(super) fn eval<'a>(&'a self, env: Env<'a>) -> Eval<'a> {
        match self {
            Node::Literal(value) => Ok(Cow::Borrowed(value)),
            Node::Field(name) => match env.value {
                Value::Map(fields) => Ok(Cow::Borrowed(fields.get(name).unwrap_or(&NULL))),
                Value::Null => Ok(Cow::Borrowed(&NULL)),
                other => {
                    fail(format!("the record is {}, not a record of fields", described(other)))
                }
            },
            Node::Extra { index, name } => match env.extras.get(*index) {
                Some(value) => Ok(Cow::Borrowed(*value)),
                None => fail(format!("no value was given for '{name}'")),
            },
            Node::Local { depth, name } => {
                let mut local = env.locals;
                for _ in 0..*depth {
                    local = local.and_then(|local| local.outer);
                }
                match local {
                    Some(local) => Ok(Cow::Borrowed(local.value)),
                    None => fail(format!("'{name}' is not bound")),
                }
            }
            Node::Select { operand, field } => match operand.eval(env)? {
                Cow::Borrowed(Value::Map(fields)) => {
                    Ok(Cow::Borrowed(fields.get(field).unwrap_or(&NULL)))
                }
                Cow::Owned(Value::Map(mut fields)) => {
                    Ok(Cow::Owned(fields.remove(field).unwrap_or_default()))
                }
                value if value.is_null() => Ok(Cow::Borrowed(&NULL)),
                value => fail(format!(
                    "{operand} is {}: cannot select field '{field}'",
                    described(&value)
                )),
            },
            Node::Has { operand, field } => match operand.eval(env)?.as_ref() {
                Value::Map(fields) => Ok(boolean(fields.get(field).is_some_and(|v| !v.is_null()))),
                Value::Null => Ok(boolean(false)),
                other => {
                    fail(format!("{operand} is {}: has() needs a record or map", described(other)))
                }
            },
            Node::Index { operand, index } => self.index(operand, index, env),
            Node::List(items) => {
                let values: Result<Vec<Value>, EvalError> =
                    items.iter().map(|item| item.eval(env).map(Cow::into_owned)).collect();
                Ok(Cow::Owned(Value::Array(values?)))
            }
            Node::Map(entries) => {
                let mut fields = BTreeMap::new();
                for (key, value) in entries {
                    let name = match key.eval(env)?.into_owned() {
                        Value::String(name) => name,
                        other => {
                            return fail(format!(
                                "{key} is {}: map keys must be strings",
                                described(&other)
                            ));
                        }
                    };
                    let value = value.eval(env)?.into_owned();
                    match fields.entry(name) {
                        Entry::Vacant(entry) => {
                            entry.insert(value);
                        }
                        Entry::Occupied(entry) => {
                            return fail(format!("duplicate key '{}' in '{self}'", entry.key()));
                        }
                    }
                }
                Ok(Cow::Owned(Value::Map(fields)))
            }
            Node::Not(operand) => Ok(boolean(!truth(operand, env, "'!' needs a bool")?)),
            Node::Neg(operand) => match operand.eval(env)?.as_ref() {
                Value::Int(i) => match i.checked_neg() {
                    Some(negated) => Ok(Cow::Owned(Value::Int(negated))),
                    None => fail(format!("integer overflow: -({i}) in '{self}'")),
                },
                Value::Float(x) => Ok(Cow::Owned(Value::Float(-x))),
                other => fail(format!("{operand} is {}: '-' needs a number", described(other))),
            },
            Node::Binary { op, left, right } => self.binary(*op, left, right, env),
            Node::And(left, right) => logic(false, left, right, env, "'&&' needs bools"),
            Node::Or(left, right) => logic(true, left, right, env, "'||' needs bools"),
            Node::Cond { cond, then, otherwise } => {
                if truth(cond, env, "'?:' needs a bool condition")? {
                    then.eval(env)
                } else {
                    otherwise.eval(env)
                }
            }
            Node::Call { func, args, .. } => self.call(*func, args, env),
            Node::Macro { kind, range, filter, body, .. } => {
                let range_value = range.eval(env)?;
                let keys: Vec<Value>;
                let items: &[Value] = match range_value.as_ref() {
                    Value::Array(items) => items,
                    Value::Map(fields) => {
                        keys = fields.keys().cloned().map(Value::String).collect();
                        &keys
                    }
                    other => {
                        return fail(format!(
                            "{range} is {}: '{}' needs a list or map",
                            described(other),
                            kind.name()
                        ));
                    }
                };
                run_macro(*kind, items, env, filter.as_deref(), body).map(Cow::Owned)
            }
            Node::ToFloat(inner) => {
                let value = inner.eval(env)?;
                match value.as_ref() {
                    Value::Int(i) => Ok(Cow::Owned(Value::Float(int_to_float(*i)))),
                    _ => Ok(value),
                }
            }
            Node::Invalid(text) => fail(format!("'{text}' did not compile")),
        }
    }

    fn index<'a>(&'a self, operand: &'a Node, index: &'a Node, env: Env<'a>) -> Eval<'a> {
        let container = operand.eval(env)?;
        let key = index.eval(env)?;
        let position = |items: &[Value]| match key.as_ref() {
            Value::Int(i) => match usize::try_from(*i).ok().filter(|i| *i < items.len()) {
                Some(position) => Ok(position),
                None => fail(format!(
                    "index {i} is out of range in '{self}': the list has {} items",
                    items.len()
                )),
            },
            other => fail(format!("{index} is {}: a list index must be an int", described(other))),
        };
        let name = || match key.as_ref() {
            Value::String(name) => Ok(name.as_str()),
            other => fail(format!("{index} is {}: a map key must be a string", described(other))),
        };
        match container {
            Cow::Borrowed(Value::Array(items)) => Ok(Cow::Borrowed(&items[position(items)?])),
            Cow::Owned(Value::Array(mut items)) => {
                let position = position(&items)?;
                Ok(Cow::Owned(items.swap_remove(position)))
            }
            Cow::Borrowed(Value::Map(fields)) => {
                Ok(Cow::Borrowed(fields.get(name()?).unwrap_or(&NULL)))
            }
            Cow::Owned(Value::Map(mut fields)) => {
                Ok(Cow::Owned(fields.remove(name()?).unwrap_or_default()))
            }
            container if container.is_null() => Ok(Cow::Borrowed(&NULL)),
            container => {
                fail(format!("{operand} is {}: '[]' needs a list or map", described(&container)))
            }
        }
    }

    fn binary<'a>(
        &'a self,
        op: BinaryOp,
        left: &'a Node,
        right: &'a Node,
        env: Env<'a>,
    ) -> Eval<'a> {
        let l = left.eval(env)?;
        let r = right.eval(env)?;
        match op {
            BinaryOp::Eq => Ok(boolean(equal(&l, &r))),
            BinaryOp::Ne => Ok(boolean(!equal(&l, &r))),
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => match compare(&l, &r) {
                // NaN is not ordered with anything: every ordering comparison is false.
                Some(None) => Ok(boolean(false)),
                Some(Some(ordering)) => Ok(boolean(match op {
                    BinaryOp::Lt => ordering.is_lt(),
                    BinaryOp::Le => ordering.is_le(),
                    BinaryOp::Gt => ordering.is_gt(),
                    _ => ordering.is_ge(),
                })),
                None => match null_operand(left, &l, right, &r) {
                    Some(culprit) => fail(format!(
                        "{culprit} is null: cannot compare {} {} {}",
                        brief(&l),
                        op.symbol(),
                        brief(&r)
                    )),
                    None => fail(format!(
                        "cannot compare {} with {} in '{self}'",
                        l.type_name(),
                        r.type_name()
                    )),
                },
            },
            BinaryOp::In => match r.as_ref() {
                Value::Array(items) => Ok(boolean(items.iter().any(|item| equal(&l, item)))),
                Value::Map(fields) => Ok(boolean(match l.as_ref() {
                    Value::String(name) => fields.contains_key(name),
                    _ => false,
                })),
                other => fail(format!(
                    "{right} is {}: 'in' needs a list or map on the right",
                    described(other)
                )),
            },
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => {
                self.arithmetic(op, left, right, l, r)
            }
        }
    }

    fn arithmetic<'a>(
        &self,
        op: BinaryOp,
        left: &Node,
        right: &Node,
        l: Cow<'a, Value>,
        r: Cow<'a, Value>,
    ) -> Eval<'a> {
        let float = |a: f64, b: f64| match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            _ => a / b,
        };
        let value = match (l.as_ref(), r.as_ref()) {
            (Value::Int(a), Value::Int(b)) => Value::Int(self.integer(op, *a, *b)?),
            (Value::Int(a), Value::Float(b)) if op != BinaryOp::Rem => {
                Value::Float(float(int_to_float(*a), *b))
            }
            (Value::Float(a), Value::Int(b)) if op != BinaryOp::Rem => {
                Value::Float(float(*a, int_to_float(*b)))
            }
            (Value::Float(a), Value::Float(b)) if op != BinaryOp::Rem => {
                Value::Float(float(*a, *b))
            }
            (Value::String(_), Value::String(_))
            | (Value::Bytes(_), Value::Bytes(_))
            | (Value::Array(_), Value::Array(_))
                if op == BinaryOp::Add =>
            {
                concat(l, r)
            }
            (a, b) => {
                return match null_operand(left, a, right, b) {
                    Some(culprit) => fail(format!(
                        "{culprit} is null: cannot compute {} {} {}",
                        brief(a),
                        op.symbol(),
                        brief(b)
                    )),
                    None => {
                        let needs = match op {
                            BinaryOp::Add => "two numbers or two strings",
                            BinaryOp::Rem => "two ints",
                            _ => "two numbers",
                        };
                        fail(format!(
                            "'{}' needs {needs}, got {} and {} in '{self}'",
                            op.symbol(),
                            a.type_name(),
                            b.type_name()
                        ))
                    }
                };
            }
        };
        Ok(Cow::Owned(value))
    }

    fn integer(&self, op: BinaryOp, a: i64, b: i64) -> Result<i64, EvalError> {
        let result = match op {
            BinaryOp::Add => a.checked_add(b),
            BinaryOp::Sub => a.checked_sub(b),
            BinaryOp::Mul => a.checked_mul(b),
            BinaryOp::Div if b == 0 => return fail(format!("division by zero in '{self}'")),
            BinaryOp::Div => a.checked_div(b),
            BinaryOp::Rem if b == 0 => return fail(format!("modulo by zero in '{self}'")),
            BinaryOp::Rem => a.checked_rem(b),
            _ => None,
        };
        match result {
            Some(result) => Ok(result),
            None => fail(format!("integer overflow: {a} {} {b} in '{self}'", op.symbol())),
        }
    }

    fn call<'a>(&'a self, func: Func, args: &'a [Node], env: Env<'a>) -> Eval<'a> {
        let name = func.name();
        let Some(first) = args.first() else {
            return fail(format!("'{name}' was given nothing in '{self}'"));
        };
        let value = first.eval(env)?;
        let text = || match value.as_ref() {
            Value::String(s) => Ok(s.as_str()),
            other => fail(format!("{first} is {}: '{name}' needs a string", described(other))),
        };
        let result = match func {
            Func::Size => {
                let size = match value.as_ref() {
                    Value::String(s) => s.chars().count(),
                    Value::Bytes(bytes) => bytes.len(),
                    Value::Array(items) => items.len(),
                    Value::Map(fields) => fields.len(),
                    other => {
                        return fail(format!(
                            "{first} is {}: 'size' needs a string, bytes, list or map",
                            described(other)
                        ));
                    }
                };
                Value::Int(i64::try_from(size).unwrap_or(i64::MAX))
            }
            Func::StartsWith | Func::EndsWith | Func::Contains => {
                let s = text()?;
                let Some(arg) = args.get(1) else {
                    return fail(format!("'{name}' was given no argument in '{self}'"));
                };
                let arg_value = arg.eval(env)?;
                let part = match arg_value.as_ref() {
                    Value::String(part) => part.as_str(),
                    other => {
                        return fail(format!(
                            "{arg} is {}: '{name}' needs a string argument",
                            described(other)
                        ));
                    }
                };
                Value::Bool(match func {
                    Func::StartsWith => s.starts_with(part),
                    Func::EndsWith => s.ends_with(part),
                    _ => s.contains(part),
                })
            }
            Func::LowerAscii | Func::UpperAscii => {
                let mut s = text()?.to_owned();
                if func == Func::LowerAscii {
                    s.make_ascii_lowercase();
                } else {
                    s.make_ascii_uppercase();
                }
                Value::String(s)
            }
            Func::Trim => Value::String(text()?.trim().to_owned()),
            Func::Int => Value::Int(match value.as_ref() {
                Value::Int(i) => *i,
                Value::Float(x) => match float_to_int(*x) {
                    Some(i) => i,
                    None => return fail(format!("cannot convert {x:?} to int in '{self}'")),
                },
                Value::String(s) => match s.trim().parse() {
                    Ok(i) => i,
                    Err(_) => {
                        return fail(format!(
                            "cannot convert {} to int in '{self}'",
                            brief(&value)
                        ));
                    }
                },
                other => {
                    return fail(format!(
                        "{first} is {}: 'int' cannot convert it",
                        described(other)
                    ));
                }
            }),
            Func::Double => Value::Float(match value.as_ref() {
                Value::Int(i) => int_to_float(*i),
                Value::Float(x) => *x,
                Value::String(s) => match s.trim().parse() {
                    Ok(x) => x,
                    Err(_) => {
                        return fail(format!(
                            "cannot convert {} to double in '{self}'",
                            brief(&value)
                        ));
                    }
                },
                other => {
                    return fail(format!(
                        "{first} is {}: 'double' cannot convert it",
                        described(other)
                    ));
                }
            }),
            Func::String => match value {
                Cow::Owned(Value::String(s)) => Value::String(s),
                Cow::Borrowed(Value::String(s)) => Value::String(s.clone()),
                _ => Value::String(match value.as_ref() {
                    Value::Int(i) => i.to_string(),
                    Value::Float(x) => x.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
                        Ok(s) => s.to_owned(),
                        Err(_) => {
                            return fail(format!(
                                "{first} is not valid UTF-8: 'string' cannot convert it"
                            ));
                        }
                    },
                    other => {
                        return fail(format!(
                            "{first} is {}: 'string' cannot convert it",
                            described(other)
                        ));
                    }
                }),
            },
        };
        Ok(Cow::Owned(result))
    }
}

/// The bool `node` evaluates to; `needs` says why anything else is an error.
fn truth<'a>(node: &'a Node, env: Env<'a>, needs: &str) -> Result<bool, EvalError> {
    match node.eval(env)?.as_ref() {
        Value::Bool(b) => Ok(*b),
        other => fail(format!("{node} is {}: {needs}", described(other))),
    }
}

/// `&&` (`decisive` false) and `||` (`decisive` true), as CEL defines them: a decisive operand
/// on either side decides the result even when the other side fails.
fn logic<'a>(
    decisive: bool,
    left: &'a Node,
    right: &'a Node,
    env: Env<'a>,
    needs: &str,
) -> Eval<'a> {
    match truth(left, env, needs) {
        Ok(b) if b == decisive => Ok(boolean(decisive)),
        Ok(_) => truth(right, env, needs).map(boolean),
        Err(error) => match truth(right, env, needs) {
            Ok(b) if b == decisive => Ok(boolean(decisive)),
            _ => Err(error),
        },
    }
}

fn run_macro<'b>(
    kind: MacroKind,
    items: &'b [Value],
    env: Env<'b>,
    filter: Option<&'b Node>,
    body: &'b Node,
) -> Result<Value, EvalError> {
    let needs = match kind {
        MacroKind::All => "the condition of 'all' must be a bool",
        MacroKind::Exists => "the condition of 'exists' must be a bool",
        MacroKind::ExistsOne => "the condition of 'exists_one' must be a bool",
        MacroKind::Map => "the condition of 'map' must be a bool",
        MacroKind::Filter => "the condition of 'filter' must be a bool",
    };
    match kind {
        // Like `||` and `&&`: one decisive element decides, whatever failed elsewhere.
        MacroKind::Exists | MacroKind::All => {
            let decisive = kind == MacroKind::Exists;
            let mut error = None;
            for item in items {
                let local = Local { value: item, outer: env.locals };
                match truth(body, env.with(&local), needs) {
                    Ok(b) if b == decisive => return Ok(Value::Bool(decisive)),
                    Ok(_) => {}
                    Err(failure) => {
                        error.get_or_insert(failure);
                    }
                }
            }
            match error {
                Some(error) => Err(error),
                None => Ok(Value::Bool(!decisive)),
            }
        }
        MacroKind::ExistsOne => {
            let mut count = 0_usize;
            for item in items {
                let local = Local { value: item, outer: env.locals };
                if truth(body, env.with(&local), needs)? {
                    count += 1;
                }
            }
            Ok(Value::Bool(count == 1))
        }
        MacroKind::Map => {
            let mut mapped = Vec::with_capacity(items.len());
            for item in items {
                let local = Local { value: item, outer: env.locals };
                let env = env.with(&local);
                if let Some(filter) = filter
                    && !truth(filter, env, needs)?
                {
                    continue;
                }
                mapped.push(body.eval(env)?.into_owned());
            }
            Ok(Value::Array(mapped))
        }
        MacroKind::Filter => {
            let mut kept = Vec::new();
            for item in items {
                let local = Local { value: item, outer: env.locals };
                if truth(body, env.with(&local), needs)? {
                    kept.push(item.clone());
                }
            }
            Ok(Value::Array(kept))
        }
    }
}

/// The operand that is null, if one is: the left one when both are.
fn null_operand<'n>(left: &'n Node, l: &Value, right: &'n Node, r: &Value) -> Option<&'n Node> {
    if l.is_null() {
        Some(left)
    } else if r.is_null() {
        Some(right)
    } else {
        None
    }
}

/// `a + b` for two strings, two bytes or two lists, reusing `a`'s buffer when it owns one.
fn concat(a: Cow<'_, Value>, b: Cow<'_, Value>) -> Value {
    match (a.into_owned(), b) {
        (Value::String(mut a), b) => {
            if let Value::String(b) = b.as_ref() {
                a.push_str(b);
            }
            Value::String(a)
        }
        (Value::Bytes(mut a), b) => {
            if let Value::Bytes(b) = b.as_ref() {
                a.extend_from_slice(b);
            }
            Value::Bytes(a)
        }
        (Value::Array(mut a), Cow::Owned(Value::Array(b))) => {
            a.extend(b);
            Value::Array(a)
        }
        (Value::Array(mut a), Cow::Borrowed(Value::Array(b))) => {
            a.extend(b.iter().cloned());
            Value::Array(a)
        }
        (a, _) => a,
    }
}

/// CEL equality: values of different types are unequal, except an int and a float, which are
/// compared as numbers; lists and maps are equal element by element.
pub(super) fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(i), Value::Float(x)) | (Value::Float(x), Value::Int(i)) => {
            int_to_float(*i) == *x
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| equal(a, b))
        }
        (Value::Map(a), Value::Map(b)) => {
            a.len() == b.len() && a.iter().all(|(name, v)| b.get(name).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// The order of two values: `None` when they cannot be ordered (different types, null),
/// `Some(None)` when they can but are not (NaN).
fn compare(a: &Value, b: &Value) -> Option<Option<Ordering>> {
    Some(match (a, b) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Int(a), Value::Float(b)) => int_to_float(*a).partial_cmp(b),
        (Value::Float(a), Value::Int(b)) => a.partial_cmp(&int_to_float(*b)),
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => return None,
    })
}

/// The nearest float: exact up to 2^53, as CEL's own int-to-double conversion.
#[allow(clippy::cast_precision_loss)]
fn int_to_float(i: i64) -> f64 {
    i as f64
}

/// The int of `x` truncated toward zero, or `None` when out of range or NaN.
#[allow(clippy::cast_possible_truncation)]
fn float_to_int(x: f64) -> Option<i64> {
    // 2^63 is exactly representable; every float below it and at or above -2^63 fits.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (x.is_finite() && (-LIMIT..LIMIT).contains(&x)).then(|| x.trunc() as i64)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{click, eval, eval_any};
    use crate::value::Value;

    fn list(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    #[test]
    fn literals() {
        assert_eq!(eval("1"), Ok(Value::Int(1)));
        assert_eq!(eval("1u"), Ok(Value::Int(1)));
        assert_eq!(eval("-1"), Ok(Value::Int(-1)));
        assert_eq!(eval("1.5"), Ok(Value::Float(1.5)));
        assert_eq!(eval("'it\\'s'"), Ok("it's".into()));
        assert_eq!(eval("\"double\""), Ok("double".into()));
        assert_eq!(eval("b'ab'"), Ok(Value::Bytes(b"ab".to_vec())));
        assert_eq!(eval("true"), Ok(true.into()));
        assert_eq!(eval("null"), Ok(Value::Null));
        assert_eq!(eval("[1, 'a']"), Ok(list(vec![1.into(), "a".into()])));
        assert_eq!(eval("{'a': 1}"), Ok(Value::from([("a", 1.into())])));
        assert_eq!(
            eval("{'q': quantity, 'p': [page_url]}"),
            Ok(Value::from([("q", 3.into()), ("p", list(vec!["/product/42".into()]))]))
        );
        assert_eq!(eval("[quantity, 1.5]"), Ok(list(vec![3.0.into(), 1.5.into()])));
    }

    #[test]
    fn fields_nested_fields_and_extras() {
        assert_eq!(eval("page_url"), Ok("/product/42".into()));
        assert_eq!(eval("user.address.city"), Ok("Paris".into()));
        assert_eq!(eval("user['address']['city']"), Ok("Paris".into()));
        assert_eq!(eval("_key + ':' + string(_timestamp)"), Ok("k1:5".into()));
        assert_eq!(eval("has(user.address)"), Ok(true.into()));
        assert_eq!(eval("has(user.address.city)"), Ok(true.into()));
    }

    #[test]
    fn missing_fields_and_fields_of_null_read_as_null() {
        let record = Value::from([("a", Value::Null), ("b", Value::from([("c", 1.into())]))]);
        assert_eq!(eval_any("missing", &record), Ok(Value::Null));
        assert_eq!(eval_any("missing == null", &record), Ok(true.into()));
        assert_eq!(eval_any("a.b.c", &record), Ok(Value::Null));
        assert_eq!(eval_any("a['k']", &record), Ok(Value::Null));
        assert_eq!(eval_any("b.d", &record), Ok(Value::Null));
        assert_eq!(eval_any("has(b.c)", &record), Ok(true.into()));
        assert_eq!(eval_any("has(b.d)", &record), Ok(false.into()));
        assert_eq!(eval_any("has(a.b)", &record), Ok(false.into()));
        assert_eq!(eval_any("x", &Value::Null), Ok(Value::Null));
        assert_eq!(
            eval_any("x", &"text".into()),
            Err("the record is a string, not a record of fields".into())
        );
        assert_eq!(
            eval_any("b.c.d", &record),
            Err("b.c is an int: cannot select field 'd'".into())
        );
    }

    #[test]
    fn indexing() {
        assert_eq!(eval("tags[1]"), Ok("bb".into()));
        assert_eq!(eval("[[1, 2], [3]][0][1]"), Ok(2.into()));
        assert_eq!(eval("attrs['utm']"), Ok("mail".into()));
        assert_eq!(eval("attrs['nope']"), Ok(Value::Null));
        assert_eq!(eval("{'a': [quantity]}['a'][0]"), Ok(3.into()));
        assert_eq!(
            eval("tags[2]"),
            Err("index 2 is out of range in 'tags[2]': the list has 2 items".into())
        );
        assert_eq!(
            eval("tags[-1]"),
            Err("index -1 is out of range in 'tags[-1]': the list has 2 items".into())
        );
        let record = Value::from([("l", list(vec![1.into()])), ("k", "x".into())]);
        assert_eq!(
            eval_any("l[k]", &record),
            Err("k is a string: a list index must be an int".into())
        );
        assert_eq!(
            eval_any("k[0]", &record),
            Err("k is a string: '[]' needs a list or map".into())
        );
    }

    #[test]
    fn membership() {
        assert_eq!(eval("'bb' in tags"), Ok(true.into()));
        assert_eq!(eval("'c' in tags"), Ok(false.into()));
        assert_eq!(eval("'utm' in attrs"), Ok(true.into()));
        assert_eq!(eval("'mail' in attrs"), Ok(false.into()));
        assert_eq!(eval("3 in [1, 2.0, 3.0]"), Ok(true.into()));
        assert_eq!(eval("event_type in ['checkout', 'cart']"), Ok(true.into()));
        let record = Value::from([("s", "abc".into())]);
        assert_eq!(
            eval_any("'a' in s", &record),
            Err("s is a string: 'in' needs a list or map on the right".into())
        );
    }

    #[test]
    fn arithmetic() {
        assert_eq!(eval("quantity + 2"), Ok(5.into()));
        assert_eq!(eval("quantity - 5"), Ok((-2).into()));
        assert_eq!(eval("quantity * 2"), Ok(6.into()));
        assert_eq!(eval("quantity / 2"), Ok(1.into()));
        assert_eq!(eval("-7 / 2"), Ok((-3).into()));
        assert_eq!(eval("quantity % 2"), Ok(1.into()));
        assert_eq!(eval("-quantity"), Ok((-3).into()));
        assert_eq!(eval("quantity + 0.5"), Ok(3.5.into()));
        assert_eq!(eval("0.5 * quantity"), Ok(1.5.into()));
        assert_eq!(eval("quantity / 2.0"), Ok(1.5.into()));
        assert_eq!(eval("-(1.5 - 2.0)"), Ok(0.5.into()));
        assert_eq!(eval("event_time - 1000"), Ok(1_699_999_999_000_i64.into()));
        assert_eq!(eval("page_url + '?x'"), Ok("/product/42?x".into()));
        assert_eq!(eval("b'a' + b'b'"), Ok(Value::Bytes(b"ab".to_vec())));
        assert_eq!(eval("tags + ['c']"), Ok(list(vec!["a".into(), "bb".into(), "c".into()])));
        assert_eq!(eval("1.0 / 0.0"), Ok(f64::INFINITY.into()));
    }

    #[test]
    fn division_by_zero_and_overflow_are_errors() {
        assert_eq!(eval("quantity / 0"), Err("division by zero in 'quantity / 0'".into()));
        assert_eq!(
            eval("quantity % (quantity - 3)"),
            Err("modulo by zero in 'quantity % (quantity - 3)'".into())
        );
        assert_eq!(
            eval("9223372036854775807 + quantity"),
            Err("integer overflow: 9223372036854775807 + 3 in '9223372036854775807 + quantity'"
                .into())
        );
        assert_eq!(
            eval("quantity * 4611686018427387904"),
            Err("integer overflow: 3 * 4611686018427387904 in 'quantity * 4611686018427387904'"
                .into())
        );
        assert_eq!(
            eval("-9223372036854775807 - quantity"),
            Err("integer overflow: -9223372036854775807 - 3 in '-9223372036854775807 - quantity'"
                .into())
        );
        assert_eq!(
            eval("-(-9223372036854775807 - 1)"),
            Err("integer overflow: -(-9223372036854775808) in '-(-9223372036854775807 - 1)'".into())
        );
        assert_eq!(
            eval("(-9223372036854775807 - 1) / -1"),
            Err("integer overflow: -9223372036854775808 / -1 in '(-9223372036854775807 - 1) / -1'"
                .into())
        );
    }

    #[test]
    fn comparisons() {
        for (source, expected) in [
            ("quantity == 3", true),
            ("quantity != 3", false),
            ("quantity == 3.0", true),
            ("quantity < 5", true),
            ("quantity <= 3", true),
            ("quantity > 2.5", true),
            ("quantity >= 4", false),
            ("2.5 < quantity", true),
            ("'a' < 'b'", true),
            ("'b' <= 'a'", false),
            ("b'a' < b'b'", true),
            ("false < true", true),
            ("tags == ['a', 'bb']", true),
            ("[1, 2] == [1.0, 2.0]", true),
            ("user == {'id': 'u1', 'address': {'city': 'Paris'}}", true),
            ("attrs != {'utm': 'mail'}", false),
            ("double('NaN') < 1.0", false),
            ("double('NaN') >= 1.0", false),
            ("double('NaN') == double('NaN')", false),
        ] {
            assert_eq!(eval(source), Ok(expected.into()), "{source}");
        }
        let record = Value::from([("n", 1.into()), ("s", "1".into())]);
        assert_eq!(eval_any("n == s", &record), Ok(false.into()), "different types are unequal");
        assert_eq!(eval_any("n != s", &record), Ok(true.into()));
        assert_eq!(
            eval_any("n < s", &record),
            Err("cannot compare int with string in 'n < s'".into())
        );
    }

    #[test]
    fn nulls() {
        assert_eq!(eval("product_id == null"), Ok(true.into()));
        assert_eq!(eval("product_id != null"), Ok(false.into()));
        assert_eq!(eval("product_id == 'p1'"), Ok(false.into()));
        assert_eq!(eval("null == null"), Ok(true.into()));
        assert_eq!(
            eval_any("product_id < 5", &click()),
            Err("product_id is null: cannot compare null < 5".into())
        );
        assert_eq!(
            eval("product_id >= 'p'"),
            Err("product_id is null: cannot compare null >= 'p'".into())
        );
        assert_eq!(eval("price * 0.92"), Err("price is null: cannot compute null * 0.92".into()));
        assert_eq!(
            eval("product_id.startsWith('p')"),
            Err("product_id is null: 'startsWith' needs a string".into())
        );
        let record = Value::from([("flag", Value::Null)]);
        assert_eq!(eval_any("!flag", &record), Err("flag is null: '!' needs a bool".into()));
        assert_eq!(
            eval_any("flag ? 1 : 2", &record),
            Err("flag is null: '?:' needs a bool condition".into())
        );
        assert_eq!(
            eval_any("size(flag)", &record),
            Err("flag is null: 'size' needs a string, bytes, list or map".into())
        );
    }

    #[test]
    fn logic_short_circuits_and_absorbs_errors() {
        assert_eq!(eval("!is_bot"), Ok(true.into()));
        assert_eq!(eval("is_bot && quantity / 0 == 1"), Ok(false.into()));
        assert_eq!(eval("quantity / 0 == 1 && is_bot"), Ok(false.into()));
        assert_eq!(eval("!is_bot || quantity / 0 == 1"), Ok(true.into()));
        assert_eq!(eval("quantity / 0 == 1 || !is_bot"), Ok(true.into()));
        assert_eq!(
            eval("!is_bot && quantity / 0 == 1"),
            Err("division by zero in 'quantity / 0'".into())
        );
        assert_eq!(
            eval("quantity / 0 == 1 || is_bot"),
            Err("division by zero in 'quantity / 0'".into())
        );
        assert_eq!(eval("product_id != null && product_id.startsWith('p')"), Ok(false.into()));
        assert_eq!(eval("true && true || false && false"), Ok(true.into()));
        let record = Value::from([("s", "x".into())]);
        assert_eq!(eval_any("s && true", &record), Err("s is a string: '&&' needs bools".into()));
        assert_eq!(eval_any("s || true", &record), Ok(true.into()));
    }

    #[test]
    fn conditionals() {
        assert_eq!(eval("is_bot ? 'bot' : 'human'"), Ok("human".into()));
        assert_eq!(eval("is_bot ? quantity / 0 : 1"), Ok(1.into()), "only one branch runs");
        assert_eq!(eval("is_bot ? 1.5 : quantity"), Ok(3.0.into()), "an int branch is widened");
        assert_eq!(eval("is_bot ? 'x' : null"), Ok(Value::Null));
    }

    #[test]
    fn functions() {
        for (source, expected) in [
            ("size('héllo')", Value::Int(5)),
            ("'héllo'.size()", 5.into()),
            ("size(b'abc')", 3.into()),
            ("tags.size()", 2.into()),
            ("size(attrs)", 1.into()),
            ("page_url.startsWith('/product')", true.into()),
            ("page_url.startsWith('/cart')", false.into()),
            ("page_url.endsWith('42')", true.into()),
            ("page_url.contains('duct')", true.into()),
            ("'ÀbC'.lowerAscii()", "Àbc".into()),
            ("'àbC'.upperAscii()", "àBC".into()),
            ("'  x y '.trim()", "x y".into()),
            ("int('42')", 42.into()),
            ("int(' -7 ')", (-7).into()),
            ("int(2.9)", 2.into()),
            ("int(-2.9)", (-2).into()),
            ("int(quantity)", 3.into()),
            ("double('1.5')", 1.5.into()),
            ("double(quantity)", 3.0.into()),
            ("double(0.5)", 0.5.into()),
            ("string(quantity)", "3".into()),
            ("string(1.5)", "1.5".into()),
            ("string(true)", "true".into()),
            ("string(b'hi')", "hi".into()),
            ("string(page_url)", "/product/42".into()),
        ] {
            assert_eq!(eval(source), Ok(expected), "{source}");
        }
        assert_eq!(eval("int('4x')"), Err("cannot convert '4x' to int in 'int('4x')'".into()));
        assert_eq!(eval("int(1e19)"), Err("cannot convert 1e19 to int in 'int(1e19)'".into()));
        assert_eq!(
            eval("double('x')"),
            Err("cannot convert 'x' to double in 'double('x')'".into())
        );
        assert_eq!(
            eval("string(b'\\xff')"),
            Err("b'\\xff' is not valid UTF-8: 'string' cannot convert it".into())
        );
        let record = Value::from([("n", 1.into())]);
        assert_eq!(
            eval_any("n.startsWith('1')", &record),
            Err("n is an int: 'startsWith' needs a string".into())
        );
        assert_eq!(
            eval_any("'1'.startsWith(n)", &record),
            Err("n is an int: 'startsWith' needs a string argument".into())
        );
    }

    #[test]
    fn macros() {
        assert_eq!(eval("tags.exists(t, t == 'bb')"), Ok(true.into()));
        assert_eq!(eval("tags.exists(t, t == 'c')"), Ok(false.into()));
        assert_eq!(eval("tags.all(t, size(t) > 0)"), Ok(true.into()));
        assert_eq!(eval("tags.all(t, size(t) > 1)"), Ok(false.into()));
        assert_eq!(eval("tags.exists_one(t, size(t) == 1)"), Ok(true.into()));
        assert_eq!(eval("(tags + ['c']).exists_one(t, size(t) == 1)"), Ok(false.into()));
        assert_eq!(eval("tags.map(t, t + '!')"), Ok(list(vec!["a!".into(), "bb!".into()])));
        assert_eq!(eval("tags.filter(t, size(t) > 1)"), Ok(list(vec!["bb".into()])));
        assert_eq!(eval("[1, 2, 3].map(x, x > 1, x * 10)"), Ok(list(vec![20.into(), 30.into()])));
        assert_eq!(
            eval("[1, 2, 3].filter(x, x > 1).map(x, x * quantity)"),
            Ok(list(vec![6.into(), 9.into()]))
        );
        assert_eq!(eval("attrs.exists(k, k == 'utm')"), Ok(true.into()));
        assert_eq!(eval("attrs.map(k, attrs[k])"), Ok(list(vec!["mail".into()])));
        assert_eq!(
            eval("[[1, 2], [3]].map(l, l.map(x, x * 2))"),
            Ok(list(vec![list(vec![2.into(), 4.into()]), list(vec![6.into()])]))
        );
        assert_eq!(eval("[1, 2].exists(x, [2, 3].exists(y, x == y))"), Ok(true.into()));
        assert_eq!(eval("[1, 2].all(x, [0, 1].exists(y, x == y + 1))"), Ok(true.into()));
        assert_eq!(eval("[].exists(x, true)"), Ok(false.into()));
        assert_eq!(eval("[].all(x, false)"), Ok(true.into()));
        // As with '||' and '&&', an element that decides the result wins over one that fails.
        assert_eq!(eval("[0, 1].exists(x, 1 / x == 1)"), Ok(true.into()));
        assert_eq!(eval("[0, 1].all(x, 1 / x > 5)"), Ok(false.into()));
        assert_eq!(eval("[0, 1].all(x, 1 / x == 1)"), Err("division by zero in '1 / x'".into()));
        assert_eq!(eval("[0, 1].map(x, 1 / x)"), Err("division by zero in '1 / x'".into()));
        let record = Value::from([("n", 1.into()), ("l", list(vec![1.into(), "a".into()]))]);
        assert_eq!(
            eval_any("n.exists(x, x)", &record),
            Err("n is an int: 'exists' needs a list or map".into())
        );
        assert_eq!(
            eval_any("l.filter(x, x)", &record),
            Err("x is an int: the condition of 'filter' must be a bool".into())
        );
    }
}
