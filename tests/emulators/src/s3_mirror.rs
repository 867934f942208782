//! A write-through mirror of one S3 bucket's objects on disk, so that an
//! emulator that keeps its objects in memory (moto) can be refilled after a
//! restart ([`restore`]).
//!
//! One directory holds one bucket. Each object is two files:
//!
//! - `<name>.json`, the sidecar: the key, the content type and the other
//!   headers S3 serves the object with, its user metadata, its tags, its ETag,
//!   and the name, size and SHA-256 of its bytes;
//! - `<name>.<first 16 hex digits of the SHA-256>.data`, the bytes.
//!
//! `<name>` is the key encoded by [`encode_key`] (reversible, see
//! [`decode_key`]), or `~<SHA-256 of the key>` when that encoding would be too
//! long for a file name (the sidecar always names the key).
//!
//! Every file is written to a temporary file (`.tmp-…`), synced, then renamed
//! over its name, and the bytes are renamed into place before the sidecar that
//! names them: the sidecar's rename is the commit, so a crash leaves either
//! the old object or the new one, never half of one. Leftover temporary files
//! and bytes no sidecar names are swept when the directory is opened. One
//! process writes a directory at a time.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Tag, Tagging};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::Result;

/// The longest encoded key used as a file name as is (the suffixes added stay
/// well under the 255 bytes file systems allow).
const MAX_ENCODED: usize = 200;
/// The prefix of temporary files (never the start of an encoded key).
const TMP_PREFIX: &str = ".tmp-";
/// The sidecar's suffix.
const SIDECAR: &str = ".json";
/// The bytes' suffix.
const DATA: &str = ".data";
/// The sidecar format this module writes.
const FORMAT: u64 = 1;

