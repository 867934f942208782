//! The ChatKit attachment store on S3. Each attachment is one object,
//! `attachments/<id>` (never a name the user chose). Two-phase uploads and
//! reads go straight between the browser (or the model) and S3 through
//! presigned URLs: an upload's signature binds the exact content type,
//! length, disposition and the `pending` tag, so a browser cannot store
//! anything else there; a read's signature fixes the type and disposition it
//! is served with, so an object is never served as HTML. A direct upload
//! (the file posted to the function) is stored with one `PutObject` carrying
//! the same type, disposition and tag. The bucket's lifecycle rule
//! removes objects still tagged `pending` after a day; a message that uses
//! an attachment tags it `used`.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, Tag, Tagging};

use taskpilot_chatkit::attachments::{
    AttachmentRecord, AttachmentStore, StoredObject, disposition,
};
use taskpilot_chatkit::types::UploadDescriptor;
use taskpilot_domain::StoreError;

/// How long an upload URL works.
pub const UPLOAD_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// How long a read URL (a preview, the model's copy) works.
pub const READ_EXPIRY: Duration = Duration::from_secs(60 * 60);
/// The tag the lifecycle rule reads.
pub const TAG_KEY: &str = "taskpilot-attachment";
/// Its value until a message uses the object.
pub const PENDING: &str = "pending";
/// Its value once a message uses the object.
pub const USED: &str = "used";

/// The object key of an attachment.
pub fn key(attachment_id: &str) -> String {
    format!("attachments/{attachment_id}")
}

/// Attachments on S3, or none when no bucket is configured.
#[derive(Clone, Debug)]
pub struct S3Files {
    bucket: Option<Bucket>,
}

#[derive(Clone, Debug)]
struct Bucket {
    name: String,
    /// The SDK configuration the client is built from.
    sdk: aws_types::SdkConfig,
    /// The S3 client, built by the first request that needs it (most
    /// processes never touch an attachment, and building it is ~0.1 ms of init).
    client: Arc<OnceLock<Client>>,
}

impl Bucket {
    /// The `PutObject` of `record`'s object, `size` bytes: its type, its
    /// disposition and the `pending` tag, for both upload paths.
    fn put(
        &self,
        record: &AttachmentRecord,
        size: u64,
    ) -> Result<aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder, StoreError>
    {
        let size = i64::try_from(size)
            .map_err(|_| StoreError::Internal("attachment size out of range".into()))?;
        Ok(self
            .client()
            .put_object()
            .bucket(&self.name)
            .key(key(&record.id))
            .content_type(&record.mime_type)
            .content_length(size)
            .content_disposition(disposition(&record.mime_type))
            .tagging(pending_tag()))
    }

    fn client(&self) -> &Client {
        self.client.get_or_init(|| {
            let config = aws_sdk_s3::config::Builder::from(&self.sdk)
                .force_path_style(self.sdk.endpoint_url().is_some())
                // Presigned uploads come from browsers: no SDK checksum headers.
                .request_checksum_calculation(
                    aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                )
                .build();
            Client::from_conf(config)
        })
    }
}

impl S3Files {
    /// Attachments in `bucket` (`None`: not offered). With an endpoint
    /// override (a local emulator) requests use path-style addressing.
    pub fn new(sdk: &aws_types::SdkConfig, bucket: Option<String>) -> Self {
        Self {
            bucket: bucket.map(|name| Bucket {
                name,
                sdk: sdk.clone(),
                client: Arc::new(OnceLock::new()),
            }),
        }
    }

    fn bucket(&self) -> Result<&Bucket, StoreError> {
        self.bucket
            .as_ref()
            .ok_or_else(|| StoreError::Internal("no attachments bucket is configured".into()))
    }
}

/// The tagging of a new upload (URL-encoded query form, as S3 takes it).
fn pending_tag() -> String {
    format!("{TAG_KEY}={PENDING}")
}

fn classify<E: ProvideErrorMetadata, R>(err: SdkError<E, R>) -> StoreError {
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            StoreError::Unavailable("S3 did not answer".into())
        }
        SdkError::ServiceError(e) if e.err().code() == Some("SlowDown") => {
            StoreError::Unavailable("S3 is throttling".into())
        }
        _ => StoreError::Internal(format!("S3: {}", err.code().unwrap_or("request failed"))),
    }
}

fn presigning(expiry: Duration) -> Result<PresigningConfig, StoreError> {
    PresigningConfig::expires_in(expiry).map_err(|e| StoreError::Internal(e.to_string()))
}

fn descriptor(request: &PresignedRequest) -> UploadDescriptor {
    upload_descriptor(request.uri(), request.method(), request.headers())
}

/// What a browser sends an upload with: the URL, the method and the headers
/// the signature binds, less `host` and `content-length` (the browser sets
/// both, and may not set them by hand). Headers the SDK added unsigned (such
/// as `x-amzn-trace-id` inside Lambda) are left out: the bucket's CORS rule
/// allows only the signed ones, so a preflight naming another would fail.
fn upload_descriptor<'a>(
    url: &str,
    method: &str,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> UploadDescriptor {
    let signed = signed_headers(url);
    let headers: BTreeMap<String, String> = headers
        .filter(|(name, _)| {
            !name.eq_ignore_ascii_case("host")
                && !name.eq_ignore_ascii_case("content-length")
                && signed.iter().any(|s| s.eq_ignore_ascii_case(name))
        })
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    UploadDescriptor {
        url: url.to_owned(),
        method: method.to_owned(),
        headers,
    }
}

