//! Phase "modules": coldplug kernel modules from /lib/modules/$(uname -r) by modalias (owned by the net/modules work).

#[derive(Debug, thiserror::Error)]
#[error("modules: not built yet")]
pub struct Error;

/// Placeholder until the modules work lands.
pub fn coldplug(_dir: &std::path::Path, _sys: &std::path::Path) -> Result<(), Error> {
    Err(Error)
}

/// Placeholder until the modules work lands.
pub fn load_named(_dir: &std::path::Path, _names: &[&str]) -> Result<(), Error> {
    Err(Error)
}
