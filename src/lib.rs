//! distlock facade.