/// The header names a presigned URL's `X-Amz-SignedHeaders` lists
/// (`;`-separated, percent-encoded in the query).
fn signed_headers(url: &str) -> Vec<String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "X-Amz-SignedHeaders")
        .map(|(_, value)| {
            value
                .replace("%3B", ";")
                .replace("%3b", ";")
                .split(';')
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl AttachmentStore for S3Files {
    fn enabled(&self) -> bool {
        self.bucket.is_some()
    }

    async fn upload(&self, record: &AttachmentRecord) -> Result<UploadDescriptor, StoreError> {
        let b = self.bucket()?;
        let request = b
            .put(record, record.size)?
            .presigned(presigning(UPLOAD_EXPIRY)?)
            .await
            .map_err(classify)?;
        Ok(descriptor(&request))
    }

    async fn put(&self, record: &AttachmentRecord, bytes: Vec<u8>) -> Result<(), StoreError> {
        let b = self.bucket()?;
        b.put(record, bytes.len() as u64)?
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn read_url(&self, attachment_id: &str, mime_type: &str) -> Result<String, StoreError> {
        let b = self.bucket()?;
        let request = b
            .client()
            .get_object()
            .bucket(&b.name)
            .key(key(attachment_id))
            .response_content_type(mime_type)
            .response_content_disposition(disposition(mime_type))
            .presigned(presigning(READ_EXPIRY)?)
            .await
            .map_err(classify)?;
        Ok(request.uri().to_owned())
    }

    async fn stored(&self, attachment_id: &str) -> Result<Option<StoredObject>, StoreError> {
        let b = self.bucket()?;
        let out = b
            .client()
            .head_object()
            .bucket(&b.name)
            .key(key(attachment_id))
            .send()
            .await;
        match out {
            Ok(head) => Ok(Some(StoredObject {
                size: head
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or_default(),
                content_type: head.content_type().map(str::to_owned),
            })),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn keep(&self, attachment_id: &str) -> Result<(), StoreError> {
        let b = self.bucket()?;
        let tag = Tag::builder()
            .key(TAG_KEY)
            .value(USED)
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let tagging = Tagging::builder()
            .tag_set(tag)
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        b.client()
            .put_object_tagging()
            .bucket(&b.name)
            .key(key(attachment_id))
            .tagging(tagging)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn delete(&self, attachment_ids: &[String]) -> Result<(), StoreError> {
        let b = self.bucket()?;
        for chunk in attachment_ids.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|id| ObjectIdentifier::builder().key(key(id)).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let out = b
                .client()
                .delete_objects()
                .bucket(&b.name)
                .delete(delete)
                .send()
                .await
                .map_err(classify)?;
            if let Some(failed) = out.errors().first() {
                return Err(StoreError::Unavailable(format!(
                    "S3 could not delete an attachment ({})",
                    failed.code().unwrap_or("unknown")
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_images_are_shown_inline() {
        assert_eq!(disposition("image/png"), "inline");
        assert_eq!(disposition("application/pdf"), "attachment");
        assert_eq!(disposition("text/plain"), "attachment");
    }

    const URL: &str = "https://b.s3.amazonaws.com/attachments/atc_1?X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-SignedHeaders=content-disposition%3Bcontent-length%3Bcontent-type%3Bhost%3Bx-amz-tagging\
        &X-Amz-Signature=00";

    #[test]
    fn an_upload_descriptor_holds_only_the_signed_headers_a_browser_may_set() {
        let headers = [
            ("content-type", "image/png"),
            ("content-length", "12"),
            ("content-disposition", "inline"),
            ("x-amz-tagging", "taskpilot-attachment=pending"),
            ("host", "b.s3.amazonaws.com"),
            // Added by the SDK's recursion detection inside Lambda, unsigned.
            (
                "x-amzn-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0",
            ),
        ];
        let d = upload_descriptor(URL, "PUT", headers.into_iter());
        assert_eq!(d.url, URL);
        assert_eq!(d.method, "PUT");
        assert_eq!(
            d.headers.keys().map(String::as_str).collect::<Vec<_>>(),
            ["content-disposition", "content-type", "x-amz-tagging"]
        );
        assert_eq!(d.headers["content-type"], "image/png");
    }

    #[test]
    fn signed_header_names_come_from_the_url() {
        assert_eq!(
            signed_headers(URL),
            [
                "content-disposition",
                "content-length",
                "content-type",
                "host",
                "x-amz-tagging"
            ]
        );
        assert_eq!(
            signed_headers("https://b/k?X-Amz-SignedHeaders=host"),
            ["host"]
        );
        assert!(signed_headers("https://b/k").is_empty());
        assert!(signed_headers("https://b/k?X-Amz-Signature=0").is_empty());
    }

    #[test]
    fn new_uploads_are_tagged_pending() {
        assert_eq!(pending_tag(), "taskpilot-attachment=pending");
    }

    #[test]
    fn keys_never_hold_user_names() {
        assert_eq!(key("atc_01abc"), "attachments/atc_01abc");
    }
}
