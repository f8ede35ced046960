//! Type checking: turns the cel parser's AST into a [`Node`] tree and its [`Type`], against
//! the static types of the scope, and collects every problem rather than stopping at the first.
//!
//! A part that fails to check is given type [`Type::Any`], which every check accepts, so one
//! mistake is reported once and not again by each operator around it.

use std::collections::{BTreeMap, BTreeSet};

use cel::IdedExpr;
use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr as Ast, IdedEntryExpr, LiteralValue, SelectExpr,
    operators as op,
};

use super::node::{BinaryOp, Func, MacroKind, Node, Style};
use super::{ExprError, Scope};
use crate::hint;
use crate::types::Type;
use crate::value::Value;

/// A checked expression.
pub(super) struct Checked {
    /// The compiled tree.
    pub(super) node: Node,
    /// The type of its values.
    pub(super) ty: Type,
    /// The top-level fields of the record it reads, sorted.
    pub(super) fields: Vec<String>,
}

/// Checks `ast` in `scope`: the compiled expression, or every problem found.
pub(super) fn check(ast: &IdedExpr, scope: &Scope) -> Result<Checked, Vec<ExprError>> {
    let mut checker =
        Checker { scope, locals: Vec::new(), errors: Vec::new(), fields: BTreeSet::new() };
    let (node, ty) = checker.expr(ast);
    if checker.errors.is_empty() {
        Ok(Checked { node, ty, fields: checker.fields.into_iter().collect() })
    } else {
        Err(checker.errors)
    }
}

/// The macros as users write them, for "did you mean" and for calls the parser did not expand.
const MACROS: [&str; 6] = ["has", "all", "exists", "exists_one", "map", "filter"];

const BOOL_HINT: &str = "test other values explicitly, e.g. x != null, x == '' or size(x) > 0";

const CONVERT_HINT: &str =
    "convert one side first: string(x) makes text, int(x) or double(x) makes a number";

struct Checker<'s> {
    scope: &'s Scope,
    /// The variables of the macros being checked, innermost last.
    locals: Vec<(String, Type)>,
    errors: Vec<ExprError>,
    fields: BTreeSet<String>,
}

type Typed = (Node, Type);

