//! A thread's items as the model's conversation (ck-py's
//! `ThreadItemConverter`), and the title a thread gets from its first message.

use crate::ask;
use taskpilot_chatkit::engine::HISTORY;
use taskpilot_chatkit::model::{FunctionCall, ModelFile, ModelInput};
use taskpilot_chatkit::request::content_text;
use taskpilot_chatkit::structured::Question;
use taskpilot_chatkit::turn::FileUrls;
use taskpilot_chatkit::types::{
    AssistantContent, AttachmentKind, ItemKind, ThreadItem, ToolCallStatus, UserContent,
};

/// Longest generated title.
const TITLE_CHARS: usize = 48;
/// Most bytes of history sent to the model; the oldest items go first.
pub const HISTORY_BUDGET_BYTES: usize = 96 * 1024;
/// Fewest items the model is shown of a thread whose read may have cut it
/// (the engine reads the latest [`HISTORY`] items).
pub const WINDOW_MIN: usize = 40;
/// One user message in this many (by its id) is an anchor a window may
/// start at.
const ANCHOR_EVERY: u64 = 4;

/// What the user wrote, as one text: a quote first, tags as their text.
pub fn user_text(content: &[UserContent], quoted_text: Option<&str>) -> String {
    let text = content_text(content);
    match quoted_text {
        Some(q) => format!("> {q}\n{text}"),
        None => text,
    }
}

/// The conversation for `items` (oldest first), within
/// [`HISTORY_BUDGET_BYTES`]: the oldest inputs are dropped first, the latest
/// one is always kept. Items the model does not need are left out.
pub fn to_model_input(items: &[ThreadItem], files: &FileUrls) -> Vec<ModelInput> {
    let shown = &items[window_start(items, HISTORY)..];
    within_budget(conversation(shown, files), HISTORY_BUDGET_BYTES)
}

/// Where the model's history starts in `items`, read as the latest `read`
/// items of their thread: at the start when fewer came (the whole thread);
/// else at the oldest anchor that leaves at least [`WINDOW_MIN`] items, so
/// the start, and the prompt prefix with it, stays put from turn to turn
/// until that anchor leaves the read (a start moving with every turn would
/// change the prefix right after the instructions each time). An anchor is
/// a user message whose id hashes to 0 modulo [`ANCHOR_EVERY`]: a property
/// of the message, the same in every turn. Without one in reach, the read's
/// start.
pub fn window_start(items: &[ThreadItem], read: usize) -> usize {
    if items.len() < read {
        return 0;
    }
    let reach = items.len().saturating_sub(WINDOW_MIN);
    items
        .iter()
        .take(reach + 1)
        .position(is_anchor)
        .unwrap_or(0)
}

/// Whether `item` is a user message a window may start at (FNV-1a of its
/// id, stable across processes and releases).
fn is_anchor(item: &ThreadItem) -> bool {
    if !matches!(item.kind, ItemKind::UserMessage { .. }) {
        return false;
    }
    let hash = item.id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % ANCHOR_EVERY == 0
}

/// Drops the oldest inputs until the rest weigh at most `budget` bytes
/// (the last input stays whatever it weighs); a function output whose call
/// was dropped goes too (the model refuses an output without its call).
pub fn within_budget(mut input: Vec<ModelInput>, budget: usize) -> Vec<ModelInput> {
    let mut total: usize = input.iter().map(ModelInput::bytes).sum();
    let mut drop = 0;
    while total > budget && drop + 1 < input.len() {
        total -= input[drop].bytes();
        drop += 1;
    }
    while drop + 1 < input.len() && matches!(input[drop], ModelInput::FunctionOutput { .. }) {
        drop += 1;
    }
    input.drain(..drop);
    input
}

fn conversation(items: &[ThreadItem], files: &FileUrls) -> Vec<ModelInput> {
    let mut input = Vec::new();
    for item in items {
        if let ItemKind::StructuredInput { inputs, .. } = &item.kind {
            input.extend(questions(inputs));
        } else if let ItemKind::ClientToolCall {
            status: ToolCallStatus::Completed,
            call_id,
            name,
            arguments,
            output: Some(output),
        } = &item.kind
        {
            // The page's answer to a client tool: the call, then its output.
            input.push(ModelInput::FunctionCall(FunctionCall {
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: arguments.to_string(),
            }));
            input.push(ModelInput::FunctionOutput {
                call_id: call_id.clone(),
                output: output.to_string(),
            });
        } else if let Some(one) = to_input(item) {
            input.push(one);
        }
        if let Some(shown) = attached(item, files) {
            input.push(shown);
        }
        if let Some(note) = not_shown(item, files) {
            input.push(note);
        }
    }
    input
}

