//! `GET /api/v1/collectors`: the national-protocol collectors seen since the daemon started
//! (connected, last heard, values stored, bad, identity checks refused, the last problem), and
//! the values no registry meter takes, with the meter id each is stored under (issue 21).
//! Readers of everything only (the route's default rule).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::Shared;

pub(super) async fn list(State(s): State<Shared>) -> Json<Value> {
    let (seen, unassigned) = s.collectors.snapshot();
    Json(json!({ "collectors": seen, "unassigned": unassigned }))
}
