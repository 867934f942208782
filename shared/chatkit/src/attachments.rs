//! Attachments (ck-py's `AttachmentStore` and `Store.*_attachment`): what a
//! user may upload ([`AttachmentPolicy`]), the record that follows an upload
//! from `attachments.create` to the message that uses it
//! ([`AttachmentRecord`]), and the port of the object store that holds the
//! bytes ([`AttachmentStore`]). Uploads are two-phase (the server answers a
//! presigned upload, the browser sends the bytes there, and a message naming
//! the attachment is only accepted once the object is there as declared) or
//! direct (the browser posts the file to the server, which checks it against
//! the same policy, stores it as a two-phase upload would have, and answers
//! the attachment: [`DirectUpload`], at most [`MAX_DIRECT_UPLOAD_BYTES`]).

use std::future::Future;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use taskpilot_domain::StoreError;

use crate::types::{Attachment, AttachmentKind, UploadDescriptor};

/// An upload never attached to a message is forgotten after this long (its
/// record expires; the bucket's lifecycle rule removes its object).
pub const PENDING_LIFETIME_HOURS: i64 = 24;
/// Most attachments on one message.
pub const MAX_PER_MESSAGE: usize = 10;
/// Most attachments one user keeps.
pub const MAX_PER_USER: usize = 1_000;
/// Longest file name kept (in characters).
pub const MAX_NAME_CHARS: usize = 255;
/// Most bytes of file one direct upload carries: 4 MiB (4 × 1024 × 1024
/// bytes). A direct upload reaches the function whole, inside its
/// invocation: a Lambda Function URL takes at most 6 MB per request, and a
/// binary body (a multipart upload of a photo) arrives base64-encoded, a
/// third larger, so 4 MiB of file (about 5.6 MB encoded, with the multipart
/// framing and the event around it) is what fits. The smaller of this and
/// the policy's limit for the file's kind applies; larger files go
/// two-phase, straight to the object store.
pub const MAX_DIRECT_UPLOAD_BYTES: u64 = 4 * 1024 * 1024;

/// Why an attachment is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// The mime type is not on the allow-list.
    #[error("files of type `{0}` cannot be attached (allowed: {1})")]
    TypeNotAllowed(String, String),
    /// Over the size limit of its kind.
    #[error("the file is larger than the {limit_mb} MB allowed for {kind}")]
    TooLarge { kind: &'static str, limit_mb: u64 },
    /// A 0-byte file.
    #[error("the file is empty")]
    Empty,
    /// A name that is empty once cleaned.
    #[error("the file needs a name")]
    Unnamed,
    /// The user's attachments would exceed their quota.
    #[error("attachments are limited to {limit_mb} MB per user; delete some first")]
    Quota { limit_mb: u64 },
    /// A message names an attachment whose upload has not arrived.
    #[error("attachment {0} has not been uploaded yet")]
    NotUploaded(String),
    /// The uploaded object is not what was declared.
    #[error("attachment {0} does not match what was declared (size or type)")]
    Mismatch(String),
    /// The attachment already belongs to another thread.
    #[error("attachment {0} is already part of another conversation")]
    InUse(String),
    /// An attachment was deleted or used by another message while this one
    /// was being sent.
    #[error("an attachment was deleted or used by another message meanwhile; attach it again")]
    Taken,
    /// More attachments on a message than allowed.
    #[error("at most {MAX_PER_MESSAGE} attachments per message")]
    TooMany,
}

/// What may be uploaded: types, sizes and the per-user quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentPolicy {
    /// Mime types shown as images (with a preview).
    pub image_types: Vec<String>,
    /// Other accepted mime types (documents).
    pub document_types: Vec<String>,
    /// Largest image, in bytes.
    pub max_image_bytes: u64,
    /// Largest document, in bytes.
    pub max_document_bytes: u64,
    /// Most bytes of attachments one user keeps.
    pub quota_bytes: u64,
}

const MB: u64 = 1024 * 1024;

