//! [`TaskRepository`] on DynamoDB: one request per operation.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::{DateTime, Utc};
use tracing::instrument;

use taskpilot_domain::{
    IdempotencyClaim, InsertOutcome, ListPage, ListQuery, SearchText, StoreError, Task, TaskChange,
    TaskId, TaskRepository, UpdateOutcome, UserId, WriteGuard, search,
};

use crate::error::classify;
use crate::item::Item;
use crate::item::{
    SEARCH_TAGS, SEARCH_TITLE, idempotency_from_item, idempotency_to_item, search_tags,
    task_from_item, task_to_item,
};
use crate::keys::{self, PK, SK, TTL};
use crate::table::{DynamoStore, n, s};

/// How many rows one filtered list request may read to fill a page.
const FILTERED_READ_BUDGET: i32 = 200;

/// An expression being assembled: text plus its names and values.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    fn value(&mut self, key: &str, value: AttributeValue) -> String {
        let placeholder = format!(":{key}");
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// The condition shared by updates and deletes.
fn guard_condition(expr: &mut Expr, guard: WriteGuard) -> String {
    let mut parts = vec![format!("attribute_exists({})", expr.name(PK))];
    if let Some(version) = guard.version {
        let name = expr.name("version");
        let value = expr.value("expected_version", n(version));
        parts.push(format!("{name} = {value}"));
    }
    if let Some(completed) = guard.unless_completed_is {
        let name = expr.name("completed");
        let value = expr.value("unless_completed", AttributeValue::Bool(completed));
        parts.push(format!("{name} <> {value}"));
    }
    parts.join(" AND ")
}

/// Decides why a guarded write was refused, from the item as it was.
fn refused(old: Option<&Item>, guard: WriteGuard) -> Result<UpdateOutcome, StoreError> {
    let Some(old) = old else {
        return Ok(UpdateOutcome::NotFound);
    };
    let current = task_from_item(old.clone())?;
    // The guard failed, so one of its conditions must explain it.
    Ok(guard
        .refusal(&current)
        .unwrap_or(UpdateOutcome::VersionMismatch(current)))
}

/// `Some(old item)` when an update failed its condition.
fn update_refused(e: &UpdateItemError) -> Option<Option<&Item>> {
    match e {
        UpdateItemError::ConditionalCheckFailedException(e) => Some(e.item()),
        _ => None,
    }
}

/// `Some(old item)` when a delete failed its condition.
fn delete_refused(e: &DeleteItemError) -> Option<Option<&Item>> {
    match e {
        DeleteItemError::ConditionalCheckFailedException(e) => Some(e.item()),
        _ => None,
    }
}

/// The outcome of a conditional UpdateItem/DeleteItem: the written task, the
/// reason a condition refused it (`old_item` picks the old item out of a
/// ConditionalCheckFailed error), or a storage error.
fn settle_write<E, R>(
    result: Result<Option<Item>, SdkError<E, R>>,
    old_item: for<'e> fn(&'e E) -> Option<Option<&'e Item>>,
    guard: WriteGuard,
) -> Result<UpdateOutcome, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(attributes) => attributes
            .map(task_from_item)
            .transpose()?
            .map(UpdateOutcome::Written)
            .ok_or(StoreError::Internal(
                "the write returned no attributes".into(),
            )),
        Err(SdkError::ServiceError(service)) if old_item(service.err()).is_some() => {
            refused(old_item(service.err()).flatten(), guard)
        }
        Err(err) => Err(classify(err)),
    }
}

/// The condition of a text search: the folded query in the folded title or
/// tags. Rows written before search existed lack those attributes (a later
/// change of the title or the tags adds one of them): for them the raw title
/// must contain the query as typed or folded, or a tag must equal it, so they
/// match when the case agrees. Folding is per character and idempotent, so it
/// keeps substrings: on a row with both folded attributes the raw terms add
/// nothing.
fn search_condition(expr: &mut Expr, search: &SearchText) -> String {
    let folded = expr.value("q", s(search.folded()));
    let typed = expr.value("q_typed", s(search.typed()));
    let (search_title, search_tags) = (expr.name(SEARCH_TITLE), expr.name(SEARCH_TAGS));
    let (title, tags) = (expr.name("title"), expr.name("tags"));
    format!(
        "(contains({search_title}, {folded}) OR contains({search_tags}, {folded}) \
         OR contains({title}, {folded}) OR contains({title}, {typed}) \
         OR contains({tags}, {folded}) OR contains({tags}, {typed}))"
    )
}