impl Checker<'_> {
    fn error(&mut self, message: String, hint: Option<String>) {
        self.errors.push(ExprError { message, hint });
    }

    fn expr(&mut self, expr: &IdedExpr) -> Typed {
        match &expr.expr {
            Ast::Literal(literal) => self.literal(literal),
            Ast::Ident(name) => self.ident(name),
            Ast::Select(select) => self.select(select),
            Ast::Call(call) => self.call(call),
            Ast::List(list) => self.list(&list.elements),
            Ast::Map(map) => self.map(&map.entries),
            Ast::Comprehension(comprehension) => self.comprehension(comprehension),
            Ast::Struct(literal) => {
                let text = format!("{}{{…}}", literal.type_name);
                self.error(
                    format!("struct literals are not supported: '{text}'"),
                    Some("build a map instead: {'field': value}".to_owned()),
                );
                (Node::Invalid(text), Type::Any)
            }
            Ast::Unspecified => {
                self.error("unsupported expression".to_owned(), None);
                (Node::Invalid("…".to_owned()), Type::Any)
            }
        }
    }

    fn literal(&mut self, literal: &LiteralValue) -> Typed {
        let (value, ty) = match literal {
            LiteralValue::Boolean(b) => (Value::Bool(*b.inner()), Type::Bool),
            LiteralValue::Int(i) => (Value::Int(*i.inner()), Type::Int),
            LiteralValue::UInt(u) => match i64::try_from(*u.inner()) {
                Ok(i) => (Value::Int(i), Type::Int),
                Err(_) => {
                    self.error(
                        format!("the literal {}u is too large for an int", u.inner()),
                        Some(format!("ints are 64-bit and signed: at most {}", i64::MAX)),
                    );
                    (Value::Int(i64::MAX), Type::Int)
                }
            },
            LiteralValue::Double(x) => (Value::Float(*x.inner()), Type::Float),
            LiteralValue::String(s) => (Value::String(s.inner().to_owned()), Type::String),
            LiteralValue::Bytes(b) => (Value::Bytes(b.inner().to_vec()), Type::Bytes),
            LiteralValue::Null => (Value::Null, Type::Null),
        };
        (Node::Literal(value), ty)
    }

    fn ident(&mut self, name: &str) -> Typed {
        if let Some(position) = self.locals.iter().rposition(|(local, _)| local == name) {
            let depth = self.locals.len() - 1 - position;
            let ty = self.locals[position].1.clone();
            return (Node::Local { depth, name: name.to_owned() }, ty);
        }
        if let Some(index) = self.scope.extras.iter().position(|(extra, _)| extra == name) {
            let ty = self.scope.extras[index].1.clone();
            return (Node::Extra { index, name: name.to_owned() }, ty);
        }
        match self.scope.value.field(name) {
            Some(ty) => {
                self.fields.insert(name.to_owned());
                (Node::Field(name.to_owned()), ty)
            }
            None => {
                let mut names = self.scope.value.field_names();
                names.extend(self.scope.extras.iter().map(|(extra, _)| extra.as_str()));
                names.extend(self.locals.iter().map(|(local, _)| local.as_str()));
                let message =
                    format!("unknown field '{name}'{}", hint::suggestion(name, names.clone()));
                let hint = match self.scope.value.non_null() {
                    Type::Record(_) => names_hint("in scope", &names),
                    other => Some(format!(
                        "the record is {other}, not a record of fields{}",
                        names_hint("; in scope", &names).unwrap_or_default()
                    )),
                };
                self.error(message, hint);
                (Node::Field(name.to_owned()), Type::Any)
            }
        }
    }

    fn select(&mut self, select: &SelectExpr) -> Typed {
        let (operand, operand_ty) = self.expr(&select.operand);
        let field = select.field.clone();
        if select.test {
            let node = Node::Has { operand: Box::new(operand), field };
            match operand_ty.non_null() {
                Type::Any | Type::Map(_) => {}
                Type::Record(fields) => {
                    if !fields.contains_key(&select.field) {
                        self.unknown_nested_field(&select.field, &node, fields);
                    }
                }
                other => self.error(
                    format!("has() needs a record or map, got {other} in '{node}'"),
                    Some("only records and maps have fields".to_owned()),
                ),
            }
            return (node, Type::Bool);
        }
        let node = Node::Select { operand: Box::new(operand), field };
        let ty = match operand_ty.non_null() {
            Type::Any => Type::Any,
            Type::Record(fields) => match fields.get(&select.field) {
                Some(ty) if operand_ty.is_nullable() => ty.clone().nullable(),
                Some(ty) => ty.clone(),
                None => {
                    self.unknown_nested_field(&select.field, &node, fields);
                    Type::Any
                }
            },
            Type::Map(value) => value.as_ref().clone().nullable(),
            other => {
                self.error(
                    format!("cannot select field '{}' of {other} in '{node}'", select.field),
                    Some("only records and maps have fields".to_owned()),
                );
                Type::Any
            }
        };
        (node, ty)
    }

    fn unknown_nested_field(&mut self, name: &str, node: &Node, fields: &BTreeMap<String, Type>) {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        self.error(
            format!("unknown field '{name}' in '{node}'{}", hint::suggestion(name, names.clone())),
            names_hint("the record has", &names),
        );
    }

    fn call(&mut self, call: &CallExpr) -> Typed {
        let name = call.func_name.as_str();
        if let (Some(op), None, [left, right]) =
            (BinaryOp::of_call(name), &call.target, call.args.as_slice())
        {
            return self.binary(op, left, right);
        }
        match (name, call.target.is_some(), call.args.as_slice()) {
            (op::LOGICAL_AND, false, [left, right]) => self.logic(true, left, right),
            (op::LOGICAL_OR, false, [left, right]) => self.logic(false, left, right),
            (op::LOGICAL_NOT, false, [operand]) => self.not(operand),
            (op::NEGATE, false, [operand]) => self.negate(operand),
            (op::CONDITIONAL, false, [cond, then, otherwise]) => {
                self.conditional(cond, then, otherwise)
            }
            (op::INDEX, false, [operand, index]) => self.index(operand, index),
            (op::OPT_INDEX | op::OPT_SELECT, ..) => {
                self.error("optional syntax ('?.', '[?') is not supported".to_owned(), None);
                (Node::Invalid("…".to_owned()), Type::Any)
            }
            _ if name.starts_with(['_', '@', '!', '-']) => {
                self.error(format!("unsupported operator '{name}'"), None);
                (Node::Invalid("…".to_owned()), Type::Any)
            }
            _ => self.function(call),
        }
    }

    fn logic(&mut self, and: bool, left: &IdedExpr, right: &IdedExpr) -> Typed {
        let (left, left_ty) = self.expr(left);
        let (right, right_ty) = self.expr(right);
        let (node, symbol) = if and {
            (Node::And(Box::new(left), Box::new(right)), "&&")
        } else {
            (Node::Or(Box::new(left), Box::new(right)), "||")
        };
        if !is_bool(&left_ty) || !is_bool(&right_ty) {
            self.error(
                format!(
                    "'{symbol}' needs bools, got {} and {} in '{node}'",
                    left_ty.non_null(),
                    right_ty.non_null()
                ),
                Some(BOOL_HINT.to_owned()),
            );
        }
        (node, Type::Bool)
    }

    fn not(&mut self, operand: &IdedExpr) -> Typed {
        let (operand, ty) = self.expr(operand);
        let node = Node::Not(Box::new(operand));
        if !is_bool(&ty) {
            self.error(
                format!("'!' needs a bool, got {} in '{node}'", ty.non_null()),
                Some(BOOL_HINT.to_owned()),
            );
        }
        (node, Type::Bool)
    }

    fn negate(&mut self, operand: &IdedExpr) -> Typed {
        let (operand, ty) = self.expr(operand);
        let node = Node::Neg(Box::new(operand));
        match ty.non_null() {
            ty @ (Type::Int | Type::Float | Type::Any) => {
                let ty = ty.clone();
                (node, ty)
            }
            other => {
                self.error(format!("'-' needs a number, got {other} in '{node}'"), None);
                (node, Type::Any)
            }
        }
    }

    fn conditional(&mut self, cond: &IdedExpr, then: &IdedExpr, otherwise: &IdedExpr) -> Typed {
        let (cond, cond_ty) = self.expr(cond);
        let (then, then_ty) = self.expr(then);
        let (otherwise, otherwise_ty) = self.expr(otherwise);
        let joined = join(&then_ty, &otherwise_ty);
        let (then, otherwise, ty) = match &joined {
            Some(ty) => {
                (widen(then, &then_ty, ty), widen(otherwise, &otherwise_ty, ty), ty.clone())
            }
            None => (then, otherwise, Type::Any),
        };
        let node = Node::Cond {
            cond: Box::new(cond),
            then: Box::new(then),
            otherwise: Box::new(otherwise),
        };
        if !is_bool(&cond_ty) {
            self.error(
                format!("'?:' needs a bool condition, got {} in '{node}'", cond_ty.non_null()),
                Some(BOOL_HINT.to_owned()),
            );
        }
        if joined.is_none() {
            self.error(
                format!(
                    "the branches of '?:' have different types, {then_ty} and {otherwise_ty}, \
                     in '{node}'"
                ),
                Some("both branches must have the same type, or be null".to_owned()),
            );
        }
        (node, ty)
    }

    fn index(&mut self, operand: &IdedExpr, index: &IdedExpr) -> Typed {
        let (operand, operand_ty) = self.expr(operand);
        let (index, index_ty) = self.expr(index);
        let key = match &index {
            Node::Literal(Value::String(key)) => Some(key.clone()),
            _ => None,
        };
        let node = Node::Index { operand: Box::new(operand), index: Box::new(index) };
        let nullable = |ty: &Type| {
            if operand_ty.is_nullable() { ty.clone().nullable() } else { ty.clone() }
        };
        let ty = match (operand_ty.non_null(), index_ty.non_null()) {
            (Type::Any, Type::Int | Type::String | Type::Any) => Some(Type::Any),
            (Type::List(item), Type::Int | Type::Any) => Some(nullable(item)),
            (Type::Map(value), Type::String | Type::Any) => Some(value.as_ref().clone().nullable()),
            (Type::Record(fields), Type::String) if key.is_some() => {
                let key = key.unwrap_or_default();
                match fields.get(&key) {
                    Some(ty) => Some(nullable(ty)),
                    None => {
                        self.unknown_nested_field(&key, &node, fields);
                        Some(Type::Any)
                    }
                }
            }
            (Type::Record(_), Type::String | Type::Any) => Some(Type::Any),
            _ => None,
        };
        match ty {
            Some(ty) => (node, ty),
            None => {
                self.error(
                    format!(
                        "cannot index {} with {} in '{node}'",
                        operand_ty.non_null(),
                        index_ty.non_null()
                    ),
                    Some(
                        "index a list with an int (tags[0]) and a map with a string (m['k'])"
                            .to_owned(),
                    ),
                );
                (node, Type::Any)
            }
        }
    }

    fn binary(&mut self, op: BinaryOp, left: &IdedExpr, right: &IdedExpr) -> Typed {
        let (left, left_ty) = self.expr(left);
        let (right, right_ty) = self.expr(right);
        let node = Node::Binary { op, left: Box::new(left), right: Box::new(right) };
        let (l, r) = (left_ty.non_null(), right_ty.non_null());
        match op {
            BinaryOp::Eq | BinaryOp::Ne => {
                if !equatable(l, r) {
                    self.error(
                        format!("cannot compare {l} with {r} in '{node}'"),
                        Some(format!("values of different types are never equal; {CONVERT_HINT}")),
                    );
                }
                (node, Type::Bool)
            }
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
                if !orderable(l, r) {
                    let hint = if matches!(l, Type::Null) || matches!(r, Type::Null) {
                        "only '==' and '!=' compare with null".to_owned()
                    } else {
                        format!(
                            "'{}' compares two numbers, two strings, two bytes or two bools; \
                             {CONVERT_HINT}",
                            op.symbol()
                        )
                    };
                    self.error(format!("cannot compare {l} with {r} in '{node}'"), Some(hint));
                }
                (node, Type::Bool)
            }
            BinaryOp::In => {
                match r {
                    Type::Any => {}
                    Type::List(item) => {
                        if !equatable(l, item.non_null()) {
                            self.error(
                                format!("cannot look for {l} in {r} in '{node}'"),
                                Some(format!(
                                    "values of different types are never equal; {CONVERT_HINT}"
                                )),
                            );
                        }
                    }
                    Type::Map(_) | Type::Record(_) => {
                        if !matches!(l, Type::String | Type::Any) {
                            self.error(
                                format!("map keys are strings, got {l} in '{node}'"),
                                Some("look for a string key: 'k' in m".to_owned()),
                            );
                        }
                    }
                    other => {
                        let hint = if matches!(other, Type::String) {
                            "for a substring, write s.contains(part)"
                        } else {
                            "write x in [a, b] or key in map"
                        };
                        self.error(
                            format!(
                                "'in' needs a list or map on the right, got {other} in '{node}'"
                            ),
                            Some(hint.to_owned()),
                        );
                    }
                }
                (node, Type::Bool)
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => {
                match arithmetic(op, l, r) {
                    Some(ty) => (node, ty),
                    None => {
                        let needs = match op {
                            BinaryOp::Add => "two numbers or two strings",
                            BinaryOp::Rem => "two ints",
                            _ => "two numbers",
                        };
                        let text = matches!(l, Type::String) || matches!(r, Type::String);
                        let hint = match op {
                            BinaryOp::Rem
                                if matches!(l, Type::Float) || matches!(r, Type::Float) =>
                            {
                                Some("convert with int(x) first".to_owned())
                            }
                            _ if matches!(l, Type::Null) || matches!(r, Type::Null) => Some(
                                "null is not a number; test for it first: x != null && …"
                                    .to_owned(),
                            ),
                            _ if text => Some(CONVERT_HINT.to_owned()),
                            BinaryOp::Add => Some(
                                "'+' adds numbers and joins two strings, two bytes or two lists"
                                    .to_owned(),
                            ),
                            _ => None,
                        };
                        self.error(
                            format!("'{}' needs {needs}, got {l} and {r} in '{node}'", op.symbol()),
                            hint,
                        );
                        (node, Type::Any)
                    }
                }
            }
        }
    }

    fn function(&mut self, call: &CallExpr) -> Typed {
        let name = call.func_name.as_str();
        let method = call.target.is_some();
        let mut operands: Vec<Typed> = Vec::new();
        let reported = self.errors.len();
        if let Some(target) = &call.target {
            operands.push(self.expr(target));
        }
        operands.extend(call.args.iter().map(|arg| self.expr(arg)));
        let (args, types): (Vec<Node>, Vec<Type>) = operands.into_iter().unzip();
        let Some(func) = Func::named(name) else {
            if MACROS.contains(&name) || name == "existsOne" {
                // A macro's first argument names its variable: not a field to report.
                self.errors.truncate(reported);
            }
            return self.unknown_function(name, method, args);
        };
        let node = Node::Call { func, args, method };
        let usage = || Some(format!("usage: {}", func.usage()));
        match (func.style(), method) {
            (Style::Method, false) => {
                self.error(format!("'{name}' is a method: write x.{name}(…) in '{node}'"), usage());
                return (node, Type::Any);
            }
            (Style::Global, true) => {
                self.error(format!("'{name}' is a function: write {name}(x) in '{node}'"), usage());
                return (node, Type::Any);
            }
            _ => {}
        }
        if types.len() != func.arity() {
            let receiver = usize::from(method);
            let expected = func.arity() - receiver;
            let plural = if expected == 1 { "" } else { "s" };
            self.error(
                format!(
                    "'{name}' takes {expected} argument{plural}, got {} in '{node}'",
                    types.len() - receiver
                ),
                usage(),
            );
            return (node, Type::Any);
        }
        let first = types.first().map_or(&Type::Any, Type::non_null);
        let (accepted, result) = match func {
            Func::Size => (
                matches!(
                    first,
                    Type::String
                        | Type::Bytes
                        | Type::List(_)
                        | Type::Map(_)
                        | Type::Record(_)
                        | Type::Any
                ),
                Type::Int,
            ),
            Func::StartsWith | Func::EndsWith | Func::Contains => {
                if let Some(arg) = types.get(1).map(Type::non_null)
                    && !matches!(arg, Type::String | Type::Any)
                {
                    self.error(
                        format!("'{name}' needs a string argument, got {arg} in '{node}'"),
                        usage(),
                    );
                }
                (matches!(first, Type::String | Type::Any), Type::Bool)
            }
            Func::LowerAscii | Func::UpperAscii | Func::Trim => {
                (matches!(first, Type::String | Type::Any), Type::String)
            }
            Func::Int => {
                (matches!(first, Type::Int | Type::Float | Type::String | Type::Any), Type::Int)
            }
            Func::Double => {
                (matches!(first, Type::Int | Type::Float | Type::String | Type::Any), Type::Float)
            }
            Func::String => (
                matches!(
                    first,
                    Type::Int | Type::Float | Type::String | Type::Bool | Type::Bytes | Type::Any
                ),
                Type::String,
            ),
        };
        if !accepted {
            let (message, hint) = match func.style() {
                Style::Method => (
                    format!("'{name}' needs a string receiver, got {first} in '{node}'"),
                    Some(format!("convert first: string(x).{name}(…)")),
                ),
                Style::Global if func != Func::Size => {
                    (format!("'{name}' cannot convert {first} in '{node}'"), usage())
                }
                _ => (
                    format!("'{name}' needs a string, bytes, list or map, got {first} in '{node}'"),
                    None,
                ),
            };
            self.error(message, hint);
        }
        (node, result)
    }

    fn unknown_function(&mut self, name: &str, method: bool, args: Vec<Node>) -> Typed {
        let text = match args.split_first() {
            Some((receiver, rest)) if method => {
                let rest: Vec<String> = rest.iter().map(Node::to_string).collect();
                format!("{}.{name}({})", receiver.operand_text(), rest.join(", "))
            }
            _ => {
                let args: Vec<String> = args.iter().map(Node::to_string).collect();
                format!("{name}({})", args.join(", "))
            }
        };
        let (message, hint) = match name {
            "matches" => (
                format!("'matches' (regular expressions) is not supported yet, in '{text}'"),
                "use startsWith, endsWith or contains".to_owned(),
            ),
            "has" => (
                format!("has() takes one field selection, in '{text}'"),
                "write has(a.b); for a top-level field, write x != null".to_owned(),
            ),
            "all" | "exists" | "exists_one" | "existsOne" | "filter" => (
                format!("'{name}' takes a variable and a condition, in '{text}'"),
                format!("write list.{name}(x, x > 0)"),
            ),
            "map" => (
                format!("'map' takes a variable and an expression, in '{text}'"),
                "write list.map(x, x * 2), or list.map(x, x > 0, x * 2) to keep some".to_owned(),
            ),
            _ => {
                let names = Func::ALL.iter().map(|func| func.name()).chain(MACROS);
                (
                    format!("unknown function '{name}'{}", hint::suggestion(name, names)),
                    format!(
                        "the functions are {}; the macros are {}",
                        Func::ALL.map(Func::name).join(", "),
                        MACROS.join(", ")
                    ),
                )
            }
        };
        self.error(message, Some(hint));
        (Node::Invalid(text), Type::Any)
    }

    fn list(&mut self, elements: &[IdedExpr]) -> Typed {
        let typed: Vec<Typed> = elements.iter().map(|element| self.expr(element)).collect();
        let item = join_all(typed.iter().map(|(_, ty)| ty));
        let items = typed.into_iter().map(|(node, ty)| widen(node, &ty, &item)).collect();
        (fold_list(items), Type::List(Box::new(item)))
    }

    fn map(&mut self, entries: &[IdedEntryExpr]) -> Typed {
        let mut typed: Vec<(Typed, Typed)> = Vec::new();
        for entry in entries {
            match &entry.expr {
                EntryExpr::MapEntry(entry) => {
                    let key = self.expr(&entry.key);
                    let value = self.expr(&entry.value);
                    typed.push((key, value));
                }
                EntryExpr::StructField(field) => {
                    self.error(format!("unexpected field '{}' in a map", field.field), None);
                }
            }
        }
        let printed = Node::Map(
            typed.iter().map(|((key, _), (value, _))| (key.clone(), value.clone())).collect(),
        );
        let mut literal_keys: BTreeMap<String, Type> = BTreeMap::new();
        let mut all_literal = true;
        for ((key, key_ty), (_, value_ty)) in &typed {
            match key {
                Node::Literal(Value::String(name)) => {
                    if literal_keys.insert(name.clone(), value_ty.clone()).is_some() {
                        self.error(format!("duplicate key '{name}' in '{printed}'"), None);
                    }
                }
                _ => {
                    all_literal = false;
                    if !matches!(key_ty.non_null(), Type::String | Type::Any) {
                        self.error(
                            format!("map keys must be strings, got {key_ty} in '{printed}'"),
                            Some("records and maps have string keys: {'k': v}".to_owned()),
                        );
                    }
                }
            }
        }
        if all_literal {
            let entries = typed.into_iter().map(|((key, _), (value, _))| (key, value)).collect();
            return (fold_map(entries), Type::Record(literal_keys));
        }
        let value_ty = join_all(typed.iter().map(|(_, (_, ty))| ty));
        let entries = typed
            .into_iter()
            .map(|((key, _), (value, ty))| (key, widen(value, &ty, &value_ty)))
            .collect();
        (fold_map(entries), Type::Map(Box::new(value_ty)))
    }

    fn comprehension(&mut self, comprehension: &ComprehensionExpr) -> Typed {
        let Some((kind, filter, body)) = macro_shape(comprehension) else {
            self.error(
                "unsupported comprehension".to_owned(),
                Some(format!("the supported macros are {}", MACROS.join(", "))),
            );
            return (Node::Invalid("…".to_owned()), Type::Any);
        };
        let (range, range_ty) = self.expr(&comprehension.iter_range);
        let item = match range_ty.non_null() {
            Type::List(item) => Some(item.as_ref().clone()),
            Type::Map(_) | Type::Record(_) => Some(Type::String),
            Type::Any => Some(Type::Any),
            _ => None,
        };
        self.locals.push((comprehension.iter_var.clone(), item.clone().unwrap_or(Type::Any)));
        let filter = filter.map(|filter| self.expr(filter));
        let (body, body_ty) = self.expr(body);
        self.locals.pop();
        let filter_ty = filter.as_ref().map(|(_, ty)| ty.clone());
        let node = Node::Macro {
            kind,
            range: Box::new(range),
            var: comprehension.iter_var.clone(),
            filter: filter.map(|(node, _)| Box::new(node)),
            body: Box::new(body),
        };
        if item.is_none() {
            self.error(
                format!(
                    "'{}' needs a list or map, got {} in '{node}'",
                    kind.name(),
                    range_ty.non_null()
                ),
                None,
            );
        }
        let condition = match kind {
            MacroKind::Map => filter_ty,
            _ => Some(body_ty.clone()),
        };
        if let Some(condition) = condition.filter(|ty| !is_bool(ty)) {
            self.error(
                format!(
                    "the condition of '{}' must be a bool, got {} in '{node}'",
                    kind.name(),
                    condition.non_null()
                ),
                Some(BOOL_HINT.to_owned()),
            );
        }
        let ty = match kind {
            MacroKind::All | MacroKind::Exists | MacroKind::ExistsOne => Type::Bool,
            MacroKind::Map => Type::List(Box::new(body_ty)),
            MacroKind::Filter => Type::List(Box::new(item.unwrap_or(Type::Any))),
        };
        (node, ty)
    }
}