impl Default for AttachmentPolicy {
    fn default() -> Self {
        Self {
            image_types: ["image/png", "image/jpeg", "image/webp", "image/gif"]
                .map(String::from)
                .to_vec(),
            document_types: ["application/pdf", "text/plain"].map(String::from).to_vec(),
            max_image_bytes: 10 * MB,
            max_document_bytes: 20 * MB,
            quota_bytes: 500 * MB,
        }
    }
}

/// A declared upload that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The cleaned file name.
    pub name: String,
    /// The normalized mime type (lower case, no parameters).
    pub mime_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it is an image.
    pub image: bool,
}

impl AttachmentPolicy {
    /// Checks a declared upload against the allow-list and the size limits.
    pub fn check(
        &self,
        name: &str,
        size: u64,
        mime_type: &str,
    ) -> Result<Declared, AttachmentError> {
        let mime = normalize_mime(mime_type);
        let image = self.image_types.contains(&mime);
        if !image && !self.document_types.contains(&mime) {
            let allowed = self
                .image_types
                .iter()
                .chain(&self.document_types)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            return Err(AttachmentError::TypeNotAllowed(mime, allowed));
        }
        if size == 0 {
            return Err(AttachmentError::Empty);
        }
        let (limit, kind) = if image {
            (self.max_image_bytes, "images")
        } else {
            (self.max_document_bytes, "documents")
        };
        if size > limit {
            return Err(AttachmentError::TooLarge {
                kind,
                limit_mb: limit / MB,
            });
        }
        let name = clean_name(name).ok_or(AttachmentError::Unnamed)?;
        Ok(Declared {
            name,
            mime_type: mime,
            size,
            image,
        })
    }

    /// Checks a file sent whole ([`DirectUpload`]) as [`Self::check`] does,
    /// then against [`MAX_DIRECT_UPLOAD_BYTES`]: the smaller limit applies.
    pub fn check_direct(
        &self,
        name: &str,
        size: u64,
        mime_type: &str,
    ) -> Result<Declared, AttachmentError> {
        let declared = self.check(name, size, mime_type)?;
        if declared.size > MAX_DIRECT_UPLOAD_BYTES {
            return Err(AttachmentError::TooLarge {
                kind: "direct uploads",
                limit_mb: MAX_DIRECT_UPLOAD_BYTES / MB,
            });
        }
        Ok(declared)
    }

    /// Whether `used` bytes plus `more` stay within the quota.
    pub fn within_quota(&self, used: u64, more: u64) -> Result<(), AttachmentError> {
        if used.saturating_add(more) > self.quota_bytes {
            return Err(AttachmentError::Quota {
                limit_mb: self.quota_bytes / MB,
            });
        }
        Ok(())
    }
}

/// `Image/PNG; charset=x` → `image/png`.
pub fn normalize_mime(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// How an object of `mime_type` is served: `inline` for images (shown in
/// the page), `attachment` for the rest (downloaded, never rendered by the
/// browser). Uploads of both kinds store it; reads ask for it again.
pub fn disposition(mime_type: &str) -> &'static str {
    if normalize_mime(mime_type).starts_with("image/") {
        "inline"
    } else {
        "attachment"
    }
}

/// A file name fit to show and to put in a header: its last path segment,
/// without control characters or quotes, at most [`MAX_NAME_CHARS`].
pub fn clean_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(MAX_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim().to_owned();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// Where an attachment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentStatus {
    /// Created; the upload may or may not have arrived.
    Pending,
    /// Part of a stored message.
    Attached,
}

/// The server's record of an attachment, in its owner's partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// `atc_…`
    pub id: String,
    /// The cleaned file name.
    pub name: String,
    /// The declared (normalized) mime type.
    pub mime_type: String,
    /// The declared size in bytes.
    pub size: u64,
    /// Whether it is shown as an image.
    pub image: bool,
    /// Pending or attached.
    pub status: AttachmentStatus,
    /// When it was created.
    #[serde(with = "taskpilot_domain::timestamp")]
    pub created_at: DateTime<Utc>,
    /// The thread of the message that uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The message that uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
}

