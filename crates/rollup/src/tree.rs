//! Where a tree of output files lives: a local directory, or a prefix of an
//! S3-compatible bucket (`s3://bucket/prefix`, through the `object_store`
//! crate). The rollups, the late files and the checkpoints are each a
//! [`Tree`]; everything else in this crate names files by their key inside
//! the tree (`kind=inference/date=2026-12-02/hour=19/x.parquet`) and leaves
//! the medium to this module.
//!
//! Both media give the same guarantees to the rest of the crate:
//! - [`Tree::create_only`] publishes a file atomically and never replaces
//!   one: a local file is written to a temp name unique to the writer,
//!   fsynced and hard-linked to its name (which fails when the name
//!   exists); an object is put with `If-None-Match: *` (`PutMode::Create`),
//!   which the store refuses when the key exists. Either way a name already
//!   taken with the same bytes is a replay of the same write (done), with
//!   other bytes [`RollupError::Taken`].
//! - [`Tree::replace`] replaces a file atomically (temp, fsync, rename; a
//!   single PUT).
//! - listings are sorted by key, so a walk is in time order under the hive
//!   layout.
//!
//! An object store is configured from the environment, as the AWS tools
//! are: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` (a local S3-compatible server) and `AWS_ALLOW_HTTP`
//! (`true` for an `http://` endpoint). Its requests run on one small
//! runtime of their own (`tollgate-object-store`), so the callers (the
//! writer thread, a restore, DataFusion on any runtime) may block on them
//! or poll them from anywhere.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::{io, RollupError};

/// A tree of files: a local directory or an object-store prefix. Cheap to
/// clone (one client per tree, shared).
#[derive(Clone)]
pub struct Tree {
    backend: Arc<Backend>,
}

enum Backend {
    Local(PathBuf),
    Object(ObjectTree),
}

struct ObjectTree {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`: what DataFusion's object store registry knows the
    /// store by.
    bucket: url::Url,
    /// The tree's prefix inside the bucket, without slashes at either end
    /// (empty: the whole bucket).
    prefix: String,
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tree({})", self.display(""))
    }
}

/// A file found by [`Tree::walk`]: its key in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key: String,
}

impl Found {
    /// The last segment of the key.
    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// The runtime every object-store request runs on. Never dropped, so no
/// caller can end up dropping a runtime inside another.
fn io_runtime() -> Result<&'static tokio::runtime::Runtime, RollupError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tollgate-object-store")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| RollupError::Config(format!("cannot start the object-store runtime: {e}")))
}

/// Run `fut` on the object-store runtime and wait for it, from any thread.
fn block<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, RollupError> {
    let rt = io_runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| RollupError::Config("the object-store runtime stopped".into()))
}

impl Tree {
    /// A local directory.
    pub fn local(root: impl Into<PathBuf>) -> Tree {
        Tree {
            backend: Arc::new(Backend::Local(root.into())),
        }
    }

    /// `s3://bucket/prefix` (an object store configured from the
    /// environment) or a local directory. Any other `scheme://` is refused.
    pub fn open(location: &Path) -> Result<Tree, RollupError> {
        Self::open_with(location, AmazonS3Builder::from_env())
    }

