//! The path parameters of the journeys API: each is both what a handler extracts and what the
//! description says it takes.

use serde::Deserialize;
use utoipa::IntoParams;

/// `/services/{service_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServicePath {
    /// The service (a UUID that `POST /services/start` returned).
    pub service_id: String,
}

/// `/services/{service_id}/states/{state_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StatePath {
    pub service_id: String,
    /// A state of the service.
    #[param(minimum = 1)]
    pub state_id: u32,
}

/// `/services/{service_id}/tasks/{task_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskPath {
    pub service_id: String,
    /// A task of the service.
    #[param(minimum = 1)]
    pub task_id: u32,
}

/// `/services/{service_id}/extensions/{name}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServiceExtensionPath {
    pub service_id: String,
    /// The extension's name.
    pub name: String,
}

/// `/services/{service_id}/states/{state_id}/extensions/{name}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StateExtensionPath {
    pub service_id: String,
    #[param(minimum = 1)]
    pub state_id: u32,
    pub name: String,
}

/// `/services/{service_id}/tasks/{task_id}/extensions/{name}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskExtensionPath {
    pub service_id: String,
    #[param(minimum = 1)]
    pub task_id: u32,
    pub name: String,
}

/// `/customers/{customer_id}` and `/profiles/{customer_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CustomerPath {
    /// The customer.
    pub customer_id: String,
}

/// `/customers/{customer_id}/services/{service_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AssociatePath {
    pub customer_id: String,
    pub service_id: String,
}

/// `/services/anonymous/{contact_key}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ContactKeyPath {
    /// The contact key the services were started with.
    pub contact_key: String,
}
