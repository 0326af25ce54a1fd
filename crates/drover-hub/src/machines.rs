//! Machines: where several servers share one memory. A machine is named by
//! its backends (`machine = "gpu-box"` in `[[backends]]`) or is a node whose
//! agent reported its servers. Its budget is `[machines.NAME]` in config
//! where the operator gave one, else, for a node, what its agent reports:
//! its GPUs' memory, or its RAM on a machine without one, less a tenth
//! kept free. The scheduler fits every load on any of its servers within
//! it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use drover_core::MachineId;
use drover_proto::nodes::NodeFacts;
use drover_scheduler::{Machine, MemoryTerms};

use crate::config::MachineSpec;

pub struct Machines {
    configured: BTreeMap<String, MachineSpec>,
    known: Mutex<BTreeMap<String, Known>>,
}

struct Known {
    id: MachineId,
    /// What its node's agent last said; config's word comes first.
    reported: Option<MemoryTerms>,
}

impl Machines {
    pub fn new(configured: BTreeMap<String, MachineSpec>) -> Self {
        Machines {
            configured,
            known: Mutex::new(BTreeMap::new()),
        }
    }

    /// The machine `name` as the scheduler sees it: its id, and its budget
    /// where config or its node tells one (`None` without: its servers
    /// share nothing they know of).
    pub fn get(&self, name: &str) -> Option<Machine> {
        let mut known = drover_core::sync::lock(&self.known);
        let entry = known_as(&mut known, name);
        let memory = self
            .configured
            .get(name)
            .map(MachineSpec::terms)
            .or(entry.reported)?;
        Some(Machine {
            id: entry.id,
            memory,
        })
    }

    /// What a node's agent says of its machine: its budget, unless config
    /// gives one.
    pub fn reported(&self, name: &str, facts: &NodeFacts) {
        let gpus: u64 = facts
            .gpus
            .iter()
            .map(|g| g.memory_total_bytes)
            .fold(0, u64::saturating_add);
        let total = if gpus > 0 {
            gpus
        } else {
            facts.memory_total_bytes
        };
        let reported = (total > 0).then_some(MemoryTerms {
            total,
            margin: total / 10,
            ..MemoryTerms::default()
        });
        known_as(&mut drover_core::sync::lock(&self.known), name).reported = reported;
    }
}

/// The machine `name`, known from now on under the next id.
fn known_as<'a>(known: &'a mut BTreeMap<String, Known>, name: &str) -> &'a mut Known {
    let id = MachineId(u32::try_from(known.len()).unwrap_or(u32::MAX));
    known
        .entry(name.to_string())
        .or_insert(Known { id, reported: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::nodes::Gpu;

    const GB: u64 = 1 << 30;

    #[test]
    fn a_nodes_budget_is_its_gpus_memory_else_its_ram_and_config_comes_first() {
        let mut configured = BTreeMap::new();
        configured.insert(
            "told".to_string(),
            MachineSpec {
                memory: 8 * GB,
                ..MachineSpec::default()
            },
        );
        let machines = Machines::new(configured);
        assert_eq!(machines.get("unknown"), None);
        let ram = NodeFacts {
            memory_total_bytes: 20 * GB,
            ..NodeFacts::default()
        };
        machines.reported("cpu", &ram);
        let gpu = NodeFacts {
            gpus: vec![
                Gpu {
                    name: "a".into(),
                    memory_total_bytes: 24 * GB,
                    memory_used_bytes: 0,
                },
                Gpu {
                    name: "b".into(),
                    memory_total_bytes: 16 * GB,
                    memory_used_bytes: 0,
                },
            ],
            ..ram.clone()
        };
        machines.reported("gpu", &gpu);
        machines.reported("told", &gpu);
        let total = |name: &str| machines.get(name).map(|m| m.memory.total);
        assert_eq!(total("cpu"), Some(20 * GB));
        assert_eq!(total("gpu"), Some(40 * GB));
        assert_eq!(machines.get("gpu").map(|m| m.memory.margin), Some(4 * GB));
        assert_eq!(total("told"), Some(8 * GB));
        let ids: std::collections::BTreeSet<_> = ["cpu", "gpu", "told", "unknown"]
            .iter()
            .filter_map(|n| machines.get(n).map(|m| m.id))
            .collect();
        assert_eq!(ids.len(), 3, "one id a machine");
    }
}
