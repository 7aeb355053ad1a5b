//! The OData query options the data APIs take: `$filter` (comparisons joined by `and`),
//! `$top`, `$skip`, `$orderby`, `$expand`, `$count`, `$skiptoken`, `$select` (accepted, ignored).
//!
//! Each API describes its properties in an [`ApiSpec`]; [`parse`] turns a query string into a
//! [`Query`] or a [`QueryError`] that the API renders in its own error shape.

use super::data::{Order, OrderField, TimeRange, Window};
use super::time;

/// A property that can appear in `$filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldKind {
    Created,
    Updated,
    Text(TextField),
    /// `incidentId`: a string on Graph (`'123'`), a number elsewhere.
    IncidentId {
        string: bool,
    },
}

/// Properties compared as text (enums and names), case-insensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextField {
    Status,
    Severity,
    AssignedTo,
    Classification,
    Determination,
    ServiceSource,
    Id,
}

#[derive(Clone, Copy)]
pub(crate) struct FieldSpec {
    pub name: &'static str,
    pub kind: FieldKind,
}

impl FieldSpec {
    pub(crate) const fn new(name: &'static str, kind: FieldKind) -> Self {
        Self { name, kind }
    }
}

/// What one list endpoint accepts.
pub(crate) struct ApiSpec {
    /// `microsoft.graph.security.incident`, for messages.
    pub entity: &'static str,
    pub fields: &'static [FieldSpec],
    pub max_top: u64,
    pub default_top: u64,
    /// A `$top` above `max_top` is lowered to it (Graph `alerts_v2`) instead of refused.
    pub clamp_top: bool,
    /// The one `$expand` value accepted, if any.
    pub expand: Option<&'static str>,
    /// Options accepted besides `$filter`, `$top`, `$skip`, `$orderby`, `$select`.
    pub extra_options: &'static [&'static str],
}

