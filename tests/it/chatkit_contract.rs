//! The ChatKit contract check itself (`taskpilot_testkit::chatkit_contract`):
//! what the official `openai-chatkit` types accept passes, and each kind of
//! deviation fails with a message that says where.
use serde_json::{Value, json};
use taskpilot_testkit::chatkit_contract::{
    check_answer, check_event, check_request, check_response, check_stream,
};

fn assistant_done() -> Value {
    json!({"type": "thread.item.done", "item": {
        "id": "msg_1", "thread_id": "thr_1", "created_at": "2026-11-22T03:28:55.219Z",
        "type": "assistant_message",
        "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}})
}

fn widget_done(widget: Value) -> Value {
    json!({"type": "thread.item.done", "item": {
        "id": "wid_1", "thread_id": "thr_1", "created_at": "2026-11-22T03:28:55.219Z",
        "type": "widget", "widget": widget, "copy_text": "My tasks: Buy milk"}})
}

fn task_card() -> Value {
    json!({"type": "Card", "id": "tasks", "children": [
        {"type": "Title", "value": "My tasks", "size": "sm"},
        {"type": "Row", "children": [
            {"type": "Checkbox", "name": "t1", "defaultChecked": false},
            {"type": "Text", "value": "Buy milk"},
            {"type": "Spacer"},
            {"type": "Button", "label": "Done",
             "onClickAction": {"type": "task.complete", "payload": {"id": "t1"}}}]}]})
}

fn thread() -> Value {
    json!({"id": "thr_1", "title": "Groceries", "created_at": "2026-11-22T03:28:55.219Z",
           "status": {"type": "active"}, "metadata": {},
           "items": {"data": [], "has_more": false}})
}

fn fails(result: Result<(), String>, expected: &str) {
    let error = result.expect_err("the contract must fail");
    assert!(error.contains(expected), "{error}");
}

#[test]
fn valid_events_pass() {
    check_event(&assistant_done()).unwrap();
    check_event(&widget_done(task_card())).unwrap();
    check_event(&json!({"type": "thread.created", "thread": thread()})).unwrap();
    check_event(&json!({"type": "stream_options", "stream_options": {"allow_cancel": true}}))
        .unwrap();
    check_event(
        &json!({"type": "thread.item.updated", "item_id": "msg_1", "update": {
        "type": "assistant_message.content_part.text_delta", "content_index": 0, "delta": "Hel"}}),
    )
    .unwrap();
    check_event(&json!({"type": "error", "code": "stream.error", "allow_retry": true})).unwrap();
}

#[test]
fn defaults_the_sdk_fills_in_may_be_left_out() {
    // `annotations` defaults to [], `status` to active, `metadata` to {}, `allow_retry` to false.
    let mut event = assistant_done();
    event["item"]["content"][0]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    check_event(&event).unwrap();
    let mut bare = thread();
    bare.as_object_mut().unwrap().remove("status");
    bare.as_object_mut().unwrap().remove("metadata");
    check_event(&json!({"type": "thread.updated", "thread": bare})).unwrap();
    check_event(&json!({"type": "error", "code": "custom", "message": "Quota exceeded"})).unwrap();
}

#[test]
fn the_same_instant_in_another_notation_passes() {
    // pydantic re-dumps "…55.219Z" as "…55.219000Z" and "+00:00" as "Z".
    let mut event = assistant_done();
    event["item"]["created_at"] = json!("2026-11-22T03:28:55.219+00:00");
    check_event(&event).unwrap();
}

#[test]
fn an_unknown_field_on_an_item_fails() {
    let mut event = assistant_done();
    event["item"]["rating"] = json!(5);
    fails(check_event(&event), "item.rating: unknown field");
}

#[test]
fn a_null_the_sdk_would_omit_fails() {
    fails(
        check_event(
            &json!({"type": "error", "code": "custom", "message": null, "allow_retry": false}),
        ),
        "message: null",
    );
}

#[test]
fn a_wrong_type_fails_even_where_pydantic_coerces_it() {
    fails(
        check_event(&json!({"type": "error", "code": "stream.error", "allow_retry": "yes"})),
        "allow_retry: \"yes\" is coerced to true",
    );
}

#[test]
fn a_timestamp_as_a_number_fails() {
    let mut event = assistant_done();
    event["item"]["created_at"] = json!(1_763_782_135);
    fails(
        check_event(&event),
        "item.created_at: 1763782135 is coerced",
    );
}

#[test]
fn a_missing_required_field_fails() {
    let mut event = assistant_done();
    event["item"].as_object_mut().unwrap().remove("thread_id");
    fails(check_event(&event), "thread_id: Field required");
}

#[test]
fn an_unknown_event_type_fails() {
    fails(
        check_event(&json!({"type": "thread.item.exploded", "item_id": "msg_1"})),
        "does not match any of the expected tags",
    );
}

#[test]
fn a_hidden_item_must_never_reach_the_client() {
    fails(
        check_event(&json!({"type": "thread.item.done", "item": {
            "id": "shcx_1", "thread_id": "thr_1", "created_at": "2026-11-22T03:28:55Z",
            "type": "sdk_hidden_context", "content": "The user cancelled the stream."}})),
        "never sends to clients",
    );
}

#[test]
fn a_widget_node_with_an_unknown_prop_fails() {
    let mut card = task_card();
    card["children"][1]["children"][1]["glow"] = json!(true);
    fails(
        check_event(&widget_done(card)),
        "item.widget.children[1].children[1].glow: unknown prop of Text",
    );
}

#[test]
fn a_widget_prop_with_an_invalid_value_fails() {
    let mut card = task_card();
    card["children"][0]["size"] = json!("huge");
    fails(
        check_event(&widget_done(card)),
        "item.widget.children[0].size",
    );
}

#[test]
fn an_unknown_widget_component_fails() {
    let mut card = task_card();
    card["children"][1]["children"][2] = json!({"type": "Blink", "value": "!"});
    fails(
        check_event(&widget_done(card)),
        "item.widget.children[1].children[2].type: unknown component \"Blink\"",
    );
}

#[test]
fn a_widget_root_that_is_not_a_root_fails() {
    fails(
        check_event(&widget_done(json!({"type": "Row", "children": []}))),
        "Input tag 'Row' found using 'type' does not match any of the expected tags",
    );
}

#[test]
fn valid_answers_pass() {
    check_answer("threads.get_by_id", &thread()).unwrap();
    check_answer("threads.update", &thread()).unwrap();
    check_answer(
        "threads.list",
        &json!({"data": [thread()], "has_more": true, "after": "thr_1"}),
    )
    .unwrap();
    check_answer(
        "items.list",
        &json!({"data": [assistant_done()["item"]], "has_more": false}),
    )
    .unwrap();
    check_answer(
        "threads.sync_custom_action",
        &json!({"updated_item": widget_done(task_card())["item"]}),
    )
    .unwrap();
    check_answer("threads.delete", &json!({})).unwrap();
    check_answer("items.feedback", &json!({})).unwrap();
}

#[test]
fn an_answer_of_the_wrong_shape_fails() {
    fails(
        check_answer("threads.delete", &json!({"deleted": true})),
        "threads.delete answers exactly {}",
    );
}

#[test]
fn an_items_page_holding_threads_fails() {
    fails(
        check_answer(
            "items.list",
            &json!({"data": [thread()], "has_more": false}),
        ),
        "data[0]",
    );
}

#[test]
fn a_streaming_request_has_no_json_answer() {
    fails(
        check_answer("threads.create", &json!({})),
        "answers a stream of events",
    );
}

#[test]
fn a_thread_answer_never_shows_its_metadata() {
    let mut t = thread();
    t["metadata"] = json!({"last_response_id": "resp_1"});
    fails(check_answer("threads.get_by_id", &t), "metadata: not {}");
}

#[test]
fn valid_requests_pass() {
    check_request(&json!({"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": "hi"}], "attachments": [],
        "inference_options": {"tool_choice": null, "model": null}}}}))
    .unwrap();
    check_request(&json!({"type": "threads.list", "params": {}})).unwrap();
    check_request(&json!({"type": "items.list", "params": {
        "thread_id": "thr_1", "limit": 2, "order": "asc", "after": null}}))
    .unwrap();
}