impl AttachmentRecord {
    /// A new pending record for a declared upload.
    pub fn new(id: String, declared: Declared) -> Self {
        Self {
            id,
            name: declared.name,
            mime_type: declared.mime_type,
            size: declared.size,
            image: declared.image,
            status: AttachmentStatus::Pending,
            created_at: taskpilot_domain::timestamp::now(),
            thread_id: None,
            item_id: None,
        }
    }

    /// When a pending record is forgotten.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.created_at + Duration::hours(PENDING_LIFETIME_HOURS)
    }

    /// Whether the record still counts (an unused upload expires).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == AttachmentStatus::Attached || now < self.expires_at()
    }

    /// The record once used by message `item_id` of `thread_id`; `None` when
    /// another message uses it already.
    pub fn attached_to(&self, thread_id: &str, item_id: &str) -> Option<Self> {
        let mine = self.thread_id.as_deref() == Some(thread_id)
            && self.item_id.as_deref() == Some(item_id);
        (self.status == AttachmentStatus::Pending || mine).then(|| Self {
            status: AttachmentStatus::Attached,
            thread_id: Some(thread_id.to_owned()),
            item_id: Some(item_id.to_owned()),
            ..self.clone()
        })
    }

    /// The wire shape, with a preview URL for an image.
    pub fn to_wire(&self, preview_url: Option<String>) -> Attachment {
        Attachment {
            id: self.id.clone(),
            name: self.name.clone(),
            mime_type: self.mime_type.clone(),
            kind: match (self.image, preview_url) {
                (true, Some(preview_url)) => AttachmentKind::Image { preview_url },
                _ => AttachmentKind::File,
            },
            upload_descriptor: None,
            thread_id: self.thread_id.clone(),
        }
    }
}

/// A file the browser sent whole (ChatKit's `uploadStrategy: {type:
/// "direct"}`): its name and type as the multipart part gave them, and its
/// bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectUpload {
    /// The file name the browser sent (cleaned before it is kept).
    pub name: String,
    /// The content type the browser sent.
    pub mime_type: String,
    /// The file.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for DirectUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectUpload")
            .field("name", &self.name)
            .field("mime_type", &self.mime_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// What the object store holds under an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its size in bytes.
    pub size: u64,
    /// The content type it was stored with.
    pub content_type: Option<String>,
}

/// The object store holding attachments' bytes (S3 in production).
pub trait AttachmentStore: Send + Sync {
    /// Whether attachments are offered at all.
    fn enabled(&self) -> bool {
        true
    }

    /// A presigned upload of exactly the declared type and size.
    fn upload(
        &self,
        record: &AttachmentRecord,
    ) -> impl Future<Output = Result<UploadDescriptor, StoreError>> + Send;

