//! Running a parsed query: names resolved and types checked against the table (a [`Plan`]),
//! then rows generated one at a time and passed through the stages, so that memory holds the
//! rows of the answer, not the table.

use super::kql::{CmpOp, Expr, KqlError, Literal, Query, Stage};
use super::tables::{self, Cell, Column, Kind, Source, Table};

/// A condition of `where`, resolved to column positions and typed values.
#[derive(Clone, Debug)]
enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Text {
        column: usize,
        op: CmpOp,
        value: String,
        /// Lower-cased once, for the case-insensitive operators.
        lower: String,
    },
    /// A number or a time (ticks) compared with `==`, `!=`, `<`, `<=`, `>`, `>=`.
    Ordered {
        column: usize,
        op: CmpOp,
        value: i64,
    },
}

#[derive(Clone, Debug)]
enum Step {
    Filter(Cond),
    Project(Vec<usize>),
    Take(u64),
    Count,
}

/// A query ready to run on any tenant's rows.
#[derive(Debug)]
pub(crate) struct Plan {
    table: &'static Table,
    steps: Vec<Step>,
    /// The columns of the answer.
    pub schema: Vec<Column>,
}

/// The column `count` produces.
const COUNT: Column = Column {
    name: "Count",
    kind: Kind::Int64,
};

impl Plan {
    /// Resolves `query`; `now` (ticks) is the time of `ago()` and `now()`.
    pub(crate) fn new(query: &Query, now: i64) -> Result<Plan, KqlError> {
        let name = query.table.text.as_str();
        let Some(table) = tables::table(name) else {
            return Err(if tables::OTHER_TABLES.contains(&name) {
                KqlError::Unsupported(format!(
                    "The emulator does not generate the table '{name}'; it has {}",
                    tables::TABLES
                        .iter()
                        .map(|table| table.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            } else {
                KqlError::Semantic(format!(
                    "Failed to resolve table or column expression named '{name}'"
                ))
            });
        };
        let mut schema: Vec<Column> = table.columns.to_vec();
        let mut steps = Vec::with_capacity(query.stages.len());
        for stage in &query.stages {
            match stage {
                Stage::Where(expr) => steps.push(Step::Filter(resolve(expr, &schema, now)?)),
                Stage::Project(names) => {
                    let mut positions = Vec::with_capacity(names.len());
                    for name in names {
                        let position = position(&schema, &name.text, "project")?;
                        if positions.contains(&position) {
                            return Err(KqlError::Semantic(format!(
                                "'project' operator: A column named '{}' is projected more than once",
                                name.text
                            )));
                        }
                        positions.push(position);
                    }
                    schema = positions.iter().map(|p| schema[*p]).collect();
                    steps.push(Step::Project(positions));
                }
                Stage::Take(count) => steps.push(Step::Take(*count)),
                Stage::Count => {
                    schema = vec![COUNT];
                    steps.push(Step::Count);
                }
            }
        }
        Ok(Plan {
            table,
            steps,
            schema,
        })
    }

    /// The answer's rows for a tenant, for the rows whose `Timestamp` is in `[lo, hi]` (the
    /// `Timespan`), generated as they are read.
    pub(crate) fn rows<'a>(
        &'a self,
        source: &'a Source,
        lo: i64,
        hi: i64,
    ) -> Box<dyn Iterator<Item = Vec<Cell>> + 'a> {
        let table = self.table;
        let mut rows: Box<dyn Iterator<Item = Vec<Cell>> + 'a> = Box::new(
            source
                .index_range(table, lo, hi)
                .map(move |index| source.row(table, index)),
        );
        for step in &self.steps {
            rows = match step {
                Step::Filter(cond) => Box::new(rows.filter(move |row| holds(cond, row))),
                Step::Project(positions) => Box::new(
                    rows.map(move |row| positions.iter().map(|p| row[*p].clone()).collect()),
                ),
                Step::Take(count) => {
                    Box::new(rows.take(usize::try_from(*count).unwrap_or(usize::MAX)))
                }
                Step::Count => {
                    let count = rows.count();
                    Box::new(std::iter::once(vec![Cell::Number(
                        i64::try_from(count).unwrap_or(i64::MAX),
                    )]))
                }
            };
        }
        rows
    }
}

fn position(schema: &[Column], name: &str, operator: &str) -> Result<usize, KqlError> {
    schema
        .iter()
        .position(|column| column.name == name)
        .ok_or_else(|| {
            KqlError::Semantic(format!(
                "'{operator}' operator: Failed to resolve scalar expression named '{name}'"
            ))
        })
}

fn literal_type(value: &Literal) -> &'static str {
    match value {
        Literal::Text(_) => "string",
        Literal::Number(_) => "long",
        Literal::Ago(_) | Literal::Now | Literal::At(_) => "datetime",
    }
}

