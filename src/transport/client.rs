//! A client of the admin API for the CLI and the benchmark: connects (plain
//! on loopback, TLS pinned to the instance certificate otherwise), attaches
//! the token to every call and returns plain domain values.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

mod enrol;
mod errors;

pub use enrol::{Invited, JoinedHub, Unlinked};
pub use errors::ClientError;
use errors::describe_connection;

use super::cause::{chain, connection};
use super::pb::admin as pb;
use super::pb::admin::admin_client::AdminClient as PbClient;
use crate::record::{Operation, RecordWrite, WriteResult};
use crate::store::ApplyReport;

/// A record as the admin API returns it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordData {
    pub table: String,
    pub fields: BTreeMap<String, String>,
    pub journal: Vec<JournalData>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JournalData {
    pub field: String,
    pub id: String,
    pub author: String,
    pub time: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserData {
    pub name: String,
    pub roles: Vec<String>,
    pub domain: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboundData {
    pub id: u64,
    pub sequence: u64,
    pub status: String,
    pub process_event: String,
    pub remote_system: String,
    pub operation: String,
    pub table: String,
    pub local_correlation_id: String,
    pub domain: String,
    pub created_on: String,
    pub capture_definition: String,
    pub outbound_flow: String,
    pub error: String,
    pub payload: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteSystemData {
    pub sys_id: String,
    pub name: String,
    pub endpoint: String,
    pub fingerprint: String,
    pub external_id: String,
    pub outbound_state: String,
    pub inbound_state: String,
    pub inbound_api_user: String,
    pub run_as: String,
    pub health: String,
    pub last_error: String,
    pub attempts: u32,
    pub next_attempt_on: String,
    pub has_token: bool,
    pub round_trip_ms: u64,
    pub attachment_bytes_sent: u64,
    pub attachment_bytes_received: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub load: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reconcile: String,
    /// "member" or "hub" when made by a join.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub enrolled: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub encoded_bytes_sent: u64,
    pub encoded_bytes_received: u64,
    pub wire_bytes_sent: u64,
    pub wire_bytes_received: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttachmentData {
    pub sys_id: String,
    pub table: String,
    pub record_sys_id: String,
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    pub hash: String,
    pub created_on: String,
    pub created_by: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub origin_remote_system: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub origin_sys_id: String,
}

impl From<pb::Attachment> for AttachmentData {
    fn from(a: pb::Attachment) -> AttachmentData {
        AttachmentData {
            sys_id: a.sys_id,
            table: a.table,
            record_sys_id: a.record_sys_id,
            file_name: a.file_name,
            content_type: a.content_type,
            size: a.size,
            hash: a.hash,
            created_on: a.created_on,
            created_by: a.created_by,
            origin_remote_system: a.origin_remote_system,
            origin_sys_id: a.origin_sys_id,
        }
    }
}

/// An attachment's bytes as they arrive.
pub struct AttachmentBytes {
    inner: tonic::Streaming<pb::AttachmentPart>,
}

impl AttachmentBytes {
    /// The next piece of the file; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        loop {
            match self.inner.message().await? {
                None => return Ok(None),
                Some(pb::AttachmentPart {
                    part: Some(pb::attachment_part::Part::Data(data)),
                }) => return Ok(Some(data)),
                Some(_) => continue,
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CorrelationData {
    pub remote_system: String,
    pub remote_correlation_id: String,
    pub table: String,
    pub local_correlation_id: String,
    pub state: String,
    pub created_on: String,
    pub updated_on: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PropertyData {
    pub name: String,
    pub value: String,
    pub default_value: String,
    pub description: String,
}

/// How to reach an instance.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    pub token: String,
    /// PEM of the instance certificate when the admin API uses TLS.
    pub tls_cert_pem: Option<String>,
}

#[derive(Clone)]
pub struct AdminClient {
    pub(super) inner: PbClient<Channel>,
    authorization: MetadataValue<tonic::metadata::Ascii>,
}

impl AdminClient {
    pub async fn connect(target: &Target) -> Result<AdminClient, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            address: target.address.clone(),
            reason,
        };
        let scheme = if target.tls_cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_str(&format!("{scheme}://{}", target.address))
            .map_err(|_| {
                connect_error(
                    "that is not an address of the form HOST:PORT (for example 127.0.0.1:7480)"
                        .to_string(),
                )
            })?
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(pem) = &target.tls_cert_pem {
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(pem))
                        .domain_name("localhost"),
                )
                .map_err(|e| connect_error(e.to_string()))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| connect_error(describe_connection(connection(&e), chain(&e))))?;
        let authorization = format!("Bearer {}", target.token.trim())
            .parse()
            .map_err(|_| {
                ClientError::Invalid("the token holds characters that cannot be sent".into())
            })?;
        Ok(AdminClient {
            inner: PbClient::new(channel)
                .max_decoding_message_size(256 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024),
            authorization,
        })
    }

    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    pub async fn write_records(
        &mut self,
        writes: Vec<RecordWrite>,
    ) -> Result<Vec<WriteResult>, ClientError> {
        let writes = writes
            .into_iter()
            .map(|w| pb::RecordWrite {
                operation: pb::Operation::from(w.operation) as i32,
                table: w.table,
                sys_id: w.sys_id.unwrap_or_default(),
                fields: w.fields.into_iter().collect(),
                journal: w
                    .journal
                    .into_iter()
                    .map(|j| pb::JournalText {
                        field: j.field,
                        text: j.text,
                    })
                    .collect(),
            })
            .collect();
        let request = self.request(pb::WriteRecordsRequest { writes });
        let response = self.inner.write_records(request).await?.into_inner();
        Ok(response
            .results
            .into_iter()
            .map(|r| WriteResult {
                sys_id: r.sys_id,
                mod_count: r.mod_count,
                queued: r.queued,
            })
            .collect())
    }

    /// How much of content `hash` the instance holds.
    pub async fn begin_upload(
        &mut self,
        hash: &str,
        size: u64,
    ) -> Result<(u64, bool), ClientError> {
        let request = self.request(pb::BeginUploadRequest {
            hash: hash.to_string(),
            size,
        });
        let state = self.inner.begin_upload(request).await?.into_inner();
        Ok((state.received, state.complete))
    }

    /// Streams the pieces of content `hash` from `pieces` (offset, bytes,
    /// each at most one chunk); returns whether the content is complete.
    pub async fn upload_content(
        &mut self,
        hash: &str,
        size: u64,
        pieces: tokio::sync::mpsc::Receiver<(u64, bytes::Bytes)>,
    ) -> Result<bool, ClientError> {
        let hash = hash.to_string();
        let chunks = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(pieces),
            move |(offset, data)| pb::UploadChunk {
                hash: hash.clone(),
                size,
                offset,
                chunk_hash: blake3::hash(&data).as_bytes().to_vec().into(),
                data,
            },
        );
        let request = self.request(chunks);
        let state = self.inner.upload_content(request).await?.into_inner();
        Ok(state.complete)
    }

    pub async fn add_attachment(
        &mut self,
        table: &str,
        sys_id: &str,
        file_name: &str,
        content_type: &str,
        hash: &str,
    ) -> Result<AttachmentData, ClientError> {
        let request = self.request(pb::AddAttachmentRequest {
            table: table.to_string(),
            sys_id: sys_id.to_string(),
            file_name: file_name.to_string(),
            content_type: content_type.to_string(),
            hash: hash.to_string(),
        });
        Ok(self
            .inner
            .add_attachment(request)
            .await?
            .into_inner()
            .into())
    }

    pub async fn list_attachments(
        &mut self,
        table: &str,
        sys_id: &str,
    ) -> Result<Vec<AttachmentData>, ClientError> {
        let request = self.request(pb::AttachmentsRequest {
            table: table.to_string(),
            sys_id: sys_id.to_string(),
        });
        let response = self.inner.list_attachments(request).await?.into_inner();
        Ok(response.attachments.into_iter().map(Into::into).collect())
    }

    /// An attachment's metadata and a stream of its bytes.
    pub async fn get_attachment(
        &mut self,
        table: &str,
        sys_id: &str,
        which: &str,
    ) -> Result<(AttachmentData, AttachmentBytes), ClientError> {
        let request = self.request(pb::AttachmentRequest {
            table: table.to_string(),
            sys_id: sys_id.to_string(),
            attachment: which.to_string(),
        });
        let mut inner = self.inner.get_attachment(request).await?.into_inner();
        match inner.message().await? {
            Some(pb::AttachmentPart {
                part: Some(pb::attachment_part::Part::Attachment(head)),
            }) => Ok((head.into(), AttachmentBytes { inner })),
            _ => Err(ClientError::Invalid(
                "the server did not start the attachment with its metadata".into(),
            )),
        }
    }

    pub async fn remove_attachment(
        &mut self,
        table: &str,
        sys_id: &str,
        which: &str,
    ) -> Result<AttachmentData, ClientError> {
        let request = self.request(pb::AttachmentRequest {
            table: table.to_string(),
            sys_id: sys_id.to_string(),
            attachment: which.to_string(),
        });
        Ok(self
            .inner
            .remove_attachment(request)
            .await?
            .into_inner()
            .into())
    }

    pub async fn get_record(
        &mut self,
        table: &str,
        sys_id: &str,
    ) -> Result<RecordData, ClientError> {
        let request = self.request(pb::GetRecordRequest {
            table: table.to_string(),
            sys_id: sys_id.to_string(),
        });
        let record = self.inner.get_record(request).await?.into_inner().record;
        record
            .map(record_from_pb)
            .ok_or_else(|| ClientError::Invalid("the server answered without a record".into()))
    }

    pub async fn list_records(
        &mut self,
        table: &str,
        query: &str,
        limit: u32,
    ) -> Result<Vec<RecordData>, ClientError> {
        let request = self.request(pb::ListRecordsRequest {
            table: table.to_string(),
            query: query.to_string(),
            limit,
        });
        let response = self.inner.list_records(request).await?.into_inner();
        Ok(response.records.into_iter().map(record_from_pb).collect())
    }

    pub async fn add_user(
        &mut self,
        name: &str,
        roles: &[String],
        domain: &str,
    ) -> Result<(UserData, String), ClientError> {
        let request = self.request(pb::AddUserRequest {
            name: name.to_string(),
            roles: roles.to_vec(),
            domain: domain.to_string(),
        });
        let response = self.inner.add_user(request).await?.into_inner();
        Ok((
            response.user.map(user_from_pb).unwrap_or_else(empty_user),
            response.token,
        ))
    }

    pub async fn list_users(&mut self) -> Result<Vec<UserData>, ClientError> {
        let request = self.request(pb::ListUsersRequest {});
        let response = self.inner.list_users(request).await?.into_inner();
        Ok(response.users.into_iter().map(user_from_pb).collect())
    }

    pub async fn issue_token(&mut self, name: &str) -> Result<String, ClientError> {
        let request = self.request(pb::IssueTokenRequest {
            name: name.to_string(),
        });
        Ok(self.inner.issue_token(request).await?.into_inner().token)
    }

    pub async fn set_roles(
        &mut self,
        name: &str,
        roles: &[String],
    ) -> Result<UserData, ClientError> {
        let request = self.request(pb::SetRolesRequest {
            name: name.to_string(),
            roles: roles.to_vec(),
        });
        let response = self.inner.set_roles(request).await?.into_inner();
        Ok(response.user.map(user_from_pb).unwrap_or_else(empty_user))
    }

    pub async fn apply_config(
        &mut self,
        toml: &str,
        file_name: &str,
    ) -> Result<ApplyReport, ClientError> {
        let request = self.request(pb::ApplyConfigRequest {
            toml: toml.to_string(),
            file_name: file_name.to_string(),
        });
        let response = self.inner.apply_config(request).await?.into_inner();
        Ok(ApplyReport {
            created: response.created,
            changed: response.changed,
            removed: response.removed,
        })
    }

    pub async fn export_config(&mut self) -> Result<String, ClientError> {
        let request = self.request(pb::ExportConfigRequest {});
        Ok(self.inner.export_config(request).await?.into_inner().toml)
    }

    pub async fn list_remote_systems(&mut self) -> Result<Vec<RemoteSystemData>, ClientError> {
        self.list_group("").await
    }

    /// Validates a remote system; returns the problems found (none: it is
    /// Active now) and the remote system as it stands.
    pub async fn validate_remote(
        &mut self,
        name: &str,
    ) -> Result<(Vec<String>, RemoteSystemData), ClientError> {
        let request = self.request(pb::RemoteRequest {
            name: name.to_string(),
        });
        let response = self.inner.validate_remote(request).await?.into_inner();
        let remote = response.remote_system.map(remote_from_pb).ok_or_else(|| {
            ClientError::Invalid("the server answered without the remote system".into())
        })?;
        Ok((response.problems, remote))
    }

    /// Starts, cancels or reads (`action`) a remote system's initial load;
    /// the load as JSON (null when none ran).
    pub async fn remote_load(
        &mut self,
        name: &str,
        action: &str,
        process_event: &str,
        query: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let request = self.request(pb::RemoteLoadRequest {
            name: name.to_string(),
            action: action.to_string(),
            process_event: process_event.to_string(),
            query: query.to_string(),
        });
        let answer = self.inner.remote_load(request).await?.into_inner();
        serde_json::from_str(&answer.load_json)
            .map_err(|e| ClientError::Invalid(format!("the server's load does not parse: {e}")))
    }

    /// Asks for (`start`) or reads (`status`) a reconciliation with a
    /// remote system; the reconciliation as JSON (null when none ran).
    pub async fn remote_reconcile(
        &mut self,
        name: &str,
        action: &str,
        table: &str,
        repair: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let request = self.request(pb::RemoteReconcileRequest {
            name: name.to_string(),
            action: action.to_string(),
            table: table.to_string(),
            repair,
        });
        let answer = self.inner.remote_reconcile(request).await?.into_inner();
        serde_json::from_str(&answer.reconcile_json).map_err(|e| {
            ClientError::Invalid(format!("the server's reconciliation does not parse: {e}"))
        })
    }

    pub async fn disable_remote(&mut self, name: &str) -> Result<RemoteSystemData, ClientError> {
        let request = self.request(pb::RemoteRequest {
            name: name.to_string(),
        });
        Ok(remote_from_pb(
            self.inner.disable_remote(request).await?.into_inner(),
        ))
    }

    pub async fn set_remote_token(
        &mut self,
        name: &str,
        token: &str,
    ) -> Result<RemoteSystemData, ClientError> {
        let request = self.request(pb::SetRemoteTokenRequest {
            name: name.to_string(),
            token: token.to_string(),
        });
        Ok(remote_from_pb(
            self.inner.set_remote_token(request).await?.into_inner(),
        ))
    }

    /// One page of a queue ("outbound" or "inbound") as JSON objects, in
    /// the shape `queue_item` answers, and the next page's token (empty at
    /// the end).
    pub async fn list_queue_page(
        &mut self,
        queue: &str,
        status: &str,
        remote_system: &str,
        limit: u32,
        page_token: &str,
    ) -> Result<(Vec<serde_json::Value>, String), ClientError> {
        let (status, remote_system, page_token) = (
            status.to_string(),
            remote_system.to_string(),
            page_token.to_string(),
        );
        let (texts, next) = if queue == "outbound" {
            let request = self.request(pb::ListOutboundRequest {
                status,
                remote_system,
                limit,
                page_token,
            });
            let response = self.inner.list_outbound(request).await?.into_inner();
            (response.items_json, response.next_page_token)
        } else {
            let request = self.request(pb::ListInboundRequest {
                status,
                remote_system,
                limit,
                page_token,
            });
            let response = self.inner.list_inbound(request).await?.into_inner();
            (response.items_json, response.next_page_token)
        };
        Ok((items_from_json(&texts)?, next))
    }

    /// Up to `limit` items of a queue (0: one default page), fetched page
    /// by page from `page_token`, with the token of what follows.
    pub async fn list_queue(
        &mut self,
        queue: &str,
        status: &str,
        remote_system: &str,
        limit: u32,
        page_token: &str,
    ) -> Result<(Vec<serde_json::Value>, String), ClientError> {
        let mut out = Vec::new();
        let mut token = page_token.to_string();
        loop {
            let wanted = limit.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX));
            let (page, next) = self
                .list_queue_page(queue, status, remote_system, wanted, &token)
                .await?;
            out.extend(page);
            token = next;
            if token.is_empty() || limit == 0 || out.len() >= limit as usize {
                return Ok((out, token));
            }
        }
    }

    pub async fn queue_item(
        &mut self,
        queue: &str,
        id: u64,
    ) -> Result<serde_json::Value, ClientError> {
        let request = self.request(pb::QueueItemRequest {
            queue: queue.to_string(),
            id,
        });
        let response = self.inner.get_queue_item(request).await?.into_inner();
        serde_json::from_str(&response.item_json)
            .map_err(|e| ClientError::Invalid(format!("the server sent an unreadable item: {e}")))
    }

    pub async fn flow_context(&mut self, id: u64) -> Result<serde_json::Value, ClientError> {
        let request = self.request(pb::FlowContextRequest { id });
        let response = self.inner.get_flow_context(request).await?.into_inner();
        serde_json::from_str(&response.context_json).map_err(|e| {
            ClientError::Invalid(format!("the server sent an unreadable flow context: {e}"))
        })
    }

    pub async fn stats(&mut self) -> Result<crate::stats::Stats, ClientError> {
        let request = self.request(pb::StatsRequest {});
        let response = self.inner.get_stats(request).await?.into_inner();
        serde_json::from_str(&response.stats_json)
            .map_err(|e| ClientError::Invalid(format!("the server sent unreadable stats: {e}")))
    }

    pub async fn set_queue_item_status(
        &mut self,
        queue: &str,
        id: u64,
        action: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let request = self.request(pb::SetQueueItemStatusRequest {
            queue: queue.to_string(),
            id,
            action: action.to_string(),
        });
        let response = self
            .inner
            .set_queue_item_status(request)
            .await?
            .into_inner();
        serde_json::from_str(&response.item_json)
            .map_err(|e| ClientError::Invalid(format!("the server sent an unreadable item: {e}")))
    }

    pub async fn list_correlations(
        &mut self,
        remote_system: &str,
    ) -> Result<Vec<CorrelationData>, ClientError> {
        let request = self.request(pb::ListCorrelationsRequest {
            remote_system: remote_system.to_string(),
        });
        let response = self.inner.list_correlations(request).await?.into_inner();
        Ok(response
            .correlations
            .into_iter()
            .map(|c| CorrelationData {
                remote_system: c.remote_system,
                remote_correlation_id: c.remote_correlation_id,
                table: c.table,
                local_correlation_id: c.local_correlation_id,
                state: c.state,
                created_on: c.created_on,
                updated_on: c.updated_on,
            })
            .collect())
    }

    pub async fn list_properties(&mut self) -> Result<Vec<PropertyData>, ClientError> {
        let request = self.request(pb::ListPropertiesRequest {});
        let response = self.inner.list_properties(request).await?.into_inner();
        Ok(response
            .properties
            .into_iter()
            .map(property_from_pb)
            .collect())
    }

    pub async fn set_property(
        &mut self,
        name: &str,
        value: &str,
    ) -> Result<PropertyData, ClientError> {
        let request = self.request(pb::SetPropertyRequest {
            name: name.to_string(),
            value: value.to_string(),
        });
        Ok(property_from_pb(
            self.inner.set_property(request).await?.into_inner(),
        ))
    }

    pub async fn list_outbound(
        &mut self,
        status: &str,
        remote_system: &str,
        limit: u32,
    ) -> Result<Vec<OutboundData>, ClientError> {
        let mut items = Vec::new();
        let mut token = String::new();
        loop {
            let request = self.request(pb::ListOutboundRequest {
                status: status.to_string(),
                remote_system: remote_system.to_string(),
                limit: limit.saturating_sub(u32::try_from(items.len()).unwrap_or(u32::MAX)),
                page_token: token,
            });
            let response = self.inner.list_outbound(request).await?.into_inner();
            items.extend(response.items);
            token = response.next_page_token;
            if token.is_empty() || limit == 0 || items.len() >= limit as usize {
                break;
            }
        }
        Ok(items
            .into_iter()
            .map(|item| OutboundData {
                operation: pb::Operation::try_from(item.operation)
                    .ok()
                    .and_then(|op| Operation::try_from(op).ok())
                    .map(|op| op.as_str().to_string())
                    .unwrap_or_default(),
                payload: serde_json::from_str(&item.payload_json)
                    .unwrap_or(serde_json::Value::Null),
                id: item.id,
                sequence: item.sequence,
                status: item.status,
                process_event: item.process_event,
                remote_system: item.remote_system,
                table: item.table,
                local_correlation_id: item.local_correlation_id,
                domain: item.domain,
                created_on: item.created_on,
                capture_definition: item.capture_definition,
                outbound_flow: item.outbound_flow,
                error: item.error,
            })
            .collect())
    }
}