/// The update expression for a change: SET and REMOVE clauses.
fn update_expression(
    expr: &mut Expr,
    change: &TaskChange,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let mut set = Vec::new();
    let mut remove = Vec::new();
    if let Some(title) = &change.title {
        set.push(format!(
            "{} = {}",
            expr.name("title"),
            expr.value("title", s(title.as_str()))
        ));
        set.push(format!(
            "{} = {}",
            expr.name(SEARCH_TITLE),
            expr.value(SEARCH_TITLE, s(search::fold(title)))
        ));
    }
    match &change.description {
        Some(Some(d)) => set.push(format!(
            "{} = {}",
            expr.name("description"),
            expr.value("description", s(d.as_str()))
        )),
        Some(None) => remove.push(expr.name("description")),
        None => {}
    }
    if let Some(priority) = change.priority {
        let value = serde_dynamo::to_attribute_value(priority)
            .map_err(|e| StoreError::Internal(format!("priority encoding: {e}")))?;
        set.push(format!(
            "{} = {}",
            expr.name("priority"),
            expr.value("priority", value)
        ));
    }
    match &change.due_date {
        Some(Some(due)) => set.push(format!(
            "{} = {}",
            expr.name("due_date"),
            expr.value("due_date", s(due.canonical()))
        )),
        Some(None) => remove.push(expr.name("due_date")),
        None => {}
    }
    if let Some(tags) = &change.tags {
        let value = AttributeValue::L(tags.iter().map(|t| s(t.as_str())).collect());
        set.push(format!(
            "{} = {}",
            expr.name("tags"),
            expr.value("tags", value)
        ));
        match search_tags(tags) {
            Some(folded) => set.push(format!(
                "{} = {}",
                expr.name(SEARCH_TAGS),
                expr.value(SEARCH_TAGS, s(folded))
            )),
            None => remove.push(expr.name(SEARCH_TAGS)),
        }
    }
    let now_value = s(taskpilot_domain::timestamp::format(&now));
    if let Some(completed) = change.completed {
        set.push(format!(
            "{} = {}",
            expr.name("completed"),
            expr.value("completed", AttributeValue::Bool(completed))
        ));
        let at = expr.name("completed_at");
        if completed {
            let now_ph = expr.value("now", now_value.clone());
            set.push(format!("{at} = if_not_exists({at}, {now_ph})"));
        } else {
            remove.push(at);
        }
    }
    let now_ph = expr.value("now", now_value);
    set.push(format!("{} = {now_ph}", expr.name("updated_at")));
    let version = expr.name("version");
    set.push(format!(
        "{version} = {version} + {}",
        expr.value("one", n(1))
    ));
    let mut text = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        text.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    Ok(text)
}

/// How many rows a list reads for a page of `limit` (at most 1,000): one
/// extra row tells whether another page exists without a second request; a
/// filtered list reads up to [`FILTERED_READ_BUDGET`] rows to fill its page.
fn read_limit(limit: usize, filtered: bool) -> i32 {
    let limit = limit.min(1_000) as i32;
    if filtered {
        FILTERED_READ_BUDGET.max(limit + 1)
    } else {
        limit + 1
    }
}

/// Cuts the rows read to a page of `limit` and says where the next page
/// starts: after its last task when more rows were read, else where DynamoDB
/// stopped reading (`last_evaluated_key`), else nowhere (the end).
fn next_after(
    tasks: &mut Vec<Task>,
    limit: usize,
    last_evaluated_key: Option<&Item>,
) -> Option<TaskId> {
    if tasks.len() > limit {
        tasks.truncate(limit);
        tasks.last().map(|t| t.id.clone())
    } else {
        last_evaluated_key
            .and_then(|k| k.get(SK))
            .and_then(|v| v.as_s().ok())
            .and_then(|sk| keys::task_id_from_sk(sk))
    }
}