fn resolve(expr: &Expr, schema: &[Column], now: i64) -> Result<Cond, KqlError> {
    match expr {
        Expr::And(left, right) => Ok(Cond::And(
            Box::new(resolve(left, schema, now)?),
            Box::new(resolve(right, schema, now)?),
        )),
        Expr::Or(left, right) => Ok(Cond::Or(
            Box::new(resolve(left, schema, now)?),
            Box::new(resolve(right, schema, now)?),
        )),
        Expr::Compare { column, op, value } => {
            let position = position(schema, &column.text, "where")?;
            let kind = schema[position].kind;
            let mismatch = || {
                KqlError::Semantic(format!(
                    "'where' operator: Cannot compare values of types {} and {} with '{}'",
                    kind.kql_name(),
                    literal_type(value),
                    op.text()
                ))
            };
            let ordered = matches!(
                op,
                CmpOp::Eq | CmpOp::Ne | CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge
            );
            match (kind, value) {
                (Kind::String, Literal::Text(text))
                    if !matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge) =>
                {
                    Ok(Cond::Text {
                        column: position,
                        op: *op,
                        value: text.clone(),
                        lower: text.to_lowercase(),
                    })
                }
                (kind, Literal::Number(number)) if kind.is_number() && ordered => {
                    Ok(Cond::Ordered {
                        column: position,
                        op: *op,
                        value: *number,
                    })
                }
                (Kind::DateTime, Literal::Ago(span)) if ordered => Ok(Cond::Ordered {
                    column: position,
                    op: *op,
                    value: now - span,
                }),
                (Kind::DateTime, Literal::Now) if ordered => Ok(Cond::Ordered {
                    column: position,
                    op: *op,
                    value: now,
                }),
                (Kind::DateTime, Literal::At(at)) if ordered => Ok(Cond::Ordered {
                    column: position,
                    op: *op,
                    value: *at,
                }),
                _ => Err(mismatch()),
            }
        }
    }
}

fn holds(cond: &Cond, row: &[Cell]) -> bool {
    match cond {
        Cond::And(left, right) => holds(left, row) && holds(right, row),
        Cond::Or(left, right) => holds(left, row) || holds(right, row),
        Cond::Text {
            column,
            op,
            value,
            lower,
        } => {
            let Some(Cell::Text(text)) = row.get(*column) else {
                return false;
            };
            match op {
                CmpOp::Eq => text == value,
                CmpOp::Ne => text != value,
                CmpOp::EqCi => text.to_lowercase() == *lower,
                CmpOp::NeCi => text.to_lowercase() != *lower,
                CmpOp::Has => has_term(&text.to_lowercase(), lower),
                CmpOp::NotHas => !has_term(&text.to_lowercase(), lower),
                CmpOp::Contains => text.to_lowercase().contains(lower.as_str()),
                CmpOp::NotContains => !text.to_lowercase().contains(lower.as_str()),
                CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => false,
            }
        }
        Cond::Ordered { column, op, value } => {
            let actual = match row.get(*column) {
                Some(Cell::Number(number)) => *number,
                Some(Cell::Time(ticks)) => *ticks,
                _ => return false,
            };
            match op {
                CmpOp::Eq => actual == *value,
                CmpOp::Ne => actual != *value,
                CmpOp::Lt => actual < *value,
                CmpOp::Le => actual <= *value,
                CmpOp::Gt => actual > *value,
                CmpOp::Ge => actual >= *value,
                _ => false,
            }
        }
    }
}

