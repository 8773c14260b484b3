//! The pure domain: identifiers, addresses, states, the transition rules,
//! where each router's files live and which VIP tells who holds a router.
//! No I/O here; everything is tested with values and a driven clock.

pub mod backoff;
pub mod ident;
pub mod layout;
pub mod net;
pub mod primary_vip;
pub mod state;
pub mod sync_later;
pub mod time;
pub mod transition;
