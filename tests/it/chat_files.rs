//! The engine's attachments, in process on the fakes: `attachments.create`
//! and its limits, direct uploads (the same limits, what is stored, nothing
//! half-written), a message naming attachments (each the caller's, uploaded
//! as declared, used once), what the stored message and the model see,
//! fresh previews, `attachments.delete`, and a thread's files going with it.
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use taskpilot_assistant::{AgentSettings, TaskAgent};
use taskpilot_chatkit::attachments::{
    AttachmentError, AttachmentPolicy, AttachmentRecord, AttachmentStatus, AttachmentStore,
    DirectUpload, MAX_DIRECT_UPLOAD_BYTES,
};
use taskpilot_chatkit::context::Caller;
use taskpilot_chatkit::engine::{ChatError, Engine, Gate, Need, OpenGate, ProcessError};
use taskpilot_chatkit::model::ModelInput;
use taskpilot_chatkit::model::TokenUsage;
use taskpilot_chatkit::request::Request;
use taskpilot_chatkit::store::ChatStore;
use taskpilot_chatkit::testing::{
    InMemoryChat, InMemoryFiles, Journal, Round, ScriptedModel, VecSink, drive,
};
use taskpilot_chatkit::turn::Meter;
use taskpilot_domain::budget::{ChatBudget, UsageDay};
use taskpilot_domain::memory::InMemoryTasks;
use taskpilot_domain::{CursorCodec, TaskService, UserId};
use taskpilot_testkit::chatkit_contract;

use taskpilot_assistant::testing::scripted_agent;

type Server = Engine<InMemoryChat, TaskAgent<InMemoryTasks, ScriptedModel>, InMemoryFiles>;

struct Files {
    engine: Server,
    model: ScriptedModel,
    files: InMemoryFiles,
    /// The store's and the files' calls, in order.
    journal: Journal,
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

impl Files {
    fn new() -> Self {
        Self::with_policy(AttachmentPolicy::default())
    }

    fn with_policy(policy: AttachmentPolicy) -> Self {
        let model = ScriptedModel::default();
        let journal = Journal::default();
        let files = InMemoryFiles::with_journal(journal.clone());
        let store = InMemoryChat::with_journal(journal.clone());
        let engine = Engine::new(store, scripted_agent(model.clone(), 4))
            .with_attachments(files.clone(), policy);
        Self {
            engine,
            model,
            files,
            journal,
        }
    }

    /// A JSON request; the answer must keep to the official types.
    async fn json(&self, who: &str, body: Value) -> Result<Value, ChatError> {
        chatkit_contract::check_request(&body).unwrap();
        let kind = body["type"].as_str().unwrap().to_owned();
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        let answer = drive::json(&self.engine, &user(who), request).await?;
        let answer = serde_json::to_value(answer).unwrap();
        chatkit_contract::check_response(&kind, 200, Some("application/json"), &answer.to_string())
            .unwrap_or_else(|e| panic!("{answer}\n{e}"));
        Ok(answer)
    }

    /// `attachments.create` as `who`.
    async fn create(
        &self,
        who: &str,
        name: &str,
        size: u64,
        mime: &str,
    ) -> Result<Value, ChatError> {
        self.json(
            who,
            json!({"type": "attachments.create", "params": {"name": name, "size": size, "mime_type": mime}}),
        )
        .await
    }

    /// An attachment created and uploaded as declared: its id.
    async fn uploaded(&self, who: &str, name: &str, size: u64, mime: &str) -> String {
        let id = self.create(who, name, size, mime).await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.files.put(&id, size, mime);
        id
    }

    /// `threads.create` with `text` and `attachments`; the events, or the
    /// refusal before the first.
    async fn message(
        &self,
        who: &str,
        text: &str,
        attachments: &[&str],
    ) -> Result<Vec<Value>, ChatError> {
        self.send(who, None, text, attachments).await
    }

    /// A message of `who` with `attachments`, into `thread` (or a new one).
    async fn send(
        &self,
        who: &str,
        thread: Option<&str>,
        text: &str,
        attachments: &[&str],
    ) -> Result<Vec<Value>, ChatError> {
        let input = json!({"content": [{"type": "input_text", "text": text}],
                           "attachments": attachments, "inference_options": {}});
        let body = match thread {
            None => json!({"type": "threads.create", "params": {"input": input}}),
            Some(id) => json!({"type": "threads.add_user_message",
                               "params": {"thread_id": id, "input": input}}),
        };
        chatkit_contract::check_request(&body).unwrap();
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let streaming = drive::streaming(
            &self.engine,
            Caller::new(user(who)),
            request,
            &OpenGate,
            deadline,
        )
        .await?;
        let mut sink = VecSink::default();
        streaming.run(&mut sink).await;
        let events = sink.json();
        for event in &events {
            chatkit_contract::check_event(event).unwrap_or_else(|e| panic!("{event}\n{e}"));
        }
        Ok(events)
    }