/// Encodes an object key as a file name: `a`–`z`, `0`–`9`, `-`, `_` and `.`
/// (but for a leading one) are kept, every other byte is written `%XX`
/// (upper-case hex), upper-case letters included, so that two keys never
/// share a name on a case-insensitive file system, and no name is `.`, `..` or
/// hidden.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for (i, &byte) in key.as_bytes().iter().enumerate() {
        let kept = byte.is_ascii_lowercase()
            || byte.is_ascii_digit()
            || byte == b'-'
            || byte == b'_'
            || (byte == b'.' && i > 0);
        if kept {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The key [`encode_key`] encoded as `name`; `None` unless `name` is exactly
/// what [`encode_key`] makes of some key.
pub fn decode_key(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex
                .iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
            {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let key = String::from_utf8(out).ok()?;
    (encode_key(&key) == name).then_some(key)
}

/// The file name stem of `key`'s files.
fn stem_of(key: &str) -> String {
    let encoded = encode_key(key);
    if encoded.is_empty() || encoded.len() > MAX_ENCODED {
        format!("~{}", sha256_hex(key.as_bytes()))
    } else {
        encoded
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One object as mirrored: its bytes and what S3 serves with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirroredObject {
    /// The object key.
    pub key: String,
    /// The object's bytes.
    pub body: Bytes,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// User metadata (`x-amz-meta-*`, without the prefix).
    pub metadata: BTreeMap<String, String>,
    /// The object's tags.
    pub tags: BTreeMap<String, String>,
    /// The ETag S3 gave the object (quoted, as S3 writes it).
    pub etag: Option<String>,
}

/// What a sidecar says of its object, without reading the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEntry {
    /// The object key.
    pub key: String,
    /// The ETag S3 gave the object.
    pub etag: Option<String>,
    /// The object's length in bytes.
    pub size: u64,
}

/// A parsed sidecar: the object without its bytes, and where they are.
struct Sidecar {
    object: MirroredObject,
    data: String,
    sha256: String,
    size: u64,
}

impl Sidecar {
    fn to_json(&self) -> Value {
        let o = &self.object;
        json!({
            "format": FORMAT,
            "key": o.key,
            "data": self.data,
            "size": self.size,
            "sha256": self.sha256,
            "etag": o.etag,
            "content_type": o.content_type,
            "content_disposition": o.content_disposition,
            "content_encoding": o.content_encoding,
            "content_language": o.content_language,
            "cache_control": o.cache_control,
            "metadata": o.metadata,
            "tags": o.tags,
        })
    }

    fn parse(text: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(text).ok()?;
        if v["format"].as_u64() != Some(FORMAT) {
            return None;
        }
        let string = |name: &str| v[name].as_str().map(str::to_owned);
        let map = |name: &str| -> Option<BTreeMap<String, String>> {
            v[name]
                .as_object()?
                .iter()
                .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        };
        let data = string("data")?;
        // The bytes are in this directory, never elsewhere.
        if data.contains('/') || data.contains('\\') || data.starts_with('.') {
            return None;
        }
        Some(Self {
            object: MirroredObject {
                key: string("key")?,
                body: Bytes::new(),
                content_type: string("content_type"),
                content_disposition: string("content_disposition"),
                content_encoding: string("content_encoding"),
                content_language: string("content_language"),
                cache_control: string("cache_control"),
                metadata: map("metadata")?,
                tags: map("tags")?,
                etag: string("etag"),
            },
            data,
            sha256: string("sha256")?,
            size: v["size"].as_u64()?,
        })
    }
}

/// A directory holding the mirrored objects of one bucket (the files only; see
/// [`S3Mirror`] for keeping it in step with S3).
#[derive(Debug, Clone)]
pub struct MirrorDir {
    dir: PathBuf,
}

impl MirrorDir {
    /// Opens `dir`, creating it if needed, and sweeps what an interrupted
    /// write left behind (temporary files, bytes no sidecar names).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let this = Self { dir };
        this.sweep()?;
        Ok(this)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn sweep(&self) -> Result<()> {
        let mut named = std::collections::BTreeSet::new();
        for (_, sidecar) in self.sidecars()? {
            named.insert(sidecar.data);
        }
        for name in self.file_names()? {
            let orphan = name.ends_with(DATA) && !named.contains(&name);
            if name.starts_with(TMP_PREFIX) || orphan {
                remove_if_present(&self.dir.join(&name))?;
            }
        }
        Ok(())
    }

    fn file_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| format!("cannot list {}: {e}", self.dir.display()))?;
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Every sidecar of the directory, with its file name.
    fn sidecars(&self) -> Result<Vec<(String, Sidecar)>> {
        let mut found = Vec::new();
        for name in self.file_names()? {
            if name.starts_with(TMP_PREFIX) || !name.ends_with(SIDECAR) {
                continue;
            }
            let path = self.dir.join(&name);
            let sidecar = Self::read_sidecar(&path)?
                .ok_or_else(|| format!("{} vanished while listed", path.display()))?;
            found.push((name, sidecar));
        }
        Ok(found)
    }

    fn read_sidecar(path: &Path) -> Result<Option<Sidecar>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
        };
        Sidecar::parse(&text)
            .map(Some)
            .ok_or_else(|| format!("{} is not an object's sidecar", path.display()).into())
    }

    fn sidecar_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}{SIDECAR}", stem_of(key)))
    }

    /// Stores `object`, replacing what was stored under its key; on return
    /// it is on disk (synced).
    pub fn store(&self, object: &MirroredObject) -> Result<()> {
        let stem = stem_of(&object.key);
        let sha256 = sha256_hex(&object.body);
        let data = format!("{stem}.{}{DATA}", &sha256[..16]);
        let data_path = self.dir.join(&data);
        let size = object.body.len() as u64;
        // The same bytes are already there when only tags or headers changed.
        let present = std::fs::metadata(&data_path).is_ok_and(|m| m.len() == size);
        if !present {
            self.write_atomically(&data_path, &object.body)?;
        }
        let sidecar_path = self.sidecar_path(&object.key);
        let previous = Self::read_sidecar(&sidecar_path).ok().flatten();
        let sidecar = Sidecar {
            object: MirroredObject {
                body: Bytes::new(),
                ..object.clone()
            },
            data: data.clone(),
            sha256,
            size,
        };
        let text = serde_json::to_vec_pretty(&sidecar.to_json())?;
        self.write_atomically(&sidecar_path, &text)?;
        self.sync_dir()?;
        if let Some(previous) = previous
            && previous.data != data
        {
            remove_if_present(&self.dir.join(previous.data))?;
        }
        Ok(())
    }

    /// Removes `key`'s object; whether there was one.
    pub fn remove(&self, key: &str) -> Result<bool> {
        let sidecar_path = self.sidecar_path(key);
        let Some(sidecar) = Self::read_sidecar(&sidecar_path).ok().flatten() else {
            // Nothing readable: remove whatever is there under the name.
            return remove_if_present(&sidecar_path);
        };
        remove_if_present(&sidecar_path)?;
        self.sync_dir()?;
        remove_if_present(&self.dir.join(sidecar.data))?;
        Ok(true)
    }

    /// `key`'s object, its bytes checked against the sidecar's SHA-256.
    pub fn load(&self, key: &str) -> Result<Option<MirroredObject>> {
        let Some(sidecar) = Self::read_sidecar(&self.sidecar_path(key))? else {
            return Ok(None);
        };
        if sidecar.object.key != key {
            return Ok(None);
        }
        self.load_sidecar(sidecar).map(Some)
    }

    fn load_sidecar(&self, sidecar: Sidecar) -> Result<MirroredObject> {
        let path = self.dir.join(&sidecar.data);
        let body = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read {} (bytes of {:?}): {e}",
                path.display(),
                sidecar.object.key
            )
        })?;
        if body.len() as u64 != sidecar.size || sha256_hex(&body) != sidecar.sha256 {
            return Err(format!(
                "{} does not hold the bytes its sidecar describes ({:?})",
                path.display(),
                sidecar.object.key
            )
            .into());
        }
        Ok(MirroredObject {
            body: Bytes::from(body),
            ..sidecar.object
        })
    }

    /// What is stored, by key (sidecars only; the bytes are not read).
    pub fn entries(&self) -> Result<BTreeMap<String, MirrorEntry>> {
        Ok(self
            .sidecars()?
            .into_iter()
            .map(|(_, sidecar)| {
                let entry = MirrorEntry {
                    key: sidecar.object.key.clone(),
                    etag: sidecar.object.etag,
                    size: sidecar.size,
                };
                (sidecar.object.key, entry)
            })
            .collect())
    }

    /// Writes `bytes` to a temporary file, syncs it and renames it to `path`.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display()).into()
        })
    }

    /// Makes the renames done so far durable.
    fn sync_dir(&self) -> Result<()> {
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", self.dir.display()).into())
    }
}

