//! [`TaskRepository`] on DynamoDB: one request per operation.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tracing::instrument;

use taskpilot_domain::{
    IdempotencyClaim, InsertOutcome, ListPage, ListQuery, SearchText, StoreError, Task, TaskChange,
    TaskId, TaskRepository, UpdateOutcome, UserId, WriteGuard, search,
};

use crate::error::classify;
use crate::item::{
    SEARCH_TAGS, SEARCH_TITLE, idempotency_from_item, idempotency_to_item, search_tags,
    task_from_item, task_to_item,
};
use crate::keys::{self, PK, SK, TTL};

type Item = HashMap<String, AttributeValue>;

/// The longest the start-up warm-up ([`DynamoStore::warm_up`]) may take.
pub const WARM_UP_BUDGET: Duration = Duration::from_millis(250);

/// How many rows one filtered list request may read to fill a page.
const FILTERED_READ_BUDGET: i32 = 200;

/// TaskPilot's DynamoDB table: tasks, sessions, rate-limit counters.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    pub(crate) client: Client,
    pub(crate) table: String,
}

impl DynamoStore {
    /// An adapter over `table`, borrowing a client built once at start-up.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

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

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
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
        let limit = query.limit.min(1_000) as i32;
        // One extra row tells whether another page exists without a second request.
        let read_limit = if filters.is_empty() {
            limit + 1
        } else {
            FILTERED_READ_BUDGET.max(limit + 1)
        };
        let start = query
            .after
            .as_ref()
            .map(|after| keys::key(keys::user_pk(user), keys::task_sk(after)));
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(key_condition)
            .set_filter_expression((!filters.is_empty()).then(|| filters.join(" AND ")))
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
        let next_after = if tasks.len() > query.limit {
            tasks.truncate(query.limit);
            tasks.last().map(|t| t.id.clone())
        } else {
            out.last_evaluated_key
                .as_ref()
                .and_then(|k| k.get(SK))
                .and_then(|v| v.as_s().ok())
                .and_then(|sk| keys::task_id_from_sk(sk))
        };
        Ok(ListPage { tasks, next_after })
    }
}

impl DynamoStore {
    /// A Query for the rows of `pk` whose sort key starts with `prefix`.
    pub(crate) fn prefix_query(
        &self,
        pk: String,
        prefix: String,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(prefix))
    }

    /// The table's status (`ACTIVE` when usable), with one DescribeTable.
    pub async fn table_status(&self) -> Result<String, StoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .table
            .and_then(|t| t.table_status)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "UNKNOWN".into()))
    }

    /// Opens the connection (TLS handshake included) during init, so the first
    /// request does not pay for it: one attempt, no retries, given up after
    /// [`WARM_UP_BUDGET`]. It never fails: a DynamoDB that is slow or down at
    /// start-up must not hold every new sandbox up (the SDK's retries took
    /// 1.3-1.7 s); the first real request connects and reports errors as usual.
    pub async fn warm_up(&self) {
        self.warm_up_within(WARM_UP_BUDGET).await;
    }

    /// [`DynamoStore::warm_up`] with another time budget.
    pub async fn warm_up_within(&self, budget: Duration) {
        let attempt = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key("WARMUP".into(), "WARMUP".into())))
            .customize()
            .config_override(
                aws_sdk_dynamodb::config::Builder::default()
                    .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()),
            )
            .send();
        match tokio::time::timeout(budget, attempt).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %classify(e), "DynamoDB warm-up failed"),
            Err(_) => tracing::warn!(
                budget_ms = budget.as_millis() as u64,
                "DynamoDB warm-up gave up"
            ),
        }
    }
}
