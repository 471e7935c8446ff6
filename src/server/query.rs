//! AWS's Query protocol, for every service that speaks it (EC2's flavour, and
//! the plain one of IAM and STS): no HTTP here, only the codec.
//!
//! - [`parse_form`]: an `application/x-www-form-urlencoded` body or a query
//!   string → its parameters, in order, bounded ([`MAX_INPUT`] bytes,
//!   [`MAX_PARAMS`] parameters, [`MAX_NAME`] bytes a name), never reading past
//!   the input; bad escapes or bytes that are not UTF-8 are `MalformedQueryString`.
//! - [`decode`]: parameters → one JSON object in the service's member names
//!   (`VolumeId.1=vol-1&Filter.1.Name=status&Filter.1.Value.1=available` →
//!   `{"VolumeIds": ["vol-1"], "Filters": [{"Name": "status", "Values":
//!   ["available"]}]}`), guided by a [`Shape`] written for each operation.
//!   Lists are numbered from 1 (`Name.N`, EC2; `Name.member.N`, plain Query),
//!   integers and booleans are typed, a parameter the operation does not take is
//!   `UnknownParameter`, a missing required one `MissingParameter`, one given
//!   twice or a value of the wrong type `InvalidParameterValue`.
//! - [`ec2_response`] / [`query_response`]: a JSON response in member names →
//!   the service's XML, each member under its `locationName`, lists as
//!   `<name><item>…</item></name>` (EC2) or `<name><member>…</member></name>`,
//!   timestamps ISO 8601 with milliseconds, booleans `true`/`false`;
//!   [`ec2_error`] / [`query_error`] the two error documents.
//!
//! The schemas are Rust constants ([`Member`], [`Shape`]), written from
//! botocore's service models (each member's `locationName`/`queryName`);
//! tests/query_botocore.py checks them against the models with botocore's own
//! serializer and parser.

use crate::error::{Error, ErrorKind, Result};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

/// Longest body or query string decoded (bytes).
pub const MAX_INPUT: usize = 1 << 20;
/// Most parameters one request may carry.
pub const MAX_PARAMS: usize = 4096;
/// Longest parameter name (bytes, decoded).
pub const MAX_NAME: usize = 256;
/// Largest list index (`Tag.N`): more than any list a request may hold.
const MAX_INDEX: usize = 100_000;

/// What a member holds.
#[derive(Debug)]
pub enum Shape {
    String,
    Integer,
    Boolean,
    /// ISO 8601 on the wire both ways; in JSON as ebsim's responses carry it.
    Timestamp,
    /// `item`: each element's name in XML (`item` in EC2, `member` in plain
    /// Query, which also names it on input: `Name.member.N`).
    List {
        of: &'static Shape,
        item: &'static str,
    },
    Structure(&'static [Member]),
}

/// One member of a structure: its name in JSON (the service's member name), its
/// name on the wire (a request's parameter name, or a response's element name:
/// the model's `queryName`, else its `locationName`, capitalized on EC2 input),
/// and whether a request must carry it.
#[derive(Debug)]
pub struct Member {
    pub name: &'static str,
    pub wire: &'static str,
    pub shape: &'static Shape,
    pub required: bool,
}

impl Member {
    /// An optional member.
    pub const fn new(name: &'static str, wire: &'static str, shape: &'static Shape) -> Self {
        Member {
            name,
            wire,
            shape,
            required: false,
        }
    }

    /// A member every request must carry.
    pub const fn required(name: &'static str, wire: &'static str, shape: &'static Shape) -> Self {
        Member {
            name,
            wire,
            shape,
            required: true,
        }
    }
}

pub const STRING: Shape = Shape::String;
pub const INTEGER: Shape = Shape::Integer;
pub const BOOLEAN: Shape = Shape::Boolean;
pub const TIMESTAMP: Shape = Shape::Timestamp;

/// Which flavour of the protocol: how lists are numbered on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `Name.N` (EC2: lists are always flattened).
    Ec2,
    /// `Name.member.N` (IAM, STS).
    Query,
}

