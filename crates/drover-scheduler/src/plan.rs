//! Seed 002's capacity question, for any node: which models and how many
//! slots fit in its memory, what is left, and what throughput that buys.
//! The budget is the one the model manager will enforce:
//! `sum(model sizes) + slots x per-slot buffer + system overhead + safety
//! margin <= memory`. Pure arithmetic; the CLI prints it.

use std::time::Duration;

/// What a node has and what it is asked to hold.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInput {
    /// Bytes of memory.
    pub memory: u64,
    /// Each model's size in bytes, in the order asked for.
    pub models: Vec<u64>,
    /// Slots per model.
    pub slots_per_model: u32,
    /// Bytes each slot needs beyond its model (its KV cache and buffers).
    pub slot_buffer: u64,
    /// Bytes the system and the server take.
    pub system: u64,
    /// Bytes kept free on purpose.
    pub margin: u64,
    /// How long one response takes.
    pub response_time: Duration,
}

/// The figures of one arrangement of models and slots.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub models: usize,
    pub model_bytes: u64,
    pub slots: u32,
    pub buffer_bytes: u64,
    pub system: u64,
    pub margin: u64,
    /// Models, buffers and system: what is in use.
    pub used: u64,
    /// Memory beyond what is used (the margin is part of it).
    pub headroom: u64,
    /// Requests a minute with every slot busy.
    pub per_minute: f64,
    /// Whether `used + margin` fits the memory.
    pub fits: bool,
}

/// The plan: the arrangement asked for and, when it does not fit, the
/// largest that does.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub asked: Budget,
    /// The most of the models asked for, in order, with the slots asked
    /// for, that fit; `None` when everything fits or nothing does.
    pub fewer_models: Option<Budget>,
    /// Every model asked for with the most slots each that fit, when fewer
    /// slots make them fit; `None` otherwise.
    pub fewer_slots: Option<Budget>,
}

/// What one node holds, as the budget counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    pub models: usize,
    pub model_bytes: u64,
    pub slots: u32,
}

/// The rest of a node's budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms {
    pub memory: u64,
    pub slot_buffer: u64,
    pub system: u64,
    pub margin: u64,
    pub response_time: Duration,
}

impl Budget {
    /// The budget of `holding` under `terms`.
    pub fn of(holding: Holding, terms: Terms) -> Budget {
        let buffer_bytes = u64::from(holding.slots).saturating_mul(terms.slot_buffer);
        let used = holding
            .model_bytes
            .saturating_add(buffer_bytes)
            .saturating_add(terms.system);
        let secs = terms.response_time.as_secs_f64();
        Budget {
            models: holding.models,
            model_bytes: holding.model_bytes,
            slots: holding.slots,
            buffer_bytes,
            system: terms.system,
            margin: terms.margin,
            used,
            headroom: terms.memory.saturating_sub(used),
            per_minute: if secs > 0.0 {
                f64::from(holding.slots) * 60.0 / secs
            } else {
                0.0
            },
            fits: used.saturating_add(terms.margin) <= terms.memory,
        }
    }

    /// Bytes more models could take here, beyond the margin.
    pub fn room(&self) -> u64 {
        self.headroom.saturating_sub(self.margin)
    }
}

impl PlanInput {
    fn budget(&self, models: usize, slots_per_model: u32) -> Budget {
        let holding = Holding {
            models,
            model_bytes: self.models.iter().take(models).sum(),
            slots: u32::try_from(models)
                .unwrap_or(u32::MAX)
                .saturating_mul(slots_per_model),
        };
        Budget::of(
            holding,
            Terms {
                memory: self.memory,
                slot_buffer: self.slot_buffer,
                system: self.system,
                margin: self.margin,
                response_time: self.response_time,
            },
        )
    }

    pub fn plan(&self) -> Plan {
        let all = self.models.len();
        let asked = self.budget(all, self.slots_per_model);
        if asked.fits {
            return Plan {
                asked,
                fewer_models: None,
                fewer_slots: None,
            };
        }
        let fewer_models = (1..all)
            .rev()
            .map(|n| self.budget(n, self.slots_per_model))
            .find(|b| b.fits);
        let fewer_slots = (1..self.slots_per_model)
            .rev()
            .map(|s| self.budget(all, s))
            .find(|b| b.fits);
        Plan {
            asked,
            fewer_models,
            fewer_slots,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn seed002(models: usize) -> PlanInput {
        PlanInput {
            memory: 128 * GB,
            models: vec![15 * GB; models],
            slots_per_model: 1,
            slot_buffer: 3 * GB,
            system: 8 * GB,
            margin: 12 * GB,
            response_time: Duration::from_secs(3),
        }
    }

    #[test]
    fn seed_002s_figures() {
        let plan = seed002(6).plan();
        let b = &plan.asked;
        assert!(b.fits);
        assert_eq!(
            (b.model_bytes, b.buffer_bytes, b.used),
            (90 * GB, 18 * GB, 116 * GB)
        );
        assert_eq!((b.slots, b.headroom), (6, 12 * GB));
        assert_eq!(b.per_minute, 120.0);
        assert_eq!(plan.fewer_models, None);
    }

    #[test]
    fn more_than_fits_names_what_would() {
        let plan = seed002(7).plan();
        assert!(!plan.asked.fits);
        assert_eq!(plan.asked.used, 134 * GB);
        assert_eq!(plan.fewer_models.as_ref().map(|b| b.models), Some(6));
        // Two slots each: 6 models need 90 + 36 + 8 + 12 = 146 GB.
        let mut two = seed002(6);
        two.slots_per_model = 2;
        let plan = two.plan();
        assert!(!plan.asked.fits);
        assert_eq!(plan.fewer_slots.as_ref().map(|b| b.slots), Some(6));
        assert_eq!(plan.fewer_models.as_ref().map(|b| b.models), Some(5));
    }
}
