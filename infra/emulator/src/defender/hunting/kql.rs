//! The KQL subset the emulator understands, parsed into a small syntax tree:
//!
//! ```text
//! query      := table ( "|" stage )*
//! stage      := ("where" | "filter") expr | "project" column ("," column)*
//!             | ("take" | "limit") integer | "count"
//! expr       := and ( "or" and )*
//! and        := primary ( "and" primary )*
//! primary    := "(" expr ")" | column op literal
//! op         := "==" | "!=" | "=~" | "!~" | "has" | "!has" | "contains" | "!contains"
//!             | "<" | "<=" | ">" | ">="
//! literal    := string | integer | "ago(" timespan ")" | "now()" | "datetime(" text ")"
//! ```
//!
//! A hand-written recursive-descent parser: the subset is small, and what tests need from it is
//! precise refusals (Kusto's "could not be parsed at" with a position for bad syntax; a message
//! naming the operator for real KQL the emulator lacks), which no available crate gives: the
//! Kusto parsers are .NET, and a general parser generator would add a grammar file and a
//! dependency for a dozen productions.

use std::fmt;

use crate::defender::time::{self, TICKS_PER_SECOND};

/// Why a query was refused; every kind is a 400 `BadRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KqlError {
    /// Not KQL: Kusto's parse error, with the token and its position.
    Syntax {
        token: String,
        line: usize,
        column: usize,
    },
    /// KQL that cannot run (an unknown name, a type mismatch), in Kusto's words.
    Semantic(String),
    /// Real KQL the emulator does not implement.
    Unsupported(String),
}

impl fmt::Display for KqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KqlError::Syntax {
                token,
                line,
                column,
            } => write!(
                f,
                "Syntax error: Query could not be parsed at '{token}' on line [{line},{column}]"
            ),
            KqlError::Semantic(message) => write!(f, "Semantic error: {message}"),
            KqlError::Unsupported(message) => {
                write!(
                    f,
                    "{message} (the emulator implements a KQL subset: where, project, take, limit and count; ==, !=, =~, !~, has, !has, contains, !contains, <, <=, >, >=, and, or; ago(), now(), datetime())"
                )
            }
        }
    }
}

