//! Expressions in topologies: `where:` conditions, computed fields, keys.
//!
//! Topologies write expressions in [CEL](https://github.com/google/cel-spec) syntax:
//! `!is_bot`, `page_url.startsWith('/product') && product_id != null`, `price * 0.92`. The
//! `cel` crate parses them; Eddy type-checks and evaluates the parsed tree itself, because no
//! Rust CEL crate type-checks (a misspelt field or a string compared with a number must fail
//! `eddy validate`, not the thousandth record), and because evaluation runs once per record and
//! must be cheap: it works directly on the record's [`Value`] with identifiers resolved once at
//! compile time, instead of converting every record into the interpreter's own values.
//!
//! [`Expr::compile`] checks an expression against a [`Scope`]: the static [`Type`] of the
//! record value, whose top-level fields are bare identifiers, and named extras such as `_key`.
//! It reports every problem at once, each naming the part of the expression it is about and,
//! where there is one, a hint. Where the type is [`Type::Any`] (schemaless JSON) the checks
//! give way, and the same mistakes are runtime [`EvalError`]s instead.
//!
//! # What is supported
//!
//! - Literals: int, uint (as int), double, string, bytes, bool, `null`, lists `[a, b]`, maps
//!   `{'k': v}` (string keys; all-constant keys give a record type).
//! - Field selection `a.b`, indexing `list[i]` and `map['k']`, `x in list`, `'k' in map`,
//!   `has(a.b)`.
//! - `+ - * / %` on ints (checked: overflow and division by zero are errors) and floats (an int
//!   and a float give a float); `+` also joins strings, bytes and lists; unary `-`.
//! - `== !=` between any values (different types are unequal; `1 == 1.0`), `< <= > >=` on
//!   numbers, strings, bytes and bools.
//! - `&& || !` with CEL's short-circuit: `false && x` is false even when `x` fails, on either
//!   side; `c ? a : b`.
//! - Functions: `size` (`size(x)` and `x.size()`: string characters, bytes, list, map),
//!   `startsWith endsWith contains lowerAscii upperAscii trim` on strings, and the conversions
//!   `int double string`.
//! - Macros over lists (and over a map's keys): `all exists exists_one map filter`.
//!
//! Not supported: struct literals (`Foo{…}`), optional syntax (`a.?b`), `matches` (regular
//! expressions), timestamps and durations as types (a timestamp is an int of milliseconds, so
//! `event_time - 1000` works), `type()`, `dyn()`, uints as a type.
//!
//! # Nulls and missing fields
//!
//! A field absent from the record reads as null, so JSON that omits a field and Avro that sets
//! it to null behave alike; selecting or indexing into null gives null too, so a left join's
//! missing row reads as null fields. `has(a.b)` is true when `a` has a non-null `b`.
//! `x == null` and `x != null` always type-check, and a nullable field may be used wherever its
//! type may: `x < 5` for an `int?` checks, and is an [`EvalError`] naming `x` when it is null.
//! Only `==`, `!=`, `has()`, field selection and indexing accept null at run time.

mod check;
mod eval;
mod node;

use std::borrow::Cow;
use std::fmt;

use crate::types::Type;
use crate::value::Value;
use eval::Env;
use node::{Node, described};

/// What an expression can name: the top-level fields of the record value as bare identifiers,
/// plus named extras (e.g. `_key`, `_timestamp`), which shadow fields of the same name.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    /// The type of the record value.
    pub value: Type,
    /// Further names and their types; [`Expr::eval`] takes their values in this order.
    pub extras: Vec<(String, Type)>,
}

impl Scope {
    /// The fields of a record of type `value`, and no extras.
    pub fn new(value: Type) -> Self {
        Scope { value, extras: Vec::new() }
    }

    /// This scope with the extra `name` of type `ty` added after the others.
    pub fn with(mut self, name: &str, ty: Type) -> Self {
        self.extras.push((name.to_owned(), ty));
        self
    }
}

/// A parsed and type-checked expression, ready to evaluate against records of its scope.
#[derive(Clone, Debug)]
pub struct Expr {
    source: String,
    root: Node,
    output: Type,
    fields: Vec<String>,
}

impl Expr {
    /// Parses and type-checks `source` in `scope`; returns every problem found, not only the
    /// first.
    pub fn compile(source: &str, scope: &Scope) -> Result<Expr, Vec<ExprError>> {
        let ast = cel::parser::Parser::new().parse(source).map_err(|e| syntax_errors(source, e))?;
        let checked = check::check(&ast, scope)?;
        Ok(Expr {
            source: source.to_owned(),
            root: checked.node,
            output: checked.ty,
            fields: checked.fields,
        })
    }

    /// [`compile`](Self::compile), and also an error unless the expression gives a bool (or
    /// may: a nullable bool, or `any`): for `where:` conditions.
    pub fn compile_bool(source: &str, scope: &Scope) -> Result<Expr, Vec<ExprError>> {
        let expr = Expr::compile(source, scope)?;
        match expr.output.non_null() {
            Type::Bool | Type::Any => Ok(expr),
            other => Err(vec![ExprError {
                message: format!("'{}' is {other}, not a bool condition", expr.root),
                hint: Some(
                    "test the value explicitly, e.g. x != null, x == '' or size(x) > 0".to_owned(),
                ),
            }]),
        }
    }

