//! The GitHub/Gitea Actions expression language (`${{ ... }}`), following the semantics of
//! GitHub's runner (`actions/runner`, `src/Sdk/DTExpressions2`).
//!
//! * Literals: `null`, `true`, `false`, numbers (`1`, `-1.5`, `1e3`, `0xff`, `0o17`, `NaN`,
//!   `Infinity`), strings in single quotes with `''` for a quote.
//! * Operators, high to low: `( )`, `[ ]`, `.`, `!`, `< <= > >=`, `== !=`, `&&`, `||`.
//!   `&&`/`||` short-circuit and return an operand, like JavaScript.
//! * Property access and indexing are case-insensitive for keys, give `null` for anything
//!   missing, and `*` maps over arrays/objects.
//! * Mixed-type comparisons convert to numbers; strings compare ignoring case; NaN compares false.
//! * Functions: `contains`, `startsWith`, `endsWith`, `format`, `join`, `toJSON`, `fromJSON`,
//!   `hashFiles`, `case`, `success`, `always`, `cancelled`, `failure`.
//!
//! Decisions where the runner could not be followed exactly, or is unspecified:
//! * Arrays and objects are never `==` (the runner compares object identity).
//! * Object keys keep serde_json's sorted order (affects `toJSON` and `*` order).
//! * Error positions are 1-based character (not UTF-16) indexes.
//! * The status functions may be used in any expression, not only in `if:`.
//! * A final NaN/Infinity value becomes the JSON string `NaN`/`Infinity`/`-Infinity`.

mod eval;
mod functions;
mod lexer;
mod parser;
mod value;

pub use functions::hash_files_in;
pub use parser::{MAX_DEPTH, MAX_LENGTH, NAMED_VALUES};
pub use serde_json::Value;
pub use value::{format_number, is_truthy, to_display_string};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The status seen by `success()`, `failure()` and `cancelled()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Success,
    Failure,
    Cancelled,
    /// Only for a job's own `if:`: a job it needs was skipped and none failed or was cancelled.
    /// `success()`, `failure()` and `cancelled()` are all false then, as in act (`jobSuccess`
    /// wants every need to have succeeded, `jobFailure` one to have failed).
    Skipped,
}

/// Everything an expression can see.
#[derive(Debug, Clone, Default)]
pub struct Contexts {
    /// Context values by lower-case name: "github", "gitea", "env", "vars", "secrets", "needs",
    /// "steps", "matrix", "strategy", "runner", "job", "jobs", "inputs". A known name that is
    /// absent evaluates to null.
    pub values: BTreeMap<String, Value>,
    /// The current job (or composite action) status for success()/failure()/cancelled().
    pub status: Status,
    /// Workspace root for hashFiles(); None makes hashFiles an error.
    pub workspace: Option<PathBuf>,
}

impl Contexts {
    /// Sets a context; the name is lower-cased.
    pub fn set(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_ascii_lowercase(), value);
    }
}

/// A parse or evaluation error. Displays as
/// `"<message>. Located at position <N> within expression: <expression>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}. Located at position {position} within expression: {expression}")]
pub struct ExprError {
    /// What went wrong, e.g. `Unrecognized named-value: 'foo'`.
    pub message: String,
    /// The expression (without `${{ }}`), or for interpolation errors the whole text.
    pub expression: String,
    /// 1-based character position of the offending token.
    pub position: usize,
}

impl ExprError {
    pub(crate) fn new(message: impl Into<String>, expression: &str, position: usize) -> Self {
        ExprError {
            message: message.into(),
            expression: expression.to_string(),
            position,
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone)]
pub struct Expr {
    text: String,
    root: parser::Node,
}

/// Parses one expression (no `${{ }}`).
pub fn parse(expr: &str) -> Result<Expr, ExprError> {
    let root = parser::parse_tree(expr)?;
    Ok(Expr {
        text: expr.to_string(),
        root,
    })
}

impl Expr {
    /// Evaluates against the contexts.
    pub fn eval(&self, ctx: &Contexts) -> Result<Value, ExprError> {
        let ev = eval::Evaluator {
            ctx,
            expr: &self.text,
        };
        Ok(ev.eval(&self.root)?.into_json())
    }

    /// True when the expression calls success(), always(), cancelled() or failure() anywhere.
    pub fn uses_status_function(&self) -> bool {
        self.root
            .any(&|n| matches!(n, parser::Node::Call { func, .. } if func.is_status))
    }

