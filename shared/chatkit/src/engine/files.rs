//! Attachments in the engine: `attachments.create` and `attachments.delete`,
//! the checks a message naming attachments passes before its first event,
//! fresh preview URLs on every read (stored ones expire), the URLs the model
//! reads a turn's files by, and a thread's files going with it.

use taskpilot_domain::UserId;

use super::{ChatError, Engine};
use crate::attachments::{
    AttachmentError, AttachmentRecord, AttachmentStatus, AttachmentStore, MAX_PER_USER,
    normalize_mime,
};
use crate::ids;
use crate::request::UserMessageInput;
use crate::responder::Responder;
use crate::store::{ChatStore, Write};
use crate::turn::FileUrls;
use crate::types::{Attachment, AttachmentKind, ItemKind, ThreadItem};

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
        let now = taskpilot_domain::timestamp::now();
        let live: Vec<AttachmentRecord> = self
            .store
            .list_attachments(user)
            .await?
            .into_iter()
            .filter(|r| r.is_live(now))
            .collect();
        let used: u64 = live.iter().map(|r| r.size).sum();
        self.policy.within_quota(used, declared.size)?;
        if live.len() >= MAX_PER_USER {
            return Err(AttachmentError::Quota {
                limit_mb: self.policy.quota_bytes / (1024 * 1024),
            }
            .into());
        }
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
