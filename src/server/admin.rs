//! The admin gRPC service: converts requests to domain calls on `Api` and
//! answers to wire types. It also builds the server (health and reflection
//! included, TLS when configured). No business rules live here.

use std::future::Future;

use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::status::status_of;

mod remotes;
use crate::api::{Api, ApiError, Caller};
use crate::attachment::Attachment;
use crate::ids::format_time;
use crate::queue::OutboundItem;
use crate::record::{JournalEntry, JournalText, Record, RecordWrite};
use crate::store::sink::SinkError;
use crate::transport::pb::admin as pb;
use crate::transport::pb::admin::admin_server::{Admin, AdminServer};
use crate::user::User;
use remotes::remote_to_pb;

/// The service over one instance's `Api`.
pub struct AdminService {
    api: Api,
}

fn token<T>(request: &Request<T>) -> Option<String> {
    crate::transport::bearer_token(request.metadata().get("authorization")?.to_str().ok()?)
}

impl AdminService {
    /// The caller the request's bearer token authenticates, once per call.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.api.caller(token(request)).await.map_err(status_of)
    }
}

fn record_to_pb(record: &Record, journal: &[JournalEntry]) -> pb::Record {
    pb::Record {
        table: record.table.clone(),
        fields: record.all_fields().into_iter().collect(),
        journal: journal
            .iter()
            .map(|entry| pb::JournalEntry {
                field: entry.field.clone(),
                id: entry.id.clone(),
                author: entry.author.clone(),
                time: format_time(entry.created_on),
                text: entry.text.clone(),
            })
            .collect(),
    }
}

fn user_to_pb(user: &User) -> pb::User {
    pb::User {
        name: user.name.clone(),
        roles: user.roles.iter().map(|r| r.as_str().to_string()).collect(),
        domain: user.domain.to_string(),
    }
}

fn outbound_to_pb(item: &OutboundItem) -> pb::OutboundItem {
    pb::OutboundItem {
        id: item.id,
        sequence: item.sequence,
        status: item.status.as_str().to_string(),
        process_event: item.process_event.clone(),
        remote_system: item.remote_system.clone(),
        operation: pb::Operation::from(item.operation) as i32,
        table: item.table.clone(),
        local_correlation_id: item.local_correlation_id.clone(),
        domain: item.domain.to_string(),
        created_on: format_time(item.created_on),
        payload_json: item.payload.to_json().to_string(),
        capture_definition: item.capture_definition.clone(),
        outbound_flow: item.outbound_flow.clone(),
        error: item.error.clone().unwrap_or_default(),
    }
}

fn write_from_pb(write: pb::RecordWrite) -> Result<RecordWrite, Status> {
    let operation = pb::Operation::try_from(write.operation)
        .map_err(|_| Status::invalid_argument(format!("unknown operation {}", write.operation)))?
        .try_into()
        .map_err(Status::invalid_argument)?;
    Ok(RecordWrite {
        attachments: Default::default(),
        operation,
        table: write.table,
        sys_id: (!write.sys_id.is_empty()).then_some(write.sys_id),
        fields: write.fields.into_iter().collect(),
        journal: write
            .journal
            .into_iter()
            .map(|j| JournalText {
                field: j.field,
                text: j.text,
                origin: None,
            })
            .collect(),
    })
}

fn attachment_to_pb(table: &str, record_sys_id: &str, a: &Attachment) -> pb::Attachment {
    let origin = a.origin.as_ref();
    pb::Attachment {
        sys_id: a.sys_id.clone(),
        table: table.to_string(),
        record_sys_id: record_sys_id.to_string(),
        file_name: a.file_name.clone(),
        content_type: a.content_type.clone(),
        size: a.size,
        hash: a.hash.clone(),
        created_on: format_time(a.created_on),
        created_by: a.created_by.clone(),
        origin_remote_system: origin.map(|o| o.remote_system.clone()).unwrap_or_default(),
        origin_sys_id: origin.map(|o| o.sys_id.clone()).unwrap_or_default(),
    }
}

type AttachmentStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::AttachmentPart, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn begin_upload(
        &self,
        request: Request<pb::BeginUploadRequest>,
    ) -> Result<Response<pb::UploadState>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let state = self
            .api
            .begin_upload(&caller, req.hash, req.size)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::UploadState {
            received: state.received,
            complete: state.complete,
        }))
    }

    async fn upload_content(
        &self,
        request: Request<tonic::Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::UploadState>, Status> {
        let caller = self.caller(&request).await?;
        let mut chunks = request.into_inner();
        let Some(first) = chunks.message().await? else {
            return Err(Status::invalid_argument("the upload sent no chunk"));
        };
        let opened = self
            .api
            .open_upload(&caller, first.hash.clone(), first.size, first.offset)
            .await
            .map_err(status_of)?;
        let Some(mut sink) = opened else {
            return Ok(Response::new(pb::UploadState {
                received: first.size,
                complete: true,
            }));
        };
        let size = first.size;
        let refused = |e: SinkError| status_of(ApiError::from(e));
        let mut next = Some(first);
        while let Some(chunk) = next.take() {
            if !chunk.data.is_empty() {
                sink.push(chunk.offset, chunk.data, &chunk.chunk_hash)
                    .await
                    .map_err(refused)?;
            }
            next = chunks.message().await?;
        }
        if sink.received() < size {
            // The client stopped early: keep what arrived for it to resume.
            let received = sink.pause().await.map_err(status_of)?;
            return Ok(Response::new(pb::UploadState {
                received,
                complete: false,
            }));
        }
        let content = sink.finish().await.map_err(refused)?;
        Ok(Response::new(pb::UploadState {
            received: content.received,
            complete: content.complete,
        }))
    }

    async fn add_attachment(
        &self,
        request: Request<pb::AddAttachmentRequest>,
    ) -> Result<Response<pb::Attachment>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let attachment = self
            .api
            .add_attachment(
                &caller,
                req.table.clone(),
                req.sys_id.clone(),
                req.file_name,
                req.content_type,
                req.hash,
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(attachment_to_pb(
            &req.table,
            &req.sys_id,
            &attachment,
        )))
    }

    async fn list_attachments(
        &self,
        request: Request<pb::AttachmentsRequest>,
    ) -> Result<Response<pb::ListAttachmentsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let attachments = self
            .api
            .list_attachments(&caller, req.table.clone(), req.sys_id.clone())
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListAttachmentsResponse {
            attachments: attachments
                .iter()
                .map(|a| attachment_to_pb(&req.table, &req.sys_id, a))
                .collect(),
        }))
    }

    type GetAttachmentStream = AttachmentStream;

    async fn get_attachment(
        &self,
        request: Request<pb::AttachmentRequest>,
    ) -> Result<Response<Self::GetAttachmentStream>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (attachment, content) = self
            .api
            .find_attachment(
                &caller,
                req.table.clone(),
                req.sys_id.clone(),
                req.attachment,
            )
            .await
            .map_err(status_of)?;
        let (parts, stream) = tokio::sync::mpsc::channel(2);
        let api = self.api.clone();
        tokio::spawn(async move {
            let head = pb::AttachmentPart {
                part: Some(pb::attachment_part::Part::Attachment(attachment_to_pb(
                    &req.table,
                    &req.sys_id,
                    &attachment,
                ))),
            };
            if parts.send(Ok(head)).await.is_err() {
                return;
            }
            for index in 0..content.chunk_count() {
                let part = api
                    .read_chunk(&content, index)
                    .await
                    .map(|data| pb::AttachmentPart {
                        part: Some(pb::attachment_part::Part::Data(data.into())),
                    });
                let failed = part.is_err();
                if parts.send(part.map_err(status_of)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }

    async fn remove_attachment(
        &self,
        request: Request<pb::AttachmentRequest>,
    ) -> Result<Response<pb::Attachment>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let attachment = self
            .api
            .remove_attachment(
                &caller,
                req.table.clone(),
                req.sys_id.clone(),
                req.attachment,
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(attachment_to_pb(
            &req.table,
            &req.sys_id,
            &attachment,
        )))
    }

    async fn write_records(
        &self,
        request: Request<pb::WriteRecordsRequest>,
    ) -> Result<Response<pb::WriteRecordsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let writes = request
            .into_inner()
            .writes
            .into_iter()
            .map(write_from_pb)
            .collect::<Result<Vec<_>, _>>()?;
        let results = self
            .api
            .write_records(&caller, writes)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::WriteRecordsResponse {
            results: results
                .into_iter()
                .map(|r| pb::WriteResult {
                    sys_id: r.sys_id,
                    mod_count: r.mod_count,
                    queued: r.queued,
                })
                .collect(),
        }))
    }

    async fn get_record(
        &self,
        request: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (record, journal) = self
            .api
            .get_record(&caller, req.table, req.sys_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::GetRecordResponse {
            record: Some(record_to_pb(&record, &journal)),
        }))
    }

    async fn list_records(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let records = self
            .api
            .list_records(&caller, req.table, req.query, req.limit as usize)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListRecordsResponse {
            records: records.iter().map(|r| record_to_pb(r, &[])).collect(),
        }))
    }

    async fn add_user(
        &self,
        request: Request<pb::AddUserRequest>,
    ) -> Result<Response<pb::AddUserResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (user, new_token) = self
            .api
            .add_user(&caller, req.name, req.roles, req.domain)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::AddUserResponse {
            user: Some(user_to_pb(&user)),
            token: new_token,
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let users = self.api.list_users(&caller).await.map_err(status_of)?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(user_to_pb).collect(),
        }))
    }

    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let caller = self.caller(&request).await?;
        let new_token = self
            .api
            .issue_token(&caller, request.into_inner().name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::IssueTokenResponse { token: new_token }))
    }

    async fn set_roles(
        &self,
        request: Request<pb::SetRolesRequest>,
    ) -> Result<Response<pb::SetRolesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let user = self
            .api
            .set_roles(&caller, req.name, req.roles)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::SetRolesResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn apply_config(
        &self,
        request: Request<pb::ApplyConfigRequest>,
    ) -> Result<Response<pb::ApplyConfigResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let report = self
            .api
            .apply_config(&caller, req.toml, req.file_name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ApplyConfigResponse {
            created: report.created,
            changed: report.changed,
            removed: report.removed,
        }))
    }

    async fn export_config(
        &self,
        request: Request<pb::ExportConfigRequest>,
    ) -> Result<Response<pb::ExportConfigResponse>, Status> {
        let caller = self.caller(&request).await?;
        let toml = self.api.export_config(&caller).await.map_err(status_of)?;
        Ok(Response::new(pb::ExportConfigResponse { toml }))
    }

    async fn list_outbound(
        &self,
        request: Request<pb::ListOutboundRequest>,
    ) -> Result<Response<pb::ListOutboundResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let page = crate::api::Page {
            limit: req.limit as usize,
            token: req.page_token,
        };
        let listed = self
            .api
            .list_outbound(&caller, req.status, req.remote_system, page)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListOutboundResponse {
            items: listed.items.iter().map(outbound_to_pb).collect(),
            items_json: listed.json,
            next_page_token: listed.next_page_token,
        }))
    }

    async fn list_remote_systems(
        &self,
        request: Request<pb::ListRemoteSystemsRequest>,
    ) -> Result<Response<pb::ListRemoteSystemsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let group = request.into_inner().group;
        let remotes = self
            .api
            .list_remote_systems(&caller, &group)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListRemoteSystemsResponse {
            remote_systems: remotes.iter().map(remote_to_pb).collect(),
        }))
    }

    async fn invite_remote(
        &self,
        request: Request<pb::InviteRemoteRequest>,
    ) -> Result<Response<pb::InviteRemoteResponse>, Status> {
        remotes::invite(self, request).await
    }

    async fn join_remote(
        &self,
        request: Request<pb::JoinRemoteRequest>,
    ) -> Result<Response<pb::JoinRemoteResponse>, Status> {
        remotes::join(self, request).await
    }

    async fn remove_remote(
        &self,
        request: Request<pb::RemoteRequest>,
    ) -> Result<Response<pb::RemoveRemoteResponse>, Status> {
        remotes::remove(self, request).await
    }

    async fn validate_remote(
        &self,
        request: Request<pb::RemoteRequest>,
    ) -> Result<Response<pb::ValidateRemoteResponse>, Status> {
        let caller = self.caller(&request).await?;
        let (problems, remote) = self
            .api
            .validate_remote(&caller, request.into_inner().name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ValidateRemoteResponse {
            ok: problems.is_empty(),
            problems,
            remote_system: Some(remote_to_pb(&remote)),
        }))
    }

    async fn disable_remote(
        &self,
        request: Request<pb::RemoteRequest>,
    ) -> Result<Response<pb::RemoteSystem>, Status> {
        let caller = self.caller(&request).await?;
        let remote = self
            .api
            .disable_remote(&caller, request.into_inner().name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(remote_to_pb(&remote)))
    }

    async fn remote_load(
        &self,
        request: Request<pb::RemoteLoadRequest>,
    ) -> Result<Response<pb::RemoteLoadResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let load = self
            .api
            .remote_load(&caller, r.name, r.action, r.process_event, r.query)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RemoteLoadResponse {
            load_json: serde_json::to_string(&load).expect("loads serialize"),
        }))
    }

    async fn remote_reconcile(
        &self,
        request: Request<pb::RemoteReconcileRequest>,
    ) -> Result<Response<pb::RemoteReconcileResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let reconciliation = self
            .api
            .remote_reconcile(&caller, r.name, r.action, r.table, r.repair)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RemoteReconcileResponse {
            reconcile_json: serde_json::to_string(&reconciliation)
                .expect("reconciliations serialize"),
        }))
    }

    async fn set_remote_token(
        &self,
        request: Request<pb::SetRemoteTokenRequest>,
    ) -> Result<Response<pb::RemoteSystem>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let remote = self
            .api
            .set_remote_token(&caller, req.name, req.token)
            .await
            .map_err(status_of)?;
        Ok(Response::new(remote_to_pb(&remote)))
    }

    async fn list_inbound(
        &self,
        request: Request<pb::ListInboundRequest>,
    ) -> Result<Response<pb::ListInboundResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let page = crate::api::Page {
            limit: req.limit as usize,
            token: req.page_token,
        };
        let listed = self
            .api
            .list_inbound(&caller, req.status, req.remote_system, page)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListInboundResponse {
            items_json: listed.json,
            next_page_token: listed.next_page_token,
        }))
    }

    async fn get_queue_item(
        &self,
        request: Request<pb::QueueItemRequest>,
    ) -> Result<Response<pb::QueueItemResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let item = self
            .api
            .queue_item(&caller, req.queue, req.id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::QueueItemResponse {
            item_json: item.to_string(),
        }))
    }

    async fn set_queue_item_status(
        &self,
        request: Request<pb::SetQueueItemStatusRequest>,
    ) -> Result<Response<pb::QueueItemResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let item = self
            .api
            .set_queue_item_status(&caller, req.queue, req.id, req.action)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::QueueItemResponse {
            item_json: item.to_string(),
        }))
    }

    async fn list_correlations(
        &self,
        request: Request<pb::ListCorrelationsRequest>,
    ) -> Result<Response<pb::ListCorrelationsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let correlations = self
            .api
            .list_correlations(&caller, request.into_inner().remote_system)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListCorrelationsResponse {
            correlations: correlations
                .into_iter()
                .map(|c| pb::Correlation {
                    remote_system: c.remote_system,
                    remote_correlation_id: c.remote_correlation_id,
                    table: c.table,
                    local_correlation_id: c.local_correlation_id,
                    state: if c.active { "Active" } else { "Inactive" }.to_string(),
                    created_on: format_time(c.created_on),
                    updated_on: format_time(c.updated_on),
                })
                .collect(),
        }))
    }

    async fn get_flow_context(
        &self,
        request: Request<pb::FlowContextRequest>,
    ) -> Result<Response<pb::FlowContextResponse>, Status> {
        let caller = self.caller(&request).await?;
        let id = request.into_inner().id;
        let context = self
            .api
            .flow_context(&caller, id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::FlowContextResponse {
            context_json: serde_json::to_string(&context).expect("contexts serialize"),
        }))
    }

    async fn get_stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let stats = self.api.stats(&caller).await.map_err(status_of)?;
        Ok(Response::new(pb::StatsResponse {
            stats_json: serde_json::to_string(&stats).expect("stats serialize"),
        }))
    }

    async fn list_properties(
        &self,
        request: Request<pb::ListPropertiesRequest>,
    ) -> Result<Response<pb::ListPropertiesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let properties = self.api.list_properties(&caller).await.map_err(status_of)?;
        Ok(Response::new(pb::ListPropertiesResponse {
            properties: properties.into_iter().map(property_to_pb).collect(),
        }))
    }

    async fn set_property(
        &self,
        request: Request<pb::SetPropertyRequest>,
    ) -> Result<Response<pb::Property>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let property = self
            .api
            .set_property(&caller, req.name, req.value)
            .await
            .map_err(status_of)?;
        Ok(Response::new(property_to_pb(property)))
    }
}

