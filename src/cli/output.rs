//! `--output json|text|table` and `--query`, rendered the way the AWS CLI v2 does.
//!
//! JSON: four-space indentation. Text: awscli's text formatter (scalars of an
//! object on one tab-separated line in key order, nested lists and objects on
//! lines of their own, prefixed with the member name in upper case). Table:
//! awscli's boxed layout. No crate renders either awscli layout, hence the
//! hand-written formatters here.

use crate::error::{Error, Result};
use serde_json::Value;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Json,
    Text,
    Table,
}

pub struct Output {
    pub format: Format,
    pub query: Option<String>,
}

impl Output {
    /// Applies `--query`, then prints in the chosen format. An empty response
    /// (`{}`) prints nothing, as the AWS CLI does.
    pub fn print(&self, operation: &str, value: Value) -> Result<()> {
        let value = match &self.query {
            Some(q) => query(q, &value)?,
            None => {
                if value.as_object().is_some_and(|o| o.is_empty()) {
                    return Ok(());
                }
                value
            }
        };
        let text = render(self.format, operation, &value);
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| Error::io("cannot write to standard output", e))
    }
}

/// Renders `value` in `format`.
pub fn render(format: Format, operation: &str, value: &Value) -> String {
    match format {
        Format::Json => json(value),
        Format::Text => {
            let mut s = String::new();
            text(value, None, None, &mut s);
            s
        }
        Format::Table => table(operation, value),
    }
}

/// Evaluates a JMESPath expression.
pub fn query(expr: &str, value: &Value) -> Result<Value> {
    let bad =
        |e: &dyn std::fmt::Display| Error::usage(format!("Bad value for --query {expr}: {e}"));
    let compiled = jmespath::compile(expr).map_err(|e| bad(&e))?;
    let result = compiled.search(value).map_err(|e| bad(&e))?;
    serde_json::to_value(&*result).map_err(|e| bad(&e))
}

fn json(value: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(value, &mut ser).expect("JSON values serialize");
    buf.push(b'\n');
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

/// Python's `str()` of a JSON scalar, as awscli prints it.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

fn text(v: &Value, ident: Option<&str>, scalar_keys: Option<&[String]>, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut scalars = Vec::new();
            let mut nested: Vec<(&String, &Value)> = Vec::new();
            match scalar_keys {
                None => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    for k in keys {
                        if is_scalar(&m[k]) {
                            scalars.push(scalar(&m[k]));
                        } else {
                            nested.push((k, &m[k]));
                        }
                    }
                }
                Some(keys) => {
                    for k in keys {
                        scalars.push(m.get(k).map(scalar).unwrap_or_default());
                    }
                    let mut rest: Vec<&String> = m.keys().filter(|k| !keys.contains(k)).collect();
                    rest.sort();
                    nested.extend(rest.into_iter().map(|k| (k, &m[k])));
                }
            }
            if !scalars.is_empty() {
                if let Some(i) = ident {
                    scalars.insert(0, i.to_uppercase());
                }
                out.push_str(&scalars.join("\t"));
                out.push('\n');
            }
            for (k, v) in nested {
                text(v, Some(k), None, out);
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                return;
            }
            if items.iter().any(|x| x.is_object()) {
                let mut keys: Vec<String> = items
                    .iter()
                    .filter_map(|x| x.as_object())
                    .flat_map(|m| {
                        m.iter()
                            .filter(|(_, v)| is_scalar(v))
                            .map(|(k, _)| k.clone())
                    })
                    .collect();
                keys.sort();
                keys.dedup();
                for x in items {
                    text(x, ident, Some(&keys), out);
                }
            } else if items.iter().any(|x| x.is_array()) {
                let scalars: Vec<&Value> = items.iter().filter(|x| is_scalar(x)).collect();
                if !scalars.is_empty() {
                    scalar_list(&scalars, ident, out);
                }
                for x in items.iter().filter(|x| !is_scalar(x)) {
                    text(x, ident, None, out);
                }
            } else {
                scalar_list(&items.iter().collect::<Vec<_>>(), ident, out);
            }
        }
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar_list(items: &[&Value], ident: Option<&str>, out: &mut String) {
    match ident {
        Some(i) => {
            for x in items {
                out.push_str(&format!("{}\t{}\n", i.to_uppercase(), scalar(x)));
            }
        }
        None => {
            out.push_str(
                &items
                    .iter()
                    .map(|x| scalar(x))
                    .collect::<Vec<_>>()
                    .join("\t"),
            );
            out.push('\n');
        }
    }
}

// ---------------------------------------------------------------- table

/// One box of the table: a title, rows of cells, nested boxes.
struct TableBox {
    title: String,
    header: Option<Vec<String>>,
    rows: Vec<Vec<String>>,
    children: Vec<TableBox>,
}

