//! Wire-shape tests.

use super::*;
use serde_json::json;
use taskpilot_chatkit::model::ToolSpec;

fn event(v: Value) -> Option<ModelEvent> {
    serde_json::from_value::<StreamedEvent>(v)
        .unwrap()
        .into_model_event()
}

#[test]
fn the_request_is_the_responses_wire_shape() {
    let input = [
        ModelInput::user("hi"),
        ModelInput::assistant("hello"),
        ModelInput::FunctionCall(FunctionCall {
            call_id: "c1".into(),
            name: "list_tasks".into(),
            arguments: "{}".into(),
        }),
        ModelInput::FunctionOutput {
            call_id: "c1".into(),
            output: "{\"tasks\":[]}".into(),
        },
    ];
    let tools = [ToolSpec {
        name: "list_tasks",
        description: "List.",
        parameters: json!({"type": "object"}),
    }];
    let request = ModelRequest {
        model: "gpt-4.1",
        instructions: "Be brief.",
        temperature: 0.5,
        input: &input,
        tools: &tools,
        tool_choice: None,
        cache_key: None,
    };
    assert_eq!(
        serde_json::to_value(ResponsesRequest::new(&request)).unwrap(),
        json!({"model": "gpt-4.1", "instructions": "Be brief.", "temperature": 0.5,
            "input": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"type": "function_call", "call_id": "c1", "name": "list_tasks", "arguments": "{}"},
                      {"type": "function_call_output", "call_id": "c1", "output": "{\"tasks\":[]}"}],
            "tools": [{"type": "function", "name": "list_tasks", "description": "List.",
                       "parameters": {"type": "object"}}],
            "parallel_tool_calls": true, "store": false, "stream": true})
    );
}

#[test]
fn a_forced_tool_is_the_tool_choice_and_reasoning_models_get_no_temperature() {
    let tools = [ToolSpec {
        name: "create_task",
        description: "Create.",
        parameters: json!({"type": "object"}),
    }];
    let request = |model| ModelRequest {
        model,
        instructions: "",
        temperature: 0.5,
        input: &[],
        tools: &tools,
        tool_choice: Some("create_task"),
        cache_key: Some("thr_1"),
    };
    let body = serde_json::to_value(ResponsesRequest::new(&request("gpt-4.1"))).unwrap();
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "name": "create_task"})
    );
    assert_eq!(body["temperature"], json!(0.5));
    assert_eq!(body["prompt_cache_key"], "thr_1");
    for reasoning in ["o4-mini", "o3", "o1-preview", "gpt-5", "gpt-5-mini"] {
        let body = serde_json::to_value(ResponsesRequest::new(&request(reasoning))).unwrap();
        assert!(body.get("temperature").is_none(), "{reasoning}: {body}");
        assert_eq!(body["model"], reasoning);
    }
}

#[test]
fn only_reasoning_model_families_refuse_a_temperature() {
    for takes in [
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4o",
        "gpt-5-chat-latest",
        "omni-x",
        "o",
    ] {
        assert!(accepts_temperature(takes), "{takes}");
    }
    for refuses in ["o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5.1", "gpt-5-nano"] {
        assert!(!accepts_temperature(refuses), "{refuses}");
    }
}

#[test]
fn attached_files_are_image_and_file_parts_of_a_user_message() {
    use taskpilot_chatkit::model::ModelFile;
    let input = [ModelInput::Files(vec![
        ModelFile {
            url: "https://b.s3/atc_1?sig".into(),
            image: true,
        },
        ModelFile {
            url: "https://b.s3/atc_2?sig".into(),
            image: false,
        },
    ])];
    let request = ModelRequest {
        model: "gpt-4.1",
        instructions: "",
        temperature: 0.5,
        input: &input,
        tools: &[],
        tool_choice: None,
        cache_key: None,
    };
    assert_eq!(
        serde_json::to_value(ResponsesRequest::new(&request)).unwrap()["input"],
        json!([{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://b.s3/atc_1?sig", "detail": "auto"},
            {"type": "input_file", "file_url": "https://b.s3/atc_2?sig"}]}])
    );
}