/// Removes `path`; whether it was there.
fn remove_if_present(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display()).into()),
    }
}

/// Runs a file operation off the async workers.
async fn on_disk<T: Send + 'static>(
    dir: &MirrorDir,
    op: impl FnOnce(&MirrorDir) -> Result<T> + Send + 'static,
) -> Result<T> {
    let dir = dir.clone();
    tokio::task::spawn_blocking(move || op(&dir))
        .await
        .map_err(|e| format!("mirror task failed: {e}"))?
}

/// What a [`S3Mirror::resync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resynced {
    /// Objects read back from S3 and stored.
    pub stored: usize,
    /// Objects removed from disk (gone from the bucket).
    pub removed: usize,
    /// Objects whose ETag and size already matched.
    pub kept: usize,
}

/// One bucket mirrored in a [`MirrorDir`]: after a change to the bucket,
/// [`sync_key`](Self::sync_key) or [`resync`](Self::resync) read the
/// bucket's current state back from S3 and store it. Updates run one at a
/// time, so concurrent changes to one key leave the disk as S3 ends up.
#[derive(Clone)]
pub struct S3Mirror {
    s3: aws_sdk_s3::Client,
    bucket: String,
    dir: MirrorDir,
    lock: Arc<tokio::sync::Mutex<()>>,
    updates: Arc<AtomicUsize>,
}