    /// The source text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Parse + evaluate one expression (no `${{ }}`).
pub fn evaluate(expr: &str, ctx: &Contexts) -> Result<Value, ExprError> {
    parse(expr)?.eval(ctx)
}

/// An `if:` condition: implicit `${{ }}` (an explicitly wrapped `${{ x }}` also works), and when
/// the expression uses no status function it is evaluated as `success() && (expr)` (so it is not
/// evaluated at all when the status is not success, but must still parse). An empty condition is
/// `success()`. Like the runner, a condition that mixes text and `${{ }}` (e.g.
/// `${{ a }} == b` or `a == ${{ b }}`) is a string template: it is interpolated and the resulting string's
/// truthiness is used, under the implicit `success()`.
pub fn evaluate_condition(cond: &str, ctx: &Contexts) -> Result<bool, ExprError> {
    let trimmed = cond.trim();
    if trimmed.is_empty() {
        return Ok(ctx.status == Status::Success);
    }
    let expr_text = if trimmed.contains("${{") {
        let segments = split_template(trimmed)?;
        match segments.as_slice() {
            [Segment::Expr(e)] => e.to_string(),
            _ => {
                if ctx.status != Status::Success {
                    return Ok(false);
                }
                return Ok(!interpolate(trimmed, ctx)?.is_empty());
            }
        }
    } else {
        trimmed.to_string()
    };
    let expr = parse(&expr_text)?;
    if !expr.uses_status_function() && ctx.status != Status::Success {
        return Ok(false);
    }
    Ok(is_truthy(&expr.eval(ctx)?))
}

enum Segment<'t> {
    Text(&'t str),
    /// Expression text (trimmed).
    Expr(&'t str),
}

/// Splits a template into text and `${{ }}` expressions. Inside an expression, single-quoted
/// strings (with `''` escapes) are skipped, so `}}` in a string literal does not end it.
fn split_template(text: &str) -> Result<Vec<Segment<'_>>, ExprError> {
    let mut out = Vec::new();
    let mut rest_start = 0;
    let bytes = text.as_bytes();
    while let Some(rel) = text[rest_start..].find("${{") {
        let open = rest_start + rel;
        if open > rest_start {
            out.push(Segment::Text(&text[rest_start..open]));
        }
        let inner_start = open + 3;
        let mut i = inner_start;
        let mut in_str = false;
        let mut close = None;
        while i < bytes.len() {
            let b = bytes[i];
            if in_str {
                if b == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        in_str = false;
                    }
                }
            } else if b == b'\'' {
                in_str = true;
            } else if b == b'}' && bytes.get(i + 1) == Some(&b'}') {
                close = Some(i);
                break;
            }
            i += 1;
        }
        let Some(close) = close else {
            return Err(ExprError::new(
                "The expression is not closed. An unescaped ${{ sequence was found, but the closing }} sequence was not found",
                text,
                text[..open].chars().count() + 1,
            ));
        };
        let inner = &text[inner_start..close];
        out.push(Segment::Expr(inner.trim()));
        rest_start = close + 2;
    }
    if rest_start < text.len() {
        out.push(Segment::Text(&text[rest_start..]));
    }
    Ok(out)
}

/// Replaces every `${{ expr }}` in a string with the string conversion of its value. Text outside
/// expressions is kept verbatim; `}}` inside a quoted string literal within the expression does
/// not end it. An unterminated `${{` is an error.
pub fn interpolate(text: &str, ctx: &Contexts) -> Result<String, ExprError> {
    let mut out = String::new();
    for seg in split_template(text)? {
        match seg {
            Segment::Text(t) => out.push_str(t),
            Segment::Expr(e) => out.push_str(&to_display_string(&evaluate(e, ctx)?)),
        }
    }
    Ok(out)
}

/// Like [`interpolate`], but when the whole (trimmed) text is exactly one `${{ expr }}`, returns
/// the value with its type (so `continue-on-error: ${{ true }}` and
/// `with: x: ${{ fromJSON('[1]') }}` keep types). Otherwise returns a string.
pub fn interpolate_value(text: &str, ctx: &Contexts) -> Result<Value, ExprError> {
    let trimmed = text.trim();
    if trimmed.starts_with("${{") {
        let segments = split_template(trimmed)?;
        if let [Segment::Expr(e)] = segments.as_slice() {
            return evaluate(e, ctx);
        }
    }
    interpolate(text, ctx).map(Value::String)
}

/// Checks that every `${{ }}` of a template parses (syntax, known functions and named values),
/// without evaluating anything: what GitHub checks when it validates a workflow.
pub fn check_template(text: &str) -> Result<(), ExprError> {
    for seg in split_template(text)? {
        if let Segment::Expr(e) = seg {
            parse(e)?;
        }
    }
    Ok(())
}

/// Checks an `if:` condition the way [`evaluate_condition`] reads it, without evaluating it.
pub fn check_condition(cond: &str) -> Result<(), ExprError> {
    let trimmed = cond.trim();
    if trimmed.is_empty() {
        Ok(())
    } else if trimmed.contains("${{") {
        check_template(trimmed)
    } else {
        parse(trimmed).map(|_| ())
    }
}

/// True when the text contains `${{`.
pub fn has_expression(text: &str) -> bool {
    text.contains("${{")
}