#[test]
fn text_events_map_to_model_events() {
    assert_eq!(
        event(
            json!({"type": "response.output_item.added", "output_index": 0, "sequence_number": 1,
            "item": {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}})
        ),
        Some(ModelEvent::MessageStarted {
            item: "msg_1".into()
        })
    );
    assert_eq!(
        event(
            json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})
        ),
        Some(ModelEvent::TextStarted {
            item: "msg_1".into(),
            part: 0
        })
    );
    assert_eq!(
        event(
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "delta": "Hel"})
        ),
        Some(ModelEvent::TextDelta {
            item: "msg_1".into(),
            part: 0,
            delta: "Hel".into()
        })
    );
    assert_eq!(
        event(
            json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": "Hello", "annotations": []}})
        ),
        Some(ModelEvent::TextDone {
            item: "msg_1".into(),
            part: 0,
            text: "Hello".into()
        })
    );
    assert_eq!(
        event(
            json!({"type": "response.output_item.done", "output_index": 0,
            "item": {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": []}})
        ),
        Some(ModelEvent::MessageDone {
            item: "msg_1".into()
        })
    );
    assert_eq!(
        event(json!({"type": "response.completed", "response": {"id": "resp_1"}})),
        Some(ModelEvent::Completed)
    );
}

#[test]
fn function_calls_arrive_complete() {
    assert_eq!(
        event(
            json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "list_tasks", "arguments": ""}})
        ),
        None
    );
    assert_eq!(
        event(
            json!({"type": "response.output_item.done", "output_index": 0,
            "item": {"id": "fc_1", "type": "function_call", "status": "completed",
                     "call_id": "call_1", "name": "list_tasks", "arguments": "{\"completed\":false}"}})
        ),
        Some(ModelEvent::FunctionCall(FunctionCall {
            call_id: "call_1".into(),
            name: "list_tasks".into(),
            arguments: "{\"completed\":false}".into()
        }))
    );
}

#[test]
fn failures_and_unknown_events() {
    assert!(matches!(
        event(json!({"type": "response.failed", "response": {"error": {"code": "server_error"}}})),
        Some(ModelEvent::Failed { reason }) if reason.contains("server_error")
    ));
    assert!(matches!(
        event(json!({"type": "response.incomplete", "response": {"incomplete_details": {"reason": "max_output_tokens"}}})),
        Some(ModelEvent::Failed { reason }) if reason.contains("max_output_tokens")
    ));
    assert!(matches!(
        event(json!({"type": "error", "code": "rate_limit_exceeded", "message": "slow down"})),
        Some(ModelEvent::Failed { .. })
    ));
    for other in [
        json!({"type": "response.created", "response": {}}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc", "delta": "{"}),
        json!({"type": "response.output_item.added", "item": {"type": "reasoning", "id": "rs_1"}}),
        json!({"type": "response.something_new", "x": 1}),
    ] {
        assert_eq!(event(other.clone()), None, "{other}");
    }
    assert!(
        serde_json::from_value::<StreamedEvent>(
            json!({"type": "response.output_text.delta", "item_id": 3})
        )
        .is_err()
    );
}

fn usage(value: Value) -> Option<TokenUsage> {
    serde_json::from_value::<StreamedEvent>(value)
        .unwrap()
        .usage()
}

#[test]
fn the_ending_events_carry_the_rounds_usage() {
    let reported = json!({"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1024},
                          "output_tokens": 35, "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": 1235});
    let expected = Some(TokenUsage {
        input: 1200,
        cached_input: 1024,
        output: 35,
    });
    for kind in [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ] {
        assert_eq!(
            usage(json!({"type": kind, "response": {"id": "resp_1", "usage": reported}})),
            expected,
            "{kind}"
        );
    }
}

#[test]
fn usage_without_details_counts_no_cached_tokens() {
    assert_eq!(
        usage(json!({"type": "response.completed",
                     "response": {"usage": {"input_tokens": 10, "output_tokens": 2}}})),
        Some(TokenUsage {
            input: 10,
            cached_input: 0,
            output: 2
        })
    );
}

#[test]
fn no_usage_is_reported_where_there_is_none() {
    assert_eq!(
        usage(json!({"type": "response.completed", "response": {"id": "resp_1"}})),
        None
    );
    assert_eq!(
        usage(json!({"type": "response.failed", "response": {"usage": null}})),
        None
    );
    assert_eq!(
        usage(
            json!({"type": "response.output_text.delta", "item_id": "m", "content_index": 0,
                     "delta": "x", "usage": {"input_tokens": 5}})
        ),
        None
    );
}
