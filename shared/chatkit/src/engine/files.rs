//! Attachments in the engine: `attachments.create` and `attachments.delete`,
//! direct uploads ([`Engine::upload`]), the checks a message naming
//! attachments passes before its first event,
//! fresh preview URLs on every read (stored ones expire), the URLs the model
//! reads a turn's files by, and a thread's files going with it.

use taskpilot_domain::UserId;

use super::{ChatError, Engine, Gate, Need, ProcessError};
use crate::attachments::{
    AttachmentError, AttachmentRecord, AttachmentStatus, AttachmentStore, DirectUpload,
    MAX_PER_USER, normalize_mime,
};
use crate::dictation::Transcriber;
use crate::ids;
use crate::request::UserMessageInput;
use crate::responder::Responder;
use crate::store::{ChatStore, Write};
use crate::turn::FileUrls;
use crate::types::{Attachment, AttachmentKind, ItemKind, ThreadItem, UserContent};

impl<S: ChatStore, R: Responder, A: AttachmentStore, D> Engine<S, R, A, D> {
    /// `attachments.create`: checks the declared file against the policy and
    /// the user's quota, records it as pending and answers where to upload
    /// it (and, for an image, where its preview will be).
    pub(super) async fn create_attachment(
        &self,
        user: &UserId,
        name: &str,
        size: u64,
        mime_type: &str,
    ) -> Result<Attachment, ChatError> {
        if !self.files.enabled() {
            return Err(ChatError::AttachmentsDisabled);
        }
        let declared = self.policy.check(name, size, mime_type)?;
        self.within_quota(user, declared.size).await?;
        let record = AttachmentRecord::new(ids::attachment(), declared);
        let upload = self.files.upload(&record).await?;
        let preview = self
            .preview(&record.id, &record.mime_type, record.image)
            .await?;
        self.store.save_attachment(user, &record).await?;
        tracing::info!(attachment_id = %record.id, size = record.size, mime_type = %record.mime_type, "attachment created");
        let mut wire = record.to_wire(preview);
        wire.upload_descriptor = Some(upload);
        Ok(wire)
    }

    /// Whether `user` may keep `more` bytes in one more file: the bytes and
    /// the count of what they keep (unused uploads a day old no longer
    /// count).
    async fn within_quota(&self, user: &UserId, more: u64) -> Result<(), ChatError> {
        let now = taskpilot_domain::timestamp::now();
        let live: Vec<AttachmentRecord> = self
            .store
            .list_attachments(user)
            .await?
            .into_iter()
            .filter(|r| r.is_live(now))
            .collect();
        let used: u64 = live.iter().map(|r| r.size).sum();
        self.policy.within_quota(used, more)?;
        if live.len() >= MAX_PER_USER {
            return Err(AttachmentError::Quota {
                limit_mb: self.policy.quota_bytes / (1024 * 1024),
            }
            .into());
        }
        Ok(())
    }

    /// A direct upload's file, once let in: checked as `attachments.create`
    /// checks a declared one (type, size within [`MAX_DIRECT_UPLOAD_BYTES`]
    /// too, name, quota), stored as a two-phase upload would have been
    /// (pending), then recorded. Nothing is left half-written: a refused
    /// file stores nothing, a failed store records nothing, and the object
    /// of a failed record is deleted (were that to fail too, its `pending`
    /// tag has the bucket's lifecycle rule remove it within a day, and no
    /// record names it).
    ///
    /// [`MAX_DIRECT_UPLOAD_BYTES`]: crate::attachments::MAX_DIRECT_UPLOAD_BYTES
    async fn store_upload(
        &self,
        user: &UserId,
        file: DirectUpload,
    ) -> Result<Attachment, ChatError> {
        if !self.files.enabled() {
            return Err(ChatError::AttachmentsDisabled);
        }
        let size = u64::try_from(file.bytes.len()).unwrap_or(u64::MAX);
        let declared = self
            .policy
            .check_direct(&file.name, size, &file.mime_type)?;
        self.within_quota(user, declared.size).await?;
        let record = AttachmentRecord::new(ids::attachment(), declared);
        let preview = self
            .preview(&record.id, &record.mime_type, record.image)
            .await?;
        self.files.put(&record, file.bytes).await?;
        if let Err(e) = self.store.save_attachment(user, &record).await {
            let ids = [record.id.clone()];
            match self.files.delete(&ids).await {
                Ok(()) => {
                    tracing::warn!(attachment_id = %record.id, error = %e, "upload not recorded; its object was deleted");
                }
                Err(undo) => {
                    tracing::error!(attachment_id = %record.id, error = %e, undo = %undo, "upload not recorded; its object stays tagged pending for the lifecycle rule");
                }
            }
            return Err(e.into());
        }
        tracing::info!(attachment_id = %record.id, size = record.size, mime_type = %record.mime_type, "attachment uploaded directly");
        Ok(record.to_wire(preview))
    }

