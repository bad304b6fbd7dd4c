//! Values by tenant, then team: the shape of every per-team ledger (live
//! windows, month totals). Lookups by `&str` allocate nothing; a key is
//! allocated only for a new tenant or team.

type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// `V` by tenant and team. Untagged usage (no team) is kept under the
/// empty team name: a team tag is never empty (decoding drops empty tags).
#[derive(Debug, Clone, PartialEq)]
pub struct ByTeam<V> {
    tenants: FastMap<String, FastMap<String, V>>,
}

impl<V> Default for ByTeam<V> {
    fn default() -> Self {
        ByTeam {
            tenants: FastMap::default(),
        }
    }
}

impl<V> ByTeam<V> {
    /// The team's value, created with `V::default()` if new.
    pub fn entry(&mut self, tenant: &str, team: Option<&str>) -> &mut V
    where
        V: Default,
    {
        self.tenants
            .entry_ref(tenant)
            .or_default()
            .entry_ref(team.unwrap_or(""))
            .or_default()
    }

    pub fn get(&self, tenant: &str, team: Option<&str>) -> Option<&V> {
        self.tenants.get(tenant)?.get(team.unwrap_or(""))
    }

    /// Teams (with their tenant) in the map.
    pub fn len(&self) -> usize {
        self.tenants.values().map(|t| t.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// `(tenant, team, value)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>, &V)> {
        self.tenants.iter().flat_map(|(tenant, teams)| {
            teams.iter().map(move |(team, v)| {
                (
                    tenant.as_str(),
                    (!team.is_empty()).then_some(team.as_str()),
                    v,
                )
            })
        })
    }

    /// Keep the teams for which `keep` says so (it may change the value).
    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        for teams in self.tenants.values_mut() {
            teams.retain(|_, v| keep(v));
        }
        self.tenants.retain(|_, teams| !teams.is_empty());
    }
}
