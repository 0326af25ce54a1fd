//! drover's shared vocabulary: the small value types that the scheduler, the
//! hub and the simulator all speak. Nothing here does I/O or knows JSON.
//!
//! - [`ids`]: opaque identifiers for backends, requests and clients.
//! - [`priority`]: request priority, 0 (lowest) to 100 (highest).
//! - [`model`]: a model name, cheap to clone.
//! - [`sync`]: a lock that survives a panic.
//! - [`mix`]: SplitMix64, the seeded generator and mixer.
//! - [`size`]: sizes in bytes as people write them (`16MiB`, `128G`).

pub mod ids;
pub mod mix;
pub mod model;
pub mod priority;
pub mod size;
pub mod sync;

pub use ids::{BackendId, ClientKey, MachineId, RequestId};
pub use model::ModelName;
pub use priority::{Priority, PriorityError};
