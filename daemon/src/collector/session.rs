//! One collector's session with the centre, as a pure state machine: messages in, steps out.
//! The listener does the I/O (frames, AES, the store) and the counting and auditing.
//!
//! The guideline's order (shared reference, china-field-protocols.md): the collector asks in
//! (`id_validate request`), the centre answers a random `sequence`, the collector answers
//! MD5(key + sequence), the centre answers `pass` or `fail`. Then heartbeats (answered with the
//! centre's time, `YYYYMMDDHHmmss`, to set the collector's clock) and data: `report` (periodic),
//! `continuous` (the backlog after an outage) and `reply` (to the centre's `query`), each packet
//! answered with an acknowledgement once its readings are durable.

use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::Tz;

use super::xml::{Body, Common, Data, DataOp, HeartBeat, IdValidate, Message};

/// The protocol's time form.
pub const TIME_FORMAT: &str = "%Y%m%d%H%M%S";

/// A value a collector reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The collector's building id.
    pub building: String,
    pub gateway: String,
    pub meter: String,
    pub function: String,
    pub coding: Option<String>,
    pub ts_ms: i64,
    pub value: f64,
}

/// A value set aside: flagged by the collector or not a number.
#[derive(Debug, Clone, PartialEq)]
pub struct BadValue {
    pub meter: String,
    pub function: String,
    pub reason: String,
}

/// What the listener does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this answer.
    Reply(Message),
    /// Store these readings (durably), then send the answer.
    Store { readings: Vec<Reading>, bad: Vec<BadValue>, ack: Message, op: DataOp },
    /// The identity check failed: send the answer (`fail`), count, audit, close.
    Refused { reply: Message, reason: String },
    /// A protocol error: nothing is answered; count and close.
    Error(String),
    /// Nothing to do (an acknowledgement of ours, ...).
    Nothing,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Start,
    Challenged { building: String, gateway: String, sequence: String },
    In { building: String, gateway: String },
}

/// A session.
#[derive(Debug)]
pub struct Session {
    state: State,
    tz: Tz,
}

/// The key of a collector: by building id (and gateway id).
pub trait Keys {
    fn key(&self, building: &str, gateway: &str) -> Option<String>;
    /// Whether the collector that passed as (`building`, `gateway`) may send the data of
    /// (`data_building`, `data_gateway`): itself only, unless it is a lower data centre, which
    /// reports the buildings of its division.
    fn covers(&self, building: &str, gateway: &str, data_building: &str, data_gateway: &str) -> bool {
        building == data_building && gateway == data_gateway
    }
}

impl Session {
    pub fn new(tz: Tz) -> Session {
        Session { state: State::Start, tz }
    }

    /// The collector, once it passed the identity check.
    pub fn collector(&self) -> Option<(&str, &str)> {
        match &self.state {
            State::In { building, gateway } => Some((building, gateway)),
            _ => None,
        }
    }