    /// `attachments.delete`: the file and its record go; a message that
    /// used it stops listing it.
    pub(super) async fn delete_attachment(
        &self,
        user: &UserId,
        attachment_id: &str,
    ) -> Result<(), ChatError> {
        let found = match ids::plausible(attachment_id) {
            true => self.store.load_attachment(user, attachment_id).await?,
            false => None,
        };
        let record = found.ok_or(ChatError::NotFound("attachment"))?;
        if let (Some(thread_id), Some(item_id)) = (&record.thread_id, &record.item_id)
            && let Some(mut message) = self.store.load_item(user, thread_id, item_id).await?
        {
            if let ItemKind::UserMessage { attachments, .. } = &mut message.kind {
                attachments.retain(|a| a.id != attachment_id);
            }
            // A thread deleted meanwhile has nothing left to update.
            self.store.save_item(user, &message).await?;
        }
        let ids = [record.id];
        self.files.delete(&ids).await?;
        self.store.delete_attachments(user, &ids).await?;
        tracing::info!(%attachment_id, "attachment deleted");
        Ok(())
    }

    /// The attachments a new message in `thread_id` names, as the message
    /// will list them: each must be the caller's, uploaded as declared and
    /// not used by another message.
    pub(super) async fn attachments_for(
        &self,
        user: &UserId,
        thread_id: &str,
        input: &UserMessageInput,
    ) -> Result<Vec<Attachment>, ChatError> {
        if input.attachments.is_empty() {
            return Ok(Vec::new());
        }
        if !self.files.enabled() {
            return Err(ChatError::AttachmentsDisabled);
        }
        let now = taskpilot_domain::timestamp::now();
        let mut named: Vec<&String> = Vec::new();
        for id in &input.attachments {
            if !named.contains(&id) {
                named.push(id);
            }
        }
        let mut files = Vec::with_capacity(named.len());
        for id in named {
            let record = self
                .store
                .load_attachment(user, id)
                .await?
                .filter(|r| r.is_live(now))
                .ok_or(ChatError::NotFound("attachment"))?;
            if record.status == AttachmentStatus::Attached {
                return Err(AttachmentError::InUse(record.id).into());
            }
            let stored = self
                .files
                .stored(&record.id)
                .await?
                .ok_or_else(|| AttachmentError::NotUploaded(record.id.clone()))?;
            let stored_type = stored.content_type.as_deref().map(normalize_mime);
            if stored.size != record.size || stored_type.as_deref() != Some(&record.mime_type) {
                return Err(AttachmentError::Mismatch(record.id).into());
            }
            let preview = self
                .preview(&record.id, &record.mime_type, record.image)
                .await?;
            let mut wire = record.to_wire(preview);
            wire.thread_id = Some(thread_id.to_owned());
            files.push(wire);
        }
        Ok(files)
    }

    async fn preview(
        &self,
        id: &str,
        mime_type: &str,
        image: bool,
    ) -> Result<Option<String>, ChatError> {
        Ok(match image {
            true => Some(self.files.read_url(id, mime_type).await?),
            false => None,
        })
    }