/// A text comparison of `$filter`: `field eq 'value'` (`value` None: `eq null`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TextCondition {
    pub field: TextField,
    pub value: Option<String>,
    pub negated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Query {
    pub window: Window,
    pub texts: Vec<TextCondition>,
    /// `incidentId eq …`: `Some(None)` when the value names no possible incident.
    pub incident_id: Option<Option<u64>>,
    pub order: Order,
    pub skip: u64,
    /// Whether `$skip` was given (Graph limits `$top` + `$skip`).
    pub explicit_skip: bool,
    pub top: u64,
    pub expand: bool,
    pub count: bool,
    pub skiptoken: Option<String>,
    /// The options as sent, lower-cased names, for next links.
    pub options: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn matches_text(&self, value_of: impl Fn(TextField) -> Option<String>) -> bool {
        self.texts.iter().all(|condition| {
            let actual = value_of(condition.field);
            let equal = match (&actual, &condition.value) {
                (Some(actual), Some(wanted)) => actual.eq_ignore_ascii_case(wanted),
                (None, None) => true,
                _ => false,
            };
            equal != condition.negated
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum QueryError {
    /// `$top` above the API's maximum.
    TopTooLarge { max: u64, given: u64 },
    /// A malformed or unsupported option (not `$filter`).
    Option(String),
    /// A `$filter` the emulator does not understand or that names an unknown property.
    Filter(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
    Text(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Op> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return None,
        })
    }

    /// The OData name of the operator, as validation messages spell it.
    fn kind(self) -> &'static str {
        match self {
            Op::Eq => "Equal",
            Op::Ne => "NotEqual",
            Op::Gt => "GreaterThan",
            Op::Ge => "GreaterThanOrEqual",
            Op::Lt => "LessThan",
            Op::Le => "LessThanOrEqual",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Literal {
    DateTime(i64),
    Text(String),
    Int(i64),
    Null,
    Bool(bool),
}

impl Literal {
    fn edm_type(&self) -> &'static str {
        match self {
            Literal::DateTime(_) => "Edm.DateTimeOffset",
            Literal::Text(_) => "Edm.String",
            Literal::Int(_) => "Edm.Int64",
            Literal::Null => "<null>",
            Literal::Bool(_) => "Edm.Boolean",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Clause {
    field: String,
    op: Op,
    value: Literal,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            value.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => value.push(c),
                        None => return Err("Syntax error: unterminated string literal.".into()),
                    }
                }
                tokens.push(Token::Text(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '\'' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn conjunction(&mut self, clauses: &mut Vec<Clause>) -> Result<(), String> {
        self.primary(clauses)?;
        loop {
            match self.peek() {
                Some(Token::Word(word)) if word.eq_ignore_ascii_case("and") => {
                    self.next();
                    self.primary(clauses)?;
                }
                Some(Token::Word(word))
                    if word.eq_ignore_ascii_case("or") || word.eq_ignore_ascii_case("not") =>
                {
                    return Err(format!(
                        "The '{word}' operator is not supported here: join comparisons with 'and'."
                    ));
                }
                _ => return Ok(()),
            }
        }
    }

    fn primary(&mut self, clauses: &mut Vec<Clause>) -> Result<(), String> {
        match self.next() {
            Some(Token::Open) => {
                self.conjunction(clauses)?;
                match self.next() {
                    Some(Token::Close) => Ok(()),
                    _ => Err("Syntax error: ')' expected.".into()),
                }
            }
            Some(Token::Word(field)) => {
                if self.peek() == Some(&Token::Open) {
                    return Err(format!("Unknown function '{field}'."));
                }
                let op = match self.next() {
                    Some(Token::Word(word)) => Op::parse(&word)
                        .ok_or_else(|| format!("Syntax error: unknown operator '{word}'."))?,
                    _ => {
                        return Err(format!(
                            "Syntax error: an operator is expected after '{field}'."
                        ));
                    }
                };
                let value = match self.next() {
                    Some(Token::Text(text)) => Literal::Text(text),
                    Some(Token::Word(word)) => literal(&word)?,
                    _ => {
                        return Err(format!(
                            "Syntax error: a value is expected after '{field}'."
                        ));
                    }
                };
                clauses.push(Clause { field, op, value });
                Ok(())
            }
            _ => Err("Syntax error: a comparison is expected.".into()),
        }
    }
}

fn literal(word: &str) -> Result<Literal, String> {
    if word.eq_ignore_ascii_case("null") {
        return Ok(Literal::Null);
    }
    if word.eq_ignore_ascii_case("true") || word.eq_ignore_ascii_case("false") {
        return Ok(Literal::Bool(word.eq_ignore_ascii_case("true")));
    }
    if let Ok(number) = word.parse::<i64>() {
        return Ok(Literal::Int(number));
    }
    time::parse_literal(word)
        .map(Literal::DateTime)
        .ok_or_else(|| format!("Syntax error: '{word}' is not a valid literal."))
}

fn parse_filter(text: &str) -> Result<Vec<Clause>, String> {
    let mut parser = Parser {
        tokens: tokenize(text)?,
        at: 0,
    };
    let mut clauses = Vec::new();
    parser.conjunction(&mut clauses)?;
    if parser.at < parser.tokens.len() {
        return Err("Syntax error: unexpected text after the last comparison.".into());
    }
    Ok(clauses)
}

fn incompatible(field: &FieldSpec, clause: &Clause, expected: &str) -> String {
    let _ = field;
    format!(
        "A binary operator with incompatible types was detected. Found operand types '{expected}' and '{}' for operator kind '{}'.",
        clause.value.edm_type(),
        clause.op.kind()
    )
}

fn apply_clause(spec: &ApiSpec, clause: &Clause, query: &mut Query) -> Result<(), String> {
    let Some(field) = spec
        .fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(&clause.field))
    else {
        return Err(format!(
            "Could not find a property named '{}' on type '{}'.",
            clause.field, spec.entity
        ));
    };
    match field.kind {
        FieldKind::Created | FieldKind::Updated => {
            let Literal::DateTime(ticks) = clause.value else {
                return Err(incompatible(field, clause, "Edm.DateTimeOffset"));
            };
            let range: &mut TimeRange = if field.kind == FieldKind::Created {
                &mut query.window.created
            } else {
                &mut query.window.updated
            };
            match clause.op {
                Op::Eq => {
                    range.at_least(ticks);
                    range.at_most(ticks);
                }
                Op::Ge => range.at_least(ticks),
                Op::Gt => range.at_least(ticks.saturating_add(1)),
                Op::Le => range.at_most(ticks),
                Op::Lt => range.at_most(ticks.saturating_sub(1)),
                Op::Ne => {
                    return Err(format!(
                        "'ne' is not supported on '{}' by the emulator.",
                        field.name
                    ));
                }
            }
        }
        FieldKind::Text(text_field) => {
            let value = match &clause.value {
                Literal::Text(text) => Some(text.clone()),
                Literal::Null => None,
                _ => return Err(incompatible(field, clause, "Edm.String")),
            };
            let negated = match clause.op {
                Op::Eq => false,
                Op::Ne => true,
                _ => {
                    return Err(format!(
                        "Only 'eq' and 'ne' are supported on '{}' by the emulator.",
                        field.name
                    ));
                }
            };
            query.texts.push(TextCondition {
                field: text_field,
                value,
                negated,
            });
        }
        FieldKind::IncidentId { string } => {
            if clause.op != Op::Eq {
                return Err(format!(
                    "Only 'eq' is supported on '{}' by the emulator.",
                    field.name
                ));
            }
            let id = match (&clause.value, string) {
                (Literal::Text(text), true) => text.parse::<u64>().ok(),
                (Literal::Int(number), false) => u64::try_from(*number).ok(),
                (_, true) => return Err(incompatible(field, clause, "Edm.String")),
                (_, false) => return Err(incompatible(field, clause, "Edm.Int64")),
            };
            query.incident_id = match query.incident_id {
                None => Some(id),
                // Two different ids match nothing.
                Some(previous) if previous == id => Some(id),
                Some(_) => Some(None),
            };
        }
    }
    Ok(())
}

fn parse_count(name: &str, value: &str) -> Result<u64, QueryError> {
    value.trim().parse::<u64>().map_err(|_| {
        QueryError::Option(format!(
            "Invalid value '{value}' for {name} query option found. The {name} query option requires a non-negative integer value."
        ))
    })
}

fn parse_order(spec: &ApiSpec, value: &str) -> Result<Order, QueryError> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.len() != 1 {
        return Err(QueryError::Option(
            "The emulator orders by one property only.".into(),
        ));
    }
    let mut words = items[0].split_whitespace();
    let name = words.next().unwrap_or_default();
    let descending = match words.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(QueryError::Option(format!(
                "Syntax error: '{other}' is not 'asc' or 'desc'."
            )));
        }
    };
    let field = spec
        .fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .and_then(|f| match f.kind {
            FieldKind::Created => Some(OrderField::Created),
            FieldKind::Updated => Some(OrderField::Updated),
            _ => None,
        })
        .ok_or_else(|| {
            QueryError::Option(format!(
                "Ordering by '{name}' is not supported on type '{}'.",
                spec.entity
            ))
        })?;
    Ok(Order { field, descending })
}

/// Parses the raw query string of a list request.
pub(crate) fn parse(spec: &ApiSpec, raw: Option<&str>) -> Result<Query, QueryError> {
    let mut query = Query {
        window: Window::default(),
        texts: Vec::new(),
        incident_id: None,
        order: Order::NEWEST_FIRST,
        skip: 0,
        explicit_skip: false,
        top: spec.default_top,
        expand: false,
        count: false,
        skiptoken: None,
        options: Vec::new(),
    };
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !name.starts_with('$') {
            continue;
        }
        let name = name.to_ascii_lowercase();
        if query.options.iter().any(|(seen, _)| *seen == name) {
            return Err(QueryError::Option(format!(
                "Query option '{name}' was specified more than once, but it must be specified at most once."
            )));
        }
        query.options.push((name, value.into_owned()));
    }
    for (name, value) in query.options.clone() {
        match name.as_str() {
            "$filter" => {
                for clause in parse_filter(&value).map_err(QueryError::Filter)? {
                    apply_clause(spec, &clause, &mut query).map_err(QueryError::Filter)?;
                }
            }
            "$top" => {
                let top = parse_count("$top", &value)?;
                if top > spec.max_top && spec.clamp_top {
                    query.top = spec.max_top;
                    continue;
                }
                if top > spec.max_top {
                    return Err(QueryError::TopTooLarge {
                        max: spec.max_top,
                        given: top,
                    });
                }
                query.top = top;
            }
            "$skip" => {
                query.skip = parse_count("$skip", &value)?;
                query.explicit_skip = true;
            }
            "$orderby" => query.order = parse_order(spec, &value)?,
            "$select" => {}
            "$expand" if spec.expand.is_some() => {
                if !spec
                    .expand
                    .is_some_and(|expand| expand.eq_ignore_ascii_case(value.trim()))
                {
                    return Err(QueryError::Option(format!(
                        "Property '{value}' on type '{}' is not a navigation property or complex property. Only navigation properties can be expanded.",
                        spec.entity
                    )));
                }
                query.expand = true;
            }
            "$count" if spec.extra_options.contains(&"$count") => {
                query.count = match value.trim().to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(QueryError::Option(format!(
                            "'{value}' is not a valid count option."
                        )));
                    }
                };
            }
            "$skiptoken" if spec.extra_options.contains(&"$skiptoken") => {
                query.skiptoken = Some(value);
            }
            other => {
                return Err(QueryError::Option(format!(
                    "The query parameter '{other}' is not supported."
                )));
            }
        }
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: ApiSpec = ApiSpec {
        entity: "microsoft.graph.security.incident",
        fields: &[
            FieldSpec::new("lastUpdateDateTime", FieldKind::Updated),
            FieldSpec::new("createdDateTime", FieldKind::Created),
            FieldSpec::new("status", FieldKind::Text(TextField::Status)),
            FieldSpec::new("incidentId", FieldKind::IncidentId { string: true }),
        ],
        max_top: 50,
        default_top: 50,
        clamp_top: false,
        expand: Some("alerts"),
        extra_options: &["$count", "$skiptoken"],
    };

    fn query(text: &str) -> Result<Query, QueryError> {
        parse(&SPEC, Some(text))
    }

    #[test]
    fn time_comparisons_become_inclusive_ranges() {
        let q = query(
            "$filter=lastUpdateDateTime+ge+2020-06-03T18:04:29.4633333Z+and+(lastUpdateDateTime lt 2020-06-04T00:00:00Z)",
        )
        .unwrap();
        assert_eq!(
            q.window.updated.lo,
            time::parse_literal("2020-06-03T18:04:29.4633333Z")
        );
        assert_eq!(
            q.window.updated.hi,
            time::parse_literal("2020-06-04T00:00:00Z").map(|t| t - 1)
        );
        let q = query("$filter=createdDateTime gt 2020-06-03T18:04:29Z").unwrap();
        assert_eq!(
            q.window.created.lo,
            time::parse_literal("2020-06-03T18:04:29Z").map(|t| t + 1)
        );
    }

    #[test]
    fn text_and_id_conditions() {
        let q = query("$filter=status eq 'active' and incidentId eq '42'").unwrap();
        assert_eq!(q.texts[0].value.as_deref(), Some("active"));
        assert_eq!(q.incident_id, Some(Some(42)));
        assert!(q.matches_text(|_| Some("Active".into())));
        assert!(!q.matches_text(|_| Some("resolved".into())));
        let q = query("$filter=incidentId eq 'x'").unwrap();
        assert_eq!(q.incident_id, Some(None));
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(
            query("$top=51").unwrap_err(),
            QueryError::TopTooLarge { max: 50, given: 51 }
        );
        let q = query(
            "$top=5&$skip=10&$orderby=lastUpdateDateTime asc&$expand=alerts&$count=true&other=1",
        )
        .unwrap();
        assert_eq!((q.top, q.skip, q.expand, q.count), (5, 10, true, true));
        assert!(!q.order.descending);
        for bad in [
            "$top=-1",
            "$top=1&$top=2",
            "$expand=evidence",
            "$orderby=status",
            "$search=x",
        ] {
            assert!(matches!(query(bad), Err(QueryError::Option(_))), "{bad}");
        }
    }

    #[test]
    fn filter_mistakes_are_explained() {
        let cases = [
            (
                "$filter=lastUpdateTime ge 2020-01-01T00:00:00Z",
                "Could not find a property named 'lastUpdateTime'",
            ),
            (
                "$filter=lastUpdateDateTime ge '2020-01-01T00:00:00Z'",
                "incompatible types",
            ),
            ("$filter=status eq 'active' or status eq 'resolved'", "'or'"),
            ("$filter=startswith(status,'a')", "Unknown function"),
            ("$filter=incidentId eq 42", "incompatible types"),
            (
                "$filter=lastUpdateDateTime ge tomorrow",
                "not a valid literal",
            ),
        ];
        for (text, expected) in cases {
            match query(text) {
                Err(QueryError::Filter(message)) => {
                    assert!(message.contains(expected), "{text}: {message}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
