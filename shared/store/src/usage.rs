//! [`UsageStore`] on DynamoDB: one item per user and UTC day
//! (`USAGE#<yyyy-mm-dd>`) whose counters grow with atomic `ADD`s and expire
//! [`USAGE_RETENTION_DAYS`] after the day.

use aws_sdk_dynamodb::types::ReturnValue;

use taskpilot_domain::budget::{DayUsage, TokenUsage, UsageDay, UsageStore};
use taskpilot_domain::{StoreError, UserId};

use crate::error::classify;
use crate::item::Item;
use crate::keys::{self, TTL};
use crate::table::{DynamoStore, n};

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

/// A number attribute of `item` (0 when absent).
pub(crate) fn number(item: &Item, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn from_item(item: &Item) -> DayUsage {
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

/// When TTL removes `day`'s record: [`USAGE_RETENTION_DAYS`] after the day.
fn expiry(day: UsageDay) -> i64 {
    day.resets_at().timestamp() + USAGE_RETENTION_DAYS * 86_400
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
            .expression_attribute_values(":ttl", n(expiry(day)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.attributes.as_ref().map(from_item).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn item(pairs: &[(&str, &str)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), AttributeValue::N((*v).to_owned())))
            .collect()
    }

    #[test]
    fn a_number_attribute_reads_as_its_value() {
        assert_eq!(number(&item(&[("count", "42")]), "count"), 42);
    }

    #[test]
    fn an_absent_number_attribute_reads_as_zero() {
        assert_eq!(number(&item(&[("count", "42")]), "other"), 0);
    }

    #[test]
    fn a_string_attribute_reads_as_zero() {
        let row = Item::from([("count".to_owned(), AttributeValue::S("42".into()))]);
        assert_eq!(number(&row, "count"), 0);
    }

    #[test]
    fn a_negative_number_attribute_reads_as_zero() {
        assert_eq!(number(&item(&[("count", "-1")]), "count"), 0);
    }

    #[test]
    fn a_usage_row_reads_as_each_counter() {
        let row = item(&[
            (TOKENS, "99"),
            (INPUT, "1"),
            (CACHED, "2"),
            (OUTPUT, "3"),
            (ROUNDS, "4"),
            (TURNS, "5"),
        ]);
        assert_eq!(
            from_item(&row),
            DayUsage {
                tokens: TokenUsage {
                    input: 1,
                    cached_input: 2,
                    output: 3,
                },
                rounds: 4,
                turns: 5,
            }
        );
    }

    #[test]
    fn a_days_usage_expires_the_retention_after_the_day_ends() {
        let day = UsageDay::of("2026-03-07T23:59:59Z".parse().unwrap());
        let expected: chrono::DateTime<chrono::Utc> = "2026-04-08T00:00:00Z".parse().unwrap();
        assert_eq!(expiry(day), expected.timestamp());
    }
}