    /// [`Self::open`] with the object store's settings given (endpoint,
    /// credentials) instead of read from the environment.
    pub fn open_with(location: &Path, s3: AmazonS3Builder) -> Result<Tree, RollupError> {
        let text = location.to_string_lossy();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Tree::local(location));
        };
        if scheme != "s3" {
            return Err(RollupError::Config(format!(
                "{text}: unsupported scheme `{scheme}://` (a local directory or s3://bucket/prefix)"
            )));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(RollupError::Config(format!(
                "{text}: no bucket (s3://bucket/prefix)"
            )));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(RollupError::Config(format!(
                "{text}: `.` and `..` are not allowed in an object prefix"
            )));
        }
        let connector =
            object_store::client::SpawnedReqwestConnector::new(io_runtime()?.handle().clone());
        let store = s3
            .with_bucket_name(bucket)
            .with_http_connector(connector)
            .build()
            .map_err(|e| RollupError::Config(format!("{text}: {e}")))?;
        let bucket_url = url::Url::parse(&format!("s3://{bucket}"))
            .map_err(|e| RollupError::Config(format!("{text}: {e}")))?;
        Ok(Tree {
            backend: Arc::new(Backend::Object(ObjectTree {
                store: Arc::new(store),
                bucket: bucket_url,
                prefix,
            })),
        })
    }

    /// The local directory, for a local tree.
    pub fn local_root(&self) -> Option<&Path> {
        match &*self.backend {
            Backend::Local(root) => Some(root),
            Backend::Object(_) => None,
        }
    }

    /// Where `key` is, as a person reads it: a local path or an
    /// `s3://bucket/prefix/key` URL. `""` is the tree itself.
    pub fn display(&self, key: &str) -> String {
        self.location(key).to_string_lossy().into_owned()
    }

    /// [`Self::display`] as a path (what error values and logs carry).
    pub fn location(&self, key: &str) -> PathBuf {
        match &*self.backend {
            Backend::Local(root) if key.is_empty() => root.clone(),
            Backend::Local(root) => root.join(key),
            Backend::Object(o) => {
                let mut s = format!("s3://{}", o.bucket.host_str().unwrap_or_default());
                for part in [o.prefix.as_str(), key] {
                    if !part.is_empty() {
                        s.push('/');
                        s.push_str(part);
                    }
                }
                PathBuf::from(s)
            }
        }
    }

    /// The URL DataFusion lists the tree at (with a trailing slash), and
    /// the object store to register for it (none for a local tree, which
    /// DataFusion reads itself). A local tree's directory is created.
    pub(crate) fn table_url(
        &self,
    ) -> Result<(String, Option<(url::Url, Arc<dyn ObjectStore>)>), RollupError> {
        match &*self.backend {
            Backend::Local(root) => {
                fs::create_dir_all(root).map_err(io("create directory", root))?;
                let abs = root.canonicalize().map_err(io("resolve", root))?;
                Ok((format!("{}/", abs.display()), None))
            }
            Backend::Object(o) => Ok((
                format!("{}/", self.display("")),
                Some((o.bucket.clone(), o.store.clone())),
            )),
        }
    }

    /// The bytes of `key`, or `None` if there is no such file.
    pub fn read(&self, key: &str) -> Result<Option<Bytes>, RollupError> {
        match &*self.backend {
            Backend::Local(root) => {
                let p = root.join(key);
                match fs::read(&p) {
                    Ok(v) => Ok(Some(Bytes::from(v))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io("read", &p)(e)),
                }
            }
            Backend::Object(o) => {
                let store = o.store.clone();
                let path = o.path(key);
                let got = block(async move {
                    match store.get(&path).await {
                        Ok(r) => r.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                })?;
                got.map_err(self.store_error("read", key))
            }
        }
    }

    /// Publish `bytes` as `key` unless the name is taken. A file already
    /// there with the same bytes is this one written before (a replay):
    /// done. With other bytes: [`RollupError::Taken`], and it stays.
    pub fn create_only(&self, key: &str, bytes: Bytes) -> Result<(), RollupError> {
        match &*self.backend {
            Backend::Local(root) => write_local(root, key, &bytes, crate::publish_create_only),
            Backend::Object(o) => {
                let store = o.store.clone();
                let path = o.path(key);
                let payload = PutPayload::from_bytes(bytes.clone());
                let put = block(async move {
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    };
                    store.put_opts(&path, payload, opts).await
                })?;
                match put {
                    Ok(_) => Ok(()),
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => {
                        if self.read(key)?.is_some_and(|there| there == bytes) {
                            Ok(())
                        } else {
                            Err(RollupError::Taken {
                                path: self.location(key),
                            })
                        }
                    }
                    Err(e) => Err(self.store_error("publish (create-only put)", key)(e)),
                }
            }
        }
    }

    /// Replace `key` with `bytes` atomically (temp file, fsync, rename,
    /// fsync the directory; one PUT).
    pub fn replace(&self, key: &str, bytes: Bytes) -> Result<(), RollupError> {
        match &*self.backend {
            Backend::Local(root) => write_local(root, key, &bytes, |tmp, path| {
                fs::rename(tmp, path).map_err(io("rename", tmp))
            }),
            Backend::Object(o) => {
                let store = o.store.clone();
                let path = o.path(key);
                block(async move { store.put(&path, PutPayload::from_bytes(bytes)).await })?
                    .map(|_| ())
                    .map_err(self.store_error("write", key))
            }
        }
    }

    /// Remove `key`; `false` if it was not there (a local tree tells).
    pub fn remove(&self, key: &str) -> Result<bool, RollupError> {
        match &*self.backend {
            Backend::Local(root) => {
                let p = root.join(key);
                match fs::remove_file(&p) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(io("remove", &p)(e)),
                }
            }
            Backend::Object(o) => {
                let store = o.store.clone();
                let path = o.path(key);
                match block(async move { store.delete(&path).await })? {
                    Ok(()) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(self.store_error("remove", key)(e)),
                }
            }
        }
    }

    /// The names of the directories right under `dir` (a key, `""` for the
    /// root), sorted; none if it is missing.
    pub fn dirs(&self, dir: &str) -> Result<Vec<String>, RollupError> {
        match &*self.backend {
            Backend::Local(root) => {
                let mut out = Vec::new();
                for e in crate::read_dir_sorted(&root.join(dir))? {
                    let p = e.path();
                    if e.file_type().map_err(io("stat", &p))?.is_dir() {
                        out.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
                Ok(out)
            }
            Backend::Object(o) => {
                let store = o.store.clone();
                let base = o.path(dir);
                let listed = block(async move { store.list_with_delimiter(Some(&base)).await })?
                    .map_err(self.store_error("list", dir))?;
                let mut out: Vec<String> = listed
                    .common_prefixes
                    .iter()
                    .filter_map(|p| p.filename().map(str::to_string))
                    .collect();
                out.sort();
                Ok(out)
            }
        }
    }

    /// Every file under the directory `dir` (a key, `""` for the root)
    /// whose key below `dir` sorts at or after `from` and starts with
    /// `only`, sorted by key. Directories that cannot hold such a key are
    /// not read, and an object store is asked only from `from` on, so a
    /// walk from a recent hour costs what that hour holds, not the tree.
    /// A missing `dir` is empty. Dot files (a local writer's temp files)
    /// are included: the caller decides.
    pub fn walk(&self, dir: &str, from: &str, only: &str) -> Result<Vec<Found>, RollupError> {
        let keep = |rel: &str| rel >= from && rel.starts_with(only);
        let join = |rel: &str| {
            if dir.is_empty() {
                rel.to_string()
            } else {
                format!("{dir}/{rel}")
            }
        };
        match &*self.backend {
            Backend::Local(root) => {
                let mut out = Vec::new();
                walk_local(&root.join(dir), "", from, only, &mut |rel| {
                    if keep(rel) {
                        out.push(Found { key: join(rel) });
                    }
                })?;
                Ok(out)
            }
            Backend::Object(o) => {
                let store = o.store.clone();
                let base = o.path(dir);
                // S3 lists the keys after an offset (`start-after`): `from`
                // and `only` are directory prefixes, never a key, so the
                // first key listed is the first one at or after them.
                let start = from.max(only).trim_end_matches('/').to_string();
                let (from, only) = (from.to_string(), only.to_string());
                let listed = block(async move {
                    let base_len = base.as_ref().len();
                    let mut stream = if start.is_empty() {
                        store.list(Some(&base))
                    } else {
                        let offset = ObjectPath::from(join_object(&base, &start));
                        store.list_with_offset(Some(&base), &offset)
                    };
                    let mut keys = Vec::new();
                    while let Some(meta) = stream.next().await {
                        let key = meta?.location.as_ref().to_string();
                        let Some(rel) = key.get(base_len..).map(|r| r.trim_start_matches('/'))
                        else {
                            continue;
                        };
                        if rel >= from.as_str() && rel.starts_with(only.as_str()) {
                            keys.push(rel.to_string());
                        } else if rel > only.as_str() {
                            // Sorted: nothing after this starts with `only`.
                            break;
                        }
                    }
                    Ok::<_, object_store::Error>(keys)
                })?
                .map_err(self.store_error("list", dir))?;
                let mut out: Vec<Found> =
                    listed.iter().map(|rel| Found { key: join(rel) }).collect();
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            }
        }
    }

    fn store_error<'k>(
        &'k self,
        op: &'static str,
        key: &'k str,
    ) -> impl FnOnce(object_store::Error) -> RollupError + 'k {
        move |source| RollupError::Store {
            op,
            location: self.display(key),
            source,
        }
    }
}

