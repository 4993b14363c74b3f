//! The XML messages of the national protocol: parsed into [`Message`] and written back.
//!
//! Every message is `<root><common><building_id/><gateway_id/><type/></common>` followed by one
//! element that says what it is, with an `operation` attribute (shared reference,
//! china-field-protocols.md; the element names as the 数据传输技术导则 and the provincial
//! protocols built on it use them, e.g. 福建省楼宇能耗数据和市级公共建筑节能监管平台通信协议,
//! which states that it refines the guideline): `id_validate` (request / sequence / md5 /
//! result), `heart_beat` (notify / time), `data` (report / continuous / report_ack /
//! continuous_ack / query / reply).
//!
//! The parser reads into a small tree first, within bounds (size, depth, elements, text), and
//! refuses a document type declaration and any entity but the five predefined ones and
//! character references: nothing is expanded, nothing is fetched.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Bounds of a message.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
const MAX_DEPTH: usize = 8;
const MAX_ELEMENTS: usize = 100_000;
const MAX_TEXT: usize = 1024;
const MAX_ATTRS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the message is {0} bytes, more than the largest accepted ({MAX_MESSAGE_BYTES})")]
    TooLarge(usize),
    #[error("the message is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the message has a document type declaration (refused: no DTD, no entities)")]
    DocType,
    #[error("the message uses the entity `&{0};` (only the five predefined entities and character references are accepted)")]
    Entity(String),
    #[error("the message exceeds a bound: {0}")]
    Bound(&'static str),
    #[error("the message has no `{0}`")]
    Missing(&'static str),
    #[error("`{what}` is `{value}`: {why}")]
    Invalid { what: &'static str, value: String, why: &'static str },
}

/// An element of the tree the parser builds.
#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
    text: String,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

fn malformed(e: impl std::fmt::Display) -> XmlError {
    XmlError::Malformed(e.to_string())
}

/// Parses bytes into a tree within the bounds.
fn tree(bytes: &[u8]) -> Result<Node, XmlError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(XmlError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
    // Zero padding (AES with PaddingMode.Zeros, as some sites use) leaves NULs at the end.
    let text = text.trim_end_matches('\0');
    let mut reader = Reader::from_str(text);
    // Texts are trimmed once, whole, at their element's end: trimming each piece would eat the
    // spaces next to an entity (`A &gt;` would read `A>`).
    let decoder = reader.decoder();
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut elements = 0usize;
    loop {
        let ev = reader.read_event().map_err(malformed)?;
        match ev {
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::Bound("more than 100000 elements"));
                }
                if stack.len() > MAX_DEPTH {
                    return Err(XmlError::Bound("nested deeper than 8 elements"));
                }
                let name = std::str::from_utf8(e.name().as_ref()).map_err(malformed)?.to_string();
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(malformed)?;
                    if attrs.len() >= MAX_ATTRS {
                        return Err(XmlError::Bound("more than 16 attributes on an element"));
                    }
                    let k = std::str::from_utf8(a.key.as_ref()).map_err(malformed)?.to_string();
                    let v = match a.decode_and_unescape_value(decoder) {
                        Ok(v) => v.into_owned(),
                        Err(quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(_, name))) => return Err(XmlError::Entity(name)),
                        Err(e) => return Err(malformed(e)),
                    };
                    if v.len() > MAX_TEXT {
                        return Err(XmlError::Bound("an attribute value longer than 1024 bytes"));
                    }
                    attrs.push((k, v));
                }
                let node = Node { name, attrs, ..Node::default() };
                if empty {
                    push_child(&mut stack, node);
                } else {
                    stack.push(node);
                }
            }
            Event::End(_) => {
                let mut node = stack.pop().ok_or_else(|| malformed("an end tag without a start"))?;
                let t = node.text.trim();
                if t.len() != node.text.len() {
                    node.text = t.to_string();
                }
                if stack.is_empty() {
                    return Err(malformed("an end tag without a start"));
                }
                push_child(&mut stack, node);
            }
            Event::Text(t) => add_text(&mut stack, &t.decode().map_err(malformed)?)?,
            Event::CData(t) => add_text(&mut stack, &t.decode().map_err(malformed)?)?,
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(malformed)? {
                    Some(c) => c,
                    None => {
                        let name = r.decode().map_err(malformed)?.into_owned();
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.chars().next().unwrap_or(' '),
                            None => return Err(XmlError::Entity(name)),
                        }
                    }
                };
                add_text(&mut stack, c.encode_utf8(&mut [0u8; 4]))?;
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if stack.len() != 1 {
        return Err(malformed("the document ends inside an element"));
    }
    let mut doc = stack.pop().unwrap_or_default();
    if doc.children.len() != 1 {
        return Err(malformed("a document has exactly one root element"));
    }
    Ok(doc.children.remove(0))
}