impl S3Mirror {
    /// Mirrors `bucket`, read through `s3` (straight to the emulator, not a
    /// front that mirrors), into `dir` (opened as [`MirrorDir::open`] does).
    /// The directory must already match the bucket, e.g. by a [`restore`]
    /// into a new bucket: a [`resync`](Self::resync) removes from disk what
    /// the bucket lacks.
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str, dir: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self {
            s3,
            bucket: bucket.to_owned(),
            dir: MirrorDir::open(dir)?,
            lock: Arc::default(),
            updates: Arc::default(),
        })
    }

    /// The mirrored bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The directory the objects are mirrored in.
    pub fn dir(&self) -> &MirrorDir {
        &self.dir
    }

    /// How many updates ([`sync_key`](Self::sync_key), [`resync`](Self::resync))
    /// have completed.
    pub fn updates(&self) -> usize {
        self.updates.load(Ordering::SeqCst)
    }

    /// Brings `key` on disk up to date: its object read back from S3 (bytes,
    /// headers, metadata, tags) and stored, or removed when the bucket no
    /// longer has it. Whether the bucket has it.
    pub async fn sync_key(&self, key: &str) -> Result<bool> {
        let _one_at_a_time = self.lock.lock().await;
        let present = self.sync_key_locked(key).await?;
        self.updates.fetch_add(1, Ordering::SeqCst);
        Ok(present)
    }

    async fn sync_key_locked(&self, key: &str) -> Result<bool> {
        match self.fetch(key).await? {
            Some(object) => {
                on_disk(&self.dir, move |dir| dir.store(&object)).await?;
                Ok(true)
            }
            None => {
                let key = key.to_owned();
                on_disk(&self.dir, move |dir| dir.remove(&key)).await?;
                Ok(false)
            }
        }
    }

    /// `key`'s object as S3 has it now; `None` when there is none.
    async fn fetch(&self, key: &str) -> Result<Option<MirroredObject>> {
        let context = |op: &str, e: &dyn std::fmt::Debug| {
            format!("{op} of {key:?} in {}: {e:?}", self.bucket)
        };
        let got = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(got) => got,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(context("GetObject", &DisplayErrorContext(e)).into()),
        };
        let tagging = match self
            .s3
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(tagging) => tagging,
            // Deleted since: the delete's own update follows this one.
            Err(e)
                if e.as_service_error().and_then(ProvideErrorMetadata::code)
                    == Some("NoSuchKey") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(context("GetObjectTagging", &DisplayErrorContext(e)).into()),
        };
        let object = MirroredObject {
            key: key.to_owned(),
            content_type: got.content_type.clone(),
            content_disposition: got.content_disposition.clone(),
            content_encoding: got.content_encoding.clone(),
            content_language: got.content_language.clone(),
            cache_control: got.cache_control.clone(),
            metadata: got
                .metadata
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            etag: got.e_tag.clone(),
            tags: tagging
                .tag_set()
                .iter()
                .map(|tag| (tag.key().to_owned(), tag.value().to_owned()))
                .collect(),
            body: got
                .body
                .collect()
                .await
                .map_err(|e| context("reading the body", &e))?
                .into_bytes(),
        };
        Ok(Some(object))
    }

    /// Reconciles the whole directory with the bucket: objects the bucket
    /// lacks are removed, objects whose ETag or size differ from what is
    /// stored (or not stored) are read back; the rest is kept as is (every
    /// change to one key is mirrored by its own [`sync_key`](Self::sync_key)).
    pub async fn resync(&self) -> Result<Resynced> {
        let _one_at_a_time = self.lock.lock().await;
        let mut listed = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "ListObjectsV2 of {}: {:?}",
                        self.bucket,
                        DisplayErrorContext(e)
                    )
                })?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    let size = object.size().and_then(|s| u64::try_from(s).ok());
                    listed.insert(key.to_owned(), (object.e_tag().map(str::to_owned), size));
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() || page.is_truncated() != Some(true) {
                break;
            }
        }
        let stored = on_disk(&self.dir, MirrorDir::entries).await?;
        let mut done = Resynced::default();
        for key in stored.keys().filter(|key| !listed.contains_key(*key)) {
            let key = key.clone();
            if on_disk(&self.dir, move |dir| dir.remove(&key)).await? {
                done.removed += 1;
            }
        }
        for (key, (etag, size)) in &listed {
            let same = stored.get(key).is_some_and(|entry| {
                etag.is_some() && entry.etag == *etag && Some(entry.size) == *size
            });
            if same {
                done.kept += 1;
            } else if self.sync_key_locked(key).await? {
                done.stored += 1;
            } else {
                done.removed += 1;
            }
        }
        self.updates.fetch_add(1, Ordering::SeqCst);
        Ok(done)
    }
}

