//! What the dashboard's working views read: a queue page by page, newest
//! first, filtered by status, remote system and process event (from the
//! status index, never a queue scan); one item with every flow context it
//! kept; the process sync definitions as the instance holds them.

use serde_json::{Value, json};

use super::{Api, ApiError, Caller};
use crate::queue::QueueStatus;
use crate::store::{Browse, StoreError};
use crate::user::Permission;

/// Flow contexts shown with an item, at most: its latest runs.
const ITEM_CONTEXTS: usize = 20;

/// A queue page as asked: every filter empty when not set, `before` the
/// previous page's token (empty for the newest page).
#[derive(Clone, Debug, Default)]
pub struct BrowseQuery {
    pub queue: String,
    pub status: String,
    pub remote_system: String,
    pub process_event: String,
    pub before: String,
    pub limit: usize,
}

impl Api {
    /// One page of a queue, newest first: each item as operators read it
    /// but without its payload (the item view has it), the next page's
    /// token (empty on the last page) and how many items match in all.
    pub async fn browse_queue(
        &self,
        caller: &Caller,
        query: BrowseQuery,
    ) -> Result<Value, ApiError> {
        let user = caller.require(Permission::ReadSync)?.clone();
        let status = match query.status.trim() {
            "" => None,
            text => Some(QueueStatus::parse(text).map_err(ApiError::Invalid)?),
        };
        let before = match query.before.trim() {
            "" => None,
            text => Some(text.parse::<u64>().map_err(|_| ApiError::BadPageToken {
                token: text.to_string(),
            })?),
        };
        let named = |text: String| (!text.trim().is_empty()).then(|| text.trim().to_string());
        let browse = Browse {
            status,
            remote_system: named(query.remote_system),
            process_event: named(query.process_event),
            domain: Some(user.domain.clone()),
            before,
            limit: self.page_size(query.limit),
        };
        let (items, next, total) = match query.queue.as_str() {
            "outbound" => {
                let page = self
                    .blocking(move |store| store.browse_outbound(&browse))
                    .await?;
                let items: Vec<Value> = page.items.iter().map(|i| self.outbound_view(i)).collect();
                (items, page.next_before, page.total)
            }
            "inbound" => {
                let page = self
                    .blocking(move |store| store.browse_inbound(&browse))
                    .await?;
                let items: Vec<Value> = page.items.iter().map(|i| self.inbound_view(i)).collect();
                (items, page.next_before, page.total)
            }
            other => {
                return Err(ApiError::UnknownQueue {
                    name: other.to_string(),
                });
            }
        };
        let rows: Vec<Value> = items
            .into_iter()
            .map(|mut item| {
                if let Some(fields) = item.as_object_mut() {
                    fields.remove("payload");
                }
                item
            })
            .collect();
        Ok(json!({
            "queue": query.queue,
            "items": rows,
            "next_page_token": next.map(|id| id.to_string()).unwrap_or_default(),
            "total": total,
        }))
    }