fn malformed(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::MalformedQueryString, msg)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `+` → space, `%XX` → the byte; the result must be UTF-8.
fn unescape(raw: &[u8], what: &str) -> Result<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = raw
                    .get(i + 1)
                    .and_then(|&h| hex(h))
                    .zip(raw.get(i + 2).and_then(|&l| hex(l)))
                    .map(|(h, l)| h << 4 | l)
                    .ok_or_else(|| {
                        malformed(format!(
                            "The {what} has a '%' that is not followed by two hex digits."
                        ))
                    })?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| malformed(format!("The {what} is not UTF-8.")))
}

/// Reads a form body or query string into its parameters, in order (duplicates
/// kept: [`decode`] refuses them). Empty pieces (`a=1&&b=2`) are skipped; a
/// piece without `=` is a parameter with an empty value.
pub fn parse_form(input: &[u8]) -> Result<Vec<(String, String)>> {
    if input.len() > MAX_INPUT {
        return Err(malformed(format!(
            "The request's parameters are {} bytes long; at most {MAX_INPUT} are read.",
            input.len()
        )));
    }
    let mut out = Vec::new();
    for piece in input.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_PARAMS {
            return Err(malformed(format!(
                "The request has more than {MAX_PARAMS} parameters."
            )));
        }
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &[][..]),
        };
        let name = unescape(name, "parameter name")?;
        if name.is_empty() {
            return Err(malformed("A parameter has an empty name."));
        }
        if name.len() > MAX_NAME {
            return Err(malformed(format!(
                "A parameter name is {} bytes long; at most {MAX_NAME} are allowed.",
                name.len()
            )));
        }
        let value = unescape(value, &format!("value of {name}"))?;
        out.push((name, value));
    }
    Ok(out)
}

fn unknown(name: &str) -> Error {
    Error::new(
        ErrorKind::UnknownParameter,
        format!("The parameter {name} is not recognized"),
    )
}

fn invalid(name: &str, value: &str, expected: &str) -> Error {
    Error::new(
        ErrorKind::InvalidParameterValue,
        format!("Value ({value}) for parameter {name} is invalid. Expected {expected}."),
    )
}

/// One parameter on its way down the schema: the name's pieces still to match,
/// the whole name (for errors) and the value.
struct Entry<'a> {
    rest: Vec<&'a str>,
    full: &'a str,
    value: &'a str,
}

/// Decodes `params` (without the protocol's own: `Action`, `Version`, signature
/// parameters) as a request of shape `input` (a structure).
pub fn decode(params: &[(String, String)], input: &Shape, flavour: Flavour) -> Result<Value> {
    let mut seen = HashSet::new();
    for (name, _) in params {
        if !seen.insert(name.as_str()) {
            return Err(Error::new(
                ErrorKind::InvalidParameterValue,
                format!("The parameter {name} is given more than once."),
            ));
        }
    }
    let entries = params
        .iter()
        .map(|(name, value)| Entry {
            rest: name.split('.').collect(),
            full: name,
            value,
        })
        .collect();
    decode_shape(entries, input, flavour, "")
}

