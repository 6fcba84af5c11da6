//! Filters in ServiceNow encoded-query syntax (`state=2^priority<=2^ORurgency=1`,
//! `^NQ`, `LIKE`, `IN`, `ISEMPTY`, the change operators …): parsing with the
//! position of any error, rendering back, and evaluation against a new and an
//! optional old record. Pure functions; never touches storage.
//!
//! Precedence follows ServiceNow: `^OR` binds tighter than `^`, and `^NQ`
//! separates whole alternative queries. `^EQ` and `^ORDERBY…` (which only
//! matter for lists in ServiceNow) are accepted and ignored, so a query copied
//! from a ServiceNow list URL can be pasted as is.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// A parsed encoded query. It matches when any of its `^NQ` alternatives does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Query {
    /// `^NQ`-separated alternatives; each is an AND of OR-groups of terms.
    pub alternatives: Vec<Vec<Vec<Term>>>,
}

/// One `field OPERATOR value` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub field: String,
    pub operator: Operator,
    pub value: Value,
}

/// The right-hand side of a term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    None,
    One(String),
    List(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Eq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    NotLike,
    StartsWith,
    EndsWith,
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    ValChanges,
    ChangesTo,
    ChangesFrom,
}

/// What a term's operator expects on its right-hand side.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arity {
    Nothing,
    One,
    List,
}

/// Operators by spelling, longest first so that `<=` wins over `<` and
/// `ISNOTEMPTY` over `IN`.
const OPERATORS: &[(&str, Operator)] = &[
    ("ISNOTEMPTY", Operator::IsNotEmpty),
    ("CHANGESFROM", Operator::ChangesFrom),
    ("VALCHANGES", Operator::ValChanges),
    ("STARTSWITH", Operator::StartsWith),
    ("CHANGESTO", Operator::ChangesTo),
    ("ENDSWITH", Operator::EndsWith),
    ("ISEMPTY", Operator::IsEmpty),
    ("NOTLIKE", Operator::NotLike),
    ("NOT IN", Operator::NotIn),
    ("LIKE", Operator::Like),
    ("IN", Operator::In),
    ("!=", Operator::NotEq),
    ("<=", Operator::Le),
    (">=", Operator::Ge),
    ("=", Operator::Eq),
    ("<", Operator::Lt),
    (">", Operator::Gt),
];

impl Operator {
    pub fn spelling(self) -> &'static str {
        OPERATORS
            .iter()
            .find(|(_, op)| *op == self)
            .map(|(text, _)| *text)
            .unwrap_or("=")
    }

    fn arity(self) -> Arity {
        match self {
            Operator::IsEmpty | Operator::IsNotEmpty | Operator::ValChanges => Arity::Nothing,
            Operator::In | Operator::NotIn => Arity::List,
            _ => Arity::One,
        }
    }

    /// Whether the operator looks at the old record.
    pub fn is_change_operator(self) -> bool {
        matches!(
            self,
            Operator::ValChanges | Operator::ChangesTo | Operator::ChangesFrom
        )
    }
}

/// A malformed query: what is wrong and where (0-based byte offset).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid encoded query at position {}: {message}", position + 1)]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

fn error(position: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        position,
        message: message.into(),
    }
}

