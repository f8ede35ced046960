//! The compiled form of an expression, and how it prints back as CEL text.
//!
//! Error messages quote the part of the expression they are about (`in 'page_url > 3'`). The
//! cel parser records only token positions, not spans, so the quoted text is printed from the
//! compiled tree, with the parentheses precedence needs and nothing else.

use std::fmt::{self, Write as _};

use crate::value::Value;

/// One node of a compiled expression. Identifiers are already resolved to where their value
/// lives: a field of the record, an extra, or a macro's variable.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    /// A constant.
    Literal(Value),
    /// A top-level field of the record value.
    Field(String),
    /// The extra at `index` in the scope (e.g. `_key`).
    Extra { index: usize, name: String },
    /// A macro's variable, `depth` macros out from the innermost one in scope.
    Local { depth: usize, name: String },
    /// `operand.field`.
    Select { operand: Box<Node>, field: String },
    /// `has(operand.field)`.
    Has { operand: Box<Node>, field: String },
    /// `operand[index]`.
    Index { operand: Box<Node>, index: Box<Node> },
    /// `[a, b]`.
    List(Vec<Node>),
    /// `{k: v}`.
    Map(Vec<(Node, Node)>),
    /// `!operand`.
    Not(Box<Node>),
    /// `-operand`.
    Neg(Box<Node>),
    /// An arithmetic, comparison or `in` operator.
    Binary { op: BinaryOp, left: Box<Node>, right: Box<Node> },
    /// `left && right`.
    And(Box<Node>, Box<Node>),
    /// `left || right`.
    Or(Box<Node>, Box<Node>),
    /// `cond ? then : otherwise`.
    Cond { cond: Box<Node>, then: Box<Node>, otherwise: Box<Node> },
    /// A function; for a method (`s.trim()`) the receiver is `args[0]`.
    Call { func: Func, args: Vec<Node>, method: bool },
    /// `range.all(var, body)` and the other macros; `filter` is `map`'s optional middle
    /// argument (`range.map(var, filter, body)`).
    Macro {
        kind: MacroKind,
        range: Box<Node>,
        var: String,
        filter: Option<Box<Node>>,
        body: Box<Node>,
    },
    /// An int where the type says float (a branch of `?:`, an element of a list literal), so
    /// the value matches the output type. Prints as its operand.
    ToFloat(Box<Node>),
    /// A part that did not compile, kept as text for the messages of the parts around it.
    Invalid(String),
}

/// The operators with two operands evaluated strictly (both sides, always).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl BinaryOp {
    /// The operator as written.
    pub(super) fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::In => "in",
        }
    }

    /// The operator of a cel AST call name (`_+_`), if it is one of these.
    pub(super) fn of_call(name: &str) -> Option<BinaryOp> {
        use cel::common::ast::operators as op;
        Some(match name {
            op::ADD => BinaryOp::Add,
            op::SUBSTRACT => BinaryOp::Sub,
            op::MULTIPLY => BinaryOp::Mul,
            op::DIVIDE => BinaryOp::Div,
            op::MODULO => BinaryOp::Rem,
            op::EQUALS => BinaryOp::Eq,
            op::NOT_EQUALS => BinaryOp::Ne,
            op::LESS => BinaryOp::Lt,
            op::LESS_EQUALS => BinaryOp::Le,
            op::GREATER => BinaryOp::Gt,
            op::GREATER_EQUALS => BinaryOp::Ge,
            op::IN => BinaryOp::In,
            _ => return None,
        })
    }

    fn precedence(self) -> u8 {
        match self {
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => 6,
            BinaryOp::Add | BinaryOp::Sub => 5,
            _ => 4,
        }
    }
}

/// The functions expressions may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func {
    Size,
    StartsWith,
    EndsWith,
    Contains,
    LowerAscii,
    UpperAscii,
    Trim,
    Int,
    Double,
    String,
}

/// How a function is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Style {
    /// `s.f(..)` only.
    Method,
    /// `f(x)` only.
    Global,
    /// Either: `size(x)` and `x.size()`.
    Both,
}

impl Func {
    /// Every function, in the order the hints list them.
    pub(super) const ALL: [Func; 10] = [
        Func::Size,
        Func::StartsWith,
        Func::EndsWith,
        Func::Contains,
        Func::LowerAscii,
        Func::UpperAscii,
        Func::Trim,
        Func::Int,
        Func::Double,
        Func::String,
    ];