/// `prefix`: the wire name of what is decoded (`Filter.1`), for errors.
fn decode_shape(
    entries: Vec<Entry<'_>>,
    shape: &Shape,
    flavour: Flavour,
    prefix: &str,
) -> Result<Value> {
    match shape {
        Shape::Structure(members) => decode_structure(entries, members, flavour, prefix),
        Shape::List { of, item } => {
            let mut elements: BTreeMap<usize, Vec<Entry<'_>>> = BTreeMap::new();
            for mut e in entries {
                // `Name=` with nothing after it: an empty list (plain Query's way
                // of sending one).
                if e.rest.is_empty() {
                    if e.value.is_empty() {
                        continue;
                    }
                    return Err(invalid(e.full, e.value, "a list (Name.1, Name.2, …)"));
                }
                if flavour == Flavour::Query {
                    if e.rest[0] != *item {
                        return Err(unknown(e.full));
                    }
                    e.rest.remove(0);
                }
                let index = e
                    .rest
                    .first()
                    .filter(|n| {
                        !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| (1..=MAX_INDEX).contains(n))
                    .ok_or_else(|| unknown(e.full))?;
                e.rest.remove(0);
                elements.entry(index).or_default().push(e);
            }
            let mut out = Vec::with_capacity(elements.len());
            for (index, group) in elements {
                out.push(decode_shape(
                    group,
                    of,
                    flavour,
                    &format!("{prefix}.{index}"),
                )?);
            }
            Ok(Value::Array(out))
        }
        scalar => {
            // Names are unique, so one entry at most has nothing left; any with
            // more (`Size.1`) names something a scalar does not have.
            if let Some(e) = entries.iter().find(|e| !e.rest.is_empty()) {
                return Err(unknown(e.full));
            }
            let e = entries
                .first()
                .expect("a member is decoded from its entries");
            decode_scalar(scalar, e.full, e.value)
        }
    }
}

fn decode_structure(
    entries: Vec<Entry<'_>>,
    members: &[Member],
    flavour: Flavour,
    prefix: &str,
) -> Result<Value> {
    let mut by_member: Vec<Vec<Entry<'_>>> = members.iter().map(|_| Vec::new()).collect();
    for mut e in entries {
        let Some(first) = e.rest.first() else {
            // `Filter.1=x`: a structure given a value of its own.
            return Err(unknown(e.full));
        };
        let i = members
            .iter()
            .position(|m| m.wire == *first)
            .ok_or_else(|| unknown(e.full))?;
        e.rest.remove(0);
        by_member[i].push(e);
    }
    let mut out = Map::new();
    for (m, group) in members.iter().zip(by_member) {
        let wire = if prefix.is_empty() {
            m.wire.to_string()
        } else {
            format!("{prefix}.{}", m.wire)
        };
        if group.is_empty() {
            if m.required {
                return Err(Error::new(
                    ErrorKind::MissingParameter,
                    format!("The request must contain the parameter {wire}"),
                ));
            }
            continue;
        }
        out.insert(
            m.name.to_string(),
            decode_shape(group, m.shape, flavour, &wire)?,
        );
    }
    Ok(Value::Object(out))
}

fn decode_scalar(shape: &Shape, name: &str, value: &str) -> Result<Value> {
    match shape {
        Shape::String => Ok(Value::String(value.to_string())),
        Shape::Integer => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(invalid(name, value, "an integer"));
            }
            value
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| invalid(name, value, "an integer"))
        }
        Shape::Boolean => match value.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(invalid(name, value, "true or false")),
        },
        Shape::Timestamp => crate::clock::parse_time(value)
            .map(|t| Value::String(iso8601_millis(&t)))
            .map_err(|_| invalid(name, value, "an ISO 8601 time")),
        Shape::List { .. } | Shape::Structure(_) => unreachable!("not a scalar"),
    }
}