#[test]
fn a_request_without_inference_options_fails() {
    // `inference_options` has no default in the SDK: the JS client always sends it.
    fails(
        check_request(&json!({"type": "threads.create", "params": {"input": {
            "content": [{"type": "input_text", "text": "hi"}], "attachments": []}}})),
        "inference_options: Field required",
    );
}

#[test]
fn a_request_with_a_coerced_param_fails() {
    fails(
        check_request(
            &json!({"type": "items.list", "params": {"thread_id": "thr_1", "limit": "2"}}),
        ),
        "params.limit: \"2\" is coerced to 2",
    );
}

fn good_stream() -> String {
    format!(
        "data: {}\n\ndata: {}\n\n",
        json!({"type": "stream_options", "stream_options": {"allow_cancel": true}}),
        assistant_done()
    )
}

#[test]
fn a_valid_stream_passes() {
    check_stream(&good_stream()).unwrap();
    check_stream("").unwrap();
}

#[test]
fn a_stream_with_one_bad_event_fails() {
    let bad = format!(
        "{}data: {}\n\n",
        good_stream(),
        json!({"type": "notice", "level": "loud", "message": "hi"})
    );
    fails(check_stream(&bad), "event #2");
}

#[test]
fn a_badly_framed_stream_fails() {
    fails(check_stream("data: {}\n"), "whole frame");
    fails(
        check_stream("event: x\ndata: {}\n\n"),
        "not one `data: ` line",
    );
}