/// Which macro the cel parser expanded into `comprehension`, with `map`'s filter and the
/// macro's condition or expression; `None` for any other shape.
fn macro_shape(
    comprehension: &ComprehensionExpr,
) -> Option<(MacroKind, Option<&IdedExpr>, &IdedExpr)> {
    if comprehension.iter_var2.is_some() {
        return None;
    }
    let accu = comprehension.accu_var.as_str();
    let is_accu = |expr: &IdedExpr| matches!(&expr.expr, Ast::Ident(name) if name == accu);
    let init = &comprehension.accu_init.expr;
    let empty_list = matches!(init, Ast::List(list) if list.elements.is_empty());
    let Ast::Call(step) = &comprehension.loop_step.expr else {
        return None;
    };
    let shape = match (step.func_name.as_str(), step.args.as_slice()) {
        (op::LOGICAL_OR, [accumulated, condition])
            if is_accu(accumulated) && is_bool_literal(init, false) =>
        {
            (MacroKind::Exists, None, condition)
        }
        (op::LOGICAL_AND, [accumulated, condition])
            if is_accu(accumulated) && is_bool_literal(init, true) =>
        {
            (MacroKind::All, None, condition)
        }
        (op::ADD, [accumulated, appended]) if is_accu(accumulated) && empty_list => {
            (MacroKind::Map, None, single_element(appended)?)
        }
        (op::CONDITIONAL, [condition, then, otherwise]) if is_accu(otherwise) => {
            let Ast::Call(add) = &then.expr else {
                return None;
            };
            let [accumulated, appended] = add.args.as_slice() else {
                return None;
            };
            if add.func_name != op::ADD || !is_accu(accumulated) {
                return None;
            }
            match &appended.expr {
                Ast::Literal(LiteralValue::Int(one))
                    if *one.inner() == 1
                        && matches!(init, Ast::Literal(LiteralValue::Int(zero)) if *zero.inner() == 0) =>
                {
                    (MacroKind::ExistsOne, None, condition)
                }
                Ast::List(_) if empty_list => {
                    let element = single_element(appended)?;
                    match &element.expr {
                        Ast::Ident(name) if *name == comprehension.iter_var => {
                            (MacroKind::Filter, None, condition)
                        }
                        _ => (MacroKind::Map, Some(condition), element),
                    }
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    let result_fits = match shape.0 {
        MacroKind::ExistsOne => matches!(
            &comprehension.result.expr,
            Ast::Call(call) if call.func_name == op::EQUALS
                && matches!(call.args.as_slice(), [accumulated, _] if is_accu(accumulated))
        ),
        _ => is_accu(&comprehension.result),
    };
    result_fits.then_some(shape)
}

fn is_bool_literal(expr: &Ast, value: bool) -> bool {
    matches!(expr, Ast::Literal(LiteralValue::Boolean(b)) if *b.inner() == value)
}

fn single_element(expr: &IdedExpr) -> Option<&IdedExpr> {
    match &expr.expr {
        Ast::List(list) if list.elements.len() == 1 => list.elements.first(),
        _ => None,
    }
}

/// "{label}: a, b, c" for a hint, or `None` when there are no names.
fn names_hint(label: &str, names: &[&str]) -> Option<String> {
    const SHOWN: usize = 20;
    if names.is_empty() {
        return None;
    }
    let shown: Vec<&str> = names.iter().take(SHOWN).copied().collect();
    let more = match names.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!(" and {more} more"),
        _ => String::new(),
    };
    Some(format!("{label}: {}{more}", shown.join(", ")))
}

fn is_bool(ty: &Type) -> bool {
    matches!(ty.non_null(), Type::Bool | Type::Any)
}

/// Whether `==` between these types can ever be true: the same type, two numbers, containers
/// of comparable elements, or null or `any` on one side.
fn equatable(left: &Type, right: &Type) -> bool {
    match (left.non_null(), right.non_null()) {
        (Type::Any | Type::Null, _) | (_, Type::Any | Type::Null) => true,
        (Type::Int | Type::Float, Type::Int | Type::Float) => true,
        (Type::List(a), Type::List(b)) => equatable(a, b),
        (Type::Map(_) | Type::Record(_), Type::Map(_) | Type::Record(_)) => true,
        (a, b) => a == b,
    }
}

/// Whether `<` between these types is defined.
fn orderable(left: &Type, right: &Type) -> bool {
    let scalar = |ty: &Type| {
        matches!(ty, Type::Any | Type::Bool | Type::Int | Type::Float | Type::String | Type::Bytes)
    };
    match (left.non_null(), right.non_null()) {
        (Type::Any, other) | (other, Type::Any) => scalar(other),
        (Type::Int | Type::Float, Type::Int | Type::Float) => true,
        (a, b) => a == b && matches!(a, Type::Bool | Type::String | Type::Bytes),
    }
}

/// The type of `left op right` for an arithmetic operator, or `None` when it is not defined.
fn arithmetic(op: BinaryOp, left: &Type, right: &Type) -> Option<Type> {
    let numeric = |ty: &Type| matches!(ty, Type::Int | Type::Float | Type::Any);
    match (op, left, right) {
        (BinaryOp::Rem, Type::Int | Type::Any, Type::Int | Type::Any) => Some(Type::Int),
        (BinaryOp::Rem, ..) => None,
        (_, Type::Int, Type::Int) => Some(Type::Int),
        (_, Type::Float, other) | (_, other, Type::Float) if numeric(other) => Some(Type::Float),
        (_, Type::Any, other) | (_, other, Type::Any) if numeric(other) => Some(Type::Any),
        (BinaryOp::Add, Type::Any, other) | (BinaryOp::Add, other, Type::Any) => match other {
            Type::String | Type::Bytes => Some(other.clone()),
            Type::List(_) => Some(Type::Any),
            _ => None,
        },
        (BinaryOp::Add, Type::String, Type::String) => Some(Type::String),
        (BinaryOp::Add, Type::Bytes, Type::Bytes) => Some(Type::Bytes),
        (BinaryOp::Add, Type::List(a), Type::List(b)) => {
            join(a, b).map(|item| Type::List(Box::new(item)))
        }
        _ => None,
    }
}

/// The type holding every one of `types`: `any` when there are none or they do not join.
fn join_all<'t>(types: impl IntoIterator<Item = &'t Type>) -> Type {
    let mut types = types.into_iter();
    let Some(first) = types.next() else {
        return Type::Any;
    };
    types.try_fold(first.clone(), |joined, ty| join(&joined, ty)).unwrap_or(Type::Any)
}

/// The narrowest type holding the values of both `a` and `b`, if there is one.
fn join(a: &Type, b: &Type) -> Option<Type> {
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (Type::Any, _) | (_, Type::Any) => Some(Type::Any),
        (Type::Null, other) | (other, Type::Null) => Some(other.clone().nullable()),
        (Type::Nullable(inner), other) | (other, Type::Nullable(inner)) => {
            join(inner, other.non_null()).map(Type::nullable)
        }
        (Type::Int, Type::Float) | (Type::Float, Type::Int) => Some(Type::Float),
        (Type::List(a), Type::List(b)) => join(a, b).map(|item| Type::List(Box::new(item))),
        (Type::Map(a), Type::Map(b)) => join(a, b).map(|value| Type::Map(Box::new(value))),
        (Type::Record(a), Type::Record(b)) => {
            let mut fields = BTreeMap::new();
            for name in a.keys().chain(b.keys()) {
                let ty = match (a.get(name), b.get(name)) {
                    (Some(x), Some(y)) => join(x, y)?,
                    (Some(one), None) | (None, Some(one)) => one.clone().nullable(),
                    (None, None) => continue,
                };
                fields.insert(name.clone(), ty);
            }
            Some(Type::Record(fields))
        }
        _ => None,
    }
}

/// `node` (of type `from`) as a value of type `to`: an int made a float where `to` says float.
fn widen(node: Node, from: &Type, to: &Type) -> Node {
    if !matches!((from.non_null(), to.non_null()), (Type::Int, Type::Float)) {
        return node;
    }
    match node {
        Node::Literal(Value::Int(i)) => Node::Literal(Value::Float(i as f64)),
        node => Node::ToFloat(Box::new(node)),
    }
}

/// A list literal, made a constant when every element is one.
fn fold_list(items: Vec<Node>) -> Node {
    if items.iter().all(|item| matches!(item, Node::Literal(_))) {
        let values = items
            .into_iter()
            .filter_map(|item| match item {
                Node::Literal(value) => Some(value),
                _ => None,
            })
            .collect();
        Node::Literal(Value::Array(values))
    } else {
        Node::List(items)
    }
}

/// A map literal, made a constant when every key is a string constant and every value a
/// constant.
fn fold_map(entries: Vec<(Node, Node)>) -> Node {
    let constant = entries
        .iter()
        .all(|entry| matches!(entry, (Node::Literal(Value::String(_)), Node::Literal(_))));
    if constant {
        let fields = entries
            .into_iter()
            .filter_map(|entry| match entry {
                (Node::Literal(Value::String(key)), Node::Literal(value)) => Some((key, value)),
                _ => None,
            })
            .collect();
        Node::Literal(Value::Map(fields))
    } else {
        Node::Map(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, errors, type_of};
    use super::super::{Expr, Scope};
    use crate::types::Type;

    fn message(source: &str) -> String {
        error(source).message
    }

    #[test]
    fn unknown_fields_suggest_a_near_name() {
        let unknown = error("pag_url.startsWith('/')");
        assert_eq!(unknown.message, "unknown field 'pag_url' (did you mean 'page_url'?)");
        assert!(unknown.hint.unwrap().starts_with("in scope: attrs, event_time"));
        assert_eq!(message("_kye == ''"), "unknown field '_kye' (did you mean '_key'?)");
        assert_eq!(message("nothing_like_it"), "unknown field 'nothing_like_it'");
        assert_eq!(
            message("user.adress.city == 'Paris'"),
            "unknown field 'adress' in 'user.adress' (did you mean 'address'?)"
        );
        assert_eq!(error("user.nmae").hint.as_deref(), Some("the record has: address, id"),);
        assert_eq!(
            message("has(user.adress)"),
            "unknown field 'adress' in 'has(user.adress)' (did you mean 'address'?)"
        );
    }

    #[test]
    fn a_macro_variable_is_in_scope_only_inside_its_macro() {
        assert_eq!(type_of("tags.exists(t, t == page_url)"), Type::Bool);
        assert_eq!(message("tags.exists(t, true) && t == ''"), "unknown field 't'");
    }

    #[test]
    fn comparisons_need_comparable_types() {
        let mismatch = error("page_url > 3");
        assert_eq!(mismatch.message, "cannot compare string with int in 'page_url > 3'");
        assert!(mismatch.hint.unwrap().contains("int(x)"));
        assert_eq!(message("page_url == 3"), "cannot compare string with int in 'page_url == 3'");
        assert_eq!(message("quantity < null"), "cannot compare int with null in 'quantity < null'");
        assert_eq!(
            error("quantity < null").hint.as_deref(),
            Some("only '==' and '!=' compare with null")
        );
        assert_eq!(
            message("tags < tags"),
            "cannot compare list<string> with list<string> in 'tags < tags'"
        );
        assert_eq!(message("3 in tags"), "cannot look for int in list<string> in '3 in tags'");
        assert_eq!(message("1 in attrs"), "map keys are strings, got int in '1 in attrs'");
        assert_eq!(
            message("'x' in page_url"),
            "'in' needs a list or map on the right, got string in ''x' in page_url'"
        );
    }

    #[test]
    fn nulls_and_nullable_fields_compare() {
        for source in [
            "product_id == null",
            "product_id != null",
            "null == product_id",
            "product_id == 'p1'",
            "price > 5",
            "price >= quantity",
            "quantity == 3.0",
            "user.address.city == 'Paris'",
            "user == {'id': 'u1'}",
            "'a' in tags && 'utm' in attrs",
        ] {
            assert_eq!(type_of(source), Type::Bool, "{source}");
        }
    }

    #[test]
    fn arithmetic_needs_numbers() {
        let plus = error("page_url + 1");
        assert_eq!(
            plus.message,
            "'+' needs two numbers or two strings, got string and int in 'page_url + 1'"
        );
        assert!(plus.hint.unwrap().starts_with("convert one side first"));
        assert_eq!(
            message("is_bot * 2"),
            "'*' needs two numbers, got bool and int in 'is_bot * 2'"
        );
        assert_eq!(message("price % 2"), "'%' needs two ints, got float and int in 'price % 2'");
        assert_eq!(message("-page_url"), "'-' needs a number, got string in '-page_url'");
        assert_eq!(
            message("null + 1"),
            "'+' needs two numbers or two strings, got null and int in 'null + 1'"
        );
        assert_eq!(
            message("tags + [1]"),
            "'+' needs two numbers or two strings, got list<string> and list<int> in 'tags + [1]'"
        );
    }

    #[test]
    fn logic_needs_bools() {
        let not = error("!page_url");
        assert_eq!(not.message, "'!' needs a bool, got string in '!page_url'");
        assert!(not.hint.is_some());
        assert_eq!(
            message("is_bot && quantity"),
            "'&&' needs bools, got bool and int in 'is_bot && quantity'"
        );
        assert_eq!(
            message("page_url || is_bot"),
            "'||' needs bools, got string and bool in 'page_url || is_bot'"
        );
        assert_eq!(
            message("quantity ? 1 : 2"),
            "'?:' needs a bool condition, got int in 'quantity ? 1 : 2'"
        );
        assert_eq!(
            message("is_bot ? 'bot' : 1"),
            "the branches of '?:' have different types, string and int, in 'is_bot ? 'bot' : 1'"
        );
    }

    #[test]
    fn functions_check_their_receiver_and_arguments() {
        let receiver = error("quantity.startsWith('1')");
        assert_eq!(
            receiver.message,
            "'startsWith' needs a string receiver, got int in 'quantity.startsWith('1')'"
        );
        assert_eq!(receiver.hint.as_deref(), Some("convert first: string(x).startsWith(…)"));
        assert_eq!(
            message("page_url.startsWith(1)"),
            "'startsWith' needs a string argument, got int in 'page_url.startsWith(1)'"
        );
        let count = error("page_url.startsWith()");
        assert_eq!(
            count.message,
            "'startsWith' takes 1 argument, got 0 in 'page_url.startsWith()'"
        );
        assert_eq!(count.hint.as_deref(), Some("usage: s.startsWith(prefix), both strings"));
        assert_eq!(
            message("page_url.trim(' ')"),
            "'trim' takes 0 arguments, got 1 in 'page_url.trim(' ')'"
        );
        assert_eq!(
            message("startsWith(page_url, '/')"),
            "'startsWith' is a method: write x.startsWith(…) in 'startsWith(page_url, '/')'"
        );
        assert_eq!(
            message("quantity.int()"),
            "'int' is a function: write int(x) in 'quantity.int()'"
        );
        assert_eq!(
            message("size(quantity)"),
            "'size' needs a string, bytes, list or map, got int in 'size(quantity)'"
        );
        assert_eq!(message("int(tags)"), "'int' cannot convert list<string> in 'int(tags)'");
        assert_eq!(
            message("string(user)"),
            "'string' cannot convert record{address: record{city: string?}?, id: string} in 'string(user)'"
        );
    }

    #[test]
    fn unknown_functions_suggest_a_near_name() {
        let unknown = error("page_url.startswith('/')");
        assert_eq!(unknown.message, "unknown function 'startswith' (did you mean 'startsWith'?)");
        assert!(unknown.hint.unwrap().starts_with("the functions are size, startsWith"));
        assert_eq!(message("lenght(tags)"), "unknown function 'lenght'");
        assert_eq!(message("siz(tags)"), "unknown function 'siz' (did you mean 'size'?)");
        assert_eq!(
            message("page_url.matches('^/p')"),
            "'matches' (regular expressions) is not supported yet, in 'page_url.matches('^/p')'"
        );
        assert_eq!(
            message("tags.exists(t)"),
            "'exists' takes a variable and a condition, in 'tags.exists(t)'"
        );
        // The unknown function is reported once, and the parts inside it still checked.
        assert_eq!(
            errors("nope(pag_url) > 1"),
            ["unknown field 'pag_url' (did you mean 'page_url'?)", "unknown function 'nope'"]
        );
    }

    #[test]
    fn selection_needs_a_record_or_map() {
        assert_eq!(
            message("quantity.value"),
            "cannot select field 'value' of int in 'quantity.value'"
        );
        assert_eq!(
            message("has(quantity.x)"),
            "has() needs a record or map, got int in 'has(quantity.x)'"
        );
        assert_eq!(message("tags['a']"), "cannot index list<string> with string in 'tags['a']'");
    }

    #[test]
    fn unsupported_constructs_are_named() {
        let literal = error("Foo{a: 1}");
        assert_eq!(literal.message, "struct literals are not supported: 'Foo{…}'");
        assert_eq!(literal.hint.as_deref(), Some("build a map instead: {'field': value}"));
        assert_eq!(message("{1: 'a'}"), "map keys must be strings, got int in '{1: 'a'}'");
        assert_eq!(message("{'a': 1, 'a': 2}"), "duplicate key 'a' in '{'a': 1, 'a': 2}'");
        assert_eq!(
            message("18446744073709551615u"),
            "the literal 18446744073709551615u is too large for an int"
        );
    }

    #[test]
    fn macros_check_their_range_and_condition() {
        assert_eq!(
            message("quantity.all(x, x > 0)"),
            "'all' needs a list or map, got int in 'quantity.all(x, x > 0)'"
        );
        assert_eq!(
            message("tags.filter(t, t)"),
            "the condition of 'filter' must be a bool, got string in 'tags.filter(t, t)'"
        );
        assert_eq!(
            message("tags.map(t, t, size(t))"),
            "the condition of 'map' must be a bool, got string in 'tags.map(t, t, size(t))'"
        );
    }

    #[test]
    fn output_types_follow_the_operands() {
        assert_eq!(type_of("price * 0.92"), Type::Float);
        assert_eq!(type_of("quantity * 2"), Type::Int);
        assert_eq!(type_of("quantity + 0.5"), Type::Float);
        assert_eq!(type_of("event_time - 1000"), Type::Int);
        assert_eq!(type_of("event_type == 'checkout'"), Type::Bool);
        assert_eq!(type_of("page_url + '?'"), Type::String);
        assert_eq!(type_of("user.address.city"), Type::String.nullable());
        assert_eq!(type_of("user.id"), Type::String);
        assert_eq!(type_of("attrs['utm']"), Type::String.nullable());
        assert_eq!(type_of("attrs.utm"), Type::String.nullable());
        assert_eq!(type_of("tags[0]"), Type::String);
        assert_eq!(type_of("tags.size() + size(attrs)"), Type::Int);
        assert_eq!(type_of("is_bot ? 1 : 2.5"), Type::Float);
        assert_eq!(type_of("is_bot ? page_url : null"), Type::String.nullable());
        assert_eq!(type_of("[1, 2.5]"), Type::List(Box::new(Type::Float)));
        assert_eq!(type_of("[1, 'a']"), Type::List(Box::new(Type::Any)));
        assert_eq!(type_of("tags.map(t, size(t))"), Type::List(Box::new(Type::Int)));
        assert_eq!(type_of("tags.filter(t, t != '')"), Type::List(Box::new(Type::String)));
        assert_eq!(type_of("attrs.filter(k, k != '')"), Type::List(Box::new(Type::String)));
        assert_eq!(
            type_of("{'total': price * quantity, 'page': page_url}"),
            Type::record([("total", Type::Float), ("page", Type::String)])
        );
        assert_eq!(type_of("{_key: quantity}"), Type::Map(Box::new(Type::Int)));
        assert_eq!(type_of("int(page_url) + int(2.5)"), Type::Int);
        assert_eq!(type_of("string(quantity)"), Type::String);
        assert_eq!(type_of("double(quantity)"), Type::Float);
        assert_eq!(type_of("has(user.address)"), Type::Bool);
        assert_eq!(type_of("_timestamp - event_time"), Type::Int);
    }

    #[test]
    fn any_accepts_everything() {
        let scope = Scope::new(Type::Any);
        for source in [
            "page_url > 3",
            "!x && y || z.startsWith('a')",
            "a.b.c[0]['d'] + 1",
            "x.exists(i, i.y)",
            "size(x) == int(y)",
            "has(a.b)",
        ] {
            let compiled = Expr::compile(source, &scope);
            assert!(compiled.is_ok(), "{source}: {:?}", compiled.err());
        }
        let expr = Expr::compile("a.b > 3 && c", &scope).unwrap();
        assert_eq!(expr.fields(), ["a", "c"]);
        assert_eq!(expr.output_type(), &Type::Bool);
        assert_eq!(Expr::compile("x * 1.5", &scope).unwrap().output_type(), &Type::Float);
        assert_eq!(Expr::compile("x + y", &scope).unwrap().output_type(), &Type::Any);
    }
}
