//! Tokenizer. Mirrors the runner's `LexicalAnalyzer`: the meaning of `.` (number vs. dereference)
//! and of a keyword (property name, function, named value, literal) depends on the previous
//! token, and a character sequence that cannot form a token becomes [`TokKind::Unexpected`].

use super::value::parse_number;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokKind {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Star,
    /// `!`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `&&`, `||`
    Op(&'static str),
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    /// A keyword directly after `.`.
    Property(String),
    /// A keyword followed (after optional whitespace) by `(`.
    Function(String),
    /// Any other keyword: a context name such as `github`.
    NamedValue(String),
    Unexpected,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: TokKind,
    /// The source text of the token.
    pub raw: String,
    /// 0-based character index in the expression.
    pub pos: usize,
}

fn is_boundary(c: char) -> bool {
    matches!(
        c,
        '(' | '[' | ')' | ']' | ',' | '.' | '!' | '>' | '<' | '=' | '&' | '|'
    ) || c.is_whitespace()
}

/// A keyword is `[A-Za-z_][A-Za-z0-9_-]*`.
pub(crate) fn is_legal_keyword(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn tokenize(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out: Vec<Token> = Vec::new();
    let mut i = 0;
    let slice = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let last = out.last().map(|t| &t.kind);
        let single = |k: TokKind| Token {
            kind: k,
            raw: c.to_string(),
            pos: start,
        };
        let tok = match c {
            '(' => {
                i += 1;
                single(TokKind::LParen)
            }
            ')' => {
                i += 1;
                single(TokKind::RParen)
            }
            '[' => {
                i += 1;
                single(TokKind::LBracket)
            }
            ']' => {
                i += 1;
                single(TokKind::RBracket)
            }
            ',' => {
                i += 1;
                single(TokKind::Comma)
            }
            '*' => {
                i += 1;
                single(TokKind::Star)
            }
            '\'' => {
                i += 1;
                let mut s = String::new();
                let mut closed = false;
                while i < chars.len() {
                    let ch = chars[i];
                    i += 1;
                    if ch == '\'' {
                        if i < chars.len() && chars[i] == '\'' {
                            i += 1;
                        } else {
                            closed = true;
                            break;
                        }
                    }
                    s.push(ch);
                }
                Token {
                    kind: if closed {
                        TokKind::Str(s)
                    } else {
                        TokKind::Unexpected
                    },
                    raw: slice(start, i),
                    pos: start,
                }
            }
            '!' | '>' | '<' | '=' | '&' | '|' => {
                let two = if i + 1 < chars.len() {
                    match (c, chars[i + 1]) {
                        ('!', '=') => Some("!="),
                        ('>', '=') => Some(">="),
                        ('<', '=') => Some("<="),
                        ('=', '=') => Some("=="),
                        ('&', '&') => Some("&&"),
                        ('|', '|') => Some("||"),
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some(op) = two {
                    i += 2;
                    Token {
                        kind: TokKind::Op(op),
                        raw: op.to_string(),
                        pos: start,
                    }
                } else {
                    i += 1;
                    match c {
                        '!' => single(TokKind::Op("!")),
                        '>' => single(TokKind::Op(">")),
                        '<' => single(TokKind::Op("<")),
                        _ => {
                            while i < chars.len() && !is_boundary(chars[i]) {
                                i += 1;
                            }
                            Token {
                                kind: TokKind::Unexpected,
                                raw: slice(start, i),
                                pos: start,
                            }
                        }
                    }
                }
            }
            _ => {
                let number_dot = c == '.'
                    && matches!(
                        last,
                        None | Some(
                            TokKind::Comma | TokKind::LParen | TokKind::LBracket | TokKind::Op(_)
                        )
                    );
                if c == '.' && !number_dot {
                    i += 1;
                    single(TokKind::Dot)
                } else if number_dot || c == '-' || c == '+' || c.is_ascii_digit() {
                    i += 1;
                    while i < chars.len() && (!is_boundary(chars[i]) || chars[i] == '.') {
                        i += 1;
                    }
                    let raw = slice(start, i);
                    let n = parse_number(&raw);
                    Token {
                        kind: if n.is_nan() {
                            TokKind::Unexpected
                        } else {
                            TokKind::Num(n)
                        },
                        raw,
                        pos: start,
                    }
                } else {
                    i += 1;
                    while i < chars.len() && !is_boundary(chars[i]) {
                        i += 1;
                    }
                    let raw = slice(start, i);
                    let kind = if !is_legal_keyword(&raw) {
                        TokKind::Unexpected
                    } else if matches!(last, Some(TokKind::Dot)) {
                        TokKind::Property(raw.clone())
                    } else {
                        match raw.as_str() {
                            "null" => TokKind::Null,
                            "true" => TokKind::Bool(true),
                            "false" => TokKind::Bool(false),
                            "NaN" => TokKind::Num(f64::NAN),
                            "Infinity" => TokKind::Num(f64::INFINITY),
                            _ => {
                                let mut j = i;
                                while j < chars.len() && chars[j].is_whitespace() {
                                    j += 1;
                                }
                                if j < chars.len() && chars[j] == '(' {
                                    TokKind::Function(raw.clone())
                                } else {
                                    TokKind::NamedValue(raw.clone())
                                }
                            }
                        }
                    };
                    Token {
                        kind,
                        raw,
                        pos: start,
                    }
                }
            }
        };
        out.push(tok);
    }
    out
}
