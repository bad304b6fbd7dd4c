//! Physical plans kept across windows, for the policies whose plan the
//! window cannot change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;

use crate::{params, HISTORY};

/// Physical plans of one policy, reused across windows. Only for policies
/// whose plan depends on nothing that changes between windows except the
/// window's rows, which [`SwapExec`](tables::SwapExec) reads at execution:
/// no `history` (its file list is taken when planning) and no window
/// parameter other than those in [`params::PLAN_KEY_PARAMS`], whose values
/// key the cache.
#[derive(Debug)]
pub(crate) struct PlanCache {
    keys: Vec<&'static str>,
    plans: std::sync::Mutex<HashMap<Vec<ScalarValue>, Arc<dyn ExecutionPlan>>>,
}

/// Names of the tables a plan scans, subqueries included.
pub(crate) fn tables_read(plan: &LogicalPlan) -> datafusion::error::Result<HashSet<String>> {
    let mut tables = HashSet::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.insert(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(tables)
}

/// Plans kept per policy at most (one per kind and source in practice).
const PLAN_CACHE_ENTRIES: usize = 256;

impl PlanCache {
    /// Plans kept so far.
    pub(crate) fn len(&self) -> usize {
        self.plans.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// `None` when the plan must be made again for each window.
    pub(crate) fn for_plan(
        plan: &LogicalPlan,
        tables: &HashSet<String>,
    ) -> datafusion::error::Result<Option<Self>> {
        let reads_history = tables.contains(HISTORY);
        let mut keys = Vec::new();
        for name in plan.get_parameter_types()?.keys() {
            let name = name.trim_start_matches('$');
            match params::PLAN_KEY_PARAMS.iter().find(|k| **k == name) {
                Some(k) => keys.push(*k),
                None => return Ok(None),
            }
        }
        keys.sort_unstable();
        Ok((!reads_history).then(|| PlanCache {
            keys,
            plans: Default::default(),
        }))
    }

    /// The values of the parameters that key the cache, for this window.
    pub(crate) fn key(&self, window: &[(&'static str, ScalarValue)]) -> Vec<ScalarValue> {
        self.keys
            .iter()
            .map(|k| {
                window
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or(ScalarValue::Null, |(_, v)| v.clone())
            })
            .collect()
    }

    pub(crate) fn get(&self, key: &[ScalarValue]) -> Option<Arc<dyn ExecutionPlan>> {
        let plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.get(key).cloned()
    }

    /// Keep `plan` for the windows to come. Recursive queries are not kept:
    /// DataFusion cannot run them twice.
    pub(crate) fn put(
        &self,
        key: Vec<ScalarValue>,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> datafusion::error::Result<()> {
        if plan.exists(|n| Ok(n.name() == "RecursiveQueryExec"))? {
            return Ok(());
        }
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if plans.len() >= PLAN_CACHE_ENTRIES {
            plans.clear();
        }
        plans.insert(key, plan.clone());
        Ok(())
    }
}