/// A table or column name as the query writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Name {
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Query {
    pub table: Name,
    pub stages: Vec<Stage>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Where(Expr),
    Project(Vec<Name>),
    Take(u64),
    Count,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare {
        column: Name,
        op: CmpOp,
        value: Literal,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    EqCi,
    NeCi,
    Has,
    NotHas,
    Contains,
    NotContains,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub(crate) fn text(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::EqCi => "=~",
            CmpOp::NeCi => "!~",
            CmpOp::Has => "has",
            CmpOp::NotHas => "!has",
            CmpOp::Contains => "contains",
            CmpOp::NotContains => "!contains",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    fn of(text: &str) -> Option<CmpOp> {
        [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::EqCi,
            CmpOp::NeCi,
            CmpOp::Has,
            CmpOp::NotHas,
            CmpOp::Contains,
            CmpOp::NotContains,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ]
        .into_iter()
        .find(|op| op.text() == text)
    }
}

/// The right side of a comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Literal {
    Text(String),
    Number(i64),
    /// `ago(span)`: now minus `span` ticks.
    Ago(i64),
    Now,
    /// `datetime(...)`, in ticks.
    At(i64),
}

/// Real KQL tabular operators the emulator does not implement.
const UNSUPPORTED_OPERATORS: [&str; 38] = [
    "as",
    "consume",
    "distinct",
    "evaluate",
    "extend",
    "externaldata",
    "facet",
    "find",
    "fork",
    "getschema",
    "invoke",
    "join",
    "lookup",
    "make-series",
    "mv-apply",
    "mv-expand",
    "order",
    "parse",
    "parse-kv",
    "parse-where",
    "partition",
    "print",
    "project-away",
    "project-keep",
    "project-rename",
    "project-reorder",
    "range",
    "reduce",
    "render",
    "sample",
    "sample-distinct",
    "scan",
    "search",
    "serialize",
    "sort",
    "summarize",
    "top",
    "union",
];

/// Comparison operators of KQL the emulator does not implement.
const UNSUPPORTED_COMPARISONS: [&str; 18] = [
    "in",
    "in~",
    "!in",
    "!in~",
    "startswith",
    "!startswith",
    "endswith",
    "!endswith",
    "has_cs",
    "!has_cs",
    "contains_cs",
    "!contains_cs",
    "has_any",
    "has_all",
    "hasprefix",
    "hassuffix",
    "matches",
    "between",
];

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Text(String),
    Number(i64),
    /// A timespan literal (`1d`, `30m`), in ticks.
    Span(i64),
    /// The raw content of `datetime(...)`.
    DateTime(String),
    Symbol(&'static str),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    /// As written, for messages.
    text: String,
    line: usize,
    column: usize,
}

const SYMBOLS: [&str; 14] = [
    "==", "!=", "=~", "!~", "<=", ">=", "|", "(", ")", ",", "<", ">", ";", "=",
];

struct Lexer {
    chars: Vec<char>,
    at: usize,
    line: usize,
    line_start: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn error(&self, start: usize, line: usize, column: usize) -> KqlError {
        let end = (start + 1).max(self.at).min(self.chars.len());
        KqlError::Syntax {
            token: self.chars[start.min(self.chars.len())..end]
                .iter()
                .collect(),
            line,
            column,
        }
    }

    fn skip_space(&mut self) {
        loop {
            match self.peek(0) {
                Some('\n') => {
                    self.at += 1;
                    self.line += 1;
                    self.line_start = self.at;
                }
                Some(c) if c.is_whitespace() => self.at += 1,
                Some('/') if self.peek(1) == Some('/') => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.at += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn tokens(mut self) -> Result<Vec<Token>, KqlError> {
        let mut tokens: Vec<Token> = Vec::new();
        loop {
            self.skip_space();
            let (start, line, column) = (self.at, self.line, self.at - self.line_start + 1);
            let Some(c) = self.peek(0) else {
                tokens.push(Token {
                    tok: Tok::End,
                    text: String::new(),
                    line,
                    column,
                });
                return Ok(tokens);
            };
            let tok = if c.is_ascii_alphabetic() || c == '_' {
                Tok::Ident(self.identifier())
            } else if c == '!' && self.peek(1).is_some_and(|n| n.is_ascii_alphabetic()) {
                self.at += 1;
                Tok::Ident(format!("!{}", self.identifier()))
            } else if c.is_ascii_digit() {
                self.number()
                    .ok_or_else(|| self.error(start, line, column))?
            } else if c == '"' || c == '\'' {
                Tok::Text(
                    self.string(c)
                        .ok_or_else(|| self.error(start, line, column))?,
                )
            } else if c == '@' && matches!(self.peek(1), Some('"' | '\'')) {
                self.at += 1;
                let quote = self.peek(0).unwrap_or('"');
                Tok::Text(
                    self.verbatim(quote)
                        .ok_or_else(|| self.error(start, line, column))?,
                )
            } else if let Some(symbol) = SYMBOLS.iter().find(|symbol| {
                symbol
                    .chars()
                    .enumerate()
                    .all(|(i, s)| self.peek(i) == Some(s))
            }) {
                self.at += symbol.chars().count();
                Tok::Symbol(symbol)
            } else {
                self.at += 1;
                return Err(self.error(start, line, column));
            };
            // `datetime(...)` holds a literal that is not made of tokens.
            let tok = match (&tok, tokens.last()) {
                (Tok::Symbol("("), Some(previous))
                    if previous.tok == Tok::Ident("datetime".to_owned()) =>
                {
                    let content_start = self.at;
                    while self.peek(0).is_some_and(|c| c != ')' && c != '\n') {
                        self.at += 1;
                    }
                    if self.peek(0) != Some(')') {
                        return Err(self.error(start, line, column));
                    }
                    let raw: String = self.chars[content_start..self.at].iter().collect();
                    self.at += 1;
                    Tok::DateTime(raw.trim().to_owned())
                }
                _ => tok,
            };
            tokens.push(Token {
                text: self.chars[start..self.at].iter().collect(),
                tok,
                line,
                column,
            });
        }
    }

    /// Letters, digits, `_`, and `-` between letters (`mv-expand`, `project-away`).
    fn identifier(&mut self) -> String {
        let start = self.at;
        while let Some(c) = self.peek(0) {
            let joins_words = c == '-' && self.peek(1).is_some_and(|n| n.is_ascii_alphabetic());
            if c.is_ascii_alphanumeric() || c == '_' || joins_words {
                self.at += 1;
            } else if c == '~' && self.chars[start..self.at].iter().collect::<String>() == "in" {
                // `in~`
                self.at += 1;
                break;
            } else {
                break;
            }
        }
        self.chars[start..self.at].iter().collect()
    }

    /// An integer, or a timespan (`1d`, `1.5h`, `30m`, `10s`, `100ms`).
    fn number(&mut self) -> Option<Tok> {
        let start = self.at;
        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        let mut fractional = false;
        if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            fractional = true;
            self.at += 1;
            while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
        }
        let digits: String = self.chars[start..self.at].iter().collect();
        let unit_start = self.at;
        while self.peek(0).is_some_and(|c| c.is_ascii_alphabetic()) {
            self.at += 1;
        }
        let unit: String = self.chars[unit_start..self.at].iter().collect();
        if unit.is_empty() {
            return if fractional {
                None
            } else {
                digits.parse().ok().map(Tok::Number)
            };
        }
        let ticks_per_unit = match unit.as_str() {
            "d" | "day" | "days" => 86_400 * TICKS_PER_SECOND,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * TICKS_PER_SECOND,
            "m" | "min" | "minute" | "minutes" => 60 * TICKS_PER_SECOND,
            "s" | "sec" | "second" | "seconds" => TICKS_PER_SECOND,
            "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => TICKS_PER_SECOND / 1000,
            _ => return None,
        };
        let value: f64 = digits.parse().ok()?;
        let ticks = value * ticks_per_unit as f64;
        (ticks.is_finite() && ticks < 1e18).then_some(Tok::Span(ticks as i64))
    }

    /// `"..."` or `'...'` with backslash escapes.
    fn string(&mut self, quote: char) -> Option<String> {
        self.at += 1;
        let mut text = String::new();
        loop {
            let c = self.peek(0)?;
            self.at += 1;
            match c {
                '\n' => return None,
                '\\' => {
                    let escaped = self.peek(0)?;
                    self.at += 1;
                    text.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                }
                c if c == quote => return Some(text),
                c => text.push(c),
            }
        }
    }

    /// `@"..."`: no escapes.
    fn verbatim(&mut self, quote: char) -> Option<String> {
        self.at += 1;
        let start = self.at;
        while self.peek(0)? != quote {
            if self.peek(0)? == '\n' {
                return None;
            }
            self.at += 1;
        }
        let text = self.chars[start..self.at].iter().collect();
        self.at += 1;
        Some(text)
    }
}

fn lex(text: &str) -> Result<Vec<Token>, KqlError> {
    Lexer {
        chars: text.chars().collect(),
        at: 0,
        line: 1,
        line_start: 0,
    }
    .tokens()
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        token
    }

    fn unexpected(token: &Token) -> KqlError {
        KqlError::Syntax {
            token: if token.tok == Tok::End {
                "<end of query>".to_owned()
            } else {
                token.text.clone()
            },
            line: token.line,
            column: token.column,
        }
    }

    fn symbol(&mut self, symbol: &str) -> Result<(), KqlError> {
        let token = self.next();
        match token.tok {
            Tok::Symbol(found) if found == symbol => Ok(()),
            _ => Err(Parser::unexpected(&token)),
        }
    }

    fn query(&mut self) -> Result<Query, KqlError> {
        let first = self.next();
        let table = match &first.tok {
            Tok::Ident(name) if name == "let" => {
                return Err(KqlError::Unsupported(
                    "The emulator does not support let statements".to_owned(),
                ));
            }
            Tok::Ident(name) if UNSUPPORTED_OPERATORS.contains(&name.as_str()) => {
                return Err(unsupported_operator(name));
            }
            Tok::Ident(name) => Name { text: name.clone() },
            _ => return Err(Parser::unexpected(&first)),
        };
        let mut stages = Vec::new();
        loop {
            let token = self.next();
            match token.tok {
                Tok::End => break,
                Tok::Symbol("|") => stages.push(self.stage()?),
                Tok::Symbol(";") => {
                    return Err(KqlError::Unsupported(
                        "The emulator does not support several statements in one query".to_owned(),
                    ));
                }
                _ => return Err(Parser::unexpected(&token)),
            }
        }
        Ok(Query { table, stages })
    }

    fn stage(&mut self) -> Result<Stage, KqlError> {
        let token = self.next();
        let Tok::Ident(name) = &token.tok else {
            return Err(Parser::unexpected(&token));
        };
        match name.as_str() {
            "where" | "filter" => Ok(Stage::Where(self.or()?)),
            "project" => {
                let mut columns = Vec::new();
                loop {
                    let column = self.next();
                    let Tok::Ident(text) = &column.tok else {
                        return Err(Parser::unexpected(&column));
                    };
                    if self.peek().tok == Tok::Symbol("=") || self.peek().tok == Tok::Symbol("(") {
                        return Err(KqlError::Unsupported(
                            "The emulator's project takes column names only, not expressions"
                                .to_owned(),
                        ));
                    }
                    columns.push(Name { text: text.clone() });
                    if self.peek().tok == Tok::Symbol(",") {
                        self.next();
                    } else {
                        break;
                    }
                }
                Ok(Stage::Project(columns))
            }
            "take" | "limit" => {
                let count = self.next();
                match count.tok {
                    Tok::Number(n) => Ok(Stage::Take(u64::try_from(n).unwrap_or(0))),
                    _ => Err(Parser::unexpected(&count)),
                }
            }
            "count" => Ok(Stage::Count),
            other if UNSUPPORTED_OPERATORS.contains(&other) => Err(unsupported_operator(other)),
            _ => Err(Parser::unexpected(&token)),
        }
    }

    fn or(&mut self) -> Result<Expr, KqlError> {
        let mut left = self.and()?;
        while self.peek().tok == Tok::Ident("or".to_owned()) {
            self.next();
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, KqlError> {
        let mut left = self.primary()?;
        while self.peek().tok == Tok::Ident("and".to_owned()) {
            self.next();
            let right = self.primary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, KqlError> {
        let token = self.next();
        match &token.tok {
            Tok::Symbol("(") => {
                let inner = self.or()?;
                self.symbol(")")?;
                Ok(inner)
            }
            Tok::Ident(name) if name == "not" => Err(KqlError::Unsupported(
                "The emulator does not support not()".to_owned(),
            )),
            Tok::Ident(name) if self.peek().tok == Tok::Symbol("(") => {
                Err(unsupported_function(name))
            }
            Tok::Ident(name) => {
                let column = Name { text: name.clone() };
                let op_token = self.next();
                let op = match &op_token.tok {
                    Tok::Symbol(symbol) => CmpOp::of(symbol),
                    Tok::Ident(word) => CmpOp::of(word),
                    _ => None,
                };
                let Some(op) = op else {
                    return Err(match &op_token.tok {
                        Tok::Ident(word) if UNSUPPORTED_COMPARISONS.contains(&word.as_str()) => {
                            KqlError::Unsupported(format!(
                                "The emulator does not support the KQL operator '{word}'"
                            ))
                        }
                        _ => Parser::unexpected(&op_token),
                    });
                };
                let value = self.literal()?;
                Ok(Expr::Compare { column, op, value })
            }
            Tok::Text(_) | Tok::Number(_) | Tok::Span(_) => Err(KqlError::Unsupported(
                "The emulator needs a column on the left of a comparison".to_owned(),
            )),
            _ => Err(Parser::unexpected(&token)),
        }
    }

    fn literal(&mut self) -> Result<Literal, KqlError> {
        let token = self.next();
        match &token.tok {
            Tok::Text(text) => Ok(Literal::Text(text.clone())),
            Tok::Number(number) => Ok(Literal::Number(*number)),
            Tok::Ident(name) if name == "ago" => {
                self.symbol("(")?;
                let span = self.next();
                let Tok::Span(ticks) = span.tok else {
                    return Err(Parser::unexpected(&span));
                };
                self.symbol(")")?;
                Ok(Literal::Ago(ticks))
            }
            Tok::Ident(name) if name == "now" => {
                self.symbol("(")?;
                self.symbol(")")?;
                Ok(Literal::Now)
            }
            // The lexer reads `datetime(...)` as the name and then its raw content.
            Tok::Ident(name) if name == "datetime" => {
                let content = self.next();
                let Tok::DateTime(raw) = &content.tok else {
                    return Err(Parser::unexpected(&content));
                };
                parse_datetime(raw).map(Literal::At).ok_or_else(|| {
                    KqlError::Semantic(format!("'{raw}' is not a valid datetime literal"))
                })
            }
            Tok::Ident(name) if self.peek().tok == Tok::Symbol("(") => {
                Err(unsupported_function(name))
            }
            Tok::Ident(name) if name == "true" || name == "false" => Err(KqlError::Unsupported(
                "The emulator's tables have no bool columns".to_owned(),
            )),
            Tok::Ident(_) => Err(KqlError::Unsupported(
                "The emulator compares a column with a literal only, not with another column"
                    .to_owned(),
            )),
            Tok::Span(_) => Err(KqlError::Semantic(
                "a timespan literal can be compared with no column of the emulator's tables; use ago()".to_owned(),
            )),
            _ => Err(Parser::unexpected(&token)),
        }
    }
}

fn unsupported_operator(name: &str) -> KqlError {
    KqlError::Unsupported(format!(
        "The emulator does not support the KQL operator '{name}'"
    ))
}

fn unsupported_function(name: &str) -> KqlError {
    KqlError::Unsupported(format!(
        "The emulator does not support the KQL function '{name}()'"
    ))
}

/// A `datetime(...)` literal: ISO 8601 with a zone, a date, or a date and time without zone
/// (UTC), quoted or not.
fn parse_datetime(raw: &str) -> Option<i64> {
    let text = raw.trim().trim_matches(|c| c == '"' || c == '\'');
    if let Some(ticks) = time::parse_literal(text) {
        return Some(ticks);
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(time::from_datetime(naive.and_utc()));
        }
    }
    None
}

/// Parses a query of the subset.
pub(crate) fn parse(text: &str) -> Result<Query, KqlError> {
    Parser {
        tokens: lex(text)?,
        at: 0,
    }
    .query()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(column: &str, op: CmpOp, value: Literal) -> Expr {
        Expr::Compare {
            column: Name {
                text: column.into(),
            },
            op,
            value,
        }
    }

    #[test]
    fn parses_the_subset() {
        let query = parse(
            "DeviceProcessEvents\n| where InitiatingProcessFileName =~ \"powershell.exe\" and (FileName has 'cmd' or ProcessId > 5)\n| where Timestamp > ago(1d) | project Timestamp, FileName | take 10 | count",
        )
        .unwrap();
        assert_eq!(query.table.text, "DeviceProcessEvents");
        assert_eq!(query.stages.len(), 5);
        assert_eq!(
            query.stages[0],
            Stage::Where(Expr::And(
                Box::new(compare(
                    "InitiatingProcessFileName",
                    CmpOp::EqCi,
                    Literal::Text("powershell.exe".into())
                )),
                Box::new(Expr::Or(
                    Box::new(compare("FileName", CmpOp::Has, Literal::Text("cmd".into()))),
                    Box::new(compare("ProcessId", CmpOp::Gt, Literal::Number(5))),
                )),
            ))
        );
        assert_eq!(
            query.stages[1],
            Stage::Where(compare(
                "Timestamp",
                CmpOp::Gt,
                Literal::Ago(86_400 * TICKS_PER_SECOND)
            ))
        );
        assert_eq!(query.stages[3], Stage::Take(10));
        assert_eq!(query.stages[4], Stage::Count);
        assert_eq!(
            parse("EmailEvents | limit 3").unwrap().stages,
            [Stage::Take(3)]
        );
    }

    #[test]
    fn reads_every_literal() {
        let query = parse(
            r#"T | where A == @"C:\x" | where B !has "a\"b" | where C >= datetime(2026-01-02) | where D < datetime(2026-01-02T03:04:05.5Z) | where E <= now() | where F !contains 'x' | where G != -1"#,
        );
        // A negative number is not part of the subset: its '-' is a syntax error.
        assert!(matches!(query, Err(KqlError::Syntax { .. })), "{query:?}");
        let query = parse(
            r#"T | where A == @"C:\x" | where B !has "a\"b" | where C >= datetime(2026-01-02) | where D < datetime(2026-01-02T03:04:05.5Z) | where E <= now() | where F !contains 'x' | where G !~ "y""#,
        )
        .unwrap();
        let literals: Vec<Literal> = query
            .stages
            .iter()
            .map(|stage| match stage {
                Stage::Where(Expr::Compare { value, .. }) => value.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(literals[0], Literal::Text("C:\\x".into()));
        assert_eq!(literals[1], Literal::Text("a\"b".into()));
        assert_eq!(
            literals[2],
            Literal::At(time::parse_literal("2026-01-02").unwrap())
        );
        assert_eq!(
            literals[3],
            Literal::At(time::parse_literal("2026-01-02T03:04:05.5Z").unwrap())
        );
        assert_eq!(literals[4], Literal::Now);
        assert_eq!(literals[5], Literal::Text("x".into()));
    }

    #[test]
    fn timespans_take_kql_units() {
        for (text, ticks) in [
            ("1d", 86_400 * TICKS_PER_SECOND),
            ("2h", 7_200 * TICKS_PER_SECOND),
            ("30m", 1_800 * TICKS_PER_SECOND),
            ("10s", 10 * TICKS_PER_SECOND),
            ("100ms", TICKS_PER_SECOND / 10),
            ("1.5h", 5_400 * TICKS_PER_SECOND),
        ] {
            let query = parse(&format!("T | where Timestamp > ago({text})")).unwrap();
            assert_eq!(
                query.stages[0],
                Stage::Where(compare("Timestamp", CmpOp::Gt, Literal::Ago(ticks))),
                "{text}"
            );
        }
        assert!(matches!(
            parse("T | where Timestamp > ago(1y)"),
            Err(KqlError::Syntax { .. })
        ));
    }

    #[test]
    fn syntax_errors_name_the_token_and_its_place() {
        for (text, token, line, column) in [
            ("T | where", "<end of query>", 1, 10),
            ("T | where A = 'x'", "=", 1, 13),
            ("T | take x", "x", 1, 10),
            ("T\n| whre A == 1", "whre", 2, 3),
            ("T | where A == 'x", "'x", 1, 16),
            ("T | project", "<end of query>", 1, 12),
            ("T | where (A == 1", "<end of query>", 1, 18),
            ("T # x", "#", 1, 3),
            ("| T", "|", 1, 1),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(
                error,
                KqlError::Syntax {
                    token: token.into(),
                    line,
                    column
                },
                "{text}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("Syntax error: Query could not be parsed at")
            );
        }
    }

    #[test]
    fn real_kql_beyond_the_subset_says_so() {
        for (text, needle) in [
            ("T | summarize count() by A", "operator 'summarize'"),
            ("T | extend X = 1", "operator 'extend'"),
            ("T | order by Timestamp desc", "operator 'order'"),
            ("T | mv-expand A", "operator 'mv-expand'"),
            ("T | project-away A", "operator 'project-away'"),
            ("T | join (U) on A", "operator 'join'"),
            ("union T, U", "operator 'union'"),
            ("let x = 1; T", "let statements"),
            ("T | where A in ('x')", "operator 'in'"),
            ("T | where A startswith 'x'", "operator 'startswith'"),
            ("T | where tolower(A) == 'x'", "function 'tolower()'"),
            ("T | where A == tolower('x')", "function 'tolower()'"),
            ("T | where A == B", "not with another column"),
            ("T | project X = A", "column names only"),
            ("T | where not(A == 'x')", "not()"),
            ("T | where 'x' == A", "column on the left"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(
                matches!(error, KqlError::Unsupported(_)),
                "{text}: {error:?}"
            );
            assert!(error.to_string().contains(needle), "{text}: {error}");
            assert!(error.to_string().contains("KQL subset"), "{error}");
        }
        assert!(matches!(
            parse("T | where D > datetime(yesterday)"),
            Err(KqlError::Semantic(_))
        ));
    }
}
