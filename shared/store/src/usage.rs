//! [`UsageStore`] on DynamoDB: one item per user and UTC day
//! (`USAGE#<yyyy-mm-dd>`) whose counters grow with atomic `ADD`s and expire
//! [`USAGE_RETENTION_DAYS`] after the day, and give-backs on the turn counters
//! of [`crate::rate_limit`].

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use taskpilot_domain::budget::{DayUsage, TokenUsage, UsageDay, UsageStore};
use taskpilot_domain::session::RateWindow;
use taskpilot_domain::{StoreError, UserId};

use crate::error::classify;
use crate::keys::{self, TTL};
use crate::tasks::{DynamoStore, n};

/// Days a usage record is kept after its day, for the operator, then TTL
/// removes it.
pub const USAGE_RETENTION_DAYS: i64 = 31;

/// The attributes of a usage item.
const TOKENS: &str = "tokens";
const INPUT: &str = "input_tokens";
const CACHED: &str = "cached_input_tokens";
const OUTPUT: &str = "output_tokens";
const ROUNDS: &str = "rounds";
const TURNS: &str = "turns";

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn from_item(item: &HashMap<String, AttributeValue>) -> DayUsage {
    DayUsage {
        tokens: TokenUsage {
            input: number(item, INPUT),
            cached_input: number(item, CACHED),
            output: number(item, OUTPUT),
        },
        rounds: number(item, ROUNDS),
        turns: number(item, TURNS),
    }
}

impl UsageStore for DynamoStore {
    async fn day_usage(&self, user: &UserId, day: UsageDay) -> Result<DayUsage, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(keys::user_pk(user), keys::usage_sk(&day))))
            .projection_expression("#i, #c, #o, #r, #t")
            .expression_attribute_names("#i", INPUT)
            .expression_attribute_names("#c", CACHED)
            .expression_attribute_names("#o", OUTPUT)
            .expression_attribute_names("#r", ROUNDS)
            .expression_attribute_names("#t", TURNS)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item.as_ref().map(from_item).unwrap_or_default())
    }

    async fn add_usage(
        &self,
        user: &UserId,
        day: UsageDay,
        tokens: TokenUsage,
        first_round: bool,
    ) -> Result<DayUsage, StoreError> {
        let expires = day.resets_at().timestamp() + USAGE_RETENTION_DAYS * 86_400;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(keys::user_pk(user), keys::usage_sk(&day))))
            .update_expression(
                "ADD #tokens :tokens, #i :i, #c :c, #o :o, #r :one, #t :turn SET #ttl = :ttl",
            )
            .expression_attribute_names("#tokens", TOKENS)
            .expression_attribute_names("#i", INPUT)
            .expression_attribute_names("#c", CACHED)
            .expression_attribute_names("#o", OUTPUT)
            .expression_attribute_names("#r", ROUNDS)
            .expression_attribute_names("#t", TURNS)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":tokens", n(tokens.total()))
            .expression_attribute_values(":i", n(tokens.input))
            .expression_attribute_values(":c", n(tokens.cached_input))
            .expression_attribute_values(":o", n(tokens.output))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":turn", n(u8::from(first_round)))
            .expression_attribute_values(":ttl", n(expires))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.attributes.as_ref().map(from_item).unwrap_or_default())
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
            .set_key(Some(keys::key(
                keys::user_pk(user),
                keys::rate_sk(bucket, window.start),
            )))
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
            .set_key(Some(keys::key(
                keys::user_pk(user),
                keys::rate_sk(bucket, window.start),
            )))
            .update_expression("ADD #count :one SET #ttl = :ttl")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(window.start + 2 * window.secs))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.attributes.as_ref().map_or(1, |item| {
            u32::try_from(number(item, "count")).unwrap_or(u32::MAX)
        }))
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
            .set_key(Some(keys::key(
                keys::user_pk(user),
                keys::rate_sk(bucket, window.start),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item.as_ref().map_or(0, |item| {
            u32::try_from(number(item, "count")).unwrap_or(u32::MAX)
        }))
    }
}