/// Read access to a record's fields for evaluation.
pub trait Fields {
    /// The field's value, or `None` when the record does not have it.
    /// Borrowed when stored as text, owned when computed (times, counts).
    fn field(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl Fields for BTreeMap<String, String> {
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(|value| Cow::Borrowed(value.as_str()))
    }
}

impl Query {
    /// Parses an encoded query. An empty query matches every record.
    pub fn parse(text: &str) -> Result<Query, ParseError> {
        let mut alternatives: Vec<Vec<Vec<Term>>> = Vec::new();
        let mut current: Vec<Vec<Term>> = Vec::new();
        let mut offset = 0usize;
        let mut first = true;
        for piece in text.split('^') {
            let start = offset;
            offset += piece.len() + 1;
            if first {
                first = false;
                if piece.is_empty() {
                    if text.is_empty() {
                        break;
                    }
                    return Err(error(start, "expected a condition before `^`"));
                }
                current.push(vec![parse_term(piece, start)?]);
                continue;
            }
            if piece == "EQ" || piece.starts_with("ORDERBY") {
                continue;
            }
            if let Some(rest) = piece.strip_prefix("NQ") {
                if current.is_empty() {
                    return Err(error(start, "`^NQ` needs a condition before it"));
                }
                alternatives.push(std::mem::take(&mut current));
                current.push(vec![parse_term(rest, start + 2)?]);
            } else if let Some(rest) = piece.strip_prefix("OR") {
                let Some(group) = current.last_mut() else {
                    return Err(error(start, "`^OR` needs a condition before it"));
                };
                group.push(parse_term(rest, start + 2)?);
            } else if piece.is_empty() {
                return Err(error(
                    start,
                    "empty condition between `^` separators (remove the extra `^`)",
                ));
            } else {
                current.push(vec![parse_term(piece, start)?]);
            }
        }
        if !current.is_empty() {
            alternatives.push(current);
        }
        Ok(Query { alternatives })
    }

    pub fn is_empty(&self) -> bool {
        self.alternatives.is_empty()
    }

    /// Whether the query uses `VALCHANGES`, `CHANGESTO` or `CHANGESFROM`.
    pub fn uses_change_operators(&self) -> bool {
        self.terms().any(|term| term.operator.is_change_operator())
    }

    pub fn terms(&self) -> impl Iterator<Item = &Term> {
        self.alternatives.iter().flatten().flatten()
    }