    /// A direct upload of `bytes` as `who`, through `gate`: the answer
    /// (checked against the official `Attachment` type), or the engine's
    /// refusal.
    async fn direct_through<G: Gate>(
        &self,
        gate: &G,
        who: &str,
        name: &str,
        mime: &str,
        bytes: &[u8],
    ) -> Result<Value, ChatError>
    where
        G::Error: std::fmt::Debug,
    {
        let file = DirectUpload {
            name: name.into(),
            mime_type: mime.into(),
            bytes: bytes.to_vec(),
        };
        match self.engine.upload(&user(who), file, gate).await {
            Ok(attachment) => {
                let answer = serde_json::to_value(attachment).unwrap();
                chatkit_contract::check_attachment(&answer)
                    .unwrap_or_else(|e| panic!("{answer}\n{e}"));
                Ok(answer)
            }
            Err(ProcessError::Chat(e)) => Err(e),
            Err(other) => panic!("not the engine's refusal: {other:?}"),
        }
    }

    /// A direct upload of `bytes` as `who`, let in by an open gate.
    async fn direct(
        &self,
        who: &str,
        name: &str,
        mime: &str,
        bytes: &[u8],
    ) -> Result<Value, ChatError> {
        self.direct_through(&OpenGate, who, name, mime, bytes).await
    }

    /// Every attachment record of `who`.
    async fn records(&self, who: &str) -> Vec<AttachmentRecord> {
        self.engine
            .store()
            .list_attachments(&user(who))
            .await
            .unwrap()
    }

    async fn record(
        &self,
        who: &str,
        id: &str,
    ) -> Option<taskpilot_chatkit::attachments::AttachmentRecord> {
        self.engine
            .store()
            .load_attachment(&user(who), id)
            .await
            .unwrap()
    }

    /// A new thread of alice's whose first message shows `files` (the
    /// model answers "ok"): its id.
    async fn thread_showing(&self, files: &[&str]) -> String {
        self.model.push(Round::text("ok"));
        let events = self.message("alice", "look", files).await.unwrap();
        events[0]["thread"]["id"].as_str().unwrap().to_owned()
    }

    /// How many times the files were asked to delete since the journal's
    /// entry `mark`.
    fn file_deletes(&self, mark: usize) -> usize {
        self.journal.calls()[mark..]
            .iter()
            .filter(|c| *c == "files.delete")
            .count()
    }

