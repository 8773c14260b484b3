//! conntrackd for a router: its `conntrackd.conf` (pure, byte-identical to
//! Neutron's) and the sync commands run on each raw transition.

pub mod conf;
pub mod sync;
