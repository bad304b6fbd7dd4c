//! Where API queries run, and what they may take: resources every tenant
//! shares, so one tenant's flood of `POST /v1/query` can never delay a gate
//! answer, a health check or a window close.
//!
//! - **Their own threads.** Queries (planning and execution) run on a
//!   runtime of their own (`tollgate-query`, `http.query_threads`), never on
//!   the API's runtime that answers gates and probes.
//! - **One memory budget.** Every query's sorts, joins and aggregates draw
//!   from one pool of `http.query_memory_bytes` in all, not a cap per
//!   request (1024 requests × the cap was the old bound).
//! - **A bounded number at once.** `http.max_queries` run at a time; more
//!   are refused with 503 at once (no queue that grows with the flood).
//! - **No untracked giant values.** DataFusion does not account for the
//!   strings a function builds, and an allocation that fails aborts the
//!   whole process, pipeline included. The string functions that multiply
//!   their input (`repeat`, `lpad`, `rpad`) refuse a call that would build
//!   more than `http.query_string_bytes` in one batch.
//! - **Cancelled when abandoned.** A query past its deadline, or whose
//!   request went away, is aborted on its runtime, not left running.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::problem::Problem;

/// The string functions whose output is a multiple of an argument.
const AMPLIFIERS: [&str; 3] = ["repeat", "lpad", "rpad"];

/// The API's query engine: runtime, memory pool and slots.
pub struct QueryEngine {
    runtime: Option<tokio::runtime::Runtime>,
    env: Arc<RuntimeEnv>,
    slots: Arc<Semaphore>,
    max_slots: usize,
    /// `repeat`, `lpad`, `rpad` bounded, built once.
    bounded: Vec<ScalarUDF>,
}

impl QueryEngine {
    pub fn new(
        threads: usize,
        max_queries: usize,
        memory_bytes: usize,
        string_bytes: usize,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("tollgate-query")
            .enable_time()
            .build()?;
        // No cache of directory listings: a window written a moment ago is
        // in the next query (file metadata and statistics caches stay: the
        // files are immutable).
        let env = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .with_memory_pool(Arc::new(FairSpillPool::new(memory_bytes)))
            .build_arc()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let defaults = SessionContext::new().state();
        let bounded = AMPLIFIERS
            .iter()
            .filter_map(|name| defaults.scalar_functions().get(*name))
            .map(|inner| {
                ScalarUDF::new_from_impl(Bounded {
                    inner: inner.clone(),
                    max_bytes: string_bytes,
                })
            })
            .collect();
        Ok(QueryEngine {
            runtime: Some(runtime),
            env,
            slots: Arc::new(Semaphore::new(max_queries.max(1))),
            max_slots: max_queries.max(1),
            bounded,
        })
    }

    /// The shared runtime environment (memory pool) for a new session.
    pub fn env(&self) -> Arc<RuntimeEnv> {
        self.env.clone()
    }

    /// Replace the amplifying string functions of `ctx` by bounded ones.
    pub fn bound_functions(&self, ctx: &SessionContext) {
        for udf in &self.bounded {
            ctx.register_udf(udf.clone());
        }
    }

    /// A query slot, taken before anything of the query is built: a query
    /// refused costs the API's threads nothing but this.
    pub fn slot(&self) -> Result<Slot, Problem> {
        self.slots.clone().try_acquire_owned().map(Slot).map_err(|_| {
            Problem::unavailable(format!(
                "{} queries are running, the most this server runs at once (http.max_queries); retry shortly",
                self.max_slots
            ))
        })
    }

    /// Run `work` on the query threads, holding `slot` until it ends, at
    /// most `deadline`. Aborted when the deadline passes or the caller stops
    /// waiting.
    pub async fn run<T: Send + 'static>(
        &self,
        slot: Slot,
        deadline: std::time::Duration,
        work: impl std::future::Future<Output = Result<T, Problem>> + Send + 'static,
    ) -> Result<T, Problem> {
        let permit = slot.0;
        let Some(rt) = &self.runtime else {
            return Err(Problem::unavailable("the query engine is shutting down"));
        };
        let handle = rt.spawn(async move {
            let out = work.await;
            drop(permit);
            out
        });
        let _abort = AbortOnDrop(handle.abort_handle());
        match tokio::time::timeout(deadline, handle).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => Err(Problem::internal(format!("the query did not finish: {e}"))),
            Err(_) => Err(Problem::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the query ran longer than {} ms (http.query_timeout_ms)",
                    deadline.as_millis()
                ),
            )),
        }
    }
}

impl Drop for QueryEngine {
    fn drop(&mut self) {
        // Dropping a runtime blocks; the API's state may be dropped inside
        // another runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The right to run one query (see [`QueryEngine::slot`]).
pub struct Slot(OwnedSemaphorePermit);

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A string function that refuses to build more than `max_bytes` per call.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    max_bytes: usize,
}

impl Bounded {
    /// The most bytes the call could build, by the arguments.
    fn bound(&self, args: &[ColumnarValue]) -> Result<u128> {
        let count = args.get(1).map(max_int).transpose()?.unwrap_or(0).max(0) as u128;
        Ok(match self.inner.name() {
            // Every input string, `count` times.
            "repeat" => args.first().map_or(0, text_bytes) as u128 * count,
            // Every row padded to `count` characters (of up to 4 bytes).
            _ => count * 4 * rows(args) as u128,
        })
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bound = self.bound(&args.args)?;
        if bound > self.max_bytes as u128 {
            return exec_err!(
                "{}() would build up to {bound} bytes, more than the {} a query may build in one call (http.query_string_bytes)",
                self.inner.name(),
                self.max_bytes
            );
        }
        self.inner.invoke_with_args(args)
    }
}

fn rows(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

/// Bytes of the strings in `v` (an upper bound for arrays).
fn text_bytes(v: &ColumnarValue) -> usize {
    match v {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => s.len(),
        ColumnarValue::Scalar(_) => 0,
        ColumnarValue::Array(a) => a.get_array_memory_size(),
    }
}

/// The largest integer in `v`.
fn max_int(v: &ColumnarValue) -> Result<i64> {
    match v {
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(n)) => Ok(n),
            _ => Ok(0),
        },
        ColumnarValue::Array(a) => {
            let a = arrow::compute::cast(a, &DataType::Int64)?;
            Ok(arrow::compute::max(a.as_primitive::<Int64Type>()).unwrap_or(0))
        }
    }
}
