//! Read-modify-write on the proxy's shared data, with compare-and-swap.
//!
//! The shared data map is process-wide: every worker's VM (and every WasmPlugin, since Istio
//! sets no vm_id) sees the same keys, so keys must be prefixed with the filter's name. Each
//! write bumps a CAS token; [`update`] retries when another worker wrote in between.

use crate::abi::{self, HostError};

/// Why an update did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Other writers won `attempts` times in a row.
    Contended,
    Host(HostError),
}

/// Applies `f` to the current value of `key` (None: never set) and stores what it returns,
/// retrying up to `attempts` times on CAS mismatch. `f` returns the new value (None: leave the
/// value as it is) and a result.
pub fn update<T>(
    key: &str,
    attempts: u32,
    f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, UpdateError> {
    update_counted(key, attempts, f).map(|u| u.value)
}

/// The result of [`update_counted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Updated<T> {
    pub value: T,
    /// CAS mismatches before the write went through: how contended the key is.
    pub conflicts: u32,
}

/// [`update`], also reporting how many times another writer won the race (on `Contended`, all
/// `attempts` did).
pub fn update_counted<T>(
    key: &str,
    attempts: u32,
    mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<Updated<T>, UpdateError> {
    for conflicts in 0..attempts.max(1) {
        let (current, cas) = abi::get_shared_data(key).map_err(UpdateError::Host)?;
        let (new, value) = f(current.as_deref());
        let Some(new) = new else {
            return Ok(Updated { value, conflicts });
        };
        // cas 0 means "unconditional" to the host; a key never written has cas 0, so the first
        // writer may race another first writer, and only the last one's value is kept. `f` is
        // told (its input is None) and must write nothing another writer's state depends on.
        match abi::set_shared_data(key, &new, cas) {
            Ok(()) => return Ok(Updated { value, conflicts }),
            Err(e) if e == HostError::CAS_MISMATCH => continue,
            Err(e) => return Err(UpdateError::Host(e)),
        }
    }
    Err(UpdateError::Contended)
}