/// `2026-12-01T05:16:35.123Z`: how the Query protocols write times.
pub fn iso8601_millis(t: &crate::clock::Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

// ---- XML ------------------------------------------------------------------

/// An XML response and the members of the JSON it came from that the schema
/// does not have (ebsim's own members, such as a volume's `SizeBytes`), which
/// were left out.
#[derive(Debug)]
pub struct Encoded {
    pub xml: String,
    pub left_out: Vec<String>,
}

/// Characters XML 1.0 cannot carry (most C0 controls), as U+FFFD.
fn xml_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}');
    if s.chars().any(bad) {
        s.chars()
            .map(|c| if bad(c) { '\u{fffd}' } else { c })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

struct Xml {
    w: Writer<Vec<u8>>,
    left_out: Vec<String>,
}

impl Xml {
    fn new() -> Self {
        let mut w = Writer::new(Vec::new());
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
            .expect("writes to memory");
        Xml {
            w,
            left_out: Vec::new(),
        }
    }

    fn start(&mut self, name: &str, xmlns: Option<&str>) {
        let mut e = BytesStart::new(name);
        if let Some(ns) = xmlns {
            e.push_attribute(("xmlns", ns));
        }
        self.w
            .write_event(Event::Start(e))
            .expect("writes to memory");
    }

    fn end(&mut self, name: &str) {
        self.w
            .write_event(Event::End(BytesEnd::new(name)))
            .expect("writes to memory");
    }

    fn text_element(&mut self, name: &str, text: &str) {
        self.start(name, None);
        let text = xml_safe(text);
        self.w
            .write_event(Event::Text(BytesText::new(&text)))
            .expect("writes to memory");
        self.end(name);
    }

    fn finish(self) -> Encoded {
        Encoded {
            xml: String::from_utf8(self.w.into_inner()).expect("written from strings"),
            left_out: self.left_out,
        }
    }

    /// `value` as element `name` of shape `shape`; `path` names it for
    /// [`Encoded::left_out`].
    fn value(&mut self, name: &str, shape: &Shape, value: &Value, path: &str) {
        match shape {
            Shape::Structure(members) => {
                self.start(name, None);
                self.members(members, value, path);
                self.end(name);
            }
            Shape::List { of, item } => {
                self.start(name, None);
                let items = match value {
                    Value::Array(a) => a.as_slice(),
                    other => std::slice::from_ref(other),
                };
                for (i, v) in items.iter().enumerate() {
                    self.value(item, of, v, &format!("{path}[{i}]"));
                }
                self.end(name);
            }
            Shape::String | Shape::Integer => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                self.text_element(name, &text);
            }
            Shape::Boolean => {
                let b = match value {
                    Value::Bool(b) => *b,
                    Value::String(s) => s.eq_ignore_ascii_case("true"),
                    _ => false,
                };
                self.text_element(name, if b { "true" } else { "false" });
            }
            Shape::Timestamp => {
                let text = match value {
                    Value::String(s) => crate::clock::parse_time(s)
                        .map(|t| iso8601_millis(&t))
                        .unwrap_or_else(|_| s.clone()),
                    Value::Number(n) => n
                        .as_f64()
                        .and_then(|f| crate::clock::parse_time(&f.to_string()).ok())
                        .map(|t| iso8601_millis(&t))
                        .unwrap_or_else(|| n.to_string()),
                    other => other.to_string(),
                };
                self.text_element(name, &text);
            }
        }
    }

    /// The members of structure `value` the schema has, in the schema's order;
    /// absent and null ones are not written.
    fn members(&mut self, members: &[Member], value: &Value, path: &str) {
        let Value::Object(obj) = value else {
            return;
        };
        for m in members {
            if let Some(v) = obj.get(m.name).filter(|v| !v.is_null()) {
                self.value(m.wire, m.shape, v, &format!("{path}.{}", m.name));
            }
        }
        for k in obj.keys() {
            if !members.iter().any(|m| m.name == k) {
                self.left_out
                    .push(format!("{path}.{k}").trim_start_matches('.').to_string());
            }
        }
    }
}

/// How an EC2 operation answers.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    /// The members of this structure.
    Shape(&'static Shape),
    /// No output shape in the model: EC2 answers `<return>true</return>`.
    Return,
}

/// EC2's response to `operation`: `<{Op}Response xmlns=…><requestId>…</requestId>`
/// then the members of `value`.
pub fn ec2_response(
    operation: &str,
    xmlns: &str,
    request_id: &str,
    output: Output,
    value: &Value,
) -> Encoded {
    let root = format!("{operation}Response");
    let mut x = Xml::new();
    x.start(&root, Some(xmlns));
    x.text_element("requestId", request_id);
    match output {
        Output::Shape(Shape::Structure(members)) => x.members(members, value, ""),
        Output::Shape(other) => x.value("return", other, value, ""),
        Output::Return => x.text_element("return", "true"),
    }
    x.end(&root);
    x.finish()
}