    /// One queue item as operators read it, with its latest flow contexts
    /// (newest last) under `contexts`.
    pub async fn queue_item_in_full(
        &self,
        caller: &Caller,
        queue: String,
        id: u64,
    ) -> Result<Value, ApiError> {
        let mut item = self.queue_item(caller, queue, id).await?;
        let ids: Vec<u64> = item["flow_contexts"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let latest = ids[ids.len().saturating_sub(ITEM_CONTEXTS)..].to_vec();
        let contexts = self
            .blocking(move |store| {
                let mut found = Vec::with_capacity(latest.len());
                for id in latest {
                    found.extend(store.flow_context(id)?);
                }
                Ok::<_, StoreError>(found)
            })
            .await?;
        let mut contexts = serde_json::to_value(contexts).expect("contexts serialize");
        // An acknowledged outbound item's context is told, not stored.
        if ids.is_empty() && item["flow_context"].is_object() {
            contexts = Value::from(vec![item["flow_context"].clone()]);
        }
        item["contexts"] = contexts;
        Ok(item)
    }

    /// The process sync definitions in the caller's domain, as `export`
    /// writes them (`toml`) and as lists of objects per kind (`objects`:
    /// kind → the objects' fields).
    pub async fn definitions_view(&self, caller: &Caller) -> Result<Value, ApiError> {
        let toml = self.export_config(caller).await?;
        let objects: Value = toml::from_str::<toml::Table>(&toml)
            .ok()
            .and_then(|table| serde_json::to_value(table).ok())
            .unwrap_or_else(|| json!({}));
        Ok(json!({ "toml": toml, "objects": objects }))
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::Domain;
    use crate::queue::{OutboundItem, QueueStatus};
    use crate::store::{Browse, Browsed};
    use crate::testing::{create_incidents, linked_store};

    fn ids(page: &Browsed<OutboundItem>) -> Vec<u64> {
        page.items.iter().map(|i| i.id).collect()
    }

    #[tokio::test]
    async fn pages_go_newest_first_through_any_filter_and_follow_every_move() {
        let (_dir, store) = linked_store().await;
        create_incidents(&store, 30).await;
        let first = store.outbound_items(&Default::default()).unwrap()[0].id;
        let id = |n: u64| first + n - 1;
        let all = |before: Option<u64>| Browse {
            before,
            limit: 10,
            ..Default::default()
        };

        // Unfiltered: the queue backwards, ten at a time.
        let page = store.browse_outbound(&all(None)).unwrap();
        assert_eq!(ids(&page), (21..=30).rev().map(id).collect::<Vec<_>>());
        assert_eq!((page.next_before, page.total), (Some(id(21)), 30));
        let page = store.browse_outbound(&all(page.next_before)).unwrap();
        assert_eq!(ids(&page), (11..=20).rev().map(id).collect::<Vec<_>>());
        let page = store.browse_outbound(&all(page.next_before)).unwrap();
        assert_eq!(ids(&page), (1..=10).rev().map(id).collect::<Vec<_>>());
        assert_eq!(page.next_before, None, "the oldest page is the last");

        // Skipping moves an item from Ready to Skipped in the index.
        for n in [5, 10, 15] {
            store
                .set_outbound_status(id(n), QueueStatus::Skipped)
                .await
                .unwrap();
        }
        let with = |status, remote: &str, before| Browse {
            status: Some(status),
            remote_system: Some(remote.to_string()),
            process_event: Some("incident_sync".to_string()),
            before,
            limit: 10,
            domain: None,
        };
        let skipped = store
            .browse_outbound(&with(QueueStatus::Skipped, "hub", None))
            .unwrap();
        assert_eq!(ids(&skipped), [id(15), id(10), id(5)]);
        assert_eq!((skipped.next_before, skipped.total), (None, 3));
        let ready = store
            .browse_outbound(&with(QueueStatus::Ready, "hub", None))
            .unwrap();
        assert_eq!(ready.total, 27);
        assert_eq!(ids(&ready), (21..=30).rev().map(id).collect::<Vec<_>>());
        let ready = store
            .browse_outbound(&with(QueueStatus::Ready, "hub", ready.next_before))
            .unwrap();
        let expected: Vec<u64> = [20, 19, 18, 17, 16, 14, 13, 12, 11, 9]
            .into_iter()
            .map(id)
            .collect();
        assert_eq!(ids(&ready), expected);
        assert!(
            ready.items.iter().all(|i| i.status == QueueStatus::Ready),
            "every item shown has the status asked for"
        );

        // Only the event filter: every status, merged newest first.
        let event_only = Browse {
            process_event: Some("incident_sync".to_string()),
            limit: 100,
            ..Default::default()
        };
        let page = store.browse_outbound(&event_only).unwrap();
        assert_eq!(ids(&page), (1..=30).rev().map(id).collect::<Vec<_>>());
        assert_eq!(page.total, 30);

        // A remote nobody sends to, and a domain none of the items is in.
        let nobody = store
            .browse_outbound(&with(QueueStatus::Ready, "nobody", None))
            .unwrap();
        assert!(nobody.items.is_empty());
        assert_eq!((nobody.next_before, nobody.total), (None, 0));
        let elsewhere = Browse {
            domain: Some(Domain::parse("acme").unwrap()),
            limit: 10,
            ..Default::default()
        };
        assert!(store.browse_outbound(&elsewhere).unwrap().items.is_empty());
    }

    #[tokio::test]
    async fn processed_items_leave_the_status_index_and_are_still_found() {
        let (_dir, store) = linked_store().await;
        create_incidents(&store, 3).await;
        let items = store.outbound_items(&Default::default()).unwrap();
        let all: Vec<u64> = items.iter().map(|i| i.id).collect();
        store
            .mark_outbound_running(all[..2].to_vec())
            .await
            .unwrap();
        store
            .mark_outbound_processed(
                "hub".to_string(),
                items[..2].iter().map(|i| i.sequence).collect(),
            )
            .await
            .unwrap();
        // One entry is left, the Ready item's: 14 bytes (queue, status,
        // stream, id).
        let index = store
            .table_sizes()
            .unwrap()
            .into_iter()
            .find(|t| t.name == "queue_by_status_v2")
            .unwrap();
        assert_eq!(index.stored_bytes, 14);

        // The browser walks the queue for them, with any filter.
        let browse = |status, remote: &str| Browse {
            status,
            remote_system: Some(remote.to_string()),
            limit: 10,
            ..Default::default()
        };
        let found = |page: Browsed<OutboundItem>| (ids(&page), page.total);
        let processed = store
            .browse_outbound(&browse(Some(QueueStatus::Processed), "hub"))
            .unwrap();
        assert_eq!(found(processed), (vec![all[1], all[0]], 2));
        let any = store.browse_outbound(&browse(None, "hub")).unwrap();
        assert_eq!(found(any), (vec![all[2], all[1], all[0]], 3));
        let ready = store
            .browse_outbound(&browse(Some(QueueStatus::Ready), "hub"))
            .unwrap();
        assert_eq!(found(ready), (vec![all[2]], 1));
        let nobody = store
            .browse_outbound(&browse(Some(QueueStatus::Processed), "nobody"))
            .unwrap();
        assert_eq!(found(nobody), (vec![], 0));
    }
}