impl ObjectTree {
    fn path(&self, key: &str) -> ObjectPath {
        let full = match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{key}", self.prefix),
        };
        // Keys are made by this crate (hive segments, topic names checked at
        // load), so `from` never has to escape anything.
        ObjectPath::from(full)
    }
}

fn join_object(base: &ObjectPath, rel: &str) -> String {
    match (base.as_ref().is_empty(), rel.is_empty()) {
        (_, true) => base.as_ref().to_string(),
        (true, false) => rel.to_string(),
        (false, false) => format!("{}/{rel}", base.as_ref()),
    }
}

/// Write `bytes` to a temp name unique to this write beside `key`, fsync
/// it, `publish` it as `key` (create-only or rename), fsync the directory.
fn write_local(
    root: &Path,
    key: &str,
    bytes: &[u8],
    publish: impl FnOnce(&Path, &Path) -> Result<(), RollupError>,
) -> Result<(), RollupError> {
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let tmp = dir.join(crate::temp_name(name));
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    publish(&tmp, &path)?;
    crate::sync_dir(dir)
}

/// Depth-first, in name order, skipping directories no key in `from..`
/// starting with `only` can be under.
fn walk_local(
    dir: &Path,
    rel: &str,
    from: &str,
    only: &str,
    f: &mut dyn FnMut(&str),
) -> Result<(), RollupError> {
    for e in crate::read_dir_sorted(dir)? {
        let name = e.file_name().to_string_lossy().into_owned();
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let p = e.path();
        let ft = e.file_type().map_err(io("stat", &p))?;
        if ft.is_dir() {
            let sub = format!("{key}/");
            // Every key below `sub` starts with it: none can start with
            // `only` unless one of the two starts with the other, and all
            // sort before `from` when `sub` does and is not a start of it.
            let can_match = sub.starts_with(only) || only.starts_with(&sub);
            let can_reach = sub.as_str() >= from || from.starts_with(&sub);
            if can_match && can_reach {
                walk_local(&p, &key, from, only, f)?;
            }
        } else {
            f(&key);
        }
    }
    Ok(())
}

/// A process's output trees, opened once and shared by its workers and
/// its API: the rollups (with their checkpoints under `_tollgate/`) and
/// the late files.
#[derive(Debug, Clone)]
pub struct Output {
    pub rollups: Tree,
    pub late: Tree,
}

impl Output {
    /// `output.rollup_dir` and `output.late_dir`: local directories or
    /// `s3://bucket/prefix`.
    pub fn open(rollup_dir: &Path, late_dir: &Path) -> Result<Output, RollupError> {
        Ok(Output {
            rollups: Tree::open(rollup_dir)?,
            late: Tree::open(late_dir)?,
        })
    }
}