/// EC2's error document.
pub fn ec2_error(code: &str, message: &str, request_id: &str) -> String {
    let mut x = Xml::new();
    x.start("Response", None);
    x.start("Errors", None);
    x.start("Error", None);
    x.text_element("Code", code);
    x.text_element("Message", message);
    x.end("Error");
    x.end("Errors");
    x.text_element("RequestID", request_id);
    x.end("Response");
    x.finish().xml
}

/// A plain Query service's response (IAM, STS): `<{Op}Response
/// xmlns=…><{Op}Result>…</{Op}Result><ResponseMetadata><RequestId>…`; an
/// operation without output has no `Result` element.
pub fn query_response(
    operation: &str,
    xmlns: &str,
    request_id: &str,
    output: Option<&'static Shape>,
    value: &Value,
) -> Encoded {
    let root = format!("{operation}Response");
    let mut x = Xml::new();
    x.start(&root, Some(xmlns));
    if let Some(Shape::Structure(members)) = output {
        let result = format!("{operation}Result");
        x.start(&result, None);
        x.members(members, value, "");
        x.end(&result);
    }
    x.start("ResponseMetadata", None);
    x.text_element("RequestId", request_id);
    x.end("ResponseMetadata");
    x.end(&root);
    x.finish()
}

/// A plain Query service's error document; `sender`: the caller's fault
/// (`Sender`) or the service's (`Receiver`).
pub fn query_error(code: &str, message: &str, request_id: &str, sender: bool) -> String {
    let mut x = Xml::new();
    x.start("ErrorResponse", None);
    x.start("Error", None);
    x.text_element("Type", if sender { "Sender" } else { "Receiver" });
    x.text_element("Code", code);
    x.text_element("Message", message);
    x.end("Error");
    x.text_element("RequestId", request_id);
    x.end("ErrorResponse");
    x.finish().xml
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TAG: Shape = Shape::Structure(&[
        Member::required("Key", "Key", &STRING),
        Member::new("Value", "Value", &STRING),
    ]);
    const FILTER: Shape = Shape::Structure(&[
        Member::new("Name", "Name", &STRING),
        Member::new(
            "Values",
            "Value",
            &Shape::List {
                of: &STRING,
                item: "item",
            },
        ),
    ]);
    const SPEC: Shape = Shape::Structure(&[
        Member::new("ResourceType", "ResourceType", &STRING),
        Member::new(
            "Tags",
            "Tag",
            &Shape::List {
                of: &TAG,
                item: "item",
            },
        ),
    ]);
    const REQUEST: Shape = Shape::Structure(&[
        Member::new(
            "VolumeIds",
            "VolumeId",
            &Shape::List {
                of: &STRING,
                item: "VolumeId",
            },
        ),
        Member::new(
            "Filters",
            "Filter",
            &Shape::List {
                of: &FILTER,
                item: "Filter",
            },
        ),
        Member::new(
            "TagSpecifications",
            "TagSpecification",
            &Shape::List {
                of: &SPEC,
                item: "item",
            },
        ),
        Member::new("Size", "Size", &INTEGER),
        Member::new("DryRun", "DryRun", &BOOLEAN),
        Member::new("Description", "Description", &STRING),
    ]);

    fn params(s: &str) -> Vec<(String, String)> {
        parse_form(s.as_bytes()).unwrap()
    }

    fn dec(s: &str) -> Result<Value> {
        decode(&params(s), &REQUEST, Flavour::Ec2)
    }

    #[test]
    fn forms_unescape_and_keep_order() {
        assert_eq!(
            params("b=x+y&&a=%2Fz%3D&c&d="),
            vec![
                ("b".into(), "x y".into()),
                ("a".into(), "/z=".into()),
                ("c".into(), "".into()),
                ("d".into(), "".into()),
            ]
        );
        assert_eq!(params("k=%E2%82%AC")[0].1, "€");
        for bad in ["a=%", "a=%4", "a=%zz", "a=%ff", "=x", "%C3%28=1"] {
            let e = parse_form(bad.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::MalformedQueryString, "{bad}");
        }
        let many = "a=1&".repeat(MAX_PARAMS + 1);
        assert_eq!(
            parse_form(many.as_bytes()).unwrap_err().kind(),
            ErrorKind::MalformedQueryString
        );
        let long = format!("{}=1", "n".repeat(MAX_NAME + 1));
        assert!(parse_form(long.as_bytes()).is_err());
        assert!(parse_form(&vec![b'a'; MAX_INPUT + 1]).is_err());
    }

    #[test]
    fn flattened_lists_and_structures_become_member_names() {
        let v = dec("VolumeId.2=vol-b&VolumeId.1=vol-a&Filter.1.Name=status&Filter.1.Value.1=available&Filter.1.Value.2=in-use&Filter.2.Name=tag%3AName&TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v&Size=8&DryRun=true").unwrap();
        assert_eq!(
            v,
            json!({
                "VolumeIds": ["vol-a", "vol-b"],
                "Filters": [
                    {"Name": "status", "Values": ["available", "in-use"]},
                    {"Name": "tag:Name"}
                ],
                "TagSpecifications": [
                    {"ResourceType": "volume", "Tags": [{"Key": "k", "Value": "v"}]}
                ],
                "Size": 8,
                "DryRun": true
            })
        );
        // Gaps keep their order.
        assert_eq!(
            dec("VolumeId.7=b&VolumeId.3=a").unwrap(),
            json!({"VolumeIds": ["a", "b"]})
        );
        assert_eq!(dec("").unwrap(), json!({}));
    }

    #[test]
    fn bad_parameters_get_aws_errors() {
        let kind = |s: &str| dec(s).unwrap_err().kind();
        for s in [
            "Bogus=1",
            "VolumeId=x",
            "VolumeId.0=x",
            "VolumeId.x=x",
            "VolumeId.1.Deep=x",
            "VolumeId.9999999=x",
            "VolumeId.+1=x",
            "Size.1=3",
            "Filter.1=x",
            "Filter.1.Nope=x",
            "volumeid.1=x",
        ] {
            let k = kind(s);
            assert!(
                k == ErrorKind::UnknownParameter || k == ErrorKind::InvalidParameterValue,
                "{s}: {k:?}"
            );
        }
        assert_eq!(kind("Bogus=1"), ErrorKind::UnknownParameter);
        assert_eq!(kind("Size=eight"), ErrorKind::InvalidParameterValue);
        assert_eq!(
            kind("Size=99999999999999999999"),
            ErrorKind::InvalidParameterValue
        );
        assert_eq!(kind("DryRun=yes"), ErrorKind::InvalidParameterValue);
        assert_eq!(kind("Size=1&Size=2"), ErrorKind::InvalidParameterValue);
        assert_eq!(kind("Size=1&Size.1=3"), ErrorKind::UnknownParameter);
        assert_eq!(kind("Size.1=3&Size=1"), ErrorKind::UnknownParameter);
        assert_eq!(
            kind("VolumeId.1=a&VolumeId.1.x=b"),
            ErrorKind::UnknownParameter
        );
        let e = dec("TagSpecification.1.Tag.1.Value=v").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingParameter);
        assert!(e.message().contains("TagSpecification.1.Tag.1.Key"), "{e}");
        assert_eq!(dec("DryRun=TRUE").unwrap(), json!({"DryRun": true}));
        assert_eq!(dec("Size=-1").unwrap(), json!({"Size": -1}));
    }

    #[test]
    fn plain_query_lists_are_numbered_under_their_item_name() {
        const LIST: Shape = Shape::Structure(&[Member::new(
            "PolicyArns",
            "PolicyArns",
            &Shape::List {
                of: &STRING,
                item: "member",
            },
        )]);
        let v = decode(
            &params("PolicyArns.member.1=a&PolicyArns.member.2=b"),
            &LIST,
            Flavour::Query,
        )
        .unwrap();
        assert_eq!(v, json!({"PolicyArns": ["a", "b"]}));
        assert_eq!(
            decode(&params("PolicyArns="), &LIST, Flavour::Query).unwrap(),
            json!({"PolicyArns": []})
        );
        assert_eq!(
            decode(&params("PolicyArns.1=a"), &LIST, Flavour::Query)
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownParameter
        );
    }

    const VOLUME: Shape = Shape::Structure(&[
        Member::new("VolumeId", "volumeId", &STRING),
        Member::new("Size", "size", &INTEGER),
        Member::new("State", "status", &STRING),
        Member::new("CreateTime", "createTime", &TIMESTAMP),
        Member::new("Encrypted", "encrypted", &BOOLEAN),
        Member::new(
            "Tags",
            "tagSet",
            &Shape::List {
                of: &Shape::Structure(&[
                    Member::new("Key", "key", &STRING),
                    Member::new("Value", "value", &STRING),
                ]),
                item: "item",
            },
        ),
    ]);

    #[test]
    fn ec2_responses_are_written_by_location_name() {
        const OUT: Shape = Shape::Structure(&[Member::new(
            "Volumes",
            "volumeSet",
            &Shape::List {
                of: &VOLUME,
                item: "item",
            },
        )]);
        let v = json!({"Volumes": [{
            "VolumeId": "vol-1",
            "Size": 8,
            "State": "available",
            "CreateTime": "2026-01-02T03:04:05.678901+00:00",
            "Encrypted": false,
            "Tags": [{"Key": "a<b", "Value": "x&y\u{1}"}],
            "SizeBytes": 123,
            "KmsKeyId": null
        }]});
        let e = ec2_response("DescribeVolumes", "urn:x", "rid", Output::Shape(&OUT), &v);
        assert_eq!(
            e.xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeVolumesResponse xmlns=\"urn:x\"><requestId>rid</requestId><volumeSet><item><volumeId>vol-1</volumeId><size>8</size><status>available</status><createTime>2026-01-02T03:04:05.678Z</createTime><encrypted>false</encrypted><tagSet><item><key>a&lt;b</key><value>x&amp;y\u{fffd}</value></item></tagSet></item></volumeSet></DescribeVolumesResponse>"
        );
        assert_eq!(
            e.left_out,
            vec!["Volumes[0].SizeBytes", "Volumes[0].KmsKeyId"]
        );
        let empty = ec2_response(
            "DescribeVolumes",
            "urn:x",
            "r",
            Output::Shape(&OUT),
            &json!({"Volumes": []}),
        );
        assert!(
            empty.xml.contains("<volumeSet></volumeSet>"),
            "{}",
            empty.xml
        );
        let ret = ec2_response("DeleteVolume", "urn:x", "r", Output::Return, &Value::Null);
        assert!(
            ret.xml
                .ends_with("<requestId>r</requestId><return>true</return></DeleteVolumeResponse>")
        );
    }

    #[test]
    fn error_documents() {
        assert_eq!(
            ec2_error(
                "InvalidVolume.NotFound",
                "The volume 'vol-1' does not exist.",
                "r"
            ),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>InvalidVolume.NotFound</Code><Message>The volume &apos;vol-1&apos; does not exist.</Message></Error></Errors><RequestID>r</RequestID></Response>"
        );
        let q = query_error("NoSuchEntity", "no <user>", "r", true);
        assert!(q.contains("<Type>Sender</Type><Code>NoSuchEntity</Code><Message>no &lt;user&gt;</Message></Error><RequestId>r</RequestId></ErrorResponse>"), "{q}");
        const OUT: Shape = Shape::Structure(&[Member::new("Arn", "Arn", &STRING)]);
        let r = query_response(
            "GetCallerIdentity",
            "urn:sts",
            "r",
            Some(&OUT),
            &json!({"Arn": "a"}),
        );
        assert!(r.xml.contains("<GetCallerIdentityResult><Arn>a</Arn></GetCallerIdentityResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"), "{}", r.xml);
    }
}
