//! Attachment records on DynamoDB: `ATTACHMENT#<id>` in the owner's
//! partition, as plain attributes (so a message's write can claim one with
//! an update and a condition), with a `ttl` while pending so an upload never
//! used is forgotten.

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use taskpilot_chatkit::attachments::AttachmentRecord;

use crate::item::Item;
use taskpilot_domain::{StoreError, UserId};

use crate::error::classify;
use crate::keys::{self, PK, TTL};
use crate::table::{DynamoStore, s};

const STATUS: &str = "status";
const THREAD: &str = "thread_id";
const ITEM: &str = "item_id";

fn encoding(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("attachment record: {e}"))
}

/// The stored row of `user`'s record: its attributes, its key and, while
/// pending, its expiry.
fn to_item(user: &UserId, record: &AttachmentRecord) -> Result<Item, StoreError> {
    let mut row: Item = serde_dynamo::to_item(record).map_err(encoding)?;
    row.extend(keys::key(
        keys::user_pk(user),
        keys::attachment_sk(&record.id),
    ));
    if record.status == taskpilot_chatkit::attachments::AttachmentStatus::Pending {
        row.insert(
            TTL.into(),
            AttributeValue::N(record.expires_at().timestamp().to_string()),
        );
    }
    Ok(row)
}

impl DynamoStore {
    /// Stores a record (pending ones with their expiry).
    pub(crate) async fn put_attachment(
        &self,
        user: &UserId,
        record: &AttachmentRecord,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(user, record)?))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Reads one record.
    pub(crate) async fn get_attachment(
        &self,
        user: &UserId,
        attachment_id: &str,
    ) -> Result<Option<AttachmentRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(
                keys::user_pk(user),
                keys::attachment_sk(attachment_id),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item
            .map(|row| serde_dynamo::from_item(row).map_err(encoding))
            .transpose()
    }

    /// Every record of the user, following `LastEvaluatedKey`.
    pub(crate) async fn all_attachments(
        &self,
        user: &UserId,
    ) -> Result<Vec<AttachmentRecord>, StoreError> {
        let mut records = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .prefix_query(keys::user_pk(user), keys::ATTACHMENT_PREFIX.to_owned())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for row in out.items.unwrap_or_default() {
                records.push(serde_dynamo::from_item(row).map_err(encoding)?);
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(records),
            }
        }
    }

    /// The write that marks attachment `id` as used by message `item_id` of
    /// `thread_id`, refused when it is gone or used by another message.
    pub(crate) fn claim(
        &self,
        pk: &str,
        id: &str,
        thread_id: &str,
        item_id: &str,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::key(pk.to_owned(), keys::attachment_sk(id))))
            .update_expression("SET #status = :attached, #thread = :thread, #item = :item REMOVE #ttl")
            .condition_expression(
                "attribute_exists(#pk) AND (#status = :pending OR (#thread = :thread AND #item = :item))",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#thread", THREAD)
            .expression_attribute_names("#item", ITEM)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":attached", s("attached"))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":thread", s(thread_id))
            .expression_attribute_values(":item", s(item_id))
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskpilot_chatkit::attachments::AttachmentStatus;

    fn record(status: AttachmentStatus) -> AttachmentRecord {
        AttachmentRecord {
            id: "atc_1".into(),
            name: "plan.png".into(),
            mime_type: "image/png".into(),
            size: 2_048,
            image: true,
            status,
            created_at: "2026-03-07T10:00:00Z".parse().unwrap(),
            thread_id: None,
            item_id: None,
        }
    }

    fn user() -> UserId {
        UserId::new("u").unwrap()
    }

    #[test]
    fn an_attachment_row_is_keyed_in_its_owners_partition() {
        let row = to_item(&user(), &record(AttachmentStatus::Pending)).unwrap();
        assert_eq!(row[PK], s("USER#u"));
        assert_eq!(row["sk"], s("ATTACHMENT#atc_1"));
    }

    #[test]
    fn a_pending_attachment_row_expires_with_the_record() {
        let pending = record(AttachmentStatus::Pending);
        let row = to_item(&user(), &pending).unwrap();
        assert_eq!(
            row[TTL],
            AttributeValue::N(pending.expires_at().timestamp().to_string())
        );
    }

    #[test]
    fn an_attached_attachment_row_never_expires() {
        let row = to_item(&user(), &record(AttachmentStatus::Attached)).unwrap();
        assert!(!row.contains_key(TTL));
    }

    #[test]
    fn an_attachment_row_reads_back_as_its_record() {
        let row = to_item(&user(), &record(AttachmentStatus::Pending)).unwrap();
        let read: AttachmentRecord = serde_dynamo::from_item(row).unwrap();
        assert_eq!(read, record(AttachmentStatus::Pending));
    }
}