/// Puts every object mirrored in `dir` into `bucket` through `s3` (straight
/// to the emulator): bytes, content type and the other headers, user metadata
/// and tags. The bucket is a fresh one (existing keys are overwritten).
/// Returns how many objects were restored.
pub async fn restore(s3: &aws_sdk_s3::Client, bucket: &str, dir: &Path) -> Result<usize> {
    let mirror = MirrorDir::open(dir)?;
    let entries = on_disk(&mirror, MirrorDir::entries).await?;
    for key in entries.keys() {
        let wanted = key.clone();
        let object = on_disk(&mirror, move |dir| dir.load(&wanted))
            .await?
            .ok_or_else(|| format!("{key:?} vanished from {} while restoring", dir.display()))?;
        let context = |op: &str, e: &dyn std::fmt::Debug| {
            format!("restoring {key:?} into {bucket}: {op}: {e:?}")
        };
        let metadata: HashMap<String, String> = object.metadata.clone().into_iter().collect();
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(object.body.clone()))
            .set_content_type(object.content_type.clone())
            .set_content_disposition(object.content_disposition.clone())
            .set_content_encoding(object.content_encoding.clone())
            .set_content_language(object.content_language.clone())
            .set_cache_control(object.cache_control.clone())
            .set_metadata((!metadata.is_empty()).then_some(metadata))
            .send()
            .await
            .map_err(|e| context("PutObject", &DisplayErrorContext(e)))?;
        if !object.tags.is_empty() {
            let mut tagging = Tagging::builder();
            for (name, value) in &object.tags {
                tagging = tagging.tag_set(Tag::builder().key(name).value(value).build()?);
            }
            s3.put_object_tagging()
                .bucket(bucket)
                .key(key)
                .tagging(tagging.build()?)
                .send()
                .await
                .map_err(|e| context("PutObjectTagging", &DisplayErrorContext(e)))?;
        }
    }
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    fn object(key: &str, body: &str) -> MirroredObject {
        MirroredObject {
            key: key.to_owned(),
            body: Bytes::from(body.to_owned()),
            content_type: Some("text/plain".to_owned()),
            metadata: BTreeMap::from([("note".to_owned(), "hi there".to_owned())]),
            tags: BTreeMap::from([("taskpilot-attachment".to_owned(), "pending".to_owned())]),
            etag: Some("\"abc\"".to_owned()),
            ..MirroredObject::default()
        }
    }

    fn files(dir: &ScratchDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn key_encoding_round_trips_odd_keys() {
        let keys = [
            "attachments/a b/ü?#%",
            "attachments/01JABCDEF",
            ".hidden",
            "..",
            "a.b",
            "~tilde",
            "a\\b:c*d\"e<f>g|h",
            "新しい/ファイル.png",
        ];
        for key in keys {
            let name = encode_key(key);
            assert_eq!(decode_key(&name).as_deref(), Some(key), "{name}");
            assert!(!name.starts_with('.'), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b"-_.%ABCDEF".contains(&b)),
                "{name}"
            );
        }
        assert_eq!(
            encode_key("attachments/a b/ü?#%"),
            "attachments%2Fa%20b%2F%C3%BC%3F%23%25"
        );
        // Keys differing only by case never share a name, even where names fold case.
        assert_ne!(
            encode_key("A").to_lowercase(),
            encode_key("a").to_lowercase()
        );
        // Only canonical names decode.
        for name in ["A", "%41%", "%4a", "%zz", ".x", "%2e", "%FF"] {
            assert_eq!(decode_key(name), None, "{name}");
        }
    }

    #[test]
    fn store_replaces_the_object_and_load_reads_it_back() {
        let tmp = ScratchDir::new("mirror-store").unwrap();
        let dir = MirrorDir::open(tmp.path()).unwrap();
        let key = "attachments/a b/ü?#%";
        dir.store(&object(key, "first")).unwrap();
        let second = MirroredObject {
            content_disposition: Some("attachment".to_owned()),
            ..object(key, "second version")
        };
        dir.store(&second).unwrap();
        assert_eq!(dir.load(key).unwrap(), Some(second));
        // One sidecar and the newest bytes only.
        let stem = encode_key(key);
        let names = files(&tmp);
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[1], format!("{stem}.json"));
        assert!(names[0].starts_with(&format!("{stem}.")) && names[0].ends_with(".data"));
        assert_eq!(dir.entries().unwrap()[key].size, 14);
    }

    #[test]
    fn remove_deletes_both_files() {
        let tmp = ScratchDir::new("mirror-remove").unwrap();
        let dir = MirrorDir::open(tmp.path()).unwrap();
        dir.store(&object("a", "x")).unwrap();
        assert!(dir.remove("a").unwrap());
        assert!(!dir.remove("a").unwrap());
        assert_eq!(files(&tmp), Vec::<String>::new());
        assert_eq!(dir.load("a").unwrap(), None);
    }

    #[test]
    fn long_key_is_stored_under_a_hashed_name() {
        let tmp = ScratchDir::new("mirror-long").unwrap();
        let dir = MirrorDir::open(tmp.path()).unwrap();
        let key = "Ü/".repeat(300);
        dir.store(&object(&key, "long")).unwrap();
        assert_eq!(dir.load(&key).unwrap(), Some(object(&key, "long")));
        assert!(
            files(&tmp)
                .iter()
                .all(|name| name.starts_with('~') && name.len() < 100)
        );
        assert_eq!(dir.entries().unwrap().keys().collect::<Vec<_>>(), [&key]);
    }

    #[test]
    fn open_sweeps_what_an_interrupted_write_left() {
        let tmp = ScratchDir::new("mirror-sweep").unwrap();
        let dir = MirrorDir::open(tmp.path()).unwrap();
        dir.store(&object("kept", "bytes")).unwrap();
        // A crash after the bytes were renamed but before the sidecar was,
        // and one while a temporary file was being written.
        std::fs::write(tmp.path().join("kept.0123456789abcdef.data"), "new bytes").unwrap();
        std::fs::write(tmp.path().join(".tmp-1-2"), "half").unwrap();
        let before = files(&tmp).len();
        let dir = MirrorDir::open(tmp.path()).unwrap();
        assert_eq!(files(&tmp).len(), before - 2);
        assert_eq!(dir.load("kept").unwrap(), Some(object("kept", "bytes")));
    }

    #[test]
    fn load_refuses_bytes_that_do_not_match_the_sidecar() {
        let tmp = ScratchDir::new("mirror-corrupt").unwrap();
        let dir = MirrorDir::open(tmp.path()).unwrap();
        dir.store(&object("a", "good")).unwrap();
        let data = files(&tmp)
            .into_iter()
            .find(|n| n.ends_with(".data"))
            .unwrap();
        std::fs::write(tmp.path().join(data), "evil").unwrap();
        let err = dir.load("a").unwrap_err().to_string();
        assert!(err.contains("does not hold the bytes"), "{err}");
    }

    async fn moto_s3() -> aws_sdk_s3::Client {
        let moto = tokio::task::spawn_blocking(crate::moto::Moto::shared)
            .await
            .unwrap()
            .unwrap();
        crate::aws::s3_client(&moto.endpoint).await
    }

    async fn new_bucket(s3: &aws_sdk_s3::Client) -> String {
        let bucket = format!("mirror-{}", ulid::Ulid::new().to_string().to_lowercase());
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        bucket
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn restore_puts_back_bytes_type_metadata_and_tags() {
        let s3 = moto_s3().await;
        let (first, second) = (new_bucket(&s3).await, new_bucket(&s3).await);
        let tmp = ScratchDir::new("mirror-restore").unwrap();
        let mirror = S3Mirror::new(s3.clone(), &first, tmp.path()).unwrap();
        let key = "attachments/a b/ü?#%";
        s3.put_object()
            .bucket(&first)
            .key(key)
            .body(ByteStream::from_static(b"\x89PNG\r\n\x1a\n bytes"))
            .content_type("image/png")
            .content_disposition("inline")
            .metadata("owner", "alice")
            .tagging("taskpilot-attachment=pending&a%20b=c%2Bd")
            .send()
            .await
            .unwrap();
        s3.put_object()
            .bucket(&first)
            .key("plain")
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .unwrap();
        assert!(mirror.sync_key(key).await.unwrap());
        assert!(mirror.sync_key("plain").await.unwrap());

        assert_eq!(restore(&s3, &second, tmp.path()).await.unwrap(), 2);
        let elsewhere = ScratchDir::new("mirror-restored").unwrap();
        let restored = S3Mirror::new(s3.clone(), &second, elsewhere.path()).unwrap();
        for key in [key, "plain"] {
            let original = mirror.fetch(key).await.unwrap().unwrap();
            let back = restored.fetch(key).await.unwrap().unwrap();
            assert_eq!(back, original, "{key}");
        }
        let back = restored.fetch(key).await.unwrap().unwrap();
        assert_eq!(back.content_type.as_deref(), Some("image/png"));
        assert_eq!(back.metadata["owner"], "alice");
        assert_eq!(back.tags["a b"], "c+d");
        assert_eq!(back.tags["taskpilot-attachment"], "pending");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn resync_reconciles_with_the_bucket() {
        let s3 = moto_s3().await;
        let bucket = new_bucket(&s3).await;
        let tmp = ScratchDir::new("mirror-resync").unwrap();
        let mirror = S3Mirror::new(s3.clone(), &bucket, tmp.path()).unwrap();
        for key in ["a", "b"] {
            s3.put_object()
                .bucket(&bucket)
                .key(key)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .unwrap();
        }
        mirror.sync_key("a").await.unwrap();
        mirror
            .dir()
            .store(&object("stale", "gone from the bucket"))
            .unwrap();
        let done = mirror.resync().await.unwrap();
        assert_eq!(
            done,
            Resynced {
                stored: 1,
                removed: 1,
                kept: 1
            }
        );
        let keys: Vec<String> = mirror.dir().entries().unwrap().into_keys().collect();
        assert_eq!(keys, ["a", "b"]);
    }
}
