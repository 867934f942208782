//! The HTTP side of ChatKit's direct uploads (`uploadStrategy: {type:
//! "direct", uploadUrl}`): the page posts `multipart/form-data` with one
//! field, `file`, to the upload URL, `<ChatKit URL>/attachments`. This reads
//! that form (with `multer`) into a [`DirectUpload`]: the part's file name,
//! its `Content-Type` and its bytes. What may be uploaded, and storing it,
//! is the engine's ([`Engine::upload`]).
//!
//! [`Engine::upload`]: taskpilot_chatkit::engine::Engine::upload

use bytes::Bytes;
use lambda_http::Body;

use taskpilot_chatkit::attachments::DirectUpload;
use taskpilot_http::ApiError;

/// Where the upload URL is: under the endpoint's path, or at the root of the
/// Function URL (when ChatKit's URL is the Function URL itself).
pub const PATHS: [&str; 2] = ["/api/v1/chatkit/attachments", "/attachments"];

/// Largest body read at all: Lambda's 6 MB request limit (a Function URL
/// refuses a bigger request before the function runs; a binary body arrives
/// base64-encoded, so about 4.5 MB of it reaches the function). The file in
/// it is held to [`MAX_DIRECT_UPLOAD_BYTES`] by the engine.
///
/// [`MAX_DIRECT_UPLOAD_BYTES`]: taskpilot_chatkit::attachments::MAX_DIRECT_UPLOAD_BYTES
pub const MAX_UPLOAD_BODY: usize = 6 * 1024 * 1024;

/// The form field ChatKit sends the file in.
const FIELD: &str = "file";

/// Why an upload's form was refused before the engine saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The body is not `multipart/form-data` (415): the content type sent.
    NotMultipart(String),
    /// The body is not a well-formed form (400).
    Malformed(String),
    /// The form has no file in its `file` field, or more than one (400).
    NoFile(&'static str),
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::NotMultipart(got) if got.is_empty() => {
                ApiError::NotAForm("no content type".into())
            }
            Refused::NotMultipart(got) => ApiError::NotAForm(got),
            Refused::Malformed(message) => ApiError::BadParameter {
                name: "body".into(),
                message,
            },
            Refused::NoFile(message) => ApiError::BadParameter {
                name: FIELD.into(),
                message: message.into(),
            },
        }
    }
}