/// A note naming the files a user message carried that this turn does not
/// show the model (the engine shows earlier files only when asked about).
fn not_shown(item: &ThreadItem, files: &FileUrls) -> Option<ModelInput> {
    let ItemKind::UserMessage { attachments, .. } = &item.kind else {
        return None;
    };
    let names: Vec<String> = attachments
        .iter()
        .filter(|a| !files.contains_key(&a.id))
        .map(|a| match a.kind {
            AttachmentKind::Image { .. } => format!("the image “{}”", a.name),
            AttachmentKind::File => format!("the file “{}”", a.name),
        })
        .collect();
    (!names.is_empty()).then(|| {
        ModelInput::user(format!(
            "[With that message I sent {}; you saw it then and it is not shown again. \
             To look at it again, ask me to name it.]",
            names.join(" and ")
        ))
    })
}

/// The files a user message carries, as the model is shown them.
fn attached(item: &ThreadItem, files: &FileUrls) -> Option<ModelInput> {
    let ItemKind::UserMessage { attachments, .. } = &item.kind else {
        return None;
    };
    let shown: Vec<ModelFile> = attachments
        .iter()
        .filter_map(|a| {
            files.get(&a.id).map(|url| ModelFile {
                url: url.clone(),
                image: matches!(a.kind, AttachmentKind::Image { .. }),
            })
        })
        .collect();
    (!shown.is_empty()).then_some(ModelInput::Files(shown))
}

