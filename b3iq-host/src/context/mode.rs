//! The operating mode, persisted in `state.db` (`meta.operating_mode`), so a restart keeps it and
//! receipts name the mode the node was really in.

use b3iq_core::mode::OperatingMode;

use crate::error::{HostError, Result};
use crate::store::{Db, META_OPERATING_MODE};

/// The persisted mode; `Local` when none was ever stored.
///
/// # Errors
/// `Db` for SQLite, `Config` when the stored value is not a mode name.
pub fn load(db: &Db) -> Result<OperatingMode> {
    match db.meta_get(META_OPERATING_MODE)? {
        None => Ok(OperatingMode::Local),
        Some(s) => s.parse::<OperatingMode>()
            .map_err(|_| HostError::Config(format!("state.db names an unknown operating mode {:?}", s.chars().take(32).collect::<String>()))),
    }
}

/// Persist `mode`.
///
/// # Errors
/// `Db` for SQLite.
pub fn store(db: &Db, mode: OperatingMode) -> Result<()> {
    db.meta_set(META_OPERATING_MODE, mode.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_defaults_to_local_and_persists() {
        let db = Db::open_in_memory().unwrap();
        assert_eq!(load(&db).unwrap(), OperatingMode::Local);
        store(&db, OperatingMode::Managed).unwrap();
        assert_eq!(load(&db).unwrap(), OperatingMode::Managed);
        db.meta_set(META_OPERATING_MODE, "sideways").unwrap();
        assert!(load(&db).is_err());
    }
}