    /// The type of the values it gives.
    pub fn output_type(&self) -> &Type {
        &self.output
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The top-level fields of the record value it reads, sorted: what a decoder must provide.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Its value for the record `value` (a [`Value::Map`]) and the extras' values, in the
    /// order of the scope's extras.
    pub fn eval(&self, value: &Value, extras: &[&Value]) -> Result<Value, EvalError> {
        self.root.eval(Env::new(value, extras)).map(Cow::into_owned)
    }

    /// Its value as a bool; any other value, null included, is an error.
    pub fn eval_bool(&self, value: &Value, extras: &[&Value]) -> Result<bool, EvalError> {
        match self.root.eval(Env::new(value, extras))?.as_ref() {
            Value::Bool(b) => Ok(*b),
            other => Err(EvalError {
                message: format!("{} is {}, not a bool", self.root, described(other)),
            }),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A problem found while compiling an expression: what is wrong, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    /// What is wrong, naming the part of the expression (`cannot compare string with int in
    /// 'page_url > 3'`).
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ExprError {}

/// A failure evaluating an expression against one record, saying what failed and why
/// (`product_id is null: cannot compare null < 5`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// What failed.
    pub message: String,
}

/// The cel parser's errors, with their positions and what follows them.
fn syntax_errors(source: &str, errors: cel::ParseErrors) -> Vec<ExprError> {
    errors
        .errors
        .into_iter()
        .map(|error| {
            let message = error.msg.strip_prefix("Syntax error: ").unwrap_or(&error.msg);
            let (line, column) = error.pos;
            let at = if line <= 0 {
                String::new()
            } else if source.contains('\n') {
                format!(" at line {line}, column {column}")
            } else {
                format!(" at column {column}")
            };
            let hint = if message.contains("has() macro") {
                Some("write has(a.b); for a top-level field, write x != null".to_owned())
            } else {
                locate(source, line, column)
            };
            ExprError { message: format!("syntax error{at}: {message}"), hint }
        })
        .collect()
}

/// Where in `source` a 1-based line and column are, in words.
fn locate(source: &str, line: isize, column: isize) -> Option<String> {
    const SHOWN: usize = 30;
    let text = source.lines().nth(usize::try_from(line - 1).ok()?).unwrap_or("");
    let column = usize::try_from(column - 1).ok()?;
    let before: String = text.chars().take(column).collect();
    let rest: String = text.chars().skip(column).take(SHOWN).collect();
    let (before, rest) = (before.trim(), rest.trim_end());
    Some(match (before.is_empty(), rest.is_empty()) {
        (_, true) => "the expression ends before it is complete".to_owned(),
        (true, false) if source.contains('\n') => {
            format!("the problem is at the start of line {line}: '{rest}'")
        }
        (true, false) => format!("the problem is at the start: '{rest}'"),
        (false, false) => format!("the problem starts at '{rest}', after '{before}'"),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A click record's scope: nullable and nested fields, a list, a map, and two extras.
    pub(super) fn clicks() -> Scope {
        let address = Type::record([("city", Type::String.nullable())]);
        Scope::new(Type::record([
            ("page_url", Type::String),
            ("product_id", Type::String.nullable()),
            ("is_bot", Type::Bool),
            ("price", Type::Float.nullable()),
            ("quantity", Type::Int),
            ("event_time", Type::Int),
            ("event_type", Type::String),
            ("tags", Type::List(Box::new(Type::String))),
            ("attrs", Type::Map(Box::new(Type::String))),
            ("user", Type::record([("id", Type::String), ("address", address.nullable())])),
        ]))
        .with("_key", Type::String)
        .with("_timestamp", Type::Int)
    }

    /// A record of [`clicks`].
    pub(super) fn click() -> Value {
        Value::from([
            ("page_url", "/product/42".into()),
            ("product_id", Value::Null),
            ("is_bot", false.into()),
            ("price", Value::Null),
            ("quantity", 3.into()),
            ("event_time", 1_700_000_000_000_i64.into()),
            ("event_type", "checkout".into()),
            ("tags", Value::Array(vec!["a".into(), "bb".into()])),
            ("attrs", Value::from([("utm", "mail".into())])),
            (
                "user",
                Value::from([
                    ("id", "u1".into()),
                    ("address", Value::from([("city", "Paris".into())])),
                ]),
            ),
        ])
    }

    /// The messages of compiling `source` in [`clicks`], which must fail.
    pub(super) fn errors(source: &str) -> Vec<String> {
        match Expr::compile(source, &clicks()) {
            Ok(expr) => panic!("{source} compiled, to {}", expr.output_type()),
            Err(errors) => errors.into_iter().map(|error| error.message).collect(),
        }
    }

    /// The one error of compiling `source` in [`clicks`].
    pub(super) fn error(source: &str) -> ExprError {
        let mut errors = Expr::compile(source, &clicks()).err().unwrap_or_default();
        assert_eq!(errors.len(), 1, "{source}: {errors:?}");
        errors.remove(0)
    }

    /// The output type of `source` in [`clicks`].
    pub(super) fn type_of(source: &str) -> Type {
        match Expr::compile(source, &clicks()) {
            Ok(expr) => expr.output_type().clone(),
            Err(errors) => panic!("{source}: {errors:?}"),
        }
    }

    /// `source` compiled in [`clicks`] and evaluated on [`click`] with `_key` 'k1' and
    /// `_timestamp` 5; the error's message if it fails.
    pub(super) fn eval(source: &str) -> Result<Value, String> {
        let expr = Expr::compile(source, &clicks()).unwrap_or_else(|e| panic!("{source}: {e:?}"));
        expr.eval(&click(), &[&"k1".into(), &5.into()]).map_err(|error| error.message)
    }

    /// `source` compiled in a schemaless scope and evaluated on `record`.
    pub(super) fn eval_any(source: &str, record: &Value) -> Result<Value, String> {
        let expr = Expr::compile(source, &Scope::new(Type::Any))
            .unwrap_or_else(|e| panic!("{source}: {e:?}"));
        expr.eval(record, &[]).map_err(|error| error.message)
    }

    #[test]
    fn a_condition_compiles_and_evaluates() {
        let expr =
            Expr::compile_bool("page_url.startsWith('/product') && product_id != null", &clicks())
                .unwrap();
        assert_eq!(expr.output_type(), &Type::Bool);
        assert_eq!(expr.source(), "page_url.startsWith('/product') && product_id != null");
        assert_eq!(expr.fields(), ["page_url", "product_id"]);
        assert_eq!(expr.eval_bool(&click(), &[]), Ok(false));
        let mut record = click();
        if let Value::Map(fields) = &mut record {
            fields.insert("product_id".into(), "p42".into());
        }
        assert_eq!(expr.eval_bool(&record, &[]), Ok(true));
    }

    #[test]
    fn fields_lists_the_top_level_fields_read_once_each() {
        let expr = Expr::compile(
            "user.address.city == 'Paris' && has(user.id) && _key != '' && tags.exists(t, t == page_url) && page_url != ''",
            &clicks(),
        )
        .unwrap();
        assert_eq!(expr.fields(), ["page_url", "tags", "user"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        assert_eq!(
            errors("pag_url == '/' && !quantity && is_bot > 1"),
            [
                "unknown field 'pag_url' (did you mean 'page_url'?)",
                "'!' needs a bool, got int in '!quantity'",
                "cannot compare bool with int in 'is_bot > 1'",
            ]
        );
    }

    #[test]
    fn an_error_displays_its_message_then_its_hint() {
        let error = error("pag_url");
        assert_eq!(
            error.to_string(),
            "unknown field 'pag_url' (did you mean 'page_url'?)\n    hint: in scope: attrs, \
             event_time, event_type, is_bot, page_url, price, product_id, quantity, tags, user, \
             _key, _timestamp"
        );
    }

    #[test]
    fn a_condition_must_be_a_bool() {
        let errors = Expr::compile_bool("page_url", &clicks()).err().unwrap();
        assert_eq!(errors[0].message, "'page_url' is string, not a bool condition");
        assert!(Expr::compile_bool("user.address.city == null", &clicks()).is_ok());
        assert!(Expr::compile_bool("x", &Scope::new(Type::Any)).is_ok());
    }

    #[test]
    fn eval_bool_refuses_other_values() {
        let expr = Expr::compile("product_id", &clicks()).unwrap();
        assert_eq!(
            expr.eval_bool(&click(), &[]).unwrap_err().message,
            "product_id is null, not a bool"
        );
        let expr = Expr::compile("page_url", &clicks()).unwrap();
        assert_eq!(
            expr.eval_bool(&click(), &[]).unwrap_err().to_string(),
            "page_url is a string, not a bool"
        );
    }

    #[test]
    fn a_missing_extra_is_an_error_not_a_panic() {
        let expr = Expr::compile("_timestamp > 0", &clicks()).unwrap();
        assert_eq!(
            expr.eval(&click(), &[]).unwrap_err().message,
            "no value was given for '_timestamp'"
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let errors = Expr::compile("page_url == ", &clicks()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.starts_with("syntax error at column 13: "), "{errors:?}");
        assert_eq!(errors[0].hint.as_deref(), Some("the expression ends before it is complete"));
        let errors = Expr::compile("page_url = '/'", &clicks()).unwrap_err();
        assert!(errors[0].message.starts_with("syntax error at column 10: "), "{errors:?}");
        assert_eq!(
            errors[0].hint.as_deref(),
            Some("the problem starts at '= '/'', after 'page_url'")
        );
        let errors = Expr::compile("has(page_url)", &clicks()).unwrap_err();
        assert_eq!(errors[0].message, "syntax error at column 5: invalid argument to has() macro");
        let errors = Expr::compile("size(\n  tags +\n)", &clicks()).unwrap_err();
        assert!(errors[0].message.starts_with("syntax error at line 3, column 1: "));
        assert_eq!(errors[0].hint.as_deref(), Some("the problem is at the start of line 3: ')'"));
    }
}
