//! Condition operators and the request context they test.

use super::{Condition, glob};
use std::collections::HashMap;

/// Condition keys and their values for one request. Keys are stored lower-cased
/// (condition key names are case-insensitive); a key may have several values
/// (`kms:EncryptionContextKeys`, `kms:GrantOperations`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConditionContext(HashMap<String, Vec<String>>);

impl ConditionContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.to_ascii_lowercase(), vec![value.into()]);
        self
    }

    pub fn set_many(&mut self, key: &str, values: impl IntoIterator<Item = String>) -> &mut Self {
        self.0
            .insert(key.to_ascii_lowercase(), values.into_iter().collect());
        self
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.0.get(key).map(Vec::as_slice)
    }
}

/// `ForAllValues:` / `ForAnyValue:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    ForAllValues,
    ForAnyValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Null,
}

impl Op {
    pub fn parse(name: &str) -> Option<Op> {
        use Op::*;
        Some(match name {
            "StringEquals" => StringEquals,
            "StringNotEquals" => StringNotEquals,
            "StringEqualsIgnoreCase" => StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => StringNotEqualsIgnoreCase,
            "StringLike" => StringLike,
            "StringNotLike" => StringNotLike,
            "NumericEquals" => NumericEquals,
            "NumericNotEquals" => NumericNotEquals,
            "NumericLessThan" => NumericLessThan,
            "NumericLessThanEquals" => NumericLessThanEquals,
            "NumericGreaterThan" => NumericGreaterThan,
            "NumericGreaterThanEquals" => NumericGreaterThanEquals,
            "DateEquals" => DateEquals,
            "DateNotEquals" => DateNotEquals,
            "DateLessThan" => DateLessThan,
            "DateLessThanEquals" => DateLessThanEquals,
            "DateGreaterThan" => DateGreaterThan,
            "DateGreaterThanEquals" => DateGreaterThanEquals,
            "Bool" => Bool,
            "ArnEquals" => ArnEquals,
            "ArnLike" => ArnLike,
            "ArnNotEquals" => ArnNotEquals,
            "ArnNotLike" => ArnNotLike,
            "Null" => Null,
            _ => return None,
        })
    }

    /// Negated operators match when the key is absent, and need every value to miss.
    pub fn negated(self) -> bool {
        use Op::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | DateNotEquals
                | ArnNotEquals
                | ArnNotLike
        )
    }

    /// Whether the policy value `want` is a value this operator can compare with.
    pub fn accepts(self, want: &str) -> bool {
        use Op::*;
        match self {
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => want.parse::<f64>().is_ok(),
            DateEquals
            | DateNotEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => crate::clock::parse_time(want).is_ok(),
            Bool | Null => want.eq_ignore_ascii_case("true") || want.eq_ignore_ascii_case("false"),
            _ => true,
        }
    }

    /// The positive form's test of one request value against one policy value.
    fn hit(self, have: &str, want: &str) -> bool {
        use Op::*;
        let num = |f: fn(f64, f64) -> bool| match (have.parse::<f64>(), want.parse::<f64>()) {
            (Ok(a), Ok(b)) => f(a, b),
            _ => false,
        };
        let date = |f: fn(i64, i64) -> bool| match (
            crate::clock::parse_time(have),
            crate::clock::parse_time(want),
        ) {
            (Ok(a), Ok(b)) => f(a.timestamp_millis(), b.timestamp_millis()),
            _ => false,
        };
        match self {
            StringEquals | StringNotEquals => have == want,
            StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => have.eq_ignore_ascii_case(want),
            StringLike | StringNotLike => glob(want, have),
            NumericEquals | NumericNotEquals => num(|a, b| a == b),
            NumericLessThan => num(|a, b| a < b),
            NumericLessThanEquals => num(|a, b| a <= b),
            NumericGreaterThan => num(|a, b| a > b),
            NumericGreaterThanEquals => num(|a, b| a >= b),
            DateEquals | DateNotEquals => date(|a, b| a == b),
            DateLessThan => date(|a, b| a < b),
            DateLessThanEquals => date(|a, b| a <= b),
            DateGreaterThan => date(|a, b| a > b),
            DateGreaterThanEquals => date(|a, b| a >= b),
            Bool => have.eq_ignore_ascii_case(want),
            ArnEquals | ArnNotEquals => have == want,
            ArnLike | ArnNotLike => arn_like(want, have),
            Null => unreachable!("Null is decided on presence"),
        }
    }
}

/// ArnLike: the six colon-separated parts matched one by one (the resource part
/// may itself contain colons).
fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    if p.len() == 1 && p[0] == "*" {
        return true;
    }
    p.len() == a.len() && p.iter().zip(&a).all(|(p, a)| glob(p, a))
}

impl Condition {
    /// Whether this condition holds for `ctx`.
    pub fn holds(&self, ctx: &ConditionContext) -> bool {
        let have = ctx.get(&self.key).filter(|v| !v.is_empty());
        if self.op == Op::Null {
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return have.is_none() == want_absent;
        }
        let Some(have) = have else {
            return match self.qualifier {
                // ForAllValues over no values is vacuously true; ForAnyValue false.
                Some(Qualifier::ForAllValues) => true,
                Some(Qualifier::ForAnyValue) => false,
                None => self.if_exists || self.op.negated(),
            };
        };
        let one = |v: &String| {
            let positive = self.values.iter().any(|w| self.op.hit(v, w));
            if self.op.negated() {
                !positive
            } else {
                positive
            }
        };
        match self.qualifier {
            Some(Qualifier::ForAllValues) => have.iter().all(one),
            Some(Qualifier::ForAnyValue) => have.iter().any(one),
            // Without a set operator: a positive operator needs some value to match;
            // a negated one needs every value to miss.
            None if self.op.negated() => have.iter().all(one),
            None => have.iter().any(one),
        }
    }
}
