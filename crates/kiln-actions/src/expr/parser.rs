//! Recursive-descent parser producing the expression tree.
//!
//! Precedence, high to low: grouping `( )`, index `[ ]`, property `.`, `!`, `< <= > >=`,
//! `== !=`, `&&`, `||`. All binary operators are left-associative; chains of `&&`/`||` are
//! flattened into one n-ary node like the runner does (this matters for the depth limit).

use super::functions::{Func, FUNCTIONS};
use super::lexer::{tokenize, TokKind, Token};
use super::ExprError;

/// Maximum tree depth, and maximum nesting of groups/indexes/calls/`!` while parsing
/// (the runner's `MaxDepth`). Unlike the runner, redundant parentheses count toward the limit.
pub const MAX_DEPTH: usize = 50;
/// Maximum expression length in characters (the runner's `MaxLength`).
pub const MAX_LENGTH: usize = 21000;

/// The context names an expression may reference.
pub const NAMED_VALUES: [&str; 13] = [
    "github", "gitea", "env", "vars", "secrets", "needs", "steps", "matrix", "strategy", "runner",
    "job", "jobs", "inputs",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
pub(crate) enum IndexArg {
    Wildcard,
    Expr(Box<Node>),
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    /// A context, by lower-case name.
    Named(String),
    Index {
        base: Box<Node>,
        index: IndexArg,
    },
    Not(Box<Node>),
    Binary {
        op: BinOp,
        left: Box<Node>,
        right: Box<Node>,
    },
    And(Vec<Node>),
    Or(Vec<Node>),
    Call {
        func: &'static Func,
        args: Vec<Node>,
        /// 0-based position of the function name, for runtime errors.
        pos: usize,
    },
}

impl Node {
    pub(crate) fn any(&self, f: &dyn Fn(&Node) -> bool) -> bool {
        if f(self) {
            return true;
        }
        match self {
            Node::Index { base, index } => {
                base.any(f)
                    || match index {
                        IndexArg::Wildcard => false,
                        IndexArg::Expr(e) => e.any(f),
                    }
            }
            Node::Not(n) => n.any(f),
            Node::Binary { left, right, .. } => left.any(f) || right.any(f),
            Node::And(v) | Node::Or(v) => v.iter().any(|n| n.any(f)),
            Node::Call { args, .. } => args.iter().any(|n| n.any(f)),
            _ => false,
        }
    }
}

struct Parser<'e> {
    expr: &'e str,
    toks: Vec<Token>,
    i: usize,
    nesting: usize,
}

pub(crate) fn parse_tree(expr: &str) -> Result<Node, ExprError> {
    let len = expr.chars().count();
    if len > MAX_LENGTH {
        return Err(ExprError::new(
            format!("Exceeded max expression length {MAX_LENGTH}"),
            expr,
            MAX_LENGTH + 1,
        ));
    }
    let toks = tokenize(expr);
    if toks.is_empty() {
        return Err(ExprError::new("Expected an expression", expr, 1));
    }
    let mut p = Parser {
        expr,
        toks,
        i: 0,
        nesting: 0,
    };
    let (node, _) = p.parse_or()?;
    if p.i < p.toks.len() {
        return Err(p.unexpected(p.i));
    }
    Ok(node)
}

