//! Record calls: batch writes (captured in the same transaction), reads and
//! queries, each within the caller's domain subtree.

use super::{Api, ApiError, Caller, DEFAULT_LIST_LIMIT};
use crate::condition::Query;
use crate::record::{JournalEntry, Record, RecordView, RecordWrite, WriteResult, check_name};
use crate::store::{RecordWriteLimits, StoreError};
use crate::user::Permission;

impl Api {
    pub async fn write_records(
        &self,
        caller: &Caller,
        writes: Vec<RecordWrite>,
    ) -> Result<Vec<WriteResult>, ApiError> {
        let user = caller.require(Permission::Records)?.clone();
        if writes.is_empty() {
            return Err(ApiError::NoWrites);
        }
        if writes.len() > self.limits.max_batch_records {
            return Err(ApiError::TooManyWrites {
                count: writes.len(),
                limit: self.limits.max_batch_records,
            });
        }
        let limits = RecordWriteLimits {
            max_record_bytes: self.limits.max_record_bytes,
        };
        let results = self
            .store
            .write_records(Self::actor(&user), writes, limits)
            .await?;
        if results.iter().any(|r| r.queued > 0) {
            self.sync.wake_outbound.notify_waiters();
        }
        Ok(results)
    }

    pub async fn get_record(
        &self,
        caller: &Caller,
        table: String,
        sys_id: String,
    ) -> Result<(Record, Vec<JournalEntry>), ApiError> {
        let user = caller.require(Permission::Records)?.clone();
        check_name("table", &table).map_err(ApiError::Invalid)?;
        let (wanted_table, wanted_id) = (table.clone(), sys_id.clone());
        let found = self
            .blocking(move |store| store.record(&wanted_table, &wanted_id))
            .await?;
        found
            .filter(|(record, _)| record.domain.is_within(&user.domain))
            .ok_or(ApiError::Store(StoreError::RecordNotFound {
                table,
                sys_id,
            }))
    }

    pub async fn list_records(
        &self,
        caller: &Caller,
        table: String,
        query: String,
        limit: usize,
    ) -> Result<Vec<Record>, ApiError> {
        let user = caller.require(Permission::Records)?.clone();
        check_name("table", &table).map_err(ApiError::Invalid)?;
        let query = Query::parse(&query).map_err(|e| ApiError::BadQuery {
            query: query.clone(),
            reason: e.to_string(),
        })?;
        let limit = match limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(self.limits.max_list_records),
        };
        self.blocking(move |store| {
            store.records(&table, limit, &|record| {
                record.domain.is_within(&user.domain)
                    && query.matches(&RecordView::new(record), None)
            })
        })
        .await
    }
}
