//! The admin API's attachment calls: uploading a content (resumable, stored
//! once per hash), attaching it to a record, listing, reading and removing
//! attachments. Attaching and removing are record writes, so capture sees
//! them like any other change.

use crate::attachment::{
    Attachment, AttachmentChanges, AttachmentLimits, check_file_name, is_hash,
};
use crate::ids::new_sys_id;
use crate::record::{Operation, RecordWrite, check_name};
use crate::store::sink::{ContentSink, SinkError};
use crate::store::{ContentInfo, StoreError};
use crate::user::Permission;

use super::{Api, ApiError, Caller};

/// How much of a content the instance holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadState {
    pub received: u64,
    pub complete: bool,
}

impl From<SinkError> for ApiError {
    fn from(error: SinkError) -> ApiError {
        match error {
            SinkError::Refused(problem) => ApiError::UploadRefused { problem },
            SinkError::Store(e) => ApiError::Store(e),
        }
    }
}

impl Api {
    async fn check_upload(&self, hash: &str, size: u64) -> Result<(), ApiError> {
        if !is_hash(hash) {
            return Err(ApiError::NotAHash {
                text: hash.to_string(),
            });
        }
        let max_mb = self
            .blocking(|store| store.number("attachment.max_mb"))
            .await?;
        if let Some(problem) = AttachmentLimits::new(max_mb, &[]).refusal("the file", size) {
            return Err(ApiError::Invalid(
                problem.replace("(max_attachment_mb)", "(property attachment.max_mb)"),
            ));
        }
        Ok(())
    }

    /// How much of content `hash` is stored; starts storing it if nothing is.
    pub async fn begin_upload(
        &self,
        caller: &Caller,
        hash: String,
        size: u64,
    ) -> Result<UploadState, ApiError> {
        caller.require(Permission::Records)?;
        self.check_upload(&hash, size).await?;
        let content = self.store.begin_content(hash, size).await?;
        Ok(UploadState {
            received: content.received,
            complete: content.complete,
        })
    }

    /// A sink for the rest of content `hash`, which must continue at
    /// `offset`; `None` when the content is already complete.
    pub async fn open_upload(
        &self,
        caller: &Caller,
        hash: String,
        size: u64,
        offset: u64,
    ) -> Result<Option<ContentSink>, ApiError> {
        caller.require(Permission::Records)?;
        self.check_upload(&hash, size).await?;
        let Some(sink) = ContentSink::open(self.store.clone(), &hash, size).await? else {
            return Ok(None);
        };
        if sink.received() != offset {
            return Err(ApiError::UploadOffset {
                held: sink.received(),
                offset,
            });
        }
        Ok(Some(sink))
    }

    /// Attaches the stored content `hash` to a record.
    pub async fn add_attachment(
        &self,
        caller: &Caller,
        table: String,
        sys_id: String,
        file_name: String,
        content_type: String,
        hash: String,
    ) -> Result<Attachment, ApiError> {
        check_name("table", &table).map_err(ApiError::Invalid)?;
        check_file_name(&file_name).map_err(ApiError::Invalid)?;
        let content = self.stored_content(&hash).await?;
        let attachment = Attachment {
            sys_id: new_sys_id(),
            file_name,
            content_type,
            size: content.size,
            hash,
            created_on: 0,
            created_by: String::new(),
            origin: None,
        };
        let write = RecordWrite {
            operation: Operation::Update,
            table: table.clone(),
            sys_id: Some(sys_id.clone()),
            fields: Default::default(),
            journal: Vec::new(),
            attachments: AttachmentChanges {
                attach: vec![attachment.clone()],
                detach: Vec::new(),
            },
        };
        self.write_records(caller, vec![write]).await?;
        self.find_attachment(caller, table, sys_id, attachment.sys_id)
            .await
            .map(|(attachment, _)| attachment)
    }

    async fn stored_content(&self, hash: &str) -> Result<ContentInfo, ApiError> {
        let wanted = hash.to_string();
        match self.blocking(move |store| store.content(&wanted)).await? {
            Some(content) if content.complete => Ok(content),
            Some(content) => Err(ApiError::UploadUnfinished {
                hash: content.hash,
                received: content.received,
                size: content.size,
            }),
            None => Err(ApiError::NoContent {
                hash: hash.to_string(),
            }),
        }
    }

    pub async fn list_attachments(
        &self,
        caller: &Caller,
        table: String,
        sys_id: String,
    ) -> Result<Vec<Attachment>, ApiError> {
        let (record, _) = self.get_record(caller, table, sys_id).await?;
        Ok(record.attachments)
    }

    /// One attachment of a record, by sys_id or unique file name, with its
    /// stored content.
    pub async fn find_attachment(
        &self,
        caller: &Caller,
        table: String,
        sys_id: String,
        which: String,
    ) -> Result<(Attachment, ContentInfo), ApiError> {
        let (record, _) = self
            .get_record(caller, table.clone(), sys_id.clone())
            .await?;
        let by_id = record.attachments.iter().find(|a| a.sys_id == which);
        let attachment = match by_id {
            Some(found) => found.clone(),
            None => {
                let named: Vec<&Attachment> = record
                    .attachments
                    .iter()
                    .filter(|a| a.file_name == which)
                    .collect();
                match named.as_slice() {
                    [one] => (*one).clone(),
                    [] => {
                        return Err(ApiError::Store(StoreError::AttachmentNotFound {
                            table,
                            sys_id,
                            attachment: format!("`{which}`"),
                        }));
                    }
                    _ => {
                        return Err(ApiError::AmbiguousAttachment {
                            count: named.len(),
                            table,
                            sys_id,
                            name: which,
                        });
                    }
                }
            }
        };
        let content = self.stored_content(&attachment.hash).await?;
        Ok((attachment, content))
    }

    /// Chunk `index` of a content `find_attachment` returned.
    pub async fn read_chunk(&self, content: &ContentInfo, index: u32) -> Result<Vec<u8>, ApiError> {
        let (id, hash) = (content.id, content.hash.clone());
        self.blocking(move |store| {
            store
                .read_chunk(id, index)?
                .ok_or(StoreError::ChunkNotFound { hash, index })
        })
        .await
    }

    pub async fn remove_attachment(
        &self,
        caller: &Caller,
        table: String,
        sys_id: String,
        which: String,
    ) -> Result<Attachment, ApiError> {
        let (attachment, _) = self
            .find_attachment(caller, table.clone(), sys_id.clone(), which)
            .await?;
        let write = RecordWrite {
            operation: Operation::Update,
            table,
            sys_id: Some(sys_id),
            fields: Default::default(),
            journal: Vec::new(),
            attachments: AttachmentChanges {
                attach: Vec::new(),
                detach: vec![attachment.sys_id.clone()],
            },
        };
        self.write_records(caller, vec![write]).await?;
        Ok(attachment)
    }
}
