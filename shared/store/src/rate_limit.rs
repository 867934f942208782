//! [`RateLimiter`] on DynamoDB: fixed-window counters (`RATE#<bucket>#<window
//! start>`, expiring after two windows), one conditional update per hit.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};

use taskpilot_domain::session::{RateDecision, RateLimiter, RateWindow};
use taskpilot_domain::{StoreError, UserId};

use crate::error::classify;
use crate::item::Item;
use crate::keys::{self, TTL};
use crate::table::{DynamoStore, n};

impl RateLimiter for DynamoStore {
    async fn hit(
        &self,
        user: &UserId,
        bucket: &str,
        limit: u32,
        window_secs: u64,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, StoreError> {
        let window = RateWindow::at(now, window_secs);
        let start = window.start;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(counter_key(user, bucket, start)))
            .update_expression("SET #count = if_not_exists(#count, :zero) + :one, #ttl = :ttl")
            .condition_expression("attribute_not_exists(#count) OR #count < :limit")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit))
            .expression_attribute_values(":ttl", n(expiry(window)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(RateDecision::Allowed),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(RateDecision::Limited {
                    retry_after: window.retry_after(now),
                })
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn give_back(
        &self,
        user: &UserId,
        bucket: &str,
        window: RateWindow,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(counter_key(user, bucket, window.start)))
            .update_expression("SET #count = #count - :one")
            .condition_expression("#count > :zero")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn count(
        &self,
        user: &UserId,
        bucket: &str,
        window_secs: u64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u32, StoreError> {
        let window = RateWindow::at(now, window_secs);
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(counter_key(user, bucket, window.start)))
            .update_expression("ADD #count :one SET #ttl = :ttl")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(expiry(window)))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.attributes.as_ref().map_or(1, count_of))
    }

    async fn hits(
        &self,
        user: &UserId,
        bucket: &str,
        window: RateWindow,
    ) -> Result<u32, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(counter_key(user, bucket, window.start)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item.as_ref().map_or(0, count_of))
    }
}

/// When TTL removes a counter: two windows after its window starts.
fn expiry(window: RateWindow) -> i64 {
    window.start + 2 * window.secs
}

/// A counter item's `count`.
fn count_of(item: &Item) -> u32 {
    u32::try_from(crate::usage::number(item, "count")).unwrap_or(u32::MAX)
}

/// The key of `user`'s counter on `bucket` for the window starting at `start`.
fn counter_key(user: &UserId, bucket: &str, start: i64) -> Item {
    keys::key(keys::user_pk(user), keys::rate_sk(bucket, start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;
    use std::collections::HashMap;

    fn counter(count: &str) -> Item {
        HashMap::from([("count".to_owned(), AttributeValue::N(count.into()))])
    }

    #[test]
    fn a_counter_reads_as_its_count() {
        assert_eq!(count_of(&counter("7")), 7);
    }

    #[test]
    fn a_count_past_u32_reads_as_the_largest_u32() {
        assert_eq!(count_of(&counter("4294967296")), u32::MAX);
    }

    #[test]
    fn a_counter_is_keyed_by_user_bucket_and_window_start() {
        let user = UserId::new("u").unwrap();
        assert_eq!(
            counter_key(&user, "chat", 1_700_000_040),
            keys::key("USER#u".into(), "RATE#chat#1700000040".into())
        );
    }

    #[test]
    fn a_counter_expires_two_windows_after_its_window_starts() {
        let window = RateWindow {
            start: 1_000,
            secs: 60,
        };
        assert_eq!(expiry(window), 1_120);
    }
}