    /// The name expressions call it by.
    pub(super) fn name(self) -> &'static str {
        match self {
            Func::Size => "size",
            Func::StartsWith => "startsWith",
            Func::EndsWith => "endsWith",
            Func::Contains => "contains",
            Func::LowerAscii => "lowerAscii",
            Func::UpperAscii => "upperAscii",
            Func::Trim => "trim",
            Func::Int => "int",
            Func::Double => "double",
            Func::String => "string",
        }
    }

    /// The function called `name`.
    pub(super) fn named(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|func| func.name() == name)
    }

    /// How it is called.
    pub(super) fn style(self) -> Style {
        match self {
            Func::Size => Style::Both,
            Func::Int | Func::Double | Func::String => Style::Global,
            _ => Style::Method,
        }
    }

    /// Its operands, the receiver of a method included.
    pub(super) fn arity(self) -> usize {
        match self {
            Func::StartsWith | Func::EndsWith | Func::Contains => 2,
            _ => 1,
        }
    }

    /// How to call it, for hints.
    pub(super) fn usage(self) -> &'static str {
        match self {
            Func::Size => "size(x) or x.size(), for a string, bytes, list or map",
            Func::StartsWith => "s.startsWith(prefix), both strings",
            Func::EndsWith => "s.endsWith(suffix), both strings",
            Func::Contains => "s.contains(part), both strings",
            Func::LowerAscii => "s.lowerAscii(), for a string",
            Func::UpperAscii => "s.upperAscii(), for a string",
            Func::Trim => "s.trim(), for a string",
            Func::Int => "int(x), for an int, float or string",
            Func::Double => "double(x), for an int, float or string",
            Func::String => "string(x), for an int, float, string, bool or bytes",
        }
    }
}

/// The comprehension macros of CEL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MacroKind {
    All,
    Exists,
    ExistsOne,
    Map,
    Filter,
}

impl MacroKind {
    /// The name it is written with.
    pub(super) fn name(self) -> &'static str {
        match self {
            MacroKind::All => "all",
            MacroKind::Exists => "exists",
            MacroKind::ExistsOne => "exists_one",
            MacroKind::Map => "map",
            MacroKind::Filter => "filter",
        }
    }
}

impl Node {
    /// How tightly it binds, as in CEL's grammar: `?:` 1, `||` 2, `&&` 3, relations 4,
    /// `+ -` 5, `* / %` 6, unary 7, member access 8, primary 9.
    fn precedence(&self) -> u8 {
        match self {
            Node::Cond { .. } => 1,
            Node::Or(..) => 2,
            Node::And(..) => 3,
            Node::Binary { op, .. } => op.precedence(),
            Node::Not(_) | Node::Neg(_) => 7,
            Node::Literal(Value::Int(i)) if *i < 0 => 7,
            Node::Literal(Value::Float(x)) if x.is_sign_negative() => 7,
            Node::ToFloat(inner) => inner.precedence(),
            Node::Select { .. } | Node::Index { .. } | Node::Macro { .. } => 8,
            Node::Call { method: true, .. } => 8,
            _ => 9,
        }
    }

    /// The text of this node as the receiver of a method or field selection, parenthesised
    /// when it binds less tightly.
    pub(super) fn operand_text(&self) -> String {
        if self.precedence() < 8 { format!("({self})") } else { self.to_string() }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        let parenthesise = self.precedence() < min;
        if parenthesise {
            f.write_char('(')?;
        }
        match self {
            Node::Literal(value) => write_value(f, value)?,
            Node::Field(name) | Node::Extra { name, .. } | Node::Local { name, .. } => {
                f.write_str(name)?
            }
            Node::Select { operand, field } => {
                operand.write(f, 8)?;
                write!(f, ".{field}")?;
            }
            Node::Has { operand, field } => {
                f.write_str("has(")?;
                operand.write(f, 8)?;
                write!(f, ".{field})")?;
            }
            Node::Index { operand, index } => {
                operand.write(f, 8)?;
                f.write_char('[')?;
                index.write(f, 0)?;
                f.write_char(']')?;
            }
            Node::List(items) => {
                f.write_char('[')?;
                write_list(f, items)?;
                f.write_char(']')?;
            }
            Node::Map(entries) => {
                f.write_char('{')?;
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    key.write(f, 0)?;
                    f.write_str(": ")?;
                    value.write(f, 0)?;
                }
                f.write_char('}')?;
            }
            Node::Not(operand) => {
                f.write_char('!')?;
                operand.write(f, 7)?;
            }
            Node::Neg(operand) => {
                f.write_char('-')?;
                operand.write(f, 7)?;
            }
            Node::Binary { op, left, right } => {
                let precedence = op.precedence();
                left.write(f, precedence)?;
                write!(f, " {} ", op.symbol())?;
                right.write(f, precedence + 1)?;
            }
            // Both are associative, so either side may hold a chain of the same operator.
            Node::And(left, right) => {
                left.write(f, 3)?;
                f.write_str(" && ")?;
                right.write(f, 3)?;
            }
            Node::Or(left, right) => {
                left.write(f, 2)?;
                f.write_str(" || ")?;
                right.write(f, 2)?;
            }
            Node::Cond { cond, then, otherwise } => {
                cond.write(f, 2)?;
                f.write_str(" ? ")?;
                then.write(f, 2)?;
                f.write_str(" : ")?;
                otherwise.write(f, 1)?;
            }
            Node::Call { func, args, method: true } => {
                if let Some((receiver, rest)) = args.split_first() {
                    receiver.write(f, 8)?;
                    write!(f, ".{}(", func.name())?;
                    write_list(f, rest)?;
                    f.write_char(')')?;
                }
            }
            Node::Call { func, args, method: false } => {
                write!(f, "{}(", func.name())?;
                write_list(f, args)?;
                f.write_char(')')?;
            }
            Node::Macro { kind, range, var, filter, body } => {
                range.write(f, 8)?;
                write!(f, ".{}({var}, ", kind.name())?;
                if let Some(filter) = filter {
                    filter.write(f, 0)?;
                    f.write_str(", ")?;
                }
                body.write(f, 0)?;
                f.write_char(')')?;
            }
            Node::ToFloat(inner) => inner.write(f, min)?,
            Node::Invalid(text) => f.write_str(text)?,
        }
        if parenthesise {
            f.write_char(')')?;
        }
        Ok(())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[Node]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        item.write(f, 0)?;
    }
    Ok(())
}