    /// The next step after `msg`. `sequence` is a fresh random sequence (used for a request),
    /// `now_ms` the centre's time.
    pub fn on_message(&mut self, msg: Message, keys: &dyn Keys, sequence: &str, now_ms: i64) -> Step {
        let answer = |common: &Common, kind: &str, body: Body| Message { common: Common { kind: kind.into(), ..common.clone() }, body };
        match (&self.state, msg.body) {
            (_, Body::IdValidate(IdValidate::Request)) => {
                self.state = State::Challenged { building: msg.common.building_id.clone(), gateway: msg.common.gateway_id.clone(), sequence: sequence.to_string() };
                Step::Reply(answer(&msg.common, "id_validate", Body::IdValidate(IdValidate::Sequence(sequence.to_string()))))
            }
            (State::Challenged { building, gateway, sequence }, Body::IdValidate(IdValidate::Md5(got))) => {
                if (building, gateway) != (&msg.common.building_id, &msg.common.gateway_id) {
                    let reason = format!("md5 answer from {}/{} to the sequence sent to {building}/{gateway}", msg.common.building_id, msg.common.gateway_id);
                    self.state = State::Start;
                    return Step::Refused { reply: answer(&msg.common, "id_validate", Body::IdValidate(IdValidate::Result(false))), reason };
                }
                let (building, gateway) = (building.clone(), gateway.clone());
                let ok = match keys.key(&building, &gateway) {
                    Some(k) => super::crypto::md5_matches(&k, sequence, &got),
                    None => {
                        self.state = State::Start;
                        return Step::Refused {
                            reply: answer(&msg.common, "id_validate", Body::IdValidate(IdValidate::Result(false))),
                            reason: format!("collector {building}/{gateway} has no key in [collector] keys"),
                        };
                    }
                };
                let reply = answer(&msg.common, "id_validate", Body::IdValidate(IdValidate::Result(ok)));
                if ok {
                    self.state = State::In { building, gateway };
                    Step::Reply(reply)
                } else {
                    self.state = State::Start;
                    Step::Refused { reply, reason: format!("collector {building}/{gateway} answered a wrong MD5 to the identity check") }
                }
            }
            (State::In { .. }, Body::HeartBeat(HeartBeat::Notify)) => Step::Reply(answer(&msg.common, "heart_beat", Body::HeartBeat(HeartBeat::Time(self.time_string(now_ms))))),
            (State::In { building, gateway }, Body::Data(d)) => {
                if !keys.covers(building, gateway, &msg.common.building_id, &msg.common.gateway_id) {
                    return Step::Error(format!("data of {}/{} on the session of {building}/{gateway}", msg.common.building_id, msg.common.gateway_id));
                }
                self.data(&msg.common, d)
            }
            (_, Body::IdValidate(IdValidate::Md5(_))) => Step::Error("an md5 answer without a sequence sent".into()),
            (_, Body::HeartBeat(HeartBeat::Notify) | Body::Data(_)) => Step::Error(format!("`{}` before the identity check passed", msg.common.kind)),
            (_, Body::HeartBeat(HeartBeat::Time(_)) | Body::IdValidate(IdValidate::Sequence(_) | IdValidate::Result(_))) => Step::Error("a centre's message sent to the centre".into()),
        }
    }

    fn data(&self, common: &Common, d: Data) -> Step {
        let op = d.operation.unwrap_or(DataOp::Report);
        let Some(ack_op) = op.ack() else {
            return match op {
                DataOp::Query => Step::Error("a query sent to the centre".into()),
                _ => Step::Nothing,
            };
        };
        let ack = Message {
            common: Common { kind: format!("{}_ack", if op == DataOp::Report { "report" } else { "continuous" }), ..common.clone() },
            body: Body::Data(Data { operation: Some(ack_op), sequence: d.sequence.clone(), total: d.total, current: d.current, ack: Some("pass".into()), ..Data::default() }),
        };
        let Some(t) = d.time.as_deref() else {
            return Step::Error("data without `time`".into());
        };
        let ts_ms = match self.parse_time(t) {
            Ok(ms) => ms,
            Err(e) => return Step::Error(e),
        };
        let mut readings = Vec::new();
        let mut bad = Vec::new();
        for m in d.meters {
            for f in m.functions {
                if f.is_error() {
                    bad.push(BadValue { meter: m.id.clone(), function: f.id.clone(), reason: format!("the collector flagged the value with error {}", f.error.as_deref().unwrap_or("")) });
                    continue;
                }
                match f.value.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => readings.push(Reading {
                        building: common.building_id.clone(),
                        gateway: common.gateway_id.clone(),
                        meter: m.id.clone(),
                        function: f.id.clone(),
                        coding: f.coding.clone(),
                        ts_ms,
                        value: v,
                    }),
                    _ => bad.push(BadValue { meter: m.id.clone(), function: f.id.clone(), reason: format!("`{}` is not a number", f.value) }),
                }
            }
        }
        Step::Store { readings, bad, ack, op }
    }

    /// `YYYYMMDDHHmmss` in the centre's time zone.
    pub fn time_string(&self, ms: i64) -> String {
        self.tz.timestamp_millis_opt(ms).single().map(|t| t.format(TIME_FORMAT).to_string()).unwrap_or_default()
    }

    /// `YYYYMMDDHHmmss` (local time of the centre's zone) as milliseconds.
    pub fn parse_time(&self, s: &str) -> Result<i64, String> {
        parse_time(s, self.tz)
    }
}