fn push_child(stack: &mut [Node], node: Node) {
    if let Some(parent) = stack.last_mut() {
        parent.children.push(node);
    }
}

fn add_text(stack: &mut [Node], s: &str) -> Result<(), XmlError> {
    if let Some(top) = stack.last_mut() {
        // Layout between elements (nothing read yet, only white space) is not text.
        if top.text.is_empty() && s.trim().is_empty() {
            return Ok(());
        }
        if top.text.len() + s.len() > MAX_TEXT {
            return Err(XmlError::Bound("a text longer than 1024 bytes"));
        }
        top.text.push_str(s);
    }
    Ok(())
}

/// What every message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// The building's national 10-character id (or, upward, the lower centre's building id).
    pub building_id: String,
    /// The collector within the building.
    pub gateway_id: String,
    /// The `type` element, as sent (`id_validate`, `heart_beat`, `report`, `continuous`, ...).
    pub kind: String,
}

/// A message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub common: Common,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    IdValidate(IdValidate),
    HeartBeat(HeartBeat),
    Data(Data),
}

/// The identity check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdValidate {
    /// Collector: let me in.
    Request,
    /// Centre: the random sequence to hash.
    Sequence(String),
    /// Collector: MD5(key + sequence), hex.
    Md5(String),
    /// Centre: pass or fail.
    Result(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartBeat {
    Notify,
    /// Centre: its time, `YYYYMMDDHHmmss`.
    Time(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOp {
    /// Periodic data.
    Report,
    /// Backlog resent after an outage.
    Continuous,
    /// The centre's answer to a report.
    ReportAck,
    /// The centre's answer to a continued report.
    ContinuousAck,
    /// The centre asks for the data of a time range.
    Query,
    /// The collector's answer to a query.
    Reply,
}

impl DataOp {
    pub fn as_str(self) -> &'static str {
        match self {
            DataOp::Report => "report",
            DataOp::Continuous => "continuous",
            DataOp::ReportAck => "report_ack",
            DataOp::ContinuousAck => "continuous_ack",
            DataOp::Query => "query",
            DataOp::Reply => "reply",
        }
    }
    fn parse(s: &str) -> Option<DataOp> {
        [DataOp::Report, DataOp::Continuous, DataOp::ReportAck, DataOp::ContinuousAck, DataOp::Query, DataOp::Reply].into_iter().find(|o| o.as_str() == s)
    }
    /// The acknowledgement of a data message (`None` for those that are not acknowledged).
    pub fn ack(self) -> Option<DataOp> {
        match self {
            DataOp::Report => Some(DataOp::ReportAck),
            DataOp::Continuous | DataOp::Reply => Some(DataOp::ContinuousAck),
            _ => None,
        }
    }
}

/// A data message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Data {
    pub operation: Option<DataOp>,
    /// The report's sequence number, as sent.
    pub sequence: Option<String>,
    /// `yes` when the values are parsed (engineering units), `no` for raw.
    pub parser: Option<String>,
    /// The time the values are for, `YYYYMMDDHHmmss`; for a query, its start.
    pub time: Option<String>,
    /// A query's end, `YYYYMMDDHHmmss`.
    pub end_time: Option<String>,
    /// Packets of a multi-packet report, and which one this is (1-based).
    pub total: Option<u32>,
    pub current: Option<u32>,
    pub meters: Vec<MeterValues>,
    /// The item-coded form (a later variant; between data centres): code and value.
    pub energy_items: Vec<(String, String)>,
    /// An acknowledgement's verdict (`pass` / `fail`).
    pub ack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterValues {
    pub id: String,
    pub name: Option<String>,
    pub functions: Vec<FunctionValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionValue {
    pub id: String,
    /// The energy item code the value belongs to.
    pub coding: Option<String>,
    /// The collector's error code for the value; absent or `0`: no error.
    pub error: Option<String>,
    pub value: String,
}

impl FunctionValue {
    /// Whether the collector flagged the value as bad.
    pub fn is_error(&self) -> bool {
        self.error.as_deref().is_some_and(|e| !e.trim().is_empty() && e.trim() != "0")
    }
}

fn number(what: &'static str, s: Option<&str>) -> Result<Option<u32>, XmlError> {
    match s {
        None => Ok(None),
        Some(v) => v.trim().parse::<u32>().map(Some).map_err(|_| XmlError::Invalid { what, value: v.to_string(), why: "not a whole number" }),
    }
}

/// Parses a message.
pub fn parse(bytes: &[u8]) -> Result<Message, XmlError> {
    let root = tree(bytes)?;
    if root.name != "root" {
        return Err(XmlError::Missing("root"));
    }
    let c = root.child("common").ok_or(XmlError::Missing("common"))?;
    let common = Common {
        building_id: c.child_text("building_id").ok_or(XmlError::Missing("common/building_id"))?.to_string(),
        gateway_id: c.child_text("gateway_id").ok_or(XmlError::Missing("common/gateway_id"))?.to_string(),
        kind: c.child_text("type").ok_or(XmlError::Missing("common/type"))?.to_string(),
    };
    let body = if let Some(n) = root.child("id_validate") {
        let op = n.attr("operation").ok_or(XmlError::Missing("id_validate/@operation"))?;
        Body::IdValidate(match op {
            "request" => IdValidate::Request,
            "sequence" => IdValidate::Sequence(n.child_text("sequence").ok_or(XmlError::Missing("id_validate/sequence"))?.to_string()),
            "md5" => IdValidate::Md5(n.child_text("md5").ok_or(XmlError::Missing("id_validate/md5"))?.to_string()),
            "result" => {
                let r = n.child_text("result").ok_or(XmlError::Missing("id_validate/result"))?;
                IdValidate::Result(match r {
                    "pass" => true,
                    "fail" => false,
                    _ => return Err(XmlError::Invalid { what: "id_validate/result", value: r.into(), why: "neither pass nor fail" }),
                })
            }
            _ => return Err(XmlError::Invalid { what: "id_validate/@operation", value: op.into(), why: "not request, sequence, md5 or result" }),
        })
    } else if let Some(n) = root.child("heart_beat") {
        let op = n.attr("operation").ok_or(XmlError::Missing("heart_beat/@operation"))?;
        Body::HeartBeat(match op {
            "notify" => HeartBeat::Notify,
            "time" => HeartBeat::Time(n.child_text("time").ok_or(XmlError::Missing("heart_beat/time"))?.to_string()),
            _ => return Err(XmlError::Invalid { what: "heart_beat/@operation", value: op.into(), why: "neither notify nor time" }),
        })
    } else if let Some(n) = root.child("data") {
        Body::Data(data(n)?)
    } else {
        return Err(XmlError::Missing("id_validate, heart_beat or data"));
    };
    Ok(Message { common, body })
}

fn data(n: &Node) -> Result<Data, XmlError> {
    let op = n.attr("operation").ok_or(XmlError::Missing("data/@operation"))?;
    let operation = DataOp::parse(op).ok_or_else(|| XmlError::Invalid { what: "data/@operation", value: op.into(), why: "not report, continuous, report_ack, continuous_ack, query or reply" })?;
    let mut d = Data {
        operation: Some(operation),
        sequence: n.child_text("sequence").map(str::to_string),
        parser: n.child_text("parser").map(str::to_string),
        time: n.child_text("time").or(n.child_text("start_time")).map(str::to_string),
        end_time: n.child_text("end_time").map(str::to_string),
        total: number("data/total", n.child_text("total"))?,
        current: number("data/current", n.child_text("current"))?,
        ack: n.child_text("ack").map(str::to_string),
        ..Data::default()
    };
    if let (Some(t), Some(c)) = (d.total, d.current) {
        if c == 0 || c > t {
            return Err(XmlError::Invalid { what: "data/current", value: c.to_string(), why: "not between 1 and total" });
        }
    }
    // Meters directly under data, or under <meters total=..> (the later variant).
    let meters = n.children.iter().filter(|c| c.name == "meter").chain(n.child("meters").into_iter().flat_map(|m| m.children.iter().filter(|c| c.name == "meter")));
    for m in meters {
        let id = m.attr("id").ok_or(XmlError::Missing("meter/@id"))?.to_string();
        let mut functions = Vec::new();
        for f in m.children.iter().filter(|c| c.name == "function") {
            functions.push(FunctionValue {
                id: f.attr("id").ok_or(XmlError::Missing("function/@id"))?.to_string(),
                coding: f.attr("coding").map(str::to_string),
                error: f.attr("error").map(str::to_string),
                value: f.text.clone(),
            });
        }
        d.meters.push(MeterValues { id, name: m.attr("name").map(str::to_string), functions });
    }
    if let Some(items) = n.child("energy_items") {
        for i in items.children.iter().filter(|c| c.name == "energy_item") {
            d.energy_items.push((i.attr("code").ok_or(XmlError::Missing("energy_item/@code"))?.to_string(), i.text.clone()));
        }
    }
    Ok(d)
}

/// Text with `& < > " '` escaped.
fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn el(out: &mut String, name: &str, text: &str) {
    out.push_str(&format!("<{name}>{}</{name}>", esc(text)));
}

/// The bytes of a message (UTF-8, with an XML declaration).
pub fn write(m: &Message) -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><root><common>");
    el(&mut s, "building_id", &m.common.building_id);
    el(&mut s, "gateway_id", &m.common.gateway_id);
    el(&mut s, "type", &m.common.kind);
    s.push_str("</common>");
    match &m.body {
        Body::IdValidate(v) => match v {
            IdValidate::Request => s.push_str("<id_validate operation=\"request\"/>"),
            IdValidate::Sequence(q) => {
                s.push_str("<id_validate operation=\"sequence\">");
                el(&mut s, "sequence", q);
                s.push_str("</id_validate>");
            }
            IdValidate::Md5(h) => {
                s.push_str("<id_validate operation=\"md5\">");
                el(&mut s, "md5", h);
                s.push_str("</id_validate>");
            }
            IdValidate::Result(ok) => {
                s.push_str("<id_validate operation=\"result\">");
                el(&mut s, "result", if *ok { "pass" } else { "fail" });
                s.push_str("</id_validate>");
            }
        },
        Body::HeartBeat(HeartBeat::Notify) => s.push_str("<heart_beat operation=\"notify\"/>"),
        Body::HeartBeat(HeartBeat::Time(t)) => {
            s.push_str("<heart_beat operation=\"time\">");
            el(&mut s, "time", t);
            s.push_str("</heart_beat>");
        }
        Body::Data(d) => {
            s.push_str(&format!("<data operation=\"{}\">", d.operation.unwrap_or(DataOp::Report).as_str()));
            let opt = |s: &mut String, name: &str, v: &Option<String>| {
                if let Some(v) = v {
                    el(s, name, v);
                }
            };
            opt(&mut s, "sequence", &d.sequence);
            opt(&mut s, "parser", &d.parser);
            if d.operation == Some(DataOp::Query) {
                opt(&mut s, "start_time", &d.time);
                opt(&mut s, "end_time", &d.end_time);
            } else {
                opt(&mut s, "time", &d.time);
            }
            opt(&mut s, "total", &d.total.map(|x| x.to_string()));
            opt(&mut s, "current", &d.current.map(|x| x.to_string()));
            opt(&mut s, "ack", &d.ack);
            for m in &d.meters {
                s.push_str(&format!("<meter id=\"{}\"", esc(&m.id)));
                if let Some(n) = &m.name {
                    s.push_str(&format!(" name=\"{}\"", esc(n)));
                }
                s.push('>');
                for f in &m.functions {
                    s.push_str(&format!("<function id=\"{}\"", esc(&f.id)));
                    if let Some(c) = &f.coding {
                        s.push_str(&format!(" coding=\"{}\"", esc(c)));
                    }
                    if let Some(e) = &f.error {
                        s.push_str(&format!(" error=\"{}\"", esc(e)));
                    }
                    s.push_str(&format!(">{}</function>", esc(&f.value)));
                }
                s.push_str("</meter>");
            }
            if !d.energy_items.is_empty() {
                s.push_str("<energy_items>");
                for (code, v) in &d.energy_items {
                    s.push_str(&format!("<energy_item code=\"{}\">{}</energy_item>", esc(code), esc(v)));
                }
                s.push_str("</energy_items>");
            }
            s.push_str("</data>");
        }
    }
    s.push_str("</root>");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(kind: &str) -> Common {
        Common { building_id: "110101A001".into(), gateway_id: "01".into(), kind: kind.into() }
    }

    #[test]
    fn a_report_by_hand() {
        let x = br#"<?xml version="1.0" encoding="UTF-8"?>
<root>
  <common><building_id>110101A001</building_id><gateway_id>01</gateway_id><type>report</type></common>
  <data operation="report">
    <sequence>42</sequence><parser>yes</parser><time>20261206101500</time><total>2</total><current>1</current>
    <meter id="1" name="main"><function id="1" coding="01A00" error="0">1234.5</function><function id="2" error="192">9</function></meter>
    <meter id="2"><function id="1">7</function></meter>
  </data>
</root>"#;
        let m = parse(x).unwrap();
        assert_eq!(m.common, common("report"));
        let Body::Data(d) = m.body else { panic!("data") };
        assert_eq!(d.operation, Some(DataOp::Report));
        assert_eq!((d.sequence.as_deref(), d.time.as_deref(), d.total, d.current), (Some("42"), Some("20261206101500"), Some(2), Some(1)));
        assert_eq!(d.meters.len(), 2);
        assert_eq!(d.meters[0].functions[0], FunctionValue { id: "1".into(), coding: Some("01A00".into()), error: Some("0".into()), value: "1234.5".into() });
        assert!(!d.meters[0].functions[0].is_error());
        assert!(d.meters[0].functions[1].is_error());
        assert_eq!(d.meters[1].functions[0].value, "7");
    }

    #[test]
    fn every_message_round_trips() {
        let data = Data {
            operation: Some(DataOp::Continuous),
            sequence: Some("9".into()),
            parser: Some("yes".into()),
            time: Some("20261206100000".into()),
            total: Some(3),
            current: Some(3),
            meters: vec![MeterValues { id: "a&b".into(), name: Some("<1>".into()), functions: vec![FunctionValue { id: "1".into(), coding: Some("01B00".into()), error: None, value: "1.5".into() }] }],
            energy_items: vec![("01A00".into(), "12.5".into())],
            ..Data::default()
        };
        let bodies = vec![
            Body::IdValidate(IdValidate::Request),
            Body::IdValidate(IdValidate::Sequence("123456".into())),
            Body::IdValidate(IdValidate::Md5("e10adc3949ba59abbe56e057f20f883e".into())),
            Body::IdValidate(IdValidate::Result(true)),
            Body::IdValidate(IdValidate::Result(false)),
            Body::HeartBeat(HeartBeat::Notify),
            Body::HeartBeat(HeartBeat::Time("20261206101500".into())),
            Body::Data(data),
            Body::Data(Data { operation: Some(DataOp::Query), time: Some("20261201000000".into()), end_time: Some("20261202000000".into()), ..Data::default() }),
            Body::Data(Data { operation: Some(DataOp::ReportAck), sequence: Some("9".into()), ack: Some("pass".into()), ..Data::default() }),
        ];
        for b in bodies {
            let m = Message { common: common("x"), body: b };
            assert_eq!(parse(&write(&m)).unwrap(), m);
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let head = "<root><common><building_id>b</building_id><gateway_id>g</gateway_id><type>t</type></common>";
        let deep = format!("{head}<data operation=\"report\">{}{}</data></root>", "<a>".repeat(10), "</a>".repeat(10));
        let cases: Vec<(String, &str)> = vec![
            ("<!DOCTYPE root [<!ENTITY x \"y\">]><root/>".into(), "document type"),
            (format!("{head}<data operation=\"report\"><time>&x;</time></data></root>"), "entity `&x;`"),
            (format!("{head}<data operation=\"report\"><meter id=\"&lol;\"/></data></root>"), "entity `&lol;`"),
            (deep, "deeper than 8"),
            (format!("{head}<data operation=\"report\"><time>{}</time></data></root>", "9".repeat(2000)), "longer than 1024"),
            ("<root><common/></root>".into(), "common/building_id"),
            (format!("{head}<data operation=\"delete\"/></root>"), "data/@operation"),
            (format!("{head}<data operation=\"report\"><total>2</total><current>3</current></data></root>"), "between 1 and total"),
            (format!("{head}<data operation=\"report\"><total>x</total></data></root>"), "not a whole number"),
            (format!("{head}<id_validate operation=\"result\"><result>maybe</result></id_validate></root>"), "neither pass nor fail"),
            (format!("{head}</root>"), "id_validate, heart_beat or data"),
            ("<root><a></b></root>".into(), "not well-formed"),
            ("<root>".into(), "not well-formed"),
            ("<x/>".into(), "no `root`"),
        ];
        for (x, want) in cases {
            let e = parse(x.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{x}: {e} should say {want}");
        }
        assert!(matches!(parse(&vec![b' '; MAX_MESSAGE_BYTES + 1]), Err(XmlError::TooLarge(_))));
    }

    use proptest::prelude::*;

    proptest! {
        // The fuzz target's property (fuzz/fuzz_targets/collector_xml.rs): any text parses to a
        // message or a refusal, and a message written parses back to itself; texts and ids with
        // XML's special characters survive the round trip.
        #[test]
        fn any_text_parses_or_refuses_and_messages_round_trip(junk in ".{0,200}", id in "[ -~]{1,20}", v in "[ -~]{0,20}") {
            let _ = parse(junk.as_bytes());
            let m = Message {
                common: Common { building_id: id.clone(), gateway_id: v.clone(), kind: "report".into() },
                body: Body::Data(Data {
                    operation: Some(DataOp::Report),
                    time: Some(v.clone()),
                    meters: vec![MeterValues { id: id.clone(), name: Some(v.clone()), functions: vec![FunctionValue { id: v.clone(), coding: Some(id.clone()), error: None, value: v.trim().to_string() }] }],
                    ..Data::default()
                }),
            };
            let back = parse(&write(&m));
            // Surrounding spaces of a text are trimmed by the reader (values are numbers).
            let trimmed = |s: &str| s.trim().to_string();
            let want = Message {
                common: Common { building_id: trimmed(&id), gateway_id: trimmed(&v), kind: "report".into() },
                body: Body::Data(Data {
                    operation: Some(DataOp::Report),
                    time: Some(trimmed(&v)),
                    meters: vec![MeterValues { id: id.clone(), name: Some(v.clone()), functions: vec![FunctionValue { id: v.clone(), coding: Some(id.clone()), error: None, value: v.trim().to_string() }] }],
                    ..Data::default()
                }),
            };
            prop_assert_eq!(back, Ok(want));
        }
    }

    #[test]
    fn predefined_entities_and_character_references_are_read() {
        let x = "<root><common><building_id>a&amp;b&#x41;&#66;</building_id><gateway_id>g</gateway_id><type>t</type></common><heart_beat operation=\"notify\"/></root>\0\0\0";
        let m = parse(x.as_bytes()).unwrap();
        assert_eq!(m.common.building_id, "a&bAB");
    }
}