/// Writes `value` as a CEL literal.
fn write_value(f: &mut impl fmt::Write, value: &Value) -> fmt::Result {
    match value {
        Value::Null => f.write_str("null"),
        Value::Bool(b) => write!(f, "{b}"),
        Value::Int(i) => write!(f, "{i}"),
        // Debug keeps the decimal point (`1.0`), so the text reads back as a float.
        Value::Float(x) => write!(f, "{x:?}"),
        Value::String(s) => {
            f.write_char('\'')?;
            for c in s.chars() {
                match c {
                    '\'' => f.write_str("\\'")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
                    c => f.write_char(c)?,
                }
            }
            f.write_char('\'')
        }
        Value::Bytes(bytes) => {
            f.write_str("b'")?;
            for byte in bytes {
                match byte {
                    b'\'' => f.write_str("\\'")?,
                    b'\\' => f.write_str("\\\\")?,
                    0x20..=0x7e => f.write_char(char::from(*byte))?,
                    _ => write!(f, "\\x{byte:02x}")?,
                }
            }
            f.write_char('\'')
        }
        Value::Array(items) => {
            f.write_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_value(f, item)?;
            }
            f.write_char(']')
        }
        Value::Map(fields) => {
            f.write_char('{')?;
            for (i, (name, item)) in fields.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_value(f, &Value::String(name.clone()))?;
                f.write_str(": ")?;
                write_value(f, item)?;
            }
            f.write_char('}')
        }
    }
}

/// A value as a literal for a message, cut short when long.
pub(super) fn brief(value: &Value) -> String {
    const LIMIT: usize = 60;
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = write_value(&mut text, value);
    if text.chars().count() > LIMIT {
        text = text.chars().take(LIMIT).collect();
        text.push('…');
    }
    text
}

/// What a value is, with its article, for messages: "a string", "an int", "null".
pub(super) fn described(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Array(_) => "a list",
        Value::Map(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str) -> Box<Node> {
        Box::new(Node::Field(name.to_owned()))
    }

    fn int(i: i64) -> Box<Node> {
        Box::new(Node::Literal(Value::Int(i)))
    }

    #[test]
    fn printing_adds_only_the_parentheses_precedence_needs() {
        let sum = Node::Binary { op: BinaryOp::Add, left: field("a"), right: field("b") };
        let product =
            Node::Binary { op: BinaryOp::Mul, left: Box::new(sum.clone()), right: int(2) };
        assert_eq!(product.to_string(), "(a + b) * 2");
        let difference =
            Node::Binary { op: BinaryOp::Sub, left: field("a"), right: Box::new(sum.clone()) };
        assert_eq!(difference.to_string(), "a - (a + b)");
        let call = Node::Call { func: Func::Size, args: vec![sum], method: true };
        assert_eq!(call.to_string(), "(a + b).size()");
        let negated = Node::Not(Box::new(Node::And(field("a"), field("b"))));
        assert_eq!(negated.to_string(), "!(a && b)");
    }

    #[test]
    fn literals_print_as_cel_reads_them() {
        assert_eq!(brief(&Value::from("it's")), r"'it\'s'");
        assert_eq!(brief(&Value::Float(1.0)), "1.0");
        assert_eq!(brief(&Value::Bytes(vec![b'a', 0])), r"b'a\x00'");
        assert_eq!(brief(&Value::from([("k", Value::Int(1))])), "{'k': 1}");
        assert_eq!(brief(&Value::from("x".repeat(100))).chars().count(), 61);
    }
}