    async fn delete_thread(&self, who: &str, thread: &str) {
        self.json(
            who,
            json!({"type": "threads.delete", "params": {"thread_id": thread}}),
        )
        .await
        .unwrap();
    }
}

fn user_message(events: &[Value]) -> Value {
    events
        .iter()
        .find(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "user_message")
        .unwrap()["item"]
        .clone()
}

#[tokio::test]
async fn create_answers_where_to_upload_and_where_the_preview_will_be() {
    let f = Files::new();
    let answer = f
        .create("alice", "list.png", 1234, "image/png")
        .await
        .unwrap();
    assert_eq!(answer["type"], "image");
    assert_eq!(answer["name"], "list.png");
    assert_eq!(answer["upload_descriptor"]["method"], "PUT");
    assert!(
        answer["preview_url"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    let record = f
        .record("alice", answer["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(record.status, AttachmentStatus::Pending);
    assert_eq!(record.size, 1234);
}

#[tokio::test]
async fn documents_have_no_preview() {
    let f = Files::new();
    let answer = f
        .create("alice", "invoice.pdf", 10, "application/pdf")
        .await
        .unwrap();
    assert_eq!(answer["type"], "file");
    assert!(answer.get("preview_url").is_none());
}

#[tokio::test]
async fn create_refuses_other_types_empty_and_oversize_files() {
    let f = Files::new();
    for (size, mime) in [
        (10, "text/html"),
        (0, "image/png"),
        (11 * 1024 * 1024, "image/png"),
    ] {
        let refused = f.create("alice", "x", size, mime).await.unwrap_err();
        assert!(matches!(refused, ChatError::Attachment(_)), "{refused:?}");
    }
    assert!(
        f.engine
            .store()
            .list_attachments(&user("alice"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_quota_counts_what_the_user_keeps() {
    let f = Files::with_policy(AttachmentPolicy {
        quota_bytes: 3 * 1024 * 1024,
        ..AttachmentPolicy::default()
    });
    f.create("alice", "a.png", 2 * 1024 * 1024, "image/png")
        .await
        .unwrap();
    let refused = f
        .create("alice", "b.png", 2 * 1024 * 1024, "image/png")
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ChatError::Attachment(AttachmentError::Quota { .. })
    ));
    // Another user has their own.
    f.create("bob", "b.png", 2 * 1024 * 1024, "image/png")
        .await
        .unwrap();
}

#[tokio::test]
async fn the_quota_counts_files_too_and_names_its_size_in_whole_megabytes() {
    use taskpilot_chatkit::attachments::MAX_PER_USER;
    let policy = AttachmentPolicy {
        quota_bytes: 3 * 1024 * 1024 + 5,
        ..AttachmentPolicy::default()
    };
    let f = Files::with_policy(policy.clone());
    // All but one as the engine records them, the last one through it.
    for i in 1..MAX_PER_USER {
        let declared = policy.check(&format!("{i}.png"), 1, "image/png").unwrap();
        let record = AttachmentRecord::new(taskpilot_chatkit::ids::attachment(), declared);
        f.engine
            .store()
            .save_attachment(&user("alice"), &record)
            .await
            .unwrap();
    }
    f.create("alice", "last.png", 1, "image/png").await.unwrap();
    let refused = f
        .create("alice", "one-more.png", 1, "image/png")
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ChatError::Attachment(AttachmentError::Quota { limit_mb: 3 })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_message_naming_a_file_not_uploaded_is_refused_before_anything_is_stored() {
    let f = Files::new();
    let id = f.create("alice", "a.png", 5, "image/png").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = f.message("alice", "add these", &[&id]).await.unwrap_err();
    assert!(matches!(
        refused,
        ChatError::Attachment(AttachmentError::NotUploaded(_))
    ));
    let threads = f
        .json("alice", json!({"type": "threads.list", "params": {}}))
        .await
        .unwrap();
    assert_eq!(threads["data"], json!([]));
}

#[tokio::test]
async fn an_upload_that_is_not_what_was_declared_is_refused() {
    let f = Files::new();
    for (size, stored_type) in [(6, "image/png"), (5, "text/html")] {
        let id = f.create("alice", "a.png", 5, "image/png").await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        f.files.put(&id, size, stored_type);
        let refused = f.message("alice", "add these", &[&id]).await.unwrap_err();
        assert!(matches!(
            refused,
            ChatError::Attachment(AttachmentError::Mismatch(_))
        ));
    }
}

#[tokio::test]
async fn another_users_attachment_is_not_found_and_stays_as_it_was() {
    let f = Files::new();
    let id = f.uploaded("bob", "a.png", 5, "image/png").await;
    let refused = f.message("alice", "mine now", &[&id]).await.unwrap_err();
    assert!(matches!(refused, ChatError::NotFound("attachment")));
    let deleted = f
        .json(
            "alice",
            json!({"type": "attachments.delete", "params": {"attachment_id": id}}),
        )
        .await
        .unwrap_err();
    assert!(matches!(deleted, ChatError::NotFound("attachment")));
    assert_eq!(
        f.record("bob", &id).await.unwrap().status,
        AttachmentStatus::Pending
    );
    assert!(f.files.object(&id).is_some());
}

#[tokio::test]
async fn a_message_lists_its_files_and_the_model_sees_them() {
    let f = Files::new();
    let photo = f.uploaded("alice", "list.png", 5, "image/png").await;
    let pdf = f.uploaded("alice", "mail.pdf", 7, "application/pdf").await;
    f.model.push(Round::text("I see two files."));
    let events = f
        .message("alice", "make tasks of these", &[&photo, &pdf])
        .await
        .unwrap();
    let message = user_message(&events);
    let thread = message["thread_id"].as_str().unwrap();
    let listed = message["attachments"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["type"], "image");
    assert_eq!(listed[0]["thread_id"], thread);
    assert_eq!(listed[1]["type"], "file");
    assert!(listed.iter().all(|a| a.get("upload_descriptor").is_none()));
    // Used: attached to the message, kept by the clean-up.
    let record = f.record("alice", &photo).await.unwrap();
    assert_eq!(record.status, AttachmentStatus::Attached);
    assert_eq!(record.item_id.as_deref(), message["id"].as_str());
    assert!(f.files.object(&photo).unwrap().used);
    // The model is shown both, by URL, right after the text.
    let input = &f.model.requests()[0].input;
    let Some(ModelInput::Files(shown)) = input.last() else {
        panic!("{input:?}");
    };
    assert_eq!(
        shown.iter().map(|s| s.image).collect::<Vec<_>>(),
        [true, false]
    );
    assert!(
        shown
            .iter()
            .all(|s| s.url.starts_with("https://files.test/read/"))
    );
}

#[tokio::test]
async fn an_earlier_photo_is_named_not_sent_again_until_the_user_asks_about_it() {
    let f = Files::new();
    let photo = f.uploaded("alice", "list.png", 5, "image/png").await;
    let thread = f.thread_showing(&[&photo]).await;
    let files_shown = |request: usize| -> usize {
        let input = &f.model.requests()[request].input;
        input
            .iter()
            .map(|i| match i {
                ModelInput::Files(shown) => shown.len(),
                _ => 0,
            })
            .sum()
    };
    assert_eq!(files_shown(0), 1);
    // The next turn names it in text only, right after its message.
    f.model.push(Round::text("Done."));
    f.send("alice", Some(&thread), "add milk", &[])
        .await
        .unwrap();
    assert_eq!(files_shown(1), 0);
    let input = &f.model.requests()[1].input;
    let note = format!("{:?}", input[1]);
    assert!(note.contains("the image “list.png”"), "{input:?}");
    // Asked about, it is shown again.
    f.model.push(Round::text("It lists eggs."));
    f.send("alice", Some(&thread), "what else is on the photo?", &[])
        .await
        .unwrap();
    assert_eq!(files_shown(2), 1);
}

#[tokio::test]
async fn a_message_of_only_a_photo_is_named_after_it() {
    let f = Files::new();
    let photo = f.uploaded("alice", "groceries.jpg", 5, "image/jpeg").await;
    f.model.push(Round::text("Added."));
    let events = f.message("alice", "", &[&photo]).await.unwrap();
    let thread = events[0]["thread"]["id"].as_str().unwrap();
    let stored = f
        .json(
            "alice",
            json!({"type": "threads.get_by_id", "params": {"thread_id": thread}}),
        )
        .await
        .unwrap();
    assert_eq!(stored["title"], "groceries.jpg");
}

#[tokio::test]
async fn an_attachment_is_used_by_one_message_only() {
    let f = Files::new();
    let photo = f.uploaded("alice", "a.png", 5, "image/png").await;
    f.model.push(Round::text("ok"));
    f.message("alice", "first", &[&photo]).await.unwrap();
    let refused = f.message("alice", "again", &[&photo]).await.unwrap_err();
    assert!(matches!(
        refused,
        ChatError::Attachment(AttachmentError::InUse(_))
    ));
}

/// What happens to `photo` while the engine reads a request.
#[derive(Clone, Copy)]
enum Meanwhile {
    /// Another message takes it.
    Taken,
    /// Its object vanishes from the object store.
    Vanished,
}

/// A gate that, while the engine reads the request, lets something happen
/// to `photo`: the race between the checks and the write.
struct Racing<'a> {
    files: &'a Files,
    photo: String,
    meanwhile: Meanwhile,
    given_back: std::sync::atomic::AtomicBool,
}

impl Gate for Racing<'_> {
    type Ticket = ();
    type Error = std::convert::Infallible;

    async fn admit(&self, need: Need) -> Result<Option<()>, Self::Error> {
        // The engine's reads run meanwhile (they never wait on the fake).
        tokio::task::yield_now().await;
        let alice = user("alice");
        match self.meanwhile {
            Meanwhile::Taken => {
                let store = self.files.engine.store();
                let record = store.load_attachment(&alice, &self.photo).await.unwrap();
                let taken = record
                    .unwrap()
                    .attached_to("thr_other", "msg_other")
                    .unwrap();
                store.save_attachment(&alice, &taken).await.unwrap();
            }
            Meanwhile::Vanished => {
                let ids = [self.photo.clone()];
                self.files.files.delete(&ids).await.unwrap();
            }
        }
        Ok(need.turn.then_some(()))
    }

    fn meter(&self, _ticket: &()) -> Meter {
        Meter {
            day: UsageDay::of(chrono::Utc::now()),
            used: 0,
            budget: ChatBudget::default(),
        }
    }

    async fn give_back(&self, _ticket: ()) {
        self.given_back
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    async fn charge(&self, _ticket: (), _tokens: TokenUsage) {}
}

/// A new thread showing a photo to which `meanwhile` happens between the
/// engine's checks and its write: the refusal, once the turn was given back
/// and no thread was left behind.
async fn raced(meanwhile: Meanwhile) -> ChatError {
    let f = Files::new();
    let photo = f.uploaded("alice", "a.png", 5, "image/png").await;
    let gate = Racing {
        files: &f,
        photo: photo.clone(),
        meanwhile,
        given_back: Default::default(),
    };
    let body = json!({"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": "look"}],
        "attachments": [photo], "inference_options": {}}}});
    let request = Request::parse(body.to_string().as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = match drive::streaming(
        &f.engine,
        Caller::new(user("alice")),
        request,
        &gate,
        deadline,
    )
    .await
    {
        Ok(_) => panic!("the race was not noticed"),
        Err(e) => e,
    };
    assert!(
        gate.given_back.load(std::sync::atomic::Ordering::SeqCst),
        "the turn is given back"
    );
    let threads = f
        .json("alice", json!({"type": "threads.list", "params": {}}))
        .await
        .unwrap();
    assert_eq!(threads["data"], json!([]), "no thread is left half-made");
    refused
}

#[tokio::test]
async fn an_attachment_taken_between_the_checks_and_the_write_is_a_conflict_leaving_nothing() {
    let refused = raced(Meanwhile::Taken).await;
    assert!(
        matches!(refused, ChatError::Attachment(AttachmentError::Taken)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_file_gone_between_the_checks_and_the_write_leaves_nothing() {
    let refused = raced(Meanwhile::Vanished).await;
    assert!(matches!(refused, ChatError::Store(_)), "{refused:?}");
}

#[tokio::test]
async fn every_read_gets_a_fresh_preview() {
    let f = Files::new();
    let photo = f.uploaded("alice", "a.png", 5, "image/png").await;
    let thread = f.thread_showing(&[&photo]).await;
    let list = json!({"type": "items.list", "params": {"thread_id": thread, "order": "asc"}});
    let first = f.json("alice", list.clone()).await.unwrap();
    let second = f.json("alice", list).await.unwrap();
    let preview = |page: &Value| page["data"][0]["attachments"][0]["preview_url"].clone();
    assert!(preview(&first).is_string());
    assert_ne!(preview(&first), preview(&second));
}

#[tokio::test]
async fn deleting_a_used_attachment_takes_it_off_its_message() {
    let f = Files::new();
    let photo = f.uploaded("alice", "a.png", 5, "image/png").await;
    let pdf = f.uploaded("alice", "b.pdf", 5, "application/pdf").await;
    let thread = f.thread_showing(&[&photo, &pdf]).await;
    f.json(
        "alice",
        json!({"type": "attachments.delete", "params": {"attachment_id": photo}}),
    )
    .await
    .unwrap();
    assert!(f.files.object(&photo).is_none());
    assert!(f.record("alice", &photo).await.is_none());
    let page = f
        .json(
            "alice",
            json!({"type": "items.list", "params": {"thread_id": thread, "order": "asc"}}),
        )
        .await
        .unwrap();
    let ids: Vec<&str> = page["data"][0]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pdf.as_str()]);
}

#[tokio::test]
async fn deleting_a_thread_deletes_its_files() {
    let f = Files::new();
    let photo = f.uploaded("alice", "a.png", 5, "image/png").await;
    let unused = f.uploaded("alice", "b.png", 5, "image/png").await;
    let thread = f.thread_showing(&[&photo]).await;
    f.delete_thread("alice", &thread).await;
    assert!(f.files.object(&photo).is_none());
    assert!(f.record("alice", &photo).await.is_none());
    // An upload no message used is not the thread's.
    assert!(f.files.object(&unused).is_some());
}

#[tokio::test]
async fn a_threads_files_are_deleted_in_one_call() {
    let f = Files::new();
    let photo = f.uploaded("alice", "a.png", 5, "image/png").await;
    let pdf = f.uploaded("alice", "b.pdf", 5, "application/pdf").await;
    let thread = f.thread_showing(&[&photo, &pdf]).await;
    let mark = f.journal.calls().len();
    f.delete_thread("alice", &thread).await;
    assert_eq!(f.file_deletes(mark), 1);
}

#[tokio::test]
async fn a_thread_without_files_deletes_no_files() {
    let f = Files::new();
    let thread = f.thread_showing(&[]).await;
    let mark = f.journal.calls().len();
    f.delete_thread("alice", &thread).await;
    assert_eq!(f.file_deletes(mark), 0);
    assert!(
        f.engine
            .store()
            .stored_thread(&user("alice"), &thread)
            .is_none()
    );
}

#[tokio::test]
async fn without_an_attachment_store_attachments_are_not_offered() {
    let tasks = TaskService::new(
        InMemoryTasks::default(),
        CursorCodec::new(&[7u8; 32], chrono::Duration::hours(1)).unwrap(),
    );
    let settings = AgentSettings {
        model: "m".into(),
        models: vec![],
        temperature: 0.2,
        instructions: String::new(),
        max_tool_steps: 1,
        max_tool_calls: 1,
    };
    let engine = Engine::new(
        InMemoryChat::default(),
        TaskAgent::new(tasks, ScriptedModel::default(), settings),
    );
    let request = Request::parse(
        br#"{"type":"attachments.create","params":{"name":"a.png","size":5,"mime_type":"image/png"}}"#,
    )
    .unwrap();
    let refused = drive::json(&engine, &user("alice"), request)
        .await
        .unwrap_err();
    assert!(matches!(refused, ChatError::AttachmentsDisabled));
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n fake image bytes";
const PDF: &[u8] = b"%PDF-1.4 fake document";
const MB: usize = 1024 * 1024;

#[tokio::test]
async fn a_direct_upload_stores_the_file_and_its_record_and_answers_the_attachment() {
    let f = Files::new();
    let photo = f
        .direct("alice", "C:\\photos\\list.png", "Image/PNG; x=y", PNG)
        .await
        .unwrap();
    let id = photo["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("atc_"), "{id}");
    assert_eq!(
        (&photo["type"], &photo["name"], &photo["mime_type"]),
        (&json!("image"), &json!("list.png"), &json!("image/png"))
    );
    assert!(
        photo["preview_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("https://files.test/read/{id}?"))
    );
    assert!(photo.get("upload_descriptor").is_none());
    assert!(photo.get("thread_id").is_none());
    // The bytes as sent, stored as a two-phase upload ends up: its type,
    // shown inline, pending (the lifecycle rule removes it unless used).
    let object = f.files.object(&id).unwrap();
    assert_eq!(object.bytes.as_deref(), Some(PNG));
    assert_eq!(object.size, PNG.len() as u64);
    assert_eq!(
        (
            object.content_type.as_str(),
            object.disposition.as_str(),
            object.used
        ),
        ("image/png", "inline", false)
    );
    let record = f.record("alice", &id).await.unwrap();
    assert_eq!(
        (
            record.status,
            record.size,
            record.image,
            record.name.as_str()
        ),
        (
            AttachmentStatus::Pending,
            PNG.len() as u64,
            true,
            "list.png"
        )
    );
    // The object is stored before the record that names it.
    let calls = f.journal.calls();
    let put = calls.iter().position(|c| c == "files.put").unwrap();
    let saved = calls
        .iter()
        .position(|c| c == "store.save_attachment")
        .unwrap();
    assert!(put < saved, "{calls:?}");

    let pdf = f
        .direct("alice", "notes.pdf", "application/pdf", PDF)
        .await
        .unwrap();
    let pdf_id = pdf["id"].as_str().unwrap().to_owned();
    assert_eq!(pdf["type"], "file");
    assert!(pdf.get("preview_url").is_none());
    let object = f.files.object(&pdf_id).unwrap();
    assert_eq!(
        (object.content_type.as_str(), object.disposition.as_str()),
        ("application/pdf", "attachment")
    );
}

#[tokio::test]
async fn a_directly_uploaded_file_is_used_in_a_message_as_a_two_phase_one_is() {
    let f = Files::new();
    let photo = f
        .direct("alice", "list.png", "image/png", PNG)
        .await
        .unwrap();
    let pdf = f
        .direct("alice", "notes.pdf", "application/pdf", PDF)
        .await
        .unwrap();
    let (photo, pdf) = (photo["id"].as_str().unwrap(), pdf["id"].as_str().unwrap());
    // Another user naming it finds nothing, and it stays as it was.
    let refused = f.message("bob", "mine now", &[photo]).await.unwrap_err();
    assert!(
        matches!(refused, ChatError::NotFound("attachment")),
        "{refused:?}"
    );
    assert_eq!(
        f.record("alice", photo).await.unwrap().status,
        AttachmentStatus::Pending
    );
    f.model.push(Round::text("I see two files."));
    let events = f
        .message("alice", "make tasks of these", &[photo, pdf])
        .await
        .unwrap();
    let message = user_message(&events);
    let listed = message["attachments"].as_array().unwrap();
    assert_eq!(
        listed.iter().map(|a| a["type"].clone()).collect::<Vec<_>>(),
        [json!("image"), json!("file")]
    );
    assert!(f.files.object(photo).unwrap().used);
    assert_eq!(
        f.record("alice", photo).await.unwrap().status,
        AttachmentStatus::Attached
    );
    let input = &f.model.requests()[0].input;
    let Some(ModelInput::Files(shown)) = input.last() else {
        panic!("{input:?}");
    };
    assert_eq!(
        shown.iter().map(|s| s.image).collect::<Vec<_>>(),
        [true, false]
    );
}

#[tokio::test]
async fn a_direct_upload_is_held_to_the_allow_list_and_the_sizes_and_a_refusal_stores_nothing() {
    let f = Files::with_policy(AttachmentPolicy {
        max_image_bytes: MB as u64,
        ..AttachmentPolicy::default()
    });
    let over_4_mb = vec![7u8; 4 * MB + 1];
    let cases: [(&str, &str, &[u8], AttachmentError); 5] = [
        (
            "page.html",
            "text/html",
            b"<html></html>",
            AttachmentError::TypeNotAllowed(
                "text/html".into(),
                "image/png, image/jpeg, image/webp, image/gif, application/pdf, text/plain".into(),
            ),
        ),
        (
            "unknown",
            "application/octet-stream",
            b"x",
            AttachmentError::TypeNotAllowed(
                "application/octet-stream".into(),
                "image/png, image/jpeg, image/webp, image/gif, application/pdf, text/plain".into(),
            ),
        ),
        ("empty.pdf", "application/pdf", b"", AttachmentError::Empty),
        // The policy's limit for images (1 MB here) is the smaller one.
        (
            "big.png",
            "image/png",
            &over_4_mb[..MB + 1],
            AttachmentError::TooLarge {
                kind: "images",
                limit_mb: 1,
            },
        ),
        // Documents may be 20 MB, a direct upload 4.
        (
            "big.pdf",
            "application/pdf",
            &over_4_mb,
            AttachmentError::TooLarge {
                kind: "direct uploads",
                limit_mb: 4,
            },
        ),
    ];
    for (name, mime, bytes, why) in cases {
        let refused = f.direct("alice", name, mime, bytes).await.unwrap_err();
        match refused {
            ChatError::Attachment(e) => assert_eq!(e, why, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(f.files.ids().is_empty());
    assert!(f.records("alice").await.is_empty());
    assert!(
        !f.journal.calls().iter().any(|c| c == "files.put"),
        "nothing was sent to the object store"
    );
    // Exactly the limits pass.
    let exactly = vec![7u8; MAX_DIRECT_UPLOAD_BYTES as usize];
    f.direct("alice", "a.pdf", "application/pdf", &exactly)
        .await
        .unwrap();
    f.direct("alice", "a.png", "image/png", &exactly[..MB])
        .await
        .unwrap();
    assert_eq!(f.files.ids().len(), 2);
}

#[tokio::test]
async fn direct_uploads_count_against_the_quota_with_two_phase_ones() {
    let f = Files::with_policy(AttachmentPolicy {
        quota_bytes: 3 * MB as u64,
        ..AttachmentPolicy::default()
    });
    let two_mb = vec![1u8; 2 * MB];
    f.direct("alice", "a.pdf", "application/pdf", &two_mb)
        .await
        .unwrap();
    let refused = f
        .direct("alice", "b.pdf", "application/pdf", &two_mb)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ChatError::Attachment(AttachmentError::Quota { limit_mb: 3 })
        ),
        "{refused:?}"
    );
    // A declared upload meets the same quota...
    let refused = f
        .create("alice", "c.png", 2 * MB as u64, "image/png")
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ChatError::Attachment(AttachmentError::Quota { .. })
    ));
    assert_eq!(f.files.ids().len(), 1, "the refused one was not stored");
    assert_eq!(f.records("alice").await.len(), 1);
    // ... and another user has their own.
    f.direct("bob", "b.pdf", "application/pdf", &two_mb)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_object_store_failure_leaves_no_record() {
    let f = Files::new();
    f.files.set_failing_puts(true);
    let refused = f
        .direct("alice", "a.png", "image/png", PNG)
        .await
        .unwrap_err();
    assert!(matches!(refused, ChatError::Store(_)), "{refused:?}");
    assert!(f.records("alice").await.is_empty());
    assert!(f.files.ids().is_empty());
    f.files.set_failing_puts(false);
    f.direct("alice", "a.png", "image/png", PNG).await.unwrap();
}

#[tokio::test]
async fn a_record_that_cannot_be_written_takes_its_object_with_it() {
    let f: &'static Files = Box::leak(Box::new(Files::new()));
    // The object is stored, then the record's write fails.
    f.files.after_put(|| f.engine.store().fail_next_calls(1));
    let refused = f
        .direct("alice", "a.png", "image/png", PNG)
        .await
        .unwrap_err();
    assert!(matches!(refused, ChatError::Store(_)), "{refused:?}");
    let calls = f.journal.calls();
    assert!(f.files.ids().is_empty(), "the object was removed");
    assert!(f.records("alice").await.is_empty());
    let tail: Vec<&str> = calls
        .iter()
        .map(String::as_str)
        .skip_while(|c| *c != "files.put")
        .collect();
    assert_eq!(tail, ["files.put", "store.save_attachment", "files.delete"]);
}

/// A gate that refuses every request, as a cancelled session's secret is.
struct Closed;

impl Gate for Closed {
    type Ticket = ();
    type Error = &'static str;

    async fn admit(&self, _need: Need) -> Result<Option<()>, Self::Error> {
        Err("the session was cancelled")
    }

    fn meter(&self, _ticket: &()) -> Meter {
        unreachable!("nothing is admitted")
    }

    async fn give_back(&self, _ticket: ()) {}

    async fn charge(&self, _ticket: (), _tokens: TokenUsage) {}
}

#[tokio::test]
async fn a_direct_upload_is_let_in_by_the_gate_but_is_not_a_turn() {
    use taskpilot_chatkit::testing::drive::CountingGate;
    let f = Files::new();
    let gate = CountingGate::default();
    f.direct_through(&gate, "alice", "a.png", "image/png", PNG)
        .await
        .unwrap();
    assert_eq!(gate.counts(), (0, 0, 0), "no turn admitted or charged");
    // A refusal of the gate comes first: nothing is read or stored.
    let file = DirectUpload {
        name: "b.png".into(),
        mime_type: "image/png".into(),
        bytes: PNG.to_vec(),
    };
    let mark = f.journal.calls().len();
    let refused = f.engine.upload(&user("alice"), file, &Closed).await;
    assert!(
        matches!(
            refused,
            Err(ProcessError::Refused("the session was cancelled"))
        ),
        "{refused:?}"
    );
    assert!(f.journal.calls()[mark..].is_empty());
    assert_eq!(f.files.ids().len(), 1);
}

#[tokio::test]
async fn without_an_attachment_store_direct_uploads_are_not_offered() {
    let engine = Engine::new(
        InMemoryChat::default(),
        scripted_agent(ScriptedModel::default(), 1),
    );
    let file = DirectUpload {
        name: "a.png".into(),
        mime_type: "image/png".into(),
        bytes: PNG.to_vec(),
    };
    let refused = engine.upload(&user("alice"), file, &OpenGate).await;
    assert!(
        matches!(
            refused,
            Err(ProcessError::Chat(ChatError::AttachmentsDisabled))
        ),
        "{refused:?}"
    );
}

#[test]
fn the_contract_check_of_a_direct_uploads_answer_can_fail() {
    let image = json!({"id": "atc_1", "name": "a.png", "mime_type": "image/png",
                       "type": "image", "preview_url": "https://files.test/read/atc_1"});
    chatkit_contract::check_attachment(&image).unwrap();
    let file =
        json!({"id": "atc_2", "name": "a.pdf", "mime_type": "application/pdf", "type": "file"});
    chatkit_contract::check_attachment(&file).unwrap();
    let mut no_preview = image.clone();
    no_preview.as_object_mut().unwrap().remove("preview_url");
    let mut unnamed = file.clone();
    unnamed.as_object_mut().unwrap().remove("name");
    let mut with_descriptor = file.clone();
    with_descriptor["upload_descriptor"] =
        json!({"url": "https://s3.test/x", "method": "PUT", "headers": {}});
    let mut unknown = file.clone();
    unknown["size"] = json!(5);
    for wrong in [no_preview, unnamed, with_descriptor, unknown] {
        assert!(
            chatkit_contract::check_attachment(&wrong).is_err(),
            "{wrong}"
        );
    }
}