/// `YYYYMMDDHHmmss` in `tz` as milliseconds; an hour skipped by a clock change is refused, a
/// repeated one is taken the first time.
pub fn parse_time(s: &str, tz: Tz) -> Result<i64, String> {
    let n = NaiveDateTime::parse_from_str(s.trim(), TIME_FORMAT).map_err(|_| format!("time `{s}` is not YYYYMMDDHHmmss"))?;
    tz.from_local_datetime(&n).earliest().map(|t| t.timestamp_millis()).ok_or_else(|| format!("time `{s}` does not exist in {tz}"))
}

/// The centre's query for a time range.
pub fn query(common: &Common, start: &str, end: &str) -> Message {
    Message {
        common: Common { kind: "query".into(), ..common.clone() },
        body: Body::Data(Data { operation: Some(DataOp::Query), time: Some(start.into()), end_time: Some(end.into()), ..Data::default() }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::xml::{FunctionValue, MeterValues};
    use super::*;

    struct K;
    impl Keys for K {
        fn key(&self, building: &str, _gateway: &str) -> Option<String> {
            (building == "110101A001").then(|| "secret".to_string())
        }
    }

    fn msg(building: &str, kind: &str, body: Body) -> Message {
        Message { common: Common { building_id: building.into(), gateway_id: "01".into(), kind: kind.into() }, body }
    }

    const NOW: i64 = 1_796_524_500_000; // 2026-12-06T02:35:00Z = 10:35:00 in Shanghai

    fn pass(s: &mut Session) {
        let step = s.on_message(msg("110101A001", "id_validate", Body::IdValidate(IdValidate::Request)), &K, "834721", NOW);
        assert!(matches!(&step, Step::Reply(Message { body: Body::IdValidate(IdValidate::Sequence(q)), .. }) if q == "834721"), "{step:?}");
        let md5 = super::super::crypto::identity_md5("secret", "834721");
        let step = s.on_message(msg("110101A001", "id_validate", Body::IdValidate(IdValidate::Md5(md5))), &K, "x", NOW);
        assert!(matches!(step, Step::Reply(Message { body: Body::IdValidate(IdValidate::Result(true)), .. })), "{step:?}");
    }

    #[test]
    fn identity_heartbeat_and_report() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let mut s = Session::new(tz);
        pass(&mut s);
        assert_eq!(s.collector(), Some(("110101A001", "01")));
        // Heartbeat: the centre's time in Shanghai (UTC+8): 02:35:00Z is 10:35:00.
        let step = s.on_message(msg("110101A001", "heart_beat", Body::HeartBeat(HeartBeat::Notify)), &K, "x", NOW);
        assert!(matches!(&step, Step::Reply(Message { body: Body::HeartBeat(HeartBeat::Time(t)), .. }) if t == "20261206103500"), "{step:?}");
        // A report of 10:15 local = 02:15Z = NOW - 20 min.
        let d = Data {
            operation: Some(DataOp::Report),
            sequence: Some("5".into()),
            time: Some("20261206101500".into()),
            total: Some(2),
            current: Some(1),
            meters: vec![MeterValues {
                id: "1".into(),
                name: None,
                functions: vec![
                    FunctionValue { id: "1".into(), coding: Some("01A00".into()), error: None, value: "100.5".into() },
                    FunctionValue { id: "2".into(), coding: None, error: Some("192".into()), value: "3".into() },
                    FunctionValue { id: "3".into(), coding: None, error: None, value: "n/a".into() },
                ],
            }],
            ..Data::default()
        };
        let Step::Store { readings, bad, ack, op } = s.on_message(msg("110101A001", "report", Body::Data(d)), &K, "x", NOW) else { panic!("store") };
        assert_eq!(op, DataOp::Report);
        assert_eq!(readings, vec![Reading { building: "110101A001".into(), gateway: "01".into(), meter: "1".into(), function: "1".into(), coding: Some("01A00".into()), ts_ms: NOW - 20 * 60_000, value: 100.5 }]);
        assert_eq!(bad.len(), 2);
        assert!(bad[0].reason.contains("error 192") && bad[1].reason.contains("not a number"), "{bad:?}");
        let Body::Data(a) = ack.body else { panic!("ack") };
        assert_eq!((a.operation, a.sequence.as_deref(), a.current), (Some(DataOp::ReportAck), Some("5"), Some(1)));
        // A continued report is answered continuous_ack.
        let c = Data { operation: Some(DataOp::Continuous), time: Some("20261205000000".into()), ..Data::default() };
        let Step::Store { ack, .. } = s.on_message(msg("110101A001", "continuous", Body::Data(c)), &K, "x", NOW) else { panic!("store") };
        assert!(matches!(ack.body, Body::Data(Data { operation: Some(DataOp::ContinuousAck), .. })));
    }

    #[test]
    fn refusals() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        // Data before the identity check.
        let mut s = Session::new(tz);
        assert!(matches!(s.on_message(msg("110101A001", "report", Body::Data(Data::default())), &K, "x", NOW), Step::Error(e) if e.contains("before the identity check")));
        // A wrong MD5: fail, and the session is back at the start.
        s.on_message(msg("110101A001", "id_validate", Body::IdValidate(IdValidate::Request)), &K, "111", NOW);
        let step = s.on_message(msg("110101A001", "id_validate", Body::IdValidate(IdValidate::Md5(super::super::crypto::identity_md5("wrong", "111")))), &K, "x", NOW);
        assert!(matches!(&step, Step::Refused { reply: Message { body: Body::IdValidate(IdValidate::Result(false)), .. }, reason } if reason.contains("wrong MD5")), "{step:?}");
        assert_eq!(s.collector(), None);
        // An unknown collector.
        s.on_message(msg("990000Z999", "id_validate", Body::IdValidate(IdValidate::Request)), &K, "1", NOW);
        assert!(matches!(s.on_message(msg("990000Z999", "id_validate", Body::IdValidate(IdValidate::Md5("x".into()))), &K, "x", NOW), Step::Refused { reason, .. } if reason.contains("no key")));
        // An md5 answer from another building than the one challenged.
        s.on_message(msg("110101A001", "id_validate", Body::IdValidate(IdValidate::Request)), &K, "1", NOW);
        let md5 = super::super::crypto::identity_md5("secret", "1");
        assert!(matches!(s.on_message(msg("110101A002", "id_validate", Body::IdValidate(IdValidate::Md5(md5))), &K, "x", NOW), Step::Refused { .. }));
        // After passing: data of another building, and a bad time.
        let mut s = Session::new(tz);
        pass(&mut s);
        assert!(matches!(s.on_message(msg("110101A002", "report", Body::Data(Data { time: Some("20261206101500".into()), ..Data::default() })), &K, "x", NOW), Step::Error(_)));
        let bad = Data { operation: Some(DataOp::Report), time: Some("2026-12-06".into()), ..Data::default() };
        assert!(matches!(s.on_message(msg("110101A001", "report", Body::Data(bad)), &K, "x", NOW), Step::Error(e) if e.contains("YYYYMMDDHHmmss")));
    }

    #[test]
    fn times_in_the_zone() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        // 2026-01-01 08:00 in Shanghai is 00:00Z: 1767225600000 ms.
        assert_eq!(parse_time("20260101080000", tz), Ok(1_767_225_600_000));
        assert!(parse_time("20261301000000", tz).is_err());
        // 02:30 on 2026-03-08 does not exist in New York (clocks go from 02:00 to 03:00).
        let ny: Tz = "America/New_York".parse().unwrap();
        assert!(parse_time("20260308023000", ny).unwrap_err().contains("does not exist"));
    }
}
