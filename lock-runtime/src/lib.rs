//! Lock runtime.