    /// Stores the bytes of a direct upload under `record`, as a two-phase
    /// upload would have stored them: the record's type and
    /// [`disposition`], tagged pending until a message uses it.
    fn put(
        &self,
        record: &AttachmentRecord,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A short-lived URL that reads the object (image previews, the
    /// model), served as `mime_type` whatever was uploaded.
    fn read_url(
        &self,
        attachment_id: &str,
        mime_type: &str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// What is stored under an attachment, if anything.
    fn stored(
        &self,
        attachment_id: &str,
    ) -> impl Future<Output = Result<Option<StoredObject>, StoreError>> + Send;

    /// Marks an object as used by a message, so the clean-up of unused
    /// uploads leaves it alone.
    fn keep(&self, attachment_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes objects (absent ones are fine).
    fn delete(
        &self,
        attachment_ids: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// No object store: attachments are not offered.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAttachments;

fn unsupported() -> StoreError {
    StoreError::Internal("attachments are not configured".into())
}

impl AttachmentStore for NoAttachments {
    fn enabled(&self) -> bool {
        false
    }

    async fn upload(&self, _: &AttachmentRecord) -> Result<UploadDescriptor, StoreError> {
        Err(unsupported())
    }

    async fn put(&self, _: &AttachmentRecord, _: Vec<u8>) -> Result<(), StoreError> {
        Err(unsupported())
    }

    async fn read_url(&self, _: &str, _: &str) -> Result<String, StoreError> {
        Err(unsupported())
    }

    async fn stored(&self, _: &str) -> Result<Option<StoredObject>, StoreError> {
        Ok(None)
    }

    async fn keep(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn delete(&self, _: &[String]) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_uploads_debug_shows_its_length_not_its_bytes() {
        let upload = DirectUpload {
            name: "a.png".into(),
            mime_type: "image/png".into(),
            bytes: vec![7; 1000],
        };
        assert_eq!(
            format!("{upload:?}"),
            r#"DirectUpload { name: "a.png", mime_type: "image/png", bytes: 1000 }"#
        );
    }

    #[test]
    fn names_lose_paths_controls_and_quotes() {
        assert_eq!(clean_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(clean_name("C:\\x\\list.png").as_deref(), Some("list.png"));
        assert_eq!(clean_name("a\"b\r\n.pdf").as_deref(), Some("ab.pdf"));
        assert_eq!(clean_name("..").as_deref(), None);
        assert_eq!(clean_name("   ").as_deref(), None);
        assert_eq!(clean_name(&"x".repeat(400)).map(|n| n.len()), Some(255));
    }

    #[test]
    fn the_policy_checks_type_size_and_emptiness() {
        let p = AttachmentPolicy::default();
        let ok = p.check("a.PNG", 10, "Image/PNG; x=y").unwrap();
        assert!(ok.image);
        assert_eq!(ok.mime_type, "image/png");
        assert!(!p.check("a.pdf", 10, "application/pdf").unwrap().image);
        assert!(matches!(
            p.check("a.html", 10, "text/html"),
            Err(AttachmentError::TypeNotAllowed(..))
        ));
        assert_eq!(
            p.check("a.png", 0, "image/png"),
            Err(AttachmentError::Empty)
        );
        assert!(matches!(
            p.check("a.png", 10 * MB + 1, "image/png"),
            Err(AttachmentError::TooLarge { .. })
        ));
        assert!(p.check("a.pdf", 20 * MB, "application/pdf").is_ok());
        assert_eq!(p.within_quota(p.quota_bytes - 1, 1), Ok(()));
        assert!(p.within_quota(p.quota_bytes, 1).is_err());
    }

    #[test]
    fn the_default_limits_are_10_mb_a_photo_20_a_document_500_in_all() {
        let p = AttachmentPolicy::default();
        assert_eq!(
            (p.max_image_bytes, p.max_document_bytes, p.quota_bytes),
            (10_485_760, 20_971_520, 524_288_000)
        );
    }

    #[test]
    fn refusals_name_their_limits_in_whole_megabytes() {
        let p = AttachmentPolicy {
            max_image_bytes: 3 * MB + 5,
            max_document_bytes: 7 * MB + 5,
            quota_bytes: 9 * MB + 5,
            ..AttachmentPolicy::default()
        };
        assert_eq!(
            p.check("a.png", 3 * MB + 6, "image/png"),
            Err(AttachmentError::TooLarge {
                kind: "images",
                limit_mb: 3
            })
        );
        assert_eq!(
            p.check("a.pdf", 7 * MB + 6, "application/pdf"),
            Err(AttachmentError::TooLarge {
                kind: "documents",
                limit_mb: 7
            })
        );
        assert_eq!(
            p.within_quota(9 * MB, 6),
            Err(AttachmentError::Quota { limit_mb: 9 })
        );
    }

    #[test]
    fn a_direct_upload_is_held_to_4_mb_or_its_kinds_limit_whichever_is_smaller() {
        assert_eq!(MAX_DIRECT_UPLOAD_BYTES, 4_194_304);
        let p = AttachmentPolicy::default();
        assert!(p.check_direct("a.png", 4 * MB, "image/png").is_ok());
        assert_eq!(
            p.check_direct("a.png", 4 * MB + 1, "image/png"),
            Err(AttachmentError::TooLarge {
                kind: "direct uploads",
                limit_mb: 4
            })
        );
        assert_eq!(
            p.check_direct("a.pdf", 4 * MB + 1, "application/pdf")
                .unwrap_err()
                .to_string(),
            "the file is larger than the 4 MB allowed for direct uploads"
        );
        let small = AttachmentPolicy {
            max_image_bytes: 2 * MB,
            ..AttachmentPolicy::default()
        };
        assert!(small.check_direct("a.png", 2 * MB, "image/png").is_ok());
        assert_eq!(
            small.check_direct("a.png", 2 * MB + 1, "image/png"),
            Err(AttachmentError::TooLarge {
                kind: "images",
                limit_mb: 2
            })
        );
        // The same type, emptiness and name rules as a declared upload.
        assert!(matches!(
            p.check_direct("a.html", 10, "text/html"),
            Err(AttachmentError::TypeNotAllowed(..))
        ));
        assert_eq!(
            p.check_direct("a.png", 0, "image/png"),
            Err(AttachmentError::Empty)
        );
        assert_eq!(
            p.check_direct("..", 1, "image/png"),
            Err(AttachmentError::Unnamed)
        );
    }

    #[test]
    fn only_images_are_served_inline() {
        assert_eq!(disposition("image/png"), "inline");
        assert_eq!(disposition("Image/PNG; x=y"), "inline");
        assert_eq!(disposition("application/pdf"), "attachment");
        assert_eq!(disposition("text/plain"), "attachment");
    }

    #[test]
    fn pending_records_expire_and_attached_ones_do_not() {
        let p = AttachmentPolicy::default();
        let mut r =
            AttachmentRecord::new("atc_1".into(), p.check("a.png", 5, "image/png").unwrap());
        let later = r.created_at + Duration::hours(PENDING_LIFETIME_HOURS + 1);
        assert!(r.is_live(r.created_at));
        assert!(!r.is_live(later));
        r.status = AttachmentStatus::Attached;
        assert!(r.is_live(later));
    }

    #[tokio::test]
    async fn without_an_attachment_store_nothing_is_offered_or_read() {
        let none = NoAttachments;
        assert!(!none.enabled());
        assert!(none.read_url("atc_1", "image/png").await.is_err());
        assert!(none.upload(&record()).await.is_err());
        assert!(none.put(&record(), b"x".to_vec()).await.is_err());
        assert_eq!(none.stored("atc_1").await.unwrap(), None);
    }

    fn record() -> AttachmentRecord {
        let p = AttachmentPolicy::default();
        AttachmentRecord::new("atc_1".into(), p.check("a.png", 5, "image/png").unwrap())
    }

    #[test]
    fn a_pending_record_expires_at_its_expiry_exactly() {
        let r = record();
        let end = r.expires_at();
        assert_eq!(end, r.created_at + Duration::hours(24));
        assert!(r.is_live(end - Duration::milliseconds(1)));
        assert!(!r.is_live(end));
    }

    #[test]
    fn a_record_is_attached_once_and_only_to_its_own_message_again() {
        let attached = record().attached_to("thr_1", "msg_1").unwrap();
        assert_eq!(
            (
                attached.status,
                attached.thread_id.as_deref(),
                attached.item_id.as_deref()
            ),
            (AttachmentStatus::Attached, Some("thr_1"), Some("msg_1"))
        );
        // A retried write of the same message finds it its own.
        assert_eq!(
            attached.attached_to("thr_1", "msg_1"),
            Some(attached.clone())
        );
        // Any other message, in this thread or another, does not get it.
        assert_eq!(attached.attached_to("thr_1", "msg_2"), None);
        assert_eq!(attached.attached_to("thr_2", "msg_1"), None);
    }
}
