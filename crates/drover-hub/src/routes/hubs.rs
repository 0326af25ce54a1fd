//! `/admin/hubs`: the hubs of this hub's cluster, and which one leads.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use drover_proto::cluster::HubList;

use crate::hub::HubState;

#[utoipa::path(get, path = "/admin/hubs", tag = "admin", responses((status = 200, description = "The hubs of this hub's cluster, the leader and its lease", body = drover_proto::cluster::HubList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(State(hub): State<Arc<HubState>>) -> Json<HubList> {
    Json(hub.cluster.list().await)
}