impl TaskRepository for DynamoStore {
    #[instrument(skip_all, fields(task_id = %id))]
    async fn get(&self, user: &UserId, id: &TaskId) -> Result<Option<Task>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(keys::user_pk(user), keys::task_sk(id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item.map(task_from_item).transpose()
    }

    #[instrument(skip_all, fields(task_id = %task.id, idempotent = claim.is_some()))]
    async fn insert(
        &self,
        user: &UserId,
        task: &Task,
        claim: Option<&IdempotencyClaim>,
    ) -> Result<InsertOutcome, StoreError> {
        let pk = keys::user_pk(user);
        let row = task_to_item(pk.clone(), task)?;
        let Some(claim) = claim else {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(row))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .send()
                .await
                .map_err(classify)?;
            return Ok(InsertOutcome::Created);
        };

        let record = idempotency_to_item(
            pk.clone(),
            keys::idempotency_sk(claim.key.as_str()),
            &claim.fingerprint,
            row.clone(),
            claim.expires_at.timestamp(),
        );
        let put_task = Put::builder()
            .table_name(&self.table)
            .set_item(Some(row))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        // An expired record that TTL has not yet removed counts as absent.
        let put_record = Put::builder()
            .table_name(&self.table)
            .set_item(Some(record))
            .condition_expression("attribute_not_exists(#pk) OR #ttl < :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":now", n(Utc::now().timestamp()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_task).build())
            .transact_items(TransactWriteItem::builder().put(put_record).build())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(InsertOutcome::Created),
            Err(err) => err,
        };
        let reasons = match &err {
            SdkError::ServiceError(service) => match service.err() {
                TransactWriteItemsError::TransactionCanceledException(c) => {
                    c.cancellation_reasons().to_vec()
                }
                TransactWriteItemsError::TransactionInProgressException(_) => {
                    return Ok(InsertOutcome::InFlight);
                }
                _ => return Err(classify(err)),
            },
            _ => return Err(classify(err)),
        };
        let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
        if code(0) == "TransactionConflict" || code(1) == "TransactionConflict" {
            return Ok(InsertOutcome::InFlight);
        }
        if code(1) == "ConditionalCheckFailed" {
            let old = match reasons.get(1).and_then(|r| r.item()) {
                Some(item) => item.clone(),
                // Some emulators omit the old item; read it (only on this rare path).
                None => self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(keys::key(
                        pk,
                        keys::idempotency_sk(claim.key.as_str()),
                    )))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(classify)?
                    .item
                    .ok_or(StoreError::Unavailable(
                        "idempotency record vanished".into(),
                    ))?,
            };
            let (fingerprint, task) = idempotency_from_item(old)?;
            return Ok(InsertOutcome::Replay {
                fingerprint,
                task: Box::new(task),
            });
        }
        Err(StoreError::Internal(format!(
            "create transaction cancelled: [{}, {}]",
            code(0),
            code(1)
        )))
    }

    #[instrument(skip_all, fields(task_id = %id))]
    async fn update(
        &self,
        user: &UserId,
        id: &TaskId,
        change: &TaskChange,
        guard: WriteGuard,
        now: DateTime<Utc>,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut expr = Expr::default();
        let update = update_expression(&mut expr, change, now)?;
        let condition = guard_condition(&mut expr, guard);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(keys::user_pk(user), keys::task_sk(id))))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map(|out| out.attributes);
        settle_write(result, update_refused, guard)
    }

    #[instrument(skip_all, fields(task_id = %id))]
    async fn delete(
        &self,
        user: &UserId,
        id: &TaskId,
        guard: WriteGuard,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut expr = Expr::default();
        let condition = guard_condition(&mut expr, guard);
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(keys::user_pk(user), keys::task_sk(id))))
            .condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map(|out| out.attributes);
        settle_write(result, delete_refused, guard)
    }

    #[instrument(skip_all, fields(limit = query.limit))]
    async fn list(&self, user: &UserId, query: &ListQuery) -> Result<ListPage, StoreError> {
        let mut expr = Expr::default();
        let key_condition = format!(
            "{} = {} AND begins_with({}, {})",
            expr.name(PK),
            expr.value("pk", s(keys::user_pk(user))),
            expr.name(SK),
            expr.value("prefix", s(keys::TASK_PREFIX)),
        );
        let mut filters = Vec::new();
        if let Some(completed) = query.filter.completed {
            filters.push(format!(
                "{} = {}",
                expr.name("completed"),
                expr.value("completed", AttributeValue::Bool(completed))
            ));
        }
        if let Some(tag) = &query.filter.tag {
            filters.push(format!(
                "contains({}, {})",
                expr.name("tags"),
                expr.value("tag", s(tag.as_str()))
            ));
        }
        if let Some(day) = query.filter.due_before {
            filters.push(format!(
                "{} < {}",
                expr.name("due_date"),
                expr.value("due_before", s(day.format("%Y-%m-%d").to_string()))
            ));
        }
        if let Some(search) = &query.search {
            filters.push(search_condition(&mut expr, search));
        }
        let filter = (!filters.is_empty()).then(|| filters.join(" AND "));
        let read_limit = read_limit(query.limit, filter.is_some());
        let start = query
            .after
            .as_ref()
            .map(|after| keys::key(keys::user_pk(user), keys::task_sk(after)));
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(key_condition)
            .set_filter_expression(filter)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(read_limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(classify)?;
        let mut tasks = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(task_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next_after = next_after(&mut tasks, query.limit, out.last_evaluated_key.as_ref());
        Ok(ListPage { tasks, next_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use taskpilot_domain::Priority;

    const ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    const OTHER_ID: &str = "01BX5ZZKBKACTAV9WEVGEMMVRZ";

    fn task(id: &str, completed: bool, version: u64) -> Task {
        let at = "2026-03-07T10:00:00Z".parse().unwrap();
        Task {
            id: TaskId::parse(id).unwrap(),
            title: "Pay rent".into(),
            description: None,
            completed,
            priority: Priority::Medium,
            due_date: None,
            tags: vec![],
            created_at: at,
            updated_at: at,
            completed_at: None,
            version,
        }
    }

    fn row(task: &Task) -> Item {
        task_to_item("USER#u".into(), task).unwrap()
    }

    fn names(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn now() -> DateTime<Utc> {
        "2026-03-08T12:30:00Z".parse().unwrap()
    }

    fn condition_failed(old: Option<Item>) -> UpdateItemError {
        UpdateItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .set_item(old)
                .build(),
        )
    }

    fn service_error(code: &str) -> UpdateItemError {
        UpdateItemError::generic(
            aws_sdk_dynamodb::error::ErrorMetadata::builder()
                .code(code)
                .build(),
        )
    }

    type Written = Result<Option<Item>, SdkError<UpdateItemError, ()>>;

    fn settle(result: Written, guard: WriteGuard) -> Result<UpdateOutcome, StoreError> {
        settle_write(result, update_refused, guard)
    }

    #[test]
    fn a_name_placeholder_is_the_attribute_behind_a_hash() {
        let mut expr = Expr::default();
        assert_eq!(expr.name("title"), "#title");
        assert_eq!(expr.names(), names(&[("#title", "title")]));
    }

    #[test]
    fn a_value_placeholder_is_its_key_behind_a_colon() {
        let mut expr = Expr::default();
        assert_eq!(expr.value("q", s("milk")), ":q");
        assert_eq!(
            expr.values(),
            Some(HashMap::from([(":q".to_owned(), s("milk"))]))
        );
    }

    #[test]
    fn an_expression_without_names_sends_none() {
        assert_eq!(Expr::default().names(), None);
    }

    #[test]
    fn an_expression_without_values_sends_none() {
        assert_eq!(Expr::default().values(), None);
    }

    #[test]
    fn an_unguarded_write_requires_only_that_the_task_exists() {
        let mut expr = Expr::default();
        assert_eq!(
            guard_condition(&mut expr, WriteGuard::default()),
            "attribute_exists(#pk)"
        );
        assert_eq!(expr.names(), names(&[("#pk", "pk")]));
        assert_eq!(expr.values(), None);
    }

    #[test]
    fn a_versioned_write_requires_the_expected_version() {
        let mut expr = Expr::default();
        let guard = WriteGuard {
            version: Some(4),
            ..WriteGuard::default()
        };
        assert_eq!(
            guard_condition(&mut expr, guard),
            "attribute_exists(#pk) AND #version = :expected_version"
        );
        assert_eq!(
            expr.values(),
            Some(HashMap::from([(":expected_version".to_owned(), n(4))]))
        );
    }

    #[test]
    fn a_completion_write_requires_the_other_completion_state() {
        let mut expr = Expr::default();
        let guard = WriteGuard {
            unless_completed_is: Some(true),
            ..WriteGuard::default()
        };
        assert_eq!(
            guard_condition(&mut expr, guard),
            "attribute_exists(#pk) AND #completed <> :unless_completed"
        );
        assert_eq!(
            expr.values(),
            Some(HashMap::from([(
                ":unless_completed".to_owned(),
                AttributeValue::Bool(true)
            )]))
        );
    }

    #[test]
    fn a_refused_write_without_an_old_item_found_no_task() {
        assert_eq!(
            refused(None, WriteGuard::default()).unwrap(),
            UpdateOutcome::NotFound
        );
    }

    #[test]
    fn a_write_refused_on_another_version_is_a_version_mismatch() {
        let current = task(ID, false, 5);
        let guard = WriteGuard {
            version: Some(4),
            ..WriteGuard::default()
        };
        assert_eq!(
            refused(Some(&row(&current)), guard).unwrap(),
            UpdateOutcome::VersionMismatch(current)
        );
    }

    #[test]
    fn a_write_refused_on_the_completion_state_leaves_the_task_unchanged() {
        let current = task(ID, true, 5);
        let guard = WriteGuard {
            unless_completed_is: Some(true),
            ..WriteGuard::default()
        };
        assert_eq!(
            refused(Some(&row(&current)), guard).unwrap(),
            UpdateOutcome::Unchanged(current)
        );
    }

    #[test]
    fn a_write_refused_although_its_guard_holds_now_is_a_version_mismatch() {
        let current = task(ID, false, 5);
        let guard = WriteGuard {
            version: Some(5),
            unless_completed_is: Some(true),
        };
        assert_eq!(
            refused(Some(&row(&current)), guard).unwrap(),
            UpdateOutcome::VersionMismatch(current)
        );
    }

    #[test]
    fn a_refused_update_gives_the_old_item() {
        let old = row(&task(ID, false, 1));
        assert_eq!(
            update_refused(&condition_failed(Some(old.clone()))),
            Some(Some(&old))
        );
    }

    #[test]
    fn a_refused_update_may_come_without_the_old_item() {
        assert_eq!(update_refused(&condition_failed(None)), Some(None));
    }

    #[test]
    fn a_failed_update_that_no_condition_refused_is_no_refusal() {
        assert_eq!(update_refused(&service_error("ValidationException")), None);
    }

    #[test]
    fn a_refused_delete_gives_the_old_item() {
        let old = row(&task(ID, false, 1));
        let err = DeleteItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .set_item(Some(old.clone()))
                .build(),
        );
        assert_eq!(delete_refused(&err), Some(Some(&old)));
    }

    #[test]
    fn a_failed_delete_that_no_condition_refused_is_no_refusal() {
        let err = DeleteItemError::generic(
            aws_sdk_dynamodb::error::ErrorMetadata::builder()
                .code("ValidationException")
                .build(),
        );
        assert_eq!(delete_refused(&err), None);
    }

    #[test]
    fn a_write_that_returned_the_task_wrote_it() {
        let written = task(ID, false, 2);
        assert_eq!(
            settle(Ok(Some(row(&written))), WriteGuard::default()).unwrap(),
            UpdateOutcome::Written(written)
        );
    }

    #[test]
    fn a_write_that_returned_nothing_is_an_internal_error() {
        assert!(matches!(
            settle(Ok(None), WriteGuard::default()),
            Err(StoreError::Internal(_))
        ));
    }

    #[test]
    fn a_write_refused_by_its_condition_says_why() {
        let current = task(ID, false, 7);
        let guard = WriteGuard {
            version: Some(6),
            ..WriteGuard::default()
        };
        let err = SdkError::service_error(condition_failed(Some(row(&current))), ());
        assert_eq!(
            settle(Err(err), guard).unwrap(),
            UpdateOutcome::VersionMismatch(current)
        );
    }

    #[test]
    fn a_write_refused_by_its_condition_without_an_old_item_found_no_task() {
        let err = SdkError::service_error(condition_failed(None), ());
        assert_eq!(
            settle(Err(err), WriteGuard::default()).unwrap(),
            UpdateOutcome::NotFound
        );
    }

    #[test]
    fn a_write_failing_for_another_reason_is_a_storage_error() {
        let err = SdkError::service_error(service_error("ThrottlingException"), ());
        assert!(matches!(
            settle(Err(err), WriteGuard::default()),
            Err(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn a_search_matches_folded_text_or_raw_text_as_typed_or_folded() {
        let mut expr = Expr::default();
        let search = SearchText::parse(" Milk ").unwrap();
        assert_eq!(
            search_condition(&mut expr, &search),
            "(contains(#search_title, :q) OR contains(#search_tags, :q) \
             OR contains(#title, :q) OR contains(#title, :q_typed) \
             OR contains(#tags, :q) OR contains(#tags, :q_typed))"
        );
        assert_eq!(
            expr.values(),
            Some(HashMap::from([
                (":q".to_owned(), s("milk")),
                (":q_typed".to_owned(), s("Milk")),
            ]))
        );
        assert_eq!(
            expr.names(),
            names(&[
                ("#search_title", SEARCH_TITLE),
                ("#search_tags", SEARCH_TAGS),
                ("#title", "title"),
                ("#tags", "tags"),
            ])
        );
    }

    #[test]
    fn every_update_stamps_the_time_and_bumps_the_version() {
        let mut expr = Expr::default();
        let text = update_expression(&mut expr, &TaskChange::default(), now()).unwrap();
        assert_eq!(text, "SET #updated_at = :now, #version = #version + :one");
        assert_eq!(
            expr.values(),
            Some(HashMap::from([
                (":now".to_owned(), s("2026-03-08T12:30:00.000Z")),
                (":one".to_owned(), n(1)),
            ]))
        );
    }

    #[test]
    fn a_new_title_sets_the_title_and_its_folded_search_text() {
        let mut expr = Expr::default();
        let change = TaskChange {
            title: Some("Buy MILK".into()),
            ..TaskChange::default()
        };
        let text = update_expression(&mut expr, &change, now()).unwrap();
        assert!(text.starts_with("SET #title = :title, #search_title = :search_title, "));
        let values = expr.values().unwrap();
        assert_eq!(values[":title"], s("Buy MILK"));
        assert_eq!(values[":search_title"], s("buy milk"));
    }

    #[test]
    fn a_cleared_description_is_removed() {
        let mut expr = Expr::default();
        let change = TaskChange {
            description: Some(None),
            ..TaskChange::default()
        };
        let text = update_expression(&mut expr, &change, now()).unwrap();
        assert!(text.ends_with(" REMOVE #description"), "{text}");
    }

    #[test]
    fn a_new_priority_is_stored_as_its_lowercase_name() {
        let mut expr = Expr::default();
        let change = TaskChange {
            priority: Some(Priority::High),
            ..TaskChange::default()
        };
        let text = update_expression(&mut expr, &change, now()).unwrap();
        assert!(text.starts_with("SET #priority = :priority, "), "{text}");
        assert_eq!(expr.values().unwrap()[":priority"], s("high"));
    }

    #[test]
    fn a_new_due_date_is_stored_in_its_canonical_form() {
        let mut expr = Expr::default();
        let change = TaskChange {
            due_date: Some(Some("2026-11-23T15:00:00+01:00".parse().unwrap())),
            ..TaskChange::default()
        };
        update_expression(&mut expr, &change, now()).unwrap();
        assert_eq!(
            expr.values().unwrap()[":due_date"],
            s("2026-11-23T14:00:00Z")
        );
    }

    #[test]
    fn new_tags_set_the_tags_and_their_folded_search_text() {
        let mut expr = Expr::default();
        let change = TaskChange {
            tags: Some(vec!["Home".into(), "Errands".into()]),
            ..TaskChange::default()
        };
        let text = update_expression(&mut expr, &change, now()).unwrap();
        assert!(
            text.starts_with("SET #tags = :tags, #search_tags = :search_tags, "),
            "{text}"
        );
        let values = expr.values().unwrap();
        assert_eq!(
            values[":tags"],
            AttributeValue::L(vec![s("Home"), s("Errands")])
        );
        assert_eq!(values[":search_tags"], s("home\nerrands"));
    }

    #[test]
    fn cleared_tags_remove_their_search_text() {
        let mut expr = Expr::default();
        let change = TaskChange {
            tags: Some(vec![]),
            ..TaskChange::default()
        };
        let text = update_expression(&mut expr, &change, now()).unwrap();
        assert!(text.starts_with("SET #tags = :tags, "), "{text}");
        assert!(text.ends_with(" REMOVE #search_tags"), "{text}");
    }

    #[test]
    fn completing_keeps_an_earlier_completion_time() {
        let mut expr = Expr::default();
        let change = TaskChange {
            completed: Some(true),
            ..TaskChange::default()
        };
        let text = update_expression(&mut expr, &change, now()).unwrap();
        assert_eq!(
            text,
            "SET #completed = :completed, \
             #completed_at = if_not_exists(#completed_at, :now), \
             #updated_at = :now, #version = #version + :one"
        );
    }

    #[test]
    fn reopening_removes_the_completion_time() {
        let mut expr = Expr::default();
        let change = TaskChange {
            completed: Some(false),
            ..TaskChange::default()
        };
        let text = update_expression(&mut expr, &change, now()).unwrap();
        assert_eq!(
            text,
            "SET #completed = :completed, #updated_at = :now, #version = #version + :one \
             REMOVE #completed_at"
        );
    }

    #[test]
    fn an_unfiltered_list_reads_one_row_more_than_its_page() {
        assert_eq!(read_limit(20, false), 21);
    }

    #[test]
    fn a_filtered_list_reads_its_budget_to_fill_a_small_page() {
        assert_eq!(read_limit(20, true), FILTERED_READ_BUDGET);
    }

    #[test]
    fn a_filtered_list_reads_one_row_more_than_a_page_above_its_budget() {
        assert_eq!(read_limit(500, true), 501);
    }

    #[test]
    fn a_list_reads_at_most_a_thousand_and_one_rows() {
        assert_eq!(read_limit(usize::MAX, false), 1_001);
    }

    #[test]
    fn more_rows_than_a_page_continue_after_its_last_task() {
        let mut tasks = vec![task(ID, false, 1), task(OTHER_ID, false, 1)];
        let after = next_after(&mut tasks, 1, None);
        assert_eq!(after, TaskId::parse(ID));
        assert_eq!(tasks, vec![task(ID, false, 1)]);
    }

    #[test]
    fn a_full_page_read_to_the_end_has_no_next_page() {
        let mut tasks = vec![task(ID, false, 1)];
        assert_eq!(next_after(&mut tasks, 1, None), None);
        assert_eq!(tasks.len(), 1);
    }

    #[test]
    fn a_short_page_continues_where_dynamodb_stopped_reading() {
        let mut tasks = vec![task(ID, false, 1)];
        let stopped_at = keys::key(
            "USER#u".into(),
            keys::task_sk(&TaskId::parse(OTHER_ID).unwrap()),
        );
        assert_eq!(
            next_after(&mut tasks, 5, Some(&stopped_at)),
            TaskId::parse(OTHER_ID)
        );
    }

    #[test]
    fn a_timed_out_write_is_retryable() {
        let err: SdkError<UpdateItemError, ()> = SdkError::timeout_error("slow");
        assert!(matches!(
            settle(Err(err), WriteGuard::default()),
            Err(StoreError::Unavailable(_))
        ));
    }
}