impl Parser<'_> {
    fn peek(&self) -> Option<&TokKind> {
        self.toks.get(self.i).map(|t| &t.kind)
    }

    fn unexpected(&self, i: usize) -> ExprError {
        let t = &self.toks[i];
        ExprError::new(
            format!("Unexpected symbol: '{}'", t.raw),
            self.expr,
            t.pos + 1,
        )
    }

    /// Error at the current token, or "unexpected end" naming the last token.
    fn error_here(&self) -> ExprError {
        if self.i < self.toks.len() {
            self.unexpected(self.i)
        } else {
            let t = self.toks.last().expect("non-empty");
            ExprError::new(
                format!("Unexpected end of expression: '{}'", t.raw),
                self.expr,
                t.pos + 1,
            )
        }
    }

    fn too_deep(&self) -> ExprError {
        let pos = self.toks.get(self.i.saturating_sub(1)).map_or(0, |t| t.pos);
        ExprError::new(
            format!("Exceeded max expression depth {MAX_DEPTH}"),
            self.expr,
            pos + 1,
        )
    }

    /// Parser recursion guard (keeps the stack bounded for inputs like `((((((...`).
    fn enter(&mut self) -> Result<(), ExprError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    /// Every node is built through here with its tree depth (1 + deepest child), so the tree
    /// depth limit is enforced as soon as it is exceeded and no tree deeper than
    /// [`MAX_DEPTH`] ever exists (evaluation and drop recurse over the tree).
    fn node(&self, node: Node, depth: usize) -> Result<(Node, usize), ExprError> {
        if depth > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok((node, depth))
    }

    fn expect(&mut self, kind: TokKind) -> Result<(), ExprError> {
        if self.peek() == Some(&kind) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error_here())
        }
    }

    fn parse_or(&mut self) -> Result<(Node, usize), ExprError> {
        let first = self.parse_and()?;
        let mut items = vec![first];
        while self.peek() == Some(&TokKind::Op("||")) {
            self.i += 1;
            items.push(self.parse_and()?);
        }
        if items.len() == 1 {
            return Ok(items.pop().expect("one"));
        }
        let (items, depth) = flatten(items, true);
        self.node(Node::Or(items), depth)
    }

    fn parse_and(&mut self) -> Result<(Node, usize), ExprError> {
        let first = self.parse_equality()?;
        let mut items = vec![first];
        while self.peek() == Some(&TokKind::Op("&&")) {
            self.i += 1;
            items.push(self.parse_equality()?);
        }
        if items.len() == 1 {
            return Ok(items.pop().expect("one"));
        }
        let (items, depth) = flatten(items, false);
        self.node(Node::And(items), depth)
    }

    fn parse_equality(&mut self) -> Result<(Node, usize), ExprError> {
        let (mut left, mut depth) = self.parse_comparison()?;
        loop {
            let op = match self.peek() {
                Some(TokKind::Op("==")) => BinOp::Eq,
                Some(TokKind::Op("!=")) => BinOp::Ne,
                _ => return Ok((left, depth)),
            };
            self.i += 1;
            let (right, rd) = self.parse_comparison()?;
            (left, depth) = self.node(
                Node::Binary {
                    op,
                    left: Box::new(left),
                    right: Box::new(right),
                },
                1 + depth.max(rd),
            )?;
        }
    }

    fn parse_comparison(&mut self) -> Result<(Node, usize), ExprError> {
        let (mut left, mut depth) = self.parse_unary()?;
        loop {
            let op = match self.peek() {
                Some(TokKind::Op("<")) => BinOp::Lt,
                Some(TokKind::Op("<=")) => BinOp::Le,
                Some(TokKind::Op(">")) => BinOp::Gt,
                Some(TokKind::Op(">=")) => BinOp::Ge,
                _ => return Ok((left, depth)),
            };
            self.i += 1;
            let (right, rd) = self.parse_unary()?;
            (left, depth) = self.node(
                Node::Binary {
                    op,
                    left: Box::new(left),
                    right: Box::new(right),
                },
                1 + depth.max(rd),
            )?;
        }
    }

    fn parse_unary(&mut self) -> Result<(Node, usize), ExprError> {
        if self.peek() == Some(&TokKind::Op("!")) {
            self.i += 1;
            self.enter()?;
            let (inner, d) = self.parse_unary()?;
            self.nesting -= 1;
            return self.node(Node::Not(Box::new(inner)), d + 1);
        }
        self.parse_postfix()
    }

    fn parse_postfix(&mut self) -> Result<(Node, usize), ExprError> {
        let (mut node, mut depth, indexable) = self.parse_primary()?;
        loop {
            match self.peek() {
                Some(TokKind::Dot) if indexable => {
                    self.i += 1;
                    let index = match self.peek() {
                        Some(TokKind::Property(name)) => {
                            IndexArg::Expr(Box::new(Node::Str(name.clone())))
                        }
                        Some(TokKind::Star) => IndexArg::Wildcard,
                        _ => return Err(self.error_here()),
                    };
                    self.i += 1;
                    (node, depth) = self.node(
                        Node::Index {
                            base: Box::new(node),
                            index,
                        },
                        depth + 1,
                    )?;
                }
                Some(TokKind::LBracket) if indexable => {
                    self.i += 1;
                    let (index, id) = if self.peek() == Some(&TokKind::Star) {
                        self.i += 1;
                        (IndexArg::Wildcard, 0)
                    } else {
                        self.enter()?;
                        let (e, d) = self.parse_or()?;
                        self.nesting -= 1;
                        (IndexArg::Expr(Box::new(e)), d)
                    };
                    self.expect(TokKind::RBracket)?;
                    (node, depth) = self.node(
                        Node::Index {
                            base: Box::new(node),
                            index,
                        },
                        1 + depth.max(id),
                    )?;
                }
                _ => return Ok((node, depth)),
            }
        }
    }

    /// Returns the node and whether `.`/`[` may follow it (not after a literal, like the runner).
    fn parse_primary(&mut self) -> Result<(Node, usize, bool), ExprError> {
        let Some(tok) = self.toks.get(self.i).cloned() else {
            return Err(self.error_here());
        };
        self.i += 1;
        Ok(match tok.kind {
            TokKind::Null => (Node::Null, 1, false),
            TokKind::Bool(b) => (Node::Bool(b), 1, false),
            TokKind::Num(n) => (Node::Num(n), 1, false),
            TokKind::Str(s) => (Node::Str(s), 1, false),
            TokKind::NamedValue(name) => {
                let lower = name.to_ascii_lowercase();
                if !NAMED_VALUES.contains(&lower.as_str()) {
                    return Err(ExprError::new(
                        format!("Unrecognized named-value: '{name}'"),
                        self.expr,
                        tok.pos + 1,
                    ));
                }
                (Node::Named(lower), 1, true)
            }
            TokKind::LParen => {
                self.enter()?;
                let (inner, d) = self.parse_or()?;
                self.nesting -= 1;
                self.expect(TokKind::RParen)?;
                (inner, d, true)
            }
            TokKind::Function(name) => {
                let Some(func) = FUNCTIONS
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case(&name))
                else {
                    return Err(ExprError::new(
                        format!("Unrecognized function: '{name}'"),
                        self.expr,
                        tok.pos + 1,
                    ));
                };
                let open = self.i;
                self.expect(TokKind::LParen)?;
                self.enter()?;
                let mut args = Vec::new();
                let mut depth = 1;
                if self.peek() != Some(&TokKind::RParen) {
                    loop {
                        let (arg, d) = self.parse_or()?;
                        depth = depth.max(d + 1);
                        args.push(arg);
                        if self.peek() == Some(&TokKind::Comma) {
                            self.i += 1;
                        } else {
                            break;
                        }
                    }
                }
                self.expect(TokKind::RParen)?;
                self.nesting -= 1;
                let open_tok = &self.toks[open];
                if args.len() < func.min_args {
                    return Err(ExprError::new(
                        format!(
                            "Too few parameters supplied: '{}' ({} requires at least {})",
                            open_tok.raw, func.name, func.min_args
                        ),
                        self.expr,
                        open_tok.pos + 1,
                    ));
                }
                if args.len() > func.max_args {
                    return Err(ExprError::new(
                        format!(
                            "Too many parameters supplied: '{}' ({} accepts at most {})",
                            open_tok.raw, func.name, func.max_args
                        ),
                        self.expr,
                        open_tok.pos + 1,
                    ));
                }
                if func.name == "case" && args.len() % 2 == 0 {
                    return Err(ExprError::new(
                        format!(
                            "Even number of parameters supplied, requires an odd number of parameters: '{}'",
                            open_tok.raw
                        ),
                        self.expr,
                        open_tok.pos + 1,
                    ));
                }
                let (node, depth) = self.node(
                    Node::Call {
                        func,
                        args,
                        pos: tok.pos,
                    },
                    depth,
                )?;
                (node, depth, true)
            }
            _ => {
                self.i -= 1;
                return Err(self.error_here());
            }
        })
    }
}

/// Merges nested `&&` (or `||`) nodes into one, returning the items and the merged node's depth.
fn flatten(items: Vec<(Node, usize)>, or: bool) -> (Vec<Node>, usize) {
    let mut out = Vec::new();
    let mut child_depth = 0;
    for (n, d) in items {
        match n {
            Node::Or(v) if or => {
                child_depth = child_depth.max(d - 1);
                out.extend(v);
            }
            Node::And(v) if !or => {
                child_depth = child_depth.max(d - 1);
                out.extend(v);
            }
            other => {
                child_depth = child_depth.max(d);
                out.push(other);
            }
        }
    }
    (out, child_depth + 1)
}