    /// Fresh preview URLs for the images of `items` (stored ones expire).
    pub(super) async fn present(&self, items: &mut [ThreadItem]) -> Result<(), ChatError> {
        if !self.files.enabled() {
            return Ok(());
        }
        for item in items {
            if let ItemKind::UserMessage { attachments, .. } = &mut item.kind {
                for file in attachments {
                    if let AttachmentKind::Image { preview_url } = &mut file.kind {
                        *preview_url = self.files.read_url(&file.id, &file.mime_type).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The URLs the model reads `files` by (images by their fresh previews).
    pub(super) async fn model_files<'f>(
        &self,
        files: impl IntoIterator<Item = &'f Attachment>,
    ) -> Result<FileUrls, ChatError> {
        let mut urls = FileUrls::new();
        for file in files {
            let url = match &file.kind {
                AttachmentKind::Image { preview_url } => preview_url.clone(),
                AttachmentKind::File => self.files.read_url(&file.id, &file.mime_type).await?,
            };
            urls.insert(file.id.clone(), url);
        }
        Ok(urls)
    }

    /// Deletes a thread with the files its messages used: the files first
    /// (a failure leaves everything for a retry), then the thread, then the
    /// records (and the files of a message that landed meanwhile).
    pub(super) async fn delete_thread_and_files(
        &self,
        user: &UserId,
        thread_id: &str,
    ) -> Result<bool, ChatError> {
        if !self.files.enabled() {
            return Ok(self.store.delete_thread(user, thread_id).await? == Write::Done);
        }
        let used = self.thread_files(user, thread_id).await?;
        if !used.is_empty() {
            self.files.delete(&used).await?;
        }
        if self.store.delete_thread(user, thread_id).await? != Write::Done {
            return Ok(false);
        }
        self.store.delete_attachments(user, &used).await?;
        let late = self.thread_files(user, thread_id).await?;
        if !late.is_empty() {
            self.files.delete(&late).await?;
            self.store.delete_attachments(user, &late).await?;
        }
        Ok(true)
    }

    async fn thread_files(&self, user: &UserId, thread_id: &str) -> Result<Vec<String>, ChatError> {
        Ok(self
            .store
            .list_attachments(user)
            .await?
            .into_iter()
            .filter(|r| r.thread_id.as_deref() == Some(thread_id))
            .map(|r| r.id)
            .collect())
    }
}

impl<S: ChatStore, R: Responder, A: AttachmentStore, D: Transcriber> Engine<S, R, A, D> {
    /// A direct upload (ChatKit's `uploadStrategy: {type: "direct"}`) by
    /// `user`: `gate` lets it in as a JSON request is let in (a client
    /// secret's session is checked), not as a turn (no turn is admitted);
    /// then the file is checked, stored and recorded, and the answer is the
    /// `Attachment` (no upload descriptor: it is uploaded), usable in a
    /// message as a two-phase upload is.
    pub async fn upload<G: Gate>(
        &self,
        user: &UserId,
        file: DirectUpload,
        gate: &G,
    ) -> Result<Attachment, ProcessError<G::Error, D::Error>> {
        let need = Need {
            stream: false,
            turn: false,
        };
        if let Some(ticket) = gate.admit(need).await.map_err(ProcessError::Refused)? {
            gate.give_back(ticket).await;
        }
        Ok(self.store_upload(user, file).await?)
    }
}

/// Words by which a message without files of its own asks about the files
/// sent before it (English; a file's name works in every language).
const EARLIER_FILE_WORDS: [&str; 12] = [
    "image",
    "photo",
    "picture",
    "pic",
    "screenshot",
    "scan",
    "file",
    "pdf",
    "document",
    "attachment",
    "attached",
    "upload",
];

/// The files the model is shown in a turn whose user messages are
/// `messages` (oldest first; other items are skipped): the latest message's
/// own, and earlier ones only when it asks about them: files it names, or,
/// when it brings none of its own and speaks of an image, a photo, a file…,
/// those of the latest earlier message that had files. Every other earlier
/// file is named in text only, so an image is not paid for again on every
/// turn and the request's prefix stays the same from turn to turn.
pub(crate) fn shown_files<'a>(
    messages: impl IntoIterator<Item = &'a ThreadItem>,
) -> Vec<&'a Attachment> {
    let mut sent: Vec<(&'a [Attachment], String)> = Vec::new();
    for item in messages {
        if let ItemKind::UserMessage {
            content,
            attachments,
            ..
        } = &item.kind
        {
            let text = content
                .iter()
                .filter_map(|c| match c {
                    UserContent::InputText { text } => Some(text.to_lowercase()),
                    UserContent::InputTag { .. } => None,
                })
                .collect::<Vec<_>>()
                .join(" ");
            sent.push((attachments, text));
        }
    }
    let Some((own, text)) = sent.pop() else {
        return Vec::new();
    };
    let mut shown: Vec<&Attachment> = own.iter().collect();
    let speaks_of_files = EARLIER_FILE_WORDS.iter().any(|w| {
        text.split(|c: char| !c.is_alphanumeric())
            .any(|word| word == *w || word.strip_suffix('s') == Some(w))
    });
    let latest_earlier = sent.iter().rposition(|(files, _)| !files.is_empty());
    for (i, (files, _)) in sent.iter().enumerate() {
        for file in *files {
            let named = file.name.len() >= 3 && text.contains(&file.name.to_lowercase());
            let asked = own.is_empty() && speaks_of_files && Some(i) == latest_earlier;
            if named || asked {
                shown.push(file);
            }
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::InferenceOptions;

    fn file(name: &str) -> Attachment {
        Attachment {
            id: format!("atc_{name}"),
            name: name.into(),
            mime_type: "image/png".into(),
            kind: AttachmentKind::Image {
                preview_url: String::new(),
            },
            upload_descriptor: None,
            thread_id: None,
        }
    }

    fn said(text: &str, files: &[&str]) -> ThreadItem {
        ThreadItem::new(
            "msg_1".to_owned(),
            "thr_1",
            ItemKind::UserMessage {
                content: vec![UserContent::InputText { text: text.into() }],
                attachments: files.iter().map(|n| file(n)).collect(),
                quoted_text: None,
                inference_options: InferenceOptions::default(),
            },
        )
    }

    fn names(messages: &[ThreadItem]) -> Vec<&str> {
        shown_files(messages)
            .iter()
            .map(|a| a.name.as_str())
            .collect()
    }

    #[test]
    fn the_latest_message_shows_its_own_files_and_not_earlier_ones() {
        let turn = [
            said("look", &["a.png"]),
            said("and this", &["b.png", "c.png"]),
        ];
        assert_eq!(names(&turn), ["b.png", "c.png"]);
    }

    #[test]
    fn an_earlier_file_is_shown_again_when_named_in_any_case() {
        let turn = [
            said("", &["Kitchen.png"]),
            said("", &["desk.png"]),
            said("what was on KITCHEN.PNG again?", &[]),
        ];
        assert_eq!(names(&turn), ["Kitchen.png"]);
    }

    #[test]
    fn a_name_shorter_than_three_bytes_is_not_matched() {
        let turn = [said("", &["ab"]), said("ab ab", &[])];
        assert!(names(&turn).is_empty());
    }

    #[test]
    fn a_message_without_files_speaking_of_one_gets_the_latest_earlier_files() {
        let turn = [
            said("", &["old.png"]),
            said("", &["receipt.png", "bill.png"]),
            said("no files here", &[]),
            said("Add the photos' totals as tasks", &[]),
        ];
        assert_eq!(names(&turn), ["receipt.png", "bill.png"]);
        let singular = [said("", &["x.png"]), said("what's in the picture?", &[])];
        assert_eq!(names(&singular), ["x.png"]);
    }

    #[test]
    fn a_word_inside_another_word_does_not_ask() {
        let turn = [said("", &["x.png"]), said("profile the pictured epic", &[])];
        assert!(names(&turn).is_empty());
    }

    #[test]
    fn a_message_with_files_of_its_own_speaking_of_a_photo_shows_only_its_own() {
        let turn = [said("", &["old.png"]), said("this photo", &["new.png"])];
        assert_eq!(names(&turn), ["new.png"]);
    }

    #[test]
    fn a_tag_is_not_read_as_words_and_other_items_are_skipped() {
        let mut tagged = said("", &[]);
        if let ItemKind::UserMessage { content, .. } = &mut tagged.kind {
            content.push(UserContent::InputTag {
                id: "t".into(),
                text: "photo".into(),
                data: Default::default(),
                group: None,
                interactive: false,
            });
        }
        let answer = ThreadItem::new(
            "msg_2".to_owned(),
            "thr_1",
            ItemKind::AssistantMessage { content: vec![] },
        );
        assert!(names(&[said("", &["x.png"]), answer.clone(), tagged]).is_empty());
        assert_eq!(names(&[said("", &["x.png"]), answer]), ["x.png"]);
        assert!(names(&[]).is_empty());
    }
}