fn property_from_pb(p: pb::Property) -> PropertyData {
    PropertyData {
        name: p.name,
        value: p.value,
        default_value: p.default_value,
        description: p.description,
    }
}

pub(super) fn remote_from_pb(r: pb::RemoteSystem) -> RemoteSystemData {
    RemoteSystemData {
        sys_id: r.sys_id,
        name: r.name,
        endpoint: r.endpoint,
        fingerprint: r.fingerprint,
        external_id: r.external_id,
        outbound_state: r.outbound_state,
        inbound_state: r.inbound_state,
        inbound_api_user: r.inbound_api_user,
        run_as: r.run_as,
        health: r.health,
        last_error: r.last_error,
        attempts: r.attempts,
        next_attempt_on: r.next_attempt_on,
        has_token: r.has_token,
        round_trip_ms: r.round_trip_ms,
        attachment_bytes_sent: r.attachment_bytes_sent,
        attachment_bytes_received: r.attachment_bytes_received,
        load: r.load,
        reconcile: r.reconcile,
        enrolled: r.enrolled,
        group: r.group,
        encoded_bytes_sent: r.encoded_bytes_sent,
        encoded_bytes_received: r.encoded_bytes_received,
        wire_bytes_sent: r.wire_bytes_sent,
        wire_bytes_received: r.wire_bytes_received,
    }
}

fn record_from_pb(record: pb::Record) -> RecordData {
    RecordData {
        table: record.table,
        fields: record.fields.into_iter().collect(),
        journal: record
            .journal
            .into_iter()
            .map(|j| JournalData {
                field: j.field,
                id: j.id,
                author: j.author,
                time: j.time,
                text: j.text,
            })
            .collect(),
    }
}

fn user_from_pb(user: pb::User) -> UserData {
    UserData {
        name: user.name,
        roles: user.roles,
        domain: user.domain,
    }
}

fn empty_user() -> UserData {
    UserData {
        name: String::new(),
        roles: Vec::new(),
        domain: String::new(),
    }
}

/// Queue items the server sent as JSON text.
fn items_from_json(texts: &[String]) -> Result<Vec<serde_json::Value>, ClientError> {
    texts
        .iter()
        .map(|text| {
            serde_json::from_str(text).map_err(|e| {
                ClientError::Invalid(format!("the server sent an unreadable item: {e}"))
            })
        })
        .collect()
}