/// KQL's `has` (both sides lower-cased): `needle` occurs as whole terms, i.e. not inside a run
/// of letters and digits on either side (`"powershell.exe" has "powershell"`, not `"shell"`).
pub(crate) fn has_term(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let term = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut from = 0;
    while let Some(found) = haystack[from..].find(needle) {
        let start = from + found;
        let end = start + needle.len();
        let starts_term =
            !term(haystack[..start].chars().next_back()) || !term(needle.chars().next());
        let ends_term = !term(haystack[end..].chars().next()) || !term(needle.chars().next_back());
        if starts_term && ends_term {
            return true;
        }
        from = start + haystack[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::kql::parse;
    use super::*;
    use crate::defender::config::HuntingConfig;
    use crate::defender::time::TICKS_PER_SECOND;

    fn source() -> Source {
        Source::new(
            3,
            "contoso.com".into(),
            HuntingConfig {
                rows_per_table: 400,
                end: Some("2026-01-08T00:00:00Z".parse().unwrap()),
                ..HuntingConfig::default()
            },
        )
    }

    fn run(text: &str) -> Result<(Vec<Column>, Vec<Vec<Cell>>), KqlError> {
        let source = source();
        let plan = Plan::new(&parse(text)?, source.end)?;
        let rows = plan.rows(&source, i64::MIN, i64::MAX).collect();
        Ok((plan.schema, rows))
    }

    fn text(cell: &Cell) -> &str {
        match cell {
            Cell::Text(text) => text,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_operator_filters_as_kql_does() {
        let (_, all) = run("DeviceProcessEvents").unwrap();
        assert_eq!(all.len(), 400);
        let count = |text: &str| run(text).unwrap().1.len();
        let powershell = count("DeviceProcessEvents | where FileName == \"powershell.exe\"");
        assert!(powershell > 0 && powershell < 400);
        assert_eq!(
            count("DeviceProcessEvents | where FileName == \"PowerShell.exe\""),
            0
        );
        assert_eq!(
            count("DeviceProcessEvents | where FileName =~ \"PowerShell.EXE\""),
            powershell
        );
        assert_eq!(
            count("DeviceProcessEvents | where FileName !~ \"powershell.exe\""),
            400 - powershell
        );
        assert_eq!(
            count("DeviceProcessEvents | where FileName != \"powershell.exe\""),
            400 - powershell
        );
        assert_eq!(
            count("DeviceProcessEvents | where FileName has \"POWERSHELL\""),
            powershell
        );
        assert_eq!(
            count("DeviceProcessEvents | where FileName has \"shell\""),
            0
        );
        assert_eq!(
            count("DeviceProcessEvents | where FileName contains \"shell\""),
            powershell
        );
        assert_eq!(
            count("DeviceProcessEvents | where FileName !has \"powershell\""),
            400 - powershell
        );
        assert_eq!(
            count("DeviceProcessEvents | where FileName !contains \"SHELL\""),
            400 - powershell
        );
        let high = count("DeviceProcessEvents | where ProcessId > 30000");
        let low = count("DeviceProcessEvents | where ProcessId <= 30000");
        assert_eq!(high + low, 400);
        assert_eq!(
            count("DeviceProcessEvents | where ProcessId > 30000 or ProcessId <= 30000"),
            400
        );
        assert_eq!(
            count("DeviceProcessEvents | where ProcessId > 30000 and ProcessId <= 30000"),
            0
        );
        // Rows span the 7 days before the end: one day back is about a seventh.
        let day = count("DeviceProcessEvents | where Timestamp > ago(1d)");
        assert!((50..=65).contains(&day), "{day}");
        assert_eq!(
            count("DeviceProcessEvents | where Timestamp < ago(1d)")
                + count("DeviceProcessEvents | where Timestamp >= ago(1d)"),
            400
        );
        assert_eq!(
            count("DeviceProcessEvents | where Timestamp >= datetime(2026-01-07)"),
            day
        );
        assert_eq!(count("DeviceProcessEvents | where Timestamp > now()"), 0);
    }

    #[test]
    fn project_take_and_count_shape_the_answer() {
        let (schema, rows) =
            run("EmailEvents | where ThreatTypes == 'Phish' | project Subject, Timestamp | take 5")
                .unwrap();
        assert_eq!(
            schema.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["Subject", "Timestamp"]
        );
        assert_eq!(rows.len(), 5);
        assert!(matches!(rows[0][1], Cell::Time(_)));
        assert!(!text(&rows[0][0]).is_empty());
        let (schema, rows) =
            run("IdentityLogonEvents | where ActionType == 'LogonFailed' | count").unwrap();
        assert_eq!(schema, [COUNT]);
        assert_eq!(rows.len(), 1);
        let Cell::Number(failed) = rows[0][0] else {
            panic!()
        };
        assert!(failed > 0 && failed < 400);
        // Stages after count see its column.
        let (_, rows) = run("IdentityLogonEvents | count | where Count > 1000").unwrap();
        assert!(rows.is_empty());
        let (_, rows) = run("DeviceNetworkEvents | limit 0").unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn names_and_types_are_checked() {
        for (query, needle) in [
            (
                "Nope",
                "Failed to resolve table or column expression named 'Nope'",
            ),
            (
                "DeviceFileEvents",
                "does not generate the table 'DeviceFileEvents'",
            ),
            (
                "EmailEvents | where Sender == 'x'",
                "'where' operator: Failed to resolve scalar expression named 'Sender'",
            ),
            (
                "EmailEvents | project Subject | where Timestamp > ago(1d)",
                "named 'Timestamp'",
            ),
            (
                "EmailEvents | project Nope",
                "'project' operator: Failed to resolve scalar expression named 'Nope'",
            ),
            ("EmailEvents | project Subject, Subject", "more than once"),
            (
                "EmailEvents | where Subject > 'a'",
                "types string and string with '>'",
            ),
            (
                "EmailEvents | where Timestamp > 3",
                "types datetime and long",
            ),
            (
                "EmailEvents | where UrlCount == 'x'",
                "types int and string",
            ),
            (
                "EmailEvents | where UrlCount has 'x'",
                "types int and string",
            ),
            (
                "EmailEvents | where Subject == now()",
                "types string and datetime",
            ),
            (
                "EmailEvents | where Timestamp contains ago(1d)",
                "with 'contains'",
            ),
        ] {
            let error = run(query).unwrap_err();
            assert!(error.to_string().contains(needle), "{query}: {error}");
        }
    }

    #[test]
    fn has_matches_whole_terms() {
        assert!(has_term("c:\\windows\\system32\\cmd.exe", "cmd"));
        assert!(has_term("powershell.exe -nop", "powershell.exe"));
        assert!(has_term("a.b", ".b"));
        assert!(!has_term("powershell.exe", "shell"));
        assert!(!has_term("cmdlet", "cmd"));
        assert!(has_term("x", ""));
        let _ = TICKS_PER_SECOND;
    }
}