fn build_box(title: &str, v: &Value) -> TableBox {
    let mut b = TableBox {
        title: title.to_string(),
        header: None,
        rows: Vec::new(),
        children: Vec::new(),
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if is_scalar(x) {
                    b.rows.push(vec![k.clone(), scalar(x)]);
                } else {
                    b.children.push(build_box(k, x));
                }
            }
        }
        Value::Array(items) if items.iter().any(|x| x.is_object()) => {
            let mut cols: Vec<String> = Vec::new();
            for m in items.iter().filter_map(|x| x.as_object()) {
                for (k, x) in m {
                    if is_scalar(x) && !cols.contains(k) {
                        cols.push(k.clone());
                    }
                }
            }
            cols.sort();
            for m in items.iter().filter_map(|x| x.as_object()) {
                b.rows.push(
                    cols.iter()
                        .map(|c| m.get(c).map(scalar).unwrap_or_default())
                        .collect(),
                );
                for (k, x) in m {
                    if !is_scalar(x) {
                        b.children.push(build_box(k, x));
                    }
                }
            }
            if !cols.is_empty() {
                b.header = Some(cols);
            }
        }
        Value::Array(items) => {
            for x in items {
                if is_scalar(x) {
                    b.rows.push(vec![scalar(x)]);
                } else {
                    b.children.push(build_box(title, x));
                }
            }
        }
        other => b.rows.push(vec![scalar(other)]),
    }
    b
}

impl TableBox {
    fn columns(&self) -> usize {
        self.header
            .as_ref()
            .map(|h| h.len())
            .unwrap_or_else(|| self.rows.iter().map(|r| r.len()).max().unwrap_or(0))
    }

    fn col_widths(&self) -> Vec<usize> {
        let mut w = vec![0; self.columns()];
        for row in self.header.iter().chain(self.rows.iter()) {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        w
    }

    fn min_width(&self) -> usize {
        let cells: usize = self.col_widths().iter().map(|w| w + 4).sum::<usize>()
            + self.columns().saturating_sub(1);
        let own = (self.title.chars().count() + 4).max(cells + 2);
        self.children
            .iter()
            .map(|c| c.min_width() + 2)
            .fold(own, usize::max)
    }

    fn render(&self, width: usize, out: &mut Vec<String>) {
        let inner = width - 2;
        let sep = format!("+{}+", "-".repeat(inner));
        out.push(format!("|{}|", center(&self.title, inner)));
        out.push(sep.clone());
        if self.columns() > 0 {
            let mut widths = self.col_widths();
            // Give the spare room to the last column.
            let used: usize = widths.iter().map(|w| w + 4).sum::<usize>() + widths.len() - 1;
            if let Some(last) = widths.last_mut() {
                *last += inner.saturating_sub(used);
            }
            let line = |cells: &[String], centered: bool| {
                let parts: Vec<String> = widths
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let c = cells.get(i).map(String::as_str).unwrap_or("");
                        if centered {
                            center(c, w + 4)
                        } else {
                            format!("  {}{}  ", c, " ".repeat(w - c.chars().count()))
                        }
                    })
                    .collect();
                format!("|{}|", parts.join("|"))
            };
            if let Some(h) = &self.header {
                out.push(line(h, true));
                out.push(sep.clone());
            }
            for r in &self.rows {
                out.push(line(r, false));
            }
            out.push(sep.clone());
        }
        for c in &self.children {
            let mut lines = Vec::new();
            c.render(inner, &mut lines);
            out.extend(lines.into_iter().map(|l| format!("|{l}|")));
        }
    }
}

fn center(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n >= width {
        return s.to_string();
    }
    let left = (width - n) / 2;
    format!("{}{}{}", " ".repeat(left), s, " ".repeat(width - n - left))
}

fn table(operation: &str, v: &Value) -> String {
    let b = build_box(operation, v);
    let width = b.min_width();
    let mut lines = vec!["-".repeat(width)];
    b.render(width, &mut lines);
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_matches_awscli_layout() {
        let v = json!({"KeyId": "k", "Enabled": true, "Tags": [{"TagKey": "a", "TagValue": "1"}], "Algs": ["X", "Y"]});
        let mut s = String::new();
        text(&v, None, None, &mut s);
        assert_eq!(s, "True\tk\nALGS\tX\nALGS\tY\nTAGS\ta\t1\n");
        let mut s = String::new();
        text(&json!("b64=="), None, None, &mut s);
        assert_eq!(s, "b64==\n");
    }

    #[test]
    fn json_uses_four_spaces() {
        assert_eq!(json(&json!({"A": 1})), "{\n    \"A\": 1\n}\n");
    }

    #[test]
    fn query_selects_like_jmespath() {
        let v = json!({"CiphertextBlob": "abc", "Keys": [{"KeyId": "1"}, {"KeyId": "2"}]});
        assert_eq!(query("CiphertextBlob", &v).unwrap(), json!("abc"));
        assert_eq!(query("Keys[].KeyId", &v).unwrap(), json!(["1", "2"]));
        assert!(query("Keys[", &v).is_err());
    }

    #[test]
    fn table_is_boxed_and_aligned() {
        let v = json!({"KeyMetadata": {"KeyId": "abc", "Enabled": true}});
        let t = table("DescribeKey", &v);
        let lines: Vec<&str> = t.lines().collect();
        let w = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == w), "{t}");
        assert!(t.contains("DescribeKey") && t.contains("KeyMetadata") && t.contains("|  abc"));
        assert!(lines[0].starts_with("---"));
    }
}
