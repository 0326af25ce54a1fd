//! Identifiers. They are plain integers so that the scheduler's hot paths
//! hash and compare them cheaply; names live with the hub's registry.

use std::fmt;

/// A backend (one LLM server) known to the hub. Never reused within a
/// process, so a stale id can never reach a backend added later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

/// A machine whose servers share one memory (a node, or a machine named
/// in config): the model manager fits loads within its budget across all
/// of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineId(pub u32);

/// One client request, from arrival to answer. Retries keep the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Who a request belongs to, for fairness: a hash of the API key or of the
/// OpenAI `user` field. Two requests with the same key share one fair share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClientKey(pub u64);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend#{}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