/// The file of an upload's form: the part named `file`, with its file name
/// and type (`application/octet-stream` when the part names none, which no
/// policy allows). Other fields are read past.
pub async fn read(content_type: &str, body: Body) -> Result<DirectUpload, Refused> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return Err(Refused::NotMultipart(content_type.trim().to_owned()));
    }
    let malformed = |e: multer::Error| Refused::Malformed(format!("the form cannot be read: {e}"));
    let boundary = multer::parse_boundary(content_type).map_err(malformed)?;
    let bytes = match body {
        Body::Text(text) => Bytes::from(text),
        Body::Binary(binary) => Bytes::from(binary),
        // `Body::Empty` (and, `Body` being non-exhaustive, anything else).
        _ => Bytes::new(),
    };
    let whole = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
    let mut form = multer::Multipart::new(whole, boundary);
    let mut file = None;
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        if field.name() != Some(FIELD) {
            field.bytes().await.map_err(malformed)?;
            continue;
        }
        if file.is_some() {
            return Err(Refused::NoFile("send one file per request"));
        }
        let Some(name) = field.file_name().map(str::to_owned) else {
            return Err(Refused::NoFile("the `file` field must be a file"));
        };
        let mime_type = field.content_type().map_or_else(
            || "application/octet-stream".to_owned(),
            ToString::to_string,
        );
        let bytes = field.bytes().await.map_err(malformed)?;
        file = Some(DirectUpload {
            name,
            mime_type,
            bytes: Vec::from(bytes),
        });
    }
    file.ok_or(Refused::NoFile("the form has no `file` field"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_a_form_is_415_saying_what_came() {
        let named = |refused| match ApiError::from(refused) {
            ApiError::NotAForm(got) => got,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            named(Refused::NotMultipart(String::new())),
            "no content type"
        );
        assert_eq!(
            named(Refused::NotMultipart("application/json".into())),
            "application/json"
        );
    }

    const TYPE: &str = "multipart/form-data; boundary=----WebKitFormBoundaryQ7aB";

    /// A part: field name, file name, content type, bytes.
    pub(crate) type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

    /// A form as a browser's `FormData` sends it, with `boundary`.
    pub(crate) fn form_with(boundary: &str, parts: &[Part<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, file_name, content_type, bytes) in parts {
            body.extend(format!("--{boundary}\r\n").bytes());
            let file_name = file_name
                .map(|f| format!("; filename=\"{f}\""))
                .unwrap_or_default();
            body.extend(
                format!("Content-Disposition: form-data; name=\"{name}\"{file_name}\r\n").bytes(),
            );
            if let Some(t) = content_type {
                body.extend(format!("Content-Type: {t}\r\n").bytes());
            }
            body.extend(b"\r\n");
            body.extend(*bytes);
            body.extend(b"\r\n");
        }
        body.extend(format!("--{boundary}--\r\n").bytes());
        body
    }

    fn form(parts: &[Part<'_>]) -> Vec<u8> {
        form_with("----WebKitFormBoundaryQ7aB", parts)
    }

    #[tokio::test]
    async fn the_file_field_gives_the_name_type_and_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\r\n--not a boundary";
        let body = form(&[
            ("note", None, None, b"ignored"),
            ("file", Some("list.png"), Some("image/png"), png),
        ]);
        let file = read(TYPE, Body::Binary(body)).await.unwrap();
        assert_eq!(
            (
                file.name.as_str(),
                file.mime_type.as_str(),
                file.bytes.as_slice()
            ),
            ("list.png", "image/png", &png[..])
        );
    }

    #[tokio::test]
    async fn a_text_body_reads_as_well_as_a_binary_one() {
        let body = form(&[("file", Some("a.txt"), Some("text/plain"), b"hello")]);
        let text = String::from_utf8(body).unwrap();
        let file = read(TYPE, Body::Text(text)).await.unwrap();
        assert_eq!(file.bytes, b"hello");
    }

    #[tokio::test]
    async fn a_part_without_a_type_is_an_octet_stream() {
        let body = form(&[("file", Some("x"), None, b"1")]);
        let file = read(TYPE, Body::Binary(body)).await.unwrap();
        assert_eq!(file.mime_type, "application/octet-stream");
    }

    #[tokio::test]
    async fn other_bodies_are_refused_with_what_is_wrong() {
        let png = form(&[("file", Some("a.png"), Some("image/png"), b"x")]);
        for content_type in ["application/json", "", "text/plain; boundary=x"] {
            assert!(matches!(
                read(content_type, Body::Binary(png.clone())).await,
                Err(Refused::NotMultipart(_))
            ));
        }
        // No boundary, a truncated body, another boundary.
        for (content_type, body) in [
            ("multipart/form-data", png.clone()),
            (TYPE, png[..png.len() - 10].to_vec()),
            ("multipart/form-data; boundary=other", png.clone()),
        ] {
            let refused = read(content_type, Body::Binary(body)).await.unwrap_err();
            assert!(matches!(refused, Refused::Malformed(_)), "{refused:?}");
        }
        let cases: [(Vec<u8>, &str); 4] = [
            (
                form(&[("photo", Some("a.png"), Some("image/png"), b"x")]),
                "the form has no `file` field",
            ),
            (
                form(&[("file", None, None, b"just text")]),
                "the `file` field must be a file",
            ),
            (
                form(&[
                    ("file", Some("a.png"), Some("image/png"), b"x"),
                    ("file", Some("b.png"), Some("image/png"), b"y"),
                ]),
                "send one file per request",
            ),
            (
                b"------WebKitFormBoundaryQ7aB--\r\n".to_vec(),
                "the form has no `file` field",
            ),
        ];
        for (body, why) in cases {
            assert_eq!(
                read(TYPE, Body::Binary(body)).await,
                Err(Refused::NoFile(why))
            );
        }
    }
}
