//! Plain HTTP on the admin port, beside gRPC: `/healthz`, `/metrics`
//! (Prometheus), the dashboard page and the JSON calls it makes. A tower
//! layer in front of tonic's router takes these paths; every other request
//! (all gRPC) goes on to tonic. Everything but `/healthz` and the page
//! itself needs the admin token, sent as `Authorization: Bearer TOKEN`;
//! the page asks for it and keeps it in the browser tab's session storage.

use std::task::{Context, Poll};

use serde_json::json;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::codegen::http::{Method, Request, Response, StatusCode, header};

use super::status::status_of;
use crate::api::{Api, ApiError};
use crate::stats::Queue;

/// The dashboard: one page, its script and styles inline, no external
/// assets (it works on an edge server with no internet).
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Error items the dashboard lists, at most, per queue.
const DASHBOARD_ERRORS: usize = 200;

/// The layer that puts the HTTP routes in front of the gRPC router.
#[derive(Clone)]
pub struct HttpLayer {
    api: Api,
}

impl HttpLayer {
    pub fn new(api: Api) -> HttpLayer {
        HttpLayer { api }
    }
}

impl<S> tower::Layer<S> for HttpLayer {
    type Service = HttpRoutes<S>;

    fn layer(&self, inner: S) -> HttpRoutes<S> {
        HttpRoutes {
            api: self.api.clone(),
            inner,
        }
    }
}

/// The HTTP routes, then `inner` (tonic) for the rest.
#[derive(Clone)]
pub struct HttpRoutes<S> {
    api: Api,
    inner: S,
}

impl<S> tower::Service<Request<Body>> for HttpRoutes<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let is_grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if is_grpc {
            // The service that was polled ready takes the call; a clone
            // stays for the next one.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(inner.call(request));
        }
        let api = self.api.clone();
        Box::pin(async move { Ok(route(api, request).await) })
    }
}

fn token(request: &Request<Body>) -> Option<String> {
    crate::transport::bearer_token(
        request
            .headers()
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?,
    )
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff")
        .body(Body::new(body))
        .expect("a response from fixed parts builds")
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

/// An API error as JSON, with the HTTP status its gRPC code stands for.
fn error_response(error: ApiError) -> Response<Body> {
    use tonic::Code;
    let status = status_of(error);
    let code = match status.code() {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(code, &json!({ "error": status.message() }))
}

fn not_found(path: &str) -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({ "error": format!("no page at {path}; try /dashboard, /metrics or /healthz") }),
    )
}

async fn route(api: Api, request: Request<Body>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let token = token(&request);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => return healthz(&api).await,
        (&Method::GET, [""] | ["dashboard"]) => {
            return respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                DASHBOARD_HTML.into(),
            );
        }
        (&Method::GET, ["metrics"]) => stats(&api, token, Format::Prometheus).await,
        (&Method::GET, ["api", "stats"]) => stats(&api, token, Format::Json).await,
        (&Method::GET, ["api", "errors"]) => errors(&api, token).await,
        (&Method::GET, ["api", "definitions"]) => definitions(&api, token).await,
        (&Method::GET, ["api", "queue", queue]) => {
            browse(&api, token, queue, request.uri().query().unwrap_or("")).await
        }
        (&Method::GET, ["api", "queue", queue, id]) => item(&api, token, queue, id).await,
        (&Method::POST, ["api", "queue", queue, id, action]) => {
            item_action(&api, token, queue, id, action).await
        }
        (_, ["healthz" | "dashboard" | "metrics"] | ["api", ..]) => {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({ "error": format!("{method} is not allowed on {path}") }),
            );
        }
        _ => return not_found(&path),
    };
    result.unwrap_or_else(error_response)
}

/// 200 when the store answers and can write, 503 when it cannot; no
/// token needed.
async fn healthz(api: &Api) -> Response<Body> {
    let store = api.store().clone();
    if let Some(failure) = store.write_failure() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "unavailable", "error": failure }),
        );
    }
    let read = tokio::task::spawn_blocking(move || store.instance()).await;
    match read {
        Ok(Ok(instance)) => json_response(
            StatusCode::OK,
            &json!({ "status": "ok", "instance": instance.name }),
        ),
        Ok(Err(e)) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "unavailable", "error": e.to_string() }),
        ),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "unavailable", "error": e.to_string() }),
        ),
    }
}