/// A structured-input item: what was asked (said by the assistant), then
/// what the user answered or that they skipped.
fn questions(inputs: &[Question]) -> Vec<ModelInput> {
    let mut conversation = Vec::new();
    for question in inputs {
        let options = match question {
            Question::MultipleChoice { options, .. } => format!(
                " Options: {}.",
                options
                    .iter()
                    .map(|o| o.value.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Question::Freeform { .. } => String::new(),
        };
        conversation.push(ModelInput::assistant(format!(
            "I asked the user: {}{options}",
            question.text()
        )));
        match question.answer() {
            Some(a) if !a.skipped => conversation.push(ModelInput::user(format!(
                "My answer: {}",
                a.values.join("; ")
            ))),
            Some(_) => conversation.push(ModelInput::user("I skipped that question.")),
            None => {}
        }
    }
    conversation
}

fn to_input(item: &ThreadItem) -> Option<ModelInput> {
    match &item.kind {
        ItemKind::UserMessage {
            content,
            quoted_text,
            ..
        } => {
            let text = user_text(content, quoted_text.as_deref());
            (!text.is_empty()).then(|| ModelInput::user(text))
        }
        ItemKind::AssistantMessage { content } => {
            let text: String = content
                .iter()
                .map(|AssistantContent::OutputText { text, .. }| text.as_str())
                .collect();
            (!text.is_empty()).then(|| ModelInput::assistant(text))
        }
        ItemKind::Widget { copy_text, .. } => Some(ModelInput::user(format!(
            "The following graphical UI widget (id: {}) was displayed to the user:\n{}",
            item.id,
            copy_text.as_deref().unwrap_or("")
        ))),
        // A change waiting for an answer is the agent's own bookkeeping.
        ItemKind::HiddenContextItem { content } if ask::is_pending_change(content) => None,
        ItemKind::HiddenContextItem { content } => Some(ModelInput::user(content.to_string())),
        ItemKind::SdkHiddenContext { content } => Some(ModelInput::user(content.clone())),
        // A call the page has not answered: not the model's business yet.
        ItemKind::ClientToolCall { .. }
        | ItemKind::EndOfTurn
        | ItemKind::StructuredInput { .. } => None,
    }
}

/// A short title from the first message: its first words, at most 48
/// characters.
pub fn title_from(text: &str) -> String {
    let clean: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() <= TITLE_CHARS {
        return clean;
    }
    let mut title = String::new();
    for word in clean.split(' ') {
        if title.chars().count() + word.chars().count() + 1 > TITLE_CHARS - 1 {
            break;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    if title.is_empty() {
        title = clean.chars().take(TITLE_CHARS - 1).collect();
    }
    format!("{title}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskpilot_chatkit::types::{Attachment, InferenceOptions};

    fn item(id: &str, kind: ItemKind) -> ThreadItem {
        ThreadItem::new(id, "thr_1", kind)
    }

    #[test]
    fn the_history_keeps_the_newest_within_its_byte_budget() {
        let input: Vec<ModelInput> = (0..30)
            .map(|i| ModelInput::user(format!("{i:02}{}", "x".repeat(8_000))))
            .collect();
        let kept = to_model_input(
            &(0..30)
                .map(|i| {
                    item(
                        &format!("msg_{i:02}"),
                        ItemKind::AssistantMessage {
                            content: vec![AssistantContent::OutputText {
                                text: format!("{i:02}{}", "x".repeat(8_000)),
                                annotations: vec![],
                            }],
                        },
                    )
                })
                .collect::<Vec<_>>(),
            &FileUrls::new(),
        );
        let bytes: usize = kept.iter().map(ModelInput::bytes).sum();
        assert!(bytes <= HISTORY_BUDGET_BYTES, "{bytes}");
        assert_eq!(kept.len(), HISTORY_BUDGET_BYTES / 8_002);
        assert!(
            matches!(kept.last(), Some(ModelInput::Message { text, .. }) if text.starts_with("29"))
        );
        // One input over the budget on its own is still sent.
        let huge = vec![ModelInput::user("y".repeat(200_000))];
        assert_eq!(within_budget(huge.clone(), 1_000), huge);
        assert_eq!(within_budget(input.clone(), usize::MAX), input);
    }

    #[test]
    fn a_history_of_exactly_the_budget_is_kept_whole() {
        let input = vec![ModelInput::user("ab"), ModelInput::user("cd")];
        let exactly: usize = input.iter().map(ModelInput::bytes).sum();
        assert_eq!(within_budget(input.clone(), exactly), input);
        assert_eq!(within_budget(input.clone(), exactly - 1), input[1..]);
    }

    #[test]
    fn a_function_output_whose_call_was_dropped_goes_too() {
        use taskpilot_chatkit::model::FunctionCall;
        let call = ModelInput::FunctionCall(FunctionCall {
            call_id: "c1".into(),
            name: "show_task".into(),
            arguments: "x".repeat(100),
        });
        let output = ModelInput::FunctionOutput {
            call_id: "c1".into(),
            output: "{}".into(),
        };
        let last = ModelInput::user("ok");
        let input = vec![call, output.clone(), last.clone()];
        // Dropping the call alone would leave its output first.
        assert_eq!(within_budget(input.clone(), 10), [last]);
        assert_eq!(within_budget(input.clone(), 1_000), input);
        // The last input stays, even an output.
        assert_eq!(within_budget(vec![output.clone()], 0), [output]);
    }

    #[test]
    fn an_answered_client_tool_call_is_the_call_then_its_output_and_a_pending_one_is_left_out() {
        use taskpilot_chatkit::model::FunctionCall;
        use taskpilot_chatkit::types::ToolCallStatus;
        let call = |status, output| {
            item(
                "ctc_1",
                ItemKind::ClientToolCall {
                    status,
                    call_id: "call_1".into(),
                    name: "show_task".into(),
                    arguments: serde_json::json!({"task_id": "t"}),
                    output,
                },
            )
        };
        let answered = call(
            ToolCallStatus::Completed,
            Some(serde_json::json!({"shown": true})),
        );
        assert_eq!(
            to_model_input(&[answered], &FileUrls::new()),
            [
                ModelInput::FunctionCall(FunctionCall {
                    call_id: "call_1".into(),
                    name: "show_task".into(),
                    arguments: r#"{"task_id":"t"}"#.into(),
                }),
                ModelInput::FunctionOutput {
                    call_id: "call_1".into(),
                    output: r#"{"shown":true}"#.into(),
                }
            ]
        );
        let pending = call(ToolCallStatus::Pending, None);
        assert!(to_model_input(&[pending], &FileUrls::new()).is_empty());
    }

    #[test]
    fn files_without_a_url_this_turn_are_named_after_their_message() {
        let file = |id: &str, name: &str, image: bool| Attachment {
            id: id.into(),
            name: name.into(),
            mime_type: "image/png".into(),
            kind: if image {
                AttachmentKind::Image {
                    preview_url: String::new(),
                }
            } else {
                AttachmentKind::File
            },
            upload_descriptor: None,
            thread_id: None,
        };
        let message = item(
            "msg_1",
            ItemKind::UserMessage {
                content: vec![UserContent::InputText {
                    text: "look".into(),
                }],
                attachments: vec![
                    file("atc_1", "a.png", true),
                    file("atc_2", "b.pdf", false),
                    file("atc_3", "c.png", true),
                ],
                quoted_text: None,
                inference_options: InferenceOptions::default(),
            },
        );
        let urls = FileUrls::from([("atc_3".to_owned(), "https://c".to_owned())]);
        let input = to_model_input(std::slice::from_ref(&message), &urls);
        let [
            _,
            ModelInput::Files(shown),
            ModelInput::Message { text, .. },
        ] = &input[..]
        else {
            panic!("{input:?}");
        };
        assert_eq!(shown.len(), 1);
        assert!(
            text.contains("I sent the image “a.png” and the file “b.pdf”;"),
            "{text}"
        );
        let all = FileUrls::from([
            ("atc_1".to_owned(), "https://a".to_owned()),
            ("atc_2".to_owned(), "https://b".to_owned()),
            ("atc_3".to_owned(), "https://c".to_owned()),
        ]);
        assert_eq!(to_model_input(&[message], &all).len(), 2);
    }

    fn said(id: &str) -> ThreadItem {
        item(
            id,
            ItemKind::UserMessage {
                content: vec![UserContent::InputText { text: "hi".into() }],
                attachments: vec![],
                quoted_text: None,
                inference_options: InferenceOptions::default(),
            },
        )
    }

    /// User messages `msg_<from>` … `msg_<to - 1>` (anchors: msg_3, msg_7, …
    /// by FNV-1a modulo 4).
    fn messages(from: usize, to: usize) -> Vec<ThreadItem> {
        (from..to).map(|n| said(&format!("msg_{n}"))).collect()
    }

    #[test]
    fn anchors_are_user_messages_whose_id_hashes_to_zero() {
        assert!(is_anchor(&said("msg_3")));
        assert!(is_anchor(&said("msg_7")));
        for not in ["msg_0", "msg_1", "msg_2", "msg_4", "msg_5", "msg_6"] {
            assert!(!is_anchor(&said(not)), "{not}");
        }
        let answer = item(
            "msg_3",
            ItemKind::AssistantMessage {
                content: vec![AssistantContent::OutputText {
                    text: "hi".into(),
                    annotations: vec![],
                }],
            },
        );
        assert!(!is_anchor(&answer));
    }

    #[test]
    fn a_thread_read_whole_is_shown_from_its_start() {
        assert_eq!(window_start(&messages(0, 59), 60), 0);
        assert_eq!(window_start(&[], 0), 0);
    }

    #[test]
    fn a_full_read_starts_at_its_oldest_anchor_leaving_the_minimum() {
        // 45 items read of 45: the start may be up to item 5; msg_3 is.
        assert_eq!(window_start(&messages(0, 45), 45), 3);
        // 43: up to item 3, msg_3 exactly.
        assert_eq!(window_start(&messages(0, 43), 43), 3);
        // 42: up to item 2, no anchor: the read's start.
        assert_eq!(window_start(&messages(0, 42), 42), 0);
        assert_eq!(window_start(&messages(4, 50), 46), 3, "msg_7");
    }

    #[test]
    fn the_start_stays_put_from_turn_to_turn_until_its_anchor_leaves_the_read() {
        let thread = messages(0, 200);
        let mut starts = Vec::new();
        for len in 60..=200 {
            let read = &thread[len - 60..len];
            let start = len - 60 + window_start(read, 60);
            assert!(len - start >= WINDOW_MIN);
            starts.push(start);
        }
        let moves = starts.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            moves * 3 < starts.len(),
            "{moves} moves in {} turns",
            starts.len()
        );
        assert!(starts.iter().all(|s| is_anchor(&thread[*s])));
    }

    #[test]
    fn titles_are_short() {
        assert_eq!(
            title_from("add buy milk due tomorrow"),
            "add buy milk due tomorrow"
        );
        let long = title_from(
            "please add a task to renew the passport before the trip to Lisbon next spring",
        );
        assert!(long.chars().count() <= 48 && long.ends_with('…'), "{long}");
        assert_eq!(title_from("  spaced\n\tout  "), "spaced out");
    }

    #[test]
    fn a_title_takes_whole_words_up_to_47_characters_then_an_ellipsis() {
        let (x, y6, y7) = ("x".repeat(40), "y".repeat(6), "y".repeat(7));
        // 40 + a space + 6 is exactly 47: the word fits.
        assert_eq!(title_from(&format!("{x} {y6} zzz")), format!("{x} {y6}…"));
        // One more character and it does not.
        assert_eq!(title_from(&format!("{x} {y7} zzz")), format!("{x}…"));
        // A first word too long for a title is cut.
        let w = "w".repeat(60);
        assert_eq!(title_from(&w), format!("{}…", "w".repeat(47)));
    }

    #[test]
    fn a_question_is_what_the_assistant_asked_then_what_the_user_answered() {
        use taskpilot_chatkit::structured::{Answer, Choice, InputStatus, Question};
        let asked = |answer: Option<Answer>| {
            item(
                "sti_1",
                ItemKind::StructuredInput {
                    status: InputStatus::Answered,
                    inputs: vec![Question::MultipleChoice {
                        id: "task".into(),
                        question: "Which one?".into(),
                        options: vec![Choice { value: "A".into() }, Choice { value: "B".into() }],
                        multiple: false,
                        answer,
                    }],
                },
            )
        };
        let said = ModelInput::assistant("I asked the user: Which one? Options: A; B.");
        let chose = Answer {
            values: vec!["B".into()],
            skipped: false,
        };
        assert_eq!(
            to_model_input(&[asked(Some(chose))], &FileUrls::new()),
            [said.clone(), ModelInput::user("My answer: B")]
        );
        let skipped = Answer {
            values: vec![],
            skipped: true,
        };
        assert_eq!(
            to_model_input(&[asked(Some(skipped))], &FileUrls::new()),
            [said.clone(), ModelInput::user("I skipped that question.")]
        );
        assert_eq!(to_model_input(&[asked(None)], &FileUrls::new()), [said]);
    }

    #[test]
    fn a_pending_change_stays_out_of_the_conversation_other_hidden_items_go_in() {
        let pending = serde_json::json!({"type": "pending_change", "question_item": "sti_1",
            "tool": "complete_task", "arguments": {}, "options": []});
        assert!(ask::is_pending_change(&pending));
        let note = serde_json::json!({"type": "note", "text": "the user prefers mornings"});
        let input = to_model_input(
            &[
                item("hcx_1", ItemKind::HiddenContextItem { content: pending }),
                item(
                    "hcx_2",
                    ItemKind::HiddenContextItem {
                        content: note.clone(),
                    },
                ),
            ],
            &FileUrls::new(),
        );
        assert_eq!(input, [ModelInput::user(note.to_string())]);
    }

    #[test]
    fn items_become_the_conversation() {
        let items = [
            item(
                "msg_1",
                ItemKind::UserMessage {
                    content: vec![
                        UserContent::InputText {
                            text: "finish".into(),
                        },
                        UserContent::InputTag {
                            id: "t1".into(),
                            text: "@Report".into(),
                            data: Default::default(),
                            group: None,
                            interactive: false,
                        },
                    ],
                    attachments: vec![],
                    quoted_text: Some("the report".into()),
                    inference_options: InferenceOptions::default(),
                },
            ),
            item("msg_2", ItemKind::AssistantMessage { content: vec![] }),
            item(
                "wdg_3",
                ItemKind::Widget {
                    widget: Default::default(),
                    copy_text: Some("Tasks:\n[ ] Report".into()),
                },
            ),
            item(
                "shcx_4",
                ItemKind::SdkHiddenContext {
                    content: "The user cancelled.".into(),
                },
            ),
            item("eot_5", ItemKind::EndOfTurn),
        ];
        assert_eq!(
            to_model_input(&items, &FileUrls::new()),
            [
                ModelInput::user("> the report\nfinish @Report"),
                ModelInput::user(
                    "The following graphical UI widget (id: wdg_3) was displayed to the user:\nTasks:\n[ ] Report"
                ),
                ModelInput::user("The user cancelled."),
            ]
        );
    }
}