    /// Evaluates the query against `new`, with `old` the record before the
    /// change (`None` for a record being created).
    pub fn matches(&self, new: &dyn Fields, old: Option<&dyn Fields>) -> bool {
        if self.alternatives.is_empty() {
            return true;
        }
        self.alternatives.iter().any(|groups| {
            groups
                .iter()
                .all(|group| group.iter().any(|term| term.matches(new, old)))
        })
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (a, groups) in self.alternatives.iter().enumerate() {
            if a > 0 {
                f.write_str("^NQ")?;
            }
            for (g, group) in groups.iter().enumerate() {
                if g > 0 {
                    f.write_str("^")?;
                }
                for (t, term) in group.iter().enumerate() {
                    if t > 0 {
                        f.write_str("^OR")?;
                    }
                    write!(f, "{term}")?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.field, self.operator.spelling())?;
        match &self.value {
            Value::None => Ok(()),
            Value::One(value) => f.write_str(value),
            Value::List(values) => f.write_str(&values.join(",")),
        }
    }
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
}

fn parse_term(text: &str, start: usize) -> Result<Term, ParseError> {
    let field_len = text.find(|c: char| !is_field_char(c)).unwrap_or(text.len());
    if field_len == 0 {
        return Err(error(
            start,
            "expected a field name (lowercase letters, digits, `_`, `.`)",
        ));
    }
    let field = &text[..field_len];
    let rest = &text[field_len..];
    let operator_at = start + field_len;
    if rest.is_empty() {
        return Err(error(
            operator_at,
            format!("field `{field}` has no operator (e.g. `{field}=value`)"),
        ));
    }
    let Some((spelling, operator)) = OPERATORS
        .iter()
        .find(|(spelling, _)| rest.starts_with(spelling))
    else {
        let shown: String = rest.chars().take(12).collect();
        return Err(error(
            operator_at,
            format!("unknown operator at `{shown}` after field `{field}`"),
        ));
    };
    let raw_value = &rest[spelling.len()..];
    let value_at = operator_at + spelling.len();
    let value = match operator.arity() {
        Arity::Nothing => {
            if !raw_value.is_empty() {
                return Err(error(
                    value_at,
                    format!("`{spelling}` takes no value, found `{raw_value}`"),
                ));
            }
            Value::None
        }
        Arity::One => Value::One(raw_value.to_string()),
        Arity::List => {
            if raw_value.is_empty() {
                Value::List(Vec::new())
            } else {
                Value::List(raw_value.split(',').map(str::to_string).collect())
            }
        }
    };
    Ok(Term {
        field: field.to_string(),
        operator: *operator,
        value,
    })
}

impl Term {
    fn matches(&self, new: &dyn Fields, old: Option<&dyn Fields>) -> bool {
        let current = new.field(&self.field).unwrap_or_default();
        let current = current.as_ref();
        let previous = old
            .and_then(|old| old.field(&self.field))
            .unwrap_or_default();
        let previous = previous.as_ref();
        let one = match &self.value {
            Value::One(value) => value.as_str(),
            _ => "",
        };
        let list: &[String] = match &self.value {
            Value::List(values) => values,
            _ => &[],
        };
        match self.operator {
            Operator::Eq => current == one,
            Operator::NotEq => current != one,
            Operator::Lt => compare(current, one) == Ordering::Less,
            Operator::Le => compare(current, one) != Ordering::Greater,
            Operator::Gt => compare(current, one) == Ordering::Greater,
            Operator::Ge => compare(current, one) != Ordering::Less,
            Operator::Like => contains_ignore_case(current, one),
            Operator::NotLike => !contains_ignore_case(current, one),
            Operator::StartsWith => current.to_lowercase().starts_with(&one.to_lowercase()),
            Operator::EndsWith => current.to_lowercase().ends_with(&one.to_lowercase()),
            Operator::In => list.iter().any(|value| value == current),
            Operator::NotIn => !list.iter().any(|value| value == current),
            Operator::IsEmpty => current.is_empty(),
            Operator::IsNotEmpty => !current.is_empty(),
            Operator::ValChanges => current != previous,
            Operator::ChangesTo => current != previous && current == one,
            Operator::ChangesFrom => current != previous && previous == one,
        }
    }
}

/// Numbers compare as numbers, everything else as text.
fn compare(left: &str, right: &str) -> Ordering {
    match (left.trim().parse::<f64>(), right.trim().parse::<f64>()) {
        (Ok(l), Ok(r)) => l.partial_cmp(&r).unwrap_or(Ordering::Equal),
        _ => left.cmp(right),
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(query: &str, new: &[(&str, &str)], old: Option<&[(&str, &str)]>) -> bool {
        let query = Query::parse(query).unwrap();
        let new = record(new);
        let old = old.map(record);
        query.matches(&new, old.as_ref().map(|o| o as &dyn Fields))
    }

    #[test]
    fn or_binds_tighter_than_and() {
        let q = "state=2^priority<=2^ORurgency=1";
        assert!(check(
            q,
            &[("state", "2"), ("priority", "5"), ("urgency", "1")],
            None
        ));
        assert!(check(
            q,
            &[("state", "2"), ("priority", "1"), ("urgency", "3")],
            None
        ));
        assert!(!check(
            q,
            &[("state", "3"), ("priority", "1"), ("urgency", "1")],
            None
        ));
        assert!(!check(
            q,
            &[("state", "2"), ("priority", "5"), ("urgency", "3")],
            None
        ));
    }

    #[test]
    fn new_query_separates_alternatives() {
        let q = "active=true^NQpriority=1";
        assert!(check(q, &[("active", "true")], None));
        assert!(check(q, &[("priority", "1")], None));
        assert!(!check(q, &[("active", "false"), ("priority", "2")], None));
    }

    #[test]
    fn every_operator() {
        let r = [("a", "Hello World"), ("n", "10"), ("e", "")];
        assert!(check("a=Hello World", &r, None));
        assert!(check("a!=x", &r, None));
        assert!(check("n<9.5^ORn>9", &r, None));
        assert!(check("n<=10^n>=10", &r, None));
        assert!(check("n<11", &r, None), "numeric, not text, comparison");
        assert!(check("aLIKEworld", &r, None));
        assert!(check("aNOTLIKEmars", &r, None));
        assert!(check("aSTARTSWITHhello^aENDSWITHWORLD", &r, None));
        assert!(check("nIN1,10,100", &r, None));
        assert!(check("nNOT IN1,100", &r, None));
        assert!(check("eISEMPTY^missingISEMPTY^aISNOTEMPTY", &r, None));
        assert!(!check("nIN", &r, None));
    }

    #[test]
    fn change_operators_compare_old_and_new() {
        let old = [("state", "1"), ("x", "same")];
        let new = [("state", "2"), ("x", "same")];
        assert!(check("stateVALCHANGES", &new, Some(&old)));
        assert!(!check("xVALCHANGES", &new, Some(&old)));
        assert!(check("stateCHANGESTO2", &new, Some(&old)));
        assert!(!check("stateCHANGESTO3", &new, Some(&old)));
        assert!(check("stateCHANGESFROM1", &new, Some(&old)));
        assert!(!check("stateCHANGESFROM2", &new, Some(&old)));
        // A created record changes every field it sets.
        assert!(check("stateVALCHANGES", &new, None));
    }

    #[test]
    fn servicenow_suffixes_are_ignored() {
        let q = Query::parse("active=true^ORDERBYnumber^EQ").unwrap();
        assert_eq!(q.to_string(), "active=true");
        assert!(Query::parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_position() {
        let e = Query::parse("state=1^^priority=2").unwrap_err();
        assert_eq!(e.position, 8);
        let e = Query::parse("state=1^priority~2").unwrap_err();
        assert_eq!(e.position, 16);
        assert!(e.message.contains("unknown operator"), "{e}");
        let e = Query::parse("^ORstate=1").unwrap_err();
        assert_eq!(e.position, 0);
        let e = Query::parse("stateISEMPTYx").unwrap_err();
        assert!(e.message.contains("takes no value"), "{e}");
        let e = Query::parse("state").unwrap_err();
        assert!(e.to_string().contains("position 6"), "{e}");
        let e = Query::parse("State=1").unwrap_err();
        assert!(e.message.contains("field name"), "{e}");
    }

    fn operator_strategy() -> impl Strategy<Value = Operator> {
        proptest::sample::select(OPERATORS.iter().map(|(_, op)| *op).collect::<Vec<_>>())
    }

    fn term_strategy() -> impl Strategy<Value = Term> {
        (
            "[a-z][a-z0-9_]{0,8}",
            operator_strategy(),
            "[a-zA-Z0-9 _.-]{0,8}",
            proptest::collection::vec("[a-zA-Z0-9 _.-]{1,6}", 0..4),
        )
            .prop_map(|(field, operator, one, list)| {
                let value = match operator.arity() {
                    Arity::Nothing => Value::None,
                    Arity::One => Value::One(one),
                    Arity::List => Value::List(list),
                };
                Term {
                    field,
                    operator,
                    value,
                }
            })
    }

    fn query_strategy() -> impl Strategy<Value = Query> {
        proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(term_strategy(), 1..4), 1..4),
            0..3,
        )
        .prop_map(|alternatives| Query { alternatives })
    }

    proptest! {
        #[test]
        fn rendering_then_parsing_gives_the_same_query(query in query_strategy()) {
            let text = query.to_string();
            let parsed = Query::parse(&text).unwrap();
            prop_assert_eq!(parsed, query, "text: {}", text);
        }

        #[test]
        fn arbitrary_text_never_panics_and_errors_point_inside(text in "\\PC{0,40}") {
            if let Err(e) = Query::parse(&text) {
                prop_assert!(e.position <= text.len());
            }
        }

        #[test]
        fn evaluation_is_or_of_and_of_or(
            query in query_strategy(),
            values in proptest::collection::btree_map("[a-z][a-z0-9_]{0,8}", "[a-zA-Z0-9 _.-]{0,8}", 0..6),
        ) {
            let expected = query.alternatives.is_empty() || query.alternatives.iter().any(|groups| {
                groups.iter().all(|group| group.iter().any(|term| term.matches(&values, None)))
            });
            prop_assert_eq!(query.matches(&values, None), expected);
            // Each term, alone, agrees with its own parse.
            for term in query.terms() {
                let single = Query::parse(&term.to_string()).unwrap();
                prop_assert_eq!(single.matches(&values, None), term.matches(&values, None));
            }
        }
    }
}
