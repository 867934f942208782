//! [`SessionStore`] on DynamoDB.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValue;
use tracing::instrument;

use chrono::{DateTime, Utc};
use taskpilot_domain::StoreError;
use taskpilot_domain::UserId;
use taskpilot_domain::session::{
    ChatSession, SessionMode, SessionStore, first_session_id_since, session_id_ceiling,
};

use crate::error::classify;
use crate::item::Item;
use crate::keys::{self, PK, SK, TTL};
use crate::table::{DynamoStore, n, s};

/// Records stay a day past expiry (for support), then TTL removes them.
const RETENTION_SECS: i64 = 86_400;
/// Pages a secret lookup may read.
const LOOKUP_PAGES: usize = 5;
/// Pages an active-session listing may read. Its key range holds only the
/// sessions minted within one lifetime (at most `SESSION_CREATE_PER_MINUTE`
/// × the lifetime in minutes, 200 by default, one page); past this cap the
/// oldest ones found are returned and a warning logged.
const ACTIVE_PAGES: usize = 4;

fn to_item(user: &UserId, session: &ChatSession) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(session)
        .map_err(|e| StoreError::Internal(format!("session encoding: {e}")))?;
    item.extend(keys::key(
        keys::user_pk(user),
        keys::session_sk(&session.id),
    ));
    item.insert(
        TTL.into(),
        n(session.expires_at.timestamp() + RETENTION_SECS),
    );
    Ok(item)
}

fn from_item(item: Item) -> Result<ChatSession, StoreError> {
    serde_dynamo::from_item(item)
        .map_err(|e| StoreError::Internal(format!("unreadable session: {e}")))
}

/// Whether a session counts as active at `now`: self-hosted and usable.
fn is_active(session: &ChatSession, now: DateTime<Utc>) -> bool {
    session.mode == SessionMode::SelfHosted && session.is_usable(now)
}

impl SessionStore for DynamoStore {
    #[instrument(skip_all, fields(session_id = %session.id))]
    async fn put_session(&self, user: &UserId, session: &ChatSession) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(user, session)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    #[instrument(skip_all, fields(session_id = %id))]
    async fn get_session(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Option<ChatSession>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(keys::user_pk(user), keys::session_sk(id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item.map(from_item).transpose()
    }

    #[instrument(skip_all, fields(session_id = %id))]
    async fn cancel_session(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Option<ChatSession>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(keys::user_pk(user), keys::session_sk(id))))
            .update_expression("SET #status = :cancelled")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":cancelled", s("cancelled"))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => out.attributes.map(from_item).transpose(),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify(e)),
        }
    }

    #[instrument(skip_all)]
    async fn find_session_by_secret(
        &self,
        user: &UserId,
        hash: &str,
    ) -> Result<Option<ChatSession>, StoreError> {
        let mut start = None;
        for _ in 0..LOOKUP_PAGES {
            let out = self
                .prefix_query(keys::user_pk(user), keys::SESSION_PREFIX.to_owned())
                .filter_expression("#hash = :hash")
                .expression_attribute_names("#hash", "secret_hash")
                .expression_attribute_values(":hash", s(hash))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            if let Some(item) = out.items.unwrap_or_default().into_iter().next() {
                return from_item(item).map(Some);
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// One strongly consistent Query over the ids minted since
    /// `created_since` (ULIDs sort by creation), never the user's whole
    /// session history; cancelled and hosted sessions are filtered out by
    /// DynamoDB, expired ones here.
    #[instrument(skip_all)]
    async fn active_sessions(
        &self,
        user: &UserId,
        created_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ChatSession>, StoreError> {
        let from = keys::session_sk(&first_session_id_since(created_since));
        let to = keys::session_sk(&session_id_ceiling());
        let mut active = Vec::new();
        let mut start = None;
        for _ in 0..ACTIVE_PAGES {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
                .filter_expression("#status = :active AND #mode = :mode")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#mode", "mode")
                .expression_attribute_values(":pk", s(keys::user_pk(user)))
                .expression_attribute_values(":from", s(from.clone()))
                .expression_attribute_values(":to", s(to.clone()))
                .expression_attribute_values(":active", s("active"))
                .expression_attribute_values(":mode", s("self_hosted"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in out.items.unwrap_or_default() {
                let session = from_item(item)?;
                if is_active(&session, now) {
                    active.push(session);
                }
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(active),
            }
        }
        tracing::warn!(
            pages = ACTIVE_PAGES,
            found = active.len(),
            "active sessions: page cap reached, the newest were not read"
        );
        Ok(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskpilot_domain::session::SessionStatus;

    fn at(raw: &str) -> DateTime<Utc> {
        raw.parse().unwrap()
    }

    fn session(mode: SessionMode, status: SessionStatus) -> ChatSession {
        ChatSession {
            id: "cksess_01arz3ndektsv4rrffq69g5fav".into(),
            mode,
            status,
            created_at: at("2026-03-07T10:00:00Z"),
            expires_at: at("2026-03-07T11:00:00Z"),
            max_requests_per_minute: 10,
            workflow_id: None,
            secret_hash: None,
        }
    }

    fn active() -> ChatSession {
        session(SessionMode::SelfHosted, SessionStatus::Active)
    }

    fn user() -> UserId {
        UserId::new("u").unwrap()
    }

    #[test]
    fn a_session_row_is_keyed_in_its_users_partition() {
        let item = to_item(&user(), &active()).unwrap();
        assert_eq!(item[PK], s("USER#u"));
        assert_eq!(item[SK], s("SESSION#cksess_01arz3ndektsv4rrffq69g5fav"));
    }

    #[test]
    fn a_session_row_expires_a_day_after_the_session() {
        let item = to_item(&user(), &active()).unwrap();
        let expected = at("2026-03-08T11:00:00Z").timestamp();
        assert_eq!(item[TTL], n(expected));
    }

    #[test]
    fn a_session_row_reads_back_as_the_session() {
        let item = to_item(&user(), &active()).unwrap();
        assert_eq!(from_item(item).unwrap(), active());
    }

    #[test]
    fn a_row_that_is_no_session_is_an_internal_error() {
        let item = keys::key("USER#u".into(), "SESSION#x".into());
        assert!(matches!(from_item(item), Err(StoreError::Internal(_))));
    }

    #[test]
    fn a_usable_self_hosted_session_is_active() {
        assert!(is_active(&active(), at("2026-03-07T10:30:00Z")));
    }

    #[test]
    fn a_hosted_session_is_never_active() {
        let hosted = session(SessionMode::Hosted, SessionStatus::Active);
        assert!(!is_active(&hosted, at("2026-03-07T10:30:00Z")));
    }

    #[test]
    fn a_cancelled_session_is_not_active() {
        let cancelled = session(SessionMode::SelfHosted, SessionStatus::Cancelled);
        assert!(!is_active(&cancelled, at("2026-03-07T10:30:00Z")));
    }

    #[test]
    fn an_expired_session_is_not_active() {
        assert!(!is_active(&active(), at("2026-03-07T11:00:00Z")));
    }
}