/// How the stats are rendered.
enum Format {
    Prometheus,
    Json,
}

async fn stats(
    api: &Api,
    token: Option<String>,
    format: Format,
) -> Result<Response<Body>, ApiError> {
    let caller = api.caller(token).await?;
    let stats = api.stats(&caller).await?;
    Ok(match format {
        Format::Prometheus => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::stats::prometheus::render(&stats),
        ),
        Format::Json => json_response(
            StatusCode::OK,
            &serde_json::to_value(stats).expect("stats serialize"),
        ),
    })
}

/// Error items of both queues, newest first, as the dashboard lists them.
async fn errors(api: &Api, token: Option<String>) -> Result<Response<Body>, ApiError> {
    let caller = api.caller(token).await?;
    let page = crate::api::Page {
        limit: DASHBOARD_ERRORS,
        token: String::new(),
    };
    let outbound = api
        .list_outbound(&caller, "Error".into(), String::new(), page.clone())
        .await?
        .items;
    let inbound = api
        .list_inbound(&caller, "Error".into(), String::new(), page)
        .await?
        .items;
    let row = |queue: Queue,
               id: u64,
               remote: &str,
               event: &str,
               error: &Option<String>,
               created: u64| {
        json!({
            "queue": queue.as_str(), "id": id, "remote_system": remote, "process_event": event,
            "error": error, "created_on": crate::ids::format_time(created), "created_ms": created,
        })
    };
    let mut rows: Vec<serde_json::Value> = outbound
        .iter()
        .map(|i| {
            row(
                Queue::Outbound,
                i.id,
                &i.remote_system,
                &i.process_event,
                &i.error,
                i.created_on,
            )
        })
        .chain(inbound.iter().map(|i| {
            row(
                Queue::Inbound,
                i.id,
                &i.remote_system,
                &i.process_event,
                &i.error,
                i.created_on,
            )
        }))
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row["created_ms"].as_u64()));
    Ok(json_response(StatusCode::OK, &json!({ "items": rows })))
}

async fn item_action(
    api: &Api,
    token: Option<String>,
    queue: &str,
    id: &str,
    action: &str,
) -> Result<Response<Body>, ApiError> {
    let id = item_id(id)?;
    let caller = api.caller(token).await?;
    let item = api
        .set_queue_item_status(&caller, queue.to_string(), id, action.to_string())
        .await?;
    Ok(json_response(StatusCode::OK, &item))
}

/// The query string's `key=value` pairs, percent-decoded (`+` is a space).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// A page of a queue: `?status=&remote_system=&process_event=&before=&limit=`.
async fn browse(
    api: &Api,
    token: Option<String>,
    queue: &str,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let mut asked = crate::api::BrowseQuery {
        queue: queue.to_string(),
        ..Default::default()
    };
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "status" => asked.status = value,
            "remote_system" => asked.remote_system = value,
            "process_event" => asked.process_event = value,
            "before" => asked.before = value,
            "limit" => {
                asked.limit = value.trim().parse().map_err(|_| {
                    ApiError::Invalid(format!(
                        "limit `{value}` is not a number of items; give a whole number such as 50"
                    ))
                })?
            }
            other => {
                return Err(ApiError::Invalid(format!(
                    "unknown query parameter `{other}`; a queue page takes status, remote_system, process_event, before and limit"
                )));
            }
        }
    }
    let caller = api.caller(token).await?;
    let page = api.browse_queue(&caller, asked).await?;
    Ok(json_response(StatusCode::OK, &page))
}

/// One queue item with its payload, retry state and flow contexts.
async fn item(
    api: &Api,
    token: Option<String>,
    queue: &str,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let id = item_id(id)?;
    let caller = api.caller(token).await?;
    let item = api
        .queue_item_in_full(&caller, queue.to_string(), id)
        .await?;
    Ok(json_response(StatusCode::OK, &item))
}

/// The process sync definitions the caller may see, read only.
async fn definitions(api: &Api, token: Option<String>) -> Result<Response<Body>, ApiError> {
    let caller = api.caller(token).await?;
    let view = api.definitions_view(&caller).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// A queue item id from the path.
fn item_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::NotAnItemId {
        text: text.to_string(),
    })
}