fn property_to_pb(
    (name, value, default_value, description): (String, String, String, String),
) -> pb::Property {
    pb::Property {
        name,
        value,
        default_value,
        description,
    }
}

/// A bound admin listener, not yet serving.
pub struct Listener {
    incoming: TcpIncoming,
    pub address: std::net::SocketAddr,
}

/// Binds the admin listener (port 0 picks a free port; `address` tells
/// which).
pub fn bind(address: std::net::SocketAddr) -> std::io::Result<Listener> {
    let incoming = TcpIncoming::bind(address)?.with_nodelay(Some(true));
    let address = incoming.local_addr()?;
    Ok(Listener { incoming, address })
}

/// TLS material for serving the admin API beyond loopback.
pub struct AdminTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Serves the admin API (with gRPC health and reflection, and the plain
/// HTTP routes of `http`) on `listener` until `shutdown` completes;
/// in-flight calls finish first.
pub async fn serve(
    api: Api,
    listener: Listener,
    tls: Option<AdminTls>,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServer<AdminService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::transport::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // The descriptor set also holds the peer service, which this port
        // does not serve: list only what it does.
        .with_service_name("procsync.admin.v1.Admin")
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let http = super::http::HttpLayer::new(api.clone());
    let admin = AdminServer::new(AdminService { api })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .accept_http1(true)
        .layer(http)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(admin);
    match tls {
        None => router
            .serve_with_incoming_shutdown(listener.incoming, shutdown)
            .await
            .map_err(|e| e.to_string()),
        // Our own TLS acceptor rather than tonic's: tonic offers only
        // HTTP/2 in ALPN, and `/metrics` scrapers speak HTTP/1.1.
        Some(tls) => {
            let config = crate::transport::tls::admin_server_config(&tls.cert_pem, &tls.key_pem)?;
            let (incoming, accept_loop) =
                crate::transport::tls::accept_tls(listener.incoming, config, "admin client", None);
            let served = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            accept_loop.abort();
            served.map_err(|e| e.to_string())
        }
    }
}