#[test]
fn one_validator_answers_many_checks_quickly() {
    let event = widget_done(task_card());
    check_event(&event).unwrap(); // started
    let started = std::time::Instant::now();
    for _ in 0..200 {
        check_event(&event).unwrap();
    }
    let each = started.elapsed() / 200;
    println!("one check: {each:?}");
    assert!(each < std::time::Duration::from_millis(20), "{each:?}");
}

#[test]
fn a_json_request_answered_with_a_stream_fails() {
    let sse = format!("data: {}\n\n", assistant_done());
    fails(
        check_response("threads.list", 200, Some("text/event-stream"), &sse),
        "threads.list answers JSON in ck-py, not a stream",
    );
}

#[test]
fn an_error_answer_must_be_our_envelope() {
    check_response(
        "threads.get_by_id",
        404,
        Some("application/json"),
        r#"{"error":{"code":"not_found","message":"no such thread"}}"#,
    )
    .unwrap();
    fails(
        check_response(
            "threads.get_by_id",
            404,
            Some("application/json"),
            r#"{"message":"Not Found"}"#,
        ),
        "not an error envelope",
    );
}

#[test]
fn the_assistants_newer_events_and_items_are_known_to_the_contract() {
    check_event(
        &json!({"type": "progress_update", "icon": "lucide:trash-2", "text": "Deleting “x”…"}),
    )
    .unwrap();
    check_event(&json!({"type": "client_effect", "name": "tasks.changed",
                        "data": {"created": [], "updated": ["01KB"], "deleted": []}}))
    .unwrap();
    let question = json!({"id": "sti_1", "thread_id": "thr_1", "created_at": "2026-12-02T10:00:00Z",
        "type": "structured_input", "status": "answered", "inputs": [{"type": "multiple_choice",
        "id": "task", "question": "Which?", "options": [{"value": "A"}, {"value": "B"}],
        "multiple": false, "answer": {"values": ["A"], "skipped": false}}]});
    check_event(&json!({"type": "thread.item.replaced", "item": question})).unwrap();
    check_request(
        &json!({"type": "threads.add_structured_input", "params": {"thread_id": "thr_1",
        "item_id": "sti_1", "input": {"status": "skipped", "answers": {}}}}),
    )
    .unwrap();
    // And it still refuses what the SDK refuses.
    fails(
        check_event(&json!({"type": "progress_update", "icon": "trash", "text": "x"})),
        "icon",
    );
    fails(
        check_event(&json!({"type": "client_effect", "name": "tasks.changed", "data": [1]})),
        "data",
    );
    let mut bad = question.clone();
    bad["status"] = json!("done");
    fails(
        check_event(&json!({"type": "thread.item.done", "item": bad})),
        "status",
    );
}
